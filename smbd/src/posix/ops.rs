//! Namespace and volume operations.

use nix::libc;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use kmod_interface::fs;
use kmod_interface::openat2::open_beneath;

use super::share::{split, ShareRoot};

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// Removes `rel` (an empty directory when `is_dir`). The share root cannot be removed.
pub fn unlink(root: &ShareRoot, rel: &Path, is_dir: bool) -> io::Result<()> {
    let (parent, name) = split(rel).map_err(|_| errno(libc::EACCES))?;
    let parent_fd = open_beneath(root.fd(), parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    fs::unlinkat(parent_fd.as_fd(), name, is_dir)
}

/// Renames `from` to `to`, both inside the share. Without `replace` an
/// existing target fails with EEXIST (atomically, RENAME_NOREPLACE).
pub fn rename(root: &ShareRoot, from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    let (fp, fname) = split(from).map_err(|_| errno(libc::EACCES))?;
    let (tp, tname) = split(to).map_err(|_| errno(libc::EACCES))?;
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
    let from_dir = open_beneath(root.fd(), fp, dir_flags, 0)?;
    let to_dir = open_beneath(root.fd(), tp, dir_flags, 0)?;
    let flags = if replace { 0 } else { fs::RENAME_NOREPLACE };
    fs::renameat2(from_dir.as_fd(), fname, to_dir.as_fd(), tname, flags)
}

/// Volume sizes for FileFsSizeInformation and friends. Block counts are in `block_size` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub block_size: u64,
    pub total_blocks: u64,
    pub free_blocks: u64,
    pub avail_blocks: u64,
    pub fs_id: u64,
    pub name_max: u64,
}

pub fn fs_stats(fd: BorrowedFd<'_>) -> io::Result<FsStats> {
    let s = fs::fstatfs(fd)?;
    Ok(FsStats {
        block_size: s.block_size,
        total_blocks: s.total_blocks,
        free_blocks: s.free_blocks,
        avail_blocks: s.avail_blocks,
        fs_id: s.fs_id,
        name_max: s.name_max,
    })
}

/// chmod (permission bits only) on any fd, `O_PATH` included.
pub fn fchmod_mode(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    fs::fchmod(fd, mode & 0o7777)
}

/// chown on any fd, `O_PATH` included.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    fs::fchown(fd, Some(uid), Some(gid))
}
