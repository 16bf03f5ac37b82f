//! SMB2 READ and WRITE (MS-SMB2 2.2.19-2.2.22).
//!
//! Bulk data is never copied by this module: a write request yields the range
//! of its data inside the message, and a read response is written as a 16-byte
//! prefix (`ReadResponse::encode_header`) after which the caller appends the data.

use super::info::{len32, off16, request_body, request_buffer, take_file_id};
use super::{FileId, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64, le_u8};
use std::ops::Range;

/// READ request Flags.
pub mod read_flags {
    pub const READ_UNBUFFERED: u8 = 0x01;
    pub const REQUEST_COMPRESSED: u8 = 0x02;
}

/// READ response Flags (3.1.1).
pub const READFLAG_RESPONSE_RDMA_TRANSFORM: u32 = 0x0000_0001;

/// WRITE request Flags.
pub mod write_flags {
    pub const WRITE_THROUGH: u32 = 0x0000_0001;
    pub const WRITE_UNBUFFERED: u32 = 0x0000_0002;
}

/// Channel values (READ and WRITE).
pub mod channel {
    pub const NONE: u32 = 0x0000_0000;
    pub const RDMA_V1: u32 = 0x0000_0001;
    pub const RDMA_V1_INVALIDATE: u32 = 0x0000_0002;
    pub const RDMA_TRANSFORM: u32 = 0x0000_0003;
}

const RW_REQ_SIZE: u16 = 49;
/// Fixed part of READ and WRITE requests; the 1-byte Buffer may be absent.
const RW_REQ_FIXED: usize = 48;
const RW_RESP_SIZE: u16 = 17;
const RW_RESP_FIXED: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadRequest {
    pub padding: u8,
    pub flags: u8,
    pub length: u32,
    pub offset: u64,
    pub file_id: FileId,
    pub minimum_count: u32,
    pub channel: u32,
    pub remaining_bytes: u32,
    pub read_channel_info: Vec<u8>,
}

impl ReadRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, RW_REQ_SIZE, RW_REQ_FIXED, "read structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, padding) = le_u8(i)?;
        let (i, flags) = le_u8(i)?;
        let (i, length) = le_u32(i)?;
        let (i, offset) = le_u64(i)?;
        let (i, file_id) = take_file_id(i)?;
        let (i, minimum_count) = le_u32(i)?;
        let (i, channel) = le_u32(i)?;
        let (i, remaining_bytes) = le_u32(i)?;
        let (i, ci_off) = le_u16(i)?;
        let (_, ci_len) = le_u16(i)?;
        let read_channel_info =
            request_buffer(msg, RW_REQ_FIXED, ci_off as usize, ci_len as usize)?.to_vec();
        Ok(ReadRequest {
            padding,
            flags,
            length,
            offset,
            file_id,
            minimum_count,
            channel,
            remaining_bytes,
            read_channel_info,
        })
    }

    /// Appends the request body (for tests and clients); a zero byte stands for
    /// the Buffer when there is no channel info.
    pub fn encode(&self, out: &mut BytesMut) {
        let ci_off = if self.read_channel_info.is_empty() {
            0
        } else {
            out.len() + RW_REQ_FIXED
        };
        out.put_u16_le(RW_REQ_SIZE);
        out.put_u8(self.padding);
        out.put_u8(self.flags);
        out.put_u32_le(self.length);
        out.put_u64_le(self.offset);
        self.file_id.encode(out);
        out.put_u32_le(self.minimum_count);
        out.put_u32_le(self.channel);
        out.put_u32_le(self.remaining_bytes);
        out.put_u16_le(off16(ci_off));
        out.put_u16_le(u16::try_from(self.read_channel_info.len()).unwrap_or(0));
        if self.read_channel_info.is_empty() {
            out.put_u8(0);
        } else {
            out.put_slice(&self.read_channel_info);
        }
    }
}

/// A READ response; `data` is borrowed so that neither encoding nor decoding copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadResponse<'a> {
    pub data_remaining: u32,
    /// Flags (3.1.1) / Reserved2.
    pub flags: u32,
    pub data: &'a [u8],
}

impl<'a> ReadResponse<'a> {
    /// DataOffset of a standalone response: 64-byte header + 16-byte body prefix.
    pub const DATA_OFFSET: u8 = 0x50;

