//! Durable handles (MS-SMB2 3.3.5.9.6 DHnQ, 3.3.5.9.7 DHnC, 3.3.5.9.10 DH2Q,
//! 3.3.5.9.12 DH2C, 3.3.7.1 connection loss).
//!
//! A durable open outlives its connection: when the connection (or its
//! session, on a session reconnect or logoff) goes away, the open moves from
//! the connection's table to this process's [`DurableTable`] with its file
//! descriptor, share mode, byte-range locks and batch oplock or lease
//! untouched. A reconnect (DHnC / DH2C) on any connection of the process
//! takes it back; one that lands on another worker claims it first
//! ([`claim`]): the holder gives it up (its surrender task) and the
//! supervisor's broker re-owns its records in place. The open is closed when
//! its timeout passes, or at once when another open would break its oplock:
//! a break to a disconnected open is a close, as on Windows. Durability is
//! granted with a batch oplock or a handle-caching lease, never persistent
//! (no continuously available shares).

use super::files::{close_open_in, LockSequences, Open};
use super::state::ServerState;
use super::workers::broker_proto::{bytes_path, path_bytes, MovedOpen};
use crate::fsa::lease::LeaseId;
use crate::fsa::oplock::{BreakNotice, Level};
use crate::posix::locks::OfdMirror;
use crate::wire::create::{
    ctx, CreateContext, DurableHandleReconnect, DurableHandleReconnectV2, DurableHandleRequest,
    DurableHandleRequestV2,
};
use crate::wire::{FileId, NtStatus};
use kmod_interface::identity::Identity;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Broker owner of the oplocks of disconnected durable opens: a break sent
/// there purges the open. A worker uses [`disconnected_owner`] instead.
pub const DISCONNECTED_OWNER: u64 = u64::MAX;

/// The disconnected-open owner of worker `index` (unlike any connection id,
/// which carries `index + 1` in its top 16 bits).
pub fn disconnected_owner(index: u32) -> u64 {
    DISCONNECTED_OWNER - 1 - u64::from(index)
}

/// What makes an open durable, and what a reconnect must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// Granted through DH2Q (v2); reconnects with DH2C must match `create_guid`.
    pub v2: bool,
    /// Zero for v1 handles.
    pub create_guid: [u8; 16],
    /// ClientGuid of the connection that opened it.
    pub client_guid: [u8; 16],
    /// How long the open is kept once disconnected.
    pub timeout: Duration,
    /// ShareAccess of the open (for the keeper's record).
    pub share_access: u32,
    /// The handle keeper's record of this open, once deposited.
    pub keeper_id: Option<u64>,
}

/// What the durable create contexts of a CREATE ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    None,
    /// DHnQ: make the new open durable.
    V1,
    /// DH2Q: make the new open durable for `timeout_ms` (0: the default).
    V2 {
        timeout_ms: u32,
        create_guid: [u8; 16],
    },
    /// DHnC: reclaim a disconnected durable open.
    ReconnectV1 {
        file_id: FileId,
    },
    /// DH2C: reclaim a disconnected v2 durable open.
    ReconnectV2 {
        file_id: FileId,
        create_guid: [u8; 16],
    },
}

impl Ask {
    pub fn is_reconnect(self) -> bool {
        matches!(self, Ask::ReconnectV1 { .. } | Ask::ReconnectV2 { .. })
    }
}

