#!/usr/bin/env python3
"""Kernel leases of durable handles with `kernel oplocks = yes` and a keeper.

--scenario purge: a durable v2 open with a batch oplock (--mode oplock) or an
RWH lease (--mode lease) loses its connection (or, with --kill, its worker is
killed -9). The keeper now holds the open's kernel lease. A local open of the
file (this process, standing in for NFS) breaks it: the keeper purges the
handle (a break to a disconnected durable open closes it), so the local open
goes on within seconds, the keeper no longer lists the handle, and the
reconnect fails with OBJECT_NAME_NOT_FOUND.

--scenario reconnect: the handle (batch oplock) is disconnected (or its worker
killed) and reconnected; the worker that now holds it has taken the kernel
lease back, so a local open makes the client receive an oplock break again.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import ctx, fail, kept, wait_for  # noqa: E402
from smbprotocol.connection import Connection, Request  # noqa: E402
from smbprotocol.create_contexts import (  # noqa: E402
    CreateContextName,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
    SMB2CreateRequestLeaseV2,
)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import LockFlags, SMB2LockElement  # noqa: E402
from smbprotocol.header import Commands, SMB2HeaderRequest  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    RequestedOplockLevel,
    ShareAccess,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

RWH = 0x7
NOT_FOUND = 0xC0000034
NOTIFICATION_ID = 0xFFFFFFFFFFFFFFFF
# Far below fs.lease-break-time (45 s by default): the local open must not
# have waited for the kernel to revoke the lease.
LOCAL_OPEN_LIMIT = 5.0


class RawMessage:
    """A request body smbprotocol sends as is."""

    def __init__(self, command, body):
        self.COMMAND = command
        self.body = body

    def pack(self):
        return self.body

    def __len__(self):
        return len(self.body)


def connect(a, guid):
    conn = Connection(guid, a.host, a.port)
    conn.connect()
    sess = Session(conn, a.user, a.password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, r"\\%s\%s" % (a.host, a.share))
    tree.connect()
    return conn, sess, tree


def drop(conn):
    try:
        conn.disconnect(close=False)
    except Exception:
        pass


def lease_ctx(key):
    lc = SMB2CreateRequestLeaseV2()
    lc["lease_key"] = key.bytes
    lc["lease_state"] = RWH
    lc["parent_lease_key"] = b"\0" * 16
    lc["epoch"] = 0
    return ctx(CreateContextName.SMB2_CREATE_REQUEST_LEASE, lc)


def durable_open(tree, name, create_guid, key):
    o = Open(tree, name)
    dh = SMB2CreateDurableHandleRequestV2()
    dh["timeout"] = 0
    dh["create_guid"] = create_guid
    contexts = [ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, dh)]
    level = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH
    if key is not None:
        contexts.append(lease_ctx(key))
        level = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE
    resp = o.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        ShareAccess.FILE_SHARE_READ,
        CreateDisposition.FILE_OVERWRITE_IF,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
        create_contexts=contexts,
        oplock_level=level,
    )
    names = [type(c).__name__ for c in (resp or [])]
    if "SMB2CreateDurableHandleResponseV2" not in names:
        fail("no DH2Q response: durability not granted (%r)" % names)
    if o.oplock_level != level:
        fail("oplock level %r, wanted %r" % (o.oplock_level, level))
    if key is not None:
        state = [c for c in resp if "Lease" in type(c).__name__][0]["lease_state"].get_value()
        if int(state) != RWH:
            fail("lease state %r, wanted RWH" % state)
    return o


def reconnect(tree, name, file_id, create_guid, key):
    o = Open(tree, name)
    dc = SMB2CreateDurableHandleReconnectV2()
    dc["file_id"] = file_id
    dc["create_guid"] = create_guid
    contexts = [ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2, dc)]
    level = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_NONE
    if key is not None:
        contexts.append(lease_ctx(key))
        level = RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE
    o.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ,
        0,
        ShareAccess.FILE_SHARE_READ,
        CreateDisposition.FILE_OPEN,
        0,
        create_contexts=contexts,
        oplock_level=level,
    )
    return o


def children(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            continue
    return sorted(out)


def lose_owner(a, conn, name):
    """Drops the connection or (--kill) kills the worker; waits until the
    keeper has the handle disconnected and holds its kernel lease."""
    if a.kill:
        workers = children(a.supervisor)
        if len(workers) != 1:
            fail("want one worker, have %r" % workers)
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: [w for w in children(a.supervisor) if w != workers[0]], "a new worker")
        drop(conn)
        how = "worker killed -9"
    else:
        drop(conn)
        how = "connection dropped"
    rec = wait_for(lambda: [r for r in kept(a) if r["path"] == name
                            and r["state"] == "disconnected"] or None, "the disconnect")[0]
    if rec["kernel_lease"] != "write":
        fail("kept fd's kernel lease is %r, wanted write" % rec["kernel_lease"])
    print("OK %s: keeper record %d disconnected, kept fd holds a write lease"
          % (how, rec["id"]), flush=True)
    return rec


def smb_lock(h, offset, length):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    h.lock([e])


def ofd_locked(path):
    """Whether /proc/locks lists an OFD lock on the file (read without
    opening it, which would break the kernel lease)."""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as f:
        return any("OFDLCK" in line and line.split()[5].endswith(":%d" % ino)
                   for line in f)


def purge(a):
    name = "kdur_%s.dat" % uuid.uuid4().hex[:8]
    path = os.path.join(a.localdir, name)
    guid, create_guid = uuid.uuid4(), uuid.uuid4()
    key = uuid.uuid4() if a.mode == "lease" else None
    conn, _, tree = connect(a, guid)
    h = durable_open(tree, name, create_guid, key)
    h.write(b"cached by the SMB client", 0)
    file_id = h.file_id
    if a.posix_locking:
        smb_lock(h, 0, 10)
        if not ofd_locked(path):
            fail("the SMB lock is not mirrored as an OFD lock")
    rec = wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None, "the record")[0]
    if rec["kernel_lease"] != "write":
        fail("connected handle's kernel lease is %r, wanted write" % rec["kernel_lease"])
    print("OK durable v2 open (%s) deposited; kernel lease of the connected open's "
          "description: %s" % (a.mode, rec["kernel_lease"]), flush=True)

    lose_owner(a, conn, name)

    t0 = time.time()
    with open(path, "r+b") as f:
        elapsed = time.time() - t0
        data = f.read()
    if elapsed > LOCAL_OPEN_LIMIT:
        fail("local open waited %.2fs" % elapsed)
    if data != b"cached by the SMB client":
        fail("local read %r" % data)
    print("OK local open went on after %.2fs (limit %.0fs)" % (elapsed, LOCAL_OPEN_LIMIT),
          flush=True)

    wait_for(lambda: not [r for r in kept(a) if r["path"] == name], "the purge", timeout=5)
    print("OK the keeper no longer lists the handle", flush=True)

    if a.posix_locking:
        # The worker that still held the disconnected open closed it: its
        # mirrored OFD lock went with the description.
        wait_for(lambda: not ofd_locked(path), "the purged open's OFD lock to go", timeout=5)
        print("OK the purged open's byte-range lock is gone (no OFD lock in /proc/locks)",
              flush=True)

    c2, _, t2 = connect(a, guid)
    try:
        reconnect(t2, name, file_id, create_guid, key)
        fail("the purged handle reconnected")
    except SMBResponseException as e:
        if e.status != NOT_FOUND:
            fail("reconnect status %#x" % e.status)
    print("OK reconnect refused with OBJECT_NAME_NOT_FOUND", flush=True)

    # Nothing of the purged open is left in the broker: a new open for
    # writing (the purged one shared only reading) and an exclusive lock on
    # its locked range are granted.
    o = Open(t2, name)
    o.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
        CreateDisposition.FILE_OPEN,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
    )
    smb_lock(o, 0, 10)
    o.close()
    print("OK a new SMB open for writing and its lock on the same range are granted", flush=True)
    drop(c2)


def catch_notification(conn):
    req = Request(SMB2HeaderRequest(), RawMessage, conn)
    conn.outstanding_requests[NOTIFICATION_ID] = req
    return req


def reconnect_then_break(a):
    name = "kdre_%s.dat" % uuid.uuid4().hex[:8]
    path = os.path.join(a.localdir, name)
    guid, create_guid = uuid.uuid4(), uuid.uuid4()
    conn, _, tree = connect(a, guid)
    h = durable_open(tree, name, create_guid, None)
    h.write(b"written before the disconnect", 0)
    file_id = h.file_id
    wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None, "the record")
    print("OK durable v2 open with a batch oplock deposited", flush=True)

    rec = lose_owner(a, conn, name)

    # A new ClientGuid (allowed for an oplock-based handle) is routed to
    # another worker when there are several: the open moves there.
    conn, sess, tree = connect(a, uuid.uuid4() if a.new_client_guid else guid)
    h = reconnect(tree, name, file_id, create_guid, None)
    if h.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH:
        fail("reconnected without the batch oplock: %r" % h.oplock_level)
    after = wait_for(lambda: [r for r in kept(a) if r["id"] == rec["id"]
                              and r["state"] == "connected"] or None, "the reconnect")[0]
    if after["kernel_lease"] != "write":
        fail("reconnected handle's kernel lease is %r" % after["kernel_lease"])
    print("OK reconnected with the batch oplock; the description holds a write lease",
          flush=True)

    notice = catch_notification(conn)
    result = {}

    def local_open():
        t0 = time.time()
        try:
            with open(path, "rb") as f:
                result["data"] = f.read()
        except OSError as e:
            result["error"] = e
        result["elapsed"] = time.time() - t0

    t = threading.Thread(target=local_open)
    t.start()
    if not notice.response_event.wait(LOCAL_OPEN_LIMIT):
        fail("no oplock break within %.0fs of the local open" % LOCAL_OPEN_LIMIT)
    hdr = notice.response
    if hdr["command"].get_value() != Commands.SMB2_OPLOCK_BREAK:
        fail("unexpected notification %r" % hdr["command"].get_value())
    body = hdr["data"].get_value()
    del conn.outstanding_requests[NOTIFICATION_ID]
    size, level = struct.unpack_from("<HB", body)
    if size != 24 or body[8:24] != file_id:
        fail("oplock break of size %d for another handle" % size)
    print("OK the local open broke the client's oplock (to level %#x)" % level, flush=True)
    ack = struct.pack("<HBBI", 24, level, 0, 0) + body[8:24]
    req = conn.send(RawMessage(Commands.SMB2_OPLOCK_BREAK, ack), sid=sess.session_id,
                    tid=tree.tree_connect_id)
    r = conn.receive(req)
    if r["status"].get_value() != 0:
        fail("acknowledgment failed: %#x" % r["status"].get_value())
    t.join(30)
    if "error" in result or t.is_alive():
        fail("local open: %r" % result)
    if result["data"] != b"written before the disconnect":
        fail("local read %r" % result["data"])
    print("OK acknowledged; the local open went on after %.2fs" % result["elapsed"], flush=True)
    h.close()
    wait_for(lambda: not [r for r in kept(a) if r["id"] == rec["id"]], "the close")
    print("OK close removed the keeper record", flush=True)
    drop(conn)


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "keeper-socket", "ctl", "localdir"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    p.add_argument("--scenario", choices=("purge", "reconnect"), required=True)
    p.add_argument("--mode", choices=("oplock", "lease"), default="oplock")
    p.add_argument("--kill", action="store_true")
    p.add_argument("--new-client-guid", action="store_true")
    p.add_argument("--posix-locking", action="store_true")
    a = p.parse_args()
    if a.scenario == "purge":
        purge(a)
    else:
        reconnect_then_break(a)


if __name__ == "__main__":
    main()
