//! SMB2 CLOSE (MS-SMB2 2.2.15, 2.2.16).

use super::info::take_file_id;
use super::{FileId, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64};

/// SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB: return the attributes in the response.
pub const POSTQUERY_ATTRIB: u16 = 0x0001;

const REQ_SIZE: u16 = 24;
const RESP_SIZE: u16 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseRequest {
    pub flags: u16,
    pub file_id: FileId,
}

impl CloseRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = msg.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let (i, ss) = le_u16(b)?;
        if ss != REQ_SIZE {
            return Err(WireError::Invalid("close structure size"));
        }
        let (i, flags) = le_u16(i)?;
        let (i, _reserved) = le_u32(i)?;
        let (_, file_id) = take_file_id(i)?;
        Ok(CloseRequest { flags, file_id })
    }

    /// Appends the request body (for tests and clients).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(REQ_SIZE);
        out.put_u16_le(self.flags);
        out.put_u32_le(0);
        self.file_id.encode(out);
    }
}

/// With `flags == 0` all other fields must be zero (the caller's job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseResponse {
    pub flags: u16,
    pub creation_time: u64,
    pub last_access_time: u64,
    pub last_write_time: u64,
    pub change_time: u64,
    pub allocation_size: u64,
    pub end_of_file: u64,
    pub file_attributes: u32,
}

impl CloseResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(RESP_SIZE as usize);
        out.put_u16_le(RESP_SIZE);
        out.put_u16_le(self.flags);
        out.put_u32_le(0);
        out.put_u64_le(self.creation_time);
        out.put_u64_le(self.last_access_time);
        out.put_u64_le(self.last_write_time);
        out.put_u64_le(self.change_time);
        out.put_u64_le(self.allocation_size);
        out.put_u64_le(self.end_of_file);
        out.put_u32_le(self.file_attributes);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = msg.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let (i, ss) = le_u16(b)?;
        if ss != RESP_SIZE {
            return Err(WireError::Invalid("close response structure size"));
        }
        let (i, flags) = le_u16(i)?;
        let (i, _reserved) = le_u32(i)?;
        let (i, creation_time) = le_u64(i)?;
        let (i, last_access_time) = le_u64(i)?;
        let (i, last_write_time) = le_u64(i)?;
        let (i, change_time) = le_u64(i)?;
        let (i, allocation_size) = le_u64(i)?;
        let (i, end_of_file) = le_u64(i)?;
        let (_, file_attributes) = le_u32(i)?;
        Ok(CloseResponse {
            flags,
            creation_time,
            last_access_time,
            last_write_time,
            change_time,
            allocation_size,
            end_of_file,
            file_attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr() -> BytesMut {
        let mut b = BytesMut::new();
        b.resize(HEADER_LEN, 0);
        b
    }

    proptest! {
        #[test]
        fn close_request_round_trip(flags in any::<u16>(), p in any::<u64>(), v in any::<u64>()) {
            let r = CloseRequest { flags, file_id: FileId { persistent: p, volatile: v } };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 24);
            prop_assert_eq!(CloseRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn close_response_round_trip(flags in any::<u16>(), t in any::<[u64; 6]>(), a in any::<u32>()) {
            let r = CloseResponse { flags, creation_time: t[0], last_access_time: t[1], last_write_time: t[2],
                change_time: t[3], allocation_size: t[4], end_of_file: t[5], file_attributes: a };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 60);
            prop_assert_eq!(CloseResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn close_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = CloseRequest::decode(&data);
            let _ = CloseResponse::decode(&data);
        }
    }

    #[test]
    fn rejects_bad_size_and_truncation() {
        let mut b = hdr();
        CloseRequest::default().encode(&mut b);
        assert!(CloseRequest::decode(&b[..b.len() - 1]).is_err());
        b[HEADER_LEN] = 25;
        assert_eq!(
            CloseRequest::decode(&b),
            Err(WireError::Invalid("close structure size"))
        );
    }
}