    /// Appends the 16-byte body prefix announcing `data_len` bytes of data,
    /// which the caller must append right after (e.g. by reading the file into
    /// `out`'s spare capacity). When `data_len == 0` a single pad byte is
    /// appended instead, so the body is StructureSize (17) long.
    pub fn encode_header(out: &mut BytesMut, data_len: u32, data_remaining: u32, flags: u32) {
        let off = u8::try_from(out.len() + RW_RESP_FIXED).unwrap_or(Self::DATA_OFFSET);
        out.put_u16_le(RW_RESP_SIZE);
        out.put_u8(off);
        out.put_u8(0);
        out.put_u32_le(data_len);
        out.put_u32_le(data_remaining);
        out.put_u32_le(flags);
        if data_len == 0 {
            out.put_u8(0);
        }
    }

    /// Appends prefix and data (one copy of the data, into `out`).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(RW_RESP_FIXED + self.data.len().max(1));
        Self::encode_header(out, len32(self.data.len()), self.data_remaining, self.flags);
        out.put_slice(self.data);
    }

    pub fn decode(msg: &'a [u8]) -> Result<Self, WireError> {
        let b = request_body(
            msg,
            RW_RESP_SIZE,
            RW_RESP_FIXED,
            "read response structure size",
        )?;
        let (i, _) = le_u16(b)?;
        let (i, off) = le_u8(i)?;
        let (i, _reserved) = le_u8(i)?;
        let (i, len) = le_u32(i)?;
        let (i, data_remaining) = le_u32(i)?;
        let (_, flags) = le_u32(i)?;
        let data = request_buffer(msg, RW_RESP_FIXED, off as usize, len as usize)?;
        Ok(ReadResponse {
            data_remaining,
            flags,
            data,
        })
    }
}

/// A WRITE request without its data; `decode` returns the data's range in the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteRequest {
    pub offset: u64,
    pub file_id: FileId,
    pub channel: u32,
    pub remaining_bytes: u32,
    pub write_channel_info: Vec<u8>,
    pub flags: u32,
}

