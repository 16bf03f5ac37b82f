//! SMB2 QUERY_INFO and SET_INFO (MS-SMB2 2.2.37-2.2.40), plus the
//! "StructureSize 9 + OutputBufferOffset/Length" response layout shared with
//! QUERY_DIRECTORY and CHANGE_NOTIFY.

use super::{slice_at, FileId, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u8};

/// InfoType values (SMB2_0_INFO_*).
pub mod info_type {
    pub const FILE: u8 = 0x01;
    pub const FILESYSTEM: u8 = 0x02;
    pub const SECURITY: u8 = 0x03;
    pub const QUOTA: u8 = 0x04;
}

/// AdditionalInformation bits for SECURITY queries/sets (MS-DTYP SECURITY_INFORMATION).
pub mod additional_info {
    pub const OWNER: u32 = 0x0000_0001;
    pub const GROUP: u32 = 0x0000_0002;
    pub const DACL: u32 = 0x0000_0004;
    pub const SACL: u32 = 0x0000_0008;
    pub const LABEL: u32 = 0x0000_0010;
    pub const ATTRIBUTE: u32 = 0x0000_0020;
    pub const SCOPE: u32 = 0x0000_0040;
    pub const BACKUP: u32 = 0x0001_0000;
}

/// QUERY_INFO Flags (used with FileFullEaInformation queries).
pub mod query_flags {
    pub const RESTART_SCAN: u32 = 0x0000_0001;
    pub const RETURN_SINGLE_ENTRY: u32 = 0x0000_0002;
    pub const INDEX_SPECIFIED: u32 = 0x0000_0004;
}

const QUERY_REQ_SIZE: u16 = 41;
const QUERY_REQ_FIXED: usize = 40;
const SET_REQ_SIZE: u16 = 33;
const SET_REQ_FIXED: usize = 32;
const BUF_RESP_SIZE: u16 = 9;
const SET_RESP_SIZE: u16 = 2;

/// Returns the request body (after the header), checking StructureSize and that
/// the fixed part is present.
pub(crate) fn request_body<'a>(
    msg: &'a [u8],
    structure_size: u16,
    fixed: usize,
    what: &'static str,
) -> Result<&'a [u8], WireError> {
    let b = msg.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
    let (_, ss) = le_u16(b)?;
    if ss != structure_size {
        return Err(WireError::Invalid(what));
    }
    if b.len() < fixed {
        return Err(WireError::Truncated);
    }
    Ok(b)
}

/// A variable buffer of a request: `msg[off..off+len]`, which must not overlap
/// the header or the fixed part of the body (`fixed` bytes). Empty is always valid.
pub(crate) fn request_buffer(
    msg: &[u8],
    fixed: usize,
    off: usize,
    len: usize,
) -> Result<&[u8], WireError> {
    if len == 0 {
        return Ok(&[]);
    }
    if off < HEADER_LEN + fixed {
        return Err(WireError::Invalid("buffer overlaps fixed part"));
    }
    slice_at(msg, off, len)
}

/// Takes a 16-byte FileId from the front of `i`, returning the rest. Only
/// exactly 16 bytes are handed to `FileId::decode`.
pub(crate) fn take_file_id(i: &[u8]) -> Result<(&[u8], FileId), WireError> {
    let b = i.get(..16).ok_or(WireError::Truncated)?;
    Ok((&i[16..], FileId::decode(b)?))
}

/// Converts a length to u32; lengths this codec writes are bounded well below that.
pub(crate) fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Converts an offset within `out` to u16 (0 if it cannot be represented).
pub(crate) fn off16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(0)
}

/// Encodes the 9-byte-StructureSize response body with a trailing buffer
/// (QUERY_INFO, QUERY_DIRECTORY, CHANGE_NOTIFY). The offset always points just
/// past the fixed part (0x48 for a standalone message); an empty buffer is sent
/// as one zero byte so that the body is at least StructureSize long.
pub fn encode_output_buffer(out: &mut BytesMut, buf: &[u8]) {
    out.reserve(8 + buf.len().max(1));
    let off = out.len() + 8;
    out.put_u16_le(BUF_RESP_SIZE);
    out.put_u16_le(off16(off));
    out.put_u32_le(len32(buf.len()));
    if buf.is_empty() {
        out.put_u8(0);
    } else {
        out.put_slice(buf);
    }
}

