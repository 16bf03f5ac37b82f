//! SMB2 TRANSFORM_HEADER (MS-SMB2 2.2.41) framing an encrypted message.

use super::header::TRANSFORM_PROTOCOL_ID;
use super::WireError;
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64};

pub const TRANSFORM_HEADER_LEN: usize = 52;
/// Offset of Nonce: the AEAD additional data runs from here to the end of the header.
pub const AAD_OFFSET: usize = 20;
pub const AAD_LEN: usize = TRANSFORM_HEADER_LEN - AAD_OFFSET;

/// Flags (3.1.1) / EncryptionAlgorithm (3.0, 3.0.2): the only defined value.
pub const TRANSFORM_FLAG_ENCRYPTED: u16 = 0x0001;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransformHeader {
    /// The AEAD tag.
    pub signature: [u8; 16],
    /// 11 bytes used for CCM, 12 for GCM; the rest is zero.
    pub nonce: [u8; 16],
    pub original_message_size: u32,
    /// Flags/EncryptionAlgorithm; must be TRANSFORM_FLAG_ENCRYPTED (checked by the caller).
    pub flags: u16,
    pub session_id: u64,
}

impl TransformHeader {
    /// Splits an encrypted message into its header and the encrypted payload.
    /// OriginalMessageSize must equal the payload length (AEAD ciphers do
    /// not pad).
    pub fn decode(buf: &[u8]) -> Result<(TransformHeader, &[u8]), WireError> {
        if buf.len() < TRANSFORM_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if buf[0..4] != TRANSFORM_PROTOCOL_ID {
            return Err(WireError::Invalid("transform protocol id"));
        }
        let mut signature = [0u8; 16];
        signature.copy_from_slice(&buf[4..20]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&buf[20..36]);
        let i = &buf[36..];
        let (i, original_message_size) = le_u32(i)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, flags) = le_u16(i)?;
        let (payload, session_id) = le_u64(i)?;
        if original_message_size as usize != payload.len() {
            return Err(WireError::Invalid("OriginalMessageSize"));
        }
        Ok((
            TransformHeader {
                signature,
                nonce,
                original_message_size,
                flags,
                session_id,
            },
            payload,
        ))
    }

    /// Appends the 52-byte header.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&TRANSFORM_PROTOCOL_ID);
        out.put_slice(&self.signature);
        out.put_slice(&self.aad());
    }

    /// The 32 bytes from Nonce through SessionId: the AEAD additional data.
    pub fn aad(&self) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        a[0..16].copy_from_slice(&self.nonce);
        a[16..20].copy_from_slice(&self.original_message_size.to_le_bytes());
        // 20..22 Reserved stays zero.
        a[22..24].copy_from_slice(&self.flags.to_le_bytes());
        a[24..32].copy_from_slice(&self.session_id.to_le_bytes());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(sig in any::<[u8; 16]>(), nonce in any::<[u8; 16]>(), flags in any::<u16>(),
                      sid in any::<u64>(), payload in vec(any::<u8>(), 0..100)) {
            let h = TransformHeader { signature: sig, nonce, original_message_size: payload.len() as u32,
                                      flags, session_id: sid };
            let mut b = BytesMut::new();
            h.encode(&mut b);
            prop_assert_eq!(b.len(), TRANSFORM_HEADER_LEN);
            prop_assert_eq!(&b[AAD_OFFSET..], &h.aad()[..]);
            b.extend_from_slice(&payload);
            let (d, p) = TransformHeader::decode(&b).unwrap();
            prop_assert_eq!(d, h);
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn never_panics(buf in vec(any::<u8>(), 0..80)) {
            let _ = TransformHeader::decode(&buf);
        }
    }

    #[test]
    fn rejects_bad_input() {
        let h = TransformHeader {
            original_message_size: 4,
            flags: TRANSFORM_FLAG_ENCRYPTED,
            ..Default::default()
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(
            TransformHeader::decode(&b),
            Err(WireError::Invalid("OriginalMessageSize"))
        );
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert!(TransformHeader::decode(&b).is_ok());
        b[0] = 0xFE;
        assert!(TransformHeader::decode(&b).is_err());
        assert_eq!(TransformHeader::decode(&b[..51]), Err(WireError::Truncated));
    }
}
