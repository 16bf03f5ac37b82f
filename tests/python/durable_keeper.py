#!/usr/bin/env python3
"""A durable v2 handle survives kill -9 of its worker through the handle keeper.

Opens a file with DH2Q and a batch oplock, writes, sets the file offset of the
keeper's copy of the open file description to a marker value (through
pidfd_getfd on the keeper's fd), kills the worker, reconnects the handle on a
new connection (DH2C) and reads the data back. The new worker's fd for the
file must show the marker offset: it is the very same description. Then
checks that a reconnect as another user or with another CreateGuid is
refused and leaves the handle usable for its owner.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import uuid

from smbprotocol.connection import Connection
from smbprotocol.create_contexts import (
    CreateContextName,
    SMB2CreateContextRequest,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
)
from smbprotocol.exceptions import SMBResponseException
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

MARKER = 4242
SYS_PIDFD_GETFD = 438  # x86_64 and aarch64


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def connect(a, user, password):
    conn = Connection(uuid.uuid4(), a.host, a.port)
    conn.connect()
    sess = Session(conn, user, password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, r"\\%s\%s" % (a.host, a.share))
    tree.connect()
    return conn, tree


def ctx(name, data):
    c = SMB2CreateContextRequest()
    c["buffer_name"] = name
    c["buffer_data"] = data
    return c


def durable_open(tree, name, create_guid):
    o = Open(tree, name)
    dh = SMB2CreateDurableHandleRequestV2()
    dh["timeout"] = 0
    dh["create_guid"] = create_guid
    resp = o.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        ShareAccess.FILE_SHARE_READ,
        CreateDisposition.FILE_OVERWRITE_IF,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
        create_contexts=[ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, dh)],
        oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH,
    )
    names = [type(c).__name__ for c in (resp or [])]
    if "SMB2CreateDurableHandleResponseV2" not in names:
        fail("no DH2Q response: durability not granted (%r)" % names)
    if o.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH:
        fail("no batch oplock: %r" % o.oplock_level)
    return o


def reconnect(tree, name, file_id, create_guid):
    """DH2C for `file_id`; returns the Open or raises SMBResponseException."""
    o = Open(tree, name)
    dc = SMB2CreateDurableHandleReconnectV2()
    dc["file_id"] = file_id
    dc["create_guid"] = create_guid
    o.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ,
        0,
        ShareAccess.FILE_SHARE_READ,
        CreateDisposition.FILE_OPEN,
        0,
        create_contexts=[ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2, dc)],
    )
    return o


def children(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        # The supervisor's broker threads come and go with its workers: a
        # thread listed a moment ago may be gone.
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            continue
    return sorted(out)


def fds_on(pid, path):
    """fd numbers of process `pid` open on `path`."""
    real = os.path.realpath(path)
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == real:
                out.append(int(fd))
        except OSError:
            pass
    return out


def pos_of(pid, fd):
    with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
        for line in f:
            if line.startswith("pos:"):
                return int(line.split()[1])
    return None


def kept(a):
    out = subprocess.run(
        [a.ctl, "handles", "--socket", a.keeper_socket, "--json"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0:
        fail("holdfastctl handles: %s" % out.stderr)
    data = json.loads(out.stdout)
    return data if isinstance(data, list) else data.get("handles", data)


def wait_for(cond, what, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    fail("timed out waiting for " + what)


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "user2", "password2",
                "localdir", "keeper-socket", "ctl"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    p.add_argument("--keeper-pid", type=int, required=True)
    a = p.parse_args()

    name = "durable_keeper_%s.dat" % uuid.uuid4().hex[:8]
    path = os.path.join(a.localdir, name)
    data = b"kept across a worker crash " * 40
    create_guid = uuid.uuid4()

    conn1, tree1 = connect(a, a.user, a.password)
    h = durable_open(tree1, name, create_guid)
    h.write(data, 0)
    file_id = h.file_id
    print("OK durable v2 open with a batch oplock, %d bytes written" % len(data), flush=True)

    recs = wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None,
                    "the keeper's record")
    rec_id = recs[0]["id"]
    print("OK keeper record %d deposited" % rec_id, flush=True)

    # Mark the keeper's description: its offset is shared by every fd of it.
    kfds = fds_on(a.keeper_pid, path)
    if len(kfds) != 1:
        fail("keeper holds %d fds on %s" % (len(kfds), path))
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(a.keeper_pid)
    dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, kfds[0], 0)
    if dup < 0:
        fail("pidfd_getfd: errno %d" % ctypes.get_errno())
    os.lseek(dup, MARKER, os.SEEK_SET)
    os.close(dup)
    os.close(pidfd)
    workers = children(a.supervisor)
    if len(workers) != 1:
        fail("want one worker, have %r" % workers)
    old = workers[0]
    wfds = fds_on(old, path)
    if [pos_of(old, fd) for fd in wfds] != [MARKER]:
        fail("worker fds %r do not share the keeper's description" % wfds)
    with open(path, "rb") as control:
        if pos_of(os.getpid(), control.fileno()) != 0:
            fail("control open has a non-zero offset")
    print("OK worker and keeper share one open file description", flush=True)

    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: [w for w in children(a.supervisor) if w != old], "a new worker")[0]
    try:
        conn1.disconnect(close=False)
    except Exception:
        pass
    print("OK worker %d killed, worker %d started" % (old, new), flush=True)

    rec = wait_for(lambda: [r for r in kept(a) if r["id"] == rec_id
                            and r["state"] == "disconnected"] or None,
                   "the kept handle to be disconnected")
    print("OK keeper record %d disconnected, same record" % rec_id, flush=True)

    # Refused: another user, another CreateGuid.
    _, tree_other = connect(a, a.user2, a.password2)
    try:
        reconnect(tree_other, name, file_id, create_guid)
        fail("another user reclaimed the handle")
    except SMBResponseException as e:
        if e.status != 0xC0000022:  # ACCESS_DENIED
            fail("another user: status %#x" % e.status)
    _, tree2 = connect(a, a.user, a.password)
    try:
        reconnect(tree2, name, file_id, uuid.uuid4())
        fail("a wrong CreateGuid reclaimed the handle")
    except SMBResponseException as e:
        if e.status != 0xC0000034:  # OBJECT_NAME_NOT_FOUND
            fail("wrong CreateGuid: status %#x" % e.status)
    print("OK reconnects as another user and with another CreateGuid refused", flush=True)

    h2 = reconnect(tree2, name, file_id, create_guid)
    if h2.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH:
        fail("reconnected without the batch oplock")
    got = h2.read(0, len(data))
    if got != data:
        fail("read back %r" % got[:40])
    print("OK DH2C on a new connection after the crash; data read back", flush=True)

    nfds = wait_for(lambda: fds_on(new, path) or None, "the new worker's fd")
    if [pos_of(new, fd) for fd in nfds] != [MARKER]:
        fail("new worker's fd offset %r, not the marker" % [pos_of(new, fd) for fd in nfds])
    recs = [r for r in kept(a) if r["path"] == name]
    if [r["id"] for r in recs] != [rec_id] or recs[0]["state"] != "connected":
        fail("keeper records after reconnect: %r" % recs)
    print("OK same open file description (offset %d) and same keeper record %d, connected"
          % (MARKER, rec_id), flush=True)

    h2.close()
    wait_for(lambda: not [r for r in kept(a) if r["id"] == rec_id], "the record to go")
    print("OK close removed the keeper record", flush=True)


if __name__ == "__main__":
    main()
