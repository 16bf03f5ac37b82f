//! `kernel oplocks = yes`: SMB caching backed by kernel leases (F_SETLEASE),
//! so that a local process or NFS opening a file makes its SMB holders
//! break first (docs/kernel-interface.md A.3 has the mapping).
//!
//! The broker settles SMB-versus-SMB conflicts before an SMB open makes its
//! fd; just before that fd is made, kernel leases of other SMB opens of the
//! file that it would break are dropped here, so that our own opens never
//! wait on our own leases. Breaks from the kernel arrive as a realtime
//! signal (F_SETSIG, owner this process) that every thread blocks and a
//! task reads from a signalfd; `si_fd` names the leased fd and so the open.

use super::state::{ServerState, Share};
use crate::fsa::broker::FileKey;
use crate::fsa::lease::{LeaseId, H, R, W};
use kmod_interface::lease::{self as kl, LeaseKind, SignalFd};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tracing::{debug, info, warn};

/// SIGIO: what the kernel sends instead when the realtime queue overflows.
const SIGIO: i32 = nix::sys::signal::Signal::SIGIO as i32;

/// A kernel lease held on one SMB open's fd.
#[derive(Debug, Clone)]
struct Entry {
    fd: Arc<OwnedFd>,
    key: FileKey,
    open_id: u64,
    kind: LeaseKind,
    /// The SMB lease of the open, if it has one.
    lease: Option<LeaseId>,
    /// Later opens of the same lease key that use a dup of `fd` (the same
    /// open file description, so the same kernel lease).
    sharers: Vec<Arc<OwnedFd>>,
}

/// The kernel leases this process holds, by fd number (the fd stays open
/// while it is listed, so its number is not reused).
#[derive(Debug, Default)]
pub struct KernelLeases {
    entries: Mutex<HashMap<RawFd, Entry>>,
    started: AtomicBool,
}

fn rank(k: LeaseKind) -> u8 {
    match k {
        LeaseKind::None => 0,
        LeaseKind::Read => 1,
        LeaseKind::Write => 2,
    }
}

/// The kernel lease that covers SMB caching `bits`.
fn needed(bits: u32) -> LeaseKind {
    if bits & W != 0 {
        LeaseKind::Write
    } else if bits & R != 0 {
        LeaseKind::Read
    } else {
        LeaseKind::None
    }
}

/// Blocks the break signals in the calling thread; call before the runtime
/// starts so that every thread inherits the mask.
pub fn block_break_signals() -> std::io::Result<()> {
    kl::block_signals(&[kl::break_signal(), SIGIO])
}

/// The share backs SMB caching with kernel leases.
pub fn enabled(share: &Share) -> bool {
    share
        .conf
        .as_ref()
        .is_some_and(|c| c.kernel_oplocks == Some(true))
}

