#!/usr/bin/env python3
"""A kept durable handle keeps its byte-range lock and share mode across a
worker crash: the supervisor's broker keeps the dead worker's records of it.

Opens a file with DH2Q and a batch oplock (sharing read only), takes a lock,
drops the connection and kills the worker. A DH2C on a new connection then
gets the handle back from the keeper with the broker's records adopted: it
can release its lock (once). Dropped and crashed again, the handle is purged
by a conflicting open from another client (its batch oplock break goes to
nobody), which then succeeds, and the reconnect finds nothing.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import os
import signal
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import children, fail, kept, reconnect, wait_for  # noqa: E402
from durable_keeper import durable_open  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
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

NOT_FOUND = 0xC0000034
RANGE_NOT_LOCKED = 0xC000007E


def connect(a):
    # Right after a crash the supervisor may not list the new worker as live
    # yet and drops the connection: try again.
    t0 = time.time()
    while True:
        conn = Connection(uuid.uuid4(), a.host, a.port)
        try:
            conn.connect()
            break
        except Exception:
            if time.time() - t0 > 10:
                raise
            time.sleep(0.1)
    sess = Session(conn, a.user, a.password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, r"\\%s\%s" % (a.host, a.share))
    tree.connect()
    return conn, tree


def element(offset, length, flags):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


def crash_worker(a, name):
    wait_for(lambda: [r for r in kept(a) if r["path"] == name
                      and r["state"] == "disconnected"] or None, "the disconnect")
    workers = children(a.supervisor)
    if len(workers) != 1:
        fail("want one worker, have %r" % workers)
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: [w for w in children(a.supervisor) if w != workers[0]], "a new worker")


def status_of(fn):
    try:
        fn()
    except SMBResponseException as e:
        return e.status
    return 0


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "keeper-socket", "ctl"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    a = p.parse_args()

    name = "durable_locks_%s.dat" % uuid.uuid4().hex[:8]
    create_guid = uuid.uuid4()
    conn, tree = connect(a)
    h = durable_open(tree, name, create_guid)
    h.write(b"locked and kept", 0)
    excl = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    h.lock([element(0, 4, excl)])
    file_id = h.file_id
    wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None, "the record")
    conn.disconnect(close=False)
    crash_worker(a, name)
    print("OK durable open with a lock; worker killed while it was disconnected", flush=True)

    c2, t2 = connect(a)
    h2 = reconnect(t2, name, file_id, create_guid)
    if h2.read(0, 15) != b"locked and kept":
        fail("reconnected handle reads wrong data")
    unlock = LockFlags.SMB2_LOCKFLAG_UNLOCK
    h2.lock([element(0, 4, unlock)])
    st = status_of(lambda: h2.lock([element(0, 4, unlock)]))
    if st != RANGE_NOT_LOCKED:
        fail("second unlock: status %#x" % st)
    print("OK after the crash the handle comes back with its lock", flush=True)

    c2.disconnect(close=False)
    crash_worker(a, name)
    c3, t3 = connect(a)
    o = Open(t3, name)
    t0 = time.time()
    o.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_WRITE, 0,
             ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
             CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
    waited = time.time() - t0
    st = status_of(lambda: reconnect(t3, name, file_id, create_guid))
    if st != NOT_FOUND:
        fail("reconnect after the purge: status %#x" % st)
    o.close()
    print("OK a conflicting open purges the orphaned handle (%.2fs) and the reconnect finds "
          "nothing" % waited, flush=True)


if __name__ == "__main__":
    main()
