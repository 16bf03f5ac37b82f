//! NTLMSSP message codec (MS-NLMP 2.2): NEGOTIATE, CHALLENGE, AUTHENTICATE
//! and AV_PAIR lists. Pure byte handling; every field offset and length from
//! the peer is bounds-checked, so `decode` never panics.

use super::{from_utf16le, slice_at, utf16le, WireError};

pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
pub const MSG_NEGOTIATE: u32 = 1;
pub const MSG_CHALLENGE: u32 = 2;
pub const MSG_AUTHENTICATE: u32 = 3;

// NegotiateFlags (MS-NLMP 2.2.2.5).
pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
pub const NEGOTIATE_OEM: u32 = 0x0000_0002;
pub const REQUEST_TARGET: u32 = 0x0000_0004;
pub const NEGOTIATE_SIGN: u32 = 0x0000_0010;
pub const NEGOTIATE_SEAL: u32 = 0x0000_0020;
pub const NEGOTIATE_DATAGRAM: u32 = 0x0000_0040;
pub const NEGOTIATE_LM_KEY: u32 = 0x0000_0080;
pub const NEGOTIATE_NTLM: u32 = 0x0000_0200;
pub const NEGOTIATE_ANONYMOUS: u32 = 0x0000_0800;
pub const NEGOTIATE_OEM_DOMAIN_SUPPLIED: u32 = 0x0000_1000;
pub const NEGOTIATE_OEM_WORKSTATION_SUPPLIED: u32 = 0x0000_2000;
pub const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
pub const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
pub const NEGOTIATE_IDENTIFY: u32 = 0x0010_0000;
pub const REQUEST_NON_NT_SESSION_KEY: u32 = 0x0040_0000;
pub const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;
pub const NEGOTIATE_128: u32 = 0x2000_0000;
pub const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
pub const NEGOTIATE_56: u32 = 0x8000_0000;

// AV_PAIR ids (MS-NLMP 2.2.2.1).
pub const AV_EOL: u16 = 0;
pub const AV_NB_COMPUTER_NAME: u16 = 1;
pub const AV_NB_DOMAIN_NAME: u16 = 2;
pub const AV_DNS_COMPUTER_NAME: u16 = 3;
pub const AV_DNS_DOMAIN_NAME: u16 = 4;
pub const AV_DNS_TREE_NAME: u16 = 5;
pub const AV_FLAGS: u16 = 6;
pub const AV_TIMESTAMP: u16 = 7;
pub const AV_SINGLE_HOST: u16 = 8;
pub const AV_TARGET_NAME: u16 = 9;
pub const AV_CHANNEL_BINDINGS: u16 = 10;
/// MsvAvFlags bit: the AUTHENTICATE message carries a MIC.
pub const AV_FLAG_MIC_PRESENT: u32 = 0x0000_0002;

/// Offset of the MIC field in AUTHENTICATE_MESSAGE (after the Version field).
pub const MIC_OFFSET: usize = 72;

/// The 8-byte VERSION structure we advertise: Windows 10.0 build 20348,
/// NTLMSSP_REVISION_W2K3 (MS-NLMP 2.2.2.10).
pub const OUR_VERSION: [u8; 8] = [10, 0, 0x7c, 0x4f, 0, 0, 0, 0x0f];

