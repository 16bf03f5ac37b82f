//! `posix locking = yes`: every granted SMB byte-range lock of an open is
//! mirrored as an OFD lock on its open file description, so local processes
//! (and NFS, whose locks are POSIX locks on the server) see SMB locks and SMB
//! sees theirs. OFD locks belong to the description, not to a process: they
//! stay while a disconnected durable handle's fd is held by the keeper.
//!
//! The kernel keeps one mode per byte for a description (locks coalesce),
//! while SMB stacks locks per open. The mirror therefore keeps this open's
//! SMB locks and derives each byte's mode from them: exclusive where any
//! exclusive lock covers it, shared where only shared ones do.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use kmod_interface::ofd;
use nix::libc;
use tracing::{debug, warn};

/// The largest offset the kernel's `struct flock` can express.
const MAX: u64 = i64::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The SMB lock as granted (for unlock, which names offset and length).
    offset: u64,
    length: u64,
    exclusive: bool,
}

impl Held {
    /// The byte range `[start, end)` the kernel can represent, if any: a
    /// zero-length SMB lock covers no byte, and bytes past `i64::MAX` cannot
    /// be locked locally either.
    fn span(&self) -> Option<(u64, u64)> {
        span(self.offset, self.length)
    }
}

fn span(offset: u64, length: u64) -> Option<(u64, u64)> {
    if length == 0 || offset >= MAX {
        return None;
    }
    Some((offset, offset.saturating_add(length).min(MAX)))
}

/// Whether an error from F_OFD_SETLK means "someone else holds it".
pub fn is_conflict(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

/// The OFD mirror of one open's SMB byte-range locks.
pub struct OfdMirror {
    fd: Arc<OwnedFd>,
    /// F_WRLCK needs a writable description; a read-only open mirrors its
    /// exclusive locks as shared ones (they still keep local writers out).
    writable: bool,
    held: Mutex<Vec<Held>>,
}

impl OfdMirror {
    pub fn new(fd: Arc<OwnedFd>) -> OfdMirror {
        let writable = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map(|fl| {
                let acc = fl & libc::O_ACCMODE;
                acc == libc::O_WRONLY || acc == libc::O_RDWR
            })
            .unwrap_or(false);
        OfdMirror {
            fd,
            writable,
            held: Mutex::new(Vec::new()),
        }
    }

    /// The mirror of an open whose description already carries `locks`
    /// (offset, length, exclusive) mirrored by another process (a durable
    /// open moved between workers).
    pub fn with_locks(fd: Arc<OwnedFd>, locks: &[(u64, u64, bool)]) -> OfdMirror {
        let m = OfdMirror::new(fd);
        m.held()
            .extend(locks.iter().map(|&(offset, length, exclusive)| Held {
                offset,
                length,
                exclusive,
            }));
        m
    }

    /// The mirrored locks (offset, length, exclusive), in grant order.
    pub fn locks(&self) -> Vec<(u64, u64, bool)> {
        self.held()
            .iter()
            .map(|h| (h.offset, h.length, h.exclusive))
            .collect()
    }

    fn held(&self) -> MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, start: u64, end: u64, exclusive: bool) -> io::Result<()> {
        let fd = self.fd.as_fd();
        match ofd::ofd_lock(fd, start, end - start, exclusive && self.writable, false) {
            Err(e) if !exclusive && e.raw_os_error() == Some(libc::EBADF) => {
                // A write-only description cannot hold F_RDLCK: take F_WRLCK.
                ofd::ofd_lock(fd, start, end - start, true, false)
            }
            r => r,
        }
    }

    /// Mirrors a lock the broker just granted. A conflict with a lock held
    /// through another description (a local process, NFS) is returned as an
    /// error for which `is_conflict` is true; the kernel state is then as
    /// before and the caller must take the SMB lock back.
    pub fn lock(&self, offset: u64, length: u64, exclusive: bool) -> io::Result<()> {
        let mut held = self.held();
        let new = Held {
            offset,
            length,
            exclusive,
        };
        let Some((start, end)) = new.span() else {
            held.push(new);
            return Ok(());
        };
        let result = if exclusive {
            // One call, atomic: upgrades our own shared bytes too.
            self.set(start, end, true)
        } else {
            // Shared only where this open holds no exclusive lock, or the
            // kernel would downgrade those bytes.
            let mut done = Ok(());
            for (s, e) in gaps(start, end, &exclusive_spans(&held)) {
                done = self.set(s, e, false);
                if done.is_err() {
                    break;
                }
            }
            if done.is_err() {
                self.restore(start, end, &held);
            }
            done
        };
        if result.is_ok() {
            held.push(new);
        }
        result
    }

    /// Mirrors an SMB unlock the broker accepted: the range gets the modes
    /// the open's remaining locks give it.
    pub fn unlock(&self, offset: u64, length: u64) {
        let mut held = self.held();
        let Some(pos) = held
            .iter()
            .position(|h| h.offset == offset && h.length == length)
        else {
            return;
        };
        let gone = held.remove(pos);
        if let Some((start, end)) = gone.span() {
            self.restore(start, end, &held);
        }
    }

    /// Drops every mirrored lock (the open is closed). Also done by the
    /// kernel when the last fd of the description closes, but the keeper
    /// may still hold one.
    pub fn release_all(&self) {
        let mut held = self.held();
        if held.is_empty() {
            return;
        }
        held.clear();
        if let Err(e) = ofd::ofd_unlock(self.fd.as_fd(), 0, 0) {
            warn!(error = %e, "releasing mirrored OFD locks failed");
        }
    }

    /// Sets `[start, end)` to exactly what `held` implies: unlock, then
    /// shared pieces, then exclusive pieces. Between the unlock and the
    /// re-lock a local process could take a byte this open still holds in
    /// SMB; that is logged (the SMB lock stays, the local one wins locally).
    fn restore(&self, start: u64, end: u64, held: &[Held]) {
        if let Err(e) = ofd::ofd_unlock(self.fd.as_fd(), start, end - start) {
            warn!(error = %e, start, end, "OFD unlock failed");
        }
        let clip = |h: &Held| {
            h.span()
                .map(|(s, e)| (s.max(start), e.min(end)))
                .filter(|(s, e)| s < e)
        };
        for exclusive in [false, true] {
            for (s, e) in held
                .iter()
                .filter(|h| h.exclusive == exclusive)
                .filter_map(clip)
            {
                if let Err(err) = self.set(s, e, exclusive) {
                    warn!(error = %err, start = s, end = e, exclusive, "could not re-take a mirrored OFD lock");
                }
            }
        }
        debug!(start, end, "OFD mirror restored");
    }
}

