//! NEGOTIATE (MS-SMB2 2.2.3, 2.2.4) with the SMB 3.1.1 negotiate contexts (2.2.3.1).

use super::simple::checked_body;
use super::{pad_to, slice_at, utf16le, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64};

pub const DIALECT_SMB2_002: u16 = 0x0202;
pub const DIALECT_SMB2_1: u16 = 0x0210;
pub const DIALECT_SMB3_0: u16 = 0x0300;
pub const DIALECT_SMB3_0_2: u16 = 0x0302;
pub const DIALECT_SMB3_1_1: u16 = 0x0311;
/// "SMB 2.???": answer to a multi-protocol SMB1 negotiate (MS-SMB2 3.3.5.3.1).
pub const DIALECT_SMB2_WILDCARD: u16 = 0x02FF;

/// SecurityMode bits.
pub const NEGOTIATE_SIGNING_ENABLED: u16 = 0x0001;
pub const NEGOTIATE_SIGNING_REQUIRED: u16 = 0x0002;

/// Capabilities bits.
pub const GLOBAL_CAP_DFS: u32 = 0x0000_0001;
pub const GLOBAL_CAP_LEASING: u32 = 0x0000_0002;
pub const GLOBAL_CAP_LARGE_MTU: u32 = 0x0000_0004;
pub const GLOBAL_CAP_MULTI_CHANNEL: u32 = 0x0000_0008;
pub const GLOBAL_CAP_PERSISTENT_HANDLES: u32 = 0x0000_0010;
pub const GLOBAL_CAP_DIRECTORY_LEASING: u32 = 0x0000_0020;
pub const GLOBAL_CAP_ENCRYPTION: u32 = 0x0000_0040;
pub const GLOBAL_CAP_NOTIFICATIONS: u32 = 0x0000_0080;

/// Negotiate context types (MS-SMB2 2.2.3.1).
pub const PREAUTH_INTEGRITY_CAPABILITIES: u16 = 0x0001;
pub const ENCRYPTION_CAPABILITIES: u16 = 0x0002;
pub const COMPRESSION_CAPABILITIES: u16 = 0x0003;
pub const NETNAME_NEGOTIATE_CONTEXT_ID: u16 = 0x0005;
pub const TRANSPORT_CAPABILITIES: u16 = 0x0006;
pub const RDMA_TRANSFORM_CAPABILITIES: u16 = 0x0007;
pub const SIGNING_CAPABILITIES: u16 = 0x0008;
/// SMB3 POSIX extensions context (not in MS-SMB2); decoded as `Unknown`.
pub const POSIX_EXTENSIONS_AVAILABLE: u16 = 0x0100;

/// Preauth integrity hash algorithms.
pub const HASH_ALGORITHM_SHA512: u16 = 0x0001;

/// Encryption ciphers.
pub const CIPHER_AES128_CCM: u16 = 0x0001;
pub const CIPHER_AES128_GCM: u16 = 0x0002;
pub const CIPHER_AES256_CCM: u16 = 0x0003;
pub const CIPHER_AES256_GCM: u16 = 0x0004;

/// Signing algorithms.
pub const SIGNING_HMAC_SHA256: u16 = 0x0000;
pub const SIGNING_AES_CMAC: u16 = 0x0001;
pub const SIGNING_AES_GMAC: u16 = 0x0002;

/// Compression algorithms and flags.
pub const COMPRESSION_NONE: u16 = 0x0000;
pub const COMPRESSION_LZNT1: u16 = 0x0001;
pub const COMPRESSION_LZ77: u16 = 0x0002;
pub const COMPRESSION_LZ77_HUFFMAN: u16 = 0x0003;
pub const COMPRESSION_PATTERN_V1: u16 = 0x0004;
pub const COMPRESSION_LZ4: u16 = 0x0005;
pub const COMPRESSION_CAPABILITIES_FLAG_CHAINED: u32 = 0x0000_0001;

/// Transport capabilities flags.
pub const ACCEPT_TRANSPORT_LEVEL_SECURITY: u32 = 0x0000_0001;