fn u16_at(b: &[u8], off: usize) -> Result<u16, WireError> {
    let s = b.get(off..off + 2).ok_or(WireError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, WireError> {
    let s = b.get(off..off + 4).ok_or(WireError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a (Len, MaxLen, Offset) field descriptor at `off` and returns the
/// payload bytes it points to.
fn field_at(msg: &[u8], off: usize) -> Result<&[u8], WireError> {
    let len = u16_at(msg, off)?;
    let offset = u32_at(msg, off + 4)?;
    slice_at(msg, offset as usize, usize::from(len))
}

fn check_header(msg: &[u8], ty: u32) -> Result<(), WireError> {
    if msg.len() < 12 || &msg[..8] != SIGNATURE {
        return Err(WireError::Invalid("NTLMSSP signature"));
    }
    if u32_at(msg, 8)? != ty {
        return Err(WireError::Invalid("NTLMSSP message type"));
    }
    Ok(())
}

/// The message type of an NTLMSSP message, if it has a valid signature.
pub fn message_type(msg: &[u8]) -> Option<u32> {
    if msg.len() >= 12 && &msg[..8] == SIGNATURE {
        u32_at(msg, 8).ok()
    } else {
        None
    }
}

/// Decodes a string field: UTF-16LE when `unicode`, else OEM (treated as
/// Latin-1, which is exact for ASCII).
pub fn decode_string(b: &[u8], unicode: bool) -> Result<String, WireError> {
    if unicode {
        from_utf16le(b)
    } else {
        Ok(b.iter().map(|&c| char::from(c)).collect())
    }
}

fn encode_string(s: &str, unicode: bool) -> Vec<u8> {
    if unicode {
        utf16le(s)
    } else {
        s.chars()
            .map(|c| if (c as u32) < 0x100 { c as u8 } else { b'?' })
            .collect()
    }
}

/// NEGOTIATE_MESSAGE (2.2.1.1). Domain/workstation are kept raw (OEM).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NegotiateMessage {
    pub flags: u32,
    pub domain: Vec<u8>,
    pub workstation: Vec<u8>,
}

impl NegotiateMessage {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        check_header(msg, MSG_NEGOTIATE)?;
        let flags = u32_at(msg, 12)?;
        // Older clients send only the 16-byte fixed part.
        let domain = if msg.len() >= 32 {
            field_at(msg, 16)?.to_vec()
        } else {
            Vec::new()
        };
        let workstation = if msg.len() >= 32 {
            field_at(msg, 24)?.to_vec()
        } else {
            Vec::new()
        };
        Ok(NegotiateMessage {
            flags,
            domain,
            workstation,
        })
    }

    /// Encodes a NEGOTIATE (used by tests acting as a client).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&MSG_NEGOTIATE.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        let payload = 40u32;
        let dlen = self.domain.len() as u16;
        let wlen = self.workstation.len() as u16;
        push_field(&mut out, dlen, payload);
        push_field(&mut out, wlen, payload + u32::from(dlen));
        out.extend_from_slice(&OUR_VERSION);
        out.extend_from_slice(&self.domain);
        out.extend_from_slice(&self.workstation);
        out
    }
}

fn push_field(out: &mut Vec<u8>, len: u16, offset: u32) {
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
}

/// CHALLENGE_MESSAGE (2.2.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChallengeMessage {
    pub flags: u32,
    pub target_name: String,
    pub server_challenge: [u8; 8],
    /// Encoded AV_PAIR list (see [`encode_av_pairs`]).
    pub target_info: Vec<u8>,
    pub version: Option<[u8; 8]>,
}

impl ChallengeMessage {
    pub fn encode(&self) -> Vec<u8> {
        let unicode = self.flags & NEGOTIATE_UNICODE != 0;
        let name = encode_string(&self.target_name, unicode);
        let header_len = 56u32;
        let mut out = Vec::with_capacity(56 + name.len() + self.target_info.len());
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&MSG_CHALLENGE.to_le_bytes());
        push_field(&mut out, name.len() as u16, header_len);
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.server_challenge);
        out.extend_from_slice(&[0u8; 8]);
        push_field(
            &mut out,
            self.target_info.len() as u16,
            header_len + name.len() as u32,
        );
        out.extend_from_slice(&self.version.unwrap_or([0u8; 8]));
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.target_info);
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        check_header(msg, MSG_CHALLENGE)?;
        let flags = u32_at(msg, 20)?;
        let unicode = flags & NEGOTIATE_UNICODE != 0;
        let target_name = decode_string(field_at(msg, 12)?, unicode)?;
        let mut server_challenge = [0u8; 8];
        server_challenge.copy_from_slice(msg.get(24..32).ok_or(WireError::Truncated)?);
        let target_info = if msg.len() >= 48 {
            field_at(msg, 40)?.to_vec()
        } else {
            Vec::new()
        };
        let version = if flags & NEGOTIATE_VERSION != 0 && msg.len() >= 56 {
            let mut v = [0u8; 8];
            v.copy_from_slice(&msg[48..56]);
            Some(v)
        } else {
            None
        };
        Ok(ChallengeMessage {
            flags,
            target_name,
            server_challenge,
            target_info,
            version,
        })
    }
}

