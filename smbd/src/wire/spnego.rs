//! SPNEGO (RFC 4178, MS-SPNG) token codec: the GSS-API initial-context framing,
//! NegTokenInit / NegTokenInit2 and NegTokenResp. A deliberately small DER
//! reader: definite lengths only, every length checked, no recursion beyond the
//! fixed token structure, so `decode` never panics on peer input.

use super::WireError;

/// SPNEGO mechanism OID 1.3.6.1.5.5.2 (content bytes, without tag/length).
pub const OID_SPNEGO: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
/// NTLMSSP mechanism OID 1.3.6.1.4.1.311.2.2.10.
pub const OID_NTLMSSP: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];
/// The negHints principal Windows and Samba servers send and clients ignore.
pub const NEG_HINTS_PRINCIPAL: &str = "not_defined_in_RFC4178@please_ignore";

const TAG_APPLICATION_0: u8 = 0x60;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_ENUMERATED: u8 = 0x0a;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_GENERAL_STRING: u8 = 0x1b;
const fn ctx(n: u8) -> u8 {
    0xa0 | n
}

/// NegState values (RFC 4178 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegState {
    AcceptCompleted = 0,
    AcceptIncomplete = 1,
    Reject = 2,
    RequestMic = 3,
}

impl NegState {
    pub fn from_u8(v: u8) -> Option<NegState> {
        Some(match v {
            0 => NegState::AcceptCompleted,
            1 => NegState::AcceptIncomplete,
            2 => NegState::Reject,
            3 => NegState::RequestMic,
            _ => return None,
        })
    }
}

/// NegTokenInit (client) or NegTokenInit2 (server, with negHints).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NegTokenInit {
    /// Mechanism OIDs as DER content bytes, most preferred first.
    pub mech_types: Vec<Vec<u8>>,
    /// The exact DER encoding of the MechTypeList (SEQUENCE OF OID) as
    /// received; mechListMIC is computed over these bytes. Filled by `decode`;
    /// ignored by `encode` (which re-encodes `mech_types`).
    pub mech_types_der: Vec<u8>,
    pub req_flags: Option<Vec<u8>>,
    pub mech_token: Option<Vec<u8>>,
    /// NegTokenInit2 negHints.hintName.
    pub hint_name: Option<String>,
    pub mech_list_mic: Option<Vec<u8>>,
}

/// NegTokenResp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NegTokenResp {
    pub neg_state: Option<NegState>,
    pub supported_mech: Option<Vec<u8>>,
    pub response_token: Option<Vec<u8>>,
    pub mech_list_mic: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpnegoToken {
    Init(NegTokenInit),
    Resp(NegTokenResp),
}

// ---------------------------------------------------------------- DER reader

