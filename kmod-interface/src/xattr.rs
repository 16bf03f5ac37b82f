//! Extended attributes on an open fd, `O_PATH` fds included.
//!
//! The f*xattr calls reject `O_PATH` fds with EBADF, so for those we use the
//! path-based calls on "/proc/self/fd/N", which name exactly the same inode.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use crate::{cstr, cvt, is_o_path, proc_fd_path};

enum Target {
    Fd(i32),
    Path(CString, bool),
}

fn target(fd: BorrowedFd<'_>) -> io::Result<Target> {
    Ok(if is_o_path(fd)? {
        Target::Path(proc_fd_path(fd), true)
    } else {
        Target::Fd(fd.as_raw_fd())
    })
}

fn name_c(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn get(t: &Target, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let (p, n) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: strings are NUL-terminated and `p`/`n` describe a live writable
    // buffer (a zero length makes the kernel only report the size).
    let ret = unsafe {
        match t {
            Target::Fd(fd) => libc::fgetxattr(*fd, name.as_ptr(), p, n),
            Target::Path(path, true) => libc::getxattr(path.as_ptr(), name.as_ptr(), p, n),
            Target::Path(path, false) => libc::lgetxattr(path.as_ptr(), name.as_ptr(), p, n),
        }
    };
    cvt(ret).map(|r| r as usize)
}

fn list(t: &Target, buf: &mut [u8]) -> io::Result<usize> {
    let (p, n) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: as in `get`.
    let ret = unsafe {
        match t {
            Target::Fd(fd) => libc::flistxattr(*fd, p, n),
            Target::Path(path, true) => libc::listxattr(path.as_ptr(), p, n),
            Target::Path(path, false) => libc::llistxattr(path.as_ptr(), p, n),
        }
    };
    cvt(ret).map(|r| r as usize)
}

/// Runs a size-query-then-fetch call, growing the buffer if the value grows meanwhile.
fn fetch(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    loop {
        let size = call(&mut [])?;
        let mut buf = vec![0u8; size.max(1)];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn get_value(t: &Target, name: &str) -> io::Result<Option<Vec<u8>>> {
    let name = name_c(name)?;
    match fetch(|b| get(t, &name, b)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads attribute `name` (e.g. "user.foo"); `None` if it does not exist.
pub fn fget(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    get_value(&target(fd)?, name)
}

/// Reads attribute `name` of `dir/child` without following a final symlink.
/// `child` is not resolution-confined: pass a single name from a directory listing.
pub fn get_at(dir: BorrowedFd<'_>, child: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut p = proc_fd_path(dir).into_bytes();
    p.push(b'/');
    p.extend_from_slice(cstr(child)?.as_bytes());
    let p = CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    get_value(&Target::Path(p, false), name)
}

/// Sets attribute `name` to `value` (creating or replacing it).
pub fn fset(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let t = target(fd)?;
    let name = name_c(name)?;
    let (v, n) = (value.as_ptr().cast(), value.len());
    // SAFETY: strings are NUL-terminated; `v`/`n` describe a live readable buffer.
    let ret = unsafe {
        match &t {
            Target::Fd(fd) => libc::fsetxattr(*fd, name.as_ptr(), v, n, 0),
            Target::Path(path, _) => libc::setxattr(path.as_ptr(), name.as_ptr(), v, n, 0),
        }
    };
    cvt(ret).map(drop)
}

/// Removes attribute `name`; a missing attribute is an ENODATA error.
pub fn fremove(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let t = target(fd)?;
    let name = name_c(name)?;
    // SAFETY: strings are NUL-terminated.
    let ret = unsafe {
        match &t {
            Target::Fd(fd) => libc::fremovexattr(*fd, name.as_ptr()),
            Target::Path(path, _) => libc::removexattr(path.as_ptr(), name.as_ptr()),
        }
    };
    cvt(ret).map(drop)
}

/// Lists attribute names (all namespaces the caller may see).
pub fn flist(fd: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let t = target(fd)?;
    let raw = fetch(|b| list(&t, b))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    #[test]
    fn round_trip_plain_and_o_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(fget(f.as_fd(), "user.t").unwrap(), None);
        fset(f.as_fd(), "user.t", b"hello").unwrap();
        assert_eq!(fget(f.as_fd(), "user.t").unwrap().unwrap(), b"hello");
        fset(f.as_fd(), "user.empty", b"").unwrap();
        assert_eq!(fget(f.as_fd(), "user.empty").unwrap().unwrap(), b"");

        let opath: OwnedFd = crate::openat2::open_beneath(
            std::fs::File::open(dir.path()).unwrap().as_fd(),
            Path::new("f"),
            libc::O_PATH,
            0,
        )
        .unwrap();
        assert!(is_o_path(opath.as_fd()).unwrap());
        assert_eq!(fget(opath.as_fd(), "user.t").unwrap().unwrap(), b"hello");
        fset(opath.as_fd(), "user.u", &[1, 2, 3]).unwrap();
        let names = flist(opath.as_fd()).unwrap();
        assert!(names.contains(&"user.t".to_string()));
        assert!(names.contains(&"user.u".to_string()));
        fremove(opath.as_fd(), "user.t").unwrap();
        assert_eq!(fget(f.as_fd(), "user.t").unwrap(), None);
        let e = fremove(f.as_fd(), "user.t").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));

        let d = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(
            get_at(d.as_fd(), Path::new("f"), "user.u")
                .unwrap()
                .unwrap(),
            vec![1, 2, 3]
        );
    }
}
