//! Setting access and modification times, on `O_PATH` fds too.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{cvt, is_o_path, proc_fd_path};

fn spec(t: Option<(i64, u32)>) -> libc::timespec {
    match t {
        Some((s, ns)) => libc::timespec {
            tv_sec: s,
            tv_nsec: i64::from(ns.min(999_999_999)),
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    }
}

/// Sets atime and/or mtime (seconds, nanoseconds); `None` leaves one unchanged.
/// ctime becomes "now", as the kernel always does.
pub fn set_times(
    fd: BorrowedFd<'_>,
    atime: Option<(i64, u32)>,
    mtime: Option<(i64, u32)>,
) -> io::Result<()> {
    if atime.is_none() && mtime.is_none() {
        return Ok(());
    }
    let times = [spec(atime), spec(mtime)];
    if is_o_path(fd)? {
        // futimens rejects O_PATH fds; the /proc link names the same inode.
        let p = proc_fd_path(fd);
        // SAFETY: `p` is NUL-terminated and `times` is an array of two timespecs.
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
    } else {
        // SAFETY: `times` is an array of two timespecs alive for the call.
        cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statx::statx_fd;
    use std::os::fd::AsFd;
    use std::path::Path;

    #[test]
    fn set_on_plain_and_o_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let f = std::fs::File::open(dir.path().join("f")).unwrap();
        set_times(f.as_fd(), Some((1_000_000, 5)), Some((2_000_000, 700))).unwrap();
        let st = statx_fd(f.as_fd()).unwrap();
        assert_eq!(st.atime, (1_000_000, 5));
        assert_eq!(st.mtime, (2_000_000, 700));

        let d = std::fs::File::open(dir.path()).unwrap();
        let p = crate::openat2::open_beneath(d.as_fd(), Path::new("f"), libc::O_PATH, 0).unwrap();
        set_times(p.as_fd(), None, Some((3_000_000, 0))).unwrap();
        let st = statx_fd(p.as_fd()).unwrap();
        assert_eq!(st.atime, (1_000_000, 5));
        assert_eq!(st.mtime, (3_000_000, 0));
    }
}