/// RDMA transform ids.
pub const RDMA_TRANSFORM_NONE: u16 = 0x0000;
pub const RDMA_TRANSFORM_ENCRYPTION: u16 = 0x0001;
pub const RDMA_TRANSFORM_SIGNING: u16 = 0x0002;

/// One SMB2_NEGOTIATE_CONTEXT (MS-SMB2 2.2.3.1). Unknown types are kept raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiateContext {
    PreauthIntegrity {
        hash_algorithms: Vec<u16>,
        salt: Vec<u8>,
    },
    Encryption {
        ciphers: Vec<u16>,
    },
    Compression {
        flags: u32,
        algorithms: Vec<u16>,
    },
    /// NetName, decoded from UTF-16LE (unpaired surrogates replaced).
    NetnameNegotiate {
        name: String,
    },
    TransportCapabilities {
        flags: u32,
    },
    RdmaTransform {
        transform_ids: Vec<u16>,
    },
    Signing {
        algorithms: Vec<u16>,
    },
    Unknown {
        ctx_type: u16,
        data: Vec<u8>,
    },
}

/// Reads a count-prefixed array of u16 from `data` (count already read).
fn u16_array(data: &[u8], count: u16) -> Result<(&[u8], Vec<u16>), WireError> {
    let n = usize::from(count) * 2;
    let arr = data.get(..n).ok_or(WireError::Invalid("context array"))?;
    let v = arr
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok((&data[n..], v))
}

