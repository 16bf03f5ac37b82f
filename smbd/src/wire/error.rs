//! SMB2 ERROR Response (MS-SMB2 2.2.2) and 3.1.1 error contexts (2.2.2.1).

use super::simple::checked_body;
use super::{slice_at, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u32, le_u8};

/// ErrorId values (MS-SMB2 2.2.2.1).
pub const ERROR_ID_DEFAULT: u32 = 0x0000_0000;
pub const ERROR_ID_SHARE_REDIRECT: u32 = 0x7264_5253;

/// One SMB2 ERROR Context (3.1.1 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    pub error_id: u32,
    pub data: Vec<u8>,
}

/// SMB2 ERROR Response (MS-SMB2 2.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Nonzero only for 3.1.1, when `error_data` is an array of error contexts.
    pub error_context_count: u8,
    /// ErrorData, ByteCount bytes. Empty for most errors.
    pub error_data: Vec<u8>,
}

impl ErrorResponse {
    pub const STRUCTURE_SIZE: u16 = 9;
    const FIXED: usize = 8;

    /// The usual error body: no error data.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The STATUS_BUFFER_TOO_SMALL body carrying the required buffer size:
    /// a bare u32 before 3.1.1, one default error context in 3.1.1.
    pub fn buffer_too_small(required: u32, smb311: bool) -> Self {
        if smb311 {
            Self::from_contexts(&[ErrorContext {
                error_id: ERROR_ID_DEFAULT,
                data: required.to_le_bytes().to_vec(),
            }])
        } else {
            ErrorResponse {
                error_context_count: 0,
                error_data: required.to_le_bytes().to_vec(),
            }
        }
    }

    /// Builds ErrorData from 3.1.1 error contexts, each 8-byte aligned.
    ///
    /// # Panics
    /// If there are more than 255 contexts.
    pub fn from_contexts(contexts: &[ErrorContext]) -> Self {
        let mut d = Vec::new();
        for c in contexts {
            // ErrorData starts 8-aligned (header 64 + fixed 8), so aligning
            // within it aligns within the message.
            d.resize(d.len().next_multiple_of(8), 0);
            d.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
            d.extend_from_slice(&c.error_id.to_le_bytes());
            d.extend_from_slice(&c.data);
        }
        ErrorResponse {
            error_context_count: u8::try_from(contexts.len()).expect("too many error contexts"),
            error_data: d,
        }
    }

    /// Parses `error_data` as `error_context_count` error contexts.
    pub fn contexts(&self) -> Result<Vec<ErrorContext>, WireError> {
        let d = &self.error_data;
        let mut out = Vec::new();
        let mut pos = 0usize;
        for n in 0..self.error_context_count {
            if n > 0 {
                pos = pos.next_multiple_of(8);
            }
            let hdr = slice_at(d, pos, 8)?;
            let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let error_id = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            let data = slice_at(d, pos + 8, len)?.to_vec();
            out.push(ErrorContext { error_id, data });
            pos += 8 + len;
        }
        Ok(out)
    }

    /// Appends the body. Empty ErrorData is sent as one zero byte with
    /// ByteCount 0, as Windows does (StructureSize 9 counts that byte).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u8(self.error_context_count);
        out.put_u8(0);
        out.put_u32_le(self.error_data.len() as u32);
        if self.error_data.is_empty() {
            out.put_u8(0);
        } else {
            out.put_slice(&self.error_data);
        }
    }

    /// Decodes the body; the padding byte of an empty ErrorData is optional.
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, error_context_count) = le_u8(i)?;
        let (i, _reserved) = le_u8(i)?;
        let (_, byte_count) = le_u32(i)?;
        let error_data = slice_at(msg, HEADER_LEN + Self::FIXED, byte_count as usize)?.to_vec();
        Ok(ErrorResponse {
            error_context_count,
            error_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::simple::tests::{msg, with_header};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ctx() -> impl Strategy<Value = ErrorContext> {
        (any::<u32>(), vec(any::<u8>(), 0..20))
            .prop_map(|(error_id, data)| ErrorContext { error_id, data })
    }

    proptest! {
        #[test]
        fn round_trip(count in any::<u8>(), data in vec(any::<u8>(), 0..100)) {
            let r = ErrorResponse { error_context_count: count, error_data: data };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(ErrorResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn contexts_round_trip(ctxs in vec(ctx(), 0..5)) {
            let r = ErrorResponse::from_contexts(&ctxs);
            let mut b = with_header();
            r.encode(&mut b);
            let d = ErrorResponse::decode(&b).unwrap();
            prop_assert_eq!(d.contexts().unwrap(), ctxs);
        }

        #[test]
        fn never_panics(body in vec(any::<u8>(), 0..60)) {
            if let Ok(r) = ErrorResponse::decode(&msg(&body)) {
                let _ = r.contexts();
            }
        }
    }

    #[test]
    fn empty_has_one_byte() {
        let mut b = with_header();
        ErrorResponse::empty().encode(&mut b);
        assert_eq!(&b[64..], &[9, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ErrorResponse::decode(&b).unwrap(), ErrorResponse::empty());
        // Without the padding byte still decodes.
        assert_eq!(
            ErrorResponse::decode(&b[..72]).unwrap(),
            ErrorResponse::empty()
        );
    }

    #[test]
    fn buffer_too_small() {
        let mut b = with_header();
        ErrorResponse::buffer_too_small(0x1234, false).encode(&mut b);
        assert_eq!(&b[64..], &[9, 0, 0, 0, 4, 0, 0, 0, 0x34, 0x12, 0, 0]);
        let mut b = with_header();
        ErrorResponse::buffer_too_small(0x1234, true).encode(&mut b);
        assert_eq!(
            &b[64..],
            &[9, 0, 1, 0, 12, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x12, 0, 0]
        );
    }

    #[test]
    fn byte_count_past_end() {
        let m = msg(&[9, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]);
        assert!(ErrorResponse::decode(&m).is_err());
    }
}
