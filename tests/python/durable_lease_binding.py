#!/usr/bin/env python3
"""A lease-based durable v2 handle is bound to its ClientGuid (MS-SMB2 3.3.5.9.12).

Opens a file with DH2Q and an RWH lease on a connection with ClientGuid A,
then drops the connection without closing:

1. in the worker: a DH2C (same user, CreateGuid and lease key) from a
   connection with ClientGuid B is refused with OBJECT_NAME_NOT_FOUND, and
   the handle then reconnects for its owner (ClientGuid A), who drops it again;
2. through the keeper: the worker is killed; the keeper's record carries the
   lease key, a DH2C from ClientGuid B is refused (the keeper logs why) and
   the record stays as it was, disconnected, for its owner;
3. the owner's DH2C (ClientGuid A) then rebuilds the handle with its lease
   in the new worker and reads the data back.

Prints one "OK ..." line per step; exits non-zero on the first failure.
"""
import argparse
import os
import signal
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_keeper import children, ctx, fail, kept, wait_for  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.create_contexts import (  # noqa: E402
    CreateContextName,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
    SMB2CreateRequestLeaseV2,
)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
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


def connect(a, guid):
    conn = Connection(guid, a.host, a.port)
    conn.connect()
    sess = Session(conn, a.user, a.password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, r"\\%s\%s" % (a.host, a.share))
    tree.connect()
    return conn, tree


def lease_ctx(key):
    lc = SMB2CreateRequestLeaseV2()
    lc["lease_key"] = key.bytes
    lc["lease_state"] = RWH
    lc["parent_lease_key"] = b"\0" * 16
    lc["epoch"] = 0
    return ctx(CreateContextName.SMB2_CREATE_REQUEST_LEASE, lc)


def leased_durable_open(tree, name, create_guid, key):
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
        create_contexts=[ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, dh),
                         lease_ctx(key)],
        oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE,
    )
    names = [type(c).__name__ for c in (resp or [])]
    if "SMB2CreateDurableHandleResponseV2" not in names:
        fail("no DH2Q response: durability not granted (%r)" % names)
    if o.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE:
        fail("no lease granted: oplock level %r" % o.oplock_level)
    return o


def reconnect(tree, name, file_id, create_guid, key):
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
        create_contexts=[ctx(CreateContextName.SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2, dc),
                         lease_ctx(key)],
        oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE,
    )
    return o


def refused(tree, name, file_id, create_guid, key, what):
    try:
        reconnect(tree, name, file_id, create_guid, key)
    except SMBResponseException as e:
        if e.status != NOT_FOUND:
            fail("%s: status %#x" % (what, e.status))
        return
    fail("%s: reconnected" % what)


def drop(conn):
    try:
        conn.disconnect(close=False)
    except Exception:
        pass


def main():
    p = argparse.ArgumentParser()
    for opt in ("host", "share", "user", "password", "keeper-socket", "ctl"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor", type=int, required=True)
    a = p.parse_args()

    name = "durable_lease_%s.dat" % uuid.uuid4().hex[:8]
    owner, other = uuid.uuid4(), uuid.uuid4()
    create_guid, key = uuid.uuid4(), uuid.uuid4()
    conn, tree = connect(a, owner)
    h = leased_durable_open(tree, name, create_guid, key)
    h.write(b"leased and durable", 0)
    file_id = h.file_id
    rec = wait_for(lambda: [r for r in kept(a) if r["path"] == name] or None, "the record")[0]
    if rec["lease_key"] is None:
        fail("the keeper's record has no lease key: %r" % rec)
    print("OK lease-based durable v2 open; the keeper's record carries its lease key", flush=True)

    # 1. In the worker.
    drop(conn)
    wait_for(lambda: [r for r in kept(a) if r["path"] == name
                      and r["state"] == "disconnected"] or None, "the disconnect")
    c2, t2 = connect(a, other)
    refused(t2, name, file_id, create_guid, key, "in-worker reconnect from another ClientGuid")
    drop(c2)
    conn, tree = connect(a, owner)
    h = reconnect(tree, name, file_id, create_guid, key)
    if h.read(0, 18) != b"leased and durable":
        fail("owner's reconnect reads wrong data")
    print("OK in the worker: another ClientGuid refused, the owner's ClientGuid reconnects",
          flush=True)

    # 2. Through the keeper.
    drop(conn)
    wait_for(lambda: [r for r in kept(a) if r["path"] == name
                      and r["state"] == "disconnected"] or None, "the disconnect")
    workers = children(a.supervisor)
    if len(workers) != 1:
        fail("want one worker, have %r" % workers)
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: [w for w in children(a.supervisor) if w != workers[0]], "a new worker")
    before = [r for r in kept(a) if r["path"] == name]
    c3, t3 = connect(a, other)
    refused(t3, name, file_id, create_guid, key, "keeper reconnect from another ClientGuid")
    drop(c3)
    after = [r for r in kept(a) if r["path"] == name]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_left_ms"} for r in rs]  # noqa: E731
    if len(after) != 1 or strip(before) != strip(after) or after[0]["state"] != "disconnected":
        fail("record changed by a refused reconnect: %r -> %r" % (before, after))
    print("OK through the keeper: another ClientGuid refused, record %d intact and disconnected"
          % after[0]["id"], flush=True)

    # 3. The owner's ClientGuid gets the handle back with its lease.
    c4, t4 = connect(a, owner)
    h = reconnect(t4, name, file_id, create_guid, key)
    if h.oplock_level != RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE:
        fail("rebuilt handle has no lease: oplock level %r" % h.oplock_level)
    if h.read(0, 18) != b"leased and durable":
        fail("rebuilt handle reads wrong data")
    now = [r for r in kept(a) if r["path"] == name]
    if len(now) != 1 or now[0]["state"] != "connected":
        fail("record after the rebuild: %r" % now)
    print("OK through the keeper: the owner's ClientGuid gets the leased handle back",
          flush=True)
    h.close()


if __name__ == "__main__":
    main()