/// AUTHENTICATE_MESSAGE (2.2.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthenticateMessage {
    pub flags: u32,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub workstation: String,
    pub encrypted_random_session_key: Vec<u8>,
    /// Bytes 72..88 when the message is long enough to hold a MIC; whether
    /// it *is* a MIC is decided by MsvAvFlags in the NTLMv2 response.
    pub mic: Option<[u8; 16]>,
}

impl AuthenticateMessage {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        check_header(msg, MSG_AUTHENTICATE)?;
        if msg.len() < 64 {
            return Err(WireError::Truncated);
        }
        let flags = u32_at(msg, 60)?;
        let unicode = flags & NEGOTIATE_UNICODE != 0;
        let lm_response = field_at(msg, 12)?.to_vec();
        let nt_response = field_at(msg, 20)?.to_vec();
        let domain = decode_string(field_at(msg, 28)?, unicode)?;
        let user = decode_string(field_at(msg, 36)?, unicode)?;
        let workstation = decode_string(field_at(msg, 44)?, unicode)?;
        let encrypted_random_session_key = field_at(msg, 52)?.to_vec();
        // The MIC can only be there if no payload starts before its end.
        let min_payload = [12usize, 20, 28, 36, 44, 52]
            .iter()
            .filter_map(|&o| {
                let len = u16_at(msg, o).ok()?;
                (len != 0)
                    .then(|| u32_at(msg, o + 4).ok().map(|v| v as usize))
                    .flatten()
            })
            .min()
            .unwrap_or(msg.len());
        let mic = if msg.len() >= MIC_OFFSET + 16 && min_payload >= MIC_OFFSET + 16 {
            let mut m = [0u8; 16];
            m.copy_from_slice(&msg[MIC_OFFSET..MIC_OFFSET + 16]);
            Some(m)
        } else {
            None
        };
        Ok(AuthenticateMessage {
            flags,
            lm_response,
            nt_response,
            domain,
            user,
            workstation,
            encrypted_random_session_key,
            mic,
        })
    }

    /// Encodes with Version and a MIC field (zeros unless `mic` is set); the
    /// payload starts at 88. Used by tests acting as a client.
    pub fn encode(&self) -> Vec<u8> {
        let unicode = self.flags & NEGOTIATE_UNICODE != 0;
        let domain = encode_string(&self.domain, unicode);
        let user = encode_string(&self.user, unicode);
        let ws = encode_string(&self.workstation, unicode);
        let parts: [&[u8]; 6] = [
            &self.lm_response,
            &self.nt_response,
            &domain,
            &user,
            &ws,
            &self.encrypted_random_session_key,
        ];
        let mut out = Vec::new();
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&MSG_AUTHENTICATE.to_le_bytes());
        let mut off = 88u32;
        for p in parts {
            push_field(&mut out, p.len() as u16, off);
            off += p.len() as u32;
        }
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&OUR_VERSION);
        out.extend_from_slice(&self.mic.unwrap_or([0u8; 16]));
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }
}

/// One AV_PAIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvPair {
    pub id: u16,
    pub value: Vec<u8>,
}

