#!/usr/bin/env python3
"""smbprotocol (low-level API) round trip against an SMB server, SMB 3.1.1 with signing required.

    roundtrip.py --port PORT --share SHARE --user USER --password PASS [--host 127.0.0.1]
                 [--size BYTES] [--localdir DIR] [--cipher NAME]

Connects (dialect 3.1.1, require_signing), creates a file, writes SIZE (1 MiB) random bytes,
reads them back and compares, checks the server-side copy if --localdir is given, deletes the
file (delete-on-close) and checks it is gone. Exit 0 and "OK ..." on success.

With --cipher (AES_128_CCM, AES_128_GCM, AES_256_CCM or AES_256_GCM) only that cipher is
offered, the session requires encryption, and the script checks the server chose that cipher
and that the session really encrypts.
"""
import argparse
import hashlib
import os
import sys
import uuid

from smbprotocol.connection import Ciphers, Connection, Dialects
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect
from smbprotocol.exceptions import SMBResponseException

CHUNK = 64 * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--size", type=int, default=1024 * 1024)
    ap.add_argument("--localdir")
    ap.add_argument("--timeout", type=int, default=30)
    ap.add_argument("--cipher", choices=["AES_128_CCM", "AES_128_GCM", "AES_256_CCM", "AES_256_GCM"])
    a = ap.parse_args()
    cipher = getattr(Ciphers, a.cipher) if a.cipher else None

    data = os.urandom(a.size)
    name = "pyrt-%s.bin" % uuid.uuid4().hex[:12]

    conn = Connection(uuid.uuid4(), a.host, a.port, require_signing=True)
    conn.connect(Dialects.SMB_3_1_1, timeout=a.timeout,
                 preferred_encryption_algos=[cipher] if cipher else None)
    try:
        assert conn.dialect == Dialects.SMB_3_1_1, "negotiated dialect 0x%x, want 0x311" % conn.dialect
        if cipher:
            assert conn.cipher_id == cipher, "server chose cipher %r, want %r" % (conn.cipher_id, cipher)
        session = Session(conn, a.user, a.password, require_encryption=bool(cipher))
        session.connect()
        if cipher:
            # encrypted messages are not signed as well; the transform header authenticates them
            assert session.encrypt_data, "session does not encrypt"
        else:
            assert session.signing_required, "session is not signed"
        tree = TreeConnect(session, r"\\%s\%s" % (a.host, a.share))
        tree.connect()

        f = Open(tree, name)
        f.create(ImpersonationLevel.Impersonation,
                 FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE
                 | FilePipePrinterAccessMask.DELETE,
                 FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ,
                 CreateDisposition.FILE_CREATE,
                 CreateOptions.FILE_NON_DIRECTORY_FILE)
        max_w = min(CHUNK, conn.max_write_size)
        for off in range(0, a.size, max_w):
            n = f.write(data[off:off + max_w], off)
            assert n == len(data[off:off + max_w]), "short write at %d: %d" % (off, n)
        f.flush()
        got = bytearray()
        max_r = min(CHUNK, conn.max_read_size)
        while len(got) < a.size:
            chunk = f.read(len(got), min(max_r, a.size - len(got)))
            assert chunk, "empty read at %d" % len(got)
            got += chunk
        assert bytes(got) == data, "data read back differs"
        if a.localdir:
            with open(os.path.join(a.localdir, name), "rb") as lf:
                assert hashlib.sha256(lf.read()).digest() == hashlib.sha256(data).digest(), \
                    "server-side file differs"
        f.close()

        # delete: open with DELETE_ON_CLOSE, close
        d = Open(tree, name)
        d.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.DELETE,
                 FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_DELETE,
                 CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE)
        d.close()
        gone = Open(tree, name)
        try:
            gone.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ,
                        FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_READ,
                        CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
            gone.close()
            raise AssertionError("file still exists after delete-on-close")
        except SMBResponseException as e:
            assert "OBJECT_NAME_NOT_FOUND" in str(e) or e.status == 0xC0000034, "unexpected: %s" % e
        if a.localdir:
            assert not os.path.exists(os.path.join(a.localdir, name)), "server-side file not deleted"
        tree.disconnect()
        session.disconnect()
    finally:
        conn.disconnect(True)
    how = "encrypted with %s" % a.cipher if a.cipher else "signed"
    print("OK smbprotocol SMB 3.1.1 %s round trip of %d bytes (%s)" % (how, a.size, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