impl KernelLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RawFd, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An SMB open of `key`'s file is about to make a new fd (`write`: a
    /// writable one). Kernel leases of other SMB opens that this fd would
    /// break are released first; an open that still caches what its lease
    /// protected (same lease key, or another stream of the file, which the
    /// broker does not break) gets an SMB break without waiting.
    pub fn before_open(&self, st: &ServerState, key: FileKey, write: bool) {
        let gone: Vec<Entry> = {
            let mut map = self.lock();
            if map.is_empty() {
                return;
            }
            // The entries stay (without a kernel lease) so that later opens
            // of their lease key still share their description.
            let mut gone = Vec::new();
            for e in map.values_mut().filter(|e| {
                e.key.dev == key.dev
                    && e.key.ino == key.ino
                    && e.kind != LeaseKind::None
                    && (e.kind == LeaseKind::Write || write)
            }) {
                gone.push(e.clone());
                e.kind = LeaseKind::None;
            }
            gone
        };
        for e in gone {
            if let Err(err) = kl::set_lease(e.fd.as_fd(), LeaseKind::None) {
                debug!(%err, "releasing a kernel lease");
            }
            debug!(open = e.open_id, "kernel lease released for our own open");
            let bits = st.broker.caching(e.key, e.open_id);
            if e.kind == LeaseKind::Write && bits & W != 0 {
                st.broker
                    .kernel_break(e.key, e.open_id, R | H, break_timeout(st));
            }
        }
    }

    /// An SMB open with data access got its fd and its grant: take the
    /// kernel lease that backs the grant. A write lease the kernel refuses (another open of
    /// the file exists anywhere) lowers the grant to what a read lease, or
    /// nothing, can back; read caching is kept even where no read lease can
    /// be had (a writable fd, a writer elsewhere): see docs.
    pub fn after_open(&self, st: &Arc<ServerState>, key: FileKey, open_id: u64, fd: &Arc<OwnedFd>) {
        let bits = st.broker.caching(key, open_id);
        // An open without data access has an O_PATH fd, which the kernel
        // neither leases nor counts: no local opener can conflict with it,
        // and it caches no data, so its grant needs no backing.
        if kmod_interface::is_o_path(fd.as_fd()).unwrap_or(true) {
            return;
        }
        self.start(st);
        let mut want = needed(bits);
        if want == LeaseKind::Write {
            match take(fd, LeaseKind::Write) {
                Ok(()) => return self.insert(st, fd, key, open_id, LeaseKind::Write),
                Err(err) => {
                    debug!(open = open_id, %err, "no write lease: grant loses write caching");
                    st.broker.kernel_limit(key, open_id, R | H);
                    want = needed(st.broker.caching(key, open_id));
                }
            }
        }
        if want == LeaseKind::Read {
            match take(fd, LeaseKind::Read) {
                Ok(()) => return self.insert(st, fd, key, open_id, LeaseKind::Read),
                Err(err) => debug!(open = open_id, %err, "read caching without a read lease"),
            }
        }
        // An SMB lease without a kernel lease still lends its description
        // to later opens of its key, so that an upgrade to write caching
        // finds one description to take the write lease on.
        if st.broker.open_lease(key, open_id).is_some() {
            self.insert(st, fd, key, open_id, LeaseKind::None);
        }
    }

    fn insert(
        &self,
        st: &ServerState,
        fd: &Arc<OwnedFd>,
        key: FileKey,
        open_id: u64,
        kind: LeaseKind,
    ) {
        debug!(open = open_id, ?kind, "kernel lease taken");
        self.lock().insert(
            fd.as_raw_fd(),
            Entry {
                fd: fd.clone(),
                key,
                open_id,
                kind,
                lease: st.broker.open_lease(key, open_id),
                sharers: Vec::new(),
            },
        );
    }

    /// A further open of `key` under lease `id`: when another open of the
    /// same lease holds the write lease on an fd whose access mode covers
    /// `read` and `write`, a dup of that fd. The kernel then sees no new
    /// open, so the lease (one per open file description) goes on backing
    /// both, as SMB shares one lease state among the opens of a key. The
    /// caller checks the user's access itself and registers the dup with
    /// [`KernelLeases::add_sharer`].
    pub fn dup_for(&self, key: FileKey, id: LeaseId, read: bool, write: bool) -> Option<OwnedFd> {
        let map = self.lock();
        let e = map
            .values()
            .filter(|e| e.key == key && e.lease == Some(id))
            .max_by_key(|e| rank(e.kind))?;
        let acc = nix::fcntl::fcntl(e.fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?
            & nix::libc::O_ACCMODE;
        let ok = (!read || acc != nix::libc::O_WRONLY) && (!write || acc != nix::libc::O_RDONLY);
        if !ok {
            return None;
        }
        e.fd.try_clone().ok()
    }

    /// Records `fd` (from [`KernelLeases::dup_for`]) as sharing the lease
    /// of lease `id` on `key`.
    /// The shared description's kernel lease is raised when the lease was
    /// upgraded by this open (RH to RWH, say); if the kernel refuses, the
    /// upgrade is taken back before the response.
    pub fn add_sharer(
        &self,
        st: &ServerState,
        key: FileKey,
        id: LeaseId,
        open_id: u64,
        fd: &Arc<OwnedFd>,
    ) {
        let mut map = self.lock();
        let Some(e) = map
            .values_mut()
            .filter(|e| e.key == key && e.lease == Some(id))
            .max_by_key(|e| rank(e.kind))
        else {
            return;
        };
        debug!(
            open = e.open_id,
            "a further open of the lease shares its kernel lease"
        );
        e.sharers.push(fd.clone());
        let want = needed(st.broker.caching(key, open_id));
        if rank(want) <= rank(e.kind) {
            return;
        }
        match take(&e.fd, want) {
            Ok(()) => {
                debug!(open = open_id, ?want, "kernel lease raised for an upgrade");
                e.kind = want;
            }
            Err(err) => {
                debug!(open = open_id, %err, "no kernel lease for the upgrade");
                if want == LeaseKind::Write {
                    st.broker.kernel_limit(key, open_id, R | H);
                }
            }
        }
    }

    /// The open is closing: drop its lease now (its fd may live on a moment
    /// in a pending operation), or, when other opens of its lease share
    /// the open file description, hand the lease over to one of them.
    pub fn forget(&self, fd: &Arc<OwnedFd>) {
        let mut map = self.lock();
        let raw = fd.as_raw_fd();
        if map.get(&raw).is_some_and(|e| Arc::ptr_eq(&e.fd, fd)) {
            let Some(mut e) = map.remove(&raw) else {
                return;
            };
            if let Some(next) = e.sharers.pop() {
                // Same description, same lease: re-issuing it through the
                // new fd makes breaks name that fd (si_fd).
                if e.kind == LeaseKind::None || take(&next, e.kind).is_ok() {
                    e.fd = next;
                    debug!(open = e.open_id, "kernel lease handed to a sharer");
                    map.insert(e.fd.as_raw_fd(), e);
                    return;
                }
            }
            let _ = kl::set_lease(e.fd.as_fd(), LeaseKind::None);
            debug!(open = e.open_id, "kernel lease released at close");
            return;
        }
        for e in map.values_mut() {
            e.sharers.retain(|s| !Arc::ptr_eq(s, fd));
        }
    }

    /// SMB caching of `key` may have dropped (acknowledgment, timeout,
    /// level II break): lower each kernel lease of the stream to what its
    /// open still caches and what a pending kernel break allows, so that
    /// our next open, or the local opener, proceeds at once.
    pub fn reconcile(&self, st: &ServerState, key: FileKey) {
        let list: Vec<(RawFd, Entry)> = {
            let map = self.lock();
            if map.is_empty() {
                return;
            }
            map.iter()
                .filter(|(_, e)| e.key == key)
                .map(|(r, e)| (*r, e.clone()))
                .collect()
        };
        for (raw, e) in list {
            let mut want = needed(st.broker.caching(e.key, e.open_id));
            // While the kernel breaks the lease, F_GETLEASE reports what
            // the breaker leaves us.
            if let Ok(now) = kl::get_lease(e.fd.as_fd()) {
                if rank(now) < rank(want) {
                    want = now;
                }
            }
            if rank(want) >= rank(e.kind) {
                continue;
            }
            let kept =
                want == LeaseKind::Read && kl::set_lease(e.fd.as_fd(), LeaseKind::Read).is_ok();
            let mut map = self.lock();
            if kept {
                if let Some(x) = map.get_mut(&raw) {
                    x.kind = LeaseKind::Read;
                }
                debug!(open = e.open_id, "kernel lease lowered to read");
            } else {
                let _ = kl::set_lease(e.fd.as_fd(), LeaseKind::None);
                // An SMB lease keeps lending its description to later opens
                // of its key (see `after_open`), so that a later upgrade can
                // take the write lease there again.
                if e.lease.is_some() {
                    if let Some(x) = map.get_mut(&raw) {
                        x.kind = LeaseKind::None;
                    }
                } else {
                    map.remove(&raw);
                }
                debug!(open = e.open_id, "kernel lease released");
            }
        }
    }

    /// The kernel lease recorded for `fd` (a disconnected durable open about
    /// to move to another worker), as carried in a moved open: 0 none, 1
    /// read, 2 write.
    pub fn moving_kind(&self, fd: &Arc<OwnedFd>) -> u8 {
        match self.lock().get(&fd.as_raw_fd()) {
            Some(e) if Arc::ptr_eq(&e.fd, fd) => match e.kind {
                LeaseKind::None => 0,
                LeaseKind::Read => 1,
                LeaseKind::Write => 2,
            },
            _ => 0,
        }
    }

    /// The open moved to another worker, which re-issues the lease on its
    /// own fd: forget it here without releasing it (the description, and
    /// with it the lease, lives on there).
    pub fn disown(&self, fd: &Arc<OwnedFd>) {
        let mut map = self.lock();
        let raw = fd.as_raw_fd();
        if map.get(&raw).is_some_and(|e| Arc::ptr_eq(&e.fd, fd)) {
            map.remove(&raw);
            debug!(fd = raw, "kernel lease handed to another worker");
        }
    }

    /// A disconnected durable open moved here from another worker with the
    /// kernel lease `moved` ([`KernelLeases::moving_kind`]) on its
    /// description: record it, so that the reconnect re-issues it through
    /// this worker's fd ([`KernelLeases::reclaimed`]).
    pub fn adopt(
        &self,
        st: &Arc<ServerState>,
        key: FileKey,
        open_id: u64,
        fd: &Arc<OwnedFd>,
        moved: u8,
    ) {
        let kind = match moved {
            1 => LeaseKind::Read,
            2 => LeaseKind::Write,
            _ => return,
        };
        self.start(st);
        self.insert(st, fd, key, open_id, kind);
    }

    /// The kernel lease that backed this open's grant is gone or being
    /// broken (a local open got in while the open was disconnected).
    pub fn lost_lease(&self, fd: &Arc<OwnedFd>) -> bool {
        let kind = match self.lock().get(&fd.as_raw_fd()) {
            Some(e) if Arc::ptr_eq(&e.fd, fd) => e.kind,
            _ => return false,
        };
        kind != LeaseKind::None && kl::get_lease(fd.as_fd()).map_or(true, |now| now != kind)
    }

    /// A disconnected durable open was reconnected in this worker: the
    /// keeper took its kernel lease over at disconnect (breaks went to the
    /// keeper), so the lease is re-issued on this worker's fd (the same
    /// open file description) and its breaks come here again. A lease the
    /// kernel no longer grants (a local opener got in meanwhile) is handled
    /// as a break of the SMB holder.
    pub fn reclaimed(&self, st: &Arc<ServerState>, fd: &Arc<OwnedFd>) {
        let raw = fd.as_raw_fd();
        let Some(e) = self
            .lock()
            .get(&raw)
            .filter(|e| Arc::ptr_eq(&e.fd, fd))
            .cloned()
        else {
            return;
        };
        if e.kind == LeaseKind::None {
            return;
        }
        let breaking = kl::get_lease(fd.as_fd()).map_or(true, |now| now != e.kind);
        if !breaking {
            match take(fd, e.kind) {
                Ok(()) => {
                    debug!(open = e.open_id, kind = ?e.kind, "kernel lease taken back from the keeper");
                    return;
                }
                Err(err) => debug!(open = e.open_id, %err, "kernel lease not taken back"),
            }
        }
        on_break(st, raw);
    }

    /// Starts the task reading break signals (once per process).
    fn start(&self, st: &Arc<ServerState>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = st.config.global.oplock_break_timeout;
        match std::fs::read_to_string("/proc/sys/fs/lease-break-time")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            Some(t) if t > timeout => {}
            t => warn!(
                lease_break_time = ?t,
                oplock_break_timeout = timeout,
                "fs.lease-break-time should exceed the oplock break timeout: local openers may get in before SMB clients flushed"
            ),
        }
        let sfd = match SignalFd::new(&[kl::break_signal(), SIGIO]) {
            Ok(s) => s,
            Err(err) => {
                warn!(%err, "cannot read kernel lease breaks; they will time out");
                return;
            }
        };
        // A blocking read on a thread of its own (which inherits the
        // blocked mask), handed to a task that does the SMB side.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("lease-breaks".into())
            .spawn(move || loop {
                match sfd.read() {
                    Ok(ev) => {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        warn!(%err, "reading lease break signals");
                        return;
                    }
                }
            });
        if let Err(err) = spawned {
            warn!(%err, "cannot start the lease break reader");
            return;
        }
        info!("kernel oplocks: listening for lease breaks");
        // Disconnected durable handles' leases are the keeper's; it reports
        // their breaks on a watch connection.
        if let Some(k) = &st.keeper {
            k.start_watch(st);
        }
        let weak = Arc::downgrade(st);
        tokio::spawn(async move { handle_breaks(rx, weak).await });
    }
}

