"""Tries to leave the share with raw SMB2 paths; every attempt must fail.

Prints "REFUSED <path> <status>" per attempt and "OK escape" at the end;
exits 1 if any open succeeded.
"""
import argparse
import sys
import uuid

from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, CreateOptions, FilePipePrinterAccessMask,
                              ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

p = argparse.ArgumentParser()
for a in ("host", "port", "share", "user", "password"):
    p.add_argument("--" + a, required=True)
p.add_argument("paths", nargs="+")
args = p.parse_args()

conn = Connection(uuid.uuid4(), args.host, int(args.port))
conn.connect()
sess = Session(conn, args.user, args.password)
sess.connect()
tree = TreeConnect(sess, rf"\\{args.host}\{args.share}")
tree.connect()
bad = False
for path in args.paths:
    f = Open(tree, path)
    try:
        f.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.FILE_READ_DATA,
                 0, ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_NON_DIRECTORY_FILE)
        print("OPENED", path, f.read(0, 64))
        bad = True
        f.close()
    except SMBResponseException as e:
        print("REFUSED", path, hex(e.status))
tree.disconnect()
sess.disconnect()
conn.disconnect()
if bad:
    sys.exit(1)
print("OK escape")
