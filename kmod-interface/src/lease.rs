//! Kernel leases (F_SETLEASE): how oplocks learn that a local process or
//! another protocol wants a file we have cached access to.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// The realtime signal Holdfast asks lease breaks to arrive as (SIGRTMIN+3;
/// glibc keeps the first realtime signals for itself).
pub fn break_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

fn sigset(sigs: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before any
    // other use, and sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        cvt(libc::sigemptyset(&mut set))?;
        for &s in sigs {
            cvt(libc::sigaddset(&mut set, s))?;
        }
        Ok(set)
    }
}

/// Blocks `sigs` in the calling thread; threads created afterwards inherit
/// the mask. Called before the runtime starts so that no thread ever takes
/// a break signal's default action (SIGIO would end the process).
pub fn block_signals(sigs: &[i32]) -> io::Result<()> {
    let set = sigset(sigs)?;
    // SAFETY: `set` is an initialized sigset_t; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// A blocking `signalfd` for (already blocked) signals, read by a thread of
/// its own.
#[derive(Debug)]
pub struct SignalFd(OwnedFd);

/// One signal read from a [`SignalFd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalEvent {
    pub signo: i32,
    /// `si_fd`: the leased fd for a lease break with a signal set by F_SETSIG.
    pub fd: i32,
}

impl SignalFd {
    pub fn new(sigs: &[i32]) -> io::Result<SignalFd> {
        let set = sigset(sigs)?;
        // SAFETY: `set` is initialized; -1 asks for a new fd, which we own.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })?;
        // SAFETY: signalfd just returned this fd and nobody else owns it.
        Ok(SignalFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Waits for the next signal.
    pub fn read(&self) -> io::Result<SignalEvent> {
        // SAFETY: signalfd_siginfo is plain data, valid when zeroed.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let len = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = crate::cvt_retry(|| {
            // SAFETY: reads at most `len` bytes into `info`, which is that large.
            unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    len,
                )
            }
        })?;
        if n as usize != len {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(SignalEvent {
            signo: info.ssi_signo as i32,
            fd: info.ssi_fd,
        })
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// F_SETOWN_EX and F_OWNER_TID, missing from libc on x86_64 glibc.
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` of linux/fcntl.h.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// Sends break signals to one thread (`tid`) rather than to the process.
pub fn set_owner_thread(fd: BorrowedFd<'_>, tid: i32) -> io::Result<()> {
    let o = OwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: F_SETOWN_EX reads a `struct f_owner_ex`, which `o` is.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETOWN_EX, &o as *const OwnerEx) }).map(drop)
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

    #[test]
    fn break_arrives_on_a_signalfd() {
        // Blocked in this test thread only; the signal is sent to the thread
        // (F_SETOWN_EX would be needed otherwise), so use a child thread
        // that owns everything.
        std::thread::spawn(|| {
            let sig = break_signal();
            block_signals(&[sig]).unwrap();
            let sfd = SignalFd::new(&[sig]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, b"x").unwrap();
            let w = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            set_signal(w.as_fd(), sig).unwrap();
            let tid = nix::unistd::gettid().as_raw();
            set_owner_thread(w.as_fd(), tid).unwrap();
            set_lease(w.as_fd(), LeaseKind::Write).unwrap();
            let e = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p)
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
            let ev = sfd.read().unwrap();
            assert_eq!(ev.signo, sig);
            assert_eq!(ev.fd, w.as_raw_fd());
        })
        .join()
        .unwrap();
    }
}
