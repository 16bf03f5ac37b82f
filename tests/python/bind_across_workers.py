#!/usr/bin/env python3
"""Binds a second connection, with another ClientGUID, to a session (MS-SMB2 3.3.5.5.2).

    bind_across_workers.py --port PORT --share SHARE --user USER --password PASS
                           [--host 127.0.0.1] [--dialect 3.1.1|3.0.2]

Client 1 logs on, writes a file and keeps it open. Client 2 (a new ClientGUID, so with
several workers the supervisor deals it to another worker) negotiates and sends a
SESSION_SETUP with the BINDING flag for client 1's session, signed with that session's
key. The bind must succeed with a response signed by the new channel's key; client 2
then connects the share over the bound channel, reads the file client 1 wrote and
sees client 1's open (a share-none open is refused). Prints "PORTS a b" (local ports of
the two connections) and "OK ..." lines; exits non-zero on the first failure.

With --handshake DIR, the script instead writes DIR/held (client 1's port) before
binding, waits for DIR/go (the caller kills client 1's worker meanwhile), and expects
the bind to fail with USER_SESSION_DELETED: the session died with its worker.
"""
import argparse
import hashlib
import os
import sys
import time
import uuid

import spnego
from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import MoreProcessingRequired, SMBResponseException
from smbprotocol.header import NtStatus
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, Open,
                              ShareAccess)
from smbprotocol.session import Session, SMB2SessionSetupRequest, SMB2SessionSetupResponse
from smbprotocol.tree import TreeConnect

SHARING_VIOLATION = 0xC0000043
USER_SESSION_DELETED = 0xC0000203
SESSION_FLAG_BINDING = 0x01
R = FilePipePrinterAccessMask.GENERIC_READ
RW = R | FilePipePrinterAccessMask.GENERIC_WRITE


def open_file(tree, name, access, share, disposition=CreateDisposition.FILE_OPEN):
    f = Open(tree, name)
    f.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL,
             share, disposition, CreateOptions.FILE_NON_DIRECTORY_FILE)
    return f


def bind(conn, owner, a):
    """Binds `conn` to `owner`'s session; returns the channel's Session object."""
    ch = Session(conn, a.user, a.password)
    ch.session_id = owner.session_id
    # The binding requests are signed with the session's own key.
    ch.signing_key = owner.signing_key
    ch.signing_required = True
    conn.session_table[ch.session_id] = ch
    ctx = spnego.client(a.user, a.password, service="cifs", hostname=a.host,
                        options=spnego.NegotiateOptions.session_key, protocol="negotiate")
    in_token = conn.gss_negotiate_token
    preauth = []
    final = None
    while not ctx.complete:
        out = ctx.step(in_token)
        if not out:
            break
        req = SMB2SessionSetupRequest()
        req["flags"] = SESSION_FLAG_BINDING
        req["security_mode"] = conn.client_security_mode
        req["buffer"] = out
        sent = conn.send(req, sid=ch.session_id, credit_request=64, force_signature=True)
        mid = sent.message["message_id"].get_value()
        try:
            resp = conn.receive(sent)
        except MoreProcessingRequired as exc:
            resp = exc.header
        # Every exchanged message but the final response (MS-SMB2 3.3.5.5.3).
        preauth += conn.preauth_integrity_session_hash_value.pop(mid)
        status = resp["status"].get_value()
        assert resp["session_id"].get_value() == ch.session_id, "bind answered for another session"
        body = SMB2SessionSetupResponse()
        body.unpack(resp["data"].get_value())
        in_token = body["buffer"].get_value()
        if status == NtStatus.STATUS_SUCCESS:
            final = resp
        else:
            assert status == NtStatus.STATUS_MORE_PROCESSING_REQUIRED, "bind: status 0x%08x" % status
    if final is None and not ctx.complete:
        raise AssertionError("binding exchange ended without success")
    if not ctx.complete and in_token:
        ctx.step(in_token)
    key = ctx.session_key[:16].ljust(16, b"\x00")
    if conn.dialect >= Dialects.SMB_3_1_1:
        h = b"\x00" * 64
        for m in list(conn.preauth_integrity_hash_value) + preauth:
            h = hashlib.sha512(h + m).digest()
        ch.signing_key = ch._smb3kdf(key, b"SMBSigningKey\x00", h)
    else:
        ch.signing_key = ch._smb3kdf(key, b"SMB2AESCMAC\x00", b"SmbSign\x00")
    ch.session_key = key
    ch._connected = True
    # The final response proves the channel key.
    conn.verify_signature(final, ch.session_id, force=True)
    return ch


def bind_after_owner_died(a, c1, c2, s1):
    held = os.path.join(a.handshake, "held")
    with open(held + ".tmp", "w") as fh:
        fh.write(str(c1.transport._sock.getsockname()[1]))
    os.rename(held + ".tmp", held)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(a.handshake, "go")):
        assert time.time() < deadline, "nobody killed the session's worker"
        time.sleep(0.05)
    try:
        bind(c2, s1, a)
        raise AssertionError("bound to a session whose worker died")
    except SMBResponseException as e:
        assert e.status == USER_SESSION_DELETED, "bind after the owner died: %s" % e
    print("OK bind to a dead worker's session: USER_SESSION_DELETED", flush=True)
    c2.disconnect(close=False)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--dialect", default="3.1.1", choices=["3.1.1", "3.0.2"])
    ap.add_argument("--handshake", help="directory for the owner-dies handshake")
    a = ap.parse_args()
    dialect = Dialects.SMB_3_1_1 if a.dialect == "3.1.1" else Dialects.SMB_3_0_2
    unc = "\\\\%s\\%s" % (a.host, a.share)
    name = "bind-%s.txt" % uuid.uuid4().hex[:8]
    data = b"written by the session's first channel"

    c1 = Connection(uuid.uuid4(), a.host, a.port)
    c1.connect(dialect)
    s1 = Session(c1, a.user, a.password, require_encryption=False)
    s1.connect()
    t1 = TreeConnect(s1, unc)
    t1.connect()
    f1 = open_file(t1, name, RW, ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_CREATE)
    f1.write(data, 0)

    c2 = Connection(uuid.uuid4(), a.host, a.port)
    c2.connect(dialect)
    print("PORTS %d %d" % (c1.transport._sock.getsockname()[1],
                           c2.transport._sock.getsockname()[1]), flush=True)
    if a.handshake:
        return bind_after_owner_died(a, c1, c2, s1)
    ch = bind(c2, s1, a)
    print("OK bound session 0x%x from another ClientGUID" % ch.session_id, flush=True)

    t2 = TreeConnect(ch, unc)
    t2.connect()
    f2 = open_file(t2, name, R, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE)
    got = f2.read(0, len(data))
    assert got == data, "read %r over the bound channel" % got
    try:
        open_file(t2, name, R, 0).close()
        raise AssertionError("a share-none open succeeded while the first channel holds the file")
    except SMBResponseException as e:
        assert e.status == SHARING_VIOLATION, "share-none open: %s" % e
    f2.close()
    print("OK the bound channel reads what the first channel wrote", flush=True)

    # The first channel still serves the session.
    assert f1.read(0, len(data)) == data
    f1.close()
    t1.disconnect()
    s1.disconnect()
    c1.disconnect()
    c2.disconnect(close=False)
    print("OK first channel unaffected", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
