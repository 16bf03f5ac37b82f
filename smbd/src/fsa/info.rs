//! File information classes for QUERY_INFO (MS-FSCC 2.4, MS-FSA 2.1.5.12,
//! MS-SMB2 3.3.5.20.1). Pure encoders: no I/O, never panics.

use bytes::BufMut;

use super::types::{access, attr, options, FileMeta};
use crate::wire::{utf16le, NtStatus};

/// FileInformationClass values handled here (MS-FSCC 2.4).
pub mod class {
    pub const BASIC: u8 = 4;
    pub const STANDARD: u8 = 5;
    pub const INTERNAL: u8 = 6;
    pub const EA: u8 = 7;
    pub const ACCESS: u8 = 8;
    pub const NAME: u8 = 9;
    pub const POSITION: u8 = 14;
    pub const FULL_EA: u8 = 15;
    pub const MODE: u8 = 16;
    pub const ALIGNMENT: u8 = 17;
    pub const ALL: u8 = 18;
    pub const ALTERNATE_NAME: u8 = 21;
    pub const STREAM: u8 = 22;
    pub const COMPRESSION: u8 = 28;
    pub const NETWORK_OPEN: u8 = 34;
    pub const ATTRIBUTE_TAG: u8 = 35;
    pub const NORMALIZED_NAME: u8 = 48;
    pub const ID: u8 = 59;
}

/// What QUERY_INFO needs to know about one open.
#[derive(Debug, Clone)]
pub struct OpenView<'a> {
    pub meta: &'a FileMeta,
    /// Share-relative path with backslashes, without a leading backslash
    /// ("" for the share root). A leading backslash is tolerated.
    pub name: &'a str,
    /// Open.CurrentByteOffset. MS-SMB2 3.3.5.20.1 says an SMB2 server SHOULD
    /// report 0; the caller decides what it passes.
    pub position: u64,
    /// FILE_MODE bits from the create options.
    pub mode: u32,
    /// Granted access mask (generic bits already mapped).
    pub access: u32,
    pub delete_pending: bool,
    pub ea_size: u32,
    /// Volume serial number for FileIdInformation.
    pub volume_serial: u64,
}

/// FILE_MODE bits reported by FileModeInformation (MS-FSCC 2.4.31).
pub const MODE_BITS: u32 = options::WRITE_THROUGH
    | options::SEQUENTIAL_ONLY
    | options::NO_INTERMEDIATE_BUFFERING
    | options::SYNCHRONOUS_IO_ALERT
    | options::SYNCHRONOUS_IO_NONALERT
    | options::DELETE_ON_CLOSE;

/// Attributes as reported on the wire: DIRECTORY for directories, NORMAL
/// when nothing else is set (MS-FSA 2.1.5.12).
pub fn wire_attributes(meta: &FileMeta) -> u32 {
    let mut a = meta.attributes;
    if meta.is_dir() {
        a |= attr::DIRECTORY;
        a &= !attr::NORMAL;
    }
    if a & !attr::NORMAL != 0 {
        a &= !attr::NORMAL;
    } else {
        a = attr::NORMAL;
    }
    a
}

/// EndOfFile as reported: 0 for directories.
pub fn wire_eof(meta: &FileMeta) -> u64 {
    if meta.is_dir() {
        0
    } else {
        meta.size
    }
}

/// AllocationSize as reported: 0 for directories.
pub fn wire_alloc(meta: &FileMeta) -> u64 {
    if meta.is_dir() {
        0
    } else {
        meta.allocation
    }
}

fn put_times(out: &mut Vec<u8>, m: &FileMeta) {
    out.put_u64_le(m.creation_time);
    out.put_u64_le(m.last_access_time);
    out.put_u64_le(m.last_write_time);
    out.put_u64_le(m.change_time);
}

fn basic(out: &mut Vec<u8>, m: &FileMeta) {
    put_times(out, m);
    out.put_u32_le(wire_attributes(m));
    out.put_u32_le(0);
}

