//! DCE/RPC connection-oriented PDUs (C706 chapter 12, MS-RPCE 2.2.2) as
//! carried over SMB named pipes: just enough for an unauthenticated,
//! single-fragment-request server. Little-endian NDR data representation only.

use super::WireError;

pub const PTYPE_REQUEST: u8 = 0;
pub const PTYPE_RESPONSE: u8 = 2;
pub const PTYPE_FAULT: u8 = 3;
pub const PTYPE_BIND: u8 = 11;
pub const PTYPE_BIND_ACK: u8 = 12;
pub const PTYPE_BIND_NAK: u8 = 13;
pub const PTYPE_ALTER_CONTEXT: u8 = 14;
pub const PTYPE_ALTER_CONTEXT_RESP: u8 = 15;

pub const PFC_FIRST_FRAG: u8 = 0x01;
pub const PFC_LAST_FRAG: u8 = 0x02;
pub const PFC_DID_NOT_EXECUTE: u8 = 0x20;
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// Fault statuses (C706 appendix E, MS-RPCE 2.2.2.11 / 3.3.3.4.1).
pub mod fault {
    pub const OP_RNG_ERROR: u32 = 0x1C01_0002;
    pub const UNK_IF: u32 = 0x1C01_0003;
    pub const PROTO_ERROR: u32 = 0x1C01_000B;
    pub const UNSUPPORTED_TYPE: u32 = 0x1C01_0017;
    pub const CONTEXT_MISMATCH: u32 = 0x1C00_001A;
    /// RPC_X_BAD_STUB_DATA: the stub could not be unmarshalled (MS-RPCE 3.1.1.5.5).
    pub const BAD_STUB_DATA: u32 = 0x0000_06F7;
}

/// p_cont_def_result_t values for a presentation context result.
pub const RESULT_ACCEPTANCE: u16 = 0;
pub const RESULT_PROVIDER_REJECTION: u16 = 2;
/// p_provider_reason_t values.
pub const REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED: u16 = 1;
pub const REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED: u16 = 2;

/// DREP byte 0 with little-endian integers and ASCII characters; bytes 1-3: IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];
pub const HEADER_LEN: usize = 16;

/// An interface or transfer syntax: UUID in its wire (little-endian fields) form and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyntaxId {
    pub uuid: [u8; 16],
    /// Major version in the low 16 bits, minor in the high 16 bits.
    pub version: u32,
}

impl SyntaxId {
    /// Builds a syntax from the textual UUID (8-4-4-4-12 hex) and major/minor version.
    pub fn parse(text: &str, major: u16, minor: u16) -> Option<SyntaxId> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        // The first three fields travel little-endian.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(SyntaxId {
            uuid: b,
            version: u32::from(major) | (u32::from(minor) << 16),
        })
    }

    fn read(r: &mut Reader<'_>) -> Result<SyntaxId, WireError> {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(r.take(16)?);
        Ok(SyntaxId {
            uuid,
            version: r.u32()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.uuid);
        out.extend_from_slice(&self.version.to_le_bytes());
    }
}

/// The common 16-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ptype: u8,
    pub flags: u8,
    pub drep: [u8; 4],
    pub frag_length: u16,
    pub auth_length: u16,
    pub call_id: u32,
}

impl Header {
    /// Whether integers are little-endian, the only representation we speak.
    pub fn is_little_endian(&self) -> bool {
        self.drep[0] & 0xF0 == 0x10
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[5, 0, self.ptype, self.flags]);
        out.extend_from_slice(&self.drep);
        out.extend_from_slice(&self.frag_length.to_le_bytes());
        out.extend_from_slice(&self.auth_length.to_le_bytes());
        out.extend_from_slice(&self.call_id.to_le_bytes());
    }
}

/// Reads the header of the PDU at the start of `buf` (version 5.0 only).
pub fn decode_header(buf: &[u8]) -> Result<Header, WireError> {
    let mut r = Reader::new(buf);
    let v = r.take(2)?;
    if v != [5, 0] {
        return Err(WireError::Invalid("rpc version"));
    }
    let ptype = r.u8()?;
    let flags = r.u8()?;
    let mut drep = [0u8; 4];
    drep.copy_from_slice(r.take(4)?);
    let h = Header {
        ptype,
        flags,
        drep,
        frag_length: r.u16()?,
        auth_length: r.u16()?,
        call_id: r.u32()?,
    };
    if usize::from(h.frag_length) < HEADER_LEN {
        return Err(WireError::Invalid("frag_length"));
    }
    Ok(h)
}

