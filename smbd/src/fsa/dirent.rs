//! Directory enumeration entries for QUERY_DIRECTORY (MS-FSCC 2.4, MS-FSA
//! 2.1.5.6.3). Entries are 8-byte aligned, chained by NextEntryOffset; the
//! last entry's NextEntryOffset is 0 and it carries no trailing padding.

use bytes::BufMut;

use super::info::{wire_alloc, wire_attributes, wire_eof};
use super::types::FileMeta;
use crate::wire::utf16le;

/// Directory information classes (MS-SMB2 2.2.33).
pub mod class {
    pub const DIRECTORY: u8 = 1;
    pub const FULL_DIRECTORY: u8 = 2;
    pub const BOTH_DIRECTORY: u8 = 3;
    pub const NAMES: u8 = 12;
    pub const ID_BOTH_DIRECTORY: u8 = 37;
    pub const ID_FULL_DIRECTORY: u8 = 38;
    pub const ID_EXTD_DIRECTORY: u8 = 60;
}

/// Offset of FileName in each class, i.e. the size of the fixed part.
pub fn fixed_len(class: u8) -> Option<usize> {
    Some(match class {
        class::DIRECTORY => 64,
        class::FULL_DIRECTORY => 68,
        class::BOTH_DIRECTORY => 94,
        class::NAMES => 12,
        class::ID_BOTH_DIRECTORY => 104,
        class::ID_FULL_DIRECTORY => 80,
        class::ID_EXTD_DIRECTORY => 88,
        _ => return None,
    })
}

/// ShortNameLength, Reserved and the 24-byte ShortName field: the same 8.3
/// name FileAlternateNameInformation reports ("." and ".." have none).
fn put_short_name(b: &mut Vec<u8>, name: &str) {
    let short = if name == "." || name == ".." {
        Vec::new()
    } else {
        utf16le(&super::info::short_name(name))
    };
    let n = short.len().min(24);
    b.put_u8(n as u8);
    b.put_u8(0);
    b.extend_from_slice(&short[..n]);
    b.resize(b.len() + (24 - n), 0);
}

/// Whether QUERY_DIRECTORY supports this FileInformationClass.
pub fn dir_class_supported(class: u8) -> bool {
    fixed_len(class).is_some()
}

/// Builds the output buffer of one QUERY_DIRECTORY response.
#[derive(Debug, Clone)]
pub struct DirEncoder {
    class: u8,
    buf: Vec<u8>,
    max_len: usize,
    last_entry_offset: Option<usize>,
}

impl DirEncoder {
    /// `None` if the class is not supported.
    pub fn new(class: u8, max_len: usize) -> Option<Self> {
        dir_class_supported(class).then(|| DirEncoder {
            class,
            buf: Vec::new(),
            max_len,
            last_entry_offset: None,
        })
    }

    pub fn class(&self) -> u8 {
        self.class
    }

    pub fn is_empty(&self) -> bool {
        self.last_entry_offset.is_none()
    }

