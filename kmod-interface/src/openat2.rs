//! Path resolution confined to a directory (openat2 with RESOLVE_BENEATH).
//!
//! Every lookup of a client-supplied path goes through here, so neither `..`
//! nor a symlink (absolute, relative or /proc magic link) can leave the share.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{cstr, cvt};

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

/// `struct open_how` of linux/openat2.h (libc's copy is non_exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` relative to `dir`, failing (EXDEV or ELOOP) if resolution
/// would leave `dir`. An empty path or "." opens `dir` itself. `O_CLOEXEC` is
/// always added; `mode` is used only with `O_CREAT`/`O_TMPFILE`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    open_resolve(
        dir,
        path,
        flags,
        mode,
        RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    )
}

/// [`open_beneath`] with explicit RESOLVE_* flags.
pub fn open_resolve(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let c = cstr(path)?;
    let flags = flags | libc::O_CLOEXEC;
    let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let how = OpenHow {
        // Sign extension would set high bits the kernel rejects.
        flags: flags as u32 as u64,
        mode: if creates { u64::from(mode & 0o7777) } else { 0 },
        resolve,
    };
    // A concurrent rename anywhere makes the kernel return EAGAIN for
    // RESOLVE_BENEATH lookups; a few retries settle it.
    let mut tries = 0;
    loop {
        // SAFETY: `c` is a NUL-terminated string and `how` a correctly laid out
        // open_how, both alive for the call; the size passed is its real size.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match cvt(ret) {
            Ok(fd) => {
                // SAFETY: the kernel returned a new fd that nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("share")).unwrap();
        fs::create_dir(t.path().join("share/sub")).unwrap();
        fs::write(t.path().join("share/sub/f"), b"in").unwrap();
        fs::write(t.path().join("outside"), b"out").unwrap();
        let root = fs::File::open(t.path().join("share")).unwrap();
        (t, root.into())
    }

    fn is_escape(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP))
    }

    #[test]
    fn dot_dot_escape_fails() {
        let (_t, root) = setup();
        let e = open_beneath(root.as_fd(), Path::new("../outside"), libc::O_RDONLY, 0).unwrap_err();
        assert!(is_escape(&e), "{e}");
        let e = open_beneath(
            root.as_fd(),
            Path::new("sub/../../outside"),
            libc::O_RDONLY,
            0,
        )
        .unwrap_err();
        assert!(is_escape(&e), "{e}");
        // `..` that stays inside is fine.
        open_beneath(root.as_fd(), Path::new("sub/../sub/f"), libc::O_RDONLY, 0).unwrap();
    }

    #[test]
    fn absolute_symlink_fails() {
        let (t, root) = setup();
        symlink(t.path().join("outside"), t.path().join("share/abs")).unwrap();
        let e = open_beneath(root.as_fd(), Path::new("abs"), libc::O_RDONLY, 0).unwrap_err();
        assert!(is_escape(&e), "{e}");
        // Even an absolute link back into the share is refused.
        symlink(t.path().join("share/sub/f"), t.path().join("share/abs2")).unwrap();
        let e = open_beneath(root.as_fd(), Path::new("abs2"), libc::O_RDONLY, 0).unwrap_err();
        assert!(is_escape(&e), "{e}");
    }

    #[test]
    fn relative_symlink_leaving_fails() {
        let (_t, root) = setup();
        let dir = _t.path().join("share/sub");
        symlink("../../outside", dir.join("rel")).unwrap();
        let e = open_beneath(root.as_fd(), Path::new("sub/rel"), libc::O_RDONLY, 0).unwrap_err();
        assert!(is_escape(&e), "{e}");
        symlink("/proc/self/root", dir.join("magic")).unwrap();
        let e = open_beneath(root.as_fd(), Path::new("sub/magic"), libc::O_RDONLY, 0).unwrap_err();
        assert!(is_escape(&e), "{e}");
    }

    #[test]
    fn symlink_inside_works_and_empty_is_dir() {
        let (t, root) = setup();
        symlink("sub/f", t.path().join("share/ok")).unwrap();
        let fd = open_beneath(root.as_fd(), Path::new("ok"), libc::O_RDONLY, 0).unwrap();
        assert_eq!(std::io::read_to_string(fs::File::from(fd)).unwrap(), "in");
        let d = open_beneath(
            root.as_fd(),
            Path::new(""),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let d2 = open_beneath(root.as_fd(), Path::new("."), libc::O_RDONLY, 0).unwrap();
        drop((d, d2));
        let c = open_beneath(
            root.as_fd(),
            Path::new("sub/new"),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o640,
        )
        .unwrap();
        drop(c);
        assert!(t.path().join("share/sub/new").exists());
    }
}