/// Encodes AV pairs and appends MsvAvEOL.
pub fn encode_av_pairs(pairs: &[AvPair]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pairs.iter().filter(|p| p.id != AV_EOL) {
        out.extend_from_slice(&p.id.to_le_bytes());
        out.extend_from_slice(&(p.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&p.value);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Decodes an AV_PAIR list up to MsvAvEOL (which must be present).
pub fn decode_av_pairs(mut b: &[u8]) -> Result<Vec<AvPair>, WireError> {
    let mut out = Vec::new();
    loop {
        let id = u16_at(b, 0)?;
        let len = usize::from(u16_at(b, 2)?);
        if id == AV_EOL {
            return Ok(out);
        }
        let value = b.get(4..4 + len).ok_or(WireError::Truncated)?;
        out.push(AvPair {
            id,
            value: value.to_vec(),
        });
        b = &b[4 + len..];
    }
}

/// Test data shared with the NTLM acceptor tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// AUTHENTICATE_MESSAGE from MS-NLMP 4.2.4.3 (NTLMv2 example).
    pub const NLMP_AUTH: &str = "4e544c4d5353500003000000180018006c00000054005400840000000c000c00\
        480000000800080054000000100010005c00000010001000d8000000358288e20501280a0000000f44006f00\
        6d00610069006e00550073006500720043004f004d005000550054004500520086c35097ac9cec102554764a\
        57cccc19aaaaaaaaaaaaaaaa68cd0ab851e51c96aabc927bebef6a1c01010000000000000000000000000000\
        aaaaaaaaaaaaaaaa0000000002000c0044006f006d00610069006e0001000c00530065007200760065007200\
        0000000000000000c5dad2544fc9799094ce1ce90bc9d03e";
}

#[cfg(test)]
mod tests {
    use super::tests_support::NLMP_AUTH;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_nlmp_authenticate() {
        let m = AuthenticateMessage::decode(&hex::decode(NLMP_AUTH).unwrap()).unwrap();
        assert_eq!(m.user, "User");
        assert_eq!(m.domain, "Domain");
        assert_eq!(m.workstation, "COMPUTER");
        assert_eq!(m.nt_response.len(), 84);
        assert_eq!(m.lm_response.len(), 24);
        assert_eq!(
            hex::encode(&m.encrypted_random_session_key),
            "c5dad2544fc9799094ce1ce90bc9d03e"
        );
        assert_eq!(m.mic, None, "payload starts at 72: no room for a MIC");
        let av = decode_av_pairs(&m.nt_response[44..]).unwrap();
        assert_eq!(av.len(), 2);
        assert_eq!(av[0].id, AV_NB_DOMAIN_NAME);
    }

    #[test]
    fn challenge_round_trip() {
        let c = ChallengeMessage {
            flags: NEGOTIATE_UNICODE | NEGOTIATE_VERSION | NEGOTIATE_TARGET_INFO,
            target_name: "SERVER".into(),
            server_challenge: [1, 2, 3, 4, 5, 6, 7, 8],
            target_info: encode_av_pairs(&[AvPair {
                id: AV_NB_COMPUTER_NAME,
                value: utf16le("SERVER"),
            }]),
            version: Some(OUR_VERSION),
        };
        assert_eq!(ChallengeMessage::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn authenticate_round_trip() {
        let a = AuthenticateMessage {
            flags: NEGOTIATE_UNICODE,
            lm_response: vec![0; 24],
            nt_response: vec![1; 60],
            domain: "D".into(),
            user: "u".into(),
            workstation: "W".into(),
            encrypted_random_session_key: vec![9; 16],
            mic: Some([5; 16]),
        };
        assert_eq!(AuthenticateMessage::decode(&a.encode()).unwrap(), a);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = data.clone();
            if d.len() >= 12 {
                d[..8].copy_from_slice(SIGNATURE);
            }
            for t in 1..=3u32 {
                if d.len() >= 12 { d[8..12].copy_from_slice(&t.to_le_bytes()); }
                let _ = NegotiateMessage::decode(&d);
                let _ = ChallengeMessage::decode(&d);
                let _ = AuthenticateMessage::decode(&d);
            }
            let _ = decode_av_pairs(&data);
        }
    }
}