fn break_timeout(st: &ServerState) -> Duration {
    Duration::from_secs(u64::from(st.config.global.oplock_break_timeout))
}

/// The fd was opened read-only (so a write lease on it may become a read
/// lease).
fn read_only(fd: &Arc<OwnedFd>) -> bool {
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .is_ok_and(|fl| fl & nix::libc::O_ACCMODE == nix::libc::O_RDONLY)
}

/// F_SETSIG, F_SETOWN (this process) and F_SETLEASE on `fd`.
fn take(fd: &Arc<OwnedFd>, kind: LeaseKind) -> std::io::Result<()> {
    let f = fd.as_fd();
    kl::set_signal(f, kl::break_signal())?;
    kl::set_owner(f, std::process::id() as i32)?;
    kl::set_lease(f, kind)
}

async fn handle_breaks(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<kl::SignalEvent>,
    st: Weak<ServerState>,
) {
    while let Some(ev) = rx.recv().await {
        let Some(st) = st.upgrade() else { return };
        if ev.signo != SIGIO {
            on_break(&st, ev.fd);
            continue;
        }
        // The realtime queue overflowed: look at every lease.
        warn!("lease break signal queue overflowed; checking every kernel lease");
        let all: Vec<(RawFd, LeaseKind, Arc<OwnedFd>)> = st
            .kernel
            .lock()
            .iter()
            .map(|(r, e)| (*r, e.kind, e.fd.clone()))
            .collect();
        for (raw, kind, fd) in all {
            if kl::get_lease(fd.as_fd()).is_ok_and(|k| k != kind) {
                on_break(&st, raw);
            }
        }
    }
}

