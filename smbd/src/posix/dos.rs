//! DOS attributes, creation time and an explicitly set change time, which
//! Linux does not keep, stored in the "user.holdfast.dos" xattr; and the
//! FileMeta built from statx plus that.
//!
//! Linux cannot set ctime, so a ChangeTime set over SMB is stored with a
//! mark: the wall-clock time of storing it plus [`CHANGE_SLACK`]. It is
//! reported while the real ctime stays at or below the mark, i.e. until the
//! file changes again (by us, NFS or local users). A change within the slack
//! after the set goes unnoticed; that is the price of not needing a second
//! xattr write (which would itself move ctime).

use nix::libc;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use kmod_interface::statx::{statx_fd, Statx};
use kmod_interface::{times, xattr};

use super::share::{as_root, current_uid};
use crate::fsa::types::{attr, nt_now, nt_to_unix, unix_to_nt, FileMeta};

pub const DOS_XATTR: &str = "user.holdfast.dos";
const VERSION: u8 = 1;
const LEN: usize = 13;
const LEN_CHANGE: usize = 29;
/// Covers the kernel's coarse ctime clock and the xattr write itself (NT units: 20 ms).
pub const CHANGE_SLACK: u64 = 200_000;

/// Contents of the DOS xattr: version u8 (1), attributes u32 LE, creation
/// u64 LE (NT time), then optionally change_time u64 LE and change_mark u64
/// LE (appended, so older readers still accept the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DosInfo {
    pub attributes: u32,
    pub creation_time: u64,
    /// Explicitly set ChangeTime; 0 for none.
    pub change_time: u64,
    /// `change_time` holds while ctime (as NT time) is at most this.
    pub change_mark: u64,
}

impl DosInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN_CHANGE);
        b.push(VERSION);
        b.extend_from_slice(&self.attributes.to_le_bytes());
        b.extend_from_slice(&self.creation_time.to_le_bytes());
        if self.change_time != 0 {
            b.extend_from_slice(&self.change_time.to_le_bytes());
            b.extend_from_slice(&self.change_mark.to_le_bytes());
        }
        b
    }

    /// `None` for unknown versions or short values; longer values (a future
    /// version that only appends) are accepted.
    pub fn decode(b: &[u8]) -> Option<DosInfo> {
        if b.len() < LEN || b[0] != VERSION {
            return None;
        }
        let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok());
        let (change_time, change_mark) = match (u64_at(13), u64_at(21)) {
            (Some(c), Some(m)) => (u64::from_le_bytes(c), u64::from_le_bytes(m)),
            _ => (0, 0),
        };
        Some(DosInfo {
            attributes: u32::from_le_bytes(b[1..5].try_into().ok()?),
            creation_time: u64::from_le_bytes(b[5..13].try_into().ok()?),
            change_time,
            change_mark,
        })
    }
}

/// Errors meaning "this file cannot carry our xattr": treat as not stored.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::ENODATA)
    )
}

