//! Per-thread credentials.
//!
//! glibc's setresuid() and friends change every thread of the process (they
//! broadcast a signal), so we call the raw syscalls, which act on the calling
//! thread only. Real and saved ids stay 0 so the thread can always return to root.

use std::cell::RefCell;
use std::io;

use crate::cvt;

/// A Unix identity a worker thread can act as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }
}

thread_local! {
    /// What this thread was last switched to; `None` when unknown.
    static CURRENT: RefCell<Option<Identity>> = const { RefCell::new(None) };
}

/// `(uid_t)-1`: leave this id unchanged.
const KEEP: libc::c_uint = u32::MAX;

fn setresuid(r: u32, e: u32, s: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; the kernel only changes this thread's creds.
    cvt(unsafe { libc::syscall(libc::SYS_setresuid, r, e, s) }).map(drop)
}

fn setresgid(r: u32, e: u32, s: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; the kernel only changes this thread's creds.
    cvt(unsafe { libc::syscall(libc::SYS_setresgid, r, e, s) }).map(drop)
}

fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of gid_t (u32) that
    // the kernel only reads during the call.
    cvt(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and returns this thread's effective uid.
    unsafe { libc::syscall(libc::SYS_geteuid) as u32 }
}

fn switch(id: &Identity) -> io::Result<()> {
    // Changing groups and gid needs CAP_SETGID, which an unprivileged euid lacks.
    if geteuid() != 0 {
        setresuid(KEEP, 0, KEEP)?;
    }
    setgroups(&id.groups)?;
    setresgid(KEEP, id.gid, 0)?;
    setresuid(KEEP, id.uid, 0)?;
    Ok(())
}

/// Switches the calling thread (only) to `id`. Cached: no syscalls if unchanged.
pub fn set_thread_identity(id: &Identity) -> io::Result<()> {
    if CURRENT.with(|c| c.borrow().as_ref() == Some(id)) {
        return Ok(());
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
    switch(id)?;
    CURRENT.with(|c| *c.borrow_mut() = Some(id.clone()));
    Ok(())
}

/// Switches the calling thread back to root (uid 0, gid 0, no groups).
pub fn set_thread_root() -> io::Result<()> {
    set_thread_identity(&Identity::root())
}

/// The identity this thread was last switched to through this module, if any.
pub fn current_thread_identity() -> Option<Identity> {
    CURRENT.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    #[test]
    fn switch_only_calling_thread() {
        if geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("secret");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

        let (to_main, from_worker) = std::sync::mpsc::channel();
        let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
        let f2 = file.clone();
        let worker = std::thread::spawn(move || {
            let nobody = Identity {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            };
            set_thread_identity(&nobody).unwrap();
            assert_eq!(geteuid(), 65534);
            let err = fs::File::open(&f2).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
            set_thread_root().unwrap();
            assert_eq!(geteuid(), 0);
            fs::File::open(&f2).unwrap();
        });
        from_worker.recv().unwrap();
        // The worker is unprivileged right now; this thread must not be.
        assert_eq!(geteuid(), 0);
        fs::File::open(&file).unwrap();
        to_worker.send(()).unwrap();
        worker.join().unwrap();
    }
}
