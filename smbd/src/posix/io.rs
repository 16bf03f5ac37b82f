//! Data access on open files.

use nix::libc;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use kmod_interface::{fs, is_o_path, statx::statx_fd};
use nix::fcntl::{fcntl, FcntlArg};

fn off(o: u64) -> io::Result<i64> {
    i64::try_from(o).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Reads at `off` until `buf` is full or end of file; returns bytes read.
pub fn read_at(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = self::off(off + done as u64)?;
        match nix::sys::uio::pread(fd, &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Writes all of `data` at `off` (at end of file for `O_APPEND` fds).
pub fn write_at(fd: BorrowedFd<'_>, data: &[u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        let at = self::off(off + done as u64)?;
        match nix::sys::uio::pwrite(fd, &data[done..], at) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // An O_PATH fd (a stream open on a `kernel oplocks` share) has no data
    // of its own to flush: stream writes are xattr calls, done at once.
    if is_o_path(fd)? {
        return Ok(());
    }
    Ok(nix::unistd::fsync(fd.as_raw_fd())?)
}

/// Checks that the current identity may open the file behind `fd` with
/// this access, without opening it (an open would break kernel leases).
pub fn check_access(fd: BorrowedFd<'_>, read: bool, write: bool) -> io::Result<()> {
    use nix::unistd::AccessFlags;
    let mut mode = AccessFlags::empty();
    if read {
        mode |= AccessFlags::R_OK;
    }
    if write {
        mode |= AccessFlags::W_OK;
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(nix::unistd::faccessat(
        None,
        path.as_str(),
        mode,
        nix::fcntl::AtFlags::AT_EACCESS,
    )?)
}

/// Opens the file behind `fd` again with new access, through /proc/self/fd/N
/// (no path lookup, so no race), checked against the current identity.
/// Neither read nor write gives an `O_PATH` fd.
pub fn reopen(fd: BorrowedFd<'_>, read: bool, write: bool) -> io::Result<OwnedFd> {
    reopen_flags(fd, read, write, 0)
}

/// Like [`reopen`] for data access, but when someone else's kernel lease
/// stands in the way the open fails at once with `EWOULDBLOCK` (the lease
/// break has started) instead of blocking the caller until the holder lets
/// go. The returned fd is blocking as usual.
pub fn reopen_nowait(fd: BorrowedFd<'_>, read: bool, write: bool) -> io::Result<OwnedFd> {
    let f = reopen_flags(fd, read, write, libc::O_NONBLOCK)?;
    let fl = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?;
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) & !nix::fcntl::OFlag::O_NONBLOCK;
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(fl))?;
    Ok(f)
}

pub(crate) fn reopen_flags(
    fd: BorrowedFd<'_>,
    read: bool,
    write: bool,
    extra: i32,
) -> io::Result<OwnedFd> {
    let mut o = OpenOptions::new();
    let mut flags = libc::O_CLOEXEC | extra;
    if read || write {
        o.read(read).write(write);
    } else {
        o.read(true);
        flags |= libc::O_PATH;
    }
    let f = o
        .custom_flags(flags)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(f.into())
}

/// `fd` itself if it allows writing, else a writable reopen of it.
fn writable(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let fl = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    let acc = fl & libc::O_ACCMODE;
    if !is_o_path(fd)? && (acc == libc::O_WRONLY || acc == libc::O_RDWR) {
        Ok(None)
    } else {
        reopen(fd, false, true).map(Some)
    }
}

/// Sets end of file (truncating or extending with zeros).
pub fn set_size(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let w = writable(fd)?;
    fs::ftruncate(w.as_ref().map_or(fd, |w| w.as_fd()), size)
}

/// Sets allocation size: grows by preallocating past EOF (KEEP_SIZE); a
/// smaller value is a no-op (EOF is never changed here). File systems without
/// fallocate are treated as success, since allocation is only a hint.
pub fn allocate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let st = statx_fd(fd)?;
    if size <= st.blocks * 512 {
        return Ok(());
    }
    let w = writable(fd)?;
    match fs::fallocate(
        w.as_ref().map_or(fd, |w| w.as_fd()),
        fs::FALLOC_FL_KEEP_SIZE,
        0,
        size,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        r => r,
    }
}
