//! The keeper's state machine: records in keeper.db, fds in memory (and in
//! systemd's fd store). No sockets here; `server` feeds it decoded requests.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::kinfo;
use crate::proto::{
    guid_string, BreakAction, Entry, ErrorCode, FetchRequest, HandleState, Record, Request,
    Response,
};
use crate::store::{Store, StoreError};
use crate::sysd::Notifier;
use kmod_interface::lease::{self as kl, LeaseKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who may talk to the keeper.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The uid smbd runs as (may deposit, fetch and list).
    pub smbd_uid: u32,
    /// The keeper's own effective uid: 0 in production. In test mode (keeper
    /// not root) this uid counts as an administrator too.
    pub keeper_uid: u32,
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Deposit, Fetch, Disconnect, Reconnected, Close, Purge.
    pub smbd: bool,
    /// Evict.
    pub admin: bool,
}

impl Policy {
    /// `None`: the peer may not talk to the keeper at all.
    pub fn role(&self, uid: u32) -> Option<Role> {
        let admin = uid == 0 || uid == self.keeper_uid;
        let smbd = admin || uid == self.smbd_uid;
        smbd.then_some(Role { smbd, admin })
    }

    /// Whether `role` may send `req` (List/Show: any accepted peer).
    pub fn allows(role: Role, req: &Request) -> bool {
        match req {
            Request::Hello { .. } | Request::List | Request::Show { .. } => true,
            Request::Evict { .. } => role.admin,
            _ => role.smbd,
        }
    }
}

/// The peer a request came from, for ownership and logs.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub conn: u64,
    pub uid: u32,
    pub pid: i32,
}

struct Kept {
    rec: Record,
    fd: OwnedFd,
    /// The connection that deposited or reclaimed it, while connected.
    owner: Option<u64>,
    /// The kernel lease the keeper took over at disconnect (breaks of it
    /// are signalled to the keeper); `None` while a worker holds it.
    lease: LeaseKind,
}

pub struct Keeper {
    store: Store,
    kept: HashMap<u64, Kept>,
    notifier: Notifier,
    /// Watch connections (smbd workers) told about lease breaks.
    watchers: Vec<UnboundedSender<Response>>,
}

/// One reply message and the fd it carries, if any.
pub type Reply = (Response, Option<OwnedFd>);

fn err(code: ErrorCode, msg: impl Into<String>) -> Vec<Reply> {
    vec![(Response::error(code, msg), None)]
}

fn internal(e: StoreError) -> Vec<Reply> {
    warn!(error = %e, "keeper.db failure");
    err(ErrorCode::Internal, e.to_string())
}

fn done() -> Vec<Reply> {
    vec![(Response::Done, None)]
}

/// Why a kept handle is being closed (for the log).
#[derive(Debug, Clone)]
pub enum CloseCause {
    Closed,
    Purged(String),
    Evicted { uid: u32, pid: i32, reason: String },
    TimedOut,
}

impl Keeper {
    pub fn new(store: Store, notifier: Notifier) -> Keeper {
        Keeper {
            store,
            kept: HashMap::new(),
            notifier,
            watchers: Vec::new(),
        }
    }

