//! Namespace and volume operations.

use nix::libc;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

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

/// Whether the calling thread's identity may remove `rel` (owned by
/// `owner_uid`): it needs write and search permission on the parent directory
/// and, in a sticky directory, must own the file or the directory. Root may.
pub fn may_delete(root: &ShareRoot, rel: &Path, owner_uid: u32) -> io::Result<bool> {
    let uid = super::share::current_uid();
    if uid == 0 {
        return Ok(true);
    }
    let Ok((parent, _)) = split(rel) else {
        // The share root itself is never deletable.
        return Ok(false);
    };
    let parent_fd = open_beneath(root.fd(), parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    use std::os::fd::AsRawFd;
    let raw = parent_fd.as_raw_fd();
    let writable = nix::unistd::faccessat(
        Some(raw),
        ".",
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok();
    if !writable {
        return Ok(false);
    }
    let st = nix::sys::stat::fstat(raw).map_err(io::Error::from)?;
    let sticky = st.st_mode & libc::S_ISVTX != 0;
    Ok(!sticky || uid == owner_uid || uid == st.st_uid)
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

/// Rewrites `rel` so that each leading component that exists under another
/// case is spelled as it is on disk (Windows clients expect names to be
/// case-insensitive; Linux file systems are not). `same` decides whether two
/// names match. Components after the first one that does not exist in any
/// case are kept as given.
pub fn resolve_case(
    root: &ShareRoot,
    rel: &Path,
    same: impl Fn(&str, &str) -> bool,
) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut comps = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    for comp in comps.by_ref() {
        if comp == "." {
            continue;
        }
        let dir = open_beneath(
            root.fd(),
            &dot_if_empty(&out),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        if kmod_interface::statx::statx_at(dir.as_fd(), Path::new(&comp), true).is_ok() {
            out.push(&comp);
            continue;
        }
        let listing = open_beneath(
            root.fd(),
            &dot_if_empty(&out),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        let found = super::dir::list_names(listing.as_fd())?
            .into_iter()
            .find(|n| same(n, &comp));
        match found {
            Some(n) => out.push(n),
            None => {
                out.push(&comp);
                break;
            }
        }
    }
    out.extend(comps);
    Ok(out)
}

fn dot_if_empty(p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p.to_path_buf()
    }
}
