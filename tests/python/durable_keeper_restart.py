#!/usr/bin/env python3
"""A durable v2 handle across a restart of the handle keeper.

Opens a file with DH2Q and a batch oplock, writes, and marks the keeper's copy
of the open file description with a file offset (pidfd_getfd). Then prints
"RESTART <record id>" and waits for a line "GO <new keeper pid>" on stdin: the
test driving this script restarts the keeper meanwhile, with the fds it got
from the keeper's FDSTORE=1 messages (--store yes) or without any (--store no).

--store yes: the new keeper lists the same record (keeper.db row survived),
disconnected, with a positive time left that decreases; it holds an fd with
the marker offset (same description). The worker is killed, a new connection
reconnects with DH2C, reads the data back, and the new worker's fd shows the
marker offset too. Another ClientGuid (same user), another user and a wrong
CreateGuid are tried first where the spec refuses them.

--store no: the record is gone after the restart; after the worker is
killed, DH2C fails with STATUS_OBJECT_NAME_NOT_FOUND.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import os
import signal
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import (  # noqa: E402
    MARKER,
    children,
    connect,
    durable_open,
    fail,
    fds_on,
    kept,
    pos_of,
    reconnect,
    wait_for,
)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import RequestedOplockLevel  # noqa: E402

import ctypes  # noqa: E402

SYS_PIDFD_GETFD = 438


def set_offset(pid, fd, offset):
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if dup < 0:
        fail("pidfd_getfd: errno %d" % ctypes.get_errno())
    os.lseek(dup, offset, os.SEEK_SET)
    os.close(dup)
    os.close(pidfd)


def db_row(state_dir, rec_id):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state_dir, "keeper.db"), uri=True)
    try:
        return db.execute(
            "SELECT id, path, state FROM handles WHERE id = ?", (rec_id,)
        ).fetchone()
    finally:
        db.close()


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "user2", "password2",
                "localdir", "keeper-socket", "ctl", "state-dir"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    p.add_argument("--keeper-pid", type=int, required=True)
    p.add_argument("--store", choices=("yes", "no"), required=True)
    a = p.parse_args()

    name = "durable_restart_%s.dat" % uuid.uuid4().hex[:8]
    path = os.path.join(a.localdir, name)
    data = b"kept across a keeper restart " * 40
    create_guid = uuid.uuid4()

    conn1, tree1 = connect(a, a.user, a.password)
    h = durable_open(tree1, name, create_guid)
    h.write(data, 0)
    file_id = h.file_id
    print("OK durable v2 open with a batch oplock, %d bytes written" % len(data), flush=True)

    recs = wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None,
                    "the keeper's record")
    rec_id = recs[0]["id"]
    if recs[0]["state"] != "connected" or recs[0]["time_left_ms"] is not None:
        fail("fresh record not connected: %r" % recs[0])
    # smbprotocol puts the UUID's bytes on the wire in RFC 4122 order; the
    # keeper prints wire bytes as a GUID (first three fields little-endian).
    wire_guid = str(uuid.UUID(bytes_le=conn1.client_guid.bytes))
    if recs[0]["client_guid"] != wire_guid:
        fail("record's ClientGuid %r, connection's %s" % (recs[0]["client_guid"], wire_guid))
    kfds = fds_on(a.keeper_pid, path)
    if len(kfds) != 1:
        fail("keeper holds %d fds on %s" % (len(kfds), path))
    set_offset(a.keeper_pid, kfds[0], MARKER)
    workers = children(a.supervisor)
    if len(workers) != 1:
        fail("want one worker, have %r" % workers)
    old = workers[0]
    if [pos_of(old, fd) for fd in fds_on(old, path)] != [MARKER]:
        fail("worker does not share the keeper's description")
    print("OK keeper record %d deposited; worker and keeper share one description" % rec_id,
          flush=True)

    print("RESTART %d" % rec_id, flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "GO":
        fail("driver said %r" % line)
    keeper_pid = int(line[1])
    if keeper_pid == a.keeper_pid:
        fail("the keeper was not restarted")

    row = db_row(a.state_dir, rec_id)
    if a.store == "no":
        if [r for r in kept(a) if r["path"] == name]:
            fail("record survived a restart without an fd store")
        if row is not None:
            fail("keeper.db still has the lost row %r" % (row,))
        if fds_on(keeper_pid, path):
            fail("new keeper holds an fd on %s" % path)
        print("OK restart without an fd store: record %d lost" % rec_id, flush=True)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: [w for w in children(a.supervisor) if w != old], "a new worker")
        try:
            conn1.disconnect(close=False)
        except Exception:
            pass
        _, tree2 = connect(a, a.user, a.password)
        try:
            reconnect(tree2, name, file_id, create_guid)
            fail("a handle lost with the keeper was reclaimed")
        except SMBResponseException as e:
            if e.status != 0xC0000034:  # OBJECT_NAME_NOT_FOUND
                fail("reconnect of a lost handle: status %#x" % e.status)
        print("OK after the worker crash the handle is gone (OBJECT_NAME_NOT_FOUND)", flush=True)
        return

    if row is None or row[0] != rec_id or row[1] != name:
        fail("keeper.db row after restart: %r" % (row,))
    recs = [r for r in kept(a) if r["path"] == name]
    if [r["id"] for r in recs] != [rec_id]:
        fail("records after restart: %r" % recs)
    print("OK keeper.db row and record %d survived the restart" % rec_id, flush=True)
    nk = fds_on(keeper_pid, path)
    if [pos_of(keeper_pid, fd) for fd in nk] != [MARKER]:
        fail("restarted keeper's fds %r do not carry the marker offset" % nk)
    if [pos_of(old, fd) for fd in fds_on(old, path)] != [MARKER]:
        fail("worker's description changed across the keeper restart")
    print("OK restarted keeper holds the same open file description (offset %d)" % MARKER,
          flush=True)
    if recs[0]["state"] != "disconnected":
        fail("a restored record is owned by nobody until claimed: %r" % recs[0])

    # The worker's next keeper request (a second durable open here) finds its
    # keeper connection dead, makes a new one and claims its handle again.
    other = "durable_restart_other_%s.dat" % uuid.uuid4().hex[:8]
    h_other = durable_open(tree1, other, uuid.uuid4())
    wait_for(lambda: [r for r in kept(a) if r["path"] == other] or None,
             "the second open's record")
    rec = wait_for(lambda: [r for r in kept(a) if r["id"] == rec_id
                            and r["state"] == "connected"] or None,
                   "the worker to claim record %d again" % rec_id)[0]
    if rec["time_left_ms"] is not None:
        fail("claimed record still has a timer: %r" % rec)
    h_other.close()
    wait_for(lambda: not [r for r in kept(a) if r["path"] == other], "the second record to go")
    print("OK the worker claimed record %d again on its new keeper connection" % rec_id,
          flush=True)

    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: [w for w in children(a.supervisor) if w != old], "a new worker")[0]
    try:
        conn1.disconnect(close=False)
    except Exception:
        pass
    print("OK worker %d killed, worker %d started" % (old, new), flush=True)

    # Disconnected with its time running down (holdfastctl handles --json).
    r1 = wait_for(lambda: [r for r in kept(a) if r["id"] == rec_id
                           and r["state"] == "disconnected"] or None,
                  "the record to be disconnected")[0]
    time.sleep(0.3)
    r2 = [r for r in kept(a) if r["id"] == rec_id][0]
    t1, t2 = r1["time_left_ms"], r2["time_left_ms"]
    if r1["connected"] or r2["state"] != "disconnected":
        fail("record not disconnected: %r" % r2)
    if not (isinstance(t1, int) and isinstance(t2, int) and 0 < t2 < t1 <= r1["timeout_ms"]):
        fail("time left not positive and decreasing: %r then %r (timeout %r)"
             % (t1, t2, r1["timeout_ms"]))
    print("OK holdfastctl handles --json: disconnected, time left %d ms then %d ms" % (t1, t2),
          flush=True)

    # Refusals that leave the handle for its owner: another user, a wrong
    # CreateGuid. A different ClientGuid binds lease-based handles only
    # (MS-SMB2 3.3.5.9.12); this one holds a batch oplock, so it is not tried.
    _, tree_other = connect(a, a.user2, a.password2)
    try:
        reconnect(tree_other, name, file_id, create_guid)
        fail("another user reclaimed the handle")
    except SMBResponseException as e:
        if e.status != 0xC0000022:  # ACCESS_DENIED
            fail("another user: status %#x" % e.status)
    conn2, tree2 = connect(a, a.user, a.password)
    try:
        reconnect(tree2, name, file_id, uuid.uuid4())
        fail("a wrong CreateGuid reclaimed the handle")
    except SMBResponseException as e:
        if e.status != 0xC0000034:  # OBJECT_NAME_NOT_FOUND
            fail("wrong CreateGuid: status %#x" % e.status)
    print("OK another user and a wrong CreateGuid refused after the restart", flush=True)

    h2 = reconnect(tree2, name, file_id, create_guid)
    if h2.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH:
        fail("reconnected without the batch oplock")
    got = h2.read(0, len(data))
    if got != data:
        fail("read back %r" % got[:40])
    print("OK DH2C on a new connection after keeper restart and worker crash; data read back",
          flush=True)
    # That connection has a ClientGuid of its own: an oplock-based handle is
    # not bound to it (MS-SMB2 3.3.5.9.12 binds leased handles only).
    if str(conn2.client_guid) == str(conn1.client_guid):
        fail("the reconnect reused the first connection's ClientGuid")
    print("OK reclaimed from another ClientGuid, as MS-SMB2 allows for an oplock handle",
          flush=True)

    nfds = wait_for(lambda: fds_on(new, path) or None, "the new worker's fd")
    if [pos_of(new, fd) for fd in nfds] != [MARKER]:
        fail("new worker's fd offset %r, not the marker" % [pos_of(new, fd) for fd in nfds])
    recs = [r for r in kept(a) if r["path"] == name]
    if [r["id"] for r in recs] != [rec_id] or recs[0]["state"] != "connected":
        fail("keeper records after reconnect: %r" % recs)
    print("OK same open file description (offset %d) and same record %d, connected"
          % (MARKER, rec_id), flush=True)

    h2.close()
    wait_for(lambda: not [r for r in kept(a) if r["id"] == rec_id], "the record to go")
    print("OK close removed the keeper record", flush=True)


if __name__ == "__main__":
    main()