fn put_u16_array(out: &mut Vec<u8>, v: &[u16]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

impl NegotiateContext {
    pub fn ctx_type(&self) -> u16 {
        match self {
            NegotiateContext::PreauthIntegrity { .. } => PREAUTH_INTEGRITY_CAPABILITIES,
            NegotiateContext::Encryption { .. } => ENCRYPTION_CAPABILITIES,
            NegotiateContext::Compression { .. } => COMPRESSION_CAPABILITIES,
            NegotiateContext::NetnameNegotiate { .. } => NETNAME_NEGOTIATE_CONTEXT_ID,
            NegotiateContext::TransportCapabilities { .. } => TRANSPORT_CAPABILITIES,
            NegotiateContext::RdmaTransform { .. } => RDMA_TRANSFORM_CAPABILITIES,
            NegotiateContext::Signing { .. } => SIGNING_CAPABILITIES,
            NegotiateContext::Unknown { ctx_type, .. } => *ctx_type,
        }
    }

    /// Decodes the Data field of a context of type `ctx_type`. Bytes after
    /// the known fields are ignored.
    pub fn decode_data(ctx_type: u16, data: &[u8]) -> Result<Self, WireError> {
        Ok(match ctx_type {
            PREAUTH_INTEGRITY_CAPABILITIES => {
                let (i, count) = le_u16(data)?;
                let (i, salt_len) = le_u16(i)?;
                let (i, hash_algorithms) = u16_array(i, count)?;
                let salt = i
                    .get(..usize::from(salt_len))
                    .ok_or(WireError::Invalid("preauth salt"))?
                    .to_vec();
                NegotiateContext::PreauthIntegrity {
                    hash_algorithms,
                    salt,
                }
            }
            ENCRYPTION_CAPABILITIES => {
                let (i, count) = le_u16(data)?;
                NegotiateContext::Encryption {
                    ciphers: u16_array(i, count)?.1,
                }
            }
            COMPRESSION_CAPABILITIES => {
                let (i, count) = le_u16(data)?;
                let (i, _padding) = le_u16(i)?;
                let (i, flags) = le_u32(i)?;
                NegotiateContext::Compression {
                    flags,
                    algorithms: u16_array(i, count)?.1,
                }
            }
            NETNAME_NEGOTIATE_CONTEXT_ID => {
                let units: Vec<u16> = data
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                NegotiateContext::NetnameNegotiate {
                    name: String::from_utf16_lossy(&units),
                }
            }
            TRANSPORT_CAPABILITIES => NegotiateContext::TransportCapabilities {
                flags: le_u32(data)?.1,
            },
            RDMA_TRANSFORM_CAPABILITIES => {
                let (i, count) = le_u16(data)?;
                let (i, _reserved1) = le_u16(i)?;
                let (i, _reserved2) = le_u32(i)?;
                NegotiateContext::RdmaTransform {
                    transform_ids: u16_array(i, count)?.1,
                }
            }
            SIGNING_CAPABILITIES => {
                let (i, count) = le_u16(data)?;
                NegotiateContext::Signing {
                    algorithms: u16_array(i, count)?.1,
                }
            }
            _ => NegotiateContext::Unknown {
                ctx_type,
                data: data.to_vec(),
            },
        })
    }

    /// The encoded Data field.
    pub fn encode_data(&self) -> Vec<u8> {
        let mut d = Vec::new();
        match self {
            NegotiateContext::PreauthIntegrity {
                hash_algorithms,
                salt,
            } => {
                d.extend_from_slice(&(hash_algorithms.len() as u16).to_le_bytes());
                d.extend_from_slice(&(salt.len() as u16).to_le_bytes());
                put_u16_array(&mut d, hash_algorithms);
                d.extend_from_slice(salt);
            }
            NegotiateContext::Encryption { ciphers } => {
                d.extend_from_slice(&(ciphers.len() as u16).to_le_bytes());
                put_u16_array(&mut d, ciphers);
            }
            NegotiateContext::Compression { flags, algorithms } => {
                d.extend_from_slice(&(algorithms.len() as u16).to_le_bytes());
                d.extend_from_slice(&[0, 0]);
                d.extend_from_slice(&flags.to_le_bytes());
                put_u16_array(&mut d, algorithms);
            }
            NegotiateContext::NetnameNegotiate { name } => d = utf16le(name),
            NegotiateContext::TransportCapabilities { flags } => {
                d.extend_from_slice(&flags.to_le_bytes())
            }
            NegotiateContext::RdmaTransform { transform_ids } => {
                d.extend_from_slice(&(transform_ids.len() as u16).to_le_bytes());
                d.extend_from_slice(&[0; 6]);
                put_u16_array(&mut d, transform_ids);
            }
            NegotiateContext::Signing { algorithms } => {
                d.extend_from_slice(&(algorithms.len() as u16).to_le_bytes());
                put_u16_array(&mut d, algorithms);
            }
            NegotiateContext::Unknown { data, .. } => d.clone_from(data),
        }
        d
    }
}

/// Decodes `count` negotiate contexts, the first at `offset` from the start
/// of `msg` (the SMB2 header), each following one 8-byte aligned.
pub fn decode_contexts(
    msg: &[u8],
    offset: usize,
    count: u16,
) -> Result<Vec<NegotiateContext>, WireError> {
    let mut out = Vec::new();
    let mut pos = offset;
    for n in 0..count {
        if n > 0 {
            pos = pos
                .checked_add(7)
                .ok_or(WireError::Invalid("context offset"))?
                & !7;
        }
        let hdr = slice_at(msg, pos, 8)?;
        let ctx_type = u16::from_le_bytes([hdr[0], hdr[1]]);
        let len = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
        let data = slice_at(msg, pos + 8, len)?;
        out.push(NegotiateContext::decode_data(ctx_type, data)?);
        pos += 8 + len;
    }
    Ok(out)
}

/// Appends `contexts` to `out`, 8-byte aligning each (positions in `out`
/// count from this message's header). Returns the offset of the first one,
/// or 0 if there are none.
pub fn encode_contexts(out: &mut BytesMut, contexts: &[NegotiateContext]) -> u32 {
    let mut first = 0;
    for (n, c) in contexts.iter().enumerate() {
        pad_to(out, 8);
        if n == 0 {
            first = out.len() as u32;
        }
        let data = c.encode_data();
        out.put_u16_le(c.ctx_type());
        out.put_u16_le(data.len() as u16);
        out.put_u32_le(0);
        out.put_slice(&data);
    }
    first
}

/// SMB2 NEGOTIATE Request (MS-SMB2 2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NegotiateRequest {
    pub security_mode: u16,
    pub capabilities: u32,
    pub client_guid: [u8; 16],
    /// May be empty: the server must then fail with STATUS_INVALID_PARAMETER.
    pub dialects: Vec<u16>,
    /// Only read (and written) when `dialects` contains 0x0311; otherwise the
    /// field is ClientStartTime and is ignored.
    pub contexts: Vec<NegotiateContext>,
}