    pub fn fd_store_available(&self) -> bool {
        self.notifier.available()
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Matches fds systemd handed back (named by record id) to keeper.db rows.
    /// Rows without an fd are dropped (logged); fds without a row are removed
    /// from the store and closed. Every surviving handle is disconnected: no
    /// worker owns it until one reclaims it.
    pub fn restore(&mut self, fds: Vec<(String, OwnedFd)>, now: u64) -> Result<(), StoreError> {
        let mut by_name: HashMap<String, OwnedFd> = HashMap::new();
        for (name, fd) in fds {
            if by_name.insert(name.clone(), fd).is_some() {
                warn!(fd_name = %name, "fd store held two fds with one name; keeping the last");
            }
        }
        let mut lost = 0usize;
        for mut rec in self.store.all()? {
            let Some(fd) = by_name.remove(&rec.id.to_string()) else {
                lost += 1;
                warn!(
                    id = rec.id,
                    kind = rec.kind.as_str(),
                    share = %rec.share,
                    path = %rec.path,
                    client = %rec.client_addr,
                    "kept handle lost across the keeper restart: no fd for it came back from \
                     systemd's fd store (non-persistent handles are lost when no fd store was \
                     available; reopening persistent handles by file handle is not implemented)"
                );
                self.store.delete(rec.id)?;
                continue;
            };
            if rec.state == HandleState::Connected {
                self.store.set_disconnected(rec.id, now)?;
                rec.state = HandleState::Disconnected;
                rec.disconnected_at_ms = Some(now);
            }
            info!(id = rec.id, path = %rec.path, "kept handle restored from the fd store");
            let id = rec.id;
            self.kept.insert(
                id,
                Kept {
                    rec,
                    fd,
                    owner: None,
                    lease: LeaseKind::None,
                },
            );
            self.take_over_lease(id);
        }
        for (name, fd) in by_name {
            warn!(fd_name = %name, "fd store entry without a keeper.db record; closing it");
            if let Err(e) = self.notifier.remove_fd(&name) {
                warn!(fd_name = %name, error = %e, "FDSTOREREMOVE failed");
            }
            drop(fd);
        }
        if lost > 0 && self.notifier.available() {
            warn!(
                lost,
                "kept handles were lost: systemd's fd store did not hand their fds back"
            );
        } else if lost > 0 {
            warn!(
                lost,
                "non-persistent handles were lost because no fd store was available"
            );
        }
        Ok(())
    }

    pub fn handle(&mut self, peer: Peer, req: Request, fds: Vec<OwnedFd>) -> Vec<Reply> {
        let want = req.fd_count();
        if fds.len() != want {
            let code = if fds.len() < want {
                ErrorCode::MissingFd
            } else {
                ErrorCode::BadMessage
            };
            return err(
                code,
                format!("{} carries {want} fd(s), got {}", req.name(), fds.len()),
            );
        }
        let now = now_ms();
        match req {
            Request::Hello { .. } => err(ErrorCode::BadMessage, "Hello was already exchanged"),
            Request::Deposit(rec) => {
                let fd = fds.into_iter().next().expect("count checked above");
                self.deposit(peer, rec, fd, now)
            }
            Request::Fetch(f) => self.fetch(peer, &f),
            Request::Disconnect { id, at_ms } => {
                self.disconnect(id, if at_ms == 0 { now } else { at_ms })
            }
            Request::Reconnected { id } => self.reconnected(peer, id),
            Request::Close { id } => self.close_reply(id, CloseCause::Closed),
            Request::Purge { id, reason } => self.close_reply(id, CloseCause::Purged(reason)),
            Request::List => {
                let mut ids: Vec<u64> = self.kept.keys().copied().collect();
                ids.sort_unstable();
                let locks = kinfo::read_proc_locks();
                let mut out: Vec<Reply> = ids
                    .iter()
                    .map(|id| (Response::ListItem(self.entry(*id, now, &locks)), None))
                    .collect();
                out.push((
                    Response::ListEnd {
                        count: ids.len() as u32,
                    },
                    None,
                ));
                out
            }
            Request::Show { id } => {
                if self.kept.contains_key(&id) {
                    let locks = kinfo::read_proc_locks();
                    vec![(Response::Shown(self.entry(id, now, &locks)), None)]
                } else {
                    err(ErrorCode::NotFound, format!("no kept handle {id}"))
                }
            }
            Request::Evict { id, reason } => self.close_reply(
                id,
                CloseCause::Evicted {
                    uid: peer.uid,
                    pid: peer.pid,
                    reason,
                },
            ),
            // The connection loop turns the connection into a watch channel.
            Request::Watch => err(ErrorCode::BadMessage, "Watch is not valid here"),
        }
    }

    fn deposit(&mut self, peer: Peer, rec: Record, fd: OwnedFd, now: u64) -> Vec<Reply> {
        match kmod_interface::is_o_path(fd.as_fd()) {
            Ok(false) => {}
            Ok(true) => {
                return err(
                    ErrorCode::BadMessage,
                    "an O_PATH fd holds no lease, locks or share mode",
                )
            }
            Err(e) => return err(ErrorCode::BadMessage, format!("unusable fd: {e}")),
        }
        if rec.kind.is_v2() && rec.create_guid == [0; 16] {
            return err(
                ErrorCode::BadMessage,
                "v2/persistent record without CreateGUID",
            );
        }
        let rec = match self.store.insert(&rec, now) {
            Ok(r) => r,
            Err(StoreError::DuplicateFileId(fid)) => {
                return err(
                    ErrorCode::Exists,
                    format!("persistent FileId {fid:#x} is already kept"),
                )
            }
            Err(e) => return internal(e),
        };
        if let Err(e) = self.notifier.store_fd(&rec.id.to_string(), fd.as_fd()) {
            warn!(id = rec.id, error = %e, "FDSTORE failed; this handle will not survive a keeper restart");
        }
        info!(
            id = rec.id,
            kind = rec.kind.as_str(),
            file_id = format_args!("{:#x}", rec.persistent_file_id),
            client_guid = %guid_string(&rec.client_guid),
            user = %rec.user_name,
            share = %rec.share,
            path = %rec.path,
            client = %rec.client_addr,
            peer_pid = peer.pid,
            "handle deposited"
        );
        let id = rec.id;
        self.kept.insert(
            id,
            Kept {
                rec,
                fd,
                owner: Some(peer.conn),
                lease: LeaseKind::None,
            },
        );
        vec![(Response::Deposited { id }, None)]
    }

    /// The checks of MS-SMB2 3.3.5.9.7 (DHnC) and 3.3.5.9.12 (DH2C) that bind
    /// a kept open to its owner. A refusal leaves the record untouched.
    fn fetch(&mut self, peer: Peer, f: &FetchRequest) -> Vec<Reply> {
        let by_fid = self
            .kept
            .values()
            .find(|k| k.rec.persistent_file_id == f.persistent_file_id)
            .map(|k| k.rec.id);
        // 3.3.5.9.12: a persistent reconnect falls back to a CreateGuid lookup.
        let id = by_fid.or_else(|| {
            (f.kind == crate::proto::DurableKind::Persistent)
                .then(|| {
                    self.kept
                        .values()
                        .filter(|k| k.rec.kind.is_v2() && k.rec.create_guid == f.create_guid)
                        .map(|k| k.rec.id)
                        .min()
                })
                .flatten()
        });
        let Some(id) = id else {
            return err(
                ErrorCode::NotFound,
                format!("no kept handle with FileId {:#x}", f.persistent_file_id),
            );
        };
        let k = &self.kept[&id];
        let r = &k.rec;
        let refuse = |code: ErrorCode, why: &str| {
            info!(id, peer_pid = peer.pid, why, "fetch refused; record kept");
            err(code, format!("kept handle {id}: {why}"))
        };
        // DHnC (kind 1) may reclaim a v2 handle too (MS-SMB2 3.3.5.9.7 does
        // not look at the CreateGuid; smbtorture durable-v2-open.reopen2b),
        // but not a persistent one; DH2C only reclaims v2 handles.
        let v1_ok = f.kind == crate::proto::DurableKind::V1
            && r.kind != crate::proto::DurableKind::Persistent;
        if !v1_ok && r.kind.is_v2() != f.kind.is_v2() {
            return refuse(ErrorCode::NotFound, "durable version differs");
        }
        if f.kind.is_v2() {
            if (r.kind == crate::proto::DurableKind::Persistent)
                != (f.kind == crate::proto::DurableKind::Persistent)
            {
                return refuse(ErrorCode::NotFound, "persistent flag differs");
            }
            if r.create_guid != f.create_guid {
                return refuse(ErrorCode::NotFound, "CreateGUID differs");
            }
        }
        if r.lease_key.is_some() && r.client_guid != f.client_guid {
            return refuse(ErrorCode::NotFound, "ClientGUID differs");
        }
        if r.lease_key != f.lease_key {
            return refuse(ErrorCode::NotFound, "lease key differs");
        }
        if r.uid != f.uid || !r.user_name.eq_ignore_ascii_case(&f.user_name) {
            return refuse(ErrorCode::UserMismatch, "user differs");
        }
        if r.state == HandleState::Connected {
            return refuse(ErrorCode::Busy, "still connected");
        }
        match k.fd.try_clone() {
            Ok(dup) => {
                info!(id, peer_pid = peer.pid, path = %r.path, "kept handle handed out");
                vec![(Response::Fetched(r.clone()), Some(dup))]
            }
            Err(e) => err(ErrorCode::Internal, format!("dup: {e}")),
        }
    }

    fn disconnect(&mut self, id: u64, at: u64) -> Vec<Reply> {
        let Some(k) = self.kept.get_mut(&id) else {
            return err(ErrorCode::NotFound, format!("no kept handle {id}"));
        };
        if let Err(e) = self.store.set_disconnected(id, at) {
            return internal(e);
        }
        k.rec.state = HandleState::Disconnected;
        k.rec.disconnected_at_ms = Some(at);
        k.owner = None;
        info!(id, timeout_ms = k.rec.timeout_ms, path = %k.rec.path, "handle disconnected");
        self.take_over_lease(id);
        done()
    }

    fn reconnected(&mut self, peer: Peer, id: u64) -> Vec<Reply> {
        let Some(k) = self.kept.get_mut(&id) else {
            return err(ErrorCode::NotFound, format!("no kept handle {id}"));
        };
        if k.rec.state == HandleState::Connected && k.owner != Some(peer.conn) {
            return err(
                ErrorCode::Busy,
                format!("kept handle {id} is connected elsewhere"),
            );
        }
        if let Err(e) = self.store.set_connected(id) {
            return internal(e);
        }
        k.rec.state = HandleState::Connected;
        k.rec.disconnected_at_ms = None;
        k.owner = Some(peer.conn);
        // The worker re-issues F_SETLEASE on its own fd (same description),
        // which makes breaks its own again.
        k.lease = LeaseKind::None;
        info!(id, peer_pid = peer.pid, path = %k.rec.path, "handle reconnected");
        done()
    }

    fn close_reply(&mut self, id: u64, cause: CloseCause) -> Vec<Reply> {
        match self.close(id, cause) {
            Ok(true) => done(),
            Ok(false) => err(ErrorCode::NotFound, format!("no kept handle {id}")),
            Err(e) => internal(e),
        }
    }

    /// Forgets a kept handle: deletes its row, removes it from the fd store
    /// and closes the keeper's fd (the description dies with the last fd).
    pub fn close(&mut self, id: u64, cause: CloseCause) -> Result<bool, StoreError> {
        let Some(k) = self.kept.remove(&id) else {
            return Ok(false);
        };
        self.store.delete(id)?;
        if let Err(e) = self.notifier.remove_fd(&id.to_string()) {
            warn!(id, error = %e, "FDSTOREREMOVE failed");
        }
        let r = &k.rec;
        match cause {
            CloseCause::Closed => info!(id, path = %r.path, "kept handle closed"),
            CloseCause::Purged(reason) => {
                info!(id, path = %r.path, %reason, "kept handle purged")
            }
            CloseCause::Evicted { uid, pid, reason } => warn!(
                id,
                path = %r.path,
                share = %r.share,
                client = %r.client_addr,
                by_uid = uid,
                by_pid = pid,
                %reason,
                "kept handle evicted by an administrator"
            ),
            CloseCause::TimedOut => info!(
                id,
                path = %r.path,
                client = %r.client_addr,
                timeout_ms = r.timeout_ms,
                "durable handle timed out while disconnected; closed"
            ),
        }
        if k.lease != LeaseKind::None {
            // Before the fd goes: a local opener waiting on the lease goes
            // on now, even while a worker still holds the description.
            if let Err(e) = kl::set_lease(k.fd.as_fd(), LeaseKind::None) {
                debug!(id, error = %e, "releasing the kept fd's kernel lease");
            }
        }
        drop(k.fd);
        Ok(true)
    }

    /// A new Watch connection: lease-break notices arrive on the receiver.
    pub fn add_watcher(&mut self) -> UnboundedReceiver<Response> {
        let (tx, rx) = unbounded_channel();
        self.watchers.retain(|w| !w.is_closed());
        self.watchers.push(tx);
        rx
    }

    fn notify_watchers(&mut self, id: u64, persistent_file_id: u64, action: BreakAction) {
        let n = Response::LeaseBreak {
            id,
            persistent_file_id,
            action,
        };
        self.watchers.retain(|w| w.send(n.clone()).is_ok());
    }

    /// A disconnected handle's kernel lease (if any) becomes the keeper's:
    /// F_SETSIG, F_SETOWN and F_SETLEASE re-issued on the kept fd (the same
    /// open file description, so the same lease) send its breaks here, where
    /// they purge the handle (MS-SMB2: a break to a disconnected durable open
    /// closes it). A break already under way when the worker died is
    /// answered at once.
    fn take_over_lease(&mut self, id: u64) {
        let Some(k) = self.kept.get_mut(&id) else {
            return;
        };
        let kind = match kl::get_lease(k.fd.as_fd()) {
            Ok(LeaseKind::None) | Err(_) => return,
            Ok(kind) => kind,
        };
        if kinfo::lease_breaking(k.fd.as_fd()) {
            info!(id, path = %k.rec.path, "kept handle's kernel lease is being broken");
            self.lease_broken(id);
            return;
        }
        let fd = k.fd.as_fd();
        let taken = kl::set_signal(fd, kl::break_signal())
            .and_then(|()| kl::set_owner(fd, std::process::id() as i32))
            .and_then(|()| kl::set_lease(fd, kind));
        match taken {
            Ok(()) => {
                k.lease = kind;
                info!(id, ?kind, path = %k.rec.path, "kept handle's kernel lease taken over");
            }
            Err(e) => {
                warn!(id, ?kind, error = %e, "cannot take over the kept handle's kernel lease")
            }
        }
    }

    /// The kernel signalled a break of the lease on kept fd `raw`.
    pub fn on_lease_break(&mut self, raw: RawFd) {
        let Some(id) = self
            .kept
            .values()
            .find(|k| k.fd.as_raw_fd() == raw)
            .map(|k| k.rec.id)
        else {
            debug!(fd = raw, "lease break for an fd no longer kept");
            return;
        };
        self.lease_broken(id);
    }

    /// The realtime signal queue overflowed: any kept lease that the kernel
    /// now reports lower than taken is being broken.
    pub fn check_leases(&mut self) {
        let broken: Vec<u64> = self
            .kept
            .values()
            .filter(|k| {
                k.lease != LeaseKind::None
                    && kl::get_lease(k.fd.as_fd()).is_ok_and(|now| now != k.lease)
            })
            .map(|k| k.rec.id)
            .collect();
        for id in broken {
            self.lease_broken(id);
        }
    }

    /// A local process (or NFS) opened the file of kept handle `id`. A
    /// disconnected handle is purged: lease released and fd closed, and the
    /// watching workers told so that one still holding the open drops it.
    /// A connected one belongs to a worker that has not taken its lease back
    /// yet: the break is passed on.
    fn lease_broken(&mut self, id: u64) {
        let Some(k) = self.kept.get(&id) else {
            return;
        };
        let fid = k.rec.persistent_file_id;
        if k.rec.state == HandleState::Connected {
            info!(
                id,
                "lease break of a connected kept handle: passed on to the workers"
            );
            self.notify_watchers(id, fid, BreakAction::Forwarded);
            return;
        }
        if let Err(e) = kl::set_lease(k.fd.as_fd(), LeaseKind::None) {
            debug!(id, error = %e, "releasing a broken kernel lease");
        }
        let inode = nix::sys::stat::fstat(k.fd.as_raw_fd())
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        match self.close(
            id,
            CloseCause::Purged("a local open broke its kernel lease".into()),
        ) {
            Ok(_) => {}
            Err(e) => warn!(id, error = %e, "purging a kept handle"),
        }
        self.notify_watchers(id, fid, BreakAction::Purged);
        // Opens of one SMB lease key share one description (and so one
        // kernel lease): kept handles of the file whose taken lease vanished
        // with this release were broken too.
        let shared: Vec<u64> = self
            .kept
            .values()
            .filter(|o| {
                o.lease != LeaseKind::None
                    && kl::get_lease(o.fd.as_fd()).is_ok_and(|now| now == LeaseKind::None)
                    && nix::sys::stat::fstat(o.fd.as_raw_fd())
                        .is_ok_and(|st| Some((st.st_dev, st.st_ino)) == inode)
            })
            .map(|o| o.rec.id)
            .collect();
        for other in shared {
            self.lease_broken(other);
        }
    }

    /// A worker connection ended: its connected handles are now disconnected
    /// (their timeout starts), exactly as if it had sent Disconnect.
    pub fn conn_closed(&mut self, conn: u64, now: u64) {
        let ids: Vec<u64> = self
            .kept
            .values()
            .filter(|k| k.owner == Some(conn))
            .map(|k| k.rec.id)
            .collect();
        for id in ids {
            warn!(
                id,
                "worker connection closed without Disconnect; handle disconnected"
            );
            let _ = self.disconnect(id, now);
        }
    }

    /// Closes disconnected handles whose timeout has expired; returns how many.
    pub fn scavenge(&mut self, now: u64) -> usize {
        let expired: Vec<u64> = self
            .kept
            .values()
            .filter(|k| {
                k.rec.state == HandleState::Disconnected
                    && k.rec
                        .disconnected_at_ms
                        .is_some_and(|at| now >= at.saturating_add(k.rec.timeout_ms as u64))
            })
            .map(|k| k.rec.id)
            .collect();
        let mut n = 0;
        for id in expired {
            match self.close(id, CloseCause::TimedOut) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => warn!(id, error = %e, "scavenger could not close a handle"),
            }
        }
        if n > 0 {
            debug!(n, "scavenger pass");
        }
        n
    }

