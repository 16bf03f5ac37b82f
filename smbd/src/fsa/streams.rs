//! Named alternate data streams (MS-FSA 2.1.5.1, MS-FSCC 2.1.5.3 and 2.4.44):
//! name rules, the share-mode identity of a stream, the byte semantics of a
//! stream's content and the FileStreamInformation encoding. Pure: no I/O.
//!
//! Storage (posix/streams.rs) keeps each stream in one extended attribute of
//! the base file, so a stream is limited to [`MAX_STREAM_SIZE`] bytes (the
//! largest single xattr value Linux allows, e.g. on tmpfs or XFS; btrfs and
//! ext4 without `ea_inode` hold less, about one tree node or block). Growing
//! past the limit is STATUS_DISK_FULL, what Windows answers when a volume has
//! no room left.

use bytes::BufMut;

use super::types::FileMeta;
use super::wildcard::{names_equal, simple_upper};
use crate::wire::{utf16le, NtStatus};

/// Extended attribute prefix; the stream name follows as the client created it.
pub const XATTR_PREFIX: &str = "user.holdfast.stream.";

/// Largest stream content: Linux caps one xattr value at 64 KiB.
pub const MAX_STREAM_SIZE: u64 = 65536;

/// Longest xattr name Linux accepts (XATTR_NAME_MAX), in bytes.
const XATTR_NAME_MAX: usize = 255;

/// Longest stream name, in UTF-16 code units (as for any NTFS name).
const MAX_NAME_UNITS: usize = 255;

/// Allocation granularity reported for streams.
const CLUSTER: u64 = 4096;

/// Checks a stream name (without ":$DATA"). Any character is allowed except
/// NUL, '/', '\\' and ':' (MS-FSCC 2.1.5.3); control characters and wildcards
/// are legal in stream names, unlike file names. A name whose xattr name would
/// not fit Linux's 255-byte limit is refused too, since it could not be stored.
pub fn validate_name(name: &str) -> Result<(), NtStatus> {
    if name.is_empty()
        || name.encode_utf16().count() > MAX_NAME_UNITS
        || name.contains(['\0', '/', '\\', ':'])
        || XATTR_PREFIX.len() + name.len() > XATTR_NAME_MAX
    {
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    Ok(())
}

/// The xattr that holds stream `name`.
pub fn xattr_name(name: &str) -> String {
    format!("{XATTR_PREFIX}{name}")
}

/// The stream stored in xattr `attr`, if it is one of ours.
pub fn name_from_xattr(attr: &str) -> Option<&str> {
    attr.strip_prefix(XATTR_PREFIX).filter(|n| !n.is_empty())
}

/// The stored spelling of `wanted` among `stored`: stream names compare
/// case-insensitively, like file names.
pub fn find<'a>(stored: &'a [String], wanted: &str) -> Option<&'a str> {
    stored
        .iter()
        .map(String::as_str)
        .find(|s| names_equal(s, wanted))
}

