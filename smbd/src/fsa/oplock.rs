//! Oplocks (MS-FSA 2.1.5.17 "Server Requests an Oplock", 2.1.4.12 "Algorithm
//! to Check for an Oplock Break", 2.1.5.18 "Server Acknowledges an Oplock
//! Break"), reduced to what SMB2 oplocks need: level II, exclusive and batch.
//!
//! The state lives per open (one [`OplockRec`] in each broker open record) and
//! the rules here are pure functions over the records of one stream, so the
//! broker decides everything under its one lock. Leases will add a lease-key
//! owner and caching bits next to [`Level`]; the `breaking` record already
//! carries the breaking-to state they need.

use super::lease::LeaseRequest;
use super::types::access;
use crate::wire::NtStatus;
use std::time::Instant;

/// Oplock level of one open. Ordered by strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum Level {
    #[default]
    NoOplock,
    LevelII,
    Exclusive,
    Batch,
}

/// SMB2_OPLOCK_LEVEL_LEASE: the request or acknowledgment is about a lease.
pub const WIRE_LEASE: u8 = 0xFF;

impl Level {
    /// The level a client asked for; unknown values (and leases, which are
    /// not granted) mean none.
    pub fn from_wire(b: u8) -> Level {
        match b {
            0x01 => Level::LevelII,
            0x08 => Level::Exclusive,
            0x09 => Level::Batch,
            _ => Level::NoOplock,
        }
    }

    /// The SMB2 OplockLevel value.
    pub fn wire(self) -> u8 {
        match self {
            Level::NoOplock => 0x00,
            Level::LevelII => 0x01,
            Level::Exclusive => 0x08,
            Level::Batch => 0x09,
        }
    }

    /// The OplockLevel of a CREATE response: LEASE when a lease context
    /// answers the request, else this level.
    pub fn response_level(self, leased: bool) -> u8 {
        if leased {
            WIRE_LEASE
        } else {
            self.wire()
        }
    }

    /// Exclusive or batch: the holder may cache writes, so breaking it needs
    /// an acknowledgment.
    pub fn is_exclusive(self) -> bool {
        matches!(self, Level::Exclusive | Level::Batch)
    }
}

/// A break sent to the holder and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaking {
    pub to: Level,
    /// When the break times out and is completed without the holder.
    pub deadline: Instant,
}

/// The oplock part of one open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OplockRec {
    /// Who gets break notifications (a connection id).
    pub owner: u64,
    pub level: Level,
    pub breaking: Option<Breaking>,
    /// Breaks may stop at level II (the share allows level II oplocks).
    pub level2_ok: bool,
}

/// A break notification to deliver to the owner of an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakNotice {
    pub owner: u64,
    /// The open whose session carries the notification (for a lease: one
    /// of its opens).
    pub open_id: u64,
    pub to: Level,
    /// Set for a lease break; `to` is then unused.
    pub lease: Option<LeaseNotice>,
}

/// A Lease Break Notification (MS-SMB2 2.2.23.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseNotice {
    pub key: [u8; 16],
    pub from: u32,
    pub to: u32,
    /// NewEpoch (v2 leases; 0 for v1).
    pub epoch: u16,
    pub ack_required: bool,
}

/// What a new open asks for and what the share allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    /// Connection that gets break notifications for this open.
    pub owner: u64,
    pub requested: Level,
    /// CreateDisposition of the open (overwrites break harder).
    pub disposition: u32,
    pub is_dir: bool,
    /// Share option "oplocks".
    pub oplocks: bool,
    /// Share option "level2 oplocks".
    pub level2: bool,
    /// How long a conflicting open waits for an acknowledgment.
    pub break_timeout: std::time::Duration,
    /// The open may break others' oplocks (and then has to wait).
    pub may_break: bool,
    /// A lease context came with the open (and leases are on).
    pub lease: Option<LeaseRequest>,
}

impl Intent {
    /// An open that asks for nothing and never breaks anybody's oplock
    /// (internal opens, tests).
    pub fn none() -> Intent {
        Intent {
            owner: 0,
            requested: Level::NoOplock,
            disposition: crate::fsa::types::disposition::OPEN,
            is_dir: false,
            oplocks: false,
            level2: false,
            break_timeout: std::time::Duration::from_secs(35),
            may_break: false,
            lease: None,
        }
    }

    fn overwrites(&self) -> bool {
        use crate::fsa::types::disposition as d;
        matches!(
            self.disposition,
            d::SUPERSEDE | d::OVERWRITE | d::OVERWRITE_IF
        )
    }
}