/// Reads one TLV from the front of `buf`: (tag, content, rest).
fn read_tlv(buf: &[u8]) -> Result<(u8, &[u8], &[u8]), WireError> {
    let (&tag, rest) = buf.split_first().ok_or(WireError::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(WireError::Invalid("DER high tag number"));
    }
    let (&l0, mut rest) = rest.split_first().ok_or(WireError::Truncated)?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 {
            return Err(WireError::Invalid("DER indefinite length"));
        }
        if n > 4 {
            return Err(WireError::Invalid("DER length too long"));
        }
        if rest.len() < n {
            return Err(WireError::Truncated);
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(WireError::Truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Reads a TLV that must have tag `want`.
fn expect_tlv(buf: &[u8], want: u8) -> Result<(&[u8], &[u8]), WireError> {
    let (tag, content, rest) = read_tlv(buf)?;
    if tag != want {
        return Err(WireError::Invalid("unexpected DER tag"));
    }
    Ok((content, rest))
}

/// Returns the whole TLV (header included) at the front of `buf`.
fn whole_tlv(buf: &[u8]) -> Result<&[u8], WireError> {
    let (_, _, rest) = read_tlv(buf)?;
    Ok(&buf[..buf.len() - rest.len()])
}

fn parse_mech_types(seq_content: &[u8]) -> Result<Vec<Vec<u8>>, WireError> {
    let mut mechs = Vec::new();
    let mut cur = seq_content;
    while !cur.is_empty() {
        let (oid, rest) = expect_tlv(cur, TAG_OID)?;
        mechs.push(oid.to_vec());
        cur = rest;
    }
    Ok(mechs)
}

fn parse_neg_token_init(content: &[u8]) -> Result<NegTokenInit, WireError> {
    let (seq, _) = expect_tlv(content, TAG_SEQUENCE)?;
    let mut out = NegTokenInit::default();
    let mut cur = seq;
    while !cur.is_empty() {
        let (tag, field, rest) = read_tlv(cur)?;
        match tag {
            t if t == ctx(0) => {
                out.mech_types_der = whole_tlv(field)?.to_vec();
                let (list, _) = expect_tlv(field, TAG_SEQUENCE)?;
                out.mech_types = parse_mech_types(list)?;
            }
            t if t == ctx(1) => {
                let (bits, _) = expect_tlv(field, TAG_BIT_STRING)?;
                out.req_flags = Some(bits.to_vec());
            }
            t if t == ctx(2) => {
                let (tok, _) = expect_tlv(field, TAG_OCTET_STRING)?;
                out.mech_token = Some(tok.to_vec());
            }
            // [3] is mechListMIC in RFC 4178 NegTokenInit, negHints in
            // MS-SPNG NegTokenInit2: tell them apart by the inner tag.
            t if t == ctx(3) => {
                let (inner_tag, inner, _) = read_tlv(field)?;
                if inner_tag == TAG_OCTET_STRING {
                    out.mech_list_mic = Some(inner.to_vec());
                } else if inner_tag == TAG_SEQUENCE {
                    let mut h = inner;
                    while !h.is_empty() {
                        let (htag, hfield, hrest) = read_tlv(h)?;
                        if htag == ctx(0) {
                            let (name, _) = expect_tlv(hfield, TAG_GENERAL_STRING)?;
                            out.hint_name = Some(String::from_utf8_lossy(name).into_owned());
                        }
                        h = hrest;
                    }
                } else {
                    return Err(WireError::Invalid("negTokenInit [3]"));
                }
            }
            t if t == ctx(4) => {
                let (mic, _) = expect_tlv(field, TAG_OCTET_STRING)?;
                out.mech_list_mic = Some(mic.to_vec());
            }
            _ => {} // unknown extension fields are ignored
        }
        cur = rest;
    }
    Ok(out)
}

fn parse_neg_token_resp(content: &[u8]) -> Result<NegTokenResp, WireError> {
    let (seq, _) = expect_tlv(content, TAG_SEQUENCE)?;
    let mut out = NegTokenResp::default();
    let mut cur = seq;
    while !cur.is_empty() {
        let (tag, field, rest) = read_tlv(cur)?;
        match tag {
            t if t == ctx(0) => {
                let (e, _) = expect_tlv(field, TAG_ENUMERATED)?;
                let v = match e {
                    [v] => *v,
                    _ => return Err(WireError::Invalid("negState")),
                };
                out.neg_state = Some(NegState::from_u8(v).ok_or(WireError::Invalid("negState"))?);
            }
            t if t == ctx(1) => {
                let (oid, _) = expect_tlv(field, TAG_OID)?;
                out.supported_mech = Some(oid.to_vec());
            }
            t if t == ctx(2) => {
                let (tok, _) = expect_tlv(field, TAG_OCTET_STRING)?;
                out.response_token = Some(tok.to_vec());
            }
            t if t == ctx(3) => {
                let (mic, _) = expect_tlv(field, TAG_OCTET_STRING)?;
                out.mech_list_mic = Some(mic.to_vec());
            }
            _ => {}
        }
        cur = rest;
    }
    Ok(out)
}

/// Decodes a SPNEGO token: either the GSS-API framed initial token
/// (`0x60 ... OID_SPNEGO [0] NegTokenInit`) or a bare `[1] NegTokenResp`.
pub fn decode(buf: &[u8]) -> Result<SpnegoToken, WireError> {
    let (tag, content, _) = read_tlv(buf)?;
    match tag {
        TAG_APPLICATION_0 => {
            let (oid, rest) = expect_tlv(content, TAG_OID)?;
            if oid != OID_SPNEGO {
                return Err(WireError::Invalid("not SPNEGO"));
            }
            let (inner_tag, inner, _) = read_tlv(rest)?;
            match inner_tag {
                t if t == ctx(0) => Ok(SpnegoToken::Init(parse_neg_token_init(inner)?)),
                t if t == ctx(1) => Ok(SpnegoToken::Resp(parse_neg_token_resp(inner)?)),
                _ => Err(WireError::Invalid("SPNEGO choice")),
            }
        }
        t if t == ctx(0) => Ok(SpnegoToken::Init(parse_neg_token_init(content)?)),
        t if t == ctx(1) => Ok(SpnegoToken::Resp(parse_neg_token_resp(content)?)),
        _ => Err(WireError::Invalid("SPNEGO token tag")),
    }
}

// ---------------------------------------------------------------- DER writer

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let n = bytes.len() - skip;
        out.push(0x80 | n as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encodes one TLV.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// DER encoding of a MechTypeList (SEQUENCE OF OID).
pub fn encode_mech_types(mechs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = mechs.iter().flat_map(|m| tlv(TAG_OID, m)).collect();
    tlv(TAG_SEQUENCE, &body)
}

impl NegTokenInit {
    /// Encodes with the GSS-API initial-context framing. When `hint_name` is
    /// set the token is a NegTokenInit2 (negHints at [3], mechListMIC at [4]);
    /// otherwise an RFC 4178 NegTokenInit (mechListMIC at [3]).
    pub fn encode(&self) -> Vec<u8> {
        let mut seq = tlv(ctx(0), &encode_mech_types(&self.mech_types));
        if let Some(f) = &self.req_flags {
            seq.extend(tlv(ctx(1), &tlv(TAG_BIT_STRING, f)));
        }
        if let Some(t) = &self.mech_token {
            seq.extend(tlv(ctx(2), &tlv(TAG_OCTET_STRING, t)));
        }
        match &self.hint_name {
            Some(name) => {
                let hints = tlv(
                    TAG_SEQUENCE,
                    &tlv(ctx(0), &tlv(TAG_GENERAL_STRING, name.as_bytes())),
                );
                seq.extend(tlv(ctx(3), &hints));
                if let Some(m) = &self.mech_list_mic {
                    seq.extend(tlv(ctx(4), &tlv(TAG_OCTET_STRING, m)));
                }
            }
            None => {
                if let Some(m) = &self.mech_list_mic {
                    seq.extend(tlv(ctx(3), &tlv(TAG_OCTET_STRING, m)));
                }
            }
        }
        let mut inner = tlv(TAG_OID, OID_SPNEGO);
        inner.extend(tlv(ctx(0), &tlv(TAG_SEQUENCE, &seq)));
        tlv(TAG_APPLICATION_0, &inner)
    }
}

impl NegTokenResp {
    /// Encodes as `[1] NegTokenResp` (no GSS-API framing, as Windows sends it).
    pub fn encode(&self) -> Vec<u8> {
        let mut seq = Vec::new();
        if let Some(s) = self.neg_state {
            seq.extend(tlv(ctx(0), &tlv(TAG_ENUMERATED, &[s as u8])));
        }
        if let Some(m) = &self.supported_mech {
            seq.extend(tlv(ctx(1), &tlv(TAG_OID, m)));
        }
        if let Some(t) = &self.response_token {
            seq.extend(tlv(ctx(2), &tlv(TAG_OCTET_STRING, t)));
        }
        if let Some(m) = &self.mech_list_mic {
            seq.extend(tlv(ctx(3), &tlv(TAG_OCTET_STRING, m)));
        }
        tlv(ctx(1), &tlv(TAG_SEQUENCE, &seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// NegTokenInit from a Windows 8.1 client (Microsoft Open Specifications
    /// blog, "SMB 2 and SMB 3 security in Windows 10", SMB 3.1.1 example).
    const WIN_INIT: &str = "604806062B0601050502A03E303CA00E300C060A2B06010401823702020AA22A\
        04284E544C4D5353500001000000978208E200000000000000000000000000000000060380250000000F";

    #[test]
    fn decode_windows_neg_token_init() {
        let t = decode(&unhex(WIN_INIT)).unwrap();
        let SpnegoToken::Init(init) = t else {
            panic!("not init")
        };
        assert_eq!(init.mech_types, vec![OID_NTLMSSP.to_vec()]);
        assert_eq!(init.mech_types_der, unhex("300C060A2B06010401823702020A"));
        assert_eq!(&init.mech_token.as_ref().unwrap()[..8], b"NTLMSSP\0");
        assert_eq!(init.encode(), unhex(WIN_INIT));
    }

    #[test]
    fn final_resp_round_trip() {
        // Windows server's final negTokenResp (same blog example).
        let raw = unhex("A11B3019A0030A0100A3120410010000003B453CDC3524164200000000");
        let SpnegoToken::Resp(r) = decode(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(r.neg_state, Some(NegState::AcceptCompleted));
        assert_eq!(
            r.mech_list_mic.as_deref(),
            Some(&unhex("010000003B453CDC3524164200000000")[..])
        );
        assert_eq!(r.encode(), raw);
    }

    #[test]
    fn init2_with_hints_round_trip() {
        let t = NegTokenInit {
            mech_types: vec![OID_NTLMSSP.to_vec()],
            hint_name: Some(NEG_HINTS_PRINCIPAL.into()),
            ..Default::default()
        };
        let enc = t.encode();
        let SpnegoToken::Init(d) = decode(&enc).unwrap() else {
            panic!()
        };
        assert_eq!(d.mech_types, t.mech_types);
        assert_eq!(d.hint_name.as_deref(), Some(NEG_HINTS_PRINCIPAL));
        assert_eq!(d.mech_list_mic, None);
    }

    #[test]
    fn long_lengths_round_trip() {
        let r = NegTokenResp {
            neg_state: Some(NegState::AcceptIncomplete),
            supported_mech: Some(OID_NTLMSSP.to_vec()),
            response_token: Some(vec![7u8; 70000]),
            mech_list_mic: None,
        };
        let SpnegoToken::Resp(d) = decode(&r.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(d, r);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0x60, 0x80, 0, 0]).is_err());
        assert!(decode(&[0xa1, 0x05, 0x30]).is_err());
        assert!(decode(&[0x60, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }

        #[test]
        fn decode_never_panics_on_mutated(idx in 0usize..86, val in any::<u8>()) {
            let mut raw = unhex(WIN_INIT);
            let i = idx % raw.len();
            raw[i] = val;
            let _ = decode(&raw);
        }
    }
}
