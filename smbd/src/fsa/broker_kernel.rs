//! Broker calls for `kernel oplocks = yes` (see `server::kernel_oplock`):
//! what caching an open holds, lowering a grant the kernel cannot back, and
//! breaking an open whose kernel lease is being taken away.

use super::{lease_notice, Broker, FileKey};
use crate::fsa::lease::{self, H, R, W};
use crate::fsa::oplock::{self, Level};
use std::time::{Duration, Instant};
use tracing::debug;

/// Lease-style caching bits of an oplock level.
fn oplock_bits(level: Level) -> u32 {
    match level {
        Level::Batch => R | W | H,
        Level::Exclusive => R | W,
        Level::LevelII => R,
        Level::NoOplock => 0,
    }
}

impl Broker {
    /// What open `open_id` caches now, as lease bits (R, H, W); an oplock
    /// counts as batch = RWH, exclusive = RW, level II = R. A break in
    /// progress does not count until it is acknowledged or times out.
    pub fn caching(&self, key: FileKey, open_id: u64) -> u32 {
        let files = self.files();
        let Some(st) = files.get(&key) else {
            return 0;
        };
        let Some(o) = st.opens.iter().find(|o| o.open_id == open_id) else {
            return 0;
        };
        match o.lease {
            Some(id) => st.leases.get(&id).map_or(0, |l| l.state),
            None => oplock_bits(o.oplock.level),
        }
    }

    /// The kernel refused the lease that would back a grant just made to
    /// `open_id` (its CREATE response is not sent yet): lower the grant to
    /// at most `keep`, without telling anybody. A lease already being
    /// broken only gets its target lowered.
    pub fn kernel_limit(&self, key: FileKey, open_id: u64, keep: u32) {
        let mut files = self.files();
        let Some(st) = files.get_mut(&key) else {
            return;
        };
        let Some(o) = st.opens.iter_mut().find(|o| o.open_id == open_id) else {
            return;
        };
        match o.lease {
            Some(id) => {
                if let Some(l) = st.leases.get_mut(&id) {
                    match &mut l.breaking {
                        Some(b) => b.required &= keep,
                        None => l.state = lease::normalize(l.state & keep),
                    }
                    debug!(?key, state = l.state, "lease limited by the kernel");
                }
            }
            None => {
                if o.oplock.level.is_exclusive() {
                    o.oplock.level = if keep & R != 0 && o.oplock.level2_ok {
                        Level::LevelII
                    } else {
                        Level::NoOplock
                    };
                    debug!(?key, level = ?o.oplock.level, "oplock limited by the kernel");
                }
            }
        }
    }