impl NegotiateRequest {
    pub const STRUCTURE_SIZE: u16 = 36;

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, dialect_count) = le_u16(i)?;
        let (i, security_mode) = le_u16(i)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, capabilities) = le_u32(i)?;
        let guid = i.get(..16).ok_or(WireError::Truncated)?;
        let mut client_guid = [0u8; 16];
        client_guid.copy_from_slice(guid);
        let i = &i[16..];
        let (i, ctx_offset) = le_u32(i)?;
        let (i, ctx_count) = le_u16(i)?;
        let (i, _reserved2) = le_u16(i)?;
        let n = usize::from(dialect_count) * 2;
        let dialects: Vec<u16> = i
            .get(..n)
            .ok_or(WireError::Truncated)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let contexts = if dialects.contains(&DIALECT_SMB3_1_1) {
            decode_contexts(msg, ctx_offset as usize, ctx_count)?
        } else {
            Vec::new()
        };
        Ok(NegotiateRequest {
            security_mode,
            capabilities,
            client_guid,
            dialects,
            contexts,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let with_ctx = self.dialects.contains(&DIALECT_SMB3_1_1) && !self.contexts.is_empty();
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(self.dialects.len() as u16);
        out.put_u16_le(self.security_mode);
        out.put_u16_le(0);
        out.put_u32_le(self.capabilities);
        out.put_slice(&self.client_guid);
        let ctx_at = out.len();
        out.put_u32_le(0); // NegotiateContextOffset, patched below
        out.put_u16_le(if with_ctx {
            self.contexts.len() as u16
        } else {
            0
        });
        out.put_u16_le(0);
        for d in &self.dialects {
            out.put_u16_le(*d);
        }
        if with_ctx {
            let off = encode_contexts(out, &self.contexts);
            out[ctx_at..ctx_at + 4].copy_from_slice(&off.to_le_bytes());
        }
    }
}

/// SMB2 NEGOTIATE Response (MS-SMB2 2.2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NegotiateResponse {
    pub security_mode: u16,
    pub dialect: u16,
    pub server_guid: [u8; 16],
    pub capabilities: u32,
    pub max_transact_size: u32,
    pub max_read_size: u32,
    pub max_write_size: u32,
    /// NT time.
    pub system_time: u64,
    /// NT time, or 0.
    pub server_start_time: u64,
    /// The GSS-API (SPNEGO) token.
    pub security_buffer: Vec<u8>,
    /// Only encoded (and decoded) when `dialect` is 0x0311.
    pub contexts: Vec<NegotiateContext>,
}

impl NegotiateResponse {
    pub const STRUCTURE_SIZE: u16 = 65;
    const FIXED: usize = 64;

