//! Decoders for SET_INFO file information payloads (MS-FSCC 2.4, MS-FSA
//! 2.1.5.15, MS-SMB2 3.3.5.21.1). Every length is checked; nothing panics.
//!
//! Status rules:
//! - a buffer shorter than the class's structure: INFO_LENGTH_MISMATCH;
//! - a settable class documented in MS-FSCC that we do not decode here
//!   (FullEa 15, Pipe 23, ObjectId 29, Quota 32, ShortName 40,
//!   RenameInformationEx 65): NOT_SUPPORTED (a caller that supports EAs
//!   handles class 15 before calling this);
//! - query-only or undocumented classes: INVALID_INFO_CLASS;
//! - out-of-range values (negative offsets/sizes, times below -2, unknown
//!   mode/disposition flags): INVALID_PARAMETER.

use crate::wire::{from_utf16le, NtStatus};

use super::types::options;

/// SetInfo file information classes.
pub mod class {
    pub const BASIC: u8 = 4;
    pub const RENAME: u8 = 10;
    pub const LINK: u8 = 11;
    pub const DISPOSITION: u8 = 13;
    pub const POSITION: u8 = 14;
    pub const FULL_EA: u8 = 15;
    pub const MODE: u8 = 16;
    pub const ALLOCATION: u8 = 19;
    pub const END_OF_FILE: u8 = 20;
    pub const VALID_DATA_LENGTH: u8 = 39;
    pub const DISPOSITION_EX: u8 = 64;
}

/// FileDispositionInformationEx flags (MS-FSCC 2.4.12).
pub mod disposition_ex {
    pub const DELETE: u32 = 0x0000_0001;
    pub const POSIX_SEMANTICS: u32 = 0x0000_0002;
    pub const FORCE_IMAGE_SECTION_CHECK: u32 = 0x0000_0004;
    pub const ON_CLOSE: u32 = 0x0000_0008;
    pub const IGNORE_READONLY_ATTRIBUTE: u32 = 0x0000_0010;
    pub const VALID: u32 = 0x0000_001F;
}

/// What to do with one timestamp of FileBasicInformation (MS-FSA 2.1.5.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUpdate {
    /// 0: leave unchanged.
    Unchanged,
    /// -1: leave unchanged and stop automatic updates for this handle (we
    /// honour it for LastWriteTime; the others are left to Linux).
    Freeze,
    /// -2: resume automatic updates for this handle.
    Resume,
    /// A positive NT time to set.
    Set(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetFileInfo {
    Basic {
        creation: TimeUpdate,
        last_access: TimeUpdate,
        last_write: TimeUpdate,
        change: TimeUpdate,
        /// None when FileAttributes is 0 (don't change). Raw bits otherwise;
        /// the caller checks DIRECTORY/TEMPORARY against the file type.
        attributes: Option<u32>,
    },
    Rename {
        replace: bool,
        /// Non-zero RootDirectory as sent; SMB2 clients send 0.
        root_directory: u64,
        /// Target name as sent (share-relative, backslashes).
        name: String,
    },
    Link {
        replace: bool,
        root_directory: u64,
        name: String,
    },
    Disposition {
        delete: bool,
    },
    DispositionEx {
        flags: u32,
    },
    Position(u64),
    Mode(u32),
    Allocation(u64),
    EndOfFile(u64),
    ValidDataLength(u64),
}

fn get<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], NtStatus> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(NtStatus::INFO_LENGTH_MISMATCH)
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, NtStatus> {
    get::<4>(b, off).map(u32::from_le_bytes)
}

fn i64_at(b: &[u8], off: usize) -> Result<i64, NtStatus> {
    get::<8>(b, off).map(i64::from_le_bytes)
}

/// A LARGE_INTEGER offset or size: negative is INVALID_PARAMETER.
fn size_at(b: &[u8], off: usize) -> Result<u64, NtStatus> {
    u64::try_from(i64_at(b, off)?).map_err(|_| NtStatus::INVALID_PARAMETER)
}

fn time(v: i64) -> Result<TimeUpdate, NtStatus> {
    match v {
        0 => Ok(TimeUpdate::Unchanged),
        -1 => Ok(TimeUpdate::Freeze),
        -2 => Ok(TimeUpdate::Resume),
        v if v > 0 => Ok(TimeUpdate::Set(v as u64)),
        _ => Err(NtStatus::INVALID_PARAMETER),
    }
}

