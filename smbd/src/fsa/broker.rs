//! The open-file broker: the one place that decides conflicts between opens of
//! the same file (share modes, delete-pending, byte-range locks).
//!
//! Every call is a self-contained request with a plain-data answer, so the
//! broker can move behind a socket (one broker for all workers) without
//! changing its callers. Today it is an in-process object.

use super::lease::{self, Lease, LeaseBreak, LeaseGrant, LeaseId};
use super::oplock::{self, BreakNotice, Intent, LeaseNotice, Level, OplockRec};
use super::sharemode::pair_conflicts;
use super::types::{access, nt_now};
use super::writetime::{Change, FileWriteTime, OpenWriteTime};
use crate::wire::NtStatus;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

#[path = "broker_kernel.rs"]
mod kernel;

/// Identifies a file (and one of its data streams) independent of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    /// 0 for the file itself (its default data stream); else a named stream's
    /// `fsa::streams::stream_id`. Share modes and locks are per stream.
    pub stream: u64,
}

impl FileKey {
    /// The file a stream belongs to.
    pub fn base(self) -> FileKey {
        FileKey { stream: 0, ..self }
    }
}

#[derive(Debug, Clone)]
struct OpenRec {
    open_id: u64,
    access: u32,
    share: u32,
    delete_on_close: bool,
    oplock: OplockRec,
    /// The lease this open shares (its oplock is then unused).
    lease: Option<LeaseId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteLock {
    open_id: u64,
    offset: u64,
    length: u64,
    exclusive: bool,
}

impl ByteLock {
    fn overlaps(&self, offset: u64, length: u64) -> bool {
        if self.length == 0 || length == 0 {
            return false;
        }
        // Inclusive last bytes: a lock may end at the file's last possible
        // byte (offset u64::MAX, length 1), where an exclusive end overflows.
        let a_last = self.offset.saturating_add(self.length - 1);
        let b_last = offset.saturating_add(length - 1);
        self.offset <= b_last && offset <= a_last
    }

    /// Whether a lock request for (offset, length) contends with this lock.
    /// A zero-length lock sits between bytes: it contends only with a range
    /// that holds it strictly after that range's first byte (Windows; the
    /// smbtorture zero-byte table), and never with another zero-length lock.
    fn contends(&self, offset: u64, length: u64) -> bool {
        let inside = |point: u64, start: u64, len: u64| {
            start < point && point <= start.saturating_add(len - 1)
        };
        match (self.length, length) {
            (0, 0) => false,
            (0, _) => inside(self.offset, offset, length),
            (_, 0) => inside(offset, self.offset, self.length),
            _ => self.overlaps(offset, length),
        }
    }
}

#[derive(Debug, Default)]
struct FileState {
    /// Share-relative path, kept current across renames.
    path: PathBuf,
    opens: Vec<OpenRec>,
    /// Leases on this stream, by (ClientGuid, LeaseKey).
    leases: HashMap<LeaseId, Lease>,
    delete_pending: bool,
    /// The file's own opens are gone with delete pending, but opens of its
    /// streams hold the unlink back (entry kept only for this).
    delete_deferred: bool,
    locks: Vec<ByteLock>,
    write_time: FileWriteTime,
    /// Woken whenever locks of this file are released, so that blocked
    /// (pending) lock requests retry.
    unlocked: Arc<Notify>,
    /// Woken when an oplock of this stream changes (acknowledged, timed
    /// out, its open closed), so that opens waiting for a break retry.
    oplock_changed: Arc<Notify>,
}

/// Result of [`Broker::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The open is recorded with this oplock.
    Granted(Level),
    /// Nothing was recorded: oplocks are being broken; wait for
    /// [`Broker::oplock_changed`] (or the break deadline) and try again.
    Wait,
}

/// Where break notifications for a connection go.
pub type BreakSink = mpsc::UnboundedSender<BreakNotice>;

/// What the last close of an open means for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseOutcome {
    /// The file must be deleted now, at this path.
    pub delete: Option<PathBuf>,
    /// No open is left.
    pub last: bool,
    /// Last close: the LastWriteTime to store on disk, if it may differ.
    pub write_time: Option<u64>,
    /// A named stream was delete-on-close: remove it (not the file).
    pub delete_stream: bool,
}

#[derive(Debug, Default)]
pub struct Broker {
    files: Mutex<HashMap<FileKey, FileState>>,
    /// Break notification queues by owner (connection id).
    sinks: Mutex<HashMap<u64, BreakSink>>,
    /// Which stream each lease is on (a key leases one stream only). Locked
    /// after `files`.
    lease_files: Mutex<HashMap<LeaseId, FileKey>>,
    /// How many directory leases exist: parent lookups are skipped at zero.
    dir_leases: AtomicUsize,
}

fn oplocks_of(st: &mut FileState) -> impl Iterator<Item = (u64, &mut OplockRec)> {
    st.opens.iter_mut().map(|o| (o.open_id, &mut o.oplock))
}

/// The notice for a break of lease `id`, sent to the connection of its most
/// recent open.
fn lease_notice(opens: &[OpenRec], id: LeaseId, b: LeaseBreak, v2: bool) -> Option<BreakNotice> {
    let o = opens.iter().rev().find(|o| o.lease == Some(id))?;
    Some(BreakNotice {
        owner: o.oplock.owner,
        open_id: o.open_id,
        to: Level::NoOplock,
        lease: Some(LeaseNotice {
            key: id.1,
            from: b.from,
            to: b.to,
            epoch: if v2 { b.epoch } else { 0 },
            ack_required: b.ack_required,
        }),
    })
}

/// Lowers every lease of the stream but `except` to at most `keep`; true if
/// one of them still holds a bit of `wait_for` that has to go, so that the
/// caller must wait for the acknowledgment.
#[allow(clippy::too_many_arguments)]
fn break_leases(
    st: &mut FileState,
    except: Option<LeaseId>,
    keep: u32,
    wait_for: u32,
    now: Instant,
    timeout: std::time::Duration,
    out: &mut Vec<BreakNotice>,
) -> bool {
    let mut wait = false;
    let FileState { opens, leases, .. } = st;
    for (id, l) in leases.iter_mut() {
        if Some(*id) == except {
            continue;
        }
        if l.state & wait_for & !keep != 0 {
            wait = true;
        }
        if let Some(b) = l.break_to(keep, now, timeout) {
            out.extend(lease_notice(opens, *id, b, l.v2));
        }
    }
    wait
}

