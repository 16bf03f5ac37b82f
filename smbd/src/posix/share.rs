//! The share root every lookup starts from, and per-thread identity.

use nix::libc;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use kmod_interface::identity::{self, Identity};

/// An `O_PATH` fd on a share's root directory. All client paths are resolved
/// beneath it with openat2, never as plain strings.
#[derive(Debug)]
pub struct ShareRoot {
    fd: OwnedFd,
    path: PathBuf,
}

impl ShareRoot {
    pub fn open(path: impl AsRef<Path>) -> io::Result<ShareRoot> {
        let path = path.as_ref().to_path_buf();
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)?;
        Ok(ShareRoot { fd: f.into(), path })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Switches the calling thread to `id` and runs `f`. The thread keeps the
/// identity afterwards; the next `run_as` switches again (cheap if unchanged).
pub fn run_as<T>(id: &Identity, f: impl FnOnce() -> T) -> io::Result<T> {
    identity::set_thread_identity(id)?;
    Ok(f())
}

/// Runs `f` as root, then returns to the previous identity. For metadata the
/// caller may see but Linux guards with data permissions (user.* xattrs).
/// Root needs CAP_DAC_READ_SEARCH and CAP_DAC_OVERRIDE for this: without them
/// the DOS attributes of a mode-000 file cannot be read, so even a DELETE-only
/// open of it fails (smbtorture compound.related4 leaves its file behind).
pub(crate) fn as_root<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let prev = identity::current_thread_identity();
    match prev {
        Some(p) if p.uid != 0 => {
            identity::set_thread_root()?;
            let r = f();
            identity::set_thread_identity(&p)?;
            r
        }
        _ => f(),
    }
}

/// The effective uid this thread acts as (0 when never switched).
pub(crate) fn current_uid() -> u32 {
    identity::current_thread_identity().map_or(0, |i| i.uid)
}

/// Rejects paths that are not relative Unix paths ("" is the share root).
pub(crate) fn check_rel(rel: &Path) -> io::Result<()> {
    let ok = rel.components().all(|c| {
        matches!(
            c,
            Component::Normal(_) | Component::CurDir | Component::ParentDir
        )
    });
    if ok {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// Splits `rel` into (parent, final name). Fails for the root itself and for
/// a final ".." (EINVAL).
pub(crate) fn split(rel: &Path) -> io::Result<(&Path, &Path)> {
    check_rel(rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((parent, Path::new(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_paths() {
        assert_eq!(
            split(Path::new("a/b")).unwrap(),
            (Path::new("a"), Path::new("b"))
        );
        assert_eq!(
            split(Path::new("b")).unwrap(),
            (Path::new(""), Path::new("b"))
        );
        assert!(split(Path::new("")).is_err());
        assert!(split(Path::new("a/..")).is_err());
        assert!(split(Path::new("/etc/passwd")).is_err());
    }
}
