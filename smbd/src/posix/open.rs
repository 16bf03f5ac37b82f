//! Opening and creating files and directories beneath a share root.

use nix::libc;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use kmod_interface::openat2::open_beneath;
use kmod_interface::{fs, statx::statx_fd};

use super::dos::{new_dos, stat, write_dos};
use super::errors::BackendError;
use super::io::reopen_flags;
use super::share::{check_rel, split, ShareRoot};
use crate::fsa::types::{nt_now, unix_to_nt, FileMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreateMode {
    /// Fail with ENOENT if missing.
    #[default]
    Open,
    /// Fail with EEXIST if present.
    CreateNew,
    OpenOrCreate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirMode {
    /// Open whatever is there; create a file.
    #[default]
    Any,
    /// Fail with [`BackendError::NotADirectory`] on a non-directory; create a directory.
    MustBeDir,
    /// Fail with EISDIR on a directory.
    MustNotBeDir,
}

#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub read: bool,
    pub write: bool,
    /// Writes go to end of file (`O_APPEND`); implies write access.
    pub append_only: bool,
    pub create: CreateMode,
    /// Truncate an existing file to 0 (with or without write access).
    pub truncate: bool,
    pub directory: DirMode,
    /// POSIX permission bits for a new file or directory (umask applies).
    pub mode: u32,
    /// DOS attributes stored on a new file or directory.
    pub attributes: u32,
}

impl OpenRequest {
    /// Looks a name up without data access (an O_PATH open): existence and metadata only.
    pub fn probe() -> OpenRequest {
        OpenRequest::default()
    }
}

#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    pub meta: FileMeta,
    pub created: bool,
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// Opens or creates `rel` (a relative path, "" = share root) beneath `root`.
/// Symlinks are followed only while they stay inside the share. Files opened
/// without read or write are `O_PATH`; directories are `O_RDONLY` or, if not
/// readable and reading was not asked for, `O_PATH`.
pub fn open(root: &ShareRoot, rel: &Path, req: &OpenRequest) -> io::Result<Opened> {
    check_rel(rel)?;
    let (fd, created) = match req.create {
        CreateMode::Open => (open_existing(root, rel, req)?, false),
        CreateMode::CreateNew => (create(root, rel, req)?, true),
        CreateMode::OpenOrCreate => open_or_create(root, rel, req)?,
    };
    let meta = stat(fd.as_fd())?;
    Ok(Opened { fd, meta, created })
}

fn open_or_create(root: &ShareRoot, rel: &Path, req: &OpenRequest) -> io::Result<(OwnedFd, bool)> {
    // Another client may create or delete the name between our two steps.
    let mut tries = 0;
    loop {
        match open_existing(root, rel, req) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => return r.map(|fd| (fd, false)),
        }
        match create(root, rel, req) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && tries < 3 => tries += 1,
            r => return r.map(|fd| (fd, true)),
        }
    }
}

fn open_dir(path_fd: OwnedFd, read: bool) -> io::Result<OwnedFd> {
    match open_beneath(
        path_fd.as_fd(),
        Path::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    ) {
        Ok(fd) => Ok(fd),
        Err(e) if !read && e.raw_os_error() == Some(libc::EACCES) => Ok(path_fd),
        Err(e) => Err(e),
    }
}

fn open_existing(root: &ShareRoot, rel: &Path, req: &OpenRequest) -> io::Result<OwnedFd> {
    let path_fd = open_beneath(root.fd(), rel, libc::O_PATH, 0)?;
    let st = statx_fd(path_fd.as_fd())?;
    match st.mode & libc::S_IFMT {
        libc::S_IFDIR => {
            if req.directory == DirMode::MustNotBeDir || req.truncate {
                return Err(errno(libc::EISDIR));
            }
            open_dir(path_fd, req.read)
        }
        _ if req.directory == DirMode::MustBeDir => Err(BackendError::NotADirectory.into()),
        libc::S_IFREG => open_file_data(path_fd.as_fd(), req).map(|fd| fd.unwrap_or(path_fd)),
        // FIFOs, devices, sockets: metadata only; opening them could block.
        _ if !(req.read || req.write || req.append_only || req.truncate) => Ok(path_fd),
        _ => Err(errno(libc::EACCES)),
    }
}

/// Data fd for an existing regular file, or `None` to keep the `O_PATH` fd.
fn open_file_data(path_fd: BorrowedFd<'_>, req: &OpenRequest) -> io::Result<Option<OwnedFd>> {
    let write = req.write || req.append_only;
    if !req.read && !write {
        if req.truncate {
            let w = reopen_flags(path_fd, false, true, 0)?;
            fs::ftruncate(w.as_fd(), 0)?;
        }
        return Ok(None);
    }
    let mut extra = 0;
    if req.append_only {
        extra |= libc::O_APPEND;
    }
    if req.truncate && write {
        extra |= libc::O_TRUNC;
    }
    let fd = reopen_flags(path_fd, req.read, write, extra)?;
    if req.truncate && !write {
        let w = reopen_flags(path_fd, false, true, 0)?;
        fs::ftruncate(w.as_fd(), 0)?;
    }
    Ok(Some(fd))
}

fn create(root: &ShareRoot, rel: &Path, req: &OpenRequest) -> io::Result<OwnedFd> {
    let (parent, name) = match split(rel) {
        Ok(s) => s,
        // The share root (or a path ending in "..") always exists.
        Err(_) if check_rel(rel).is_ok() => return Err(errno(libc::EEXIST)),
        Err(e) => return Err(e),
    };
    let mode = req.mode & 0o7777;
    if req.directory == DirMode::MustBeDir {
        let parent_fd = open_beneath(root.fd(), parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        fs::mkdirat(parent_fd.as_fd(), name, mode)?;
        let path_fd = open_beneath(
            parent_fd.as_fd(),
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        store_new_dos(path_fd.as_fd(), req.attributes, true);
        return open_dir(path_fd, req.read);
    }
    let write = req.write || req.append_only;
    let mut flags = libc::O_CREAT | libc::O_EXCL;
    flags |= match (req.read, write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if req.append_only {
        flags |= libc::O_APPEND;
    }
    let fd = open_beneath(root.fd(), rel, flags, mode)?;
    store_new_dos(fd.as_fd(), req.attributes, false);
    if !req.read && !write {
        // Attribute-only handle: keep the same shape as for existing files.
        return reopen_flags(fd.as_fd(), false, false, 0);
    }
    Ok(fd)
}

/// Best effort: a file system without user xattrs still works, with defaults.
fn store_new_dos(fd: BorrowedFd<'_>, attrs: u32, is_dir: bool) {
    let created = match statx_fd(fd) {
        Ok(st) => unix_to_nt(st.mtime.0, st.mtime.1),
        Err(_) => nt_now(),
    };
    if let Err(e) = write_dos(fd, &new_dos(attrs, is_dir, created)) {
        tracing::debug!("cannot store DOS attributes on a new file: {e}");
    }
}
