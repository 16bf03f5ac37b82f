#!/usr/bin/env python3
"""Share modes and byte-range locks between two clients (two ClientGUIDs).

    cross_worker.py --port PORT --share SHARE --user USER --password PASS [--host 127.0.0.1]

Two connections with distinct ClientGUIDs (with several workers, the supervisor deals
them to different workers). Prints "PORTS a b" (the local ports of the two connections,
so the caller can find which worker served each) and then checks that they conflict as
two clients of one process do: exclusive opens, read-only sharing, byte-range locks
against locks and I/O, and a blocking lock granted when the other client unlocks.
Exit 0 and "OK ..." lines on success.
"""
import argparse
import os
import sys
import time
import uuid

from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, LockFlags,
                              Open, ShareAccess, SMB2LockElement)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

SHARING_VIOLATION = 0xC0000043
LOCK_NOT_GRANTED = 0xC0000055
FILE_LOCK_CONFLICT = 0xC0000054

R = FilePipePrinterAccessMask.GENERIC_READ
RW = R | FilePipePrinterAccessMask.GENERIC_WRITE
SHARE_RW = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE


def client(a, unc):
    c = Connection(uuid.uuid4(), a.host, a.port)
    c.connect(Dialects.SMB_3_1_1)
    s = Session(c, a.user, a.password)
    s.connect()
    t = TreeConnect(s, unc)
    t.connect()
    return c, t


def open_file(tree, name, access, share, disposition=CreateDisposition.FILE_OPEN):
    f = Open(tree, name)
    f.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL,
             share, disposition, CreateOptions.FILE_NON_DIRECTORY_FILE)
    return f


def expect_status(what, status, fn):
    try:
        r = fn()
    except SMBResponseException as e:
        assert e.status == status, "%s: want 0x%08x, got %s" % (what, status, e)
        return
    if isinstance(r, Open):
        r.close()
    raise AssertionError("%s succeeded; want 0x%08x" % (what, status))


def lock_element(offset, length, flags):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


def released_when_holder_dies(a, name, c1, t1, t2):
    """Client 1 holds the file exclusively with a lock; once its worker is
    killed, client 2 (on the other worker) can open and lock it."""
    f1 = open_file(t1, name, RW, 0, CreateDisposition.FILE_CREATE)
    excl_now = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    f1.lock([lock_element(0, 10, excl_now)])
    expect_status("open while the holder lives", SHARING_VIOLATION,
                  lambda: open_file(t2, name, R, SHARE_RW))
    with open(os.path.join(a.handshake, "held.tmp"), "w") as fh:
        fh.write(str(c1.transport._sock.getsockname()[1]))
    os.rename(os.path.join(a.handshake, "held.tmp"), os.path.join(a.handshake, "held"))
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(a.handshake, "go")):
        assert time.time() < deadline, "nobody killed the holder's worker"
        time.sleep(0.05)
    while True:
        try:
            f2 = open_file(t2, name, RW, 0)
            break
        except SMBResponseException as e:
            assert e.status == SHARING_VIOLATION, "unexpected %s" % e
            assert time.time() < deadline, "the dead worker's open was never released"
            time.sleep(0.05)
    f2.lock([lock_element(0, 10, excl_now)])
    f2.close()
    print("OK released after the holder's worker died", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--handshake", help="directory: write 'held' (the holder's port) there "
                    "and wait for 'go' (its worker was killed), then check the release")
    a = ap.parse_args()
    unc = r"\\%s\%s" % (a.host, a.share)
    name = "xworker-%s.bin" % uuid.uuid4().hex[:12]

    c1, t1 = client(a, unc)
    c2, t2 = client(a, unc)
    print("PORTS %d %d" % (c1.transport._sock.getsockname()[1],
                           c2.transport._sock.getsockname()[1]), flush=True)
    if a.handshake:
        return released_when_holder_dies(a, name, c1, t1, t2)

    # Share none: the other client is refused until the first closes.
    f1 = open_file(t1, name, RW, 0, CreateDisposition.FILE_CREATE)
    f1.write(b"0123456789abcdef", 0)
    expect_status("second open while shared with nobody", SHARING_VIOLATION,
                  lambda: open_file(t2, name, R, SHARE_RW))
    f1.close()
    open_file(t2, name, RW, 0).close()

    # Read-only sharing: a writer is refused, a reader is not.
    f1 = open_file(t1, name, R, ShareAccess.FILE_SHARE_READ)
    expect_status("write open against share-read", SHARING_VIOLATION,
                  lambda: open_file(t2, name, RW, SHARE_RW))
    open_file(t2, name, R, ShareAccess.FILE_SHARE_READ).close()
    # ... and the reader's own share mode binds the first client too.
    f2 = open_file(t2, name, R, ShareAccess.FILE_SHARE_READ)
    expect_status("write open against the other client's share-read", SHARING_VIOLATION,
                  lambda: open_file(t1, name, RW, SHARE_RW))
    f2.close()
    f1.close()
    print("OK cross-client share modes", flush=True)

    # Byte-range locks conflict with locks and I/O of the other client.
    f1 = open_file(t1, name, RW, SHARE_RW)
    f2 = open_file(t2, name, RW, SHARE_RW)
    excl_now = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    f1.lock([lock_element(0, 10, excl_now)])
    expect_status("overlapping lock", LOCK_NOT_GRANTED,
                  lambda: f2.lock([lock_element(5, 1, excl_now)]))
    expect_status("read of a range the other client locked", FILE_LOCK_CONFLICT,
                  lambda: f2.read(0, 4))
    expect_status("write of a range the other client locked", FILE_LOCK_CONFLICT,
                  lambda: f2.write(b"x", 2))
    assert f2.read(10, 6) == b"abcdef", "unlocked range must stay readable"
    f1.lock([lock_element(0, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    f2.lock([lock_element(5, 1, excl_now)])
    f2.lock([lock_element(5, 1, LockFlags.SMB2_LOCKFLAG_UNLOCK)])

    # A blocking lock waits for the other client's unlock.
    f1.lock([lock_element(0, 10, excl_now)])
    req, receive = f2.lock([lock_element(0, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)],
                           send=False)
    sent = c2.send(req, t2.session.session_id, t2.tree_connect_id)
    f1.lock([lock_element(0, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    receive(sent, wait=True)
    expect_status("lock after the blocking lock was granted", LOCK_NOT_GRANTED,
                  lambda: f1.lock([lock_element(0, 1, excl_now)]))
    # Closing the holder releases its locks for the other client.
    f2.close()
    f1.lock([lock_element(0, 1, excl_now)])
    f1.close()
    print("OK cross-client byte-range locks", flush=True)

    f = open_file(t1, name, RW, 0)
    f.close()
    c1.disconnect(True)
    c2.disconnect(True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