/// Reads the durable contexts of a CREATE and rejects the combinations
/// MS-SMB2 forbids (3.3.5.9.7, 3.3.5.9.10, 3.3.5.9.12). The v2 contexts
/// exist only in SMB 3.x; older dialects ignore them.
pub fn parse(ctxs: &[CreateContext], smb3: bool) -> Result<Ask, NtStatus> {
    let find = |name: &[u8]| CreateContext::find(ctxs, name);
    let bad = |_| NtStatus::INVALID_PARAMETER;
    let dhnq = find(ctx::DURABLE_HANDLE_REQUEST);
    let dhnc = find(ctx::DURABLE_HANDLE_RECONNECT);
    let (dh2q, dh2c) = if smb3 {
        (
            find(ctx::DURABLE_HANDLE_REQUEST_V2),
            find(ctx::DURABLE_HANDLE_RECONNECT_V2),
        )
    } else {
        (None, None)
    };
    if let Some(c) = dhnc {
        // A DHnQ next to it is ignored; a v2 context is an error.
        if dh2q.is_some() || dh2c.is_some() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let r = DurableHandleReconnect::decode(&c.data).map_err(bad)?;
        return Ok(Ask::ReconnectV1 { file_id: r.file_id });
    }
    if let Some(c) = dh2c {
        if dhnq.is_some() || dh2q.is_some() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let r = DurableHandleReconnectV2::decode(&c.data).map_err(bad)?;
        return Ok(Ask::ReconnectV2 {
            file_id: r.file_id,
            create_guid: r.create_guid,
        });
    }
    if let Some(c) = dh2q {
        if dhnq.is_some() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let r = DurableHandleRequestV2::decode(&c.data).map_err(bad)?;
        return Ok(Ask::V2 {
            timeout_ms: r.timeout,
            create_guid: r.create_guid,
        });
    }
    if let Some(c) = dhnq {
        DurableHandleRequest::decode(&c.data).map_err(bad)?;
        return Ok(Ask::V1);
    }
    Ok(Ask::None)
}

/// The timeout a durable open gets: v1 handles and v2 requests of 0 get
/// `default_s`; v2 requests are capped at `max_s` (MS-SMB2 3.3.5.9.10).
pub fn granted_timeout(ask: Ask, default_s: u32, max_s: u32) -> Duration {
    let default = Duration::from_secs(u64::from(default_s));
    match ask {
        Ask::V2 { timeout_ms, .. } if timeout_ms != 0 => {
            Duration::from_millis(u64::from(timeout_ms)).min(Duration::from_secs(u64::from(max_s)))
        }
        _ => default,
    }
}

/// A durable open without a connection.
pub struct Disconnected {
    pub open: Open,
    /// When the scavenger closes it.
    pub deadline: Instant,
}

/// The disconnected durable opens of this process, by persistent FileId
/// (which is also the open's broker id).
pub struct DurableTable {
    opens: Mutex<HashMap<u64, Disconnected>>,
    started: Once,
}

impl Default for DurableTable {
    fn default() -> Self {
        DurableTable {
            opens: Mutex::new(HashMap::new()),
            started: Once::new(),
        }
    }
}

impl DurableTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Disconnected>> {
        self.opens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of disconnected opens (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is a disconnected open of this process.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// Whether a disconnected open of client `guid` waits here (its
    /// reconnect must come to this process).
    pub fn holds_client(&self, guid: &[u8; 16]) -> bool {
        self.lock().values().any(|d| {
            d.open
                .durable
                .as_ref()
                .is_some_and(|x| &x.client_guid == guid)
        })
    }

    /// Takes a disconnected open out of the table.
    fn take(&self, id: u64) -> Option<Disconnected> {
        self.lock().remove(&id)
    }
}

/// Registers the sink that turns breaks of disconnected opens into closes,
/// and the one that gives them up to another worker's reconnect (once per
/// process).
pub fn ensure_started(st: &Arc<ServerState>) {
    st.durable.started.call_once(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        st.broker.register_break_sink(st.disconnected_owner, tx);
        tokio::spawn(purge_on_break(st.clone(), rx));
        let (tx, rx) = mpsc::unbounded_channel();
        st.broker.set_surrender_sink(tx);
        tokio::spawn(surrender_on_claim(st.clone(), rx));
    });
}

/// Another worker received the reconnect of one of our disconnected opens
/// (its client came back with a new ClientGuid, routed elsewhere): the open
/// leaves the table without being closed, its fd and state go to the
/// supervisor, which re-owns its broker records to the claimant. If nobody
/// takes it after all, it comes back into the table.
async fn surrender_on_claim(st: Arc<ServerState>, mut rx: mpsc::UnboundedReceiver<(u64, u64)>) {
    while let Some((claim, id)) = rx.recv().await {
        let taken = {
            let mut t = st.durable.lock();
            t.remove(&id)
        };
        // A kernel lease goes along: the claimant re-issues it on its fd.
        let kernel = taken
            .as_ref()
            .map_or(0, |d| st.kernel.moving_kind(&d.open.fd));
        let st2 = st.clone();
        let given = tokio::task::spawn_blocking(move || {
            let moved = taken
                .as_ref()
                .map(|d| (Box::new(moved_open(d, kernel)), d.open.fd.clone()));
            let ok = st2.broker.surrendered(
                claim,
                st2.disconnected_owner,
                moved.as_ref().map(|(m, fd)| (m.clone(), fd.as_fd())),
            );
            (ok, taken)
        })
        .await;
        match given {
            Ok((true, Some(d))) => {
                info!(fid = id, path = %d.open.path.display(), "durable open given up to another worker");
                // Our copy of the fd closes; the description lives on there,
                // with its kernel lease.
                st.kernel.disown(&d.open.fd);
                drop(d);
            }
            Ok((false, Some(d))) => {
                debug!(fid = id, "durable open not taken after all; kept");
                let deadline = d.deadline;
                st.durable.lock().insert(id, d);
                spawn_expiry(&st, id, deadline);
            }
            Ok((_, None)) => {}
            Err(e) => warn!(fid = id, %e, "surrender of a durable open failed"),
        }
    }
}

