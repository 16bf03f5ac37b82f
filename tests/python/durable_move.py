#!/usr/bin/env python3
"""A durable handle moves to the worker its reconnect lands on.

    durable_move.py --port PORT --share SHARE --user USER --password PASS [--host H]

Client 1 (one ClientGuid) opens a file with DH2Q and a batch oplock, sharing
read only, writes, takes a byte-range lock and drops its TCP connection
without logging off. Client 2 (another ClientGuid; with two workers the
supervisor deals it to the other worker) first tries a DH2C with a wrong
CreateGuid (refused: OBJECT_NAME_NOT_FOUND), then the right one, which must
succeed; it reads the data back and unlocks the range (proving the lock came
along; a second unlock finds nothing). Client 3 then asks for write access and
is refused by the share mode the moved open still holds. Prints "PORTS a b"
(client 1's and client 2's local ports) and one "OK ..." line per step.
"""
import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import durable_open, fail, reconnect  # noqa: E402
from smbprotocol.connection import Connection, Dialects  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    LockFlags,
    Open,
    ShareAccess,
    SMB2LockElement,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

OBJECT_NAME_NOT_FOUND = 0xC0000034
SHARING_VIOLATION = 0xC0000043
RANGE_NOT_LOCKED = 0xC000007E

R = FilePipePrinterAccessMask.GENERIC_READ
W = FilePipePrinterAccessMask.GENERIC_WRITE




def client(a):
    c = Connection(uuid.uuid4(), a.host, a.port)
    c.connect(Dialects.SMB_3_1_1)
    s = Session(c, a.user, a.password, require_encryption=False)
    s.connect()
    t = TreeConnect(s, r"\\%s\%s" % (a.host, a.share))
    t.connect()
    return c, t


def ignore_oplock_breaks(conn):
    """smbprotocol fails on an oplock break notification (MessageId all
    ones): drop them. The break then times out on the server."""
    orig = conn.transport.recv

    def recv(timeout):
        while True:
            m = orig(timeout)
            if m and m[:4] == b"\xfeSMB" and m[24:32] == b"\xff" * 8:
                print("oplock break from the server ignored", flush=True)
                continue
            return m

    conn.transport.recv = recv




def lock_element(offset, length, flags):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


def expect_status(what, status, fn):
    try:
        r = fn()
    except SMBResponseException as e:
        if e.status != status:
            fail("%s: want 0x%08x, got %s" % (what, status, e))
        return
    if isinstance(r, Open):
        r.close()
    fail("%s succeeded; want 0x%08x" % (what, status))






def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    a = ap.parse_args()
    name = "durable-move-%s.dat" % uuid.uuid4().hex[:12]
    data = b"moved between workers " * 50
    create_guid = uuid.uuid4()

    c1, t1 = client(a)
    c2, t2 = client(a)
    ignore_oplock_breaks(c2)
    print("PORTS %d %d" % (c1.transport._sock.getsockname()[1],
                           c2.transport._sock.getsockname()[1]), flush=True)

    h = durable_open(t1, name, create_guid)
    h.write(data, 0)
    excl = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    h.lock([lock_element(0, 4, excl)])
    file_id = h.file_id
    print("OK durable open with a batch oplock and a lock on client 1", flush=True)

    # Drop the TCP connection without logging off: the open is kept.
    c1.disconnect(close=False)
    time.sleep(0.5)

    expect_status("reconnect with a wrong CreateGuid", OBJECT_NAME_NOT_FOUND,
                  lambda: reconnect(t2, name, file_id, uuid.uuid4()))
    print("OK a reconnect with a wrong CreateGuid is refused", flush=True)

    h2 = reconnect(t2, name, file_id, create_guid)
    got = h2.read(0, len(data))
    if got != data:
        fail("read back %d bytes, not the %d written" % (len(got), len(data)))
    print("OK reconnected from another ClientGuid; data read back", flush=True)

    unlock = LockFlags.SMB2_LOCKFLAG_UNLOCK
    h2.lock([lock_element(0, 4, unlock)])
    expect_status("second unlock", RANGE_NOT_LOCKED,
                  lambda: h2.lock([lock_element(0, 4, unlock)]))
    h2.lock([lock_element(0, 4, excl)])
    print("OK the byte-range lock moved with the open", flush=True)

    # The open shares read only: a writer is refused (after the batch
    # oplock break the server sends client 2 times out: smbprotocol does
    # not answer breaks).
    c3, t3 = client(a)
    expect_status("open for write by client 3", SHARING_VIOLATION, lambda: open_for(t3, name, W))
    print("OK client 3 refused by the moved open's share mode", flush=True)

    h2.close()
    f = open_for(t3, name, W)
    f.close()
    print("OK client 3 opens once client 2 closed", flush=True)
    for c in (c2, c3):
        c.disconnect()
    return 0


def open_for(tree, name, access):
    o = Open(tree, name)
    o.create(ImpersonationLevel.Impersonation, access, 0,
             ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
             CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
    return o


if __name__ == "__main__":
    sys.exit(main())
