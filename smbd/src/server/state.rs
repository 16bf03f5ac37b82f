//! State shared by every connection of this process.

use crate::config::{Config, ShareConfig};
use crate::posix::ShareRoot;
use crate::server::auth::TargetInfo;
use crate::server::channel::Forwarded;
use crate::server::crypto::{Cipher, SessionKeys, SigningAlgorithm};
use crate::server::durable::DurableTable;
use crate::server::keeper::KeeperLink;
use crate::server::workers::BrokerHandle;
use crate::userdb::UserDb;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What another connection asks of this one through its close queue.
#[derive(Debug)]
pub enum SessionClose {
    /// Close a session owned here (a reconnect elsewhere); `done` fires once
    /// its opens are closed or, if durable, disconnected.
    Session {
        sid: u64,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Forget the channel this connection holds to `sid`: the session ended
    /// on its owning connection.
    Channel(u64),
}

/// Where a valid session lives, so a reconnect on any connection can close it
/// and another connection can bind a channel to it.
pub struct SessionEntry {
    pub conn_id: u64,
    /// The authenticated user (empty for anonymous), compared on reconnect.
    pub user: String,
    /// The owning connection's queue of sessions to close.
    pub close_tx: mpsc::UnboundedSender<SessionClose>,
    /// What a binding connection needs (MS-SMB2 3.3.5.5.2).
    pub bind: Arc<BindTarget>,
    /// Other connections bound to the session (Session.ChannelList minus the
    /// owning connection), with their close queues.
    pub channels: Vec<(u64, mpsc::UnboundedSender<SessionClose>)>,
}

/// The parts of a session a second channel checks and uses. The session's
/// state (tree connects, opens) stays on its owning connection, which
/// serves requests arriving on other channels through `forward`.
pub struct BindTarget {
    pub dialect: u16,
    pub signing: SigningAlgorithm,
    pub cipher: Option<Cipher>,
    /// Empty for guest and anonymous sessions.
    pub keys: SessionKeys,
    pub user: String,
    /// False for guest and anonymous sessions (NOT_SUPPORTED on binding).
    pub can_bind: bool,
    pub signing_required: bool,
    pub encrypt_data: bool,
    pub forward: mpsc::UnboundedSender<Forwarded>,
}

/// One exported share.
pub struct Share {
    pub name: String,
    pub conf: Option<ShareConfig>,
    /// None for IPC$.
    pub root: Option<ShareRoot>,
    /// Volume serial number derived from the share name.
    pub serial: u32,
}

impl Share {
    pub fn is_ipc(&self) -> bool {
        self.root.is_none()
    }
}

pub struct ServerState {
    pub config: Config,
    pub guid: [u8; 16],
    pub start_time: u64,
    pub shares: Vec<Arc<Share>>,
    pub users: Mutex<UserDb>,
    /// This process's broker, or (in a worker) the supervisor's.
    pub broker: BrokerHandle,
    /// Break owner of this process's disconnected durable opens (distinct
    /// per worker, as break owners are global in the supervisor's broker).
    pub disconnected_owner: u64,
    /// Kernel leases backing SMB caching on `kernel oplocks` shares.
    pub kernel: crate::server::kernel_oplock::KernelLeases,
    pub target: TargetInfo,
    /// Every valid session of the process (MS-SMB2 GlobalSessionTable).
    pub sessions: Mutex<HashMap<u64, SessionEntry>>,
    /// Durable opens whose connection is gone, waiting for a reconnect.
    pub durable: DurableTable,
    /// The handle keeper, when `holdfast keeper socket` names one.
    pub keeper: Option<KeeperLink>,
    /// Failed logons per client address (rate limiting).
    pub logons: Mutex<crate::server::limits::LogonThrottle>,
    next_id: AtomicU64,
    file_id_base: u64,
    /// Worker index and generation bits of this process's session ids.
    sid_base: u64,
    /// Counter part of the next session id.
    next_sid: AtomicU64,
    /// This worker's index, when it is one of several.
    pub worker_index: Option<u32>,
}

/// Session ids fit in 32 bits (smbtorture's session-id test keeps them in a
/// `uint32_t`): the issuing worker's index in bits 24-31, its generation
/// (how often the supervisor started that index, modulo 16) in bits 20-23,
/// and a per-process counter in bits 0-19. Any worker can thus tell which
/// worker holds a session, and a restarted worker does not hand out the
/// ids of its predecessor's sessions again.
pub const SID_INDEX_SHIFT: u32 = 24;
pub const SID_GENERATION_SHIFT: u32 = 20;
pub const SID_GENERATIONS: u8 = 16;
const SID_COUNTER_MASK: u64 = (1 << SID_GENERATION_SHIFT) - 1;

/// The worker index and generation that issued `sid`, if it is one of ours.
pub fn session_origin(sid: u64) -> Option<(u32, u8)> {
    if sid == 0 || sid > u64::from(u32::MAX) || sid & SID_COUNTER_MASK == 0 {
        return None;
    }
    let index = (sid >> SID_INDEX_SHIFT) as u32;
    let generation = ((sid >> SID_GENERATION_SHIFT) & 0xF) as u8;
    Some((index, generation))
}

impl ServerState {
    /// Opens share roots and the user database, and loads (or creates) the server GUID.
    pub fn new(config: Config) -> io::Result<ServerState> {
        let state_dir = config.global.state_directory.clone();
        std::fs::create_dir_all(&state_dir)?;
        let guid = load_or_create_guid(&state_dir)?;
        let users = UserDb::open(&state_dir).map_err(|e| io::Error::other(e.to_string()))?;
        let mut shares = Vec::new();
        for sc in &config.shares {
            let root = ShareRoot::open(&sc.path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("share [{}] path {}: {e}", sc.name, sc.path.display()),
                )
            })?;
            shares.push(Arc::new(Share {
                name: sc.name.clone(),
                conf: Some(sc.clone()),
                root: Some(root),
                serial: serial_of(&sc.name),
            }));
        }
        shares.push(Arc::new(Share {
            name: "IPC$".into(),
            conf: None,
            root: None,
            serial: 0,
        }));
        let netbios = config.global.netbios_name.clone();
        let workgroup = config.global.workgroup.clone();
        let keeper = config
            .global
            .keeper_socket
            .clone()
            .map(|p| KeeperLink::new(p, format!("holdfast-smbd pid {}", std::process::id())));
        Ok(ServerState {
            target: TargetInfo {
                netbios_domain: netbios.clone(),
                netbios_computer: netbios.clone(),
                dns_domain: workgroup.to_lowercase(),
                dns_computer: netbios.to_lowercase(),
            },
            config,
            guid,
            start_time: crate::fsa::types::nt_now(),
            shares,
            users: Mutex::new(users),
            broker: BrokerHandle::new(),
            disconnected_owner: crate::server::durable::DISCONNECTED_OWNER,
            kernel: Default::default(),
            sessions: Mutex::new(HashMap::new()),
            durable: DurableTable::default(),
            keeper,
            logons: Mutex::new(crate::server::limits::LogonThrottle::default()),
            next_id: AtomicU64::new(1),
            // A random base keeps the FileIds of a restarted worker clear of
            // the ones its predecessor handed out (the keeper may still hold
            // those for a reconnect).
            file_id_base: u64::from(rand::random::<u32>()) << 24,
            sid_base: 0,
            next_sid: AtomicU64::new(1),
            worker_index: None,
        })
    }

    /// Marks this state as worker `index` (of at most 256), started for the
    /// `generation`th time: its session ids carry both.
    pub fn set_worker(&mut self, index: u32, generation: u8) {
        self.worker_index = Some(index);
        self.sid_base = u64::from(index & 0xFF) << SID_INDEX_SHIFT
            | u64::from(generation % SID_GENERATIONS) << SID_GENERATION_SHIFT;
    }

    /// A new session id (layout at [`session_origin`]); skips ids of
    /// sessions still valid once the 20-bit counter wraps.
    pub fn new_session_id(&self) -> u64 {
        loop {
            let n = self.next_sid.fetch_add(1, Ordering::Relaxed) & SID_COUNTER_MASK;
            if n == 0 {
                continue;
            }
            let sid = self.sid_base | n;
            let live = self.sessions.lock().is_ok_and(|m| m.contains_key(&sid));
            if !live {
                return sid;
            }
        }
    }

    /// A process-unique, never-reused 64-bit id (sessions, opens, async ids).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A FileId for a new open: unique in this process and, with high
    /// probability, unlike any FileId of an earlier process.
    pub fn next_file_id(&self) -> u64 {
        self.file_id_base + self.next_id()
    }

    /// Records (or updates, keeping its channels) a valid session in the
    /// global table.
    pub fn register_session(&self, sid: u64, mut entry: SessionEntry) {
        if let Ok(mut m) = self.sessions.lock() {
            if let Some(old) = m.remove(&sid) {
                entry.channels = old.channels;
            }
            m.insert(sid, entry);
        }
    }

    /// Forgets a session that is gone and tells its other channels.
    pub fn unregister_session(&self, sid: u64) {
        let gone = self.sessions.lock().ok().and_then(|mut m| m.remove(&sid));
        if let Some(e) = gone {
            notify_channels(sid, &e);
        }
    }

    /// Removes `sid` from the table if `user` owns it, returning the owner's
    /// connection id and close queue (MS-SMB2 3.3.5.5.3, PreviousSessionId).
    pub fn take_session_of(
        &self,
        sid: u64,
        user: &str,
    ) -> Option<(u64, mpsc::UnboundedSender<SessionClose>)> {
        let e = {
            let mut m = self.sessions.lock().ok()?;
            if !m.get(&sid)?.user.eq_ignore_ascii_case(user) {
                return None;
            }
            m.remove(&sid)?
        };
        notify_channels(sid, &e);
        Some((e.conn_id, e.close_tx))
    }

    /// What a connection binding to `sid` checks and uses.
    pub fn bind_target(&self, sid: u64) -> Option<Arc<BindTarget>> {
        self.sessions.lock().ok()?.get(&sid).map(|e| e.bind.clone())
    }

    /// Adds connection `conn_id` as a channel of `sid`; false if the session
    /// is gone.
    pub fn add_channel(
        &self,
        sid: u64,
        conn_id: u64,
        close_tx: mpsc::UnboundedSender<SessionClose>,
    ) -> bool {
        let Ok(mut m) = self.sessions.lock() else {
            return false;
        };
        match m.get_mut(&sid) {
            Some(e) => {
                e.channels.retain(|(c, _)| *c != conn_id);
                e.channels.push((conn_id, close_tx));
                true
            }
            None => false,
        }
    }

    /// Removes the channel of connection `conn_id` from `sid` (the
    /// connection ended); the session lives on.
    pub fn remove_channel(&self, sid: u64, conn_id: u64) {
        if let Ok(mut m) = self.sessions.lock() {
            if let Some(e) = m.get_mut(&sid) {
                e.channels.retain(|(c, _)| *c != conn_id);
            }
        }
    }

    /// Number of channels of `sid` besides its owning connection.
    pub fn channel_count(&self, sid: u64) -> usize {
        self.sessions
            .lock()
            .ok()
            .and_then(|m| m.get(&sid).map(|e| e.channels.len()))
            .unwrap_or(0)
    }

    /// Finds a share by name, case-insensitively.
    pub fn share(&self, name: &str) -> Option<Arc<Share>> {
        self.shares
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
    }
}

