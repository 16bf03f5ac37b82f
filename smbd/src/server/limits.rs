//! Failed-logon rate limiting per client address.
//!
//! After `limit` failed logons from one address within `window`, session
//! setups from that address are refused for `lockout`. Counting per address
//! (not per account) slows password guessing without letting a remote party
//! lock a named account out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most addresses tracked; the oldest quiet ones go first beyond it.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Default)]
struct Record {
    /// Times of recent failures, oldest first.
    failures: Vec<Instant>,
    blocked_until: Option<Instant>,
}

/// Failed logons by address.
#[derive(Debug, Default)]
pub struct LogonThrottle {
    by_addr: HashMap<IpAddr, Record>,
}

/// What a failure did to its address.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Counted(usize),
    /// The address just got blocked for this long.
    Blocked(Duration),
}

impl LogonThrottle {
    /// How much longer `addr` is blocked, if it is.
    pub fn blocked(&mut self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let rec = self.by_addr.get_mut(&addr)?;
        match rec.blocked_until {
            Some(t) if t > now => Some(t - now),
            Some(_) => {
                rec.blocked_until = None;
                rec.failures.clear();
                None
            }
            None => None,
        }
    }

    /// Records a failed logon; `limit` 0 disables blocking.
    pub fn failed(
        &mut self,
        addr: IpAddr,
        now: Instant,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Failure {
        if self.by_addr.len() >= MAX_TRACKED && !self.by_addr.contains_key(&addr) {
            self.evict(now, window);
        }
        let rec = self.by_addr.entry(addr).or_default();
        rec.failures
            .retain(|t| now.saturating_duration_since(*t) < window);
        rec.failures.push(now);
        let n = rec.failures.len();
        if limit > 0 && n >= limit as usize {
            rec.blocked_until = Some(now + lockout);
            return Failure::Blocked(lockout);
        }
        Failure::Counted(n)
    }

    /// A successful logon clears the address's record.
    pub fn succeeded(&mut self, addr: IpAddr) {
        if let Some(rec) = self.by_addr.get(&addr) {
            if rec.blocked_until.is_none() {
                self.by_addr.remove(&addr);
            }
        }
    }

    fn evict(&mut self, now: Instant, window: Duration) {
        self.by_addr.retain(|_, r| {
            r.blocked_until.is_some_and(|t| t > now)
                || r.failures
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        if self.by_addr.len() >= MAX_TRACKED {
            // Everything is recent: forget an arbitrary unblocked address.
            if let Some(k) = self
                .by_addr
                .iter()
                .find(|(_, r)| r.blocked_until.is_none())
                .map(|(k, _)| *k)
            {
                self.by_addr.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);
    const L: Duration = Duration::from_secs(30);

    #[test]
    fn blocks_after_limit_within_window_and_expires() {
        let mut t = LogonThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.failed(a, t0, 3, W, L), Failure::Counted(1));
        assert_eq!(t.failed(a, t0, 3, W, L), Failure::Counted(2));
        assert_eq!(t.blocked(a, t0), None);
        assert_eq!(t.failed(a, t0, 3, W, L), Failure::Blocked(L));
        assert_eq!(
            t.blocked(a, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(t.blocked(b, t0), None, "other addresses are not affected");
        assert_eq!(t.blocked(a, t0 + L), None, "the block expires");
        assert_eq!(
            t.failed(a, t0 + L, 3, W, L),
            Failure::Counted(1),
            "and the count restarts"
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut t = LogonThrottle::default();
        let a: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        t.failed(a, t0, 2, W, L);
        assert_eq!(t.failed(a, t0 + W, 2, W, L), Failure::Counted(1));
    }

    #[test]
    fn zero_limit_never_blocks_and_success_clears() {
        let mut t = LogonThrottle::default();
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(matches!(t.failed(a, t0, 0, W, L), Failure::Counted(_)));
        }
        t.succeeded(a);
        assert_eq!(t.failed(a, t0, 0, W, L), Failure::Counted(1));
    }

    #[test]
    fn tracking_is_bounded() {
        let mut t = LogonThrottle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let a = IpAddr::from(i.to_be_bytes());
            t.failed(a, t0, 5, W, L);
        }
        assert!(t.by_addr.len() <= MAX_TRACKED);
    }
}
