#!/usr/bin/env python3
"""Session reconnect by PreviousSessionId from a second connection of the same ClientGUID.

    reconnect.py --port PORT --share SHARE --user USER --password PASS [--host 127.0.0.1]

Connection 1 opens a file with no sharing. Connection 2 (same ClientGUID, as a client
that lost connection 1 would make) sets up a session with PreviousSessionId = session 1;
the server must close session 1 and its open, so connection 2's exclusive open of the
same file succeeds. Exit 0 and "OK ..." on success.
"""
import argparse
import sys
import uuid

import smbprotocol.session as smbsession
from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, Open)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

PREVIOUS = [0]


class SetupWithPrevious(smbsession.SMB2SessionSetupRequest):
    def __init__(self):
        super().__init__()
        self["previous_session_id"] = PREVIOUS[0]


def open_exclusive(tree, name, disposition):
    f = Open(tree, name)
    f.create(ImpersonationLevel.Impersonation,
             FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
             FileAttributes.FILE_ATTRIBUTE_NORMAL, 0, disposition,
             CreateOptions.FILE_NON_DIRECTORY_FILE)
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    a = ap.parse_args()
    unc = r"\\%s\%s" % (a.host, a.share)
    name = "reconnect-%s.bin" % uuid.uuid4().hex[:12]
    guid = uuid.uuid4()

    c1 = Connection(guid, a.host, a.port)
    c1.connect(Dialects.SMB_3_1_1)
    s1 = Session(c1, a.user, a.password)
    s1.connect()
    t1 = TreeConnect(s1, unc)
    t1.connect()
    f1 = open_exclusive(t1, name, CreateDisposition.FILE_CREATE)
    f1.write(b"first", 0)

    c2 = Connection(guid, a.host, a.port)
    c2.connect(Dialects.SMB_3_1_1)
    # Before the reconnect, the file is still held exclusively.
    s0 = Session(c2, a.user, a.password)
    s0.connect()
    t0 = TreeConnect(s0, unc)
    t0.connect()
    try:
        open_exclusive(t0, name, CreateDisposition.FILE_OPEN).close()
        raise AssertionError("second exclusive open succeeded while the first is held")
    except SMBResponseException as e:
        assert e.status == 0xC0000043, "want SHARING_VIOLATION, got %s" % e
    PREVIOUS[0] = s1.session_id
    smbsession.SMB2SessionSetupRequest = SetupWithPrevious
    s2 = Session(c2, a.user, a.password)
    s2.connect()
    t2 = TreeConnect(s2, unc)
    t2.connect()
    f2 = open_exclusive(t2, name, CreateDisposition.FILE_OPEN)
    assert f2.read(0, 5) == b"first", "data differs"
    f2.close()
    c2.disconnect(True)
    # Session 1 is gone on the server, so its orderly teardown fails; just drop it.
    try:
        c1.disconnect(True)
    except Exception:  # noqa: BLE001
        pass
    print("OK session reconnect closed the previous session's open (%s)" % name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
