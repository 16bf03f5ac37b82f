//! TREE_CONNECT (MS-SMB2 2.2.9, 2.2.10) and TREE_DISCONNECT (2.2.11, 2.2.12).

use super::simple::{checked_body, size4_message};
use super::{from_utf16le, pad_to, slice_at, utf16le, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u8};

/// TreeConnectRequest.Flags (3.1.1).
pub const TREE_CONNECT_FLAG_CLUSTER_RECONNECT: u16 = 0x0001;
pub const TREE_CONNECT_FLAG_REDIRECT_TO_OWNER: u16 = 0x0002;
pub const TREE_CONNECT_FLAG_EXTENSION_PRESENT: u16 = 0x0004;

/// Tree connect context types (MS-SMB2 2.2.9.2).
pub const REMOTED_IDENTITY_TREE_CONNECT_CONTEXT_ID: u16 = 0x0001;

/// TreeConnectResponse.ShareType.
pub const SHARE_TYPE_DISK: u8 = 0x01;
pub const SHARE_TYPE_PIPE: u8 = 0x02;
pub const SHARE_TYPE_PRINT: u8 = 0x03;

/// TreeConnectResponse.ShareFlags (MS-SMB2 2.2.10).
pub mod share_flags {
    pub const MANUAL_CACHING: u32 = 0x0000_0000;
    pub const AUTO_CACHING: u32 = 0x0000_0010;
    pub const VDO_CACHING: u32 = 0x0000_0020;
    pub const NO_CACHING: u32 = 0x0000_0030;
    pub const CACHING_MASK: u32 = 0x0000_0030;
    pub const DFS: u32 = 0x0000_0001;
    pub const DFS_ROOT: u32 = 0x0000_0002;
    pub const RESTRICT_EXCLUSIVE_OPENS: u32 = 0x0000_0100;
    pub const FORCE_SHARED_DELETE: u32 = 0x0000_0200;
    pub const ALLOW_NAMESPACE_CACHING: u32 = 0x0000_0400;
    pub const ACCESS_BASED_DIRECTORY_ENUM: u32 = 0x0000_0800;
    pub const FORCE_LEVELII_OPLOCK: u32 = 0x0000_1000;
    pub const ENABLE_HASH_V1: u32 = 0x0000_2000;
    pub const ENABLE_HASH_V2: u32 = 0x0000_4000;
    pub const ENCRYPT_DATA: u32 = 0x0000_8000;
    pub const IDENTITY_REMOTING: u32 = 0x0004_0000;
    pub const COMPRESS_DATA: u32 = 0x0010_0000;
    pub const ISOLATED_TRANSPORT: u32 = 0x0020_0000;
}

/// TreeConnectResponse.Capabilities (MS-SMB2 2.2.10).
pub mod share_caps {
    pub const DFS: u32 = 0x0000_0008;
    pub const CONTINUOUS_AVAILABILITY: u32 = 0x0000_0010;
    pub const SCALEOUT: u32 = 0x0000_0020;
    pub const CLUSTER: u32 = 0x0000_0040;
    pub const ASYMMETRIC: u32 = 0x0000_0080;
    pub const REDIRECT_TO_OWNER: u32 = 0x0000_0100;
}

/// One SMB2_TREE_CONNECT_CONTEXT (MS-SMB2 2.2.9.2), kept raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeConnectContext {
    pub ctx_type: u16,
    pub data: Vec<u8>,
}

/// SMB2 TREE_CONNECT Request (MS-SMB2 2.2.9), with the 3.1.1 extension (2.2.9.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeConnectRequest {
    /// TREE_CONNECT_FLAG_* (Reserved before 3.1.1).
    pub flags: u16,
    /// `\\server\share`, decoded from UTF-16LE.
    pub path: String,
    /// Only present when TREE_CONNECT_FLAG_EXTENSION_PRESENT is set.
    pub contexts: Vec<TreeConnectContext>,
}

