//! SMB2 leases (MS-SMB2 3.3.5.9.8 and 3.3.5.9.11 requests, 3.3.4.7 breaks,
//! 3.3.5.22.2 acknowledgments; MS-FSA 2.1.5.17 granular oplocks).
//!
//! A lease is the caching state (read, handle, write) that all opens of one
//! client with one lease key share on one stream. The broker keeps one
//! [`Lease`] per key in the stream's state; the rules here are pure
//! functions over it, so the broker decides everything under its one lock.
//!
//! Breaks follow what Windows does (and smbtorture's smb2.lease checks): a
//! new open takes W away from other keys' leases, a sharing violation takes
//! H, an overwrite takes everything, a write or byte-range lock takes R and
//! H. A break to a state that still caches handles or writes needs an
//! acknowledgment; further breaks while one is outstanding are remembered
//! and sent one step at a time after the acknowledgment.

use crate::wire::NtStatus;
use std::time::{Duration, Instant};

pub const R: u32 = 0x01;
pub const H: u32 = 0x02;
pub const W: u32 = 0x04;
pub const ALL: u32 = R | H | W;

/// A lease's identity: (ClientGuid, LeaseKey).
pub type LeaseId = ([u8; 16], [u8; 16]);

/// A lease context that came with a CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    pub id: LeaseId,
    pub state: u32,
    /// A v2 context on an SMB 3.x connection.
    pub v2: bool,
    pub epoch: u16,
    pub parent: Option<[u8; 16]>,
}

/// An outstanding break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaking {
    /// The state the holder was asked to break to.
    pub to: u32,
    /// Where the lease has to end up (later breaks lower it further).
    pub required: u32,
    pub deadline: Instant,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub state: u32,
    pub breaking: Option<Breaking>,
    pub epoch: u16,
    pub v2: bool,
    pub parent: Option<[u8; 16]>,
}

/// What a CREATE response reports about a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub state: u32,
    pub epoch: u16,
    pub v2: bool,
    pub parent: Option<[u8; 16]>,
    pub breaking: bool,
}

/// A break to notify: from, to, whether an acknowledgment is required, and
/// the epoch it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseBreak {
    pub from: u32,
    pub to: u32,
    pub ack_required: bool,
    pub epoch: u16,
}

/// Lease states a file may be granted: none, R, RH, RW and RWH. Without
/// read caching nothing is granted.
pub fn normalize(state: u32) -> u32 {
    if state & R == 0 {
        0
    } else {
        state & ALL
    }
}

impl Lease {
    /// A new lease with `state` (already limited to what may be granted).
    /// A v2 lease starts one epoch after the client's.
    pub fn new(req: &LeaseRequest, state: u32) -> Lease {
        Lease {
            state,
            breaking: None,
            epoch: if req.v2 { req.epoch.wrapping_add(1) } else { 0 },
            v2: req.v2,
            parent: req.parent,
        }
    }

    pub fn grant(&self) -> LeaseGrant {
        LeaseGrant {
            state: self.state,
            epoch: self.epoch,
            v2: self.v2,
            parent: self.parent,
            breaking: self.breaking.is_some(),
        }
    }

    fn bump(&mut self) {
        if self.v2 {
            self.epoch = self.epoch.wrapping_add(1);
        }
    }

    /// Another open of the same key asks for `requested`: the lease changes
    /// only to a strict superset that may be held entirely (`grantable`),
    /// and never while a break is outstanding.
    pub fn upgrade(&mut self, requested: u32, grantable: u32) -> bool {
        let q = normalize(requested);
        if self.breaking.is_some()
            || q & self.state != self.state
            || q == self.state
            || q & !grantable != 0
        {
            return false;
        }
        self.state = q;
        self.bump();
        true
    }

    /// Lowers the lease to at most `keep` of its bits. Returns the break to
    /// notify now, if any. During an outstanding break the new limit is
    /// only remembered.
    pub fn break_to(&mut self, keep: u32, now: Instant, timeout: Duration) -> Option<LeaseBreak> {
        let to = self.state & keep;
        if let Some(b) = &mut self.breaking {
            b.required &= to;
            return None;
        }
        if to == self.state {
            return None;
        }
        let from = self.state;
        self.bump();
        let ack_required = from & (W | H) != 0;
        if ack_required {
            self.breaking = Some(Breaking {
                to,
                required: to,
                deadline: now + timeout,
                timeout,
            });
        } else {
            self.state = to;
        }
        Some(LeaseBreak {
            from,
            to,
            ack_required,
            epoch: self.epoch,
        })
    }

