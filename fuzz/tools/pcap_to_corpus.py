#!/usr/bin/env python3
"""Seed the fuzz corpora from a packet capture of real SMB2/3 traffic.

    pcap_to_corpus.py CAPTURE.pcap PORT CORPUS_DIR [--max-per-target N]

Reads a classic libpcap file (Ethernet or Linux cooked link layer, IPv4 or
IPv6, TCP) with no third-party modules, reassembles each TCP connection to or
from PORT per direction, splits the byte stream at the 4-byte Direct TCP
length headers, splits SMB2 compound chains at NextCommand, and writes each
message into CORPUS_DIR/<target>/<sha1> for the fuzz target that decodes it.
Security buffers of SESSION_SETUP go to the spnego, ntlmssp and ntlm_server
corpora; create contexts, SET_INFO payloads, names and search patterns go to
the create and fsa corpora in the input layout those targets document.

Only client-to-server messages are used, except the server's SESSION_SETUP
security buffers (the NTLM CHALLENGE), which seed the auth decoders.
Files over 64 KiB are skipped; at most N (default 50) files per target are
kept, one per distinct kind first (command, info class, ctl code, context
names, ...), the smallest of each kind.
"""

import collections
import hashlib
import os
import struct
import sys

MAX_FILE = 64 * 1024
HDR = 64

# SMB2 command -> fuzz target
CMD_TARGET = {
    0: "negotiate",
    1: "session_tree",
    2: "small_requests",
    3: "session_tree",
    4: "small_requests",
    5: "create",
    6: "small_requests",
    7: "small_requests",
    8: "rw",
    9: "rw",
    10: "small_requests",
    11: "ioctl",
    12: "small_requests",
    13: "small_requests",
    14: "query",
    15: "small_requests",
    16: "query",
    17: "query",
    18: "small_requests",
}

FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204


def u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


# ------------------------------------------------------------------ pcap

