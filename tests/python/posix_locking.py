#!/usr/bin/env python3
"""`posix locking = yes`: SMB byte-range locks and local POSIX locks see each other.

A local process (this script, standing in for NFS) uses OFD locks
(F_OFD_SETLK) and classic POSIX locks (F_SETLK) on the share's file while an
SMB client holds byte-range locks on a durable handle:

* an SMB lock makes local F_OFD_SETLK and F_SETLK fail with EAGAIN;
* a local lock refuses the SMB lock with STATUS_LOCK_NOT_GRANTED, and a
  blocking SMB lock is granted once the local lock goes;
* SMB unlock and close release the local view;
* with the worker killed (the keeper holds the handle's description), the
  SMB lock still keeps local processes out; after DH2C and close it is gone.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import errno
import fcntl
import os
import signal
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import (  # noqa: E402
    children,
    connect,
    durable_open,
    fail,
    kept,
    reconnect,
    wait_for,
)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import LockFlags, SMB2LockElement  # noqa: E402

LOCK_NOT_GRANTED = 0xC0000055
EX = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK
SH = LockFlags.SMB2_LOCKFLAG_SHARED_LOCK
NOW = LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
UN = LockFlags.SMB2_LOCKFLAG_UNLOCK


def smb_lock(h, offset, length, flags):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    h.lock([e])


def smb_refused(h, offset, length, flags, what):
    try:
        smb_lock(h, offset, length, flags)
    except SMBResponseException as e:
        if e.status != LOCK_NOT_GRANTED:
            fail("%s: status %#x" % (what, e.status))
        return
    fail("%s: SMB lock granted over a local lock" % what)


def flock_struct(kind, start, length):
    # struct flock on 64-bit Linux: short l_type, short l_whence, off_t
    # l_start, off_t l_len, pid_t l_pid (+ padding).
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def ofd(fd, kind, start, length):
    """F_OFD_SETLK; True if set, False on EAGAIN."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock_struct(kind, start, length))
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def posix(fd, kind, start, length):
    """Classic F_SETLK (process-owned); True if set, False on EAGAIN."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, flock_struct(kind, start, length))
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def expect_blocked(fd, start, length, what, kinds=(fcntl.F_WRLCK,)):
    for kind in kinds:
        if ofd(fd, kind, start, length):
            fail("%s: local F_OFD_SETLK (%d) got [%d,+%d)" % (what, kind, start, length))
        if posix(fd, kind, start, length):
            fail("%s: local F_SETLK (%d) got [%d,+%d)" % (what, kind, start, length))


def expect_free(fd, start, length, what):
    if not ofd(fd, fcntl.F_WRLCK, start, length):
        fail("%s: local F_OFD_SETLK refused on [%d,+%d)" % (what, start, length))
    ofd(fd, fcntl.F_UNLCK, start, length)
    if not posix(fd, fcntl.F_WRLCK, start, length):
        fail("%s: local F_SETLK refused on [%d,+%d)" % (what, start, length))
    posix(fd, fcntl.F_UNLCK, start, length)


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "localdir", "keeper-socket", "ctl"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    a = p.parse_args()

    name = "posix_lock_%s.dat" % uuid.uuid4().hex[:8]
    path = os.path.join(a.localdir, name)
    create_guid = uuid.uuid4()
    conn1, tree1 = connect(a, a.user, a.password)
    h = durable_open(tree1, name, create_guid)
    h.write(b"x" * 200, 0)
    file_id = h.file_id
    local = os.open(path, os.O_RDWR)
    expect_free(local, 0, 200, "before any SMB lock")

    smb_lock(h, 10, 10, EX | NOW)
    expect_blocked(local, 15, 1, "SMB exclusive [10,20)", (fcntl.F_WRLCK, fcntl.F_RDLCK))
    expect_blocked(local, 0, 100, "SMB exclusive [10,20), wide local range")
    expect_free(local, 30, 10, "next to the SMB lock")
    print("OK an SMB exclusive lock makes local F_OFD_SETLK and F_SETLK fail (EAGAIN)",
          flush=True)

    smb_lock(h, 50, 10, SH | NOW)
    if not ofd(local, fcntl.F_RDLCK, 50, 10) or not posix(local, fcntl.F_RDLCK, 50, 10):
        fail("a local read lock is refused next to an SMB shared lock")
    ofd(local, fcntl.F_UNLCK, 50, 10)
    posix(local, fcntl.F_UNLCK, 50, 10)
    expect_blocked(local, 55, 1, "SMB shared [50,60)")
    print("OK an SMB shared lock admits local readers and refuses local writers", flush=True)

    if not ofd(local, fcntl.F_WRLCK, 70, 10):
        fail("local OFD lock on a free range")
    smb_refused(h, 75, 1, EX | NOW, "local OFD write lock")
    smb_refused(h, 70, 10, SH | NOW, "local OFD write lock, SMB shared")
    ofd(local, fcntl.F_UNLCK, 70, 10)
    if not posix(local, fcntl.F_RDLCK, 85, 5):
        fail("local POSIX lock on a free range")
    smb_refused(h, 85, 1, EX | NOW, "local F_SETLK read lock")
    smb_lock(h, 85, 1, SH | NOW)  # readers share
    smb_lock(h, 85, 1, UN)
    posix(local, fcntl.F_UNLCK, 85, 5)
    smb_lock(h, 75, 1, EX | NOW)
    smb_lock(h, 75, 1, UN)
    print("OK local OFD and POSIX locks refuse the SMB lock with LOCK_NOT_GRANTED", flush=True)

    # A blocking SMB lock waits for the local lock to go.
    if not ofd(local, fcntl.F_WRLCK, 90, 5):
        fail("local OFD lock on [90,95)")
    t = threading.Timer(0.5, lambda: ofd(local, fcntl.F_UNLCK, 90, 5))
    t.start()
    t0 = time.time()
    smb_lock(h, 90, 1, EX)
    waited = time.time() - t0
    t.join()
    if waited < 0.4:
        fail("blocking SMB lock granted after %.2fs, while the local lock was held" % waited)
    expect_blocked(local, 90, 1, "granted blocking lock")
    smb_lock(h, 90, 1, UN)
    print("OK a blocking SMB lock was granted %.1fs later, when the local lock went" % waited,
          flush=True)

    smb_lock(h, 50, 10, UN)
    expect_free(local, 50, 10, "after SMB unlock")
    print("OK SMB unlock releases the local view", flush=True)

    # Disconnected: the worker dies, the keeper holds the description.
    workers = children(a.supervisor)
    if len(workers) != 1:
        fail("want one worker, have %r" % workers)
    old = workers[0]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: [w for w in children(a.supervisor) if w != old], "a new worker")
    try:
        conn1.disconnect(close=False)
    except Exception:
        pass
    wait_for(lambda: [r for r in kept(a) if r["path"] == name
                      and r["state"] == "disconnected"] or None, "the record to disconnect")
    expect_blocked(local, 15, 1, "disconnected, held by the keeper", (fcntl.F_WRLCK, fcntl.F_RDLCK))
    print("OK while disconnected (worker killed, keeper holds the fd) the lock keeps local "
          "processes out", flush=True)

    _, tree2 = connect(a, a.user, a.password)
    h2 = reconnect(tree2, name, file_id, create_guid)
    h2.close()
    wait_for(lambda: not [r for r in kept(a) if r["path"] == name], "the record to go")
    expect_free(local, 0, 200, "after close")
    print("OK after reconnect and close nothing is locked locally", flush=True)
    os.close(local)


if __name__ == "__main__":
    main()
