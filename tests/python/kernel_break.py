#!/usr/bin/env python3
"""An SMB client caching a file is told when a local process opens it.

Opens --file with a batch oplock (--mode oplock) or an RWH lease (--mode
lease), read/write, and prints "READY <granted>" once the grant is in. The
caller then opens the file locally (on the server's share directory), which
with `kernel oplocks = yes` breaks the server's kernel lease; the server must
send this client an oplock or lease break. The script waits for it, prints
"OK break ...", acknowledges it, prints "OK acknowledged" and closes.

smbprotocol has no handler for unsolicited messages (MessageId all ones), so
a placeholder request with that id catches the notification.

Exits non-zero (printing "FAIL ...") on the first failure.
"""
import argparse
import struct
import sys
import uuid

from smbprotocol.connection import Connection, Request
from smbprotocol.create_contexts import (
    CreateContextName,
    SMB2CreateContextRequest,
    SMB2CreateRequestLease,
)
from smbprotocol.header import Commands, SMB2HeaderRequest
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    RequestedOplockLevel,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

NOTIFICATION_ID = 0xFFFFFFFFFFFFFFFF
RWH = 0x07


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


class RawMessage:
    """A request body smbprotocol sends as is."""

    def __init__(self, command, body):
        self.COMMAND = command
        self.body = body

    def pack(self):
        return self.body

    def __len__(self):
        return len(self.body)


def catch_notification(conn):
    req = Request(SMB2HeaderRequest(), RawMessage, conn)
    conn.outstanding_requests[NOTIFICATION_ID] = req
    return req


def main():
    ap = argparse.ArgumentParser()
    for a in ("--host", "--share", "--user", "--password", "--file"):
        ap.add_argument(a, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("oplock", "lease"), required=True)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    conn = Connection(uuid.uuid4(), a.host, a.port)
    conn.connect()
    sess = Session(conn, a.user, a.password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, r"\\%s\%s" % (a.host, a.share))
    tree.connect()

    h = Open(tree, a.file)
    contexts = None
    oplock = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH
    key = uuid.uuid4().bytes
    if a.mode == "lease":
        lease = SMB2CreateRequestLease()
        lease["lease_key"] = key
        lease["lease_state"] = RWH
        ctx = SMB2CreateContextRequest()
        ctx["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
        ctx["buffer_data"] = lease
        contexts = [ctx]
        oplock = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE
    resp = h.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
        CreateDisposition.FILE_OPEN_IF,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
        create_contexts=contexts,
        oplock_level=oplock,
    )
    if a.mode == "oplock":
        if h.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH:
            fail("no batch oplock: %r" % h.oplock_level)
        granted = "batch"
    else:
        if h.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE or not resp:
            fail("no lease: %r" % h.oplock_level)
        state = resp[0]["lease_state"].get_value()
        if int(state) != RWH:
            fail("lease state %r, wanted RWH" % state)
        granted = "RWH"
    # Some data to flush, as a client with write caching would have.
    h.write(b"cached by the SMB client", 0)
    notice = catch_notification(conn)
    print("READY " + granted, flush=True)

    if not notice.response_event.wait(a.timeout):
        fail("no break within %ss" % a.timeout)
    hdr = notice.response
    if hdr["command"].get_value() != Commands.SMB2_OPLOCK_BREAK:
        fail("unexpected notification %r" % hdr["command"].get_value())
    body = hdr["data"].get_value()
    del conn.outstanding_requests[NOTIFICATION_ID]

    if a.mode == "oplock":
        size, level = struct.unpack_from("<HB", body)
        if size != 24:
            fail("oplock break of size %d" % size)
        if level not in (0x00, 0x01):
            fail("break to level %#x" % level)
        print("OK break to oplock level %#x" % level, flush=True)
        file_id = body[8:24]
        ack = struct.pack("<HBBI", 24, level, 0, 0) + file_id
    else:
        size, _epoch, flags = struct.unpack_from("<HHI", body)
        lkey = body[8:24]
        cur, new = struct.unpack_from("<II", body, 24)
        if size != 44 or lkey != key:
            fail("lease break of size %d for another key" % size)
        if cur != RWH or new & 0x04:
            fail("lease break %#x -> %#x" % (cur, new))
        print("OK break of lease %#x -> %#x (flags %#x)" % (cur, new, flags), flush=True)
        ack = struct.pack("<HHI", 36, 0, 0) + key + struct.pack("<IQ", new, 0)
    req = conn.send(RawMessage(Commands.SMB2_OPLOCK_BREAK, ack), sid=sess.session_id, tid=tree.tree_connect_id)
    r = conn.receive(req)
    if r["status"].get_value() != 0:
        fail("acknowledgment failed: %#x" % r["status"].get_value())
    print("OK acknowledged", flush=True)
    h.close()
    conn.disconnect()


if __name__ == "__main__":
    main()
