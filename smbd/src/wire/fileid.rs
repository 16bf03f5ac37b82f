//! SMB2_FILEID (MS-SMB2 2.2.14.1): the 16-byte handle of an open.

use super::WireError;
use bytes::{BufMut, BytesMut};
use nom::number::complete::le_u64;
use nom::IResult;

/// Length of an encoded [`FileId`].
pub const FILE_ID_LEN: usize = 16;

/// An SMB2 file id: Persistent then Volatile, both little-endian u64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    pub persistent: u64,
    pub volatile: u64,
}

impl FileId {
    /// All bits set: "the FileId of the previous operation" in a related
    /// compound chain (MS-SMB2 3.3.5.2.7.2).
    pub const ANY: FileId = FileId {
        persistent: u64::MAX,
        volatile: u64::MAX,
    };

    pub fn is_any(&self) -> bool {
        *self == FileId::ANY
    }

    /// nom parser for use inside message decoders.
    pub fn parse(i: &[u8]) -> IResult<&[u8], FileId> {
        let (i, persistent) = le_u64(i)?;
        let (i, volatile) = le_u64(i)?;
        Ok((
            i,
            FileId {
                persistent,
                volatile,
            },
        ))
    }

    /// Decodes the first 16 bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<FileId, WireError> {
        Ok(FileId::parse(b)?.1)
    }

    /// Appends the 16 encoded bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.persistent);
        out.put_u64_le(self.volatile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(p in any::<u64>(), v in any::<u64>()) {
            let f = FileId { persistent: p, volatile: v };
            let mut b = BytesMut::new();
            f.encode(&mut b);
            prop_assert_eq!(b.len(), FILE_ID_LEN);
            prop_assert_eq!(FileId::decode(&b).unwrap(), f);
        }
    }

    #[test]
    fn any_and_short() {
        assert!(FileId::ANY.is_any());
        assert!(!FileId::default().is_any());
        assert_eq!(FileId::decode(&[0u8; 15]), Err(WireError::Truncated));
        assert_eq!(FileId::decode(&[0xFF; 16]).unwrap(), FileId::ANY);
    }
}