/// FILE_RENAME_INFORMATION_TYPE_2 / FILE_LINK_INFORMATION_TYPE_2:
/// ReplaceIfExists(1) Reserved(7) RootDirectory(8) FileNameLength(4) FileName.
/// We require the 20-byte fixed part plus FileNameLength bytes (Windows
/// clients pad to 24; we do not insist on it).
fn rename_like(buf: &[u8]) -> Result<(bool, u64, String), NtStatus> {
    if buf.len() < 20 {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    let replace = buf[0] != 0;
    let root = u64::from_le_bytes(get::<8>(buf, 8)?);
    let len = u32_at(buf, 16)? as usize;
    let raw = 20usize
        .checked_add(len)
        .and_then(|end| buf.get(20..end))
        .ok_or(NtStatus::INFO_LENGTH_MISMATCH)?;
    if len & 1 != 0 || len == 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let name = from_utf16le(raw).map_err(|_| NtStatus::OBJECT_NAME_INVALID)?;
    Ok((replace, root, name))
}

/// Decodes a SET_INFO payload of InfoType SMB2_0_INFO_FILE.
pub fn decode_set_file_info(class: u8, buf: &[u8]) -> Result<SetFileInfo, NtStatus> {
    match class {
        class::BASIC => {
            if buf.len() < 40 {
                return Err(NtStatus::INFO_LENGTH_MISMATCH);
            }
            let attrs = u32_at(buf, 32)?;
            Ok(SetFileInfo::Basic {
                creation: time(i64_at(buf, 0)?)?,
                last_access: time(i64_at(buf, 8)?)?,
                last_write: time(i64_at(buf, 16)?)?,
                change: time(i64_at(buf, 24)?)?,
                attributes: (attrs != 0).then_some(attrs),
            })
        }
        class::RENAME => {
            let (replace, root_directory, name) = rename_like(buf)?;
            Ok(SetFileInfo::Rename {
                replace,
                root_directory,
                name,
            })
        }
        class::LINK => {
            let (replace, root_directory, name) = rename_like(buf)?;
            Ok(SetFileInfo::Link {
                replace,
                root_directory,
                name,
            })
        }
        class::DISPOSITION => {
            let [b] = get::<1>(buf, 0)?;
            Ok(SetFileInfo::Disposition { delete: b != 0 })
        }
        class::DISPOSITION_EX => {
            let flags = u32_at(buf, 0)?;
            if flags & !disposition_ex::VALID != 0 {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            Ok(SetFileInfo::DispositionEx { flags })
        }
        class::POSITION => Ok(SetFileInfo::Position(size_at(buf, 0)?)),
        class::MODE => {
            let mode = u32_at(buf, 0)?;
            let valid = options::WRITE_THROUGH
                | options::SEQUENTIAL_ONLY
                | options::NO_INTERMEDIATE_BUFFERING
                | options::SYNCHRONOUS_IO_ALERT
                | options::SYNCHRONOUS_IO_NONALERT;
            let both_sync = options::SYNCHRONOUS_IO_ALERT | options::SYNCHRONOUS_IO_NONALERT;
            if mode & !valid != 0 || mode & both_sync == both_sync {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            Ok(SetFileInfo::Mode(mode))
        }
        class::ALLOCATION => Ok(SetFileInfo::Allocation(size_at(buf, 0)?)),
        class::END_OF_FILE => Ok(SetFileInfo::EndOfFile(size_at(buf, 0)?)),
        class::VALID_DATA_LENGTH => Ok(SetFileInfo::ValidDataLength(size_at(buf, 0)?)),
        class::FULL_EA | 23 | 29 | 32 | 40 | 65 => Err(NtStatus::NOT_SUPPORTED),
        _ => Err(NtStatus::INVALID_INFO_CLASS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::utf16le;

    fn basic(times: [i64; 4], attrs: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for t in times {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(&attrs.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    fn rename(replace: bool, root: u64, name: &str) -> Vec<u8> {
        let n = utf16le(name);
        let mut b = vec![u8::from(replace), 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&root.to_le_bytes());
        b.extend_from_slice(&(n.len() as u32).to_le_bytes());
        b.extend_from_slice(&n);
        b
    }

    #[test]
    fn basic_info() {
        let b = basic([0, -1, -2, 1234], 0x20);
        assert_eq!(
            decode_set_file_info(class::BASIC, &b),
            Ok(SetFileInfo::Basic {
                creation: TimeUpdate::Unchanged,
                last_access: TimeUpdate::Freeze,
                last_write: TimeUpdate::Resume,
                change: TimeUpdate::Set(1234),
                attributes: Some(0x20),
            })
        );
        let b = basic([0; 4], 0);
        assert!(matches!(
            decode_set_file_info(class::BASIC, &b),
            Ok(SetFileInfo::Basic {
                attributes: None,
                ..
            })
        ));
        assert_eq!(
            decode_set_file_info(class::BASIC, &basic([-3, 0, 0, 0], 0)),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            decode_set_file_info(class::BASIC, &b[..39]),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
    }

    #[test]
    fn rename_and_link() {
        let b = rename(true, 0, "dir\\new.txt");
        assert_eq!(
            decode_set_file_info(class::RENAME, &b),
            Ok(SetFileInfo::Rename {
                replace: true,
                root_directory: 0,
                name: "dir\\new.txt".into()
            })
        );
        assert_eq!(
            decode_set_file_info(class::LINK, &rename(false, 5, "x")),
            Ok(SetFileInfo::Link {
                replace: false,
                root_directory: 5,
                name: "x".into()
            })
        );
        // Padding after the name is ignored.
        let mut p = rename(false, 0, "x");
        p.extend_from_slice(&[0, 0]);
        assert!(decode_set_file_info(class::RENAME, &p).is_ok());
        // Name longer than the buffer.
        assert_eq!(
            decode_set_file_info(class::RENAME, &b[..b.len() - 1]),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        assert_eq!(
            decode_set_file_info(class::RENAME, &b[..19]),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        let mut odd = rename(false, 0, "ab");
        odd[16] = 3;
        assert_eq!(
            decode_set_file_info(class::RENAME, &odd),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let mut huge = rename(false, 0, "ab");
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_set_file_info(class::RENAME, &huge),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        let mut bad = rename(false, 0, "");
        bad[16] = 2;
        bad.extend_from_slice(&0xD800u16.to_le_bytes());
        assert_eq!(
            decode_set_file_info(class::RENAME, &bad),
            Err(NtStatus::OBJECT_NAME_INVALID)
        );
    }

    #[test]
    fn small_classes() {
        assert_eq!(
            decode_set_file_info(class::DISPOSITION, &[1]),
            Ok(SetFileInfo::Disposition { delete: true })
        );
        assert_eq!(
            decode_set_file_info(class::DISPOSITION, &[0]),
            Ok(SetFileInfo::Disposition { delete: false })
        );
        assert_eq!(
            decode_set_file_info(class::DISPOSITION, &[]),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        assert_eq!(
            decode_set_file_info(class::DISPOSITION_EX, &[3, 0, 0, 0]),
            Ok(SetFileInfo::DispositionEx { flags: 3 })
        );
        assert_eq!(
            decode_set_file_info(class::DISPOSITION_EX, &[0x20, 0, 0, 0]),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let v = 77u64.to_le_bytes();
        assert_eq!(
            decode_set_file_info(class::POSITION, &v),
            Ok(SetFileInfo::Position(77))
        );
        assert_eq!(
            decode_set_file_info(class::ALLOCATION, &v),
            Ok(SetFileInfo::Allocation(77))
        );
        assert_eq!(
            decode_set_file_info(class::END_OF_FILE, &v),
            Ok(SetFileInfo::EndOfFile(77))
        );
        assert_eq!(
            decode_set_file_info(class::VALID_DATA_LENGTH, &v),
            Ok(SetFileInfo::ValidDataLength(77))
        );
        assert_eq!(
            decode_set_file_info(class::END_OF_FILE, &(-1i64).to_le_bytes()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            decode_set_file_info(class::END_OF_FILE, &v[..7]),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
        assert_eq!(
            decode_set_file_info(class::MODE, &options::WRITE_THROUGH.to_le_bytes()),
            Ok(SetFileInfo::Mode(options::WRITE_THROUGH))
        );
        assert_eq!(
            decode_set_file_info(class::MODE, &options::DELETE_ON_CLOSE.to_le_bytes()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            decode_set_file_info(class::MODE, &0x30u32.to_le_bytes()),
            Err(NtStatus::INVALID_PARAMETER)
        );
    }

    #[test]
    fn unknown_and_unsupported() {
        assert_eq!(
            decode_set_file_info(class::FULL_EA, &[0; 64]),
            Err(NtStatus::NOT_SUPPORTED)
        );
        assert_eq!(
            decode_set_file_info(40, &[0; 64]),
            Err(NtStatus::NOT_SUPPORTED)
        );
        // Query-only classes.
        for c in [5, 6, 9, 18, 22, 34] {
            assert_eq!(
                decode_set_file_info(c, &[0; 64]),
                Err(NtStatus::INVALID_INFO_CLASS)
            );
        }
        assert_eq!(
            decode_set_file_info(200, &[]),
            Err(NtStatus::INVALID_INFO_CLASS)
        );
    }

    #[test]
    fn never_panics() {
        let big = rename(true, 0, "some\\name");
        for c in 0..=255u8 {
            for n in 0..big.len() {
                let _ = decode_set_file_info(c, &big[..n]);
            }
        }
    }
}
