//! Fixed-size messages with no payload: ECHO (MS-SMB2 2.2.28/2.2.29),
//! FLUSH (2.2.17/2.2.18) and CANCEL (2.2.30), plus the helpers the other
//! StructureSize-4 messages (LOGOFF, TREE_DISCONNECT) share.

use super::{FileId, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32};

/// Returns the message body after its StructureSize field, checking that
/// StructureSize equals `size`.
pub(crate) fn checked_body(msg: &[u8], size: u16) -> Result<&[u8], WireError> {
    let body = msg.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
    let (rest, structure_size) = le_u16(body)?;
    if structure_size != size {
        return Err(WireError::Invalid("structure size"));
    }
    Ok(rest)
}

/// Decodes a body that is StructureSize 4 plus 2 reserved bytes.
pub(crate) fn decode_size4(msg: &[u8]) -> Result<(), WireError> {
    let rest = checked_body(msg, 4)?;
    let _reserved = le_u16(rest)?;
    Ok(())
}

/// Encodes a body that is StructureSize 4 plus 2 reserved bytes.
pub(crate) fn encode_size4(out: &mut BytesMut) {
    out.put_u16_le(4);
    out.put_u16_le(0);
}

macro_rules! size4_message {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
                crate::wire::simple::decode_size4(msg)?;
                Ok($name)
            }
            pub fn encode(&self, out: &mut BytesMut) {
                crate::wire::simple::encode_size4(out);
            }
        }
    };
}
pub(crate) use size4_message;

size4_message!(
    /// SMB2 ECHO Request (MS-SMB2 2.2.28).
    EchoRequest
);
size4_message!(
    /// SMB2 ECHO Response (MS-SMB2 2.2.29).
    EchoResponse
);
size4_message!(
    /// SMB2 CANCEL Request (MS-SMB2 2.2.30). It has no response.
    CancelRequest
);
size4_message!(
    /// SMB2 FLUSH Response (MS-SMB2 2.2.18).
    FlushResponse
);

/// SMB2 FLUSH Request (MS-SMB2 2.2.17).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushRequest {
    pub file_id: FileId,
}

impl FlushRequest {
    pub const STRUCTURE_SIZE: u16 = 24;

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, _reserved1) = le_u16(i)?;
        let (i, _reserved2) = le_u32(i)?;
        let (_, file_id) = FileId::parse(i)?;
        Ok(FlushRequest { file_id })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(0);
        out.put_u32_le(0);
        self.file_id.encode(out);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::Header;
    use proptest::prelude::*;

    /// A buffer holding a default 64-byte header, ready for a body.
    pub(crate) fn with_header() -> BytesMut {
        let mut b = BytesMut::new();
        Header::default().encode(&mut b);
        b
    }

    /// A message made of a default header and `body`.
    pub(crate) fn msg(body: &[u8]) -> Vec<u8> {
        let mut b = with_header();
        b.extend_from_slice(body);
        b.to_vec()
    }

    #[test]
    fn size4_round_trip() {
        let mut b = with_header();
        EchoRequest.encode(&mut b);
        assert_eq!(&b[64..], &[4, 0, 0, 0]);
        assert_eq!(EchoRequest::decode(&b).unwrap(), EchoRequest);
        assert_eq!(EchoResponse::decode(&b).unwrap(), EchoResponse);
        assert_eq!(CancelRequest::decode(&b).unwrap(), CancelRequest);
        assert_eq!(FlushResponse::decode(&b).unwrap(), FlushResponse);
        assert_eq!(
            EchoRequest::decode(&msg(&[5, 0, 0, 0])),
            Err(WireError::Invalid("structure size"))
        );
        assert_eq!(
            EchoRequest::decode(&msg(&[4, 0])),
            Err(WireError::Truncated)
        );
        assert_eq!(EchoRequest::decode(&[0u8; 10]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn flush_round_trip(p in any::<u64>(), v in any::<u64>()) {
            let r = FlushRequest { file_id: FileId { persistent: p, volatile: v } };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), 64 + 24);
            prop_assert_eq!(FlushRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..40)) {
            let m = msg(&body);
            let _ = FlushRequest::decode(&m);
            let _ = EchoRequest::decode(&m);
        }
    }
}