/// Size of the extension fields before PathName: offset (4), count (2), reserved (10).
const EXTENSION_LEN: usize = 16;

impl TreeConnectRequest {
    pub const STRUCTURE_SIZE: u16 = 9;
    const FIXED: usize = 8;

    /// Decodes the request. PathOffset is relative to the SMB2 header, with
    /// or without the extension. With the extension, TreeConnectContextOffset
    /// is taken, as MS-SMB2 2.2.9.1 words it, from the start of the
    /// TREE_CONNECT request (the byte after the header).
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, flags) = le_u16(i)?;
        let (i, path_off) = le_u16(i)?;
        let (i, path_len) = le_u16(i)?;
        let path = from_utf16le(slice_at(msg, path_off.into(), path_len.into())?)?;
        let mut contexts = Vec::new();
        if flags & TREE_CONNECT_FLAG_EXTENSION_PRESENT != 0 {
            let (i, ctx_off) = le_u32(i)?;
            let (_, ctx_count) = le_u16(i)?;
            if i.len() < EXTENSION_LEN - 4 {
                return Err(WireError::Truncated);
            }
            let mut pos = (ctx_off as usize)
                .checked_add(HEADER_LEN)
                .ok_or(WireError::Invalid("context offset"))?;
            for n in 0..ctx_count {
                if n > 0 {
                    pos = pos
                        .checked_add(7)
                        .ok_or(WireError::Invalid("context offset"))?
                        & !7;
                }
                let hdr = slice_at(msg, pos, 8)?;
                let ctx_type = u16::from_le_bytes([hdr[0], hdr[1]]);
                let len = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
                let data = slice_at(msg, pos + 8, len)?.to_vec();
                contexts.push(TreeConnectContext { ctx_type, data });
                pos += 8 + len;
            }
        }
        Ok(TreeConnectRequest {
            flags,
            path,
            contexts,
        })
    }

    /// Encodes the request; the extension is written iff `flags` has
    /// TREE_CONNECT_FLAG_EXTENSION_PRESENT.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        let ext = self.flags & TREE_CONNECT_FLAG_EXTENSION_PRESENT != 0;
        let path = utf16le(&self.path);
        let path_off = start + Self::FIXED + if ext { EXTENSION_LEN } else { 0 };
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(self.flags);
        out.put_u16_le(path_off as u16);
        out.put_u16_le(path.len() as u16);
        if !ext {
            out.put_slice(&path);
            return;
        }
        let ext_at = out.len();
        out.put_u32_le(0); // patched below
        out.put_u16_le(self.contexts.len() as u16);
        out.put_bytes(0, 10);
        out.put_slice(&path);
        let mut first = true;
        for c in &self.contexts {
            pad_to(out, 8);
            if first {
                let rel = (out.len() - HEADER_LEN) as u32;
                out[ext_at..ext_at + 4].copy_from_slice(&rel.to_le_bytes());
                first = false;
            }
            out.put_u16_le(c.ctx_type);
            out.put_u16_le(c.data.len() as u16);
            out.put_u32_le(0);
            out.put_slice(&c.data);
        }
    }
}

/// SMB2 TREE_CONNECT Response (MS-SMB2 2.2.10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeConnectResponse {
    /// SHARE_TYPE_DISK / PIPE / PRINT.
    pub share_type: u8,
    /// [`share_flags`] bits.
    pub share_flags: u32,
    /// [`share_caps`] bits.
    pub capabilities: u32,
    pub maximal_access: u32,
}

impl TreeConnectResponse {
    pub const STRUCTURE_SIZE: u16 = 16;

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u8(self.share_type);
        out.put_u8(0);
        out.put_u32_le(self.share_flags);
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.maximal_access);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, share_type) = le_u8(i)?;
        let (i, _reserved) = le_u8(i)?;
        let (i, share_flags) = le_u32(i)?;
        let (i, capabilities) = le_u32(i)?;
        let (_, maximal_access) = le_u32(i)?;
        Ok(TreeConnectResponse {
            share_type,
            share_flags,
            capabilities,
            maximal_access,
        })
    }
}