impl WriteRequest {
    /// Decodes the request; the returned range (DataOffset..DataOffset+Length)
    /// lies within `msg` and after the fixed part. It is empty (0..0) when Length is 0.
    pub fn decode(msg: &[u8]) -> Result<(WriteRequest, Range<usize>), WireError> {
        let b = request_body(msg, RW_REQ_SIZE, RW_REQ_FIXED, "write structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, data_off) = le_u16(i)?;
        let (i, length) = le_u32(i)?;
        let (i, offset) = le_u64(i)?;
        let (i, file_id) = take_file_id(i)?;
        let (i, channel) = le_u32(i)?;
        let (i, remaining_bytes) = le_u32(i)?;
        let (i, ci_off) = le_u16(i)?;
        let (i, ci_len) = le_u16(i)?;
        let (_, flags) = le_u32(i)?;
        let write_channel_info =
            request_buffer(msg, RW_REQ_FIXED, ci_off as usize, ci_len as usize)?.to_vec();
        let range = if length == 0 {
            0..0
        } else {
            let start = data_off as usize;
            if start < HEADER_LEN + RW_REQ_FIXED {
                return Err(WireError::Invalid("buffer overlaps fixed part"));
            }
            let end = start
                .checked_add(length as usize)
                .ok_or(WireError::Invalid("offset overflow"))?;
            if end > msg.len() {
                return Err(WireError::Invalid("buffer outside message"));
            }
            start..end
        };
        Ok((
            WriteRequest {
                offset,
                file_id,
                channel,
                remaining_bytes,
                write_channel_info,
                flags,
            },
            range,
        ))
    }

    /// Appends the request body with `data` (for tests and clients). Data comes
    /// first at DataOffset 0x70, channel info after it.
    pub fn encode(&self, out: &mut BytesMut, data: &[u8]) {
        let data_off = out.len() + RW_REQ_FIXED;
        let ci_off = if self.write_channel_info.is_empty() {
            0
        } else {
            data_off + data.len()
        };
        out.put_u16_le(RW_REQ_SIZE);
        out.put_u16_le(off16(data_off));
        out.put_u32_le(len32(data.len()));
        out.put_u64_le(self.offset);
        self.file_id.encode(out);
        out.put_u32_le(self.channel);
        out.put_u32_le(self.remaining_bytes);
        out.put_u16_le(off16(ci_off));
        out.put_u16_le(u16::try_from(self.write_channel_info.len()).unwrap_or(0));
        out.put_u32_le(self.flags);
        out.put_slice(data);
        out.put_slice(&self.write_channel_info);
        if data.is_empty() && self.write_channel_info.is_empty() {
            out.put_u8(0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteResponse {
    pub count: u32,
    pub remaining: u32,
}

impl WriteResponse {
    /// Appends the body (WriteChannelInfo empty) plus one pad byte for the Buffer.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(RW_RESP_SIZE);
        out.put_u16_le(0);
        out.put_u32_le(self.count);
        out.put_u32_le(self.remaining);
        out.put_u16_le(0);
        out.put_u16_le(0);
        out.put_u8(0);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(
            msg,
            RW_RESP_SIZE,
            RW_RESP_FIXED,
            "write response structure size",
        )?;
        let (i, _) = le_u16(b)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, count) = le_u32(i)?;
        let (_, remaining) = le_u32(i)?;
        Ok(WriteResponse { count, remaining })
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
        fn read_request_round_trip(padding in any::<u8>(), flags in any::<u8>(), length in any::<u32>(),
                offset in any::<u64>(), file_id in fid(), minimum_count in any::<u32>(), channel in any::<u32>(),
                remaining_bytes in any::<u32>(), read_channel_info in vec(any::<u8>(), 0..64)) {
            let r = ReadRequest { padding, flags, length, offset, file_id, minimum_count, channel,
                remaining_bytes, read_channel_info };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(ReadRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn read_response_round_trip(data in vec(any::<u8>(), 0..600), rem in any::<u32>(), fl in any::<u32>()) {
            let r = ReadResponse { data_remaining: rem, flags: fl, data: &data };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b[HEADER_LEN + 2], ReadResponse::DATA_OFFSET);
            prop_assert_eq!(ReadResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn write_request_round_trip(offset in any::<u64>(), file_id in fid(), channel in any::<u32>(),
                remaining_bytes in any::<u32>(), wci in vec(any::<u8>(), 0..64), flags in any::<u32>(),
                data in vec(any::<u8>(), 0..600)) {
            let r = WriteRequest { offset, file_id, channel, remaining_bytes, write_channel_info: wci, flags };
            let mut b = hdr();
            r.encode(&mut b, &data);
            let (d, range) = WriteRequest::decode(&b).unwrap();
            prop_assert_eq!(d, r);
            prop_assert_eq!(&b[range], &data[..]);
        }

        #[test]
        fn write_response_round_trip(count in any::<u32>(), remaining in any::<u32>()) {
            let r = WriteResponse { count, remaining };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(WriteResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn rw_decoders_never_panic(data in vec(any::<u8>(), 0..200)) {
            let _ = ReadRequest::decode(&data);
            let _ = ReadResponse::decode(&data);
            let _ = WriteRequest::decode(&data);
            let _ = WriteResponse::decode(&data);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&49u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = ReadRequest::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&17u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = ReadResponse::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&49u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = WriteRequest::decode(&m);
        }
    }

    #[test]
    fn read_request_without_buffer_byte_is_accepted() {
        let r = ReadRequest {
            length: 4096,
            ..Default::default()
        };
        let mut b = hdr();
        r.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN + 49);
        assert_eq!(ReadRequest::decode(&b[..HEADER_LEN + 48]).unwrap(), r);
        assert_eq!(
            ReadRequest::decode(&b[..HEADER_LEN + 47]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn write_data_outside_message_rejected() {
        let mut b = hdr();
        WriteRequest::default().encode(&mut b, &[1, 2, 3]);
        let len_at = HEADER_LEN + 4;
        b[len_at] = 4;
        assert!(WriteRequest::decode(&b).is_err());
        b[len_at] = 3;
        b[HEADER_LEN + 2] = 0x60; // DataOffset inside the fixed part
        assert!(WriteRequest::decode(&b).is_err());
    }

    #[test]
    fn encode_header_then_append() {
        let mut b = hdr();
        ReadResponse::encode_header(&mut b, 3, 0, 0);
        b.put_slice(b"abc");
        let r = ReadResponse::decode(&b).unwrap();
        assert_eq!(r.data, b"abc");
        let mut e = hdr();
        ReadResponse::encode_header(&mut e, 0, 0, 0);
        assert_eq!(e.len(), HEADER_LEN + 17);
    }
}