/// One presentation context offered in a BIND or ALTER_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresContext {
    pub id: u16,
    pub abstract_syntax: SyntaxId,
    pub transfer_syntaxes: Vec<SyntaxId>,
}

/// BIND and ALTER_CONTEXT bodies (same layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub max_xmit_frag: u16,
    pub max_recv_frag: u16,
    pub assoc_group: u32,
    pub contexts: Vec<PresContext>,
}

/// The answer for one presentation context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextResult {
    pub result: u16,
    pub reason: u16,
    pub transfer_syntax: SyntaxId,
}

/// BIND_ACK and ALTER_CONTEXT_RESP bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAck {
    pub max_xmit_frag: u16,
    pub max_recv_frag: u16,
    pub assoc_group: u32,
    /// Secondary address, without its terminating NUL.
    pub sec_addr: String,
    pub results: Vec<ContextResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub alloc_hint: u32,
    pub context_id: u16,
    pub opnum: u16,
    pub stub: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub alloc_hint: u32,
    pub context_id: u16,
    pub stub: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub context_id: u16,
    pub status: u32,
}

/// A decoded PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Bind(Bind),
    AlterContext(Bind),
    BindAck(BindAck),
    AlterContextResp(BindAck),
    BindNak {
        reason: u16,
    },
    Request(Request),
    Response(Response),
    Fault(Fault),
    /// A PDU type we parse no further.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    pub body: Body,
}

/// Decodes exactly one PDU occupying `buf[..frag_length]`. Refuses
/// authentication trailers and big-endian data (callers fault those).
pub fn decode(buf: &[u8]) -> Result<Pdu, WireError> {
    let header = decode_header(buf)?;
    let pdu = buf
        .get(..usize::from(header.frag_length))
        .ok_or(WireError::Truncated)?;
    if header.auth_length != 0 {
        return Err(WireError::Invalid("rpc auth"));
    }
    if !header.is_little_endian() {
        return Err(WireError::Invalid("rpc drep"));
    }
    let mut r = Reader::new(&pdu[HEADER_LEN..]);
    let body = match header.ptype {
        PTYPE_BIND | PTYPE_ALTER_CONTEXT => {
            let b = decode_bind(&mut r)?;
            if header.ptype == PTYPE_BIND {
                Body::Bind(b)
            } else {
                Body::AlterContext(b)
            }
        }
        PTYPE_BIND_ACK | PTYPE_ALTER_CONTEXT_RESP => {
            let a = decode_bind_ack(&mut r)?;
            if header.ptype == PTYPE_BIND_ACK {
                Body::BindAck(a)
            } else {
                Body::AlterContextResp(a)
            }
        }
        PTYPE_BIND_NAK => Body::BindNak { reason: r.u16()? },
        PTYPE_REQUEST => {
            let alloc_hint = r.u32()?;
            let context_id = r.u16()?;
            let opnum = r.u16()?;
            if header.flags & PFC_OBJECT_UUID != 0 {
                r.take(16)?;
            }
            Body::Request(Request {
                alloc_hint,
                context_id,
                opnum,
                stub: r.rest().to_vec(),
            })
        }
        PTYPE_RESPONSE => {
            let alloc_hint = r.u32()?;
            let context_id = r.u16()?;
            r.take(2)?;
            Body::Response(Response {
                alloc_hint,
                context_id,
                stub: r.rest().to_vec(),
            })
        }
        PTYPE_FAULT => {
            r.u32()?;
            let context_id = r.u16()?;
            r.take(2)?;
            Body::Fault(Fault {
                context_id,
                status: r.u32()?,
            })
        }
        _ => Body::Other,
    };
    Ok(Pdu { header, body })
}

fn decode_bind(r: &mut Reader<'_>) -> Result<Bind, WireError> {
    let max_xmit_frag = r.u16()?;
    let max_recv_frag = r.u16()?;
    let assoc_group = r.u32()?;
    let n = r.u8()?;
    r.take(3)?;
    let mut contexts = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let id = r.u16()?;
        let nt = r.u8()?;
        r.u8()?;
        let abstract_syntax = SyntaxId::read(r)?;
        let mut transfer_syntaxes = Vec::with_capacity(usize::from(nt));
        for _ in 0..nt {
            transfer_syntaxes.push(SyntaxId::read(r)?);
        }
        contexts.push(PresContext {
            id,
            abstract_syntax,
            transfer_syntaxes,
        });
    }
    Ok(Bind {
        max_xmit_frag,
        max_recv_frag,
        assoc_group,
        contexts,
    })
}