size4_message!(
    /// SMB2 TREE_DISCONNECT Request (MS-SMB2 2.2.11).
    TreeDisconnectRequest
);
size4_message!(
    /// SMB2 TREE_DISCONNECT Response (MS-SMB2 2.2.12).
    TreeDisconnectResponse
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::simple::tests::{msg, with_header};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ctx() -> impl Strategy<Value = TreeConnectContext> {
        (any::<u16>(), vec(any::<u8>(), 0..40))
            .prop_map(|(ctx_type, data)| TreeConnectContext { ctx_type, data })
    }

    proptest! {
        #[test]
        fn request_round_trip(flags in any::<u16>(), path in "\\PC{0,40}", ctxs in vec(ctx(), 0..4)) {
            let ext = flags & TREE_CONNECT_FLAG_EXTENSION_PRESENT != 0;
            let r = TreeConnectRequest { flags, path, contexts: if ext { ctxs } else { vec![] } };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(TreeConnectRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn response_round_trip(st in any::<u8>(), sf in any::<u32>(), caps in any::<u32>(), ma in any::<u32>()) {
            let r = TreeConnectResponse { share_type: st, share_flags: sf, capabilities: caps, maximal_access: ma };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), 64 + 16);
            prop_assert_eq!(TreeConnectResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn never_panics(body in vec(any::<u8>(), 0..120)) {
            let m = msg(&body);
            let _ = TreeConnectRequest::decode(&m);
            let _ = TreeConnectResponse::decode(&m);
            let _ = TreeDisconnectRequest::decode(&m);
        }
    }

    #[test]
    fn plain_request_layout() {
        let r = TreeConnectRequest {
            flags: 0,
            path: r"\\srv\share".into(),
            contexts: vec![],
        };
        let mut b = with_header();
        r.encode(&mut b);
        assert_eq!(&b[64..72], &[9, 0, 0, 0, 72, 0, 22, 0]);
        assert_eq!(&b[72..76], &[b'\\', 0, b'\\', 0]);
    }

    #[test]
    fn extension_layout() {
        let r = TreeConnectRequest {
            flags: TREE_CONNECT_FLAG_EXTENSION_PRESENT,
            path: r"\\s\x".into(),
            contexts: vec![TreeConnectContext {
                ctx_type: REMOTED_IDENTITY_TREE_CONNECT_CONTEXT_ID,
                data: vec![1, 2, 3],
            }],
        };
        let mut b = with_header();
        r.encode(&mut b);
        // PathOffset past StructureSize..PathLength (8) and the extension (16).
        assert_eq!(u16::from_le_bytes([b[68], b[69]]), 64 + 24);
        // Path is 10 bytes at 88..98; context 8-aligned at 104 = body offset 40.
        assert_eq!(u32::from_le_bytes([b[72], b[73], b[74], b[75]]), 40);
        assert_eq!(&b[104..106], &[1, 0]);
        assert_eq!(TreeConnectRequest::decode(&b).unwrap(), r);
    }

    #[test]
    fn bad_path() {
        // Odd path length.
        let m = msg(&[9, 0, 0, 0, 72, 0, 3, 0, b'a', 0, b'b', 0]);
        assert!(TreeConnectRequest::decode(&m).is_err());
        // Path past the end.
        let m = msg(&[9, 0, 0, 0, 72, 0, 8, 0, b'a', 0]);
        assert!(TreeConnectRequest::decode(&m).is_err());
    }

    #[test]
    fn disconnect() {
        let mut b = with_header();
        TreeDisconnectResponse.encode(&mut b);
        assert_eq!(
            TreeDisconnectRequest::decode(&b).unwrap(),
            TreeDisconnectRequest
        );
    }
}