/// What another worker needs to rebuild `d`'s open.
fn moved_open(d: &Disconnected, kernel_lease: u8) -> MovedOpen {
    let o = &d.open;
    let dur = o.durable.clone().unwrap_or(Durable {
        v2: false,
        create_guid: [0; 16],
        client_guid: [0; 16],
        timeout: Duration::ZERO,
        share_access: 0,
        keeper_id: None,
    });
    MovedOpen {
        open_id: o.fid.persistent,
        key: o.key.into(),
        share: o.share.name.clone(),
        path: path_bytes(&o.path),
        smb_name: o.smb_name.clone(),
        is_dir: o.is_dir,
        access: o.access,
        uid: o.identity.uid,
        gid: o.identity.gid,
        groups: o.identity.groups.clone(),
        position: o.position,
        mode: o.mode,
        write_time: o.write_time,
        stream: o.stream.clone(),
        durable_v2: dur.v2,
        create_guid: dur.create_guid,
        client_guid: dur.client_guid,
        timeout: dur.timeout,
        share_access: dur.share_access,
        keeper_id: dur.keeper_id,
        lock_seq: o.lock_seq.to_bytes(),
        ofd_locks: o.ofd.as_ref().map(|m| m.locks()).unwrap_or_default(),
        remaining: d.deadline.saturating_duration_since(Instant::now()),
        purge: false,
        kernel_lease,
    }
}

/// Asks the other workers for disconnected durable open `id` (a reconnect
/// for it came here). On success the open is in this process's table, as if
/// it had been disconnected here, and the caller reclaims it as usual; its
/// broker records (share mode, oplock or lease, byte-range locks) never left
/// the broker. False if no other worker has it.
pub async fn claim(st: &Arc<ServerState>, id: u64) -> bool {
    if !st.broker.is_remote() {
        return false;
    }
    ensure_started(st);
    let st2 = st.clone();
    let got =
        tokio::task::spawn_blocking(move || st2.broker.durable_claim(id, st2.disconnected_owner))
            .await
            .ok()
            .flatten();
    let Some((m, fd)) = got else {
        return false;
    };
    let Some(share) = st
        .shares
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&m.share))
        .cloned()
    else {
        warn!(fid = id, share = %m.share, "moved durable open names an unknown share; closing it");
        st.broker.close(m.key.into(), id);
        return false;
    };
    let fd = Arc::new(fd);
    let ofd = (!m.is_dir && super::files::posix_locking(&share))
        .then(|| Arc::new(OfdMirror::with_locks(fd.clone(), &m.ofd_locks)));
    let open = Open {
        fid: FileId {
            persistent: id,
            volatile: id,
        },
        session_id: 0,
        tree_id: 0,
        share,
        fd,
        key: m.key.into(),
        path: bytes_path(m.path),
        smb_name: m.smb_name,
        is_dir: m.is_dir,
        access: m.access,
        identity: Arc::new(Identity {
            uid: m.uid,
            gid: m.gid,
            groups: m.groups,
        }),
        position: m.position,
        mode: m.mode,
        dir: None,
        write_time: m.write_time,
        stream: m.stream,
        durable: Some(Durable {
            v2: m.durable_v2,
            create_guid: m.create_guid,
            client_guid: m.client_guid,
            timeout: m.timeout,
            share_access: m.share_access,
            keeper_id: m.keeper_id,
        }),
        lock_seq: LockSequences::from_bytes(&m.lock_seq),
        ofd,
    };
    if super::kernel_oplock::enabled(&open.share) {
        st.kernel.adopt(st, open.key, id, &open.fd, m.kernel_lease);
    }
    if m.purge {
        info!(
            fid = id,
            "moved durable open was being purged by a conflicting open; closed"
        );
        close_open_in(st, open).await;
        return false;
    }
    let deadline = Instant::now() + m.remaining;
    st.durable
        .lock()
        .insert(id, Disconnected { open, deadline });
    spawn_expiry(st, id, deadline);
    true
}

