//! Startup check of which kernel features work on the share's file system.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::lease::{self, LeaseKind};
use crate::{fs, handle, ofd, openat2};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelProbe {
    pub openat2: bool,
    pub leases: bool,
    pub ofd_locks: bool,
    pub file_handles: bool,
    /// F_SETDELEG (Linux 6.19+).
    pub f_setdeleg: bool,
    /// /proc/sys/fs/lease-break-time in seconds: how long a local opener waits
    /// for a lease holder; our SMB break timeout must be shorter.
    pub lease_break_time: Option<u32>,
    /// The control device of the kernel module specified in
    /// docs/kernel-interface.md part B (never present on a stock kernel).
    pub holdfast_ofd_device: bool,
    pub kernel_release: String,
}

/// Reads /proc/sys/fs/lease-break-time.
pub fn lease_break_time() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/fs/lease-break-time")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Tries each feature on a temporary file created (and removed) in `dir`.
/// Features that cannot be tried (e.g. `dir` not writable) are reported absent.
pub fn probe(dir: &Path) -> KernelProbe {
    let mut p = KernelProbe {
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        lease_break_time: lease_break_time(),
        holdfast_ofd_device: Path::new("/dev/holdfast-ofd").exists(),
        ..KernelProbe::default()
    };
    let Ok(d) = std::fs::File::open(dir) else {
        return p;
    };
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        ".holdfast-probe-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let create = openat2::open_beneath(
        d.as_fd(),
        Path::new(&name),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    );
    let f: OwnedFd = match create {
        Ok(f) => {
            p.openat2 = true;
            f
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // Without openat2 nothing else matters: the server refuses to run.
            return p;
        }
        Err(_) => return p,
    };

    p.ofd_locks = ofd::ofd_lock(f.as_fd(), 0, 1, true, false).is_ok()
        && ofd::ofd_unlock(f.as_fd(), 0, 1).is_ok();
    p.file_handles = handle::handle_of(f.as_fd())
        .and_then(|h| handle::open_by_handle(d.as_fd(), &h, libc::O_PATH))
        .is_ok();
    p.leases = try_lease(f.as_fd());
    p.f_setdeleg = lease::set_deleg(f.as_fd(), LeaseKind::Write).is_ok()
        && lease::set_deleg(f.as_fd(), LeaseKind::None).is_ok();
    drop(f);
    let _ = fs::unlinkat(d.as_fd(), Path::new(&name), false);
    p
}

fn try_lease(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let r: io::Result<()> = (|| {
        lease::set_lease(fd, LeaseKind::Write)?;
        lease::set_lease(fd, LeaseKind::None)
    })();
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_tmp() {
        let t = tempfile::tempdir().unwrap();
        let p = probe(t.path());
        assert!(p.openat2 && p.ofd_locks && p.leases, "{p:?}");
        assert!(!p.kernel_release.is_empty());
        assert!(p.lease_break_time.is_some(), "{p:?}");
        assert!(!p.holdfast_ofd_device);
        eprintln!("{p:?}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
