//! Small file-system calls the POSIX backend needs, all fd-relative.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use crate::{cstr, cvt, cvt_retry, is_o_path, proc_fd_path};

/// Fails if the name could resolve anywhere but directly inside the directory.
fn single_name(name: &Path) -> io::Result<std::ffi::CString> {
    let b = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    cstr(name)
}

/// Flags for [`renameat2`].
pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

/// Renames `old_dir/old` to `new_dir/new`. Both names must be single components.
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &Path,
    new_dir: BorrowedFd<'_>,
    new: &Path,
    flags: u32,
) -> io::Result<()> {
    let (o, n) = (single_name(old)?, single_name(new)?);
    // SAFETY: both names are NUL-terminated strings alive for the call.
    cvt(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Removes `dir/name` (an empty directory when `is_dir`). Single component only.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &Path, is_dir: bool) -> io::Result<()> {
    let c = single_name(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// Creates directory `dir/name`. Single component only.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()> {
    let c = single_name(name)?;
    // SAFETY: `c` is NUL-terminated.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub const FALLOC_FL_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
pub const FALLOC_FL_PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;

/// fallocate(2) on a writable fd.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let inval = || io::Error::from_raw_os_error(libc::EINVAL);
    let off = i64::try_from(offset).map_err(|_| inval())?;
    let len = i64::try_from(len).map_err(|_| inval())?;
    // SAFETY: integer arguments only.
    cvt_retry(|| unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) }).map(drop)
}

/// Volume figures from fstatfs(2); works on `O_PATH` fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsInfo {
    /// Fundamental block size (the unit of the block counts).
    pub block_size: u64,
    /// Preferred I/O size.
    pub io_size: u64,
    pub total_blocks: u64,
    pub free_blocks: u64,
    /// Free blocks usable by unprivileged users.
    pub avail_blocks: u64,
    pub total_files: u64,
    pub free_files: u64,
    pub fs_id: u64,
    pub fs_type: u64,
    pub name_max: u64,
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> io::Result<FsInfo> {
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a writable statfs the kernel fills.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut s) })?;
    // SAFETY: fsid_t is two ints with private fields; read them as raw memory.
    let ids: [i32; 2] = unsafe { std::mem::transmute(s.f_fsid) };
    let frsize = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Ok(FsInfo {
        block_size: frsize as u64,
        io_size: s.f_bsize as u64,
        total_blocks: s.f_blocks,
        free_blocks: s.f_bfree,
        avail_blocks: s.f_bavail,
        total_files: s.f_files,
        free_files: s.f_ffree,
        fs_id: (u64::from(ids[0] as u32) << 32) | u64::from(ids[1] as u32),
        fs_type: s.f_type as u64,
        name_max: s.f_namelen as u64,
    })
}

fn path_call(fd: BorrowedFd<'_>, f: impl FnOnce(&CStr) -> libc::c_int) -> io::Result<()> {
    let p = proc_fd_path(fd);
    cvt(f(&p)).map(drop)
}

/// chmod on any fd; `O_PATH` fds go through their /proc link.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let mode = (mode & 0o7777) as libc::mode_t;
    if is_o_path(fd)? {
        // SAFETY: the path is NUL-terminated.
        path_call(fd, |p| unsafe { libc::chmod(p.as_ptr(), mode) })
    } else {
        // SAFETY: integer arguments only.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
    }
}

/// chown on any fd, `O_PATH` included; `None` leaves an id unchanged.
pub fn fchown(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH acts on the fd
    // itself (works for O_PATH fds and does not follow symlinks).
    cvt(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
        .map(drop)
}

/// ftruncate on a writable fd.
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: integer arguments only.
    cvt_retry(|| unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn rename_flags_and_helpers() {
        let t = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(t.path()).unwrap();
        std::fs::write(t.path().join("a"), b"a").unwrap();
        std::fs::write(t.path().join("b"), b"b").unwrap();
        let e = renameat2(
            d.as_fd(),
            "a".as_ref(),
            d.as_fd(),
            "b".as_ref(),
            RENAME_NOREPLACE,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        renameat2(
            d.as_fd(),
            "a".as_ref(),
            d.as_fd(),
            "b".as_ref(),
            RENAME_EXCHANGE,
        )
        .unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"b");
        renameat2(
            d.as_fd(),
            "a".as_ref(),
            d.as_fd(),
            "c".as_ref(),
            RENAME_NOREPLACE,
        )
        .unwrap();
        let e = renameat2(d.as_fd(), "../x".as_ref(), d.as_fd(), "c".as_ref(), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));

        mkdirat(d.as_fd(), "sub".as_ref(), 0o750).unwrap();
        let e = unlinkat(d.as_fd(), "sub".as_ref(), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        unlinkat(d.as_fd(), "sub".as_ref(), true).unwrap();
        unlinkat(d.as_fd(), "c".as_ref(), false).unwrap();

        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.path().join("b"))
            .unwrap();
        fallocate(f.as_fd(), FALLOC_FL_KEEP_SIZE, 0, 1 << 20).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), 1);
        assert!(md.blocks() * 512 >= 1 << 20);
        ftruncate(f.as_fd(), 10).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10);

        let p = crate::openat2::open_beneath(d.as_fd(), "b".as_ref(), libc::O_PATH, 0).unwrap();
        fchmod(p.as_fd(), 0o604).unwrap();
        assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o604);
        fchown(p.as_fd(), Some(1), None).unwrap();
        assert_eq!(f.metadata().unwrap().uid(), 1);

        let s = fstatfs(p.as_fd()).unwrap();
        assert!(s.total_blocks > 0 && s.block_size > 0 && s.name_max >= 255);
    }
}
