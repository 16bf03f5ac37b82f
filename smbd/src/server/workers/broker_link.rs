//! The broker as the server layer sees it: the in-process [`Broker`] (single
//! process mode, tests) or the supervisor's, reached over this worker's
//! broker socket ([`RemoteBroker`]). Both offer the same methods, so the
//! connection code does not know which one it talks to.
//!
//! Remote calls are synchronous, like the local ones: the calling thread
//! takes an idle call socket, sends its request and reads the answer there.
//! A reader thread on the event socket delivers break notices to the local
//! break queues and wake-ups to the local `Notify` of a key.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, error, warn};

use super::broker_proto::{
    self as bp, bytes_path, path_bytes, Key, MovedOpen, Req, Resp, ToBroker, ToWorkerMsg,
};
use super::broker_service::{recv_msg, recv_msg_fds, send_msg_fd, WorkerEnds};
use crate::fsa::broker::{BreakSink, Broker, CloseOutcome, FileKey, Opened};
use crate::fsa::lease::{LeaseGrant, LeaseId};
use crate::fsa::oplock::{BreakNotice, Intent, LeaseNotice, Level};
use crate::fsa::writetime::{Change, OpenWriteTime};
use crate::server::limits::{Failure, LogonThrottle};
use crate::wire::NtStatus;
use nix::sys::socket::{self, sockopt};
use nix::sys::time::TimeVal;
use std::net::IpAddr;

/// How long a call waits for the supervisor before failing.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared part of a [`RemoteBroker`] (its reader thread holds it too).
pub struct Inner {
    events: OwnedFd,
    /// Idle call sockets; a call takes one for its request and reply.
    idle: Mutex<Vec<OwnedFd>>,
    freed: Condvar,
    next: AtomicU64,
    sinks: Mutex<HashMap<u64, BreakSink>>,
    /// Local waiters per key (for `oplock_changed` and `unlock_notify`).
    wakes: Mutex<HashMap<FileKey, Arc<Notify>>>,
    /// Where claims of this worker's disconnected durable opens go
    /// (claim id, open id); without one, every claim is answered "none".
    surrender: Mutex<Option<SurrenderSink>>,
    dead: AtomicBool,
}

/// Receives (claim id, open id) of [`ToWorkerMsg::Surrender`].
pub type SurrenderSink = tokio::sync::mpsc::UnboundedSender<(u64, u64)>;

/// A worker's client of the supervisor's broker.
pub struct RemoteBroker {
    inner: Arc<Inner>,
}

impl RemoteBroker {
    /// Takes this worker's ends of the broker link and starts the reader of
    /// its event socket.
    pub fn new(ends: WorkerEnds) -> io::Result<Self> {
        for c in &ends.calls {
            socket::setsockopt(
                c,
                sockopt::ReceiveTimeout,
                &TimeVal::new(CALL_TIMEOUT.as_secs() as _, 0),
            )?;
        }
        let inner = Arc::new(Inner {
            events: ends.events,
            idle: Mutex::new(ends.calls),
            freed: Condvar::new(),
            next: AtomicU64::new(1),
            sinks: Mutex::new(HashMap::new()),
            wakes: Mutex::new(HashMap::new()),
            surrender: Mutex::new(None),
            dead: AtomicBool::new(false),
        });
        let r = inner.clone();
        std::thread::Builder::new()
            .name("broker-events".into())
            .spawn(move || read_events(&r))?;
        Ok(RemoteBroker { inner })
    }
}