    /// The holder acknowledges with `state` (MS-SMB2 3.3.5.22.2). Returns
    /// the next break when more has to go: handle caching first, then the
    /// rest.
    pub fn acknowledge(
        &mut self,
        state: u32,
        now: Instant,
    ) -> Result<Option<LeaseBreak>, NtStatus> {
        let Some(b) = self.breaking else {
            return Err(NtStatus::UNSUCCESSFUL);
        };
        if state & !b.to != 0 {
            return Err(NtStatus::REQUEST_NOT_ACCEPTED);
        }
        self.state = state;
        self.breaking = None;
        if state & !b.required == 0 {
            return Ok(None);
        }
        let without_h = state & !(H | W);
        let next = if state & H != 0 && b.required & H == 0 && without_h != b.required {
            without_h
        } else {
            b.required
        };
        let ack_required = state & (W | H) != 0;
        if ack_required {
            self.breaking = Some(Breaking {
                to: next,
                required: b.required,
                deadline: now + b.timeout,
                timeout: b.timeout,
            });
        } else {
            self.state = next;
        }
        Ok(Some(LeaseBreak {
            from: state,
            to: next,
            ack_required,
            epoch: self.epoch,
        }))
    }

    /// An unacknowledged break timed out: the holder loses all caching.
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.breaking.is_some_and(|b| b.deadline <= now) {
            self.state = 0;
            self.breaking = None;
            return true;
        }
        false
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.breaking.map(|b| b.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(state: u32, v2: bool) -> LeaseRequest {
        LeaseRequest {
            id: ([1; 16], [2; 16]),
            state,
            v2,
            epoch: 0x11,
            parent: None,
        }
    }

    const T: Duration = Duration::from_secs(35);

    #[test]
    fn requests_without_read_get_nothing() {
        for (asked, got) in [
            (0, 0),
            (R, R),
            (H, 0),
            (W, 0),
            (R | H, R | H),
            (R | W, R | W),
            (H | W, 0),
            (ALL, ALL),
        ] {
            assert_eq!(normalize(asked), got, "{asked:#x}");
        }
    }

    #[test]
    fn upgrades_only_to_strict_supersets_that_fit() {
        let mut l = Lease::new(&req(R | H, true), R | H);
        assert_eq!(l.epoch, 0x12);
        assert!(!l.upgrade(R | W, ALL), "RW is no superset of RH");
        assert!(l.upgrade(ALL, ALL));
        assert_eq!((l.state, l.epoch), (ALL, 0x13));
        assert!(!l.upgrade(R | H, ALL), "no downgrade");
        let mut l = Lease::new(&req(R, false), R);
        assert!(
            !l.upgrade(ALL, R | H),
            "RWH cannot be held: no change at all"
        );
        assert_eq!(l.state, R);
        assert_eq!(l.epoch, 0, "v1 leases have no epoch");
    }

    #[test]
    fn breaks_step_down_after_acknowledgments() {
        let now = Instant::now();
        let mut l = Lease::new(&req(ALL, true), ALL);
        let b = l.break_to(R | H, now, T).expect("W goes");
        assert_eq!(
            (b.from, b.to, b.ack_required, b.epoch),
            (ALL, R | H, true, 0x13)
        );
        assert_eq!(l.state, ALL, "state holds until acknowledged");
        // An overwrite meanwhile is only remembered.
        assert_eq!(l.break_to(0, now, T), None);
        // Acknowledging more than asked is refused.
        assert_eq!(l.acknowledge(ALL, now), Err(NtStatus::REQUEST_NOT_ACCEPTED));
        let next = l
            .acknowledge(R | H, now)
            .unwrap()
            .expect("handle caching next");
        assert_eq!((next.from, next.to, next.ack_required), (R | H, R, true));
        assert_eq!(next.epoch, 0x13, "follow-up breaks keep the epoch");
        let last = l.acknowledge(R, now).unwrap().expect("read caching last");
        assert_eq!((last.from, last.to, last.ack_required), (R, 0, false));
        assert_eq!(l.state, 0);
        assert_eq!(l.acknowledge(0, now), Err(NtStatus::UNSUCCESSFUL));
    }

    #[test]
    fn read_only_breaks_need_no_acknowledgment_and_timeouts_clear() {
        let now = Instant::now();
        let mut l = Lease::new(&req(R, false), R);
        let b = l.break_to(0, now, T).unwrap();
        assert!(!b.ack_required);
        assert_eq!((l.state, l.breaking), (0, None));
        let mut l = Lease::new(&req(ALL, false), ALL);
        l.break_to(R | H, now, T).unwrap();
        assert_eq!(l.deadline(), Some(now + T));
        assert!(!l.expire(now));
        assert!(l.expire(now + T));
        assert_eq!(l.state, 0);
        // Acknowledging less than asked is fine.
        let mut l = Lease::new(&req(ALL, false), ALL);
        l.break_to(R | H, now, T).unwrap();
        assert_eq!(l.acknowledge(0, now), Ok(None));
    }
}
