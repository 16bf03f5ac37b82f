//! statx(2): like fstat, plus birth time, and it works on `O_PATH` fds.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use crate::{cstr, cvt};

/// The fields of `struct statx` Holdfast uses. Times are (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statx {
    pub dev: u64,
    pub ino: u64,
    /// Mode including the file type bits.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub blksize: u32,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// `None` when the file system does not record birth time.
    pub btime: Option<(i64, u32)>,
    pub mnt_id: u64,
    /// STATX_ATTR_* bits (immutable, append, ...).
    pub attributes: u64,
}

const MASK: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME | libc::STATX_MNT_ID;

fn ts(t: libc::statx_timestamp) -> (i64, u32) {
    (t.tv_sec, t.tv_nsec)
}

fn call(dir: i32, name: &std::ffi::CStr, flags: i32) -> io::Result<Statx> {
    let mut st = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is NUL-terminated and `st` points to writable memory of the
    // right type; statx only writes into it.
    cvt(unsafe {
        libc::statx(
            dir,
            name.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            MASK,
            st.as_mut_ptr(),
        )
    })?;
    // SAFETY: zero-initialised and then filled by a successful statx.
    let st = unsafe { st.assume_init() };
    Ok(Statx {
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mode: u32::from(st.stx_mode),
        nlink: u64::from(st.stx_nlink),
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        blocks: st.stx_blocks,
        blksize: st.stx_blksize,
        atime: ts(st.stx_atime),
        mtime: ts(st.stx_mtime),
        ctime: ts(st.stx_ctime),
        btime: (st.stx_mask & libc::STATX_BTIME != 0).then(|| ts(st.stx_btime)),
        mnt_id: st.stx_mnt_id,
        attributes: st.stx_attributes,
    })
}

/// Stats the file `fd` refers to (any fd, `O_PATH` included).
pub fn statx_fd(fd: BorrowedFd<'_>) -> io::Result<Statx> {
    call(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// Stats `dir/name`. Resolution is not confined: pass a single name.
pub fn statx_at(dir: BorrowedFd<'_>, name: &Path, nofollow: bool) -> io::Result<Statx> {
    let c = cstr(name)?;
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    call(dir.as_raw_fd(), &c, flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn matches_std_metadata_and_o_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let fd = crate::openat2::open_beneath(d.as_fd(), Path::new("f"), libc::O_PATH, 0).unwrap();
        let st = statx_fd(fd.as_fd()).unwrap();
        assert_eq!(st.ino, md.ino());
        assert_eq!(st.dev, md.dev());
        assert_eq!(st.size, 5);
        assert_eq!(st.mode, md.mode());
        assert_eq!(st.mtime, (md.mtime(), md.mtime_nsec() as u32));
        assert_eq!(st.nlink, 1);
        let at = statx_at(d.as_fd(), Path::new("f"), true).unwrap();
        assert_eq!(at.ino, st.ino);
        let l = statx_at(d.as_fd(), Path::new("l"), true).unwrap();
        assert_eq!(l.mode & libc::S_IFMT, libc::S_IFLNK);
        let lf = statx_at(d.as_fd(), Path::new("l"), false).unwrap();
        assert_eq!(lf.ino, st.ino);
    }
}