fn exclusive_spans(held: &[Held]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = held
        .iter()
        .filter(|h| h.exclusive)
        .filter_map(Held::span)
        .collect();
    v.sort_unstable();
    v
}

/// The parts of `[start, end)` not covered by `covered` (sorted by start).
fn gaps(start: u64, end: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in covered {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
        if at >= end {
            break;
        }
    }
    if at < end {
        out.push((at, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn rw(p: &std::path::Path) -> Arc<OwnedFd> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap();
        Arc::new(f.into())
    }

    /// Would another description's lock on the range fail?
    fn blocked(other: &OwnedFd, start: u64, len: u64, exclusive: bool) -> bool {
        match ofd::ofd_lock(other.as_fd(), start, len, exclusive, false) {
            Ok(()) => {
                ofd::ofd_unlock(other.as_fd(), start, len).unwrap();
                false
            }
            Err(e) => {
                assert!(is_conflict(&e), "{e}");
                true
            }
        }
    }

    #[test]
    fn gaps_cover_the_rest() {
        assert_eq!(gaps(0, 10, &[]), vec![(0, 10)]);
        assert_eq!(gaps(0, 10, &[(2, 4), (3, 6)]), vec![(0, 2), (6, 10)]);
        assert_eq!(gaps(5, 10, &[(0, 20)]), vec![]);
        assert_eq!(gaps(0, 10, &[(10, 12)]), vec![(0, 10)]);
    }

    #[test]
    fn stacked_locks_keep_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let m = OfdMirror::new(rw(&p));
        let other = rw(&p);
        m.lock(0, 10, true).unwrap();
        // A shared lock inside our exclusive one must not downgrade it.
        m.lock(5, 10, false).unwrap();
        assert!(blocked(&other, 0, 1, false));
        assert!(blocked(&other, 9, 1, false));
        assert!(!blocked(&other, 12, 1, false));
        assert!(blocked(&other, 12, 1, true));
        // Unlocking the exclusive one leaves the shared bytes shared.
        m.unlock(0, 10);
        assert!(!blocked(&other, 0, 5, true));
        assert!(!blocked(&other, 5, 10, false));
        assert!(blocked(&other, 5, 10, true));
        // Two shared locks on one range: unlocking one keeps the other.
        m.lock(5, 10, false).unwrap();
        m.unlock(5, 10);
        assert!(blocked(&other, 5, 1, true));
        m.unlock(5, 10);
        assert!(!blocked(&other, 0, 100, true));
        // Zero-length and out-of-range locks mirror nothing but stack fine.
        m.lock(3, 0, true).unwrap();
        m.lock(u64::MAX - 1, 2, true).unwrap();
        assert!(!blocked(&other, 0, 0, true));
        m.release_all();
    }

    #[test]
    fn local_locks_refuse_and_leave_state_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let m = OfdMirror::new(rw(&p));
        let other = rw(&p);
        ofd::ofd_lock(other.as_fd(), 20, 5, false, false).unwrap();
        m.lock(0, 10, false).unwrap();
        // Exclusive over a local shared lock: refused, our shared bytes stay.
        let e = m.lock(0, 30, true).unwrap_err();
        assert!(is_conflict(&e));
        let probe = rw(&p);
        assert!(blocked(&probe, 0, 1, true));
        assert!(!blocked(&probe, 12, 1, true));
        // Shared alongside a local shared lock is fine; a local exclusive refuses it.
        m.lock(18, 10, false).unwrap();
        ofd::ofd_unlock(other.as_fd(), 20, 5).unwrap();
        ofd::ofd_lock(other.as_fd(), 40, 5, true, false).unwrap();
        assert!(is_conflict(&m.lock(35, 10, false).unwrap_err()));
        assert!(
            !blocked(&probe, 30, 5, true),
            "no residue of the refused lock"
        );
        m.release_all();
        assert!(!blocked(&probe, 0, 30, true));
    }
}