    /// # Panics
    /// If the security buffer is longer than 65535 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        let with_ctx = self.dialect == DIALECT_SMB3_1_1 && !self.contexts.is_empty();
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(self.security_mode);
        out.put_u16_le(self.dialect);
        out.put_u16_le(if with_ctx {
            self.contexts.len() as u16
        } else {
            0
        });
        out.put_slice(&self.server_guid);
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_transact_size);
        out.put_u32_le(self.max_read_size);
        out.put_u32_le(self.max_write_size);
        out.put_u64_le(self.system_time);
        out.put_u64_le(self.server_start_time);
        out.put_u16_le((start + Self::FIXED) as u16);
        out.put_u16_le(
            u16::try_from(self.security_buffer.len())
                .expect("security buffer longer than 65535 bytes"),
        );
        let ctx_at = out.len();
        out.put_u32_le(0); // NegotiateContextOffset, patched below
        out.put_slice(&self.security_buffer);
        if with_ctx {
            let off = encode_contexts(out, &self.contexts);
            out[ctx_at..ctx_at + 4].copy_from_slice(&off.to_le_bytes());
        }
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, security_mode) = le_u16(i)?;
        let (i, dialect) = le_u16(i)?;
        let (i, ctx_count) = le_u16(i)?;
        let guid = i.get(..16).ok_or(WireError::Truncated)?;
        let mut server_guid = [0u8; 16];
        server_guid.copy_from_slice(guid);
        let i = &i[16..];
        let (i, capabilities) = le_u32(i)?;
        let (i, max_transact_size) = le_u32(i)?;
        let (i, max_read_size) = le_u32(i)?;
        let (i, max_write_size) = le_u32(i)?;
        let (i, system_time) = le_u64(i)?;
        let (i, server_start_time) = le_u64(i)?;
        let (i, sec_off) = le_u16(i)?;
        let (i, sec_len) = le_u16(i)?;
        let (_, ctx_offset) = le_u32(i)?;
        let security_buffer = slice_at(msg, sec_off.into(), sec_len.into())?.to_vec();
        let contexts = if dialect == DIALECT_SMB3_1_1 {
            decode_contexts(msg, ctx_offset as usize, ctx_count)?
        } else {
            Vec::new()
        };
        Ok(NegotiateResponse {
            security_mode,
            dialect,
            server_guid,
            capabilities,
            max_transact_size,
            max_read_size,
            max_write_size,
            system_time,
            server_start_time,
            security_buffer,
            contexts,
        })
    }
}