fn decode_bind_ack(r: &mut Reader<'_>) -> Result<BindAck, WireError> {
    let start = r.pos;
    let max_xmit_frag = r.u16()?;
    let max_recv_frag = r.u16()?;
    let assoc_group = r.u32()?;
    let len = usize::from(r.u16()?);
    let raw = r.take(len)?;
    let sec_addr = String::from_utf8_lossy(raw.strip_suffix(&[0]).unwrap_or(raw)).into_owned();
    r.align(start, 4)?;
    let n = r.u8()?;
    r.take(3)?;
    let mut results = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        results.push(ContextResult {
            result: r.u16()?,
            reason: r.u16()?,
            transfer_syntax: SyntaxId::read(r)?,
        });
    }
    Ok(BindAck {
        max_xmit_frag,
        max_recv_frag,
        assoc_group,
        sec_addr,
        results,
    })
}

fn finish(ptype: u8, flags: u8, call_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    Header {
        ptype,
        flags,
        drep: DREP_LE,
        frag_length: (HEADER_LEN + body.len()) as u16,
        auth_length: 0,
        call_id,
    }
    .write(&mut out);
    out.extend_from_slice(body);
    out
}

/// A BIND_ACK (or ALTER_CONTEXT_RESP when `alter`).
pub fn encode_bind_ack(call_id: u32, ack: &BindAck, alter: bool) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&ack.max_xmit_frag.to_le_bytes());
    b.extend_from_slice(&ack.max_recv_frag.to_le_bytes());
    b.extend_from_slice(&ack.assoc_group.to_le_bytes());
    if ack.sec_addr.is_empty() {
        b.extend_from_slice(&0u16.to_le_bytes());
    } else {
        b.extend_from_slice(&(ack.sec_addr.len() as u16 + 1).to_le_bytes());
        b.extend_from_slice(ack.sec_addr.as_bytes());
        b.push(0);
    }
    // The result list is 4-aligned relative to the PDU start (the header is 16).
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    b.extend_from_slice(&[ack.results.len() as u8, 0, 0, 0]);
    for r in &ack.results {
        b.extend_from_slice(&r.result.to_le_bytes());
        b.extend_from_slice(&r.reason.to_le_bytes());
        r.transfer_syntax.write(&mut b);
    }
    let ptype = if alter {
        PTYPE_ALTER_CONTEXT_RESP
    } else {
        PTYPE_BIND_ACK
    };
    finish(ptype, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, &b)
}

/// A BIND_NAK with a provider reject reason.
pub fn encode_bind_nak(call_id: u32, reason: u16) -> Vec<u8> {
    let mut b = reason.to_le_bytes().to_vec();
    b.push(0); // no protocol versions supported list
    finish(PTYPE_BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, &b)
}

/// RESPONSE fragments carrying `stub`, none longer than `max_frag` bytes.
pub fn encode_response(call_id: u32, context_id: u16, stub: &[u8], max_frag: u16) -> Vec<Vec<u8>> {
    const BODY_HDR: usize = 8;
    // Stub fragments stay 8-aligned so NDR alignment survives reassembly.
    let room = (usize::from(max_frag).max(HEADER_LEN + BODY_HDR + 8) - HEADER_LEN - BODY_HDR) & !7;
    let mut frags = Vec::new();
    let mut off = 0;
    loop {
        let end = (off + room).min(stub.len());
        let mut flags = 0;
        if off == 0 {
            flags |= PFC_FIRST_FRAG;
        }
        if end == stub.len() {
            flags |= PFC_LAST_FRAG;
        }
        let mut b = Vec::with_capacity(BODY_HDR + end - off);
        b.extend_from_slice(&((stub.len() - off) as u32).to_le_bytes());
        b.extend_from_slice(&context_id.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&stub[off..end]);
        frags.push(finish(PTYPE_RESPONSE, flags, call_id, &b));
        off = end;
        if off >= stub.len() {
            return frags;
        }
    }
}

/// A FAULT for a call that was not executed.
pub fn encode_fault(call_id: u32, context_id: u16, status: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&context_id.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&status.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    finish(
        PTYPE_FAULT,
        PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE,
        call_id,
        &b,
    )
}

