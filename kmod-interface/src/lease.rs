//! Kernel leases (F_SETLEASE): how oplocks learn that a local process or
//! another protocol wants a file we have cached access to.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::cvt;

/// Missing from libc on x86_64.
pub const F_SETSIG: libc::c_int = 10;
pub const F_GETSIG: libc::c_int = 11;
/// Linux 6.19+ (F_LINUX_SPECIFIC_BASE + 16), not yet in libc.
pub const F_GETDELEG: libc::c_int = 1024 + 15;
pub const F_SETDELEG: libc::c_int = 1024 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    Read,
    Write,
    None,
}

impl LeaseKind {
    fn to_raw(self) -> libc::c_int {
        match self {
            LeaseKind::Read => libc::F_RDLCK,
            LeaseKind::Write => libc::F_WRLCK,
            LeaseKind::None => libc::F_UNLCK,
        }
    }
    fn from_raw(v: libc::c_int) -> LeaseKind {
        match v {
            libc::F_RDLCK => LeaseKind::Read,
            libc::F_WRLCK => LeaseKind::Write,
            _ => LeaseKind::None,
        }
    }
}

fn fcntl_int(fd: BorrowedFd<'_>, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: the commands used here take an int argument and touch no memory.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) })
}

/// Takes, changes or (with `None`) releases a lease. A write lease needs a
/// writable fd and no other open of the file; a read lease a read-only fd.
pub fn set_lease(fd: BorrowedFd<'_>, kind: LeaseKind) -> io::Result<()> {
    fcntl_int(fd, libc::F_SETLEASE, kind.to_raw()).map(drop)
}

/// The lease held through `fd`. While a break is pending this reports the
/// kind the holder must downgrade to.
pub fn get_lease(fd: BorrowedFd<'_>) -> io::Result<LeaseKind> {
    fcntl_int(fd, libc::F_GETLEASE, 0).map(LeaseKind::from_raw)
}

/// Chooses the signal sent on lease break (0 = SIGIO). A non-zero value also
/// makes the kernel pass the fd in `si_fd`.
pub fn set_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    fcntl_int(fd, F_SETSIG, sig).map(drop)
}

pub fn get_signal(fd: BorrowedFd<'_>) -> io::Result<i32> {
    fcntl_int(fd, F_GETSIG, 0)
}

/// Sets the process (positive) or process group (negative) signalled on break.
pub fn set_owner(fd: BorrowedFd<'_>, pid: i32) -> io::Result<()> {
    fcntl_int(fd, libc::F_SETOWN, pid).map(drop)
}

/// `struct delegation` of linux/fcntl.h (6.19+).
#[repr(C)]
struct Delegation {
    d_flags: u32,
    d_type: u16,
    pad: u16,
}

/// Sets a delegation (F_SETDELEG, Linux 6.19+); EINVAL on older kernels.
pub fn set_deleg(fd: BorrowedFd<'_>, kind: LeaseKind) -> io::Result<()> {
    let d = Delegation {
        d_flags: 0,
        d_type: kind.to_raw() as u16,
        pad: 0,
    };
    // SAFETY: F_SETDELEG reads a `struct delegation`, which `d` is.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETDELEG, &d as *const Delegation) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn real_leases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();

        let r = std::fs::File::open(&p).unwrap();
        set_lease(r.as_fd(), LeaseKind::Read).unwrap();
        assert_eq!(get_lease(r.as_fd()).unwrap(), LeaseKind::Read);
        set_lease(r.as_fd(), LeaseKind::None).unwrap();
        assert_eq!(get_lease(r.as_fd()).unwrap(), LeaseKind::None);
        drop(r);

        let w = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // SIGURG is ignored by default, so a break cannot kill the test process.
        set_signal(w.as_fd(), libc::SIGURG).unwrap();
        assert_eq!(get_signal(w.as_fd()).unwrap(), libc::SIGURG);
        set_owner(w.as_fd(), std::process::id() as i32).unwrap();
        set_lease(w.as_fd(), LeaseKind::Write).unwrap();
        assert_eq!(get_lease(w.as_fd()).unwrap(), LeaseKind::Write);
        // A conflicting non-blocking open starts a break and fails meanwhile.
        let e = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
        assert_eq!(get_lease(w.as_fd()).unwrap(), LeaseKind::Read);
        set_lease(w.as_fd(), LeaseKind::None).unwrap();
        std::fs::File::open(&p).unwrap();
    }
}