/// Access that neither reads nor writes data: such "stat opens" do not
/// break oplocks (MS-FSA 2.1.4.12).
pub fn is_stat_open(access_mask: u32) -> bool {
    access_mask
        & !(access::FILE_READ_ATTRIBUTES | access::FILE_WRITE_ATTRIBUTES | access::SYNCHRONIZE)
        == 0
}

/// For leases READ_CONTROL is a stat open too (what smbtorture's
/// smb2.lease.statopen4 expects of Windows).
pub fn is_lease_stat_open(access_mask: u32) -> bool {
    is_stat_open(access_mask & !access::READ_CONTROL)
}

pub(super) fn start_break(
    open_id: u64,
    rec: &mut OplockRec,
    to: Level,
    now: Instant,
    timeout: std::time::Duration,
    out: &mut Vec<BreakNotice>,
) {
    let to = if to == Level::LevelII && !rec.level2_ok {
        Level::NoOplock
    } else {
        to
    };
    rec.breaking = Some(Breaking {
        to,
        deadline: now + timeout,
    });
    out.push(BreakNotice {
        owner: rec.owner,
        open_id,
        to,
        lease: None,
    });
}

/// An open conflicts with existing ones in share mode: a batch oplock is
/// broken first (the holder may just be keeping a closed handle open), as
/// Windows does. True if the open must wait and then try again.
pub fn check_sharing_violation<'a>(
    opens: impl IntoIterator<Item = (u64, &'a mut OplockRec)>,
    intent: &Intent,
    now: Instant,
    out: &mut Vec<BreakNotice>,
) -> bool {
    let mut wait = false;
    for (id, rec) in opens {
        if rec.level != Level::Batch {
            continue;
        }
        if rec.breaking.is_none() {
            start_break(id, rec, Level::LevelII, now, intent.break_timeout, out);
        }
        wait = true;
    }
    wait
}

/// The oplock-break check for an open that passed the share-mode check
/// (MS-FSA 2.1.4.12, Operation OPEN). Level II holders are broken to none
/// right away when the open overwrites; exclusive and batch holders are
/// broken (to level II, or none for an overwrite) and the open must wait for
/// them: true then.
pub fn check_open<'a>(
    opens: impl IntoIterator<Item = (u64, &'a mut OplockRec)>,
    access_mask: u32,
    intent: &Intent,
    now: Instant,
    out: &mut Vec<BreakNotice>,
) -> bool {
    let overwrite = intent.overwrites();
    if is_stat_open(access_mask) && !overwrite {
        return false;
    }
    let mut wait = false;
    for (id, rec) in opens {
        match rec.level {
            l if l.is_exclusive() => {
                if rec.breaking.is_none() {
                    let to = if overwrite {
                        Level::NoOplock
                    } else {
                        Level::LevelII
                    };
                    start_break(id, rec, to, now, intent.break_timeout, out);
                }
                wait = true;
            }
            Level::LevelII if overwrite => {
                rec.level = Level::NoOplock;
                out.push(BreakNotice {
                    owner: rec.owner,
                    open_id: id,
                    to: Level::NoOplock,
                    lease: None,
                });
            }
            _ => {}
        }
    }
    wait
}

/// The level a new open gets (MS-FSA 2.1.5.17): exclusive and batch only
/// for the one open of a stream, level II while nobody holds (or is losing)
/// an exclusive one; an exclusive request falls back to level II as
/// MS-SMB2 3.3.5.9 allows.
pub fn grant<'a>(others: impl IntoIterator<Item = &'a OplockRec>, intent: &Intent) -> Level {
    if !intent.oplocks || intent.is_dir || intent.requested == Level::NoOplock {
        return Level::NoOplock;
    }
    let mut any = false;
    let mut exclusive_held = false;
    for o in others {
        any = true;
        exclusive_held |= o.level.is_exclusive() || o.breaking.is_some();
    }
    if intent.requested.is_exclusive() && !any {
        return intent.requested;
    }
    if intent.level2 && !exclusive_held {
        Level::LevelII
    } else {
        Level::NoOplock
    }
}

/// Data of the stream changes (write, byte-range lock, size change): every
/// level II oplock, the actor's own included, goes to none without waiting
/// (MS-FSA 2.1.4.12). Exclusive holders are not affected: no other open can
/// change data while one exists.
pub fn break_level2<'a>(
    opens: impl IntoIterator<Item = (u64, &'a mut OplockRec)>,
    out: &mut Vec<BreakNotice>,
) {
    for (id, rec) in opens {
        if rec.level == Level::LevelII && rec.breaking.is_none() {
            rec.level = Level::NoOplock;
            out.push(BreakNotice {
                owner: rec.owner,
                open_id: id,
                to: Level::NoOplock,
                lease: None,
            });
        }
    }
}