fn has_stream_opens(files: &HashMap<FileKey, FileState>, base: FileKey) -> bool {
    files
        .iter()
        .any(|(k, s)| k.base() == base && k.stream != 0 && !s.opens.is_empty())
}

/// Conflicts between a file and its streams (MS-FSA 2.1.5.1.2): a stream
/// cannot be opened while the file is delete-pending, and opening the file
/// for DELETE must be compatible with every open stream, as if each stream
/// were opened for DELETE too.
fn stream_conflict(
    files: &HashMap<FileKey, FileState>,
    key: FileKey,
    access: u32,
    share: u32,
) -> Option<NtStatus> {
    if key.stream != 0 {
        let base = files.get(&key.base())?;
        return base.delete_pending.then_some(NtStatus::DELETE_PENDING);
    }
    if access & access::DELETE == 0 {
        return None;
    }
    files
        .iter()
        .filter(|(k, _)| k.base() == key && k.stream != 0)
        .flat_map(|(_, s)| &s.opens)
        .any(|o| pair_conflicts(o.access, o.share, access::DELETE, share))
        .then_some(NtStatus::SHARING_VIOLATION)
}

impl Broker {
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, FileState>> {
        // A panic while holding the lock cannot leave the map half-updated in
        // a way that matters more than refusing service would.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks share modes and delete-pending, and records the open if
    /// allowed (no oplock, never breaks one).
    pub fn open(
        &self,
        key: FileKey,
        path: PathBuf,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
    ) -> Result<(), NtStatus> {
        match self.open_with(
            key,
            path,
            open_id,
            access,
            share,
            delete_on_close,
            &Intent::none(),
        )? {
            Opened::Granted(_) => Ok(()),
            Opened::Wait => Err(NtStatus::SHARING_VIOLATION),
        }
    }

    /// Opens with oplock handling (MS-FSA 2.1.5.1.2): a sharing violation
    /// first breaks batch oplocks, an allowed open breaks conflicting
    /// oplocks; either may have to wait for the holders. Otherwise records
    /// the open with the oplock it gets.
    #[allow(clippy::too_many_arguments)]
    pub fn open_with(
        &self,
        key: FileKey,
        path: PathBuf,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
        intent: &Intent,
    ) -> Result<Opened, NtStatus> {
        let mut notices = Vec::new();
        let r = self.open_locked(
            key,
            path,
            open_id,
            access,
            share,
            delete_on_close,
            intent,
            &mut notices,
        );
        self.deliver(notices);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn open_locked(
        &self,
        key: FileKey,
        path: PathBuf,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
        intent: &Intent,
        notices: &mut Vec<BreakNotice>,
    ) -> Result<Opened, NtStatus> {
        let mut files = self.files();
        if let Some(status) = stream_conflict(&files, key, access, share) {
            return Err(status);
        }
        let my_lease = intent.lease.map(|l| l.id);
        if let Some(id) = my_lease {
            if self.lease_file(id).is_some_and(|k| k != key) {
                debug!(?key, "lease key already leases another file");
                return Err(NtStatus::INVALID_PARAMETER);
            }
        }
        let st = files.entry(key).or_default();
        if st.opens.is_empty() && !st.delete_deferred {
            st.path = path;
            st.delete_pending = false;
        }
        if st.delete_pending {
            return Err(NtStatus::DELETE_PENDING);
        }
        let now = Instant::now();
        if st
            .opens
            .iter()
            .any(|o| pair_conflicts(o.access, o.share, access, share))
        {
            if intent.may_break {
                let mut wait =
                    oplock::check_sharing_violation(oplocks_of(st), intent, now, notices);
                // Handle caching goes first: the holder may just be keeping
                // a closed handle open.
                wait |= break_leases(
                    st,
                    my_lease,
                    lease::R | lease::W,
                    lease::H,
                    now,
                    intent.break_timeout,
                    notices,
                );
                if wait {
                    return Ok(Opened::Wait);
                }
            }
            if st.opens.is_empty() {
                files.remove(&key);
            }
            return Err(NtStatus::SHARING_VIOLATION);
        }
        if intent.may_break {
            let mut wait = oplock::check_open(oplocks_of(st), access, intent, now, notices);
            let overwrite = matches!(
                intent.disposition,
                super::types::disposition::SUPERSEDE
                    | super::types::disposition::OVERWRITE
                    | super::types::disposition::OVERWRITE_IF
            );
            if overwrite || !oplock::is_lease_stat_open(access) || delete_on_close {
                // An open that dooms the file takes handle caching away
                // too, so that the other holders close their handles (it
                // does not wait for them).
                let keep = match (overwrite, delete_on_close && !st.opens.is_empty()) {
                    (true, _) => 0,
                    (false, true) => lease::R,
                    (false, false) => lease::R | lease::H,
                };
                wait |= break_leases(
                    st,
                    my_lease,
                    keep,
                    lease::W,
                    now,
                    intent.break_timeout,
                    notices,
                );
            }
            if wait {
                return Ok(Opened::Wait);
            }
        }
        let level = match intent.lease {
            Some(_) => Level::NoOplock,
            None => {
                // Level II oplocks and handle-caching leases exclude each other.
                let h_lease = st.leases.values().any(|l| l.state & lease::H != 0);
                let i = Intent {
                    level2: intent.level2 && !h_lease,
                    ..*intent
                };
                oplock::grant(st.opens.iter().map(|o| &o.oplock), &i)
            }
        };
        if let Some(req) = intent.lease {
            let mut grantable = lease::ALL;
            // Stat opens without a lease do not keep write caching away.
            if st.opens.iter().any(|o| {
                o.lease != Some(req.id)
                    && (o.lease.is_some() || !oplock::is_lease_stat_open(o.access))
            }) {
                grantable &= !lease::W;
            }
            if st
                .opens
                .iter()
                .any(|o| o.lease.is_none() && o.oplock.level != Level::NoOplock)
            {
                grantable &= !lease::H;
            }
            if intent.is_dir {
                // Directories cache reads (listings) and handles only.
                grantable &= lease::R | lease::H;
            }
            if !intent.oplocks {
                grantable = 0;
            }
            match st.leases.get_mut(&req.id) {
                Some(l) => {
                    // A directory's lease never caches writes: a request
                    // for RWH upgrades it to RH.
                    let asked = if intent.is_dir {
                        req.state & (lease::R | lease::H)
                    } else {
                        req.state
                    };
                    l.upgrade(asked, grantable);
                }
                None => {
                    let mut l = Lease::new(&req, lease::normalize(req.state) & grantable);
                    l.dir = intent.is_dir;
                    if l.dir {
                        self.dir_leases.fetch_add(1, Ordering::Relaxed);
                    }
                    st.leases.insert(req.id, l);
                    self.lease_files_lock().insert(req.id, key);
                }
            }
        }
        st.opens.push(OpenRec {
            open_id,
            access,
            share,
            delete_on_close,
            oplock: OplockRec {
                owner: intent.owner,
                level,
                breaking: None,
                level2_ok: intent.level2,
            },
            lease: my_lease,
        });
        Ok(Opened::Granted(level))
    }

    /// Registers the queue that gets break notifications for `owner`.
    pub fn register_break_sink(&self, owner: u64, sink: BreakSink) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner, sink);
    }

