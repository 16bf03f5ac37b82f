//! Directory listing.

use nix::libc;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kmod_interface::openat2::open_beneath;
use kmod_interface::statx::statx_at;

use super::dos::{meta_from, read_dos_at};
use crate::fsa::types::FileMeta;

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    /// `None` for symlinks (the caller hides them) and for entries that
    /// cannot be stat'ed.
    pub meta: Option<FileMeta>,
}

/// Lists a directory, "." and ".." included; names that are not valid UTF-8
/// are skipped. Uses a fresh open of the directory, so `dir_fd`'s offset is
/// untouched and `O_PATH` fds work (if the current identity may read it).
pub fn read_dir(dir_fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    let fd = open_beneath(
        dir_fd,
        Path::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let mut dir = nix::dir::Dir::from(fd)?;
    let mut out = Vec::new();
    for ent in dir.iter() {
        let ent = ent?;
        let raw = ent.file_name().to_bytes();
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let meta = match entry_meta(dir_fd.as_fd(), Path::new(OsStr::from_bytes(raw))) {
            Ok(m) => m,
            // Deleted since readdir returned it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                tracing::debug!("cannot stat directory entry {name:?}: {e}");
                None
            }
        };
        out.push(DirEntry {
            name: name.to_owned(),
            meta,
        });
    }
    Ok(out)
}

/// Names in a directory, without "." and ".." and without stat'ing them
/// (the case-insensitive lookup needs only names, and must stay cheap).
pub fn list_names(dir_fd: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let fd = open_beneath(
        dir_fd,
        Path::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let mut dir = nix::dir::Dir::from(fd)?;
    let mut out = Vec::new();
    for ent in dir.iter() {
        let ent = ent?;
        if let Ok(name) = std::str::from_utf8(ent.file_name().to_bytes()) {
            if name != "." && name != ".." {
                out.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

pub fn entry_meta(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Option<FileMeta>> {
    let st = statx_at(dir, name, true)?;
    if st.mode & libc::S_IFMT == libc::S_IFLNK {
        return Ok(None);
    }
    let dos = if name == Path::new("..") {
        // May be outside the share; its attributes are not ours to read.
        None
    } else {
        read_dos_at(dir, name)?
    };
    Ok(Some(meta_from(&st, dos)))
}