/// A non-SMB opener breaks the kernel lease on fd `raw`: break the SMB
/// holder (to R|H for a reader, to nothing for a writer), and release the
/// kernel lease once it acknowledged or its break timed out.
fn on_break(st: &Arc<ServerState>, raw: RawFd) {
    let Some(e) = st.kernel.lock().get(&raw).cloned() else {
        debug!(fd = raw, "lease break for a lease already released");
        return;
    };
    let target = kl::get_lease(e.fd.as_fd()).unwrap_or(LeaseKind::None);
    if rank(target) >= rank(e.kind) {
        debug!(open = e.open_id, "no kernel lease break pending");
        return;
    }
    // A reader lets the holder keep read caching only where a read lease
    // can go on backing it (a read-only fd); a writable fd cannot hold one,
    // and unbacked read caching would miss the next local writer.
    let keep = if target == LeaseKind::Read && read_only(&e.fd) {
        R | H
    } else {
        0
    };
    info!(
        open = e.open_id,
        ?target,
        "kernel lease break: breaking the SMB holder"
    );
    let wait = st
        .broker
        .kernel_break(e.key, e.open_id, keep, break_timeout(st));
    if !wait {
        st.kernel.reconcile(st, e.key);
        return;
    }
    let st = st.clone();
    tokio::spawn(async move {
        super::oplock::wait_for_breaks(&st.broker, e.key).await;
        st.kernel.reconcile(&st, e.key);
    });
}

