//! SMB2 CHANGE_NOTIFY (MS-SMB2 2.2.35, 2.2.36).

use super::info::{decode_output_buffer, encode_output_buffer, request_body, take_file_id};
use super::{FileId, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32};

/// SMB2_WATCH_TREE: watch the whole subtree.
pub const WATCH_TREE: u16 = 0x0001;

/// CompletionFilter bits (FILE_NOTIFY_CHANGE_*).
pub mod filter {
    pub const FILE_NAME: u32 = 0x0000_0001;
    pub const DIR_NAME: u32 = 0x0000_0002;
    pub const ATTRIBUTES: u32 = 0x0000_0004;
    pub const SIZE: u32 = 0x0000_0008;
    pub const LAST_WRITE: u32 = 0x0000_0010;
    pub const LAST_ACCESS: u32 = 0x0000_0020;
    pub const CREATION: u32 = 0x0000_0040;
    pub const EA: u32 = 0x0000_0080;
    pub const SECURITY: u32 = 0x0000_0100;
    pub const STREAM_NAME: u32 = 0x0000_0200;
    pub const STREAM_SIZE: u32 = 0x0000_0400;
    pub const STREAM_WRITE: u32 = 0x0000_0800;
}

/// FILE_NOTIFY_INFORMATION Action values (MS-FSCC 2.7.1).
pub mod action {
    pub const ADDED: u32 = 0x0000_0001;
    pub const REMOVED: u32 = 0x0000_0002;
    pub const MODIFIED: u32 = 0x0000_0003;
    pub const RENAMED_OLD_NAME: u32 = 0x0000_0004;
    pub const RENAMED_NEW_NAME: u32 = 0x0000_0005;
    pub const ADDED_STREAM: u32 = 0x0000_0006;
    pub const REMOVED_STREAM: u32 = 0x0000_0007;
    pub const MODIFIED_STREAM: u32 = 0x0000_0008;
}

const REQ_SIZE: u16 = 32;
const REQ_FIXED: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeNotifyRequest {
    pub flags: u16,
    pub output_buffer_length: u32,
    pub file_id: FileId,
    pub completion_filter: u32,
}

impl ChangeNotifyRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, REQ_SIZE, REQ_FIXED, "change notify structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, flags) = le_u16(i)?;
        let (i, output_buffer_length) = le_u32(i)?;
        let (i, file_id) = take_file_id(i)?;
        let (_, completion_filter) = le_u32(i)?;
        Ok(ChangeNotifyRequest {
            flags,
            output_buffer_length,
            file_id,
            completion_filter,
        })
    }

    /// Appends the request body (for tests and clients).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(REQ_SIZE);
        out.put_u16_le(self.flags);
        out.put_u32_le(self.output_buffer_length);
        self.file_id.encode(out);
        out.put_u32_le(self.completion_filter);
        out.put_u32_le(0);
    }
}

/// `buffer` holds chained FILE_NOTIFY_INFORMATION entries, or is empty
/// (e.g. with STATUS_NOTIFY_ENUM_DIR).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeNotifyResponse {
    pub buffer: Vec<u8>,
}

impl ChangeNotifyResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        encode_output_buffer(out, &self.buffer);
    }
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        Ok(ChangeNotifyResponse {
            buffer: decode_output_buffer(msg)?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HEADER_LEN;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn hdr() -> BytesMut {
        let mut b = BytesMut::new();
        b.resize(HEADER_LEN, 0);
        b
    }

    proptest! {
        #[test]
        fn notify_request_round_trip(f in any::<u16>(), obl in any::<u32>(), p in any::<u64>(),
                v in any::<u64>(), cf in any::<u32>()) {
            let r = ChangeNotifyRequest { flags: f, output_buffer_length: obl,
                file_id: FileId { persistent: p, volatile: v }, completion_filter: cf };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 32);
            prop_assert_eq!(ChangeNotifyRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn notify_response_round_trip(buffer in vec(any::<u8>(), 0..300)) {
            let r = ChangeNotifyResponse { buffer };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(ChangeNotifyResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn notify_decode_never_panics(data in vec(any::<u8>(), 0..200)) {
            let _ = ChangeNotifyRequest::decode(&data);
            let _ = ChangeNotifyResponse::decode(&data);
        }
    }

    #[test]
    fn short_request_is_truncated() {
        let mut b = hdr();
        ChangeNotifyRequest::default().encode(&mut b);
        assert_eq!(
            ChangeNotifyRequest::decode(&b[..b.len() - 1]),
            Err(WireError::Truncated)
        );
    }
}