    /// Appends one entry. Returns false, leaving the buffer untouched, when it
    /// does not fit in `max_len`: the caller stops and keeps the entry for the
    /// next request.
    pub fn push(&mut self, name: &str, meta: &FileMeta, file_index: u32) -> bool {
        let Some(fixed) = fixed_len(self.class) else {
            return false;
        };
        let name16 = utf16le(name);
        let Ok(name_len) = u32::try_from(name16.len()) else {
            return false;
        };
        let start = match self.last_entry_offset {
            None => 0,
            Some(_) => match self.buf.len().checked_next_multiple_of(8) {
                Some(s) => s,
                None => return false,
            },
        };
        let Some(end) = start
            .checked_add(fixed)
            .and_then(|e| e.checked_add(name16.len()))
        else {
            return false;
        };
        if end > self.max_len {
            return false;
        }
        let Ok(delta) = u32::try_from(start - self.last_entry_offset.unwrap_or(0)) else {
            return false;
        };
        if let Some(prev) = self.last_entry_offset {
            self.buf[prev..prev + 4].copy_from_slice(&delta.to_le_bytes());
        }
        self.buf.resize(start, 0);
        let b = &mut self.buf;
        b.put_u32_le(0); // NextEntryOffset, patched by the next push
        b.put_u32_le(file_index);
        if self.class == class::NAMES {
            b.put_u32_le(name_len);
        } else {
            b.put_u64_le(meta.creation_time);
            b.put_u64_le(meta.last_access_time);
            b.put_u64_le(meta.last_write_time);
            b.put_u64_le(meta.change_time);
            b.put_u64_le(wire_eof(meta));
            b.put_u64_le(wire_alloc(meta));
            b.put_u32_le(wire_attributes(meta));
            b.put_u32_le(name_len);
            match self.class {
                class::FULL_DIRECTORY => b.put_u32_le(0), // EaSize
                class::BOTH_DIRECTORY => {
                    b.put_u32_le(0); // EaSize
                    put_short_name(b, name);
                }
                class::ID_BOTH_DIRECTORY => {
                    b.put_u32_le(0);
                    put_short_name(b, name);
                    b.put_u16_le(0); // Reserved2
                    b.put_u64_le(meta.file_id);
                }
                class::ID_FULL_DIRECTORY => {
                    b.put_u32_le(0); // EaSize
                    b.put_u32_le(0); // Reserved
                    b.put_u64_le(meta.file_id);
                }
                class::ID_EXTD_DIRECTORY => {
                    b.put_u32_le(0); // EaSize
                    b.put_u32_le(0); // ReparsePointTag
                    b.put_u64_le(meta.file_id); // FileId (128-bit)
                    b.put_u64_le(0);
                }
                _ => {}
            }
        }
        b.extend_from_slice(&name16);
        self.last_entry_offset = Some(start);
        true
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsa::types::attr;

    fn meta(dir: bool) -> FileMeta {
        FileMeta {
            mode: if dir { 0o040755 } else { 0o100644 },
            nlink: 1,
            size: 10,
            allocation: 4096,
            creation_time: 1,
            last_access_time: 2,
            last_write_time: 3,
            change_time: 4,
            attributes: if dir { attr::DIRECTORY } else { attr::ARCHIVE },
            file_id: 99,
            ..Default::default()
        }
    }
    fn u32at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn supported() {
        for c in [1, 2, 3, 12, 37, 38, 60] {
            assert!(dir_class_supported(c));
        }
        for c in [0, 4, 63, 80, 255] {
            assert!(!dir_class_supported(c));
            assert!(DirEncoder::new(c, 1000).is_none());
        }
    }

    #[test]
    fn chaining_and_alignment() {
        for c in [1u8, 2, 3, 12, 37, 38, 60] {
            let fixed = fixed_len(c).unwrap();
            let mut e = DirEncoder::new(c, 65536).unwrap();
            assert!(e.is_empty());
            assert!(e.push("a", &meta(false), 0));
            assert!(e.push("bcd", &meta(true), 0));
            assert!(e.push("x", &meta(false), 0));
            assert!(!e.is_empty());
            let b = e.finish();
            let first = u32at(&b, 0) as usize;
            assert_eq!(first, (fixed + 2).next_multiple_of(8), "class {c}");
            let second = first + u32at(&b, first) as usize;
            assert_eq!(second % 8, 0);
            assert_eq!(u32at(&b, second), 0);
            // Last entry has no padding.
            assert_eq!(b.len(), second + fixed + 2);
            let name_len_off = if c == 12 { 8 } else { 60 };
            assert_eq!(u32at(&b, first + name_len_off), 6);
            assert_eq!(&b[first + fixed..first + fixed + 6], &utf16le("bcd")[..]);
        }
    }

    #[test]
    fn entry_fields() {
        let mut e = DirEncoder::new(class::ID_BOTH_DIRECTORY, 4096).unwrap();
        assert!(e.push("d", &meta(true), 5));
        let b = e.finish();
        assert_eq!(u32at(&b, 4), 5);
        assert_eq!(u64at(&b, 8), 1);
        assert_eq!(u64at(&b, 40), 0); // directory EOF
        assert_eq!(u64at(&b, 48), 0); // directory allocation
        assert_eq!(u32at(&b, 56), attr::DIRECTORY);
        assert_eq!(b[68], 2); // ShortNameLength: "D"
        assert_eq!(&b[70..72], &utf16le("D")[..]);
        assert_eq!(u64at(&b, 96), 99);
        let mut e = DirEncoder::new(class::ID_EXTD_DIRECTORY, 4096).unwrap();
        assert!(e.push("f", &meta(false), 0));
        let b = e.finish();
        assert_eq!(u64at(&b, 40), 10);
        assert_eq!(u64at(&b, 48), 4096);
        assert_eq!(u64at(&b, 72), 99);
        assert_eq!(u64at(&b, 80), 0);
        let mut e = DirEncoder::new(class::ID_FULL_DIRECTORY, 4096).unwrap();
        assert!(e.push("f", &meta(false), 0));
        assert_eq!(u64at(&e.finish(), 72), 99);
    }

    #[test]
    fn does_not_fit() {
        let mut e = DirEncoder::new(class::DIRECTORY, 64 + 2).unwrap();
        assert!(!e.push("ab", &meta(false), 0));
        assert!(e.is_empty());
        assert!(e.push("a", &meta(false), 0));
        assert!(!e.push("b", &meta(false), 0));
        let b = e.finish();
        assert_eq!(b.len(), 66);
        assert_eq!(u32at(&b, 0), 0);

        // Exactly fits with alignment padding accounted for.
        let mut e = DirEncoder::new(class::NAMES, 16 + 12 + 2).unwrap();
        assert!(e.push("a", &meta(false), 0)); // 14 bytes, next at 16
        assert!(e.push("b", &meta(false), 0)); // 16 + 14 = 30
        assert!(!e.push("c", &meta(false), 0));
        assert_eq!(e.finish().len(), 30);

        let mut e = DirEncoder::new(class::NAMES, 0).unwrap();
        assert!(!e.push("", &meta(false), 0));
        assert!(e.finish().is_empty());
    }
}
