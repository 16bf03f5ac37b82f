//! SESSION_SETUP (MS-SMB2 2.2.5, 2.2.6) and LOGOFF (2.2.7, 2.2.8).

use super::simple::{checked_body, size4_message};
use super::{slice_at, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64, le_u8};

/// SessionSetupRequest.Flags.
pub const SESSION_FLAG_BINDING: u8 = 0x01;

/// SessionSetupResponse.SessionFlags.
pub const SESSION_FLAG_IS_GUEST: u16 = 0x0001;
pub const SESSION_FLAG_IS_NULL: u16 = 0x0002;
pub const SESSION_FLAG_ENCRYPT_DATA: u16 = 0x0004;

fn u16_len(len: usize) -> u16 {
    u16::try_from(len).expect("security buffer longer than 65535 bytes")
}

/// SMB2 SESSION_SETUP Request (MS-SMB2 2.2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSetupRequest {
    /// SESSION_FLAG_BINDING (3.x only).
    pub flags: u8,
    /// SMB2_NEGOTIATE_SIGNING_* bits.
    pub security_mode: u8,
    pub capabilities: u32,
    pub channel: u32,
    pub previous_session_id: u64,
    /// The GSS-API token.
    pub security_buffer: Vec<u8>,
}

impl SessionSetupRequest {
    pub const STRUCTURE_SIZE: u16 = 25;
    const FIXED: usize = 24;

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, flags) = le_u8(i)?;
        let (i, security_mode) = le_u8(i)?;
        let (i, capabilities) = le_u32(i)?;
        let (i, channel) = le_u32(i)?;
        let (i, off) = le_u16(i)?;
        let (i, len) = le_u16(i)?;
        let (_, previous_session_id) = le_u64(i)?;
        let security_buffer = slice_at(msg, off.into(), len.into())?.to_vec();
        Ok(SessionSetupRequest {
            flags,
            security_mode,
            capabilities,
            channel,
            previous_session_id,
            security_buffer,
        })
    }

    /// # Panics
    /// If the security buffer is longer than 65535 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u8(self.flags);
        out.put_u8(self.security_mode);
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.channel);
        out.put_u16_le(u16_len(start + Self::FIXED));
        out.put_u16_le(u16_len(self.security_buffer.len()));
        out.put_u64_le(self.previous_session_id);
        out.put_slice(&self.security_buffer);
    }
}

/// SMB2 SESSION_SETUP Response (MS-SMB2 2.2.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSetupResponse {
    /// SESSION_FLAG_IS_GUEST / IS_NULL / ENCRYPT_DATA.
    pub session_flags: u16,
    pub security_buffer: Vec<u8>,
}

impl SessionSetupResponse {
    pub const STRUCTURE_SIZE: u16 = 9;
    const FIXED: usize = 8;

    /// # Panics
    /// If the security buffer is longer than 65535 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(self.session_flags);
        out.put_u16_le(u16_len(start + Self::FIXED));
        out.put_u16_le(u16_len(self.security_buffer.len()));
        out.put_slice(&self.security_buffer);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, session_flags) = le_u16(i)?;
        let (i, off) = le_u16(i)?;
        let (_, len) = le_u16(i)?;
        let security_buffer = slice_at(msg, off.into(), len.into())?.to_vec();
        Ok(SessionSetupResponse {
            session_flags,
            security_buffer,
        })
    }
}

size4_message!(
    /// SMB2 LOGOFF Request (MS-SMB2 2.2.7).
    LogoffRequest
);
size4_message!(
    /// SMB2 LOGOFF Response (MS-SMB2 2.2.8).
    LogoffResponse
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::simple::tests::{msg, with_header};
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_round_trip(flags in any::<u8>(), sm in any::<u8>(), caps in any::<u32>(),
                              ch in any::<u32>(), prev in any::<u64>(), sb in vec(any::<u8>(), 0..300)) {
            let r = SessionSetupRequest { flags, security_mode: sm, capabilities: caps, channel: ch,
                                          previous_session_id: prev, security_buffer: sb };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(SessionSetupRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn response_round_trip(sf in any::<u16>(), sb in vec(any::<u8>(), 0..300)) {
            let r = SessionSetupResponse { session_flags: sf, security_buffer: sb };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(SessionSetupResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn never_panics(body in vec(any::<u8>(), 0..80)) {
            let m = msg(&body);
            let _ = SessionSetupRequest::decode(&m);
            let _ = SessionSetupResponse::decode(&m);
            let _ = LogoffRequest::decode(&m);
        }
    }

    #[test]
    fn security_buffer_outside_message() {
        let mut b = with_header();
        SessionSetupRequest {
            security_buffer: vec![1, 2, 3],
            ..Default::default()
        }
        .encode(&mut b);
        b.truncate(b.len() - 1);
        assert!(SessionSetupRequest::decode(&b).is_err());
        b[64] = 24;
        assert_eq!(
            SessionSetupRequest::decode(&b),
            Err(WireError::Invalid("structure size"))
        );
    }

    #[test]
    fn logoff() {
        let mut b = with_header();
        LogoffResponse.encode(&mut b);
        assert_eq!(&b[64..], &[4, 0, 0, 0]);
        assert_eq!(LogoffRequest::decode(&b).unwrap(), LogoffRequest);
    }
}