/// The holder acknowledges a break with `wire_level` (MS-SMB2 3.3.5.22.1,
/// MS-FSA 2.1.5.18). Returns the level it now holds. A wrong level ends the
/// oplock and fails; an acknowledgment nobody asked for fails without
/// changing anything.
pub fn acknowledge(rec: &mut OplockRec, wire_level: u8) -> Result<Level, NtStatus> {
    let Some(b) = rec.breaking else {
        return Err(NtStatus::INVALID_OPLOCK_PROTOCOL);
    };
    let fail = |rec: &mut OplockRec, status| {
        rec.level = Level::NoOplock;
        rec.breaking = None;
        Err(status)
    };
    if wire_level == WIRE_LEASE {
        return fail(rec, NtStatus::INVALID_PARAMETER);
    }
    let ack = match wire_level {
        0x00 => Level::NoOplock,
        0x01 => Level::LevelII,
        _ => return fail(rec, NtStatus::INVALID_OPLOCK_PROTOCOL),
    };
    if !rec.level.is_exclusive() && ack != Level::NoOplock {
        return fail(rec, NtStatus::INVALID_OPLOCK_PROTOCOL);
    }
    let new = ack.min(b.to);
    rec.level = new;
    rec.breaking = None;
    Ok(new)
}

/// Completes breaks whose holder did not answer in time: the oplock is
/// gone. True if any did.
pub fn expire<'a>(opens: impl IntoIterator<Item = &'a mut OplockRec>, now: Instant) -> bool {
    let mut any = false;
    for rec in opens {
        if rec.breaking.is_some_and(|b| b.deadline <= now) {
            rec.level = Level::NoOplock;
            rec.breaking = None;
            any = true;
        }
    }
    any
}