fn standard(out: &mut Vec<u8>, v: &OpenView) {
    let m = v.meta;
    out.put_u64_le(wire_alloc(m));
    out.put_u64_le(wire_eof(m));
    // Directories have one link as on NTFS; a pending delete removes one.
    let mut links = if m.is_dir() {
        1
    } else {
        u32::try_from(m.nlink).unwrap_or(u32::MAX)
    };
    if v.delete_pending {
        links = links.saturating_sub(1);
    }
    out.put_u32_le(links);
    out.put_u8(u8::from(v.delete_pending));
    out.put_u8(u8::from(m.is_dir()));
    out.put_u16_le(0);
}

/// Full share-relative name with a single leading backslash ("\\" for the root).
fn full_name(name: &str) -> String {
    let trimmed = name.trim_start_matches('\\');
    format!("\\{trimmed}")
}

fn name_info(out: &mut Vec<u8>, name: &str) {
    let n = utf16le(name);
    out.put_u32_le(u32::try_from(n.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&n);
}

/// Fixed part of each class; a buffer smaller than this is INFO_LENGTH_MISMATCH.
fn fixed_len(class: u8) -> Option<usize> {
    Some(match class {
        class::BASIC => 40,
        class::STANDARD => 24,
        class::INTERNAL => 8,
        class::EA => 4,
        class::ACCESS => 4,
        class::NAME => 4,
        class::POSITION => 8,
        class::MODE => 4,
        class::ALIGNMENT => 4,
        // All and Stream: the minimum Windows enforces (smbtorture qfile_buffercheck).
        class::ALL => 104,
        class::STREAM => 32,
        class::ALTERNATE_NAME => 8,
        class::COMPRESSION => 16,
        class::NETWORK_OPEN => 56,
        class::ATTRIBUTE_TAG => 8,
        class::NORMALIZED_NAME => 4,
        class::ID => 24,
        _ => return None,
    })
}

/// Query-capable classes documented in MS-FSCC 2.4 that we do not implement:
/// MS-SMB2 3.3.5.20.1 says NOT_SUPPORTED for these (pipe classes, quota).
const KNOWN_UNSUPPORTED: &[u8] = &[23, 24, 25, 32];

/// Encodes a file information class.
///
/// Returns the bytes and whether they were truncated (the caller then answers
/// STATUS_BUFFER_OVERFLOW with these bytes). Errors:
/// - INVALID_INFO_CLASS for classes we do not know or that cannot be queried,
///   NOT_SUPPORTED for documented query classes we do not implement;
/// - ACCESS_DENIED when the open lacks FILE_READ_ATTRIBUTES for Basic, All,
///   NetworkOpen and AttributeTag (MS-SMB2 3.3.5.20.1), or FILE_READ_EA for FullEa;
/// - INFO_LENGTH_MISMATCH when `max_len` cannot hold the fixed part;
/// - NO_EAS_ON_FILE for FileFullEaInformation (EAs are not stored by this layer;
///   a caller that supports EAs must answer class 15 itself);
/// - OBJECT_NAME_NOT_FOUND for FileAlternateNameInformation (no 8.3 names).
pub fn query_file_info(
    class: u8,
    v: &OpenView,
    max_len: usize,
) -> Result<(Vec<u8>, bool), NtStatus> {
    let needs_read_attr = matches!(
        class,
        class::BASIC | class::ALL | class::NETWORK_OPEN | class::ATTRIBUTE_TAG
    );
    if class == class::FULL_EA {
        if v.access & access::FILE_READ_EA == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        return Err(NtStatus::NO_EAS_ON_FILE);
    }
    let Some(fixed) = fixed_len(class) else {
        if KNOWN_UNSUPPORTED.contains(&class) {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        return Err(NtStatus::INVALID_INFO_CLASS);
    };
    if needs_read_attr && v.access & access::FILE_READ_ATTRIBUTES == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if max_len < fixed {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    let m = v.meta;
    let mut out = Vec::with_capacity(fixed + 64);
    match class {
        class::BASIC => basic(&mut out, m),
        class::STANDARD => standard(&mut out, v),
        class::INTERNAL => out.put_u64_le(m.file_id),
        class::EA => out.put_u32_le(v.ea_size),
        class::ACCESS => out.put_u32_le(v.access),
        class::NAME => name_info(&mut out, &full_name(v.name)),
        class::POSITION => out.put_u64_le(v.position),
        class::ALTERNATE_NAME => {
            let base = v.name.rsplit('\\').next().unwrap_or("");
            name_info(&mut out, &short_name(base))
        }
        class::MODE => out.put_u32_le(v.mode & MODE_BITS),
        // FILE_BYTE_ALIGNMENT: no alignment requirement.
        class::ALIGNMENT => out.put_u32_le(0),
        class::ALL => {
            basic(&mut out, m);
            standard(&mut out, v);
            out.put_u64_le(m.file_id);
            out.put_u32_le(v.ea_size);
            out.put_u32_le(v.access);
            out.put_u64_le(v.position);
            out.put_u32_le(v.mode & MODE_BITS);
            out.put_u32_le(0);
            name_info(&mut out, &full_name(v.name));
        }
        class::STREAM => return Ok(stream_info(m, max_len)),
        class::COMPRESSION => {
            out.put_u64_le(wire_eof(m));
            out.put_u16_le(0); // COMPRESSION_FORMAT_NONE
            out.put_u8(0);
            out.put_u8(0);
            out.put_u8(0);
            out.put_slice(&[0; 3]);
        }
        class::NETWORK_OPEN => {
            put_times(&mut out, m);
            out.put_u64_le(wire_alloc(m));
            out.put_u64_le(wire_eof(m));
            out.put_u32_le(wire_attributes(m));
            out.put_u32_le(0);
        }
        class::ATTRIBUTE_TAG => {
            out.put_u32_le(wire_attributes(m));
            out.put_u32_le(0); // no reparse tag
        }
        class::NORMALIZED_NAME => {
            // Share-relative, without a leading backslash; "" for the root.
            name_info(&mut out, v.name.trim_start_matches('\\'))
        }
        class::ID => {
            out.put_u64_le(v.volume_serial);
            out.put_u64_le(m.file_id);
            out.put_u64_le(0);
        }
        _ => return Err(NtStatus::INVALID_INFO_CLASS),
    }
    Ok(truncate(out, max_len))
}

/// The 8.3 name of a file (MS-FSCC 2.1.5.2.1): the name itself, upper-cased,
/// when it already fits; otherwise up to six leading characters, "~1" and up
/// to three extension characters. The share root has none.
pub fn short_name(long: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c);
    let (base, ext) = match long.rfind('.') {
        Some(i) if i > 0 => (&long[..i], &long[i + 1..]),
        _ => (long, ""),
    };
    let fits = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && base.chars().all(valid)
        && ext.chars().all(valid);
    if fits {
        return long.to_ascii_uppercase();
    }
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .filter(|c| valid(*c))
            .take(n)
            .collect::<String>()
            .to_ascii_uppercase()
    };
    let mut b = clean(base, 6);
    if b.is_empty() {
        b.push('_');
    }
    let e = clean(ext, 3);
    if e.is_empty() {
        format!("{b}~1")
    } else {
        format!("{b}~1.{e}")
    }
}

fn truncate(mut out: Vec<u8>, max_len: usize) -> (Vec<u8>, bool) {
    if out.len() > max_len {
        out.truncate(max_len);
        (out, true)
    } else {
        (out, false)
    }
}

/// FileStreamInformation: one "::$DATA" entry for non-directories, none for
/// directories. Only complete entries are returned (MS-FSA 2.1.5.12.29).
fn stream_info(m: &FileMeta, max_len: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    if m.is_dir() {
        return (out, false);
    }
    let name = utf16le("::$DATA");
    if 24 + name.len() > max_len {
        return (out, true);
    }
    out.put_u32_le(0);
    out.put_u32_le(name.len() as u32);
    out.put_u64_le(m.size);
    out.put_u64_le(m.allocation);
    out.extend_from_slice(&name);
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("bufsize.txt"), "BUFSIZE.TXT");
        assert_eq!(short_name("a very long name.text"), "AVERYL~1.TEX");
        assert_eq!(short_name("noext"), "NOEXT");
        assert_eq!(short_name(".hidden"), "HIDDEN~1");
    }

    fn file() -> FileMeta {
        FileMeta {
            dev: 1,
            ino: 2,
            mode: 0o100644,
            nlink: 2,
            uid: 1000,
            gid: 1000,
            size: 1234,
            allocation: 4096,
            creation_time: 1,
            last_access_time: 2,
            last_write_time: 3,
            change_time: 4,
            attributes: attr::ARCHIVE,
            file_id: 0x1122_3344_5566_7788,
        }
    }

    fn dir() -> FileMeta {
        FileMeta {
            mode: 0o040755,
            attributes: attr::DIRECTORY,
            ..file()
        }
    }

    fn view(m: &FileMeta) -> OpenView<'_> {
        OpenView {
            meta: m,
            name: "dir\\file.txt",
            position: 7,
            mode: options::SYNCHRONOUS_IO_NONALERT | options::NON_DIRECTORY_FILE,
            access: access::FILE_ALL_ACCESS,
            delete_pending: false,
            ea_size: 0,
            volume_serial: 0xAABB,
        }
    }

    fn u32at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn basic_info() {
        let m = file();
        let (b, ov) = query_file_info(class::BASIC, &view(&m), 40).unwrap();
        assert!(!ov);
        assert_eq!(b.len(), 40);
        assert_eq!(u64at(&b, 0), 1);
        assert_eq!(u64at(&b, 24), 4);
        assert_eq!(u32at(&b, 32), attr::ARCHIVE);
        assert_eq!(
            query_file_info(class::BASIC, &view(&m), 39),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
    }

    #[test]
    fn access_denied_without_read_attributes() {
        let m = file();
        let mut v = view(&m);
        v.access = access::FILE_READ_DATA;
        for c in [
            class::BASIC,
            class::ALL,
            class::NETWORK_OPEN,
            class::ATTRIBUTE_TAG,
        ] {
            assert_eq!(query_file_info(c, &v, 4096), Err(NtStatus::ACCESS_DENIED));
        }
        assert!(query_file_info(class::STANDARD, &v, 4096).is_ok());
    }

    #[test]
    fn standard_info_file_and_dir() {
        let m = file();
        let mut v = view(&m);
        v.delete_pending = true;
        let (b, _) = query_file_info(class::STANDARD, &v, 100).unwrap();
        assert_eq!(b.len(), 24);
        assert_eq!(u64at(&b, 0), 4096);
        assert_eq!(u64at(&b, 8), 1234);
        assert_eq!(u32at(&b, 16), 1);
        assert_eq!(b[20], 1);
        assert_eq!(b[21], 0);
        let d = dir();
        let (b, _) = query_file_info(class::STANDARD, &view(&d), 100).unwrap();
        assert_eq!(u64at(&b, 0), 0);
        assert_eq!(u64at(&b, 8), 0);
        assert_eq!(u32at(&b, 16), 1);
        assert_eq!(b[21], 1);
    }

    #[test]
    fn name_info_and_overflow() {
        let m = file();
        let (b, ov) = query_file_info(class::NAME, &view(&m), 1000).unwrap();
        assert!(!ov);
        let expect = utf16le("\\dir\\file.txt");
        assert_eq!(u32at(&b, 0) as usize, expect.len());
        assert_eq!(&b[4..], &expect[..]);
        let (b, ov) = query_file_info(class::NAME, &view(&m), 10).unwrap();
        assert!(ov);
        assert_eq!(b.len(), 10);
        // FileNameLength keeps the full length.
        assert_eq!(u32at(&b, 0) as usize, expect.len());
        assert_eq!(
            query_file_info(class::NAME, &view(&m), 3),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        let mut v = view(&m);
        v.name = "";
        let (b, _) = query_file_info(class::NAME, &v, 100).unwrap();
        assert_eq!(&b[4..], &utf16le("\\")[..]);
    }

    #[test]
    fn normalized_name() {
        let m = file();
        let (b, _) = query_file_info(class::NORMALIZED_NAME, &view(&m), 100).unwrap();
        assert_eq!(&b[4..], &utf16le("dir\\file.txt")[..]);
    }

    #[test]
    fn all_info_layout() {
        let m = file();
        let (b, ov) = query_file_info(class::ALL, &view(&m), 4096).unwrap();
        assert!(!ov);
        let name = utf16le("\\dir\\file.txt");
        assert_eq!(b.len(), 100 + name.len());
        assert_eq!(u64at(&b, 64), m.file_id);
        assert_eq!(u32at(&b, 72), 0);
        assert_eq!(u32at(&b, 76), access::FILE_ALL_ACCESS);
        assert_eq!(u64at(&b, 80), 7);
        assert_eq!(u32at(&b, 88), options::SYNCHRONOUS_IO_NONALERT);
        assert_eq!(u32at(&b, 92), 0);
        assert_eq!(u32at(&b, 96) as usize, name.len());
        let (b, ov) = query_file_info(class::ALL, &view(&m), 105).unwrap();
        assert!(ov);
        assert_eq!(b.len(), 105);
        assert_eq!(
            query_file_info(class::ALL, &view(&m), 103),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
    }

    #[test]
    fn stream_info_entries() {
        let m = file();
        let (b, ov) = query_file_info(class::STREAM, &view(&m), 4096).unwrap();
        assert!(!ov);
        assert_eq!(u32at(&b, 0), 0);
        assert_eq!(u32at(&b, 4), 14);
        assert_eq!(u64at(&b, 8), 1234);
        assert_eq!(u64at(&b, 16), 4096);
        assert_eq!(&b[24..], &utf16le("::$DATA")[..]);
        let (b, ov) = query_file_info(class::STREAM, &view(&m), 33).unwrap();
        assert!(ov);
        assert!(b.is_empty());
        let d = dir();
        let (b, ov) = query_file_info(class::STREAM, &view(&d), 4096).unwrap();
        assert!(!ov);
        assert!(b.is_empty());
    }

    #[test]
    fn fixed_classes() {
        let m = file();
        let v = view(&m);
        let (b, _) = query_file_info(class::INTERNAL, &v, 8).unwrap();
        assert_eq!(u64at(&b, 0), m.file_id);
        let (b, _) = query_file_info(class::POSITION, &v, 8).unwrap();
        assert_eq!(u64at(&b, 0), 7);
        let (b, _) = query_file_info(class::NETWORK_OPEN, &v, 56).unwrap();
        assert_eq!(b.len(), 56);
        assert_eq!(u64at(&b, 32), 4096);
        assert_eq!(u64at(&b, 40), 1234);
        assert_eq!(u32at(&b, 48), attr::ARCHIVE);
        let (b, _) = query_file_info(class::ID, &v, 24).unwrap();
        assert_eq!(u64at(&b, 0), 0xAABB);
        assert_eq!(u64at(&b, 8), m.file_id);
        assert_eq!(u64at(&b, 16), 0);
        let (b, _) = query_file_info(class::COMPRESSION, &v, 16).unwrap();
        assert_eq!(b.len(), 16);
        let (b, _) = query_file_info(class::ATTRIBUTE_TAG, &v, 8).unwrap();
        assert_eq!(u32at(&b, 0), attr::ARCHIVE);
        let (b, _) = query_file_info(class::ALIGNMENT, &v, 4).unwrap();
        assert_eq!(b, vec![0; 4]);
    }

    #[test]
    fn errors() {
        let m = file();
        let v = view(&m);
        assert_eq!(
            query_file_info(class::ALTERNATE_NAME, &v, 7),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        assert_eq!(
            query_file_info(class::FULL_EA, &v, 100),
            Err(NtStatus::NO_EAS_ON_FILE)
        );
        assert_eq!(
            query_file_info(200, &v, 100),
            Err(NtStatus::INVALID_INFO_CLASS)
        );
        // Set-only class.
        assert_eq!(
            query_file_info(20, &v, 100),
            Err(NtStatus::INVALID_INFO_CLASS)
        );
        assert_eq!(query_file_info(24, &v, 100), Err(NtStatus::NOT_SUPPORTED));
        for c in 0..=255u8 {
            let _ = query_file_info(c, &v, 0);
            let _ = query_file_info(c, &v, 13);
        }
    }

    #[test]
    fn attributes_normalised() {
        let mut m = file();
        m.attributes = 0;
        assert_eq!(wire_attributes(&m), attr::NORMAL);
        m.attributes = attr::NORMAL | attr::HIDDEN;
        assert_eq!(wire_attributes(&m), attr::HIDDEN);
        let mut d = dir();
        d.attributes = 0;
        assert_eq!(wire_attributes(&d), attr::DIRECTORY);
    }
}