def read_pcap(path):
    """Yields (linktype, packet bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        sys.exit("not a classic pcap file (pcapng is not supported: use tcpdump -w)")
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    pos = 24
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(e + "IIII", data, pos)
        pos += 16
        yield linktype, data[pos:pos + incl]
        pos += incl


def tcp_segment(linktype, pkt):
    """Returns (src, sport, dst, dport, seq, flags, payload) or None."""
    if linktype == 1:  # Ethernet
        if len(pkt) < 14:
            return None
        etype = struct.unpack_from(">H", pkt, 12)[0]
        off = 14
        while etype == 0x8100 and len(pkt) >= off + 4:  # VLAN
            etype = struct.unpack_from(">H", pkt, off + 2)[0]
            off += 4
    elif linktype == 113:  # Linux cooked (SLL)
        if len(pkt) < 16:
            return None
        etype = struct.unpack_from(">H", pkt, 14)[0]
        off = 16
    elif linktype == 0:  # BSD loopback
        fam = struct.unpack_from("<I", pkt, 0)[0]
        etype = 0x0800 if fam == 2 else 0x86DD
        off = 4
    else:
        return None
    if etype == 0x0800:
        ip = pkt[off:]
        if len(ip) < 20 or ip[9] != 6:
            return None
        ihl = (ip[0] & 0xF) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        src, dst = ip[12:16], ip[16:20]
        tcp = ip[ihl:total]
    elif etype == 0x86DD:
        ip = pkt[off:]
        if len(ip) < 40 or ip[6] != 6:  # no extension headers
            return None
        plen = struct.unpack_from(">H", ip, 4)[0]
        src, dst = ip[8:24], ip[24:40]
        tcp = ip[40:40 + plen]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    return src, sport, dst, dport, seq, flags, tcp[doff:]


def streams(path, port):
    """Reassembled byte streams: {(conn_no, 'c2s'|'s2c'): bytes}."""
    segs = collections.defaultdict(dict)  # key -> {seq: payload}
    isn = {}
    conn_no = {}
    for lt, pkt in read_pcap(path):
        s = tcp_segment(lt, pkt)
        if s is None:
            continue
        src, sport, dst, dport, seq, flags, payload = s
        if dport == port:
            conn, d = (src, sport, dst, dport), "c2s"
        elif sport == port:
            conn, d = (dst, dport, src, sport), "s2c"
        else:
            continue
        if flags & 0x02:  # SYN (client) or SYN-ACK (server)
            if d == "c2s":
                conn_no[conn] = conn_no.get(conn, -1) + 1  # 4-tuple reused: a new connection
            isn[(conn, conn_no.setdefault(conn, 0), d)] = (seq + 1) & 0xFFFFFFFF
            continue
        n = conn_no.setdefault(conn, 0)
        if payload:
            segs[(conn, n, d)].setdefault(seq, payload)
    out = {}
    for key, parts in segs.items():
        start = isn.get(key, min(parts))
        # Order by distance from the initial sequence number (handles wrap).
        ordered = sorted(parts.items(), key=lambda kv: (kv[0] - start) & 0xFFFFFFFF)
        buf = bytearray()
        for seq, p in ordered:
            rel = (seq - start) & 0xFFFFFFFF
            if rel > len(buf):
                break  # a hole: stop here
            buf += p[len(buf) - rel:]
        out[(key[0], key[1], key[2])] = bytes(buf)
    return out


def frames(stream):
    pos = 0
    while pos + 4 <= len(stream):
        if stream[pos] != 0:
            return
        n = int.from_bytes(stream[pos + 1:pos + 4], "big")
        if pos + 4 + n > len(stream):
            return
        yield stream[pos:pos + 4 + n]
        pos += 4 + n


def split_compound(chain):
    out = []
    pos = 0
    while len(chain) - pos >= HDR:
        nc = u32(chain, pos + 20)
        if nc == 0:
            out.append(chain[pos:])
            break
        out.append(chain[pos:pos + nc])
        pos += nc
    return out


# ------------------------------------------------------------------ corpus

class Corpus:
    def __init__(self):
        self.items = collections.defaultdict(dict)  # target -> {data: kind}

    def add(self, target, data, kind=""):
        data = bytes(data)
        if not data or len(data) > MAX_FILE:
            return
        self.items[target].setdefault(data, kind)

    def write(self, root, cap):
        counts = {}
        for target, items in sorted(self.items.items()):
            by_kind = collections.defaultdict(list)
            for d, k in items.items():
                by_kind[k].append(d)
            for k in by_kind:
                by_kind[k].sort(key=lambda d: (len(d), d))
            chosen = []
            # Round-robin over kinds, smallest first within each kind.
            while len(chosen) < cap and any(by_kind.values()):
                for k in sorted(by_kind):
                    if by_kind[k] and len(chosen) < cap:
                        chosen.append(by_kind[k].pop(0))
            d = os.path.join(root, target)
            os.makedirs(d, exist_ok=True)
            for data in chosen:
                name = hashlib.sha1(data).hexdigest()
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
            counts[target] = len(chosen)
        return counts


def security_buffer(msg, cmd, response):
    """SESSION_SETUP security buffer of a request or response."""
    try:
        if response:
            off, ln = u16(msg, HDR + 4), u16(msg, HDR + 6)
        else:
            off, ln = u16(msg, HDR + 12), u16(msg, HDR + 14)
    except struct.error:
        return b""
    return msg[off:off + ln]


def auth_seeds(corpus, tok):
    if not tok:
        return
    if tok.startswith(b"NTLMSSP\0"):
        corpus.add("ntlmssp", tok, "t%d" % tok[8])
        return
    corpus.add("spnego", tok, "tag%02x" % tok[0])
    # NTLMSSP inside the SPNEGO token: find the signature.
    i = tok.find(b"NTLMSSP\0")
    if i >= 0:
        corpus.add("ntlmssp", tok[i:], "t%d" % tok[i + 8])
        # AV pairs of a CHALLENGE (TargetInfo) as a raw seed.
        m = tok[i:]
        if len(m) >= 48 and u32(m, 8) == 2:
            ln, off = u16(m, 40), u32(m, 44)
            corpus.add("ntlmssp", m[off:off + ln], "avpairs")


def utf16(s):
    return s.encode("utf-16-le")


def message_seeds(corpus, msg, tokens):
    if len(msg) < HDR or msg[:4] != b"\xfeSMB":
        return
    cmd = u16(msg, 12)
    flags = u32(msg, 16)
    if flags & 1:  # response
        if cmd == 1:
            auth_seeds(corpus, security_buffer(msg, cmd, True))
        return
    target = CMD_TARGET.get(cmd)
    if target is None:
        return
    body = msg[HDR:]
    kind = "c%d" % cmd
    try:
        if cmd == 0:
            dialects = [u16(body, 36 + 2 * i) for i in range(u16(body, 2))]
            kind += "-" + ",".join("%x" % d for d in dialects)
            if 0x311 in dialects:
                pos, n = u32(body, 28), u16(body, 32)
                for k in range(n):
                    if k:
                        pos = (pos + 7) & ~7
                    ty, ln = u16(msg, pos), u16(msg, pos + 2)
                    corpus.add("negotiate", msg[pos:pos + 2] + msg[pos + 8:pos + 8 + ln], "ctx%d" % ty)
                    pos += 8 + ln
        elif cmd == 1:
            tok = security_buffer(msg, cmd, False)
            tokens.append(tok)
            auth_seeds(corpus, tok)
            kind += "-%d" % (len(tokens) % 2)
        elif cmd == 3:
            kind += "-%x" % u16(body, 2)
        elif cmd == 5:
            name_off, name_len = u16(body, 44), u16(body, 46)
            ctx_off, ctx_len = u32(body, 48), u32(body, 52)
            name = msg[name_off:name_off + name_len]
            if name:
                corpus.add("fsa", b"\x02" + name, "path")
            names = []
            if ctx_len:
                chain = msg[ctx_off:ctx_off + ctx_len]
                corpus.add("create", chain, "chain")
                pos = 0
                while pos + 16 <= len(chain):
                    nxt = u32(chain, pos)
                    no, nl = u16(chain, pos + 4), u16(chain, pos + 6)
                    do, dl = u16(chain, pos + 10), u32(chain, pos + 12)
                    cname = chain[pos + no:pos + no + nl]
                    names.append(cname.hex() if len(cname) != 4 else cname.decode("latin-1"))
                    if cname == b"SecD":
                        corpus.add("fsa", b"\x01" + chain[pos + do:pos + do + dl], "sd")
                    if not nxt:
                        break
                    pos += nxt
            kind += "-" + ",".join(sorted(names))
        elif cmd == 11:
            ctl = u32(body, 4)
            kind += "-%x" % ctl
            if ctl == FSCTL_VALIDATE_NEGOTIATE_INFO:
                io, il = u32(body, 24), u32(body, 28)
                corpus.add("ioctl", msg[io:io + il], "vni")
        elif cmd == 14:
            kind += "-%x" % body[2]
            no, nl = u16(body, 24), u16(body, 26)
            pat = msg[no:no + nl]
            if pat:
                for name in ("s", "services.txt", "d", "SMB2_TESTDIR"):
                    corpus.add("fsa", b"\x03" + pat + b"\0\0" + utf16(name), "wild")
        elif cmd == 16:
            kind += "-%x-%x" % (body[2], body[3])
        elif cmd == 17:
            it, cls = body[2], body[3]
            kind += "-%x-%x" % (it, cls)
            bl, bo = u32(body, 4), u16(body, 8)
            buf = msg[bo:bo + bl]
            if it == 1:
                corpus.add("fsa", b"\x00" + bytes([cls]) + buf, "si%d" % cls)
            elif it == 3:
                corpus.add("fsa", b"\x01" + buf, "sd")
        elif cmd == 18:
            kind += "-%d" % u16(body, 0)
        elif cmd in (8, 9, 10, 6, 7, 15):
            kind += "-%d" % (len(msg) // 256)
    except (struct.error, IndexError):
        pass
    corpus.add(target, msg, kind)


def main():
    args = sys.argv[1:]
    cap = 50
    if "--max-per-target" in args:
        i = args.index("--max-per-target")
        cap = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    pcap, port, root = args[0], int(args[1]), args[2]
    corpus = Corpus()
    all_streams = streams(pcap, port)
    for (conn, n, d), data in sorted(all_streams.items(), key=lambda kv: kv[0][1:]):
        tokens = []
        for fr in frames(data):
            payload = fr[4:]
            if payload[:4] == b"\xfdSMB":
                if d == "c2s":
                    corpus.add("transform", payload, "tf%d" % (len(payload) // 1024))
                continue
            if payload[:4] == b"\xffSMB" and d == "c2s":
                corpus.add("negotiate", payload, "smb1")
                continue
            if payload[:4] != b"\xfeSMB":
                continue
            if d == "c2s":
                msgs = split_compound(payload)
                corpus.add("header_frame", fr, "n%d-c%d" % (len(msgs), u16(payload, 12)))
            else:
                msgs = split_compound(payload)
            for m in msgs:
                message_seeds(corpus, m, tokens if d == "c2s" else [])
        # Session setups of this connection, in pairs, for the NTLM acceptor.
        for i in range(0, len(tokens) - 1, 2):
            a, b = tokens[i], tokens[i + 1]
            seed = struct.pack("<H", len(a)) + a + struct.pack("<H", len(b)) + b
            corpus.add("ntlm_server", seed, "spnego" if a[:1] == b"\x60" else "raw")
    counts = corpus.write(root, cap)
    for t, c in sorted(counts.items()):
        print("%-16s %d" % (t, c))


if __name__ == "__main__":
    main()