/// A bounds-checked little-endian cursor; never panics on short input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Skips padding so that the position is a multiple of `n` past `base`.
    pub fn align(&mut self, base: usize, n: usize) -> Result<(), WireError> {
        let rel = self.pos.saturating_sub(base);
        let pad = (n - rel % n) % n;
        self.take(pad).map(|_| ())
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The BIND smbclient 4.x sends for srvsvc (captured against Samba).
    pub(crate) const SMBCLIENT_BIND: &str = "05000b03100000004800000001000000b810b810000000000100000000000100c84f324b7016d30112785a47bf6ee18803000000045d888aeb1cc9119fe808002b10486002000000";

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_smbclient_bind() {
        let p = decode(&unhex(SMBCLIENT_BIND)).unwrap();
        assert_eq!(p.header.call_id, 1);
        let Body::Bind(b) = p.body else {
            panic!("not a bind")
        };
        assert_eq!((b.max_xmit_frag, b.max_recv_frag), (4280, 4280));
        assert_eq!(b.contexts.len(), 1);
        let srvsvc = SyntaxId::parse("4b324fc8-1670-01d3-1278-5a47bf6ee188", 3, 0).unwrap();
        let ndr = SyntaxId::parse("8a885d04-1ceb-11c9-9fe8-08002b104860", 2, 0).unwrap();
        assert_eq!(b.contexts[0].abstract_syntax, srvsvc);
        assert_eq!(b.contexts[0].transfer_syntaxes, vec![ndr]);
    }

    #[test]
    fn bind_ack_round_trips_and_matches_layout() {
        let ndr = SyntaxId::parse("8a885d04-1ceb-11c9-9fe8-08002b104860", 2, 0).unwrap();
        let ack = BindAck {
            max_xmit_frag: 4280,
            max_recv_frag: 4280,
            assoc_group: 0x1234,
            sec_addr: "\\PIPE\\srvsvc".into(),
            results: vec![
                ContextResult {
                    result: RESULT_ACCEPTANCE,
                    reason: 0,
                    transfer_syntax: ndr,
                },
                ContextResult {
                    result: RESULT_PROVIDER_REJECTION,
                    reason: REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
                    transfer_syntax: SyntaxId::default(),
                },
            ],
        };
        let b = encode_bind_ack(7, &ack, false);
        // 16 header + 8 + 2 + 13 address + 1 pad + 4 + 2 * 24 results.
        assert_eq!(b.len(), 92);
        assert_eq!(b[40], 2);
        let p = decode(&b).unwrap();
        assert_eq!(p.header.ptype, PTYPE_BIND_ACK);
        assert_eq!(p.header.call_id, 7);
        assert_eq!(p.body, Body::BindAck(ack));
    }

    #[test]
    fn response_fragments_reassemble() {
        let stub: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let frags = encode_response(3, 0, &stub, 256);
        assert!(frags.len() > 1);
        let mut got = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 256);
            let p = decode(f).unwrap();
            assert_eq!(p.header.flags & PFC_FIRST_FRAG != 0, i == 0);
            assert_eq!(p.header.flags & PFC_LAST_FRAG != 0, i == frags.len() - 1);
            let Body::Response(r) = p.body else { panic!() };
            got.extend_from_slice(&r.stub);
        }
        assert_eq!(got, stub);
        assert_eq!(encode_response(1, 0, &[], 4280).len(), 1);
    }

    #[test]
    fn fault_round_trips() {
        let f = encode_fault(9, 0, fault::OP_RNG_ERROR);
        assert_eq!(f.len(), 32);
        let p = decode(&f).unwrap();
        assert_eq!(
            p.body,
            Body::Fault(Fault {
                context_id: 0,
                status: fault::OP_RNG_ERROR
            })
        );
    }

    #[test]
    fn refuses_big_endian_and_auth() {
        let mut b = unhex(SMBCLIENT_BIND);
        b[4] = 0x00;
        assert!(decode(&b).is_err());
        assert!(!decode_header(&b).unwrap().is_little_endian());
        let mut b = unhex(SMBCLIENT_BIND);
        b[10] = 8;
        assert!(decode(&b).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }

        #[test]
        fn decode_mutated_bind_never_panics(pos in 0usize..72, val in any::<u8>(), cut in 0usize..73) {
            let mut b = unhex(SMBCLIENT_BIND);
            b[pos] = val;
            b.truncate(cut.max(1));
            let _ = decode(&b);
        }
    }
}
