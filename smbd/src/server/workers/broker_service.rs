//! The supervisor's side of the open-file broker: the one [`Broker`] of all
//! workers, served over one SOCK_SEQPACKET socket pair per worker
//! (docs/architecture.md section 8.1).
//!
//! A worker's link is one event socket (supervisor to worker: break notices
//! and wake-ups) and a few call sockets, each used by one worker thread at a
//! time for a request and its reply. Each call socket has a thread here that
//! reads a request, runs it on the broker, sends the break notices and
//! wake-ups the call caused on the event sockets, and then answers; so an
//! event is always sent after the state change that caused it. When all of a
//! worker's call sockets are closed (the worker died), its opens are closed,
//! its locks released and its break owners forgotten, and waiters are woken.

use std::collections::{HashMap, HashSet};
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::broker_proto::{
    self as bp, bytes_path, status, Key, MovedOpen, Req, Resp, ToBroker, ToWorkerMsg, WireClose,
};
use crate::fsa::broker::{Broker, FileKey, Opened};
use crate::fsa::oplock::BreakNotice;

/// Removes the entries of `m` that belong to link `id`; returns their keys.
fn take_links<K: Copy + Eq + std::hash::Hash>(m: &mut HashMap<K, u64>, id: u64) -> Vec<K> {
    let mut gone = Vec::new();
    m.retain(|k, l| {
        if *l == id {
            gone.push(*k);
        }
        *l != id
    });
    gone
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends one message on a blocking SEQPACKET socket.
pub fn send_msg(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    loop {
        match socket::send(fd.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("short broker message send")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends one message with `with` attached as SCM_RIGHTS (if any).
pub fn send_msg_fd(fd: &OwnedFd, msg: &[u8], with: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let Some(with) = with else {
        return send_msg(fd, msg);
    };
    let raw = [with.as_raw_fd()];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    loop {
        match socket::sendmsg::<()>(
            fd.as_raw_fd(),
            &[IoSlice::new(msg)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("short broker message send")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the fds attached to it (owned, so that a
/// stray one is closed); `Ok(None)` when the peer closed the socket.
/// Messages longer than [`bp::MAX_MESSAGE`] are refused.
pub fn recv_msg_fds(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    buf.resize(bp::MAX_MESSAGE + 1, 0);
    match kmod_interface::fdpass::recv_with_fds(fd.as_fd(), buf) {
        Ok((0, fds)) if fds.is_empty() => Ok(None),
        Ok((n, _)) if n > bp::MAX_MESSAGE => Err(io::Error::other("oversized broker message")),
        Ok((n, fds)) => Ok(Some((n, fds))),
        Err(e) => Err(e),
    }
}

/// Receives one message; `Ok(None)` when the peer closed the socket.
/// Messages longer than [`bp::MAX_MESSAGE`] are refused.
pub fn recv_msg(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    buf.resize(bp::MAX_MESSAGE + 1, 0);
    loop {
        match socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => return Ok(None),
            Ok(n) if n > bp::MAX_MESSAGE => {
                return Err(io::Error::other("oversized broker message"))
            }
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A blocking SEQPACKET socket pair (close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// How many call sockets a worker gets: one per thread that may call at
/// once (tokio's workers, one per core) and a few spare; a caller waits for
/// a free one beyond that.
pub fn call_sockets() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(30)) + 2
}

/// The worker's ends of its broker link.
pub struct WorkerEnds {
    pub events: OwnedFd,
    pub calls: Vec<OwnedFd>,
}

/// One worker's link, as the service sees it.
struct Link {
    worker: usize,
    /// Event socket (break notices and wake-ups to the worker).
    fd: OwnedFd,
    /// Call sockets still being served; the last one to close detaches.
    serving: AtomicUsize,
    /// Held while sending, so that a drain of `breaks` stays in order.
    breaks_rx: Mutex<mpsc::UnboundedReceiver<BreakNotice>>,
    breaks_tx: mpsc::UnboundedSender<BreakNotice>,
    /// Opens this worker holds in the broker (closed if it dies).
    opens: Mutex<HashSet<(FileKey, u64)>>,
    /// Those of them that are durable with the keeper holding their fd, and
    /// their durable timeout (kept as orphans if the worker dies).
    kept: Mutex<HashMap<(FileKey, u64), Duration>>,
}

impl Link {
    /// Forwards the break notices queued for this worker's owners.
    fn flush_breaks(&self) {
        let mut rx = lock(&self.breaks_rx);
        while let Ok(n) = rx.try_recv() {
            if let Err(e) = send_msg(&self.fd, &bp::encode(&ToWorkerMsg::from_notice(&n))) {
                debug!(worker = self.worker, %e, "break notice not delivered");
            }
        }
    }

    fn send(&self, m: &ToWorkerMsg) {
        // Same lock as flush_breaks: a wake never overtakes a queued break.
        let _order = lock(&self.breaks_rx);
        if let Err(e) = send_msg(&self.fd, &bp::encode(m)) {
            debug!(worker = self.worker, %e, "broker message not delivered");
        }
    }
}

/// How long a claimant waits for the holder of a durable open to give it up.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// What a claim's waiting thread receives: the open and its fd, or nothing.
type ClaimResult = (Option<Box<MovedOpen>>, Option<OwnedFd>);

/// A durable open being moved from worker `holder` to worker `claimant`
/// (both by link id).
struct Claim {
    open_id: u64,
    claimant: u64,
    holder: u64,
    to_owner: u64,
    tx: std::sync::mpsc::SyncSender<ClaimResult>,
}

/// Break owner of the orphans: a dead worker's durable opens whose fd the
/// handle keeper holds (unlike any connection id or disconnected-open owner).
pub const ORPHAN_OWNER: u64 = u64::MAX - 0x2_0000;

/// A dead worker's kept durable open, waiting for a worker to adopt it.
struct Orphan {
    key: FileKey,
    deadline: std::time::Instant,
}

/// The broker and the links of all workers.
#[derive(Default)]
pub struct BrokerService {
    broker: Broker,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    next_link: AtomicU64,
    /// Which link registered each break owner.
    owners: Mutex<HashMap<u64, u64>>,
    /// Links that asked to be woken for a key (`Watch`), until the file has
    /// no opens left.
    watchers: Mutex<HashMap<FileKey, HashSet<u64>>>,
    /// Files whose last close left an unlink to its worker, which sends
    /// `Wake` once it is done (by link). Until then waiters keep waiting, as
    /// the in-process broker's deferred wake-up makes them.
    unlinking: Mutex<HashMap<FileKey, u64>>,
    /// Durable opens being moved between workers, by claim id.
    claims: Mutex<HashMap<u64, Claim>>,
    next_claim: AtomicU64,
    /// Orphaned durable opens by open id.
    orphans: Mutex<HashMap<u64, Orphan>>,
    /// Started with the first orphan: the thread that purges orphans on a
    /// break or at their deadline.
    reaper: std::sync::OnceLock<()>,
    /// Failed logons by client address, for every worker.
    logons: Mutex<crate::server::limits::LogonThrottle>,
}

impl BrokerService {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts serving a new link for worker `worker` with `calls` call
    /// sockets; returns the worker's ends (to be passed to it).
    pub fn attach(self: &Arc<Self>, worker: usize, calls: usize) -> io::Result<WorkerEnds> {
        let (events_ours, events) = pair()?;
        let mut socks = Vec::new();
        for _ in 0..calls.max(1) {
            socks.push(pair()?);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link {
            worker,
            fd: events_ours,
            serving: AtomicUsize::new(socks.len()),
            breaks_rx: Mutex::new(rx),
            breaks_tx: tx,
            opens: Mutex::new(HashSet::new()),
            kept: Mutex::new(HashMap::new()),
        });
        lock(&self.links).insert(id, link.clone());
        let mut theirs = Vec::new();
        for (k, (ours, t)) in socks.into_iter().enumerate() {
            theirs.push(t);
            let me = self.clone();
            let l = link.clone();
            let started = std::thread::Builder::new()
                .name(format!("broker-w{worker}-{k}"))
                .spawn(move || me.serve(id, l, ours));
            if let Err(e) = started {
                // Its socket is gone with the closure; count it as closed.
                warn!(worker, %e, "cannot start a broker thread");
                self.call_socket_closed(id, &link);
            }
        }
        Ok(WorkerEnds {
            events,
            calls: theirs,
        })
    }

    fn call_socket_closed(self: &Arc<Self>, id: u64, link: &Link) {
        if link.serving.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.detach(id, link);
        }
    }

    fn serve(self: Arc<Self>, id: u64, link: Arc<Link>, sock: OwnedFd) {
        let mut buf = Vec::new();
        loop {
            let (n, mut fds) = match recv_msg_fds(&sock, &mut buf) {
                Ok(Some(got)) => got,
                Ok(None) => break,
                Err(e) => {
                    warn!(worker = link.worker, %e, "broker link error");
                    if e.kind() == io::ErrorKind::Other {
                        continue; // an oversized message: dropped
                    }
                    break;
                }
            };
            let msg: ToBroker = match bp::decode(&buf[..n]) {
                Ok(m) => m,
                Err(e) => {
                    warn!(worker = link.worker, %e, "bad broker request dropped");
                    continue;
                }
            };
            tracing::trace!(req = ?msg.req, "broker call");
            let (resp, wake, out_fd) = match msg.req {
                Req::DurableClaim { open_id, to_owner } => {
                    let (r, fd) = self.claim(id, open_id, to_owner);
                    (r, None, fd)
                }
                Req::Surrendered {
                    claim,
                    from_owner,
                    open,
                } => {
                    let r = self.surrendered(id, &link, claim, from_owner, open, fds.pop());
                    (r, None, None)
                }
                req => {
                    let (r, w) = self.handle(id, &link, req);
                    (r, w, None)
                }
            };
            self.flush_all();
            if let Some(key) = wake {
                self.wake(key);
            }
            let reply = bp::encode(&ToWorkerMsg::Reply { id: msg.id, resp });
            if let Err(e) = send_msg_fd(&sock, &reply, out_fd.as_ref().map(|f| f.as_fd())) {
                debug!(worker = link.worker, %e, "broker reply not delivered");
            }
        }
        self.call_socket_closed(id, &link);
    }

    /// Forwards every link's queued break notices (a call may break the
    /// oplocks of opens on any worker).
    fn flush_all(&self) {
        let links: Vec<_> = lock(&self.links).values().cloned().collect();
        for l in links {
            l.flush_breaks();
        }
    }

    /// Wakes the waiters of `key` on every worker that watches it; forgets
    /// the watchers once the file has no opens.
    fn wake(&self, key: FileKey) {
        let ids: Vec<u64> = {
            let mut w = lock(&self.watchers);
            let ids = w
                .get(&key)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            if self.broker.open_count(key) == 0 && !lock(&self.unlinking).contains_key(&key) {
                w.remove(&key);
            }
            ids
        };
        if ids.is_empty() {
            return;
        }
        let links = lock(&self.links);
        let targets: Vec<_> = ids.iter().filter_map(|i| links.get(i).cloned()).collect();
        drop(links);
        for l in targets {
            l.send(&ToWorkerMsg::Wake { key: key.into() });
        }
    }

    /// `Req::DurableClaim` from link `id`: finds the worker whose broker
    /// opens include `open_id`, asks it to give the open up and waits for
    /// its answer (handled by [`Self::surrendered`] on the holder's thread).
    /// One claim of an open at a time: a concurrent one loses at once.
    fn claim(&self, id: u64, open_id: u64, to_owner: u64) -> (Resp, Option<OwnedFd>) {
        let none = (Resp::Moved(None), None);
        let holder = {
            let links = lock(&self.links);
            links
                .iter()
                .find(|(_, l)| lock(&l.opens).iter().any(|(_, o)| *o == open_id))
                .map(|(h, l)| (*h, l.clone()))
        };
        let Some((hid, hlink)) = holder else {
            debug!(open_id, "durable claim: no worker has the open");
            return none;
        };
        if hid == id {
            // The claimant's own open, and not disconnected there.
            return none;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        {
            let mut c = lock(&self.claims);
            if c.values().any(|p| p.open_id == open_id) {
                debug!(
                    open_id,
                    "durable claim: another claim of the open is under way"
                );
                return none;
            }
            c.insert(
                claim,
                Claim {
                    open_id,
                    claimant: id,
                    holder: hid,
                    to_owner,
                    tx,
                },
            );
        }
        hlink.send(&ToWorkerMsg::Surrender { claim, open_id });
        let got = match rx.recv_timeout(CLAIM_TIMEOUT) {
            Ok(g) => g,
            Err(_) => {
                // Still registered: the holder has not answered, and will
                // find the claim gone (and keep the open). Otherwise its
                // answer is being handled and is sent shortly.
                if lock(&self.claims).remove(&claim).is_some() {
                    warn!(
                        open_id,
                        worker = hlink.worker,
                        "durable claim: the holder did not answer"
                    );
                    return none;
                }
                rx.recv().unwrap_or((None, None))
            }
        };
        match got {
            (Some(m), Some(fd)) => (Resp::Moved(Some(m)), Some(fd)),
            _ => none,
        }
    }

    /// `Req::Surrendered` from holder link `hid`: re-owns the open's broker
    /// records (its entry among the link's opens, and its oplock or lease
    /// breaks) to the claimant and hands the open over. False tells the
    /// holder that nobody took it.
    fn surrendered(
        &self,
        hid: u64,
        hlink: &Link,
        claim: u64,
        from_owner: u64,
        open: Option<Box<MovedOpen>>,
        fd: Option<OwnedFd>,
    ) -> Resp {
        let Some(p) = lock(&self.claims).remove(&claim) else {
            debug!(claim, "surrendered open: its claimant gave up");
            return Resp::Bool(false);
        };
        let fail = |p: Claim| {
            let _ = p.tx.send((None, None));
            Resp::Bool(false)
        };
        let (Some(mut open), Some(fd)) = (open, fd) else {
            return fail(p);
        };
        if p.holder != hid || p.open_id != open.open_id {
            warn!(claim, "surrendered open does not match its claim");
            return fail(p);
        }
        let Some(clink) = lock(&self.links).get(&p.claimant).cloned() else {
            return fail(p);
        };
        let key = FileKey::from(open.key);
        if !lock(&hlink.opens).remove(&(key, open.open_id)) {
            warn!(
                open_id = open.open_id,
                "surrendered open is not the holder's in the broker"
            );
            return fail(p);
        }
        lock(&clink.opens).insert((key, open.open_id));
        if let Some(t) = lock(&hlink.kept).remove(&(key, open.open_id)) {
            lock(&clink.kept).insert((key, open.open_id), t);
        }
        open.purge = !self
            .broker
            .oplock_transfer(key, open.open_id, from_owner, p.to_owner);
        info!(
            open_id = open.open_id,
            from = hlink.worker,
            to = clink.worker,
            purge = open.purge,
            "durable open moved between workers"
        );
        let _ = p.tx.send((Some(open), Some(fd)));
        Resp::Bool(true)
    }

    /// Registers the orphans' break owner and starts the thread that purges
    /// them: a break (a conflicting open) or their deadline closes them in
    /// the broker, as the dead worker would have. The keeper's record times
    /// out on its own.
    fn start_reaper(self: &Arc<Self>) {
        self.reaper.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel();
            self.broker.register_break_sink(ORPHAN_OWNER, tx);
            let me = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("broker-orphans".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(me) = me.upgrade() else {
                        return;
                    };
                    let mut gone = Vec::new();
                    while let Ok(n) = rx.try_recv() {
                        gone.push(n.open_id);
                    }
                    let now = std::time::Instant::now();
                    gone.extend(
                        lock(&me.orphans)
                            .iter()
                            .filter(|(_, o)| o.deadline <= now)
                            .map(|(id, _)| *id),
                    );
                    me.purge_orphans(&gone);
                });
            if let Err(e) = started {
                warn!(%e, "cannot start the orphan reaper; orphans live until adopted");
            }
        });
    }

    fn purge_orphans(&self, ids: &[u64]) {
        let mut any = false;
        for id in ids {
            let Some(o) = lock(&self.orphans).remove(id) else {
                continue;
            };
            info!(
                open_id = id,
                "orphaned durable open purged (conflicting open or timeout)"
            );
            self.broker.close(o.key, *id);
            self.wake(o.key);
            any = true;
        }
        if any {
            self.flush_all();
        }
    }

    /// The worker is gone: closes its opens (releasing their locks and
    /// oplocks), forgets its break owners and watches, wakes waiters.
    fn detach(self: &Arc<Self>, id: u64, link: &Link) {
        lock(&self.links).remove(&id);
        // Claims waiting for this worker's answer fail now (dropping their
        // senders wakes the claimants).
        lock(&self.claims).retain(|_, c| c.holder != id);
        let owners = take_links(&mut lock(&self.owners), id);
        for o in owners {
            self.broker.unregister_break_sink(o);
        }
        for set in lock(&self.watchers).values_mut() {
            set.remove(&id);
        }
        // Unlinks the dead worker owed: their waiters go on.
        let owed = take_links(&mut lock(&self.unlinking), id);
        for key in owed {
            self.wake(key);
        }
        let opens: Vec<_> = lock(&link.opens).drain().collect();
        let kept = std::mem::take(&mut *lock(&link.kept));
        let mut n = opens.len();
        for (key, open_id) in opens {
            // A durable open whose fd the keeper holds stays, as a
            // disconnected one would, if its oplock or lease still caches
            // the handle.
            if let Some(timeout) = kept.get(&(key, open_id)) {
                if self.broker.oplock_disconnect(key, open_id, ORPHAN_OWNER) {
                    self.start_reaper();
                    let deadline = std::time::Instant::now() + *timeout;
                    lock(&self.orphans).insert(open_id, Orphan { key, deadline });
                    info!(
                        worker = link.worker,
                        open_id, "a dead worker's durable open is kept for the handle keeper"
                    );
                    n -= 1;
                    continue;
                }
            }
            let out = self.broker.close(key, open_id);
            if let Some(p) = out.delete {
                debug!(path = %p.display(), "delete-on-close of a dead worker's open not done");
            }
            self.wake(key);
        }
        self.flush_all();
        info!(
            worker = link.worker,
            opens = n,
            "broker link closed; the worker's opens are released"
        );
    }

    fn handle(&self, id: u64, link: &Link, req: Req) -> (Resp, Option<FileKey>) {
        let b = &self.broker;
        let r = match req {
            Req::OpenWith {
                key,
                path,
                open_id,
                access,
                share,
                delete_on_close,
                intent,
            } => {
                let key = FileKey::from(key);
                let r = b.open_with(
                    key,
                    bytes_path(path),
                    open_id,
                    access,
                    share,
                    delete_on_close,
                    &intent.into(),
                );
                let mut time = None;
                if let Ok(Opened::Granted(_)) = r {
                    lock(&link.opens).insert((key, open_id));
                    time = b.write_time(key);
                }
                let r = match r {
                    Ok(Opened::Granted(l)) => Ok(Some(l.wire())),
                    Ok(Opened::Wait) => Ok(None),
                    Err(s) => Err(s.0),
                };
                Resp::Opened(r, time)
            }
            Req::Close { key, open_id } => {
                let key = FileKey::from(key);
                lock(&link.opens).remove(&(key, open_id));
                lock(&link.kept).remove(&(key, open_id));
                let out = b.close(key, open_id);
                return (Resp::Close(out.into()), Some(key));
            }
            Req::CloseOpen {
                key,
                open_id,
                mut open,
            } => {
                let key = FileKey::from(key);
                b.write_time_close(key, &mut open);
                lock(&link.opens).remove(&(key, open_id));
                lock(&link.kept).remove(&(key, open_id));
                let (out, w) = b.close_deferring_wake(key, open_id);
                let deferred = w.is_some();
                if deferred {
                    lock(&self.unlinking).insert(key, id);
                }
                let resp = Resp::CloseDeferred(WireClose::from(out), deferred);
                return (resp, (!deferred).then_some(key));
            }
            Req::CloseDeferringWake { key, open_id } => {
                let key = FileKey::from(key);
                lock(&link.opens).remove(&(key, open_id));
                lock(&link.kept).remove(&(key, open_id));
                let (out, w) = b.close_deferring_wake(key, open_id);
                let deferred = w.is_some();
                if deferred {
                    lock(&self.unlinking).insert(key, id);
                }
                let resp = Resp::CloseDeferred(WireClose::from(out), deferred);
                return (resp, (!deferred).then_some(key));
            }
            Req::Wake { key } => {
                let key = FileKey::from(key);
                lock(&self.unlinking).remove(&key);
                // Nobody waits on the supervisor's own Notify; wake the workers.
                return (Resp::Unit, Some(key));
            }
            Req::RegisterBreakSink { owner } => {
                lock(&self.owners).insert(owner, id);
                b.register_break_sink(owner, link.breaks_tx.clone());
                Resp::Unit
            }
            Req::UnregisterBreakSink { owner } => {
                let mut o = lock(&self.owners);
                if o.get(&owner) == Some(&id) {
                    o.remove(&owner);
                    b.unregister_break_sink(owner);
                }
                Resp::Unit
            }
            Req::OplockAck {
                key,
                open_id,
                wire_level,
            } => {
                let key = FileKey::from(key);
                let r = b.oplock_ack(key, open_id, wire_level);
                return (
                    Resp::LevelResult(r.map(|l| l.wire()).map_err(|s| s.0)),
                    Some(key),
                );
            }
            Req::OplockBreakLevel2 { key, actor } => {
                Resp::Count(b.oplock_break_level2(key.into(), actor) as u64)
            }
            Req::OpenLease { key, open_id } => Resp::Lease(b.open_lease(key.into(), open_id)),
            Req::LeaseFile { id } => Resp::File(b.lease_file(id).map(Key::from)),
            Req::LeaseGrant { key, id } => {
                Resp::Grant(b.lease_grant(key.into(), id).map(bp::WireGrant::from))
            }
            Req::LeaseAck { id, state } => {
                // The acknowledgment wakes the opens waiting on the lease's file.
                let file = b.lease_file(id);
                let r = b.lease_ack(id, state).map_err(|s| s.0);
                return (Resp::State(r), file);
            }
            Req::BreakHandleLeases { key, actor } => {
                b.break_handle_leases(key.into(), actor);
                Resp::Unit
            }
            Req::LeaseParent { key, open_id } => Resp::Lease(b.lease_parent(key.into(), open_id)),
            Req::HasDirLeases => Resp::Bool(b.has_dir_leases()),
            Req::BreakDirLeases { key, except } => {
                b.break_dir_leases(key.into(), except);
                Resp::Unit
            }
            Req::Caching { key, open_id } => Resp::Count(u64::from(b.caching(key.into(), open_id))),
            Req::KernelLimit { key, open_id, keep } => {
                b.kernel_limit(key.into(), open_id, keep);
                Resp::Unit
            }
            Req::KernelBreak {
                key,
                open_id,
                keep,
                timeout,
            } => Resp::Bool(b.kernel_break(key.into(), open_id, keep, timeout)),
            Req::Watch { key } => {
                let key = FileKey::from(key);
                // Watch first, then look: a change after the look is woken.
                let mut w = lock(&self.watchers);
                w.entry(key).or_default().insert(id);
                let has = b.open_count(key) > 0 || lock(&self.unlinking).contains_key(&key);
                if !has {
                    if let Some(s) = w.get_mut(&key) {
                        s.remove(&id);
                        if s.is_empty() {
                            w.remove(&key);
                        }
                    }
                }
                Resp::Bool(has)
            }
            Req::OplockDeadline { key } => {
                let now = std::time::Instant::now();
                let key = FileKey::from(key);
                // A file being unlinked: wait for the unlinker's `Wake`.
                let unlinking = lock(&self.unlinking).contains_key(&key);
                Resp::Deadline(match b.oplock_deadline(key) {
                    Some(d) => Some(d.saturating_duration_since(now)),
                    None if unlinking => Some(std::time::Duration::from_secs(35)),
                    None => None,
                })
            }
            Req::OplockExpire { key } => {
                let key = FileKey::from(key);
                b.oplock_expire(key);
                return (Resp::Unit, Some(key));
            }
            Req::OplockDisconnect {
                key,
                open_id,
                owner,
            } => Resp::Bool(b.oplock_disconnect(key.into(), open_id, owner)),
            Req::OplockReattach {
                key,
                open_id,
                owner,
            } => Resp::OptLevel(
                b.oplock_reattach(key.into(), open_id, owner)
                    .map(|l| l.wire()),
            ),
            Req::OplockLevel { key, open_id } => {
                Resp::Level(b.oplock_level(key.into(), open_id).wire())
            }
            Req::WouldConflict { key, access, share } => {
                Resp::OptStatus(b.would_conflict(key.into(), access, share).map(|s| s.0))
            }
            Req::OpenCount { key } => Resp::Count(b.open_count(key.into()) as u64),
            Req::StreamsOpen { key } => Resp::Bool(b.streams_open(key.into())),
            Req::WriteTime { key } => Resp::OptTime(b.write_time(key.into())),
            Req::WriteTimeNeedsHold { key } => Resp::Bool(b.write_time_needs_hold(key.into())),
            Req::WriteTimeModified {
                key,
                mut open,
                change,
                pre_mtime,
            } => {
                b.write_time_modified(key.into(), &mut open, bp::byte_change(change), pre_mtime);
                Resp::WriteTime(open)
            }
            Req::WriteTimeFlush { key, mut open } => {
                b.write_time_flush(key.into(), &mut open);
                Resp::WriteTime(open)
            }
            Req::WriteTimeSet {
                key,
                mut open,
                time,
            } => {
                b.write_time_set(key.into(), &mut open, time);
                Resp::WriteTime(open)
            }
            Req::WriteTimeClose { key, mut open } => {
                let t = b.write_time_close(key.into(), &mut open);
                Resp::WriteTimeAnd(open, t)
            }
            Req::SetDeletePending { key, pending } => {
                b.set_delete_pending(key.into(), pending);
                Resp::Unit
            }
            Req::SetDeleteOnClose { key, open_id, on } => {
                b.set_delete_on_close(key.into(), open_id, on);
                Resp::Unit
            }
            Req::DeletePending { key } => Resp::Bool(b.delete_pending(key.into())),
            Req::Renamed { key, path } => {
                b.renamed(key.into(), bytes_path(path));
                Resp::Unit
            }
            Req::Path { key } => Resp::Path(b.path(key.into()).map(bp::path_bytes)),
            Req::HasOpenBelow { dir } => Resp::Bool(b.has_open_below(&bytes_path(dir))),
            Req::Lock {
                key,
                open_id,
                offset,
                length,
                exclusive,
            } => Resp::Status(status(b.lock(
                key.into(),
                open_id,
                offset,
                length,
                exclusive,
            ))),
            Req::Unlock {
                key,
                open_id,
                offset,
                length,
            } => {
                let key = FileKey::from(key);
                let r = b.unlock(key, open_id, offset, length);
                return (Resp::Status(status(r)), r.is_ok().then_some(key));
            }
            Req::LogonBlocked { addr } => {
                Resp::Blocked(lock(&self.logons).blocked(addr, Instant::now()))
            }
            Req::LogonFailed {
                addr,
                limit,
                window,
                lockout,
            } => {
                let f = lock(&self.logons).failed(addr, Instant::now(), limit, window, lockout);
                Resp::Blocked(match f {
                    crate::server::limits::Failure::Blocked(d) => Some(d),
                    crate::server::limits::Failure::Counted(_) => None,
                })
            }
            Req::LogonSucceeded { addr } => {
                lock(&self.logons).succeeded(addr);
                Resp::Unit
            }
            Req::DurableKept {
                key,
                open_id,
                timeout,
            } => {
                let key = FileKey::from(key);
                if lock(&link.opens).contains(&(key, open_id)) {
                    lock(&link.kept).insert((key, open_id), timeout);
                }
                Resp::Unit
            }
            Req::AdoptOrphan {
                key,
                open_id,
                owner,
            } => {
                let key = FileKey::from(key);
                let mut orphans = lock(&self.orphans);
                match orphans.get(&open_id) {
                    Some(o) if o.key == key => match b.oplock_reattach(key, open_id, owner) {
                        Some(level) => {
                            orphans.remove(&open_id);
                            lock(&link.opens).insert((key, open_id));
                            info!(
                                worker = link.worker,
                                open_id, "orphaned durable open adopted"
                            );
                            Resp::Adopted(Some((level.wire(), b.locks_of(key, open_id))))
                        }
                        // Being broken by a conflicting open: purged now
                        // rather than by the reaper, so that the caller's
                        // fallback never meets it.
                        None => {
                            orphans.remove(&open_id);
                            drop(orphans);
                            info!(open_id, "orphaned durable open purged (being broken)");
                            b.close(key, open_id);
                            return (Resp::Adopted(None), Some(key));
                        }
                    },
                    _ => Resp::Adopted(None),
                }
            }
            // Served by `serve` itself (they carry fds).
            Req::DurableClaim { .. } => Resp::Moved(None),
            Req::Surrendered { .. } => Resp::Bool(false),
            Req::CheckIo {
                key,
                open_id,
                offset,
                length,
                write,
            } => Resp::Status(status(b.check_io(
                key.into(),
                open_id,
                offset,
                length,
                write,
            ))),
        };
        (r, None)
    }
}