/// Closes open `id` at `deadline` if it is still disconnected then.
fn spawn_expiry(st: &Arc<ServerState>, id: u64, deadline: Instant) {
    let st = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        expire(&st, id).await;
    });
}

/// Another open needs the oplock of a disconnected open: nobody can answer
/// the break, so the open is closed and the waiting open goes on.
async fn purge_on_break(st: Arc<ServerState>, mut rx: mpsc::UnboundedReceiver<BreakNotice>) {
    while let Some(n) = rx.recv().await {
        match st.durable.take(n.open_id) {
            Some(d) => {
                info!(
                    fid = n.open_id,
                    path = %d.open.path.display(),
                    "disconnected durable open purged by a conflicting open"
                );
                close_open_in(&st, d.open).await;
            }
            None => debug!(fid = n.open_id, "break for a durable open already gone"),
        }
    }
}

/// Keeps `open` for a reconnect after its connection or session went away.
/// Gives it back if it cannot be kept (not durable, or its batch oplock is
/// gone or being broken): the caller closes it then.
pub fn disconnect(st: &Arc<ServerState>, open: Open) -> Result<(), Box<Open>> {
    let Some(timeout) = open.durable.as_ref().map(|d| d.timeout) else {
        return Err(Box::new(open));
    };
    ensure_started(st);
    let id = open.fid.persistent;
    let deadline = Instant::now() + timeout;
    {
        // The table lock is held while the broker owner changes, so a
        // reconnect or a purge never sees one without the other.
        let mut t = st.durable.lock();
        if !st
            .broker
            .oplock_disconnect(open.key, open.fid.volatile, st.disconnected_owner)
        {
            return Err(Box::new(open));
        }
        info!(fid = id, path = %open.path.display(), timeout_ms = timeout.as_millis() as u64, "durable open disconnected");
        t.insert(id, Disconnected { open, deadline });
    }
    spawn_expiry(st, id, deadline);
    Ok(())
}

/// The scavenger: closes the open if it is still disconnected and its
/// deadline passed (a reconnect and a new disconnect set a later one).
async fn expire(st: &ServerState, id: u64) {
    let taken = {
        let mut t = st.durable.lock();
        match t.get(&id) {
            Some(d) if d.deadline <= Instant::now() => t.remove(&id),
            _ => None,
        }
    };
    if let Some(d) = taken {
        info!(fid = id, path = %d.open.path.display(), "durable open timed out");
        close_open_in(st, d.open).await;
    }
}

/// Takes disconnected open `id` for connection `owner` if `check` accepts
/// it; returns it with the oplock it keeps. OBJECT_NAME_NOT_FOUND if there
/// is no such disconnected open (never durable, still connected, closed,
/// timed out, or being purged by a conflicting open).
pub fn reclaim(
    st: &ServerState,
    id: u64,
    owner: u64,
    check: impl FnOnce(&Open) -> Result<(), NtStatus>,
) -> Result<(Open, Level), NtStatus> {
    let mut t = st.durable.lock();
    let d = t.get(&id).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
    check(&d.open)?;
    let level = st
        .broker
        .oplock_reattach(d.open.key, d.open.fid.volatile, owner)
        .ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
    let d = t.remove(&id).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
    Ok((d.open, level))
}

/// The keeper purged kept handle `keeper_id` (a local open broke the
/// kernel lease it held for it): takes disconnected open `id` out if it is
/// that handle, for the caller to close.
pub fn take_kept(st: &ServerState, id: u64, keeper_id: u64) -> Option<Open> {
    let mut t = st.durable.lock();
    let d = t.get(&id)?.open.durable.as_ref()?;
    if d.keeper_id != Some(keeper_id) {
        return None;
    }
    t.remove(&id).map(|d| d.open)
}

