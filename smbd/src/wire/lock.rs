//! SMB2 LOCK (MS-SMB2 2.2.26, 2.2.27).

use super::info::{request_body, take_file_id};
use super::{FileId, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64};

/// SMB2_LOCK_ELEMENT Flags.
pub mod flags {
    pub const SHARED: u32 = 0x0000_0001;
    pub const EXCLUSIVE: u32 = 0x0000_0002;
    pub const UNLOCK: u32 = 0x0000_0004;
    pub const FAIL_IMMEDIATELY: u32 = 0x0000_0010;
}

const REQ_SIZE: u16 = 48;
/// Fixed part before the lock array.
const REQ_FIXED: usize = 24;
const ELEMENT_LEN: usize = 24;
const RESP_SIZE: u16 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockElement {
    pub offset: u64,
    pub length: u64,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockRequest {
    /// Raw LockSequenceNumber (low 4 bits) / LockSequenceIndex (high 28 bits).
    pub lock_sequence: u32,
    pub file_id: FileId,
    /// At least one element.
    pub locks: Vec<LockElement>,
}

impl LockRequest {
    /// LockSequenceNumber (4 bits).
    pub fn lock_sequence_number(&self) -> u8 {
        (self.lock_sequence & 0xF) as u8
    }
    /// LockSequenceIndex (28 bits).
    pub fn lock_sequence_index(&self) -> u32 {
        self.lock_sequence >> 4
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, REQ_SIZE, REQ_FIXED, "lock structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, count) = le_u16(i)?;
        let (i, lock_sequence) = le_u32(i)?;
        let (_, file_id) = take_file_id(i)?;
        if count == 0 {
            return Err(WireError::Invalid("lock count zero"));
        }
        let arr_len = count as usize * ELEMENT_LEN;
        let mut i = b
            .get(REQ_FIXED..REQ_FIXED + arr_len)
            .ok_or(WireError::Truncated)?;
        let mut locks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (r, offset) = le_u64(i)?;
            let (r, length) = le_u64(r)?;
            let (r, flags) = le_u32(r)?;
            let (r, _reserved) = le_u32(r)?;
            i = r;
            locks.push(LockElement {
                offset,
                length,
                flags,
            });
        }
        Ok(LockRequest {
            lock_sequence,
            file_id,
            locks,
        })
    }

    /// Appends the request body (for tests and clients). At most 65535 locks are written.
    pub fn encode(&self, out: &mut BytesMut) {
        let n = self.locks.len().min(u16::MAX as usize);
        out.reserve(REQ_FIXED + n * ELEMENT_LEN);
        out.put_u16_le(REQ_SIZE);
        out.put_u16_le(n as u16);
        out.put_u32_le(self.lock_sequence);
        self.file_id.encode(out);
        for l in &self.locks[..n] {
            out.put_u64_le(l.offset);
            out.put_u64_le(l.length);
            out.put_u32_le(l.flags);
            out.put_u32_le(0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockResponse;

impl LockResponse {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(RESP_SIZE);
        out.put_u16_le(0);
    }
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        request_body(msg, RESP_SIZE, 4, "lock response structure size")?;
        Ok(LockResponse)
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
        fn lock_request_round_trip(seq in any::<u32>(), p in any::<u64>(), v in any::<u64>(),
                locks in vec((any::<u64>(), any::<u64>(), any::<u32>()), 1..20)) {
            let r = LockRequest { lock_sequence: seq, file_id: FileId { persistent: p, volatile: v },
                locks: locks.into_iter().map(|(offset, length, flags)| LockElement { offset, length, flags }).collect() };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 24 + 24 * r.locks.len());
            let d = LockRequest::decode(&b).unwrap();
            prop_assert_eq!(d.lock_sequence_number() as u32, seq & 0xF);
            prop_assert_eq!(d.lock_sequence_index(), seq >> 4);
            prop_assert_eq!(d, r);
        }

        #[test]
        fn lock_decode_never_panics(data in vec(any::<u8>(), 0..200)) {
            let _ = LockRequest::decode(&data);
            let _ = LockResponse::decode(&data);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&48u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = LockRequest::decode(&m);
        }
    }

    #[test]
    fn lock_response_round_trip() {
        let mut b = hdr();
        LockResponse.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN + 4);
        assert_eq!(LockResponse::decode(&b), Ok(LockResponse));
    }

    #[test]
    fn rejects_zero_count_and_short_array() {
        let r = LockRequest {
            locks: vec![LockElement::default(); 2],
            ..Default::default()
        };
        let mut b = hdr();
        r.encode(&mut b);
        assert_eq!(
            LockRequest::decode(&b[..b.len() - 1]),
            Err(WireError::Truncated)
        );
        b[HEADER_LEN + 2] = 0;
        assert_eq!(
            LockRequest::decode(&b),
            Err(WireError::Invalid("lock count zero"))
        );
        // A huge count with a short message must not allocate or panic.
        b[HEADER_LEN + 2] = 0xFF;
        b[HEADER_LEN + 3] = 0xFF;
        assert_eq!(LockRequest::decode(&b), Err(WireError::Truncated));
    }
}