/// Tells every other channel of a removed session to drop it.
fn notify_channels(sid: u64, e: &SessionEntry) {
    for (_, tx) in &e.channels {
        let _ = tx.send(SessionClose::Channel(sid));
    }
}

fn serial_of(name: &str) -> u32 {
    // FNV-1a: stable across restarts, which is all a volume serial needs.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.to_lowercase().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn load_or_create_guid(dir: &Path) -> io::Result<[u8; 16]> {
    let p = dir.join("server-guid");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if s.len() == 32 {
            let mut g = [0u8; 16];
            let ok = (0..16).all(|i| {
                u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                    .map(|b| g[i] = b)
                    .is_ok()
            });
            if ok {
                return Ok(g);
            }
        }
        tracing::warn!(path = %p.display(), "server GUID file unreadable; writing a new one");
    }
    let g: [u8; 16] = rand::random();
    let hex: String = g.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join("server-guid.tmp");
    std::fs::write(&tmp, format!("{hex}\n"))?;
    std::fs::rename(&tmp, &p)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, ServerState) {
        let d = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.global.state_directory = d.path().to_path_buf();
        c.shares.clear();
        let st = ServerState::new(c).unwrap();
        (d, st)
    }

    fn entry(
        conn: u64,
        user: &str,
    ) -> (
        SessionEntry,
        mpsc::UnboundedReceiver<SessionClose>,
        mpsc::UnboundedReceiver<Forwarded>,
    ) {
        let (close_tx, close_rx) = mpsc::unbounded_channel();
        let (fwd_tx, fwd_rx) = mpsc::unbounded_channel();
        let keys = crate::server::crypto::derive_session_keys(0x0302, &[3; 16], None, None);
        let bind = Arc::new(BindTarget {
            dialect: 0x0302,
            signing: SigningAlgorithm::AesCmac,
            cipher: None,
            keys,
            user: user.into(),
            can_bind: true,
            signing_required: false,
            encrypt_data: false,
            forward: fwd_tx,
        });
        let e = SessionEntry {
            conn_id: conn,
            user: user.into(),
            close_tx,
            bind,
            channels: Vec::new(),
        };
        (e, close_rx, fwd_rx)
    }

    #[test]
    fn channels_follow_the_session() {
        let (_d, st) = state();
        let (e, _close1, _fwd) = entry(1, "alice");
        st.register_session(10, e);
        assert!(st.bind_target(10).is_some());
        assert!(st.bind_target(11).is_none());
        let (c2_tx, mut c2_rx) = mpsc::unbounded_channel();
        let (c3_tx, mut c3_rx) = mpsc::unbounded_channel();
        assert!(st.add_channel(10, 2, c2_tx.clone()));
        assert!(st.add_channel(10, 3, c3_tx));
        assert!(
            st.add_channel(10, 2, c2_tx),
            "binding twice keeps one entry"
        );
        assert!(!st.add_channel(11, 2, mpsc::unbounded_channel().0));
        assert_eq!(st.channel_count(10), 2);
        // A reauthentication re-registers the session: its channels stay.
        let (e, _close1b, _fwdb) = entry(1, "alice");
        st.register_session(10, e);
        assert_eq!(st.channel_count(10), 2);
        // A channel's connection ends: the session lives on.
        st.remove_channel(10, 3);
        assert_eq!(st.channel_count(10), 1);
        assert!(st.bind_target(10).is_some());
        // The session ends: the remaining channel is told, the gone one not.
        st.unregister_session(10);
        assert!(matches!(c2_rx.try_recv(), Ok(SessionClose::Channel(10))));
        assert!(c3_rx.try_recv().is_err());
        assert!(st.bind_target(10).is_none());
    }

    #[test]
    fn reconnect_takes_only_the_same_users_session_and_tells_channels() {
        let (_d, st) = state();
        let (e, _c, _f) = entry(1, "alice");
        st.register_session(20, e);
        let (c2_tx, mut c2_rx) = mpsc::unbounded_channel();
        assert!(st.add_channel(20, 2, c2_tx));
        assert!(
            st.take_session_of(20, "bob").is_none(),
            "another user's session"
        );
        assert!(st.bind_target(20).is_some());
        let (conn, _) = st
            .take_session_of(20, "ALICE")
            .expect("same user, any case");
        assert_eq!(conn, 1);
        assert!(matches!(c2_rx.try_recv(), Ok(SessionClose::Channel(20))));
        assert!(st.take_session_of(20, "alice").is_none(), "already taken");
    }

    #[test]
    fn session_ids_name_their_worker() {
        let (_d, mut st) = state();
        let first = st.new_session_id();
        assert_eq!(first, 1, "a single process keeps small ids");
        assert_eq!(session_origin(first), Some((0, 0)));
        st.set_worker(5, 3);
        let a = st.new_session_id();
        let b = st.new_session_id();
        assert_ne!(a, b);
        assert!(a <= u64::from(u32::MAX) && b <= u64::from(u32::MAX));
        assert_eq!(session_origin(a), Some((5, 3)));
        st.set_worker(255, 17);
        assert_eq!(session_origin(st.new_session_id()), Some((255, 1)));
        // a restarted worker (same index, next generation) never repeats an id
        let (_d2, mut again) = state();
        again.set_worker(5, 4);
        assert_ne!(
            again.new_session_id() >> SID_GENERATION_SHIFT,
            a >> SID_GENERATION_SHIFT
        );
        assert_eq!(session_origin(0), None);
        assert_eq!(session_origin(1 << 40), None);
        assert_eq!(
            session_origin(5 << SID_INDEX_SHIFT),
            None,
            "counter 0 is never issued"
        );
    }

    #[test]
    fn session_ids_skip_live_sessions_after_wrapping() {
        let (_d, st) = state();
        let (e, _c, _f) = entry(1, "alice");
        st.register_session(2, e);
        st.next_sid.store(SID_COUNTER_MASK + 1, Ordering::Relaxed);
        assert_eq!(st.new_session_id(), 1, "wraps past 0");
        assert_eq!(st.new_session_id(), 3, "2 is still in use");
    }

    #[test]
    fn guid_persists() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create_guid(d.path()).unwrap();
        let b = load_or_create_guid(d.path()).unwrap();
        assert_eq!(a, b);
        std::fs::write(d.path().join("server-guid"), "junk").unwrap();
        assert_ne!(load_or_create_guid(d.path()).unwrap(), a);
    }
}