fn decode_opt(v: io::Result<Option<Vec<u8>>>) -> io::Result<Option<DosInfo>> {
    match v {
        Ok(v) => Ok(v.as_deref().and_then(DosInfo::decode)),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_eacces(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EACCES)
}

/// Reads the DOS xattr. Linux wants read permission for user.* xattrs, but
/// anyone who may stat a file may read its attributes, so EACCES retries as root.
pub fn read_dos(fd: BorrowedFd<'_>) -> io::Result<Option<DosInfo>> {
    match decode_opt(xattr::fget(fd, DOS_XATTR)) {
        Err(e) if is_eacces(&e) => as_root(|| decode_opt(xattr::fget(fd, DOS_XATTR))),
        r => r,
    }
}

/// [`read_dos`] for `dir/name` without following a final symlink.
pub(crate) fn read_dos_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Option<DosInfo>> {
    let get = || decode_opt(xattr::get_at(dir, name, DOS_XATTR));
    match get() {
        Err(e) if is_eacces(&e) => as_root(get),
        r => r,
    }
}

/// Writes the DOS xattr. Needs write permission, except that the owner may
/// always set attributes (as with chmod), e.g. on a read-only file.
pub fn write_dos(fd: BorrowedFd<'_>, info: &DosInfo) -> io::Result<()> {
    let v = info.encode();
    match xattr::fset(fd, DOS_XATTR, &v) {
        Err(e) if is_eacces(&e) && statx_fd(fd)?.uid == current_uid() => {
            as_root(|| xattr::fset(fd, DOS_XATTR, &v))
        }
        r => r,
    }
}

/// Builds FileMeta from statx and the stored DOS info.
pub fn meta_from(st: &Statx, dos: Option<DosInfo>) -> FileMeta {
    let nt = |(s, ns): (i64, u32)| unix_to_nt(s, ns);
    let is_dir = st.mode & libc::S_IFMT == libc::S_IFDIR;
    let creation_time = match dos {
        Some(d) if d.creation_time != 0 => d.creation_time,
        _ => match st.btime {
            Some(b) => nt(b),
            None => nt(st.mtime).min(nt(st.ctime)),
        },
    };
    let mut attributes = match dos {
        Some(d) => d.attributes & !(attr::DIRECTORY | attr::NORMAL),
        None if is_dir => 0,
        None => attr::ARCHIVE,
    };
    if is_dir {
        attributes |= attr::DIRECTORY;
    } else if attributes == 0 {
        attributes = attr::NORMAL;
    }
    FileMeta {
        dev: st.dev,
        ino: st.ino,
        mode: st.mode,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        size: st.size,
        allocation: st.blocks * 512,
        creation_time,
        last_access_time: nt(st.atime),
        last_write_time: nt(st.mtime),
        change_time: match dos {
            Some(d) if d.change_time != 0 && nt(st.ctime) <= d.change_mark => d.change_time,
            _ => nt(st.ctime),
        },
        attributes,
        file_id: st.ino,
    }
}

/// Full metadata of an open file (any fd, `O_PATH` included).
pub fn stat(fd: BorrowedFd<'_>) -> io::Result<FileMeta> {
    let st = statx_fd(fd)?;
    Ok(meta_from(&st, read_dos(fd)?))
}

/// Stored form of the current DOS info (what `stat` would report).
fn current_dos(fd: BorrowedFd<'_>) -> io::Result<DosInfo> {
    let st = statx_fd(fd)?;
    let stored = read_dos(fd)?;
    let m = meta_from(&st, stored);
    let stored = stored.unwrap_or_default();
    Ok(DosInfo {
        attributes: m.attributes & attr::SETTABLE,
        creation_time: m.creation_time,
        change_time: stored.change_time,
        change_mark: stored.change_mark,
    })
}

/// Replaces the settable DOS attributes (DIRECTORY/NORMAL and others are ignored).
pub fn set_attributes(fd: BorrowedFd<'_>, attrs: u32) -> io::Result<()> {
    let mut d = current_dos(fd)?;
    d.attributes = attrs & attr::SETTABLE;
    write_dos(fd, &d)
}

/// Sets NT times; `None` leaves one unchanged (callers map the protocol's 0
/// and -1/-2 to `None`). The change time goes to the xattr (see the module
/// comment), written last so that our own utimensat does not outdate it.
pub fn set_times(
    fd: BorrowedFd<'_>,
    creation: Option<u64>,
    access: Option<u64>,
    write: Option<u64>,
    change: Option<u64>,
) -> io::Result<()> {
    times::set_times(fd, access.map(nt_to_unix), write.map(nt_to_unix))?;
    if creation.is_some() || change.is_some() {
        let mut d = current_dos(fd)?;
        if let Some(c) = creation {
            d.creation_time = c;
        }
        if let Some(c) = change {
            d.change_time = c;
            d.change_mark = nt_now().saturating_add(CHANGE_SLACK);
        }
        write_dos(fd, &d)?;
    }
    Ok(())
}

/// DOS info for a file or directory being created now; `creation_time` is
/// the new file's mtime, so that a fresh file reports equal creation and
/// write times (clients compare them).
pub(crate) fn new_dos(attrs: u32, is_dir: bool, creation_time: u64) -> DosInfo {
    let mut attributes = attrs & attr::SETTABLE;
    if !is_dir {
        // MS-FSA: new files always get ARCHIVE.
        attributes |= attr::ARCHIVE;
    }
    DosInfo {
        attributes,
        creation_time,
        ..DosInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let d = DosInfo {
            attributes: attr::HIDDEN | attr::ARCHIVE,
            creation_time: 0x0123_4567_89ab_cdef,
            ..DosInfo::default()
        };
        let b = d.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b.len(), 13);
        assert_eq!(DosInfo::decode(&b), Some(d));
        let c = DosInfo {
            change_time: 5,
            change_mark: 6,
            ..d
        };
        assert_eq!(DosInfo::decode(&c.encode()), Some(c));
        assert_eq!(DosInfo::decode(&b[..12]), None);
        let mut v2 = b.to_vec();
        v2[0] = 2;
        assert_eq!(DosInfo::decode(&v2), None);
    }

    #[test]
    fn default_attributes() {
        let file = Statx {
            mode: libc::S_IFREG | 0o644,
            mtime: (100, 0),
            ctime: (50, 0),
            ..Statx::default()
        };
        let m = meta_from(&file, None);
        assert_eq!(m.attributes, attr::ARCHIVE);
        assert_eq!(m.creation_time, unix_to_nt(50, 0));
        let stored0 = DosInfo {
            attributes: 0,
            creation_time: 7,
            ..DosInfo::default()
        };
        let m = meta_from(&file, Some(stored0));
        assert_eq!(m.attributes, attr::NORMAL);
        assert_eq!(m.creation_time, 7);
        let dir = Statx {
            mode: libc::S_IFDIR | 0o755,
            btime: Some((10, 0)),
            ..Statx::default()
        };
        let m = meta_from(&dir, None);
        assert_eq!(m.attributes, attr::DIRECTORY);
        assert_eq!(m.creation_time, unix_to_nt(10, 0));
        let hidden = DosInfo {
            attributes: attr::HIDDEN,
            ..DosInfo::default()
        };
        assert_eq!(
            meta_from(&dir, Some(hidden)).attributes,
            attr::HIDDEN | attr::DIRECTORY
        );
    }

    #[test]
    fn explicit_change_time_until_ctime_moves() {
        let mark = unix_to_nt(1000, 0);
        let d = DosInfo {
            change_time: 42,
            change_mark: mark,
            ..DosInfo::default()
        };
        let at = |ctime| Statx {
            mode: libc::S_IFREG | 0o644,
            ctime,
            ..Statx::default()
        };
        assert_eq!(meta_from(&at((1000, 0)), Some(d)).change_time, 42);
        assert_eq!(
            meta_from(&at((1000, 100)), Some(d)).change_time,
            unix_to_nt(1000, 100)
        );
        assert_eq!(meta_from(&at((5, 0)), None).change_time, unix_to_nt(5, 0));
    }
}
