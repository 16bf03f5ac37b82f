//! Open-file-description byte-range locks: owned by the open file (not the
//! process), so they map onto per-handle SMB locks and survive a dup's close.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::cvt_retry;

/// A lock that conflicts with a requested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockInfo {
    pub start: u64,
    /// 0 means "to end of file and beyond".
    pub len: u64,
    pub exclusive: bool,
    /// -1 for OFD locks; the owner pid for classic POSIX locks.
    pub pid: i32,
}

fn flock(kind: libc::c_int, start: u64, len: u64) -> io::Result<libc::flock> {
    let inval = || io::Error::from_raw_os_error(libc::EINVAL);
    let s = i64::try_from(start).map_err(|_| inval())?;
    // The kernel cannot represent ranges ending past i64::MAX; clamp them.
    let l = i64::try_from(len).unwrap_or(i64::MAX).min(i64::MAX - s);
    if len != 0 && l == 0 {
        return Err(inval());
    }
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = s;
    fl.l_len = l;
    fl.l_pid = 0;
    Ok(fl)
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: the OFD lock commands read (and GETLK writes) one `struct flock`.
    cvt_retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) }).map(drop)
}

/// Locks `[start, start+len)` (len 0 = to infinity). Without `wait` a
/// conflict fails with EAGAIN. Exclusive needs a writable fd, shared a readable one.
pub fn ofd_lock(
    fd: BorrowedFd<'_>,
    start: u64,
    len: u64,
    exclusive: bool,
    wait: bool,
) -> io::Result<()> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let mut fl = flock(kind, start, len)?;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    fcntl_lock(fd, cmd, &mut fl)
}

/// Unlocks a range (unlocking what is not locked is not an error).
pub fn ofd_unlock(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut fl = flock(libc::F_UNLCK, start, len)?;
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl)
}

/// Returns a lock that would block `ofd_lock(fd, start, len, exclusive)`, if any.
pub fn ofd_getlk(
    fd: BorrowedFd<'_>,
    start: u64,
    len: u64,
    exclusive: bool,
) -> io::Result<Option<LockInfo>> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let mut fl = flock(kind, start, len)?;
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    Ok(Some(LockInfo {
        start: fl.l_start as u64,
        len: fl.l_len as u64,
        exclusive: fl.l_type == libc::F_WRLCK as libc::c_short,
        pid: fl.l_pid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;

    #[test]
    fn survives_dup_close_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let open = || OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let a = open();
        let b = open();
        ofd_lock(a.as_fd(), 2, 4, true, false).unwrap();
        // Closing a dup (a classic POSIX lock would be lost here) keeps the lock.
        drop(a.try_clone().unwrap());
        let e = ofd_lock(b.as_fd(), 0, 3, false, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        let c = ofd_getlk(b.as_fd(), 0, 10, false).unwrap().unwrap();
        assert_eq!((c.start, c.len, c.exclusive), (2, 4, true));
        assert_eq!(ofd_getlk(b.as_fd(), 6, 4, true).unwrap(), None);
        ofd_lock(b.as_fd(), 6, 0, true, false).unwrap();
        // Same description: no self-conflict.
        ofd_lock(a.as_fd(), 3, 1, false, false).unwrap();
        ofd_unlock(a.as_fd(), 0, 6).unwrap();
        ofd_lock(b.as_fd(), 0, 3, true, true).unwrap();
        // Huge ranges are clamped rather than rejected.
        ofd_unlock(b.as_fd(), 0, u64::MAX).unwrap();
        ofd_lock(b.as_fd(), 1 << 62, u64::MAX, true, false).unwrap();
    }
}