/// When the earliest outstanding break times out; None if none is outstanding.
pub fn deadline<'a>(opens: impl IntoIterator<Item = &'a OplockRec>) -> Option<Instant> {
    opens
        .into_iter()
        .filter_map(|r| r.breaking.map(|b| b.deadline))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsa::types::disposition;
    use std::time::Duration;

    fn intent(req: Level) -> Intent {
        Intent {
            owner: 7,
            requested: req,
            oplocks: true,
            level2: true,
            may_break: true,
            ..Intent::none()
        }
    }

    fn held(level: Level) -> OplockRec {
        OplockRec {
            owner: 1,
            level,
            breaking: None,
            level2_ok: true,
        }
    }

    #[test]
    fn wire_values_round_trip() {
        for l in [
            Level::NoOplock,
            Level::LevelII,
            Level::Exclusive,
            Level::Batch,
        ] {
            assert_eq!(Level::from_wire(l.wire()), l);
        }
        assert_eq!(Level::from_wire(WIRE_LEASE), Level::NoOplock);
        assert_eq!(Level::from_wire(0x42), Level::NoOplock);
        assert_eq!(Level::Batch.response_level(false), 0x09);
        assert_eq!(Level::NoOplock.response_level(true), WIRE_LEASE);
    }

    #[test]
    fn grant_rules() {
        let none: [OplockRec; 0] = [];
        assert_eq!(grant(&none, &intent(Level::Batch)), Level::Batch);
        assert_eq!(grant(&none, &intent(Level::LevelII)), Level::LevelII);
        // Another open: exclusive falls back to level II.
        assert_eq!(
            grant(&[held(Level::NoOplock)], &intent(Level::Exclusive)),
            Level::LevelII
        );
        // Somebody holds exclusive: nothing.
        assert_eq!(
            grant(&[held(Level::Batch)], &intent(Level::Batch)),
            Level::NoOplock
        );
        let dir = Intent {
            is_dir: true,
            ..intent(Level::Batch)
        };
        assert_eq!(grant(&none, &dir), Level::NoOplock);
        let off = Intent {
            oplocks: false,
            ..intent(Level::Batch)
        };
        assert_eq!(grant(&none, &off), Level::NoOplock);
        let no2 = Intent {
            level2: false,
            ..intent(Level::Batch)
        };
        assert_eq!(grant(&[held(Level::LevelII)], &no2), Level::NoOplock);
    }

    #[test]
    fn open_breaks_exclusive_and_waits() {
        let now = Instant::now();
        let mut h = held(Level::Batch);
        let mut out = Vec::new();
        assert!(check_open(
            [(5, &mut h)],
            access::FILE_READ_DATA,
            &intent(Level::NoOplock),
            now,
            &mut out
        ));
        assert_eq!(
            out,
            vec![BreakNotice {
                owner: 1,
                open_id: 5,
                to: Level::LevelII,
                lease: None,
            }]
        );
        // A second conflicting open waits for the same break, sending nothing.
        out.clear();
        assert!(check_open(
            [(5, &mut h)],
            access::FILE_READ_DATA,
            &intent(Level::NoOplock),
            now,
            &mut out
        ));
        assert!(out.is_empty());
        assert_eq!(acknowledge(&mut h, 0x01), Ok(Level::LevelII));
        assert!(!check_open(
            [(5, &mut h)],
            access::FILE_READ_DATA,
            &intent(Level::NoOplock),
            now,
            &mut out
        ));
    }

    #[test]
    fn stat_opens_do_not_break_unless_overwriting() {
        let now = Instant::now();
        let mut h = held(Level::Exclusive);
        let mut out = Vec::new();
        let stat = access::FILE_READ_ATTRIBUTES | access::SYNCHRONIZE;
        assert!(!check_open(
            [(5, &mut h)],
            stat,
            &intent(Level::Batch),
            now,
            &mut out
        ));
        assert!(out.is_empty());
        let ow = Intent {
            disposition: disposition::OVERWRITE_IF,
            ..intent(Level::Batch)
        };
        assert!(check_open([(5, &mut h)], stat, &ow, now, &mut out));
        assert_eq!(out[0].to, Level::NoOplock);
        // Level II holders are broken by an overwrite without waiting.
        let mut l2 = held(Level::LevelII);
        out.clear();
        assert!(!check_open([(6, &mut l2)], stat, &ow, now, &mut out));
        assert_eq!(l2.level, Level::NoOplock);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn sharing_violation_breaks_only_batch() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut ex = held(Level::Exclusive);
        assert!(!check_sharing_violation(
            [(1, &mut ex)],
            &intent(Level::NoOplock),
            now,
            &mut out
        ));
        let mut b = held(Level::Batch);
        assert!(check_sharing_violation(
            [(2, &mut b)],
            &intent(Level::NoOplock),
            now,
            &mut out
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, Level::LevelII);
    }

    #[test]
    fn acknowledgments() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut h = held(Level::Batch);
        assert_eq!(
            acknowledge(&mut h, 0x01),
            Err(NtStatus::INVALID_OPLOCK_PROTOCOL),
            "nothing to acknowledge"
        );
        assert_eq!(h.level, Level::Batch);
        check_open(
            [(1, &mut h)],
            access::FILE_READ_DATA,
            &intent(Level::NoOplock),
            now,
            &mut out,
        );
        // Acknowledging to none when level II was offered is fine.
        assert_eq!(acknowledge(&mut h, 0x00), Ok(Level::NoOplock));
        let mut h = held(Level::Batch);
        check_open(
            [(1, &mut h)],
            access::FILE_READ_DATA,
            &intent(Level::NoOplock),
            now,
            &mut out,
        );
        assert_eq!(
            acknowledge(&mut h, 0x08),
            Err(NtStatus::INVALID_OPLOCK_PROTOCOL)
        );
        assert_eq!(h.level, Level::NoOplock);
        assert!(h.breaking.is_none());
    }

    #[test]
    fn level2_breaks_and_timeouts() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut a = held(Level::LevelII);
        let mut b = held(Level::Batch);
        break_level2([(1, &mut a), (2, &mut b)], &mut out);
        assert_eq!(a.level, Level::NoOplock);
        assert_eq!(b.level, Level::Batch);
        assert_eq!(out.len(), 1);
        // Level II to none needs no acknowledgment.
        assert_eq!(
            acknowledge(&mut a, 0x00),
            Err(NtStatus::INVALID_OPLOCK_PROTOCOL)
        );
        let i = Intent {
            break_timeout: Duration::from_secs(2),
            ..intent(Level::NoOplock)
        };
        check_open([(2, &mut b)], access::FILE_READ_DATA, &i, now, &mut out);
        assert_eq!(deadline([&b]), Some(now + Duration::from_secs(2)));
        assert!(!expire([&mut b], now + Duration::from_secs(1)));
        assert!(expire([&mut b], now + Duration::from_secs(2)));
        assert_eq!(b.level, Level::NoOplock);
        assert_eq!(deadline([&b]), None);
    }
}