    /// The owner is gone (its opens are closed separately).
    pub fn unregister_break_sink(&self, owner: u64) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&owner);
    }

    fn deliver(&self, notices: Vec<BreakNotice>) {
        if notices.is_empty() {
            return;
        }
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for n in notices {
            debug!(open = n.open_id, owner = n.owner, to = ?n.to, "oplock break");
            match sinks.get(&n.owner) {
                Some(tx) if tx.send(n).is_ok() => {}
                _ => debug!(owner = n.owner, "oplock holder has no break queue"),
            }
        }
    }

    /// The holder of `open_id` acknowledges a break (MS-SMB2 3.3.5.22.1);
    /// returns the level it keeps. Waiting opens are woken either way.
    pub fn oplock_ack(
        &self,
        key: FileKey,
        open_id: u64,
        wire_level: u8,
    ) -> Result<Level, NtStatus> {
        let mut files = self.files();
        let st = files.get_mut(&key).ok_or(NtStatus::FILE_CLOSED)?;
        let rec = st
            .opens
            .iter_mut()
            .find(|o| o.open_id == open_id)
            .ok_or(NtStatus::FILE_CLOSED)?;
        let was_breaking = rec.oplock.breaking.is_some();
        let r = oplock::acknowledge(&mut rec.oplock, wire_level);
        if was_breaking {
            st.oplock_changed.notify_waiters();
        }
        r
    }

    /// Data of the stream changes: level II oplocks go to none (no waiting).
    /// Returns how many were broken.
    /// Leases of other keys than the actor's lose read and handle caching
    /// (the actor's own lease keeps them).
    pub fn oplock_break_level2(&self, key: FileKey, actor: u64) -> usize {
        let mut notices = Vec::new();
        if let Some(st) = self.files().get_mut(&key) {
            oplock::break_level2(oplocks_of(st), &mut notices);
            let mine = st
                .opens
                .iter()
                .find(|o| o.open_id == actor)
                .and_then(|o| o.lease);
            let timeout = std::time::Duration::from_secs(35);
            break_leases(st, mine, 0, 0, Instant::now(), timeout, &mut notices);
        }
        let n = notices.len();
        self.deliver(notices);
        n
    }

    /// Notified when an oplock of the stream changes; None if it has no opens.
    /// Register (`Notified::enable`) before checking [`Broker::oplock_deadline`].
    pub fn oplock_changed(&self, key: FileKey) -> Option<Arc<Notify>> {
        self.files().get(&key).map(|s| s.oplock_changed.clone())
    }

    /// When the earliest unacknowledged break of the stream times out.
    pub fn oplock_deadline(&self, key: FileKey) -> Option<Instant> {
        let files = self.files();
        let st = files.get(&key)?;
        let op = oplock::deadline(st.opens.iter().map(|o| &o.oplock));
        let ls = st.leases.values().filter_map(Lease::deadline).min();
        match (op, ls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Completes the breaks of the stream that timed out.
    pub fn oplock_expire(&self, key: FileKey) {
        if let Some(st) = self.files().get_mut(&key) {
            let now = Instant::now();
            let mut any = oplock::expire(st.opens.iter_mut().map(|o| &mut o.oplock), now);
            for l in st.leases.values_mut() {
                any |= l.expire(now);
            }
            if any {
                debug!(?key, "oplock or lease break timed out");
                st.oplock_changed.notify_waiters();
            }
        }
    }

    /// A durable open lost its connection (MS-SMB2 3.3.7.1): it stays, with
    /// its share mode, locks and oplock, if it still holds a batch oplock that
    /// is not being broken; its breaks then go to `owner` (whose sink purges
    /// it). False if it must be closed instead.
    pub fn oplock_disconnect(&self, key: FileKey, open_id: u64, owner: u64) -> bool {
        let mut files = self.files();
        let Some(st) = files.get_mut(&key) else {
            return false;
        };
        let FileState { opens, leases, .. } = st;
        let Some(rec) = opens.iter_mut().find(|o| o.open_id == open_id) else {
            return false;
        };
        let keep = match rec.lease.and_then(|id| leases.get(&id)) {
            // A lease keeps the open while it caches handles and no break
            // is outstanding: a break sent to the lost connection would
            // otherwise hold the breaking open until it times out.
            Some(l) => l.state & lease::H != 0 && l.breaking.is_none(),
            None => rec.oplock.level == Level::Batch && rec.oplock.breaking.is_none(),
        };
        if keep {
            rec.oplock.owner = owner;
        }
        keep
    }

    /// A disconnected durable open is reclaimed by connection `owner`;
    /// returns the oplock it keeps. None if it is gone or being broken (a
    /// conflicting open is purging it).
    pub fn oplock_reattach(&self, key: FileKey, open_id: u64, owner: u64) -> Option<Level> {
        let mut files = self.files();
        let rec = files
            .get_mut(&key)?
            .opens
            .iter_mut()
            .find(|o| o.open_id == open_id)?;
        if rec.oplock.breaking.is_some() {
            return None;
        }
        rec.oplock.owner = owner;
        Some(rec.oplock.level)
    }

    /// A disconnected durable open moves to another worker: its breaks go to
    /// `to` (that worker's disconnected-open owner) from now on. False, and
    /// nothing changes, if the open is gone, belongs to someone other than
    /// `from`, or its oplock or lease is being broken (a conflicting open is
    /// purging it).
    pub fn oplock_transfer(&self, key: FileKey, open_id: u64, from: u64, to: u64) -> bool {
        let mut files = self.files();
        let Some(st) = files.get_mut(&key) else {
            return false;
        };
        let FileState { opens, leases, .. } = st;
        let Some(rec) = opens.iter_mut().find(|o| o.open_id == open_id) else {
            return false;
        };
        let lease_breaking = rec
            .lease
            .and_then(|id| leases.get(&id))
            .is_some_and(|l| l.breaking.is_some());
        if rec.oplock.owner != from || rec.oplock.breaking.is_some() || lease_breaking {
            return false;
        }
        rec.oplock.owner = to;
        true
    }

    /// The byte-range locks open `open_id` holds (offset, length,
    /// exclusive), in grant order.
    pub fn locks_of(&self, key: FileKey, open_id: u64) -> Vec<(u64, u64, bool)> {
        self.files().get(&key).map_or_else(Vec::new, |st| {
            st.locks
                .iter()
                .filter(|l| l.open_id == open_id)
                .map(|l| (l.offset, l.length, l.exclusive))
                .collect()
        })
    }

    /// The lease an open shares, if any.
    pub fn open_lease(&self, key: FileKey, open_id: u64) -> Option<LeaseId> {
        self.files()
            .get(&key)?
            .opens
            .iter()
            .find(|o| o.open_id == open_id)?
            .lease
    }

    fn lease_files_lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, FileKey>> {
        self.lease_files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream a lease is on, if it exists.
    pub fn lease_file(&self, id: LeaseId) -> Option<FileKey> {
        self.lease_files_lock().get(&id).copied()
    }

    /// What a CREATE response reports for lease `id` on `key`.
    pub fn lease_grant(&self, key: FileKey, id: LeaseId) -> Option<LeaseGrant> {
        self.files().get(&key)?.leases.get(&id).map(Lease::grant)
    }

    /// Lease Break Acknowledgment (MS-SMB2 3.3.5.22.2): returns the state
    /// the lease now has; a further break may follow.
    pub fn lease_ack(&self, id: LeaseId, state: u32) -> Result<u32, NtStatus> {
        let mut notices = Vec::new();
        let r = {
            let mut files = self.files();
            let key = self.lease_file(id).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
            let st = files.get_mut(&key).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
            let FileState {
                opens,
                leases,
                oplock_changed,
                ..
            } = st;
            let l = leases.get_mut(&id).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
            let next = l.acknowledge(state, Instant::now())?;
            if let Some(b) = next {
                notices.extend(lease_notice(opens, id, b, l.v2));
            }
            oplock_changed.notify_waiters();
            Ok(state)
        };
        self.deliver(notices);
        r
    }

    /// Whether any directory lease exists (else parents need no lookup).
    pub fn has_dir_leases(&self) -> bool {
        self.dir_leases.load(Ordering::Relaxed) != 0
    }

    /// The parent lease an open's (v2) lease names, as a lease id.
    pub fn lease_parent(&self, key: FileKey, open_id: u64) -> Option<LeaseId> {
        let files = self.files();
        let st = files.get(&key)?;
        let id = st.opens.iter().find(|o| o.open_id == open_id)?.lease?;
        let parent = st.leases.get(&id)?.parent?;
        Some((id.0, parent))
    }

    /// An entry of directory `dir` was created, deleted, renamed or
    /// modified: its directory leases break to none (no waiting), except the
    /// one the acting open names as its parent.
    pub fn break_dir_leases(&self, dir: FileKey, except: Option<LeaseId>) {
        let mut notices = Vec::new();
        if let Some(st) = self.files().get_mut(&dir) {
            let timeout = std::time::Duration::from_secs(35);
            break_leases(st, except, 0, 0, Instant::now(), timeout, &mut notices);
        }
        self.deliver(notices);
    }

    /// A rename through `actor`: other keys' leases lose handle caching
    /// (no waiting).
    pub fn break_handle_leases(&self, key: FileKey, actor: u64) {
        let mut notices = Vec::new();
        if let Some(st) = self.files().get_mut(&key) {
            let mine = st
                .opens
                .iter()
                .find(|o| o.open_id == actor)
                .and_then(|o| o.lease);
            let timeout = std::time::Duration::from_secs(35);
            let keep = lease::R | lease::W;
            break_leases(st, mine, keep, 0, Instant::now(), timeout, &mut notices);
        }
        self.deliver(notices);
    }

    /// The oplock an open holds now.
    pub fn oplock_level(&self, key: FileKey, open_id: u64) -> Level {
        self.files()
            .get(&key)
            .and_then(|s| s.opens.iter().find(|o| o.open_id == open_id))
            .map_or(Level::NoOplock, |o| o.oplock.level)
    }

    /// Would an open with these masks conflict? (No record is made.)
    pub fn would_conflict(&self, key: FileKey, access: u32, share: u32) -> Option<NtStatus> {
        let files = self.files();
        let st = files.get(&key)?;
        if st.delete_pending {
            return Some(NtStatus::DELETE_PENDING);
        }
        st.opens
            .iter()
            .any(|o| pair_conflicts(o.access, o.share, access, share))
            .then_some(NtStatus::SHARING_VIOLATION)
    }

    /// Number of opens of the file.
    pub fn open_count(&self, key: FileKey) -> usize {
        self.files().get(&key).map_or(0, |s| s.opens.len())
    }

    /// Removes an open; says whether the file must now be deleted.
    pub fn close(&self, key: FileKey, open_id: u64) -> CloseOutcome {
        let (out, wake) = self.close_deferring_wake(key, open_id);
        if let Some(w) = wake {
            w.notify_waiters();
        }
        out
    }

    /// Like [`Broker::close`], but when the file must be deleted, the opens
    /// waiting for this one's oplock are woken by the caller (with the
    /// returned Notify) only once the file is gone, so a waiting OPEN_IF
    /// creates a new file instead of opening the doomed one.
    pub fn close_deferring_wake(
        &self,
        key: FileKey,
        open_id: u64,
    ) -> (CloseOutcome, Option<Arc<Notify>>) {
        let mut wake = None;
        let mut notices = Vec::new();
        let out = self.close_inner(key, open_id, &mut wake, &mut notices);
        self.deliver(notices);
        match (&out.delete, wake) {
            (Some(_), w) => (out, w),
            (None, Some(w)) => {
                w.notify_waiters();
                (out, None)
            }
            (None, None) => (out, None),
        }
    }

    fn close_inner(
        &self,
        key: FileKey,
        open_id: u64,
        wake: &mut Option<Arc<Notify>>,
        notices: &mut Vec<BreakNotice>,
    ) -> CloseOutcome {
        let mut files = self.files();
        let Some(st) = files.get_mut(&key) else {
            return CloseOutcome {
                delete: None,
                last: true,
                write_time: None,
                delete_stream: false,
            };
        };
        if let Some(pos) = st.opens.iter().position(|o| o.open_id == open_id) {
            let rec = st.opens.remove(pos);
            if rec.delete_on_close {
                st.delete_pending = true;
                // The file is doomed while others hold it open: their
                // leases lose handle caching, so that they close it (MS-FSA
                // 2.1.4.12, a delete breaks HANDLE_CACHING of other keys).
                if !st.opens.is_empty() {
                    let timeout = std::time::Duration::from_secs(35);
                    let keep = lease::R | lease::W;
                    break_leases(st, rec.lease, keep, 0, Instant::now(), timeout, notices);
                }
            }
            if let Some(id) = rec.lease {
                if !st.opens.iter().any(|o| o.lease == Some(id)) {
                    if st.leases.remove(&id).is_some_and(|l| l.dir) {
                        self.dir_leases.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.lease_files_lock().remove(&id);
                }
            }
            // Its oplock is gone: opens waiting for its break may go on.
            *wake = Some(st.oplock_changed.clone());
        }
        let before = st.locks.len();
        st.locks.retain(|l| l.open_id != open_id);
        if st.locks.len() != before {
            st.unlocked.notify_waiters();
        }
        if !st.opens.is_empty() {
            return CloseOutcome {
                delete: None,
                last: false,
                write_time: None,
                delete_stream: false,
            };
        }
        let pending = st.delete_pending;
        if key.stream != 0 {
            files.remove(&key);
            // The last stream open may release a deferred delete of the file.
            let base = key.base();
            let delete = match files.get(&base) {
                Some(b) if b.delete_deferred && !has_stream_opens(&files, base) => {
                    let path = b.path.clone();
                    files.remove(&base);
                    Some(path)
                }
                _ => None,
            };
            return CloseOutcome {
                last: delete.is_some() || !has_stream_opens(&files, base),
                delete,
                write_time: None,
                delete_stream: pending,
            };
        }
        if pending && has_stream_opens(&files, key) {
            // MS-FSA: the file goes when its last stream handle closes.
            if let Some(st) = files.get_mut(&key) {
                st.delete_deferred = true;
            }
            return CloseOutcome {
                delete: None,
                last: false,
                write_time: None,
                delete_stream: false,
            };
        }
        let mut removed = files.remove(&key);
        let write_time = removed
            .as_mut()
            .and_then(|s| s.write_time.reported(nt_now()));
        let delete = removed.filter(|_| pending).map(|s| s.path);
        CloseOutcome {
            delete,
            last: true,
            write_time,
            delete_stream: false,
        }
    }

    /// Are named streams of this file open? (Renaming the file is refused then.)
    pub fn streams_open(&self, key: FileKey) -> bool {
        has_stream_opens(&self.files(), key.base())
    }

    /// Runs `f` on the file's write-time state (a default one if the file
    /// has no opens, which the caller's open rules out).
    fn with_write_time<T>(&self, key: FileKey, f: impl FnOnce(&mut FileWriteTime) -> T) -> T {
        let mut files = self.files();
        match files.get_mut(&key) {
            Some(st) => f(&mut st.write_time),
            None => f(&mut FileWriteTime::default()),
        }
    }

    /// LastWriteTime to report instead of the disk's, while the file is open.
    pub fn write_time(&self, key: FileKey) -> Option<u64> {
        self.with_write_time(key, |w| w.reported(nt_now()))
    }

    /// Whether a data change must first read the disk's mtime.
    pub fn write_time_needs_hold(&self, key: FileKey) -> bool {
        self.with_write_time(key, |w| w.needs_hold())
    }

    /// Records a data change through an open (see `writetime`).
    pub fn write_time_modified(
        &self,
        key: FileKey,
        o: &mut OpenWriteTime,
        change: Change,
        pre_mtime: Option<u64>,
    ) {
        self.with_write_time(key, |w| w.modified(o, change, pre_mtime, nt_now()))
    }

    /// FLUSH or a basic-info set: a pending update happens now.
    pub fn write_time_flush(&self, key: FileKey, o: &mut OpenWriteTime) {
        self.with_write_time(key, |w| w.flush(o, nt_now()))
    }

    /// LastWriteTime set explicitly through an open.
    pub fn write_time_set(&self, key: FileKey, o: &mut OpenWriteTime, t: u64) {
        self.with_write_time(key, |w| w.set_explicit(o, t))
    }

    /// An open closes: applies its owed update; returns the time to report.
    pub fn write_time_close(&self, key: FileKey, o: &mut OpenWriteTime) -> Option<u64> {
        self.with_write_time(key, |w| w.close(o, nt_now()))
    }

    /// Sets or clears the file's delete-pending flag (FileDispositionInformation).
    pub fn set_delete_pending(&self, key: FileKey, pending: bool) {
        if let Some(st) = self.files().get_mut(&key) {
            st.delete_pending = pending;
        }
    }

    /// Marks one open delete-on-close (the flag takes effect when it closes).
    pub fn set_delete_on_close(&self, key: FileKey, open_id: u64, on: bool) {
        if let Some(st) = self.files().get_mut(&key) {
            if let Some(o) = st.opens.iter_mut().find(|o| o.open_id == open_id) {
                o.delete_on_close = on;
            }
        }
    }

    pub fn delete_pending(&self, key: FileKey) -> bool {
        self.files().get(&key).is_some_and(|s| s.delete_pending)
    }

    /// Records a rename so that later deletes use the new name.
    pub fn renamed(&self, key: FileKey, new_path: PathBuf) {
        if let Some(st) = self.files().get_mut(&key) {
            st.path = new_path;
        }
    }

    /// Current share-relative path of an open file.
    pub fn path(&self, key: FileKey) -> Option<PathBuf> {
        self.files().get(&key).map(|s| s.path.clone())
    }

    /// Opens of other files whose path lies below `dir` (used to refuse renaming
    /// a directory with open files inside).
    pub fn has_open_below(&self, dir: &std::path::Path) -> bool {
        self.files()
            .values()
            .any(|s| !s.opens.is_empty() && s.path.starts_with(dir) && s.path != dir)
    }

    /// Takes a byte-range lock (MS-FSA 2.1.5.13 conflict rules).
    pub fn lock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        exclusive: bool,
    ) -> Result<(), NtStatus> {
        if length != 0 && offset.checked_add(length - 1).is_none() {
            return Err(NtStatus::INVALID_LOCK_RANGE);
        }
        let mut files = self.files();
        let st = files.get_mut(&key).ok_or(NtStatus::INVALID_HANDLE)?;
        // An exclusive request conflicts with any overlapping lock; a shared
        // one only with another open's exclusive lock.
        let conflict = st.locks.iter().any(|l| {
            l.contends(offset, length) && (exclusive || (l.exclusive && l.open_id != open_id))
        });
        if conflict {
            return Err(NtStatus::LOCK_NOT_GRANTED);
        }
        st.locks.push(ByteLock {
            open_id,
            offset,
            length,
            exclusive,
        });
        Ok(())
    }

    /// Releases exactly one lock of this open with this range.
    pub fn unlock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
    ) -> Result<(), NtStatus> {
        let mut files = self.files();
        let st = files.get_mut(&key).ok_or(NtStatus::RANGE_NOT_LOCKED)?;
        let pos = st
            .locks
            .iter()
            .position(|l| l.open_id == open_id && l.offset == offset && l.length == length)
            .ok_or(NtStatus::RANGE_NOT_LOCKED)?;
        st.locks.remove(pos);
        st.unlocked.notify_waiters();
        Ok(())
    }

    /// Notified when locks of an open file are released; None if the file
    /// has no opens. A waiter must register (`Notified::enable`) before
    /// retrying its lock, so that no release is missed in between.
    pub fn unlock_notify(&self, key: FileKey) -> Option<Arc<Notify>> {
        self.files().get(&key).map(|s| s.unlocked.clone())
    }

    /// May this open read (or write) this range, given others' locks?
    pub fn check_io(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        write: bool,
    ) -> Result<(), NtStatus> {
        let files = self.files();
        let Some(st) = files.get(&key) else {
            return Ok(());
        };
        let conflict = st.locks.iter().any(|l| {
            l.overlaps(offset, length)
                && if write {
                    l.open_id != open_id || !l.exclusive
                } else {
                    l.exclusive && l.open_id != open_id
                }
        });
        if conflict {
            Err(NtStatus::FILE_LOCK_CONFLICT)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsa::types::share;

    const K: FileKey = FileKey {
        dev: 1,
        ino: 2,
        stream: 0,
    };
    const S1: FileKey = FileKey {
        dev: 1,
        ino: 2,
        stream: 7,
    };
    const S2: FileKey = FileKey {
        dev: 1,
        ino: 2,
        stream: 8,
    };
    const RW: u32 = access::FILE_READ_DATA | access::FILE_WRITE_DATA;

    #[test]
    fn lock_ranges_overlap_up_to_the_last_byte() {
        let l = |offset, length| ByteLock {
            open_id: 1,
            offset,
            length,
            exclusive: true,
        };
        assert!(l(u64::MAX, 1).overlaps(u64::MAX, 1));
        assert!(l(u64::MAX - 1, 2).overlaps(u64::MAX, 1));
        assert!(!l(u64::MAX - 1, 1).overlaps(u64::MAX, 1));
        assert!(l(0, 1).overlaps(0, 1));
        assert!(!l(0, 1).overlaps(1, 1));
        assert!(l(10, 5).overlaps(14, 100));
        assert!(!l(10, 5).overlaps(15, 100));
        assert!(!l(0, 0).overlaps(0, 1));
        assert!(!l(5, 1).overlaps(5, 0));
    }

    /// smbtorture's zero-byte table: a 0-byte lock at 10 against others.
    #[test]
    fn zero_length_locks_contend_inside_a_range() {
        let l = |offset, length| ByteLock {
            open_id: 1,
            offset,
            length,
            exclusive: true,
        };
        for (off, len, want) in [
            (10, 0, false),
            (9, 1, false),
            (10, 1, false),
            (11, 1, false),
            (9, 2, true),
            (10, 2, false),
            (9, 3, true),
        ] {
            assert_eq!(l(10, 0).contends(off, len), want, "{off}/{len} after 10/0");
            assert_eq!(l(off, len).contends(10, 0), want, "10/0 after {off}/{len}");
        }
        assert!(!l(0, 0).contends(0, 0));
        assert!(l(100, 10).contends(102, 0));
        assert!(l(100, 10).contends(102, 5));
    }

    #[test]
    fn share_modes() {
        let b = Broker::new();
        b.open(K, "a".into(), 1, access::FILE_READ_DATA, share::READ, false)
            .unwrap();
        assert_eq!(
            b.open(K, "a".into(), 2, RW, share::ALL, false),
            Err(NtStatus::SHARING_VIOLATION)
        );
        b.open(K, "a".into(), 3, access::FILE_READ_DATA, share::READ, false)
            .unwrap();
        // attribute-only opens never conflict
        b.open(K, "a".into(), 4, access::FILE_READ_ATTRIBUTES, 0, false)
            .unwrap();
        assert!(!b.close(K, 1).last);
        assert!(!b.close(K, 3).last);
        assert!(b.close(K, 4).last);
    }

    #[test]
    fn delete_on_close_and_pending() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, access::DELETE, share::ALL, true)
            .unwrap();
        b.open(K, "f".into(), 2, access::FILE_READ_DATA, share::ALL, false)
            .unwrap();
        assert_eq!(
            b.close(K, 1),
            CloseOutcome {
                delete: None,
                last: false,
                write_time: None,
                delete_stream: false,
            }
        );
        assert_eq!(
            b.open(K, "f".into(), 3, 0, share::ALL, false),
            Err(NtStatus::DELETE_PENDING)
        );
        b.renamed(K, "g".into());
        assert_eq!(
            b.close(K, 2),
            CloseOutcome {
                delete: Some("g".into()),
                last: true,
                write_time: None,
                delete_stream: false,
            }
        );
        // a fresh open after the delete starts clean
        b.open(K, "h".into(), 4, RW, 0, false).unwrap();
    }

    #[test]
    fn write_time_is_file_wide_and_stored_at_last_close() {
        use crate::fsa::writetime::{Change, OpenWriteTime};
        let b = Broker::new();
        let (mut o1, mut o2) = (OpenWriteTime::default(), OpenWriteTime::default());
        b.open(K, "f".into(), 1, RW, share::ALL, false).unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        assert!(b.write_time_needs_hold(K));
        b.write_time_modified(K, &mut o1, Change::Write, Some(100));
        assert!(!b.write_time_needs_hold(K));
        // Held (delayed) for every open of the file.
        assert_eq!(b.write_time(K), Some(100));
        b.write_time_set(K, &mut o2, 555);
        assert_eq!(b.write_time(K), Some(555));
        b.write_time_close(K, &mut o2);
        assert_eq!(b.close(K, 2).write_time, None);
        assert_eq!(b.write_time_close(K, &mut o1), Some(555));
        assert_eq!(b.close(K, 1).write_time, Some(555));
        assert_eq!(b.write_time(K), None);
    }

    #[test]
    fn byte_range_locks() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, RW, share::ALL, false).unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        b.lock(K, 1, 0, 10, true).unwrap();
        assert_eq!(b.lock(K, 2, 5, 10, false), Err(NtStatus::LOCK_NOT_GRANTED));
        assert_eq!(
            b.check_io(K, 2, 0, 1, false),
            Err(NtStatus::FILE_LOCK_CONFLICT)
        );
        b.check_io(K, 1, 0, 1, true).unwrap();
        b.lock(K, 2, 10, 10, false).unwrap();
        b.lock(K, 1, 12, 2, false).unwrap(); // shared stacks on shared
        assert_eq!(
            b.check_io(K, 1, 10, 1, true),
            Err(NtStatus::FILE_LOCK_CONFLICT)
        );
        assert_eq!(b.unlock(K, 2, 10, 5), Err(NtStatus::RANGE_NOT_LOCKED));
        b.unlock(K, 2, 10, 10).unwrap();
        b.close(K, 1);
        b.lock(K, 2, 0, 10, true).unwrap();
    }

    #[test]
    fn streams_have_their_own_share_modes() {
        let b = Broker::new();
        b.open(S1, "f".into(), 1, RW, 0, false).unwrap();
        b.open(S2, "f".into(), 2, RW, 0, false).unwrap();
        b.open(K, "f".into(), 3, RW, 0, false).unwrap();
        assert_eq!(
            b.open(S1, "f".into(), 4, RW, 0, false),
            Err(NtStatus::SHARING_VIOLATION)
        );
        // Locks are per stream too.
        b.lock(S1, 1, 0, 10, true).unwrap();
        b.lock(S2, 2, 0, 10, true).unwrap();
        b.check_io(K, 3, 0, 10, true).unwrap();
        assert!(b.streams_open(K));
    }

    #[test]
    fn file_delete_versus_open_streams() {
        let b = Broker::new();
        let all = share::READ | share::WRITE | share::DELETE;
        // A stream not sharing delete keeps the file from being opened for DELETE.
        b.open(S1, "f".into(), 1, RW, 0, false).unwrap();
        assert_eq!(
            b.open(K, "f".into(), 2, access::DELETE, all, true),
            Err(NtStatus::SHARING_VIOLATION)
        );
        b.close(S1, 1);
        // One that shares delete lets the file be deleted, but later.
        b.open(S1, "f".into(), 3, RW, all, false).unwrap();
        b.open(K, "f".into(), 4, access::DELETE, all, true).unwrap();
        let out = b.close(K, 4);
        assert_eq!(out.delete, None);
        assert_eq!(
            b.open(K, "f".into(), 5, RW, all, false),
            Err(NtStatus::DELETE_PENDING)
        );
        assert_eq!(
            b.open(S2, "f".into(), 6, RW, all, false),
            Err(NtStatus::DELETE_PENDING)
        );
        let out = b.close(S1, 3);
        assert_eq!(out.delete, Some("f".into()));
        assert!(out.last && !out.delete_stream);
        b.open(K, "f".into(), 7, RW, all, false).unwrap();
    }

    #[test]
    fn stream_delete_on_close() {
        let b = Broker::new();
        b.open(S1, "f".into(), 1, access::DELETE, share::ALL, true)
            .unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        let out = b.close(S1, 1);
        assert!(out.delete_stream);
        assert_eq!(out.delete, None);
        assert!(!b.delete_pending(K));
    }

    #[tokio::test]
    async fn unlock_wakes_waiters() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, RW, share::ALL, false).unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        b.lock(K, 1, 0, 10, true).unwrap();
        let n = b.unlock_notify(K).unwrap();
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        assert_eq!(b.lock(K, 2, 0, 10, true), Err(NtStatus::LOCK_NOT_GRANTED));
        b.unlock(K, 1, 0, 10).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("unlock must wake the waiter");
        b.lock(K, 2, 0, 10, true).unwrap();
        // closing an open with locks wakes waiters too
        let n = b.unlock_notify(K).unwrap();
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        b.close(K, 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("close must wake the waiter");
        assert!(b
            .unlock_notify(FileKey {
                dev: 9,
                ino: 9,
                stream: 0
            })
            .is_none());
    }

    mod leases {
        use super::*;
        use crate::fsa::lease::{LeaseRequest, ALL, H, R, W};
        use crate::fsa::types::disposition;
        use std::time::Duration;

        const GUID: [u8; 16] = [9; 16];

        fn intent(key: u8, state: u32) -> Intent {
            Intent {
                owner: u64::from(key),
                oplocks: true,
                level2: true,
                may_break: true,
                break_timeout: Duration::from_secs(30),
                lease: Some(LeaseRequest {
                    id: (GUID, [key; 16]),
                    state,
                    v2: false,
                    epoch: 0,
                    parent: None,
                }),
                ..Intent::none()
            }
        }

        fn state(b: &Broker, key: u8) -> u32 {
            b.lease_grant(K, (GUID, [key; 16])).map_or(99, |g| g.state)
        }

        fn sink(b: &Broker, owner: u64) -> mpsc::UnboundedReceiver<BreakNotice> {
            let (tx, rx) = mpsc::unbounded_channel();
            b.register_break_sink(owner, tx);
            rx
        }

        /// smbtorture's smb2.lease.break table: held, requested, broken
        /// to, granted.
        #[test]
        fn second_key_breaks_write_caching_only() {
            for (held, asked, broken, granted) in [
                (R, R | W, R, R),
                (R | H, ALL, R | H, R | H),
                (R | W, R | H, R, R | H),
                (ALL, ALL, R | H, R | H),
                (ALL, R, R | H, R),
            ] {
                let b = Broker::new();
                let mut rx = sink(&b, 1);
                let open =
                    |id, i: &Intent| b.open_with(K, "f".into(), id, RW, share::ALL, false, i);
                assert_eq!(
                    open(10, &intent(1, held)),
                    Ok(Opened::Granted(Level::NoOplock))
                );
                assert_eq!(state(&b, 1), held);
                let second = open(11, &intent(2, asked));
                if held & W != 0 {
                    assert_eq!(second, Ok(Opened::Wait), "must wait for W to go");
                    let n = rx
                        .try_recv()
                        .expect("break sent")
                        .lease
                        .expect("lease break");
                    assert_eq!((n.from, n.to, n.ack_required), (held, broken, true));
                    assert_eq!(b.lease_ack((GUID, [1; 16]), broken), Ok(broken));
                    assert_eq!(
                        open(11, &intent(2, asked)),
                        Ok(Opened::Granted(Level::NoOplock))
                    );
                } else {
                    assert_eq!(second, Ok(Opened::Granted(Level::NoOplock)));
                    assert!(rx.try_recv().is_err(), "no break");
                }
                assert_eq!((state(&b, 1), state(&b, 2)), (broken, granted));
            }
        }

        #[test]
        fn same_key_joins_and_a_key_leases_one_file() {
            let b = Broker::new();
            let _rx = sink(&b, 1);
            let open = |k, id, i: &Intent| b.open_with(k, "f".into(), id, RW, share::ALL, false, i);
            assert!(open(K, 10, &intent(1, R | H)).is_ok());
            assert!(open(K, 11, &intent(1, ALL)).is_ok(), "no self-break");
            assert_eq!(state(&b, 1), ALL, "uncontended upgrade");
            assert_eq!(
                open(S1, 12, &intent(1, R)),
                Err(NtStatus::INVALID_PARAMETER),
                "the key leases another stream"
            );
            b.close(K, 10);
            b.close(K, 11);
            assert_eq!(
                b.lease_file((GUID, [1; 16])),
                None,
                "gone with its last open"
            );
            assert!(open(S1, 12, &intent(1, R)).is_ok());
        }

        #[test]
        fn directory_leases_cache_no_writes_and_break_on_entry_changes() {
            let b = Broker::new();
            let mut rx = sink(&b, 1);
            let dir = Intent {
                is_dir: true,
                ..intent(1, ALL)
            };
            let open = |id, i: &Intent| b.open_with(K, "d".into(), id, RW, share::ALL, false, i);
            assert!(open(10, &dir).is_ok());
            assert_eq!(state(&b, 1), R | H);
            assert!(b.has_dir_leases());
            // A change made through a child whose lease names this one as
            // parent breaks nothing; any other change breaks to none.
            b.break_dir_leases(K, Some((GUID, [1; 16])));
            assert!(rx.try_recv().is_err());
            b.break_dir_leases(K, None);
            let n = rx.try_recv().unwrap().lease.unwrap();
            assert_eq!((n.from, n.to), (R | H, 0));
            assert_eq!(b.lease_ack((GUID, [1; 16]), 0), Ok(0));
            // Asking again for RWH upgrades to RH.
            assert!(open(11, &dir).is_ok());
            assert_eq!(state(&b, 1), R | H);
            b.close(K, 10);
            b.close(K, 11);
            assert!(!b.has_dir_leases());
        }

        /// smbtorture's smb2.lease.unlink: a delete-on-close open of a
        /// file others hold takes their handle caching (without waiting),
        /// and so does the close that leaves the delete pending.
        #[test]
        fn doomed_file_loses_other_keys_handle_caching() {
            let b = Broker::new();
            let mut rx = sink(&b, 1);
            let open = |id, doc, i: &Intent| b.open_with(K, "f".into(), id, RW, share::ALL, doc, i);
            assert!(open(10, false, &intent(1, R | H)).is_ok());
            assert_eq!(
                open(11, true, &intent(2, 0)),
                Ok(Opened::Granted(Level::NoOplock)),
                "no waiting for the H break"
            );
            let n = rx.try_recv().unwrap().lease.unwrap();
            assert_eq!((n.from, n.to, n.ack_required), (R | H, R, true));
            assert_eq!(b.lease_ack((GUID, [1; 16]), R), Ok(R));
            // H granted again after the doomed open came: its close breaks it.
            assert!(open(12, false, &intent(3, R | H)).is_ok());
            let mut rx3 = sink(&b, 3);
            b.close(K, 11);
            assert!(b.delete_pending(K));
            let n = rx3.try_recv().unwrap().lease.unwrap();
            assert_eq!((n.from, n.to), (R | H, R));
            assert!(rx.try_recv().is_err(), "R alone is not broken");
        }

        #[test]
        fn writes_and_overwrites_break_other_keys() {
            let b = Broker::new();
            let mut rx = sink(&b, 2);
            let open = |id, i: &Intent| b.open_with(K, "f".into(), id, RW, share::ALL, false, i);
            assert!(open(10, &intent(1, R)).is_ok());
            assert!(open(11, &intent(2, R | H)).is_ok());
            b.oplock_break_level2(K, 10);
            let n = rx.try_recv().unwrap().lease.unwrap();
            assert_eq!((n.from, n.to, n.ack_required), (R | H, 0, true));
            assert_eq!(state(&b, 1), R, "the writer keeps its own lease");
            // An acknowledgment with more than asked is refused, none is fine.
            assert_eq!(
                b.lease_ack((GUID, [2; 16]), R),
                Err(NtStatus::REQUEST_NOT_ACCEPTED)
            );
            assert_eq!(b.lease_ack((GUID, [2; 16]), 0), Ok(0));
            assert_eq!(b.lease_ack((GUID, [2; 16]), 0), Err(NtStatus::UNSUCCESSFUL));
            assert_eq!(
                b.lease_ack((GUID, [7; 16]), 0),
                Err(NtStatus::OBJECT_NAME_NOT_FOUND)
            );
            // An overwrite by a plain open ends read caching without waiting.
            let ow = Intent {
                disposition: disposition::OVERWRITE_IF,
                lease: None,
                ..intent(3, 0)
            };
            assert_eq!(open(12, &ow), Ok(Opened::Granted(Level::NoOplock)));
            assert_eq!(state(&b, 1), 0);
        }
    }
}