    /// The kernel lease backing `open_id` is going away: break its SMB
    /// caching to at most `keep` (R|H when a reader came, 0 for a writer).
    /// True if the holder must acknowledge first; then
    /// [`Broker::oplock_changed`] fires on the acknowledgment, and
    /// [`Broker::oplock_expire`] completes the break after `timeout`.
    pub fn kernel_break(&self, key: FileKey, open_id: u64, keep: u32, timeout: Duration) -> bool {
        let mut notices = Vec::new();
        let wait = {
            let mut files = self.files();
            let Some(st) = files.get_mut(&key) else {
                return false;
            };
            let now = Instant::now();
            let super::FileState { opens, leases, .. } = st;
            let Some(pos) = opens.iter().position(|o| o.open_id == open_id) else {
                return false;
            };
            match opens[pos].lease {
                Some(id) => match leases.get_mut(&id) {
                    Some(l) => {
                        if let Some(b) = l.break_to(keep, now, timeout) {
                            notices.extend(lease_notice(opens, id, b, l.v2));
                        }
                        l.breaking.is_some()
                    }
                    None => false,
                },
                None => {
                    let rec = &mut opens[pos].oplock;
                    match rec.level {
                        _ if rec.breaking.is_some() => true,
                        l if l.is_exclusive() => {
                            let to = if keep & R != 0 {
                                Level::LevelII
                            } else {
                                Level::NoOplock
                            };
                            oplock::start_break(open_id, rec, to, now, timeout, &mut notices);
                            true
                        }
                        Level::LevelII if keep & R == 0 => {
                            rec.level = Level::NoOplock;
                            notices.push(oplock::BreakNotice {
                                owner: rec.owner,
                                open_id,
                                to: Level::NoOplock,
                                lease: None,
                            });
                            false
                        }
                        _ => false,
                    }
                }
            }
        };
        debug!(?key, open = open_id, keep, wait, "kernel lease break");
        self.deliver(notices);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsa::broker::Opened;
    use crate::fsa::lease::LeaseRequest;
    use crate::fsa::oplock::Intent;
    use crate::fsa::types::{access, share};
    use tokio::sync::mpsc;

    const K: FileKey = FileKey {
        dev: 5,
        ino: 6,
        stream: 0,
    };
    const RW: u32 = access::FILE_READ_DATA | access::FILE_WRITE_DATA;
    const T: Duration = Duration::from_secs(30);

    fn intent(requested: Level, lease: Option<LeaseRequest>) -> Intent {
        Intent {
            owner: 1,
            requested,
            oplocks: true,
            level2: true,
            may_break: true,
            break_timeout: T,
            lease,
            ..Intent::none()
        }
    }

    fn broker() -> (Broker, mpsc::UnboundedReceiver<oplock::BreakNotice>) {
        let b = Broker::new();
        let (tx, rx) = mpsc::unbounded_channel();
        b.register_break_sink(1, tx);
        (b, rx)
    }

    #[test]
    fn refused_write_lease_lowers_a_fresh_batch_grant_silently() {
        let (b, mut rx) = broker();
        let i = intent(Level::Batch, None);
        assert_eq!(
            b.open_with(K, "f".into(), 10, RW, share::ALL, false, &i),
            Ok(Opened::Granted(Level::Batch))
        );
        assert_eq!(b.caching(K, 10), R | W | H);
        b.kernel_limit(K, 10, R | H);
        assert_eq!(b.oplock_level(K, 10), Level::LevelII);
        assert_eq!(b.caching(K, 10), R);
        assert!(rx.try_recv().is_err(), "the client was never told batch");
    }

    #[test]
    fn kernel_break_of_a_batch_oplock_waits_for_the_acknowledgment() {
        let (b, mut rx) = broker();
        let i = intent(Level::Batch, None);
        b.open_with(K, "f".into(), 10, RW, share::ALL, false, &i)
            .unwrap();
        assert!(b.kernel_break(K, 10, 0, T));
        let n = rx.try_recv().unwrap();
        assert_eq!((n.open_id, n.to), (10, Level::NoOplock));
        // Still cached until the holder answers.
        assert_eq!(b.caching(K, 10), R | W | H);
        assert_eq!(b.oplock_ack(K, 10, 0), Ok(Level::NoOplock));
        assert_eq!(b.caching(K, 10), 0);
        // Nothing left to break.
        assert!(!b.kernel_break(K, 10, 0, T));
    }

    #[test]
    fn kernel_break_of_a_lease_keeps_what_the_reader_allows() {
        let (b, mut rx) = broker();
        let req = LeaseRequest {
            id: ([1; 16], [2; 16]),
            state: R | W | H,
            v2: false,
            epoch: 0,
            parent: None,
        };
        let i = intent(Level::NoOplock, Some(req));
        b.open_with(K, "f".into(), 10, RW, share::ALL, false, &i)
            .unwrap();
        assert_eq!(b.caching(K, 10), R | W | H);
        assert!(b.kernel_break(K, 10, R | H, T));
        let l = rx.try_recv().unwrap().lease.expect("a lease break");
        assert_eq!((l.from, l.to, l.ack_required), (R | W | H, R | H, true));
        assert_eq!(b.lease_ack(req.id, R | H), Ok(R | H));
        assert_eq!(b.caching(K, 10), R | H);
        // A fresh grant the kernel refuses loses W without a notification.
        b.kernel_limit(K, 10, 0);
        assert_eq!(b.caching(K, 10), 0);
        assert!(rx.try_recv().is_err());
    }
}