/// Checks a reconnect against the durable open it names (MS-SMB2 3.3.5.9.7
/// and 3.3.5.9.12): a v2 reconnect must name the open's CreateGuid; either
/// must come from the same user
/// (ACCESS_DENIED otherwise) and on the same share.
pub fn check_reconnect(
    open: &Open,
    ask: Ask,
    uid: u32,
    share: &str,
    lease_requested: Option<LeaseId>,
    lease_held: Option<LeaseId>,
) -> Result<(), NtStatus> {
    let Some(d) = open.durable.as_ref() else {
        return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
    };
    // A reconnect names a lease-based open by its ClientGuid and lease key,
    // and an oplock-based one without any (MS-SMB2 3.3.5.9.7).
    if lease_requested != lease_held {
        debug!("durable reconnect: lease does not match");
        return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
    }
    // ClientGuid binds only lease-based handles (MS-SMB2 3.3.5.9.7); an
    // oplock-based one may come back from a new client instance, as
    // smbtorture durable-v2-open.reopen2 does.
    if let Ask::ReconnectV2 { create_guid, .. } = ask {
        // A v1 handle has a zero CreateGuid, and a DH2C naming it so
        // reconnects it (smbtorture durable-open.reopen2-lease).
        if d.create_guid != create_guid {
            debug!(v2 = d.v2, "durable reconnect: CreateGuid does not match");
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
    }
    if !open.share.name.eq_ignore_ascii_case(share) {
        return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
    }
    if open.identity.uid != uid {
        return Err(NtStatus::ACCESS_DENIED);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &[u8], data: Vec<u8>) -> CreateContext {
        CreateContext::new(name, data)
    }

    #[test]
    fn parse_combinations() {
        let fid = FileId {
            persistent: 7,
            volatile: 8,
        };
        let g = [3u8; 16];
        let dhnq = DurableHandleRequest.context();
        let dhnc = DurableHandleReconnect { file_id: fid }.context();
        let dh2q = DurableHandleRequestV2 {
            timeout: 5,
            flags: 0,
            create_guid: g,
        }
        .context();
        let dh2c = DurableHandleReconnectV2 {
            file_id: fid,
            create_guid: g,
            flags: 0,
        }
        .context();
        assert_eq!(parse(&[], true), Ok(Ask::None));
        assert_eq!(parse(std::slice::from_ref(&dhnq), true), Ok(Ask::V1));
        assert_eq!(
            parse(std::slice::from_ref(&dh2q), true),
            Ok(Ask::V2 {
                timeout_ms: 5,
                create_guid: g
            })
        );
        // v2 contexts mean nothing before SMB 3.
        assert_eq!(parse(std::slice::from_ref(&dh2q), false), Ok(Ask::None));
        // A DHnQ next to a DHnC is ignored.
        assert_eq!(
            parse(&[dhnc.clone(), dhnq.clone()], true),
            Ok(Ask::ReconnectV1 { file_id: fid })
        );
        assert_eq!(
            parse(std::slice::from_ref(&dh2c), true),
            Ok(Ask::ReconnectV2 {
                file_id: fid,
                create_guid: g
            })
        );
        let inval = Err(NtStatus::INVALID_PARAMETER);
        assert_eq!(parse(&[dh2c.clone(), dhnq.clone()], true), inval);
        assert_eq!(parse(&[dhnc.clone(), dh2q.clone()], true), inval);
        assert_eq!(parse(&[dhnc.clone(), dh2c.clone()], true), inval);
        assert_eq!(parse(&[dh2c.clone(), dh2q.clone()], true), inval);
        assert_eq!(parse(&[dh2q, dhnq], true), inval);
        // Malformed blobs.
        assert_eq!(parse(&[c(b"DHnQ", vec![0; 3])], true), inval);
        assert_eq!(parse(&[c(b"DHnC", vec![0; 15])], true), inval);
        assert_eq!(parse(&[c(b"DH2C", vec![0; 40])], true), inval);
    }

    #[test]
    fn timeouts() {
        let v2 = |ms| Ask::V2 {
            timeout_ms: ms,
            create_guid: [0; 16],
        };
        assert_eq!(granted_timeout(Ask::V1, 60, 300), Duration::from_secs(60));
        assert_eq!(granted_timeout(v2(0), 60, 300), Duration::from_secs(60));
        assert_eq!(granted_timeout(v2(1), 60, 300), Duration::from_millis(1));
        assert_eq!(
            granted_timeout(v2(u32::MAX), 60, 300),
            Duration::from_secs(300)
        );
    }
}