/// Share-mode identity of a stream within its file: 0 is the default data
/// stream; a named stream gets a hash of its upper-cased name (never 0), so
/// that "s" and "S" share one identity as they share one stream.
pub fn stream_id(name: Option<&str>) -> u64 {
    let Some(name) = name else { return 0 };
    // FNV-1a over the upper-cased UTF-16 units.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u16; 2];
    for c in name.chars().map(simple_upper) {
        for u in c.encode_utf16(&mut buf) {
            for b in u.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h.max(1)
}

/// AllocationSize reported for a stream of `size` bytes.
pub fn allocation(size: u64) -> u64 {
    size.div_ceil(CLUSTER) * CLUSTER
}

/// What an open of a stream reports: the base file's metadata (times,
/// attributes, file id) with the stream's sizes, and never a directory, since
/// a stream of a directory holds data.
pub fn stream_meta(base: &FileMeta, size: u64) -> FileMeta {
    FileMeta {
        size,
        allocation: allocation(size),
        mode: (base.mode & !0o170000) | 0o100000,
        ..base.clone()
    }
}

/// Up to `len` bytes of `content` from `offset` (empty past the end).
pub fn read_range(content: &[u8], offset: u64, len: usize) -> &[u8] {
    let Ok(start) = usize::try_from(offset) else {
        return &[];
    };
    if start >= content.len() {
        return &[];
    }
    let end = start.saturating_add(len).min(content.len());
    &content[start..end]
}

/// Writes `data` at `offset`, zero-filling any gap; DISK_FULL past the limit.
pub fn write_range(content: &mut Vec<u8>, offset: u64, data: &[u8]) -> Result<(), NtStatus> {
    let end = offset
        .checked_add(data.len() as u64)
        .filter(|&e| e <= MAX_STREAM_SIZE)
        .ok_or(NtStatus::DISK_FULL)?;
    // Both fit in MAX_STREAM_SIZE, hence in usize.
    let (start, end) = (offset as usize, end as usize);
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
    Ok(())
}

/// Sets a stream's end of file (truncate or zero-extend); DISK_FULL past the limit.
pub fn set_size(content: &mut Vec<u8>, size: u64) -> Result<(), NtStatus> {
    if size > MAX_STREAM_SIZE {
        return Err(NtStatus::DISK_FULL);
    }
    content.resize(size as usize, 0);
    Ok(())
}

/// One entry of FileStreamInformation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Stream name without colons or type ("" for the default stream).
    pub name: String,
    pub size: u64,
    pub allocation: u64,
}

/// Encodes FILE_STREAM_INFORMATION entries (MS-FSCC 2.4.44): each name is
/// ":name:$DATA" ("::$DATA" for the default stream), entries 8-byte aligned
/// and chained by NextEntryOffset. Only whole entries are returned; the bool
/// says the list was cut short (STATUS_BUFFER_OVERFLOW, MS-FSA 2.1.5.12.29).
pub fn encode_stream_info(entries: &[StreamEntry], max_len: usize) -> (Vec<u8>, bool) {
    let mut out: Vec<u8> = Vec::new();
    let mut last_start: Option<usize> = None;
    for e in entries {
        let name = utf16le(&format!(":{}:$DATA", e.name));
        let start = out.len().next_multiple_of(8);
        if start + 24 + name.len() > max_len {
            return (out, true);
        }
        out.resize(start, 0);
        if let Some(prev) = last_start {
            let next = (start - prev) as u32;
            out[prev..prev + 4].copy_from_slice(&next.to_le_bytes());
        }
        out.put_u32_le(0);
        out.put_u32_le(name.len() as u32);
        out.put_u64_le(e.size);
        out.put_u64_le(e.allocation);
        out.extend_from_slice(&name);
        last_start = Some(start);
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "s",
            "Stream One",
            "\u{5}Stream\n One",
            "?Stream*",
            "a\"<>|b",
        ] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
        }
        for bad in ["", "a:b", "a/b", "a\\b", "a\0b"] {
            assert_eq!(
                validate_name(bad),
                Err(NtStatus::OBJECT_NAME_INVALID),
                "{bad:?}"
            );
        }
        let longest = "x".repeat(255 - XATTR_PREFIX.len());
        validate_name(&longest).unwrap();
        assert!(validate_name(&format!("{longest}x")).is_err());
        assert_eq!(xattr_name("s"), "user.holdfast.stream.s");
        assert_eq!(name_from_xattr("user.holdfast.stream.s"), Some("s"));
        assert_eq!(name_from_xattr("user.holdfast.stream."), None);
        assert_eq!(name_from_xattr("user.holdfast.dos"), None);
    }

    #[test]
    fn case_insensitive_identity() {
        let stored = vec!["Second Stream".to_string(), "Ünï".to_string()];
        assert_eq!(find(&stored, "SECOND STREAM"), Some("Second Stream"));
        assert_eq!(find(&stored, "üNÏ"), Some("Ünï"));
        assert_eq!(find(&stored, "Second"), None);
        assert_eq!(stream_id(None), 0);
        assert_eq!(stream_id(Some("Abc")), stream_id(Some("aBC")));
        assert_ne!(stream_id(Some("abc")), stream_id(Some("abd")));
        assert_ne!(stream_id(Some("")), 0);
    }

    #[test]
    fn content() {
        let mut c = b"test data".to_vec();
        write_range(&mut c, 5, b"MORE DATA ").unwrap();
        assert_eq!(c, b"test MORE DATA ");
        assert_eq!(read_range(&c, 5, 4), b"MORE");
        assert_eq!(read_range(&c, 10, 100), b"DATA ");
        assert!(read_range(&c, 100, 1).is_empty());
        assert!(read_range(&c, u64::MAX, 1).is_empty());
        write_range(&mut c, 20, b"x").unwrap();
        assert_eq!(&c[15..], b"\0\0\0\0\0x");
        set_size(&mut c, 4).unwrap();
        assert_eq!(c, b"test");
        set_size(&mut c, MAX_STREAM_SIZE).unwrap();
        assert_eq!(c.len() as u64, MAX_STREAM_SIZE);
        assert_eq!(
            set_size(&mut c, MAX_STREAM_SIZE + 1),
            Err(NtStatus::DISK_FULL)
        );
        assert_eq!(
            write_range(&mut c, MAX_STREAM_SIZE, b"x"),
            Err(NtStatus::DISK_FULL)
        );
        assert_eq!(
            write_range(&mut c, u64::MAX, b"x"),
            Err(NtStatus::DISK_FULL)
        );
        assert_eq!(allocation(0), 0);
        assert_eq!(allocation(1), 4096);
        assert_eq!(allocation(8192), 8192);
    }

    fn entry(name: &str, size: u64) -> StreamEntry {
        StreamEntry {
            name: name.into(),
            size,
            allocation: allocation(size),
        }
    }

    #[test]
    fn stream_information() {
        let list = [entry("", 3), entry("foo", 0), entry("Second Stream", 13)];
        let (b, cut) = encode_stream_info(&list, 4096);
        assert!(!cut);
        // "::$DATA" = 7 units = 14 bytes: 24 + 14 = 38, next entry at 40.
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 14);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 3);
        assert_eq!(&b[24..38], utf16le("::$DATA").as_slice());
        // ":foo:$DATA" = 10 units: 24 + 20 = 44, next at 40 + 48 = 88.
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 48);
        assert_eq!(&b[64..84], utf16le(":foo:$DATA").as_slice());
        // The last entry ends the chain and is not padded.
        assert_eq!(u32::from_le_bytes(b[88..92].try_into().unwrap()), 0);
        assert_eq!(b.len(), 88 + 24 + utf16le(":Second Stream:$DATA").len());
        assert_eq!(&b[112..], utf16le(":Second Stream:$DATA").as_slice());

        // Only whole entries fit.
        let (b, cut) = encode_stream_info(&list, 87);
        assert!(cut);
        assert_eq!(b.len(), 84);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 0);
        let (b, cut) = encode_stream_info(&list, 83);
        assert!(cut);
        assert_eq!(b.len(), 38);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 0);
        let (b, cut) = encode_stream_info(&list, 10);
        assert!(cut && b.is_empty());
        // A directory without named streams lists nothing.
        assert_eq!(encode_stream_info(&[], 100), (Vec::new(), false));
    }
}