    fn entry(&self, id: u64, now: u64, proc_locks: &str) -> Entry {
        let k = &self.kept[&id];
        let info = kinfo::inspect_with(k.fd.as_fd(), proc_locks);
        let time_left_ms = match (k.rec.state, k.rec.disconnected_at_ms) {
            (HandleState::Disconnected, Some(at)) => Some(
                at.saturating_add(k.rec.timeout_ms as u64)
                    .saturating_sub(now),
            ),
            _ => None,
        };
        Entry {
            record: k.rec.clone(),
            time_left_ms,
            kernel_lease: info.kernel_lease,
            dev: info.dev,
            ino: info.ino,
            locks: info.locks,
            locks_omitted: info.locks_omitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DurableKind;
    use std::io::{Seek, SeekFrom, Write};

    fn keeper() -> Keeper {
        Keeper::new(Store::open_in_memory().unwrap(), Notifier::disabled())
    }

    fn peer(conn: u64) -> Peer {
        Peer {
            conn,
            uid: 0,
            pid: 1,
        }
    }

    fn v2_record(fid: u64) -> Record {
        let mut r = Record::new(DurableKind::V2, fid);
        r.client_guid = [1; 16];
        r.create_guid = [2; 16];
        r.lease_key = Some([3; 16]);
        r.uid = 1000;
        r.user_name = "SmbTest".into();
        r.path = "f".into();
        r.timeout_ms = 1000;
        r
    }

    fn fetch_for(r: &Record) -> FetchRequest {
        FetchRequest {
            kind: r.kind,
            persistent_file_id: r.persistent_file_id,
            client_guid: r.client_guid,
            create_guid: r.create_guid,
            lease_key: r.lease_key,
            uid: r.uid,
            user_name: r.user_name.to_lowercase(),
        }
    }

    fn deposit(k: &mut Keeper, r: Record) -> (u64, std::fs::File) {
        let f = tempfile::tempfile().unwrap();
        let out = k.handle(
            peer(1),
            Request::Deposit(r),
            vec![f.try_clone().unwrap().into()],
        );
        let Response::Deposited { id } = out[0].0 else {
            panic!("{:?}", out[0].0)
        };
        (id, f)
    }

    fn code(replies: &[Reply]) -> Option<ErrorCode> {
        match &replies[0].0 {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn policy_roles() {
        let p = Policy {
            smbd_uid: 1000,
            keeper_uid: 0,
        };
        assert_eq!(p.role(4242), None);
        let smbd = p.role(1000).unwrap();
        assert!(smbd.smbd && !smbd.admin);
        assert!(p.role(0).unwrap().admin);
        let evict = Request::Evict {
            id: 1,
            reason: String::new(),
        };
        assert!(!Policy::allows(smbd, &evict));
        assert!(Policy::allows(smbd, &Request::List));
        assert!(Policy::allows(p.role(0).unwrap(), &evict));
        // Test mode: a non-root keeper's own uid administers it.
        let t = Policy {
            smbd_uid: 1000,
            keeper_uid: 1000,
        };
        assert!(t.role(1000).unwrap().admin);
    }

    #[test]
    fn fetch_checks_every_binding_and_keeps_the_record() {
        let mut k = keeper();
        let r = v2_record(0x77);
        let (id, mut orig) = deposit(&mut k, r.clone());
        // Connected: not fetchable.
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(fetch_for(&r)), vec![])),
            Some(ErrorCode::Busy)
        );
        k.handle(peer(1), Request::Disconnect { id, at_ms: 0 }, vec![]);

        let mut bad = fetch_for(&r);
        bad.create_guid = [9; 16];
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::NotFound)
        );
        let mut bad = fetch_for(&r);
        bad.client_guid = [9; 16];
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::NotFound)
        );
        let mut bad = fetch_for(&r);
        bad.lease_key = None;
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::NotFound)
        );
        // DHnC may reclaim a v2 handle (no CreateGuid to compare).
        let mut v1 = fetch_for(&r);
        v1.kind = DurableKind::V1;
        v1.create_guid = [0; 16];
        assert!(code(&k.handle(peer(2), Request::Fetch(v1), vec![])).is_none());
        let mut bad = fetch_for(&r);
        bad.kind = DurableKind::Persistent;
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::NotFound)
        );
        let mut bad = fetch_for(&r);
        bad.uid = 1001;
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::UserMismatch)
        );
        let mut bad = fetch_for(&r);
        bad.user_name = "other".into();
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::UserMismatch)
        );
        let mut bad = fetch_for(&r);
        bad.persistent_file_id = 0x78;
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(bad), vec![])),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(k.len(), 1);

        let out = k.handle(peer(2), Request::Fetch(fetch_for(&r)), vec![]);
        let (Response::Fetched(got), Some(fd)) = &out[0] else {
            panic!("{:?}", out[0].0)
        };
        assert_eq!(got.id, id);
        assert_eq!(got.state, HandleState::Disconnected);
        // Same open file description: a write through the original moves the fetched offset.
        orig.write_all(b"abc").unwrap();
        let mut fetched = std::fs::File::from(fd.try_clone().unwrap());
        assert_eq!(fetched.stream_position().unwrap(), 3);
        fetched.seek(SeekFrom::Start(1)).unwrap();
        assert_eq!(orig.stream_position().unwrap(), 1);

        assert!(code(&k.handle(peer(2), Request::Reconnected { id }, vec![])).is_none());
        assert_eq!(
            code(&k.handle(peer(3), Request::Reconnected { id }, vec![])),
            Some(ErrorCode::Busy)
        );
        // The owner's connection dies: disconnected again, timer running.
        k.conn_closed(2, 5000);
        let rec = k.store.get(id).unwrap().unwrap();
        assert_eq!(
            (rec.state, rec.disconnected_at_ms),
            (HandleState::Disconnected, Some(5000))
        );
        assert_eq!(k.scavenge(5999), 0);
        assert_eq!(k.scavenge(6000), 1);
        assert!(k.store.get(id).unwrap().is_none());
        assert!(k.is_empty());
    }

    #[test]
    fn v1_oplock_reconnect_ignores_client_guid_but_not_user() {
        let mut k = keeper();
        let mut r = Record::new(DurableKind::V1, 5);
        r.client_guid = [1; 16];
        r.uid = 7;
        r.user_name = "u".into();
        let (id, _f) = deposit(&mut k, r.clone());
        k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
        let mut req = fetch_for(&r);
        req.client_guid = [2; 16];
        req.create_guid = [8; 16];
        assert!(matches!(
            k.handle(peer(2), Request::Fetch(req.clone()), vec![])[0].0,
            Response::Fetched(_)
        ));
        req.lease_key = Some([1; 16]);
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(req), vec![])),
            Some(ErrorCode::NotFound)
        );
    }

    /// MS-SMB2 3.3.5.9.12 binds a v2 handle to its ClientGuid only when it
    /// holds a lease: an oplock-based one comes back from a new client
    /// instance (smbtorture durable-v2-open.reopen2), a leased one does not.
    #[test]
    fn v2_client_guid_binds_leased_handles_only() {
        let mut k = keeper();
        let mut oplock = v2_record(0x20);
        oplock.lease_key = None;
        let (id, _f) = deposit(&mut k, oplock.clone());
        k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
        let mut req = fetch_for(&oplock);
        req.client_guid = [9; 16];
        assert!(matches!(
            &k.handle(peer(2), Request::Fetch(req), vec![])[0].0,
            Response::Fetched(g) if g.id == id
        ));

        let leased = v2_record(0x21);
        let (lid, _g) = deposit(&mut k, leased.clone());
        k.handle(peer(1), Request::Disconnect { id: lid, at_ms: 1 }, vec![]);
        let before = k.store.get(lid).unwrap().unwrap();
        let mut req = fetch_for(&leased);
        req.client_guid = [9; 16];
        assert_eq!(
            code(&k.handle(peer(2), Request::Fetch(req), vec![])),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(k.store.get(lid).unwrap().unwrap(), before);
        assert!(matches!(
            &k.handle(peer(2), Request::Fetch(fetch_for(&leased)), vec![])[0].0,
            Response::Fetched(g) if g.id == lid
        ));
    }

    /// A disconnected handle's kernel lease becomes the keeper's; a break
    /// of it purges the handle, releases the lease and tells the watchers.
    /// No real break is provoked (its signal would end the test process).
    #[test]
    fn disconnect_takes_over_the_kernel_lease_and_a_break_purges() {
        let mut k = keeper();
        let mut watch = k.add_watcher();
        let (id, f) = deposit(&mut k, v2_record(0x31));
        if kl::set_lease(f.as_fd(), LeaseKind::Write).is_err() {
            return; // no leases here (file system or privileges)
        }
        assert_eq!(k.kept[&id].lease, LeaseKind::None, "the worker holds it");
        k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
        assert_eq!(k.kept[&id].lease, LeaseKind::Write);
        assert_eq!(kl::get_signal(f.as_fd()).unwrap(), kl::break_signal());
        let raw = k.kept[&id].fd.as_raw_fd();

        k.on_lease_break(raw);
        assert!(!k.kept.contains_key(&id));
        assert!(k.store.get(id).unwrap().is_none());
        assert_eq!(kl::get_lease(f.as_fd()).unwrap(), LeaseKind::None);
        assert_eq!(
            watch.try_recv().unwrap(),
            Response::LeaseBreak {
                id,
                persistent_file_id: 0x31,
                action: BreakAction::Purged
            }
        );
    }

    /// Two handles of one lease key kept on one description: the break of
    /// its one lease purges both.
    #[test]
    fn a_break_purges_every_handle_on_the_description() {
        let mut k = keeper();
        let f = tempfile::tempfile().unwrap();
        if kl::set_lease(f.as_fd(), LeaseKind::Write).is_err() {
            return;
        }
        let mut ids = Vec::new();
        for fid in [0x41, 0x42] {
            let out = k.handle(
                peer(1),
                Request::Deposit(v2_record(fid)),
                vec![f.try_clone().unwrap().into()],
            );
            let Response::Deposited { id } = out[0].0 else {
                panic!("{:?}", out[0].0)
            };
            k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
            ids.push(id);
        }
        let raw = k.kept[&ids[1]].fd.as_raw_fd();
        k.on_lease_break(raw);
        assert!(k.is_empty(), "both purged");
        assert_eq!(kl::get_lease(f.as_fd()).unwrap(), LeaseKind::None);
    }

    /// A break that reaches the keeper for a connected handle is passed on.
    #[test]
    fn a_break_of_a_reconnected_handle_is_forwarded() {
        let mut k = keeper();
        let mut watch = k.add_watcher();
        let (id, f) = deposit(&mut k, v2_record(0x32));
        if kl::set_lease(f.as_fd(), LeaseKind::Write).is_err() {
            return;
        }
        k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
        k.handle(peer(2), Request::Reconnected { id }, vec![]);
        assert_eq!(k.kept[&id].lease, LeaseKind::None);
        let raw = k.kept[&id].fd.as_raw_fd();
        k.on_lease_break(raw);
        assert!(k.kept.contains_key(&id), "a connected handle is not purged");
        assert!(matches!(
            watch.try_recv().unwrap(),
            Response::LeaseBreak {
                action: BreakAction::Forwarded,
                ..
            }
        ));
        kl::set_lease(f.as_fd(), LeaseKind::None).unwrap();
    }

    #[test]
    fn persistent_reconnect_falls_back_to_create_guid() {
        let mut k = keeper();
        let mut r = v2_record(0x10);
        r.kind = DurableKind::Persistent;
        let (id, _f) = deposit(&mut k, r.clone());
        k.handle(peer(1), Request::Disconnect { id, at_ms: 1 }, vec![]);
        let mut req = fetch_for(&r);
        req.persistent_file_id = 0x9999;
        let out = k.handle(peer(2), Request::Fetch(req), vec![]);
        assert!(matches!(&out[0].0, Response::Fetched(g) if g.id == id));
    }

    #[test]
    fn deposit_validation() {
        let mut k = keeper();
        let r = v2_record(1);
        assert_eq!(
            code(&k.handle(peer(1), Request::Deposit(r.clone()), vec![])),
            Some(ErrorCode::MissingFd)
        );
        let mut no_cg = r.clone();
        no_cg.create_guid = [0; 16];
        let f = tempfile::tempfile().unwrap();
        assert_eq!(
            code(&k.handle(peer(1), Request::Deposit(no_cg), vec![f.into()])),
            Some(ErrorCode::BadMessage)
        );
        let dir = tempfile::tempdir().unwrap();
        let opath = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(dir.path())
            .unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        assert_eq!(
            code(&k.handle(peer(1), Request::Deposit(r.clone()), vec![opath.into()])),
            Some(ErrorCode::BadMessage)
        );
        deposit(&mut k, r.clone());
        let f = tempfile::tempfile().unwrap();
        assert_eq!(
            code(&k.handle(peer(1), Request::Deposit(r), vec![f.into()])),
            Some(ErrorCode::Exists)
        );
        assert_eq!(
            code(&k.handle(
                peer(1),
                Request::List,
                vec![tempfile::tempfile().unwrap().into()]
            )),
            Some(ErrorCode::BadMessage)
        );
    }

    #[test]
    fn restore_matches_fds_to_rows() {
        let mut k = keeper();
        let (a, fa) = deposit(&mut k, v2_record(1));
        let (b, _fb) = deposit(&mut k, v2_record(2));
        let Keeper { store, .. } = k;
        let mut k2 = Keeper::new(store, Notifier::disabled());
        let stray = tempfile::tempfile().unwrap();
        k2.restore(
            vec![(a.to_string(), fa.into()), ("999".into(), stray.into())],
            4242,
        )
        .unwrap();
        assert_eq!(k2.len(), 1);
        let rec = k2.store.get(a).unwrap().unwrap();
        assert_eq!(
            (rec.state, rec.disconnected_at_ms),
            (HandleState::Disconnected, Some(4242))
        );
        assert!(k2.store.get(b).unwrap().is_none(), "row without fd dropped");
    }
}