/// Decodes the 9-byte-StructureSize response body and returns its buffer.
pub fn decode_output_buffer(msg: &[u8]) -> Result<&[u8], WireError> {
    let b = request_body(msg, BUF_RESP_SIZE, 8, "response structure size")?;
    let (i, _) = le_u16(b)?;
    let (i, off) = le_u16(i)?;
    let (_, len) = le_u32(i)?;
    request_buffer(msg, 8, off as usize, len as usize)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryInfoRequest {
    pub info_type: u8,
    pub file_info_class: u8,
    pub output_buffer_length: u32,
    /// Input buffer (quota SIDs, EA names); copied, it is small.
    pub input: Vec<u8>,
    pub additional_information: u32,
    pub flags: u32,
    pub file_id: FileId,
}

impl QueryInfoRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(
            msg,
            QUERY_REQ_SIZE,
            QUERY_REQ_FIXED,
            "query info structure size",
        )?;
        let (i, _) = le_u16(b)?;
        let (i, info_type) = le_u8(i)?;
        let (i, file_info_class) = le_u8(i)?;
        let (i, output_buffer_length) = le_u32(i)?;
        let (i, in_off) = le_u16(i)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, in_len) = le_u32(i)?;
        let (i, additional_information) = le_u32(i)?;
        let (i, flags) = le_u32(i)?;
        let (_, file_id) = take_file_id(i)?;
        let input =
            request_buffer(msg, QUERY_REQ_FIXED, in_off as usize, in_len as usize)?.to_vec();
        Ok(QueryInfoRequest {
            info_type,
            file_info_class,
            output_buffer_length,
            input,
            additional_information,
            flags,
            file_id,
        })
    }

    /// Appends the request body (for tests and clients).
    pub fn encode(&self, out: &mut BytesMut) {
        let in_off = if self.input.is_empty() {
            0
        } else {
            out.len() + QUERY_REQ_FIXED
        };
        out.put_u16_le(QUERY_REQ_SIZE);
        out.put_u8(self.info_type);
        out.put_u8(self.file_info_class);
        out.put_u32_le(self.output_buffer_length);
        out.put_u16_le(off16(in_off));
        out.put_u16_le(0);
        out.put_u32_le(len32(self.input.len()));
        out.put_u32_le(self.additional_information);
        out.put_u32_le(self.flags);
        self.file_id.encode(out);
        out.put_slice(&self.input);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryInfoResponse {
    pub buffer: Vec<u8>,
}

impl QueryInfoResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        encode_output_buffer(out, &self.buffer);
    }
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        Ok(QueryInfoResponse {
            buffer: decode_output_buffer(msg)?.to_vec(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetInfoRequest {
    pub info_type: u8,
    pub file_info_class: u8,
    pub buffer: Vec<u8>,
    pub additional_information: u32,
    pub file_id: FileId,
}

impl SetInfoRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, SET_REQ_SIZE, SET_REQ_FIXED, "set info structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, info_type) = le_u8(i)?;
        let (i, file_info_class) = le_u8(i)?;
        let (i, buf_len) = le_u32(i)?;
        let (i, buf_off) = le_u16(i)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, additional_information) = le_u32(i)?;
        let (_, file_id) = take_file_id(i)?;
        let buffer =
            request_buffer(msg, SET_REQ_FIXED, buf_off as usize, buf_len as usize)?.to_vec();
        Ok(SetInfoRequest {
            info_type,
            file_info_class,
            buffer,
            additional_information,
            file_id,
        })
    }

    /// Appends the request body (for tests and clients).
    pub fn encode(&self, out: &mut BytesMut) {
        let off = out.len() + SET_REQ_FIXED;
        out.put_u16_le(SET_REQ_SIZE);
        out.put_u8(self.info_type);
        out.put_u8(self.file_info_class);
        out.put_u32_le(len32(self.buffer.len()));
        out.put_u16_le(off16(off));
        out.put_u16_le(0);
        out.put_u32_le(self.additional_information);
        self.file_id.encode(out);
        out.put_slice(&self.buffer);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetInfoResponse;

impl SetInfoResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(SET_RESP_SIZE);
    }
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        request_body(msg, SET_RESP_SIZE, 2, "set info response structure size")?;
        Ok(SetInfoResponse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn hdr() -> BytesMut {
        let mut b = BytesMut::new();
        b.resize(HEADER_LEN, 0);
        b
    }

    fn fid() -> impl Strategy<Value = FileId> {
        (any::<u64>(), any::<u64>()).prop_map(|(persistent, volatile)| FileId {
            persistent,
            volatile,
        })
    }

    proptest! {
        #[test]
        fn query_info_request_round_trip(t in any::<u8>(), c in any::<u8>(), obl in any::<u32>(),
                input in vec(any::<u8>(), 0..200), ai in any::<u32>(), fl in any::<u32>(), file_id in fid()) {
            let r = QueryInfoRequest { info_type: t, file_info_class: c, output_buffer_length: obl, input,
                additional_information: ai, flags: fl, file_id };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(QueryInfoRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn query_info_response_round_trip(buffer in vec(any::<u8>(), 0..300)) {
            let r = QueryInfoResponse { buffer };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(u16::from_le_bytes([b[66], b[67]]), 0x48);
            prop_assert!(b.len() >= HEADER_LEN + 9);
            prop_assert_eq!(QueryInfoResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn set_info_request_round_trip(t in any::<u8>(), c in any::<u8>(), buffer in vec(any::<u8>(), 0..200),
                ai in any::<u32>(), file_id in fid()) {
            let r = SetInfoRequest { info_type: t, file_info_class: c, buffer, additional_information: ai, file_id };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(SetInfoRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn info_decoders_never_panic(data in vec(any::<u8>(), 0..200)) {
            let _ = QueryInfoRequest::decode(&data);
            let _ = SetInfoRequest::decode(&data);
            let _ = QueryInfoResponse::decode(&data);
            let _ = SetInfoResponse::decode(&data);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&41u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = QueryInfoRequest::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&33u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = SetInfoRequest::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&9u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = QueryInfoResponse::decode(&m);
        }
    }

    #[test]
    fn set_info_response_round_trip() {
        let mut b = hdr();
        SetInfoResponse.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN + 2);
        assert_eq!(SetInfoResponse::decode(&b), Ok(SetInfoResponse));
    }

    #[test]
    fn rejects_buffer_outside_or_overlapping() {
        let r = SetInfoRequest {
            buffer: vec![1, 2, 3, 4],
            ..Default::default()
        };
        let mut b = hdr();
        r.encode(&mut b);
        // Length past the end.
        b[HEADER_LEN + 4] = 5;
        assert!(SetInfoRequest::decode(&b).is_err());
        b[HEADER_LEN + 4] = 4;
        // Offset into the fixed part.
        b[HEADER_LEN + 8] = 0x50;
        assert_eq!(
            SetInfoRequest::decode(&b),
            Err(WireError::Invalid("buffer overlaps fixed part"))
        );
    }
}