fn read_events(inner: &Inner) {
    let mut buf = Vec::new();
    loop {
        let n = match recv_msg(&inner.events, &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => {
                error!("the supervisor closed the broker link");
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Other => {
                warn!(%e, "broker message dropped");
                continue;
            }
            Err(e) => {
                error!(%e, "broker link failed");
                break;
            }
        };
        match bp::decode::<ToWorkerMsg>(&buf[..n]) {
            Ok(ToWorkerMsg::Break {
                owner,
                open_id,
                to,
                lease,
            }) => {
                let n = BreakNotice {
                    owner,
                    open_id,
                    to: Level::from_wire(to),
                    lease: lease.map(LeaseNotice::from),
                };
                match lock(&inner.sinks).get(&owner) {
                    Some(tx) if tx.send(n).is_ok() => {}
                    _ => debug!(owner, "oplock holder has no break queue"),
                }
            }
            Ok(ToWorkerMsg::Wake { key }) => {
                if let Some(n) = lock(&inner.wakes).get(&FileKey::from(key)) {
                    n.notify_waiters();
                }
            }
            Ok(ToWorkerMsg::Surrender { claim, open_id }) => {
                let sent = lock(&inner.surrender)
                    .as_ref()
                    .is_some_and(|tx| tx.send((claim, open_id)).is_ok());
                if !sent {
                    // No disconnected opens here: answer at once.
                    let _ = inner.call(Req::Surrendered {
                        claim,
                        from_owner: 0,
                        open: None,
                    });
                }
            }
            Ok(m) => warn!(?m, "unexpected message on the broker event socket"),
            Err(e) => warn!(%e, "bad broker message dropped"),
        }
    }
    inner.dead.store(true, Ordering::SeqCst);
    for n in lock(&inner.wakes).values() {
        n.notify_waiters();
    }
}

impl Inner {
    /// One round trip on an idle call socket; None when the supervisor
    /// cannot be reached.
    fn call(&self, req: Req) -> Option<Resp> {
        self.call_fd(req, None).map(|(r, _)| r)
    }

    /// [`Self::call`] with `fd` attached to the request, returning the fd
    /// attached to the answer (if any).
    fn call_fd(&self, req: Req, fd: Option<BorrowedFd<'_>>) -> Option<(Resp, Option<OwnedFd>)> {
        if self.dead.load(Ordering::SeqCst) {
            return None;
        }
        let sock = {
            let mut idle = lock(&self.idle);
            loop {
                if let Some(s) = idle.pop() {
                    break s;
                }
                idle = self.freed.wait(idle).unwrap_or_else(|e| e.into_inner());
            }
        };
        let r = self.round_trip(&sock, req, fd);
        lock(&self.idle).push(sock);
        self.freed.notify_one();
        r
    }

    fn round_trip(
        &self,
        sock: &OwnedFd,
        req: Req,
        fd: Option<BorrowedFd<'_>>,
    ) -> Option<(Resp, Option<OwnedFd>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = send_msg_fd(sock, &bp::encode(&ToBroker { id, req }), fd) {
            error!(%e, "cannot reach the broker");
            return None;
        }
        let mut buf = Vec::new();
        loop {
            let (n, mut fds) = match recv_msg_fds(sock, &mut buf) {
                Ok(Some(got)) => got,
                Ok(None) => {
                    error!("the broker closed a call socket");
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    warn!(%e, "broker reply dropped");
                    continue;
                }
                Err(e) => {
                    error!(%e, "no answer from the broker");
                    return None;
                }
            };
            match bp::decode::<ToWorkerMsg>(&buf[..n]) {
                Ok(ToWorkerMsg::Reply { id: got, resp }) if got == id => {
                    return Some((resp, fds.pop()))
                }
                // The late answer to a call that timed out: skip it.
                Ok(ToWorkerMsg::Reply { id: got, .. }) => debug!(got, id, "stale broker reply"),
                Ok(m) => warn!(?m, "unexpected message on a broker call socket"),
                Err(e) => warn!(%e, "bad broker reply dropped"),
            }
        }
    }

    /// The local Notify that wake-ups of `key` fire.
    fn notify_for(&self, key: FileKey) -> Arc<Notify> {
        let mut w = lock(&self.wakes);
        if w.len() > 256 {
            // Drop the ones no waiter holds any more.
            w.retain(|_, n| Arc::strong_count(n) > 1);
        }
        w.entry(key).or_default().clone()
    }
}

/// Deferred wake of [`BrokerHandle::close_deferring_wake`].
pub enum Wake {
    Local(Arc<Notify>),
    Remote(Arc<Inner>, FileKey),
}

impl Wake {
    pub fn notify_waiters(&self) {
        match self {
            Wake::Local(n) => n.notify_waiters(),
            Wake::Remote(inner, key) => {
                let _ = inner.call(Req::Wake {
                    key: Key::from(*key),
                });
            }
        }
    }
}

/// The broker of this process: its own or the supervisor's.
pub enum BrokerHandle {
    Local(Broker),
    Remote(RemoteBroker),
}

impl Default for BrokerHandle {
    fn default() -> Self {
        BrokerHandle::Local(Broker::new())
    }
}

impl From<Broker> for BrokerHandle {
    fn from(b: Broker) -> Self {
        BrokerHandle::Local(b)
    }
}

const UNREACHABLE: NtStatus = NtStatus::INTERNAL_ERROR;

fn st(code: u32) -> NtStatus {
    NtStatus(code)
}

/// Logs an answer of the wrong kind (a bug or a version mix-up).
fn odd(r: Option<Resp>) {
    if let Some(r) = r {
        warn!(?r, "unexpected broker answer");
    }
}

impl BrokerHandle {
    pub fn new() -> Self {
        Self::default()
    }

    fn k(key: FileKey) -> Key {
        Key::from(key)
    }

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
        let (o, _) =
            self.open_with_time(key, path, open_id, access, share, delete_on_close, intent)?;
        Ok(o)
    }

    /// [`Self::open_with`], and when granted the file's
    /// [`Self::write_time`] just after (one round trip when remote).
    #[allow(clippy::too_many_arguments)]
    pub fn open_with_time(
        &self,
        key: FileKey,
        path: PathBuf,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
        intent: &Intent,
    ) -> Result<(Opened, Option<u64>), NtStatus> {
        match self {
            BrokerHandle::Local(b) => {
                let o = b.open_with(key, path, open_id, access, share, delete_on_close, intent)?;
                let t = match o {
                    Opened::Granted(_) => b.write_time(key),
                    Opened::Wait => None,
                };
                Ok((o, t))
            }
            BrokerHandle::Remote(r) => match r.inner.call(Req::OpenWith {
                key: Self::k(key),
                path: path_bytes(path),
                open_id,
                access,
                share,
                delete_on_close,
                intent: intent.into(),
            }) {
                Some(Resp::Opened(Ok(Some(l)), t)) => Ok((Opened::Granted(Level::from_wire(l)), t)),
                Some(Resp::Opened(Ok(None), _)) => Ok((Opened::Wait, None)),
                Some(Resp::Opened(Err(s), _)) => Err(st(s)),
                r => {
                    odd(r);
                    Err(UNREACHABLE)
                }
            },
        }
    }

    fn close_of(r: Option<Resp>) -> CloseOutcome {
        match r {
            Some(Resp::Close(c)) => c.into(),
            r => {
                odd(r);
                CloseOutcome {
                    delete: None,
                    last: false,
                    write_time: None,
                    delete_stream: false,
                }
            }
        }
    }

    pub fn close(&self, key: FileKey, open_id: u64) -> CloseOutcome {
        match self {
            BrokerHandle::Local(b) => b.close(key, open_id),
            BrokerHandle::Remote(r) => Self::close_of(r.inner.call(Req::Close {
                key: Self::k(key),
                open_id,
            })),
        }
    }

    pub fn close_deferring_wake(&self, key: FileKey, open_id: u64) -> (CloseOutcome, Option<Wake>) {
        match self {
            BrokerHandle::Local(b) => {
                let (o, w) = b.close_deferring_wake(key, open_id);
                (o, w.map(Wake::Local))
            }
            BrokerHandle::Remote(r) => match r.inner.call(Req::CloseDeferringWake {
                key: Self::k(key),
                open_id,
            }) {
                Some(Resp::CloseDeferred(c, deferred)) => (
                    c.into(),
                    deferred.then(|| Wake::Remote(r.inner.clone(), key)),
                ),
                other => (Self::close_of(other), None),
            },
        }
    }

    /// An open goes: its write-time part is settled
    /// ([`Broker::write_time_close`]), then it is closed as by
    /// [`Self::close_deferring_wake`]. One round trip when remote.
    pub fn close_open(
        &self,
        key: FileKey,
        open_id: u64,
        o: &mut OpenWriteTime,
    ) -> (CloseOutcome, Option<Wake>) {
        match self {
            BrokerHandle::Local(b) => {
                b.write_time_close(key, o);
                let (out, w) = b.close_deferring_wake(key, open_id);
                (out, w.map(Wake::Local))
            }
            BrokerHandle::Remote(r) => match r.inner.call(Req::CloseOpen {
                key: Self::k(key),
                open_id,
                open: *o,
            }) {
                Some(Resp::CloseDeferred(c, deferred)) => (
                    c.into(),
                    deferred.then(|| Wake::Remote(r.inner.clone(), key)),
                ),
                other => (Self::close_of(other), None),
            },
        }
    }

    pub fn register_break_sink(&self, owner: u64, sink: BreakSink) {
        match self {
            BrokerHandle::Local(b) => b.register_break_sink(owner, sink),
            BrokerHandle::Remote(r) => {
                lock(&r.inner.sinks).insert(owner, sink);
                let _ = r.inner.call(Req::RegisterBreakSink { owner });
            }
        }
    }

    pub fn unregister_break_sink(&self, owner: u64) {
        match self {
            BrokerHandle::Local(b) => b.unregister_break_sink(owner),
            BrokerHandle::Remote(r) => {
                lock(&r.inner.sinks).remove(&owner);
                let _ = r.inner.call(Req::UnregisterBreakSink { owner });
            }
        }
    }

    pub fn oplock_ack(
        &self,
        key: FileKey,
        open_id: u64,
        wire_level: u8,
    ) -> Result<Level, NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.oplock_ack(key, open_id, wire_level),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OplockAck {
                key: Self::k(key),
                open_id,
                wire_level,
            }) {
                Some(Resp::LevelResult(x)) => x.map(Level::from_wire).map_err(st),
                r => {
                    odd(r);
                    Err(UNREACHABLE)
                }
            },
        }
    }

    pub fn oplock_break_level2(&self, key: FileKey, actor: u64) -> usize {
        match self {
            BrokerHandle::Local(b) => b.oplock_break_level2(key, actor),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OplockBreakLevel2 {
                key: Self::k(key),
                actor,
            }) {
                Some(Resp::Count(n)) => n as usize,
                r => {
                    odd(r);
                    0
                }
            },
        }
    }

    pub fn open_lease(&self, key: FileKey, open_id: u64) -> Option<LeaseId> {
        match self {
            BrokerHandle::Local(b) => b.open_lease(key, open_id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OpenLease {
                key: Self::k(key),
                open_id,
            }) {
                Some(Resp::Lease(l)) => l,
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn lease_file(&self, id: LeaseId) -> Option<FileKey> {
        match self {
            BrokerHandle::Local(b) => b.lease_file(id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::LeaseFile { id }) {
                Some(Resp::File(k)) => k.map(FileKey::from),
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn lease_grant(&self, key: FileKey, id: LeaseId) -> Option<LeaseGrant> {
        match self {
            BrokerHandle::Local(b) => b.lease_grant(key, id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::LeaseGrant {
                key: Self::k(key),
                id,
            }) {
                Some(Resp::Grant(g)) => g.map(LeaseGrant::from),
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn lease_ack(&self, id: LeaseId, state: u32) -> Result<u32, NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.lease_ack(id, state),
            BrokerHandle::Remote(r) => match r.inner.call(Req::LeaseAck { id, state }) {
                Some(Resp::State(x)) => x.map_err(st),
                r => {
                    odd(r);
                    Err(UNREACHABLE)
                }
            },
        }
    }

    pub fn break_handle_leases(&self, key: FileKey, actor: u64) {
        match self {
            BrokerHandle::Local(b) => b.break_handle_leases(key, actor),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::BreakHandleLeases {
                    key: Self::k(key),
                    actor,
                },
            ),
        }
    }

    pub fn lease_parent(&self, key: FileKey, open_id: u64) -> Option<LeaseId> {
        match self {
            BrokerHandle::Local(b) => b.lease_parent(key, open_id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::LeaseParent {
                key: Self::k(key),
                open_id,
            }) {
                Some(Resp::Lease(l)) => l,
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn has_dir_leases(&self) -> bool {
        match self {
            BrokerHandle::Local(b) => b.has_dir_leases(),
            BrokerHandle::Remote(r) => match r.inner.call(Req::HasDirLeases) {
                Some(Resp::Bool(x)) => x,
                r => {
                    odd(r);
                    false
                }
            },
        }
    }

    pub fn break_dir_leases(&self, key: FileKey, except: Option<LeaseId>) {
        match self {
            BrokerHandle::Local(b) => b.break_dir_leases(key, except),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::BreakDirLeases {
                    key: Self::k(key),
                    except,
                },
            ),
        }
    }

    pub fn caching(&self, key: FileKey, open_id: u64) -> u32 {
        match self {
            BrokerHandle::Local(b) => b.caching(key, open_id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::Caching {
                key: Self::k(key),
                open_id,
            }) {
                Some(Resp::Count(n)) => u32::try_from(n).unwrap_or(0),
                r => {
                    odd(r);
                    0
                }
            },
        }
    }

    pub fn kernel_limit(&self, key: FileKey, open_id: u64, keep: u32) {
        match self {
            BrokerHandle::Local(b) => b.kernel_limit(key, open_id, keep),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::KernelLimit {
                    key: Self::k(key),
                    open_id,
                    keep,
                },
            ),
        }
    }

    pub fn kernel_break(
        &self,
        key: FileKey,
        open_id: u64,
        keep: u32,
        timeout: std::time::Duration,
    ) -> bool {
        match self {
            BrokerHandle::Local(b) => b.kernel_break(key, open_id, keep, timeout),
            BrokerHandle::Remote(r) => match r.inner.call(Req::KernelBreak {
                key: Self::k(key),
                open_id,
                keep,
                timeout,
            }) {
                Some(Resp::Bool(x)) => x,
                r => {
                    odd(r);
                    false
                }
            },
        }
    }

    /// Registers for wake-ups of `key`; the Notify fires on the changes the
    /// local broker's would (and, remotely, sometimes more often).
    fn watch(
        &self,
        key: FileKey,
        local: impl FnOnce(&Broker) -> Option<Arc<Notify>>,
    ) -> Option<Arc<Notify>> {
        match self {
            BrokerHandle::Local(b) => local(b),
            BrokerHandle::Remote(r) => {
                let n = r.inner.notify_for(key);
                match r.inner.call(Req::Watch { key: Self::k(key) }) {
                    Some(Resp::Bool(true)) => Some(n),
                    Some(Resp::Bool(false)) => None,
                    r => {
                        odd(r);
                        None
                    }
                }
            }
        }
    }

    pub fn oplock_changed(&self, key: FileKey) -> Option<Arc<Notify>> {
        self.watch(key, |b| b.oplock_changed(key))
    }

    pub fn unlock_notify(&self, key: FileKey) -> Option<Arc<Notify>> {
        self.watch(key, |b| b.unlock_notify(key))
    }

    pub fn oplock_deadline(&self, key: FileKey) -> Option<Instant> {
        match self {
            BrokerHandle::Local(b) => b.oplock_deadline(key),
            BrokerHandle::Remote(r) => {
                match r.inner.call(Req::OplockDeadline { key: Self::k(key) }) {
                    Some(Resp::Deadline(d)) => d.map(|d| Instant::now() + d),
                    r => {
                        odd(r);
                        None
                    }
                }
            }
        }
    }

    pub fn oplock_expire(&self, key: FileKey) {
        match self {
            BrokerHandle::Local(b) => b.oplock_expire(key),
            BrokerHandle::Remote(r) => {
                let _ = r.inner.call(Req::OplockExpire { key: Self::k(key) });
            }
        }
    }

    pub fn oplock_disconnect(&self, key: FileKey, open_id: u64, owner: u64) -> bool {
        match self {
            BrokerHandle::Local(b) => b.oplock_disconnect(key, open_id, owner),
            BrokerHandle::Remote(r) => self.boolean(
                r,
                Req::OplockDisconnect {
                    key: Self::k(key),
                    open_id,
                    owner,
                },
            ),
        }
    }

    pub fn oplock_reattach(&self, key: FileKey, open_id: u64, owner: u64) -> Option<Level> {
        match self {
            BrokerHandle::Local(b) => b.oplock_reattach(key, open_id, owner),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OplockReattach {
                key: Self::k(key),
                open_id,
                owner,
            }) {
                Some(Resp::OptLevel(l)) => l.map(Level::from_wire),
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    /// Tells the supervisor that durable open `open_id` is held by the
    /// handle keeper too: its broker records outlive this worker (for
    /// `timeout`) if it dies. Nothing to do in a single process.
    pub fn durable_kept(&self, key: FileKey, open_id: u64, timeout: Duration) {
        if let BrokerHandle::Remote(r) = self {
            Self::unit(
                r,
                Req::DurableKept {
                    key: Self::k(key),
                    open_id,
                    timeout,
                },
            );
        }
    }

    /// Takes over the broker records of kept durable open `open_id` that a
    /// dead worker left, breaks going to `owner`: its oplock level and
    /// byte-range locks. None if there are none (purged, timed out, or the
    /// supervisor restarted).
    pub fn adopt_orphan(
        &self,
        key: FileKey,
        open_id: u64,
        owner: u64,
    ) -> Option<(Level, bp::Locks)> {
        let BrokerHandle::Remote(r) = self else {
            return None;
        };
        match r.inner.call(Req::AdoptOrphan {
            key: Self::k(key),
            open_id,
            owner,
        }) {
            Some(Resp::Adopted(a)) => a.map(|(l, locks)| (Level::from_wire(l), locks)),
            r => {
                odd(r);
                None
            }
        }
    }

    /// How much longer `addr` is refused after failed logons; `local` is
    /// this process's throttle, used when the broker is in process.
    pub fn logon_blocked(&self, local: &Mutex<LogonThrottle>, addr: IpAddr) -> Option<Duration> {
        match self {
            BrokerHandle::Local(_) => lock(local).blocked(addr, Instant::now()),
            BrokerHandle::Remote(r) => match r.inner.call(Req::LogonBlocked { addr }) {
                Some(Resp::Blocked(d)) => d,
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    /// Counts a failed logon from `addr`; the lockout it started, if any.
    pub fn logon_failed(
        &self,
        local: &Mutex<LogonThrottle>,
        addr: IpAddr,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Option<Duration> {
        match self {
            BrokerHandle::Local(_) => {
                match lock(local).failed(addr, Instant::now(), limit, window, lockout) {
                    Failure::Blocked(d) => Some(d),
                    Failure::Counted(_) => None,
                }
            }
            BrokerHandle::Remote(r) => match r.inner.call(Req::LogonFailed {
                addr,
                limit,
                window,
                lockout,
            }) {
                Some(Resp::Blocked(d)) => d,
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    /// A successful logon from `addr` forgets its failures.
    pub fn logon_succeeded(&self, local: &Mutex<LogonThrottle>, addr: IpAddr) {
        match self {
            BrokerHandle::Local(_) => lock(local).succeeded(addr),
            BrokerHandle::Remote(r) => Self::unit(r, Req::LogonSucceeded { addr }),
        }
    }

    /// Whether this is the supervisor's broker (other workers exist).
    pub fn is_remote(&self) -> bool {
        matches!(self, BrokerHandle::Remote(_))
    }

    /// Where this worker's disconnected durable opens are given up when
    /// another worker claims them (remote broker only: a single process has
    /// no other worker).
    pub fn set_surrender_sink(&self, sink: SurrenderSink) {
        if let BrokerHandle::Remote(r) = self {
            *lock(&r.inner.surrender) = Some(sink);
        }
    }

    /// Takes disconnected durable open `open_id` over from the worker that
    /// holds it; its breaks go to `to_owner` from now on. Blocks until the
    /// holder answers (a few seconds at most). None if no other worker holds
    /// it disconnected, or another claim of it is under way.
    pub fn durable_claim(&self, open_id: u64, to_owner: u64) -> Option<(Box<MovedOpen>, OwnedFd)> {
        let BrokerHandle::Remote(r) = self else {
            return None;
        };
        match r
            .inner
            .call_fd(Req::DurableClaim { open_id, to_owner }, None)
        {
            Some((Resp::Moved(Some(m)), Some(fd))) => Some((m, fd)),
            Some((Resp::Moved(None), _)) => None,
            r => {
                odd(r.map(|(r, _)| r));
                None
            }
        }
    }

    /// Answers claim `claim`: `open` given up by this worker (with its fd),
    /// or None. False if nobody took it: this worker keeps it.
    pub fn surrendered(
        &self,
        claim: u64,
        from_owner: u64,
        open: Option<(Box<MovedOpen>, BorrowedFd<'_>)>,
    ) -> bool {
        let BrokerHandle::Remote(r) = self else {
            return false;
        };
        let (open, fd) = match open {
            Some((m, fd)) => (Some(m), Some(fd)),
            None => (None, None),
        };
        let req = Req::Surrendered {
            claim,
            from_owner,
            open,
        };
        match r.inner.call_fd(req, fd) {
            Some((Resp::Bool(b), _)) => b,
            r => {
                odd(r.map(|(r, _)| r));
                false
            }
        }
    }

    pub fn oplock_level(&self, key: FileKey, open_id: u64) -> Level {
        match self {
            BrokerHandle::Local(b) => b.oplock_level(key, open_id),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OplockLevel {
                key: Self::k(key),
                open_id,
            }) {
                Some(Resp::Level(l)) => Level::from_wire(l),
                r => {
                    odd(r);
                    Level::NoOplock
                }
            },
        }
    }

    pub fn would_conflict(&self, key: FileKey, access: u32, share: u32) -> Option<NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.would_conflict(key, access, share),
            BrokerHandle::Remote(r) => match r.inner.call(Req::WouldConflict {
                key: Self::k(key),
                access,
                share,
            }) {
                Some(Resp::OptStatus(s)) => s.map(st),
                r => {
                    odd(r);
                    Some(UNREACHABLE)
                }
            },
        }
    }

    pub fn open_count(&self, key: FileKey) -> usize {
        match self {
            BrokerHandle::Local(b) => b.open_count(key),
            BrokerHandle::Remote(r) => match r.inner.call(Req::OpenCount { key: Self::k(key) }) {
                Some(Resp::Count(n)) => n as usize,
                r => {
                    odd(r);
                    0
                }
            },
        }
    }

    fn boolean(&self, r: &RemoteBroker, req: Req) -> bool {
        match r.inner.call(req) {
            Some(Resp::Bool(b)) => b,
            r => {
                odd(r);
                false
            }
        }
    }

    pub fn streams_open(&self, key: FileKey) -> bool {
        match self {
            BrokerHandle::Local(b) => b.streams_open(key),
            BrokerHandle::Remote(r) => self.boolean(r, Req::StreamsOpen { key: Self::k(key) }),
        }
    }

    pub fn write_time(&self, key: FileKey) -> Option<u64> {
        match self {
            BrokerHandle::Local(b) => b.write_time(key),
            BrokerHandle::Remote(r) => match r.inner.call(Req::WriteTime { key: Self::k(key) }) {
                Some(Resp::OptTime(t)) => t,
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn write_time_needs_hold(&self, key: FileKey) -> bool {
        match self {
            BrokerHandle::Local(b) => b.write_time_needs_hold(key),
            BrokerHandle::Remote(r) => {
                self.boolean(r, Req::WriteTimeNeedsHold { key: Self::k(key) })
            }
        }
    }

    /// A write-time call that updates the open's part.
    fn write_time_call(r: &RemoteBroker, o: &mut OpenWriteTime, req: Req) -> Option<u64> {
        match r.inner.call(req) {
            Some(Resp::WriteTime(n)) => {
                *o = n;
                None
            }
            Some(Resp::WriteTimeAnd(n, t)) => {
                *o = n;
                t
            }
            r => {
                odd(r);
                None
            }
        }
    }

    pub fn write_time_modified(
        &self,
        key: FileKey,
        o: &mut OpenWriteTime,
        change: Change,
        pre_mtime: Option<u64>,
    ) {
        match self {
            BrokerHandle::Local(b) => b.write_time_modified(key, o, change, pre_mtime),
            BrokerHandle::Remote(r) => {
                let req = Req::WriteTimeModified {
                    key: Self::k(key),
                    open: *o,
                    change: bp::change_byte(change),
                    pre_mtime,
                };
                Self::write_time_call(r, o, req);
            }
        }
    }

    pub fn write_time_flush(&self, key: FileKey, o: &mut OpenWriteTime) {
        match self {
            BrokerHandle::Local(b) => b.write_time_flush(key, o),
            BrokerHandle::Remote(r) => {
                let req = Req::WriteTimeFlush {
                    key: Self::k(key),
                    open: *o,
                };
                Self::write_time_call(r, o, req);
            }
        }
    }

    pub fn write_time_set(&self, key: FileKey, o: &mut OpenWriteTime, t: u64) {
        match self {
            BrokerHandle::Local(b) => b.write_time_set(key, o, t),
            BrokerHandle::Remote(r) => {
                let req = Req::WriteTimeSet {
                    key: Self::k(key),
                    open: *o,
                    time: t,
                };
                Self::write_time_call(r, o, req);
            }
        }
    }

    pub fn write_time_close(&self, key: FileKey, o: &mut OpenWriteTime) -> Option<u64> {
        match self {
            BrokerHandle::Local(b) => b.write_time_close(key, o),
            BrokerHandle::Remote(r) => {
                let req = Req::WriteTimeClose {
                    key: Self::k(key),
                    open: *o,
                };
                Self::write_time_call(r, o, req)
            }
        }
    }

    fn unit(r: &RemoteBroker, req: Req) {
        match r.inner.call(req) {
            Some(Resp::Unit) => {}
            r => odd(r),
        }
    }

    pub fn set_delete_pending(&self, key: FileKey, pending: bool) {
        match self {
            BrokerHandle::Local(b) => b.set_delete_pending(key, pending),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::SetDeletePending {
                    key: Self::k(key),
                    pending,
                },
            ),
        }
    }

    pub fn set_delete_on_close(&self, key: FileKey, open_id: u64, on: bool) {
        match self {
            BrokerHandle::Local(b) => b.set_delete_on_close(key, open_id, on),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::SetDeleteOnClose {
                    key: Self::k(key),
                    open_id,
                    on,
                },
            ),
        }
    }

    pub fn delete_pending(&self, key: FileKey) -> bool {
        match self {
            BrokerHandle::Local(b) => b.delete_pending(key),
            BrokerHandle::Remote(r) => self.boolean(r, Req::DeletePending { key: Self::k(key) }),
        }
    }

    pub fn renamed(&self, key: FileKey, new_path: PathBuf) {
        match self {
            BrokerHandle::Local(b) => b.renamed(key, new_path),
            BrokerHandle::Remote(r) => Self::unit(
                r,
                Req::Renamed {
                    key: Self::k(key),
                    path: path_bytes(new_path),
                },
            ),
        }
    }

    pub fn path(&self, key: FileKey) -> Option<PathBuf> {
        match self {
            BrokerHandle::Local(b) => b.path(key),
            BrokerHandle::Remote(r) => match r.inner.call(Req::Path { key: Self::k(key) }) {
                Some(Resp::Path(p)) => p.map(bytes_path),
                r => {
                    odd(r);
                    None
                }
            },
        }
    }

    pub fn has_open_below(&self, dir: &Path) -> bool {
        match self {
            BrokerHandle::Local(b) => b.has_open_below(dir),
            // Unreachable: claim there is one, which refuses the rename.
            BrokerHandle::Remote(r) => match r.inner.call(Req::HasOpenBelow {
                dir: path_bytes(dir),
            }) {
                Some(Resp::Bool(b)) => b,
                r => {
                    odd(r);
                    true
                }
            },
        }
    }

    fn status_call(r: &RemoteBroker, req: Req) -> Result<(), NtStatus> {
        match r.inner.call(req) {
            Some(Resp::Status(s)) => s.map_err(st),
            r => {
                odd(r);
                Err(UNREACHABLE)
            }
        }
    }

    pub fn lock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        exclusive: bool,
    ) -> Result<(), NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.lock(key, open_id, offset, length, exclusive),
            BrokerHandle::Remote(r) => Self::status_call(
                r,
                Req::Lock {
                    key: Self::k(key),
                    open_id,
                    offset,
                    length,
                    exclusive,
                },
            ),
        }
    }

    pub fn unlock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
    ) -> Result<(), NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.unlock(key, open_id, offset, length),
            BrokerHandle::Remote(r) => Self::status_call(
                r,
                Req::Unlock {
                    key: Self::k(key),
                    open_id,
                    offset,
                    length,
                },
            ),
        }
    }

    pub fn check_io(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        write: bool,
    ) -> Result<(), NtStatus> {
        match self {
            BrokerHandle::Local(b) => b.check_io(key, open_id, offset, length, write),
            BrokerHandle::Remote(r) => Self::status_call(
                r,
                Req::CheckIo {
                    key: Self::k(key),
                    open_id,
                    offset,
                    length,
                    write,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::broker_service::{send_msg, BrokerService};
    use super::*;
    use crate::fsa::types::{access, share};
    use tokio::sync::mpsc;

    const K: FileKey = FileKey {
        dev: 1,
        ino: 2,
        stream: 0,
    };
    const RW: u32 = access::FILE_READ_DATA | access::FILE_WRITE_DATA;

    /// Two workers' handles on one supervisor broker.
    fn two() -> (Arc<BrokerService>, BrokerHandle, BrokerHandle) {
        let svc = BrokerService::new();
        let a = RemoteBroker::new(svc.attach(0, 3).unwrap()).unwrap();
        let b = RemoteBroker::new(svc.attach(1, 3).unwrap()).unwrap();
        (svc, BrokerHandle::Remote(a), BrokerHandle::Remote(b))
    }

    fn intent(owner: u64, requested: Level) -> Intent {
        Intent {
            owner,
            requested,
            oplocks: true,
            level2: true,
            may_break: true,
            break_timeout: Duration::from_secs(30),
            ..Intent::none()
        }
    }

    fn open(b: &BrokerHandle, id: u64, acc: u32, sh: u32) -> Result<Opened, NtStatus> {
        b.open_with(K, "f".into(), id, acc, sh, false, &Intent::none())
    }

    #[test]
    fn share_modes_and_locks_span_workers() {
        let (_svc, a, b) = two();
        assert!(open(&a, 1, RW, share::READ).is_ok());
        assert_eq!(
            open(&b, 2, RW, share::ALL),
            Err(NtStatus::SHARING_VIOLATION)
        );
        assert!(open(&b, 3, access::FILE_READ_DATA, share::READ | share::WRITE).is_ok());
        assert_eq!(a.open_count(K), 2);
        a.lock(K, 1, 0, 10, true).unwrap();
        assert_eq!(b.lock(K, 3, 5, 1, false), Err(NtStatus::LOCK_NOT_GRANTED));
        assert_eq!(
            b.check_io(K, 3, 0, 1, false),
            Err(NtStatus::FILE_LOCK_CONFLICT)
        );
        assert!(!a.close(K, 1).last);
        b.lock(K, 3, 5, 1, false).unwrap();
        assert!(b.close(K, 3).last);
        assert_eq!(a.open_count(K), 0);
    }

    #[tokio::test]
    async fn unlock_on_one_worker_wakes_a_waiter_on_the_other() {
        let (_svc, a, b) = two();
        open(&a, 1, RW, share::ALL).unwrap();
        open(&b, 2, RW, share::ALL).unwrap();
        a.lock(K, 1, 0, 10, true).unwrap();
        let n = b.unlock_notify(K).unwrap();
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        assert_eq!(b.lock(K, 2, 0, 10, true), Err(NtStatus::LOCK_NOT_GRANTED));
        a.unlock(K, 1, 0, 10).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("unlock must wake the other worker's waiter");
        b.lock(K, 2, 0, 10, true).unwrap();
    }

    #[tokio::test]
    async fn oplock_break_reaches_the_holders_worker() {
        let (_svc, a, b) = two();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let owner_a = 1 << 48 | 1;
        a.register_break_sink(owner_a, tx);
        let held = a.open_with(
            K,
            "f".into(),
            10,
            RW,
            share::ALL,
            false,
            &intent(owner_a, Level::Batch),
        );
        assert_eq!(held, Ok(Opened::Granted(Level::Batch)));
        let other = intent(2 << 48 | 1, Level::NoOplock);
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &other),
            Ok(Opened::Wait)
        );
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((n.owner, n.open_id, n.to), (owner_a, 10, Level::LevelII));
        let changed = b.oplock_changed(K).unwrap();
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        assert!(b.oplock_deadline(K).is_some());
        assert_eq!(a.oplock_ack(K, 10, 0x01), Ok(Level::LevelII));
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("the ack must wake the waiting open");
        assert_eq!(b.oplock_deadline(K), None);
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &other),
            Ok(Opened::Granted(Level::NoOplock))
        );
        assert_eq!(a.oplock_level(K, 10), Level::LevelII);
    }

    /// What a holder sends for open `id` (the fields the broker reads).
    fn moved(id: u64) -> Box<MovedOpen> {
        Box::new(MovedOpen {
            open_id: id,
            key: K.into(),
            share: "s".into(),
            path: b"f".to_vec(),
            smb_name: "f".into(),
            is_dir: false,
            access: RW,
            uid: 1,
            gid: 1,
            groups: vec![],
            position: 0,
            mode: 0,
            write_time: OpenWriteTime::default(),
            stream: None,
            durable_v2: true,
            create_guid: [1; 16],
            client_guid: [2; 16],
            timeout: Duration::from_secs(60),
            share_access: share::READ,
            keeper_id: None,
            lock_seq: vec![0xff; 64],
            ofd_locks: vec![],
            remaining: Duration::from_secs(50),
            purge: false,
            kernel_lease: 2,
        })
    }

    fn three() -> (Arc<BrokerService>, [BrokerHandle; 3]) {
        let svc = BrokerService::new();
        let h = |i| BrokerHandle::Remote(RemoteBroker::new(svc.attach(i, 2).unwrap()).unwrap());
        let hs = [h(0), h(1), h(2)];
        (svc, hs)
    }

    /// Failed logons count per address across workers: two failures on
    /// one worker and one on another block the address for all of them.
    #[test]
    fn failed_logons_are_counted_across_workers() {
        let (_svc, [a, b, c]) = three();
        let local = Mutex::new(LogonThrottle::default());
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let (w, l) = (Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(a.logon_failed(&local, addr, 3, w, l), None);
        assert_eq!(a.logon_failed(&local, addr, 3, w, l), None);
        assert_eq!(b.logon_failed(&local, addr, 3, w, l), Some(l));
        assert!(c.logon_blocked(&local, addr).is_some());
        assert!(c.logon_blocked(&local, other).is_none());
        assert!(
            lock(&local).blocked(addr, Instant::now()).is_none(),
            "not counted locally"
        );
        // Success does not lift a running lockout.
        a.logon_succeeded(&local, addr);
        assert!(b.logon_blocked(&local, addr).is_some());
    }

    /// Worker `a` holds open 7 (batch oplock, read sharing, a lock) as a
    /// disconnected durable open of owner `da`.
    fn hold_disconnected(a: &BrokerHandle, da: u64) {
        let (tx, _rx) = mpsc::unbounded_channel();
        a.register_break_sink(da, tx);
        let i = intent(1 << 48 | 1, Level::Batch);
        let r = a.open_with(K, "f".into(), 7, RW, share::READ, false, &i);
        assert_eq!(r, Ok(Opened::Granted(Level::Batch)));
        a.lock(K, 7, 0, 10, true).unwrap();
        assert!(a.oplock_disconnect(K, 7, da));
    }

    fn shut(h: &BrokerHandle) {
        if let BrokerHandle::Remote(r) = h {
            for c in lock(&r.inner.idle).iter() {
                socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(c), socket::Shutdown::Both)
                    .unwrap();
            }
        }
    }

    #[test]
    fn durable_open_moves_between_workers() {
        let (_svc, [a, b, c]) = three();
        let (da, db) = (u64::MAX - 1, u64::MAX - 2);
        hold_disconnected(&a, da);
        let (stx, mut srx) = mpsc::unbounded_channel();
        a.set_surrender_sink(stx);
        let (btx, mut brx) = mpsc::unbounded_channel();
        b.register_break_sink(db, btx);
        let file = tempfile::tempfile().unwrap();
        let ino =
            |f: &dyn std::os::fd::AsRawFd| nix::sys::stat::fstat(f.as_raw_fd()).unwrap().st_ino;
        let got = std::thread::scope(|s| {
            let claimant = s.spawn(|| b.durable_claim(7, db));
            let (claim, id) = srx.blocking_recv().unwrap();
            assert_eq!(id, 7);
            let fd = std::os::fd::AsFd::as_fd(&file);
            assert!(a.surrendered(claim, da, Some((moved(7), fd))));
            claimant.join().unwrap()
        });
        let (m, fd) = got.expect("the claimant gets the open");
        assert_eq!((m.open_id, m.purge, m.create_guid), (7, false, [1; 16]));
        assert_eq!(ino(&fd), ino(&file));
        // The old holder dies: the open is the claimant's now, so it stays.
        shut(&a);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(b.open_count(K), 1);
        assert_eq!(
            c.open_with(K, "f".into(), 8, RW, share::ALL, false, &Intent::none()),
            Err(NtStatus::SHARING_VIOLATION)
        );
        // The lock moved too (the claimant can release it, once).
        b.unlock(K, 7, 0, 10).unwrap();
        assert!(b.unlock(K, 7, 0, 10).is_err());
        // Its oplock's breaks go to the claimant's disconnected owner.
        let i = intent(3 << 48 | 1, Level::Batch);
        assert_eq!(
            c.open_with(K, "f".into(), 8, RW, share::ALL, false, &i),
            Ok(Opened::Wait)
        );
        let n = brx.blocking_recv().unwrap();
        assert_eq!((n.owner, n.open_id), (db, 7));
    }

    #[test]
    fn concurrent_claims_have_one_winner() {
        let (_svc, [a, b, c]) = three();
        let da = u64::MAX - 1;
        hold_disconnected(&a, da);
        let (stx, mut srx) = mpsc::unbounded_channel();
        a.set_surrender_sink(stx);
        let file = tempfile::tempfile().unwrap();
        let (rb, rc) = std::thread::scope(|s| {
            let tb = s.spawn(|| b.durable_claim(7, u64::MAX - 2));
            let tc = s.spawn(|| c.durable_claim(7, u64::MAX - 3));
            // The holder gives the open to the first claim that reaches it
            // and has nothing left for a later one.
            let mut given = false;
            let t0 = Instant::now();
            while !(tb.is_finished() && tc.is_finished()) {
                assert!(t0.elapsed() < Duration::from_secs(10), "claims hang");
                match srx.try_recv() {
                    Ok((claim, _)) if !given => {
                        given = true;
                        let fd = std::os::fd::AsFd::as_fd(&file);
                        assert!(a.surrendered(claim, da, Some((moved(7), fd))));
                    }
                    Ok((claim, _)) => assert!(!a.surrendered(claim, da, None)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            (tb.join().unwrap(), tc.join().unwrap())
        });
        assert!(rb.is_some() != rc.is_some(), "exactly one claim wins");
        // An open nobody has, and one the holder no longer has.
        assert!(b.durable_claim(99, 5).is_none());
        let (stx, mut srx) = mpsc::unbounded_channel();
        let (_svc, [a, b, _c]) = three();
        hold_disconnected(&a, da);
        a.set_surrender_sink(stx);
        let r = std::thread::scope(|s| {
            let t = s.spawn(|| b.durable_claim(7, 5));
            let (claim, _) = srx.blocking_recv().unwrap();
            assert!(!a.surrendered(claim, da, None));
            t.join().unwrap()
        });
        assert!(r.is_none());
        assert_eq!(a.open_count(K), 1, "a refused claim leaves the open alone");
    }

    #[test]
    fn an_open_being_purged_moves_only_to_be_closed() {
        let (_svc, [a, b, c]) = three();
        let da = u64::MAX - 1;
        hold_disconnected(&a, da);
        // A conflicting open breaks the disconnected open's oplock.
        let i = intent(3 << 48 | 1, Level::NoOplock);
        assert_eq!(
            c.open_with(K, "f".into(), 8, RW, share::ALL, false, &i),
            Ok(Opened::Wait)
        );
        let (stx, mut srx) = mpsc::unbounded_channel();
        a.set_surrender_sink(stx);
        let file = tempfile::tempfile().unwrap();
        let got = std::thread::scope(|s| {
            let t = s.spawn(|| b.durable_claim(7, u64::MAX - 2));
            let (claim, _) = srx.blocking_recv().unwrap();
            let fd = std::os::fd::AsFd::as_fd(&file);
            assert!(a.surrendered(claim, da, Some((moved(7), fd))));
            t.join().unwrap()
        });
        let (m, _fd) = got.expect("moved");
        assert!(m.purge, "the claimant must close it");
    }

    /// Waits until `f` holds (a dead worker is noticed asynchronously).
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_dead_workers_kept_durable_open_is_adopted_with_its_lock() {
        let (_svc, [a, b, c]) = three();
        let i = intent(1 << 48 | 1, Level::Batch);
        let r = a.open_with(K, "f".into(), 7, RW, share::READ, false, &i);
        assert_eq!(r, Ok(Opened::Granted(Level::Batch)));
        a.lock(K, 7, 0, 10, true).unwrap();
        a.durable_kept(K, 7, Duration::from_secs(60));
        // An open without a keeper record goes with its worker.
        open(&a, 9, access::FILE_READ_DATA, share::ALL).unwrap();
        shut(&a);
        eventually("the plain open is closed", || c.open_count(K) == 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(c.open_count(K), 1, "the kept one stays");
        assert_eq!(
            open(&c, 8, RW, share::ALL),
            Err(NtStatus::SHARING_VIOLATION)
        );
        assert!(b.adopt_orphan(K, 99, 2 << 48 | 1).is_none());
        let (level, locks) = b.adopt_orphan(K, 7, 2 << 48 | 1).expect("adopted");
        assert_eq!((level, locks), (Level::Batch, vec![(0, 10, true)]));
        assert!(b.adopt_orphan(K, 7, 2 << 48 | 1).is_none(), "adopted once");
        b.unlock(K, 7, 0, 10).unwrap();
        assert!(b.close(K, 7).last);
    }

    #[test]
    fn a_conflicting_open_purges_an_orphan() {
        let (_svc, [a, b, _c]) = three();
        let i = intent(1 << 48 | 1, Level::Batch);
        let r = a.open_with(K, "f".into(), 7, RW, 0, false, &i);
        assert_eq!(r, Ok(Opened::Granted(Level::Batch)));
        a.durable_kept(K, 7, Duration::from_secs(60));
        shut(&a);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(b.open_count(K), 1);
        let other = intent(2 << 48 | 1, Level::NoOplock);
        assert_eq!(
            b.open_with(K, "f".into(), 8, RW, 0, false, &other),
            Ok(Opened::Wait)
        );
        eventually("the orphan is purged", || b.open_count(K) == 0);
        assert_eq!(
            b.open_with(K, "f".into(), 8, RW, 0, false, &other),
            Ok(Opened::Granted(Level::NoOplock))
        );
        assert!(b.adopt_orphan(K, 7, 5).is_none());
    }

    #[test]
    fn write_time_and_paths_travel() {
        let (_svc, a, b) = two();
        open(&a, 1, RW, share::ALL).unwrap();
        open(&b, 2, RW, share::ALL).unwrap();
        let mut o = OpenWriteTime::default();
        assert!(b.write_time_needs_hold(K));
        b.write_time_modified(K, &mut o, Change::Write, Some(100));
        assert_eq!(a.write_time(K), Some(100));
        a.renamed(K, "dir/g\u{e9}".into());
        assert_eq!(b.path(K), Some(PathBuf::from("dir/g\u{e9}")));
        assert!(b.has_open_below(Path::new("dir")));
        b.set_delete_on_close(K, 2, true);
        b.close(K, 2);
        assert!(a.delete_pending(K));
        let out = a.close(K, 1);
        assert_eq!(out.delete, Some(PathBuf::from("dir/g\u{e9}")));
    }

    #[test]
    fn a_dead_workers_opens_and_locks_are_released() {
        let svc = BrokerService::new();
        let a = BrokerHandle::Remote(RemoteBroker::new(svc.attach(0, 2).unwrap()).unwrap());
        let b = BrokerHandle::Remote(RemoteBroker::new(svc.attach(1, 2).unwrap()).unwrap());
        open(&a, 1, RW, 0).unwrap();
        a.lock(K, 1, 0, 10, true).unwrap();
        assert_eq!(open(&b, 2, RW, 0), Err(NtStatus::SHARING_VIOLATION));
        // The worker's process ends: its sockets close.
        if let BrokerHandle::Remote(r) = &a {
            for c in lock(&r.inner.idle).iter() {
                socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(c), socket::Shutdown::Both)
                    .unwrap();
            }
        }
        let t0 = Instant::now();
        while b.open_count(K) != 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "opens not released");
            std::thread::sleep(Duration::from_millis(10));
        }
        open(&b, 2, RW, 0).unwrap();
        b.lock(K, 2, 0, 10, true).unwrap();
    }

    #[test]
    fn garbage_on_the_link_is_dropped() {
        let svc = BrokerService::new();
        let ends = svc.attach(0, 1).unwrap();
        // (An empty SEQPACKET message reads as end of stream; no message
        // ever is empty, as each starts with the version.)
        let c = &ends.calls[0];
        send_msg(c, &[bp::VERSION, 0xff, 0xff]).unwrap();
        send_msg(c, &[bp::VERSION, 0]).unwrap();
        send_msg(c, &[bp::VERSION + 1]).unwrap();
        let b = BrokerHandle::Remote(RemoteBroker::new(ends).unwrap());
        assert!(open(&b, 1, RW, 0).is_ok());
        assert_eq!(b.open_count(K), 1);
    }
}

#[cfg(test)]
mod latency {
    use super::super::broker_service::BrokerService;
    use super::*;

    /// Round-trip time of a remote broker call (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn remote_call_latency() {
        let svc = BrokerService::new();
        let r = BrokerHandle::Remote(RemoteBroker::new(svc.attach(0, 1).unwrap()).unwrap());
        let l = BrokerHandle::new();
        let k = FileKey::default();
        for (name, b) in [("local", &l), ("remote", &r)] {
            let n = 20_000;
            let t0 = Instant::now();
            for _ in 0..n {
                let _ = b.check_io(k, 1, 0, 1, false);
            }
            println!("{name}: {:?} per call", t0.elapsed() / n);
        }
    }
}
