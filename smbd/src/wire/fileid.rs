//! SMB2_FILEID (MS-SMB2 2.2.14.1): a persistent and a volatile 64-bit half.

use super::WireError;
use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileId {
    pub persistent: u64,
    pub volatile: u64,
}

impl FileId {
    /// The "any / last opened" file id used by related compound requests.
    pub const ANY: FileId = FileId {
        persistent: u64::MAX,
        volatile: u64::MAX,
    };

    /// Decodes 16 bytes (persistent then volatile, little-endian) at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<FileId, WireError> {
        let b = b.get(..16).ok_or(WireError::Truncated)?;
        let mut p = [0u8; 8];
        let mut v = [0u8; 8];
        p.copy_from_slice(&b[..8]);
        v.copy_from_slice(&b[8..16]);
        Ok(FileId {
            persistent: u64::from_le_bytes(p),
            volatile: u64::from_le_bytes(v),
        })
    }

    /// Appends the 16-byte encoding to `out`.
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
        fn fileid_round_trip(p in any::<u64>(), v in any::<u64>()) {
            let f = FileId { persistent: p, volatile: v };
            let mut b = BytesMut::new();
            f.encode(&mut b);
            prop_assert_eq!(b.len(), 16);
            prop_assert_eq!(FileId::decode(&b).unwrap(), f);
        }
    }

    #[test]
    fn short_is_truncated() {
        assert_eq!(FileId::decode(&[0u8; 15]), Err(WireError::Truncated));
    }
}