/// The keeper heard a break of a kept fd's kernel lease (a local process
/// opened the file). `Purged`: the handle was disconnected, so the keeper
/// purged it (MS-SMB2: a break to a disconnected durable open closes it)
/// and released the lease; the disconnected open this worker may still
/// hold goes too, with its share mode, locks and oplock. `Forwarded`: the
/// handle was reconnected here before its lease was taken back; this
/// worker breaks the SMB holder.
pub async fn on_keeper_notice(st: &Arc<ServerState>, n: holdfast_keeper_proto::Notice) {
    use holdfast_keeper_proto::BreakAction;
    let fid = n.persistent_file_id;
    match n.action {
        BreakAction::Purged => {
            let Some(mut open) = super::durable::take_kept(st, fid, n.id) else {
                debug!(
                    fid,
                    keeper_id = n.id,
                    "keeper purged a handle this worker does not hold"
                );
                return;
            };
            if let Some(d) = open.durable.as_mut() {
                // The keeper has already forgotten it.
                d.keeper_id = None;
            }
            info!(
                fid,
                keeper_id = n.id,
                path = %open.path.display(),
                "disconnected durable open purged: a local open broke its kernel lease"
            );
            super::files::close_open_in(st, open).await;
        }
        BreakAction::Forwarded => {
            let raw = st
                .kernel
                .lock()
                .iter()
                .find(|(_, e)| e.open_id == fid)
                .map(|(r, _)| *r);
            match raw {
                Some(raw) => on_break(st, raw),
                None => debug!(
                    fid,
                    "forwarded lease break for an open without a lease here"
                ),
            }
        }
    }
}

impl super::conn::Connection {
    /// A CREATE found the file under someone else's kernel lease (a local
    /// process or NFS; the kernel has started its break): it goes async,
    /// a blocking open as the user waits for the holder (at most the
    /// kernel's lease-break-time), and the CREATE is run again. The
    /// connection keeps serving other requests meanwhile.
    pub fn wait_for_local_lease(
        &mut self,
        ctx: &super::conn::Ctx<'_>,
        path_fd: OwnedFd,
        id: Arc<kmod_interface::identity::Identity>,
        read: bool,
        write: bool,
    ) -> super::conn::Reply {
        use super::pending::{AsyncWork, Attempt, Gate, PendingKind};
        let gate = Gate::default();
        let g = gate.clone();
        debug!("create waits for a kernel lease held outside Holdfast");
        self.async_work = Some(
            AsyncWork::new(PendingKind::OplockBreak, None, gate, async move {
                let waited = super::files::fs(id, move || {
                    crate::posix::reopen(path_fd.as_fd(), read, write).map(drop)
                })
                .await;
                if let Err(s) = waited {
                    debug!(?s, "waiting for a kernel lease");
                }
                match g.attempt(|| Some(())) {
                    Attempt::Cancelled => Err(crate::wire::NtStatus::CANCELLED),
                    _ => Ok(super::conn::error_reply(crate::wire::NtStatus::PENDING)),
                }
            })
            .redo(ctx.msg.to_vec()),
        );
        super::conn::error_reply(crate::wire::NtStatus::PENDING)
    }
}