const _: () = assert!(HEADER_LEN + NegotiateResponse::FIXED <= u16::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::simple::tests::{msg, with_header};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn context() -> impl Strategy<Value = NegotiateContext> {
        use NegotiateContext::*;
        prop_oneof![
            (vec(any::<u16>(), 0..4), vec(any::<u8>(), 0..40)).prop_map(|(h, s)| {
                PreauthIntegrity {
                    hash_algorithms: h,
                    salt: s,
                }
            }),
            vec(any::<u16>(), 0..5).prop_map(|c| Encryption { ciphers: c }),
            (any::<u32>(), vec(any::<u16>(), 0..5)).prop_map(|(f, a)| Compression {
                flags: f,
                algorithms: a
            }),
            "\\PC{0,20}".prop_map(|n| NetnameNegotiate { name: n }),
            any::<u32>().prop_map(|f| TransportCapabilities { flags: f }),
            vec(any::<u16>(), 0..4).prop_map(|t| RdmaTransform { transform_ids: t }),
            vec(any::<u16>(), 0..4).prop_map(|a| Signing { algorithms: a }),
            (9u16.., vec(any::<u8>(), 0..30)).prop_map(|(t, d)| Unknown {
                ctx_type: t,
                data: d
            }),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trip(sm in any::<u16>(), caps in any::<u32>(), guid in any::<[u8; 16]>(),
                              mut dialects in vec(any::<u16>(), 0..8), smb311 in any::<bool>(),
                              ctxs in vec(context(), 0..6)) {
            dialects.retain(|d| *d != DIALECT_SMB3_1_1);
            if smb311 {
                dialects.push(DIALECT_SMB3_1_1);
            }
            let r = NegotiateRequest { security_mode: sm, capabilities: caps, client_guid: guid,
                                       dialects, contexts: if smb311 { ctxs } else { vec![] } };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(NegotiateRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn response_round_trip(sm in any::<u16>(), dialect in any::<u16>(), guid in any::<[u8; 16]>(),
                               caps in any::<u32>(), mt in any::<u32>(), mr in any::<u32>(), mw in any::<u32>(),
                               st in any::<u64>(), sst in any::<u64>(), sb in vec(any::<u8>(), 0..100),
                               ctxs in vec(context(), 0..6)) {
            let r = NegotiateResponse { security_mode: sm, dialect, server_guid: guid, capabilities: caps,
                                        max_transact_size: mt, max_read_size: mr, max_write_size: mw,
                                        system_time: st, server_start_time: sst, security_buffer: sb,
                                        contexts: if dialect == DIALECT_SMB3_1_1 { ctxs } else { vec![] } };
            let mut b = with_header();
            r.encode(&mut b);
            if !r.contexts.is_empty() {
                let off = u32::from_le_bytes([b[124], b[125], b[126], b[127]]);
                prop_assert_eq!(off % 8, 0);
            }
            prop_assert_eq!(NegotiateResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn never_panics(body in vec(any::<u8>(), 0..200)) {
            let m = msg(&body);
            let _ = NegotiateRequest::decode(&m);
            let _ = NegotiateResponse::decode(&m);
        }

        #[test]
        fn context_data_never_panics(t in 0u16..10, data in vec(any::<u8>(), 0..40)) {
            let _ = NegotiateContext::decode_data(t, &data);
        }
    }

    #[test]
    fn request_311_layout() {
        let r = NegotiateRequest {
            security_mode: NEGOTIATE_SIGNING_ENABLED,
            capabilities: GLOBAL_CAP_DFS | GLOBAL_CAP_LARGE_MTU,
            client_guid: [7; 16],
            dialects: vec![DIALECT_SMB2_002, DIALECT_SMB3_0, DIALECT_SMB3_1_1],
            contexts: vec![
                NegotiateContext::PreauthIntegrity {
                    hash_algorithms: vec![HASH_ALGORITHM_SHA512],
                    salt: vec![0xAA; 32],
                },
                NegotiateContext::Unknown {
                    ctx_type: POSIX_EXTENSIONS_AVAILABLE,
                    data: vec![1; 16],
                },
                NegotiateContext::Encryption {
                    ciphers: vec![CIPHER_AES128_GCM, CIPHER_AES128_CCM],
                },
            ],
        };
        let mut b = with_header();
        r.encode(&mut b);
        // Dialects at 100..106, first context aligned at 112.
        assert_eq!(u32::from_le_bytes([b[92], b[93], b[94], b[95]]), 112);
        assert_eq!(u16::from_le_bytes([b[96], b[97]]), 3);
        assert_eq!(&b[112..116], &[1, 0, 38, 0]);
        // Preauth ends at 112+8+38=158, next at 160.
        assert_eq!(&b[160..162], &[0, 1]);
        let d = NegotiateRequest::decode(&b).unwrap();
        assert_eq!(d, r);
    }

    #[test]
    fn request_without_311_ignores_client_start_time() {
        let mut b = with_header();
        NegotiateRequest {
            dialects: vec![DIALECT_SMB2_1],
            ..Default::default()
        }
        .encode(&mut b);
        b[92..100].copy_from_slice(&[0xFF; 8]);
        let d = NegotiateRequest::decode(&b).unwrap();
        assert!(d.contexts.is_empty());
        assert_eq!(d.dialects, vec![DIALECT_SMB2_1]);
    }

    #[test]
    fn truncated_contexts_rejected() {
        let mut b = with_header();
        NegotiateRequest {
            dialects: vec![DIALECT_SMB3_1_1],
            contexts: vec![NegotiateContext::Signing {
                algorithms: vec![SIGNING_AES_CMAC],
            }],
            ..Default::default()
        }
        .encode(&mut b);
        b.truncate(b.len() - 1);
        assert!(NegotiateRequest::decode(&b).is_err());
    }

    #[test]
    fn response_layout() {
        let r = NegotiateResponse {
            dialect: DIALECT_SMB3_1_1,
            security_buffer: vec![0x60; 3],
            contexts: vec![NegotiateContext::Encryption {
                ciphers: vec![CIPHER_AES128_GCM],
            }],
            ..Default::default()
        };
        let mut b = with_header();
        r.encode(&mut b);
        assert_eq!(u16::from_le_bytes([b[120], b[121]]), 128);
        assert_eq!(u32::from_le_bytes([b[124], b[125], b[126], b[127]]), 136);
        assert_eq!(b.len(), 136 + 8 + 4);
        // Not 3.1.1: no contexts even if given.
        let r2 = NegotiateResponse {
            dialect: DIALECT_SMB3_0_2,
            ..r.clone()
        };
        let mut b = with_header();
        r2.encode(&mut b);
        assert_eq!(b.len(), 128 + 3);
        assert_eq!(&b[124..128], &[0; 4]);
    }
}
