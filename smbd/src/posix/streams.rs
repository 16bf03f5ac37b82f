//! Named streams stored as extended attributes of the base file: stream "s"
//! is the xattr `user.holdfast.stream.s`, its value the stream's content
//! (naming and limits in `fsa::streams`). Works on any fd of the base file,
//! `O_PATH` included; Linux checks read (get) or write (set) permission on
//! the file, which is the permission a stream's data needs anyway.

use std::io;
use std::os::fd::BorrowedFd;

use kmod_interface::xattr;
use nix::libc;

use crate::fsa::streams::{name_from_xattr, xattr_name, MAX_STREAM_SIZE};

/// Names (as stored) and sizes of the file's named streams, sorted by name.
pub fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for attr in names(fd)? {
        if let Some(v) = xattr::fget(fd, &xattr_name(&attr))? {
            out.push((attr, v.len() as u64));
        }
    }
    Ok(out)
}

/// Stored stream names, sorted.
pub fn names(fd: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = xattr::flist(fd)?
        .iter()
        .filter_map(|a| name_from_xattr(a).map(str::to_string))
        .collect();
    v.sort();
    Ok(v)
}

/// Content of stream `name` (the stored spelling); `None` if it does not exist.
pub fn read(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    xattr::fget(fd, &xattr_name(name))
}

/// Creates or replaces stream `name`. Content over the xattr limit is ENOSPC.
pub fn write(fd: BorrowedFd<'_>, name: &str, content: &[u8]) -> io::Result<()> {
    if content.len() as u64 > MAX_STREAM_SIZE {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    match xattr::fset(fd, &xattr_name(name), content) {
        // E2BIG: the file system's own (smaller) limit.
        Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        r => r,
    }
}

/// Deletes stream `name`; a stream that is already gone is not an error.
pub fn remove(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match xattr::fremove(fd, &xattr_name(name)) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        r => r,
    }
}

/// Deletes every named stream (overwrite and supersede of the file drop them).
pub fn remove_all(fd: BorrowedFd<'_>) -> io::Result<()> {
    for n in names(fd)? {
        remove(fd, &n)?;
    }
    Ok(())
}
