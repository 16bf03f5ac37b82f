//! The only crate that makes raw kernel calls.
//!
//! Every `unsafe` block in Holdfast lives here, each with a `// SAFETY:` note.
//! Callers get safe, fd-based wrappers returning `io::Result`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub mod caps;
pub mod fdpass;
pub mod fs;
pub mod handle;
pub mod identity;
pub mod lease;
pub mod ofd;
pub mod openat2;
pub mod probe;
pub mod statx;
pub mod times;
pub mod xattr;

/// Turns a `-1`-on-error return value into an `io::Result`.
pub(crate) fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] but retries on `EINTR`.
pub(crate) fn cvt_retry<T: Copy + PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// "/proc/self/fd/N": lets path-only syscalls act on an `O_PATH` fd.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // The string never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// True when `fd` was opened with `O_PATH` (most fd-based calls then fail with EBADF).
pub fn is_o_path(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: F_GETFL takes no argument and only reads the fd's flags.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    Ok(fl & libc::O_PATH != 0)
}
