#!/usr/bin/env python3
"""srvsvc over the IPC$ named pipe with smbprotocol (low-level API), SMB 3.1.1 signed.

    pipe.py --port PORT --user USER --password PASS [--host 127.0.0.1] --expect NAME...

Exercises what smbclient does not: an unknown pipe name, READ on an empty pipe,
WRITE then READ with a short buffer (STATUS_BUFFER_OVERFLOW, rest readable),
FSCTL_PIPE_TRANSCEIVE with a MaxOutputResponse smaller than the reply, QUERY_INFO
FileStandardInformation (EndOfFile = bytes readable). Checks that
NetShareEnumAll level 1 lists every --expect name. Exit 0 and "OK pipe" on success.
"""
import argparse
import struct
import sys
import uuid

from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.ioctl import CtlCode, IOCTLFlags, SMB2IOCTLRequest, SMB2IOCTLResponse
from smbprotocol.open import (SMB2QueryInfoRequest, SMB2QueryInfoResponse, CreateDisposition, CreateOptions, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

BUFFER_OVERFLOW = 0x80000005
OBJECT_NAME_NOT_FOUND = 0xC0000034

SRVSVC = bytes.fromhex("c84f324b7016d30112785a47bf6ee188") + struct.pack("<HH", 3, 0)
NDR = bytes.fromhex("045d888aeb1cc9119fe808002b104860") + struct.pack("<I", 2)


def pdu(ptype, call_id, body):
    return struct.pack("<BBBBIHHI", 5, 0, ptype, 3, 0x10, 16 + len(body), 0, call_id) + body


def bind():
    ctx = struct.pack("<HBB", 0, 1, 0) + SRVSVC + NDR
    return pdu(11, 1, struct.pack("<HHIB3x", 4280, 4280, 0, 1) + ctx)


def ndr_string(s):
    u = (s + "\0").encode("utf-16-le")
    n = len(u) // 2
    b = struct.pack("<III", n, 0, n) + u
    return b + b"\0" * (-len(b) % 4)


def enum_all(call_id):
    stub = struct.pack("<I", 0x20000) + ndr_string("127.0.0.1")
    stub += struct.pack("<IIIII", 1, 1, 0x20004, 0, 0) + struct.pack("<III", 0xFFFFFFFF, 0x20008, 0)
    return pdu(0, call_id, struct.pack("<IHH", len(stub), 0, 15) + stub)


def status_of(e):
    return e.header["status"].get_value()


def create(tree, name):
    f = Open(tree, name)
    f.create(ImpersonationLevel.Impersonation,
             FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
             FileAttributes.FILE_ATTRIBUTE_NORMAL,
             ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
             CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
    return f


def read_status(f, length):
    """(status, data) of one READ."""
    try:
        return 0, f.read(0, length)
    except SMBResponseException as e:
        data = e.header["data"].get_value()
        if status_of(e) == BUFFER_OVERFLOW:
            # SMB2 READ response: DataOffset (1 byte) at 2, DataLength at 4.
            off, n = data[2], struct.unpack_from("<I", data, 4)[0]
            return BUFFER_OVERFLOW, data[off - 64:off - 64 + n]
        return status_of(e), b""


def transceive(conn, session, tree, f, data, max_out):
    req = SMB2IOCTLRequest()
    req["ctl_code"] = CtlCode.FSCTL_PIPE_TRANSCEIVE
    req["file_id"] = f.file_id
    req["max_output_response"] = max_out
    req["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
    req["buffer"] = data
    r = conn.send(req, sid=session.session_id, tid=tree.tree_connect_id)
    try:
        resp = conn.receive(r)
        status = 0
    except SMBResponseException as e:
        if status_of(e) != BUFFER_OVERFLOW:
            raise
        resp, status = e.header, BUFFER_OVERFLOW
    out = SMB2IOCTLResponse()
    out.unpack(resp["data"].get_value())
    return status, out["buffer"].get_value()


def standard_info(conn, session, tree, f):
    """FileStandardInformation: (EndOfFile, NumberOfLinks)."""
    req = SMB2QueryInfoRequest()
    req["info_type"] = 1
    req["file_info_class"] = 5
    req["output_buffer_length"] = 24
    req["file_id"] = f.file_id
    r = conn.send(req, sid=session.session_id, tid=tree.tree_connect_id)
    out = SMB2QueryInfoResponse()
    out.unpack(conn.receive(r)["data"].get_value())
    b = out["buffer"].get_value()
    return struct.unpack_from("<Q", b, 8)[0], struct.unpack_from("<I", b, 16)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--expect", nargs="+", required=True)
    a = ap.parse_args()

    conn = Connection(uuid.uuid4(), a.host, a.port, require_signing=True)
    conn.connect(Dialects.SMB_3_1_1, timeout=30)
    try:
        session = Session(conn, a.user, a.password, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, r"\\%s\IPC$" % a.host)
        tree.connect()

        try:
            create(tree, "lsarpc")
            raise AssertionError("lsarpc opened")
        except SMBResponseException as e:
            assert status_of(e) == OBJECT_NAME_NOT_FOUND, "lsarpc: 0x%x" % status_of(e)

        f = create(tree, "srvsvc")
        # Holdfast says PIPE_EMPTY; Samba says PIPE_DISCONNECTED: any error will do.
        st, _ = read_status(f, 100)
        assert st >= 0xC0000000, "read of empty pipe: 0x%x" % st

        f.write(bind(), 0)
        eof, links = standard_info(conn, session, tree, f)
        assert eof > 0 and links == 1, "standard info: eof %d links %d" % (eof, links)
        # Message mode, as on Windows (Samba answers short pipe reads with SUCCESS).
        st, first = read_status(f, 20)
        assert st == BUFFER_OVERFLOW and len(first) == 20, "short read: 0x%x %d" % (st, len(first))
        st, rest = read_status(f, 4280)
        assert st == 0, "rest of bind ack: 0x%x" % st
        ack = first + rest
        assert ack[2] == 12 and struct.unpack_from("<H", ack, 8)[0] == len(ack), "bad bind ack"

        st, out = transceive(conn, session, tree, f, enum_all(2), 4280)
        assert st == 0 and out[2] == 2, "enum: 0x%x ptype %d" % (st, out[2] if out else -1)
        for name in a.expect:
            assert ndr_string(name)[12:] in out, "%s not listed" % name
        assert out[-4:] == b"\0\0\0\0", "enum WERROR %r" % out[-4:]

        st, head = transceive(conn, session, tree, f, enum_all(3), 32)
        assert st == BUFFER_OVERFLOW and len(head) == 32, "small transceive: 0x%x %d" % (st, len(head))
        st, tail = read_status(f, 4280)
        assert st == 0 and head + tail == out[:12] + struct.pack("<I", 3) + out[16:], \
            "transceive remainder differs"
        f.close()
    finally:
        conn.disconnect()
    print("OK pipe")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("FAIL: %s" % e)
        sys.exit(1)
