//! SMB2 QUERY_DIRECTORY (MS-SMB2 2.2.33, 2.2.34).

use super::info::{
    decode_output_buffer, encode_output_buffer, off16, request_body, request_buffer, take_file_id,
};
use super::{from_utf16le, utf16le, FileId, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u8};

/// QUERY_DIRECTORY Flags.
pub mod flags {
    pub const RESTART_SCANS: u8 = 0x01;
    pub const RETURN_SINGLE_ENTRY: u8 = 0x02;
    pub const INDEX_SPECIFIED: u8 = 0x04;
    pub const REOPEN: u8 = 0x10;
}

/// FileInformationClass values valid for QUERY_DIRECTORY (MS-FSCC 2.4).
pub mod class {
    pub const FILE_DIRECTORY_INFORMATION: u8 = 0x01;
    pub const FILE_FULL_DIRECTORY_INFORMATION: u8 = 0x02;
    pub const FILE_BOTH_DIRECTORY_INFORMATION: u8 = 0x03;
    pub const FILE_NAMES_INFORMATION: u8 = 0x0C;
    pub const FILE_ID_BOTH_DIRECTORY_INFORMATION: u8 = 0x25;
    pub const FILE_ID_FULL_DIRECTORY_INFORMATION: u8 = 0x26;
    pub const FILE_ID_EXTD_DIRECTORY_INFORMATION: u8 = 0x3C;
    pub const FILE_ID_64_EXTD_DIRECTORY_INFORMATION: u8 = 0x4E;
    pub const FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION: u8 = 0x4F;
    pub const FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION: u8 = 0x50;
    pub const FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION: u8 = 0x51;
}

const REQ_SIZE: u16 = 33;
const REQ_FIXED: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryDirectoryRequest {
    pub file_information_class: u8,
    pub flags: u8,
    pub file_index: u32,
    pub file_id: FileId,
    /// Search pattern as sent (may be empty; wildcard semantics are the caller's).
    pub pattern: String,
    pub output_buffer_length: u32,
}

impl QueryDirectoryRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, REQ_SIZE, REQ_FIXED, "query directory structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, file_information_class) = le_u8(i)?;
        let (i, flags) = le_u8(i)?;
        let (i, file_index) = le_u32(i)?;
        let (i, file_id) = take_file_id(i)?;
        let (i, name_off) = le_u16(i)?;
        let (i, name_len) = le_u16(i)?;
        let (_, output_buffer_length) = le_u32(i)?;
        let name = request_buffer(msg, REQ_FIXED, name_off as usize, name_len as usize)?;
        Ok(QueryDirectoryRequest {
            file_information_class,
            flags,
            file_index,
            file_id,
            pattern: from_utf16le(name)?,
            output_buffer_length,
        })
    }

    /// Appends the request body (for tests and clients).
    pub fn encode(&self, out: &mut BytesMut) {
        let name = utf16le(&self.pattern);
        let off = out.len() + REQ_FIXED;
        out.put_u16_le(REQ_SIZE);
        out.put_u8(self.file_information_class);
        out.put_u8(self.flags);
        out.put_u32_le(self.file_index);
        self.file_id.encode(out);
        out.put_u16_le(off16(off));
        out.put_u16_le(u16::try_from(name.len()).unwrap_or(0));
        out.put_u32_le(self.output_buffer_length);
        out.put_slice(&name);
    }
}

/// `buffer` holds the already-formatted MS-FSCC entries (8-byte aligned,
/// NextEntryOffset chained). Encoded with OutputBufferOffset 0x48.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryDirectoryResponse {
    pub buffer: Vec<u8>,
}

impl QueryDirectoryResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        encode_output_buffer(out, &self.buffer);
    }
    /// Same as `encode` but from a borrowed buffer.
    pub fn encode_from(out: &mut BytesMut, buffer: &[u8]) {
        encode_output_buffer(out, buffer);
    }
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        Ok(QueryDirectoryResponse {
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
        fn query_dir_request_round_trip(c in any::<u8>(), f in any::<u8>(), idx in any::<u32>(),
                p in any::<u64>(), v in any::<u64>(), pattern in "\\PC{0,40}", obl in any::<u32>()) {
            let r = QueryDirectoryRequest { file_information_class: c, flags: f, file_index: idx,
                file_id: FileId { persistent: p, volatile: v }, pattern, output_buffer_length: obl };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(QueryDirectoryRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn query_dir_response_round_trip(buffer in vec(any::<u8>(), 0..300)) {
            let r = QueryDirectoryResponse { buffer };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(QueryDirectoryResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn query_dir_decode_never_panics(data in vec(any::<u8>(), 0..200)) {
            let _ = QueryDirectoryRequest::decode(&data);
            let _ = QueryDirectoryResponse::decode(&data);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&33u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = QueryDirectoryRequest::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&9u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = QueryDirectoryResponse::decode(&m);
        }
    }

    #[test]
    fn odd_name_length_rejected() {
        let r = QueryDirectoryRequest {
            pattern: "*".into(),
            ..Default::default()
        };
        let mut b = hdr();
        r.encode(&mut b);
        b[HEADER_LEN + 26] = 1;
        assert!(QueryDirectoryRequest::decode(&b).is_err());
    }
}
