//! One client connection: framing, compound chains, credits, signing, dispatch.

use super::channel::{Channel, Foreign, Forwarded};
use super::credits::{self, CreditWindow};
use super::files::Open;
use super::pending::{AsyncWork, Pending, PendingTable};
use super::session::Session;
use super::state::{ServerState, SessionClose};
use super::workers::proto::{MovedConn, MAX_MOVED_FRAME};
use crate::fsa::oplock::BreakNotice;
use crate::server::crypto::{self, PreauthHash, SigningAlgorithm};
use crate::wire::header::{
    self, offsets, FLAGS_ASYNC_COMMAND, FLAGS_RELATED_OPERATIONS, FLAGS_SERVER_TO_REDIR,
};
use crate::wire::{Command, FileId, Header, NtStatus, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

/// Largest frame accepted before NEGOTIATE has set the real limit.
const PRENEGOTIATE_MAX_FRAME: usize = 256 * 1024;
/// Overhead allowed on top of the negotiated max read/write size.
const FRAME_OVERHEAD: usize = 64 * 1024;
/// Offset of TreeId in the SMB2 sync header.
pub const TREE_ID_OFFSET: usize = 36;

/// What a handler produced: a status and (after the 64-byte header placeholder) a body.
pub struct Reply {
    pub status: NtStatus,
    /// Starts with HEADER_LEN placeholder bytes; the body follows.
    pub buf: BytesMut,
}

impl Reply {
    /// A buffer ready for a wire encoder: a zeroed header placeholder.
    pub fn buf() -> BytesMut {
        let mut b = BytesMut::with_capacity(256);
        b.resize(HEADER_LEN, 0);
        b
    }
    pub fn ok(buf: BytesMut) -> Result<Reply, NtStatus> {
        Ok(Reply {
            status: NtStatus::SUCCESS,
            buf,
        })
    }
    pub fn with_status(status: NtStatus, buf: BytesMut) -> Result<Reply, NtStatus> {
        Ok(Reply { status, buf })
    }
}

/// Per-message context inside a compound chain.
pub struct Ctx<'a> {
    pub hdr: Header,
    pub msg: &'a [u8],
    /// FileId produced or used by the previous request of a related chain.
    pub related_fid: Option<FileId>,
}

/// How a response relates to the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    /// An ordinary (synchronous) response.
    Sync,
    /// The STATUS_PENDING interim response carrying the new AsyncId.
    Interim(u64),
    /// The final response of a request that went async.
    Final(u64),
}

/// Where a chain stands between two of its requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainState {
    /// Index of the next request to process.
    pub next: usize,
    /// FileId produced or used by the previous request.
    pub related_fid: Option<FileId>,
    /// Session a related request inherits: 0 once a request named a
    /// session that does not exist, so that what follows fails.
    pub chain_session: u64,
    pub chain_tree: u32,
    /// Error of a failed CREATE, which related requests inherit (they have
    /// no FileId to work on).
    pub create_error: Option<NtStatus>,
}

/// The requests of a chain after one that went async in its middle.
pub struct ChainRest {
    pub buf: Vec<u8>,
    pub state: ChainState,
}

/// A pending request's task reports its result under its AsyncId.
type AsyncDone = (u64, Result<Reply, NtStatus>);

/// A frame from the reader. With `gate`, the reader waits (reads nothing
/// more) until the request loop drops it: the connection may move to
/// another worker on this frame, and must then leave no bytes behind.
type Frame = Result<(Vec<u8>, Option<oneshot::Sender<()>>), String>;

/// A connection leaving this worker for the one that holds a session.
pub struct Departure<S> {
    pub sock: S,
    /// The session whose worker is to serve the connection.
    pub sid: u64,
    pub conn: MovedConn,
}

/// Set by the request loop when the connection is to move.
struct Moving {
    sid: u64,
    frame: Vec<u8>,
    /// Keeps the reader waiting until it is dropped.
    _gate: Option<oneshot::Sender<()>>,
}

impl Ctx<'_> {
    /// Substitutes the chain's FileId for the all-ones placeholder.
    pub fn fid(&self, fid: FileId) -> FileId {
        if fid == FileId::ANY {
            self.related_fid.unwrap_or(fid)
        } else {
            fid
        }
    }
}

/// Negotiated connection parameters.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub dialect: u16,
    pub client_guid: [u8; 16],
    pub client_caps: u32,
    pub client_security_mode: u16,
    pub client_dialects: Vec<u16>,
    pub server_security_mode: u16,
    pub server_caps: u32,
    pub signing: Option<SigningAlgorithm>,
    pub cipher: Option<crypto::Cipher>,
    pub max_read: u32,
    pub max_write: u32,
    pub max_transact: u32,
}

pub struct Connection {
    pub st: Arc<ServerState>,
    pub peer: SocketAddr,
    pub conn_id: u64,
    pub neg: Negotiated,
    pub credits: CreditWindow,
    /// Connection preauth integrity hash (3.1.1), after NEGOTIATE.
    pub preauth: PreauthHash,
    pub sessions: HashMap<u64, Session>,
    pub opens: HashMap<u64, Open>,
    /// Named pipe opens on IPC$, keyed like `opens`.
    pub pipes: HashMap<u64, super::ipc::Pipe>,
    /// Set when the connection must be dropped after sending what is queued.
    pub terminate: bool,
    /// Sessions logged off in the current chain, dropped once their responses are signed.
    pub logged_off: Vec<u64>,
    /// Session whose key decrypted the chain being processed.
    pub encrypted_chain: Option<u64>,
    /// Requests answered with STATUS_PENDING and not yet completed.
    pub pending: PendingTable,
    /// Finished frames produced outside the current chain's response (final
    /// responses of cancelled requests), sent before it.
    pub outbox: Vec<BytesMut>,
    /// Set by a handler that cannot finish now: the request goes async and
    /// this continuation produces the final response.
    pub async_work: Option<AsyncWork>,
    done_tx: mpsc::UnboundedSender<AsyncDone>,
    done_rx: Option<mpsc::UnboundedReceiver<AsyncDone>>,
    /// Other connections ask this one to close a session here (reconnect),
    /// or to forget a channel whose session ended.
    pub close_tx: mpsc::UnboundedSender<SessionClose>,
    close_rx: Option<mpsc::UnboundedReceiver<SessionClose>>,
    /// Oplock breaks for this connection's opens, from the broker.
    break_tx: mpsc::UnboundedSender<BreakNotice>,
    break_rx: Option<mpsc::UnboundedReceiver<BreakNotice>>,
    /// Sessions owned by other connections and bound here (multichannel).
    pub channels: HashMap<u64, Channel>,
    /// Other channels of sessions owned here forward their requests here.
    pub fwd_tx: mpsc::UnboundedSender<Forwarded>,
    fwd_rx: Option<mpsc::UnboundedReceiver<Forwarded>>,
    /// This connection's writer queue (for responses produced elsewhere).
    pub out_tx: Option<mpsc::UnboundedSender<BytesMut>>,
    /// Set while processing a chain forwarded by another channel.
    pub foreign: Option<Foreign>,
    /// Key (and algorithm) of a session owned elsewhere that verified the
    /// current request; its response is signed with it.
    pub global_sign: Option<(Vec<u8>, SigningAlgorithm)>,
    /// When the connection started, for the unauthenticated time limit.
    pub started: std::time::Instant,
    /// True once a session setup has completed on this connection.
    pub authenticated: bool,
    /// A moved connection's first request, answered before anything is read.
    first_frame: Option<Vec<u8>>,
    moving: Option<Moving>,
}

impl Connection {
    pub fn new(st: Arc<ServerState>, peer: SocketAddr, conn_id: u64) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = mpsc::unbounded_channel();
        let (break_tx, break_rx) = mpsc::unbounded_channel();
        let (fwd_tx, fwd_rx) = mpsc::unbounded_channel();
        let max_credits = u64::from(st.config.global.limits.max_credits);
        Connection {
            st,
            peer,
            conn_id,
            neg: Negotiated::default(),
            credits: CreditWindow::with_max(max_credits),
            preauth: PreauthHash::new(),
            sessions: HashMap::new(),
            opens: HashMap::new(),
            pipes: HashMap::new(),
            terminate: false,
            logged_off: Vec::new(),
            encrypted_chain: None,
            pending: PendingTable::default(),
            outbox: Vec::new(),
            async_work: None,
            done_tx,
            done_rx: Some(done_rx),
            close_tx,
            close_rx: Some(close_rx),
            break_tx,
            break_rx: Some(break_rx),
            channels: HashMap::new(),
            fwd_tx,
            fwd_rx: Some(fwd_rx),
            out_tx: None,
            foreign: None,
            global_sign: None,
            started: std::time::Instant::now(),
            authenticated: false,
            first_frame: None,
            moving: None,
        }
    }

    /// A connection another worker served until now, which is to answer
    /// `m.frame` first (MS-SMB2 3.3.5.5.2: the binding request reaches the
    /// worker holding the session).
    pub fn resumed(st: Arc<ServerState>, conn_id: u64, m: MovedConn) -> Result<Self, String> {
        if m.neg.dialect == 0 {
            return Err("moved connection was never negotiated".into());
        }
        let credits = CreditWindow::from_parts(m.credits).ok_or("bad moved credit window")?;
        let mut c = Connection::new(st, m.peer, conn_id);
        c.neg = m.neg;
        c.credits = credits;
        c.preauth = PreauthHash::from_value(m.preauth);
        let age = std::time::Duration::from_millis(m.age_ms);
        c.started = std::time::Instant::now()
            .checked_sub(age)
            .unwrap_or_else(std::time::Instant::now);
        c.authenticated = m.authenticated;
        c.first_frame = Some(m.frame);
        Ok(c)
    }

    /// The session a request frame names in another worker, when this
    /// connection is to move there to be answered: a SESSION_SETUP binding
    /// to it, or starting a session that reconnects it (PreviousSessionId,
    /// MS-SMB2 3.3.5.5.3). Only a connection with no state of its own (no
    /// sessions, channels, opens or pending requests) can move.
    fn move_target(&self, buf: &[u8]) -> Option<u64> {
        let me = self.st.worker_index?;
        let workers = self.st.config.global.workers;
        let sid = setup_naming_session(buf)?;
        if self.channels.contains_key(&sid) || self.st.bind_target(sid).is_some() {
            return None;
        }
        let (owner, _) = crate::server::state::session_origin(sid)?;
        if owner == me || owner as usize >= workers {
            return None;
        }
        if !(self.sessions.is_empty()
            && self.channels.is_empty()
            && self.opens.is_empty()
            && self.pipes.is_empty()
            && self.pending.is_empty()
            && self.outbox.is_empty())
        {
            info!(
                sid,
                owner,
                "session is in another worker, but this connection has state; answering here"
            );
            return None;
        }
        if buf.len() > MAX_MOVED_FRAME || !self.departure_state(Vec::new()).fits() {
            warn!(
                sid,
                len = buf.len(),
                "request or connection state too large to move; answering here"
            );
            return None;
        }
        Some(sid)
    }

    /// What another worker needs to go on serving this connection.
    fn departure_state(&self, frame: Vec<u8>) -> MovedConn {
        MovedConn {
            peer: self.peer,
            neg: self.neg.clone(),
            credits: self.credits.to_parts(),
            preauth: *self.preauth.value(),
            age_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            authenticated: self.authenticated,
            frame,
        }
    }

    fn max_frame(&self) -> usize {
        if self.neg.dialect == 0 {
            PRENEGOTIATE_MAX_FRAME
        } else {
            let m = self
                .neg
                .max_read
                .max(self.neg.max_write)
                .max(self.neg.max_transact) as usize;
            m + FRAME_OVERHEAD
        }
    }

    /// Serves the connection until the peer leaves, a protocol violation, or shutdown.
    pub async fn run<S>(self, sock: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Outside a worker of several, nothing moves.
        let _ = self.run_movable(sock).await;
    }

    /// Like `run`, but returns the socket and state when the connection is
    /// to move to the worker holding a session (see `move_target`).
    pub async fn run_movable<S>(mut self, sock: S) -> Option<Departure<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let span = tracing::info_span!("conn", id = self.conn_id, peer = %self.peer);
        async {
            if self.first_frame.is_some() {
                info!(
                    dialect = format_args!("{:#06x}", self.neg.dialect),
                    "connected (moved here from another worker)"
                );
            } else {
                info!("connected");
            }
            self.st
                .broker
                .register_break_sink(self.conn_id, self.break_tx.clone());
            let out = self.serve(sock).await;
            let departure = match out {
                Ok(why) => {
                    self.teardown().await;
                    info!(reason = %why, "disconnected");
                    return None;
                }
                Err((sock, sid, frame)) => Departure {
                    sock,
                    sid,
                    conn: self.departure_state(frame),
                },
            };
            self.teardown().await;
            info!(
                sid = departure.sid,
                "leaving for the worker that holds the session"
            );
            Some(departure)
        }
        .instrument(span)
        .await
    }

    /// Runs the reader, the request loop and the writer concurrently. The
    /// reader only frames bytes; the writer owns the write half, so final
    /// responses of async requests (and later, break notifications) can be
    /// sent whenever they are ready.
    ///
    /// Err carries the socket (and the request to answer elsewhere) when
    /// the connection is to move: the reader was waiting at that request's
    /// gate, so nothing after it has been read.
    async fn serve<S>(&mut self, sock: S) -> Result<String, (S, u64, Vec<u8>)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut rd, wr) = tokio::io::split(sock);
        let max_frame = Arc::new(AtomicUsize::new(self.max_frame()));
        let (frame_tx, frame_rx) = mpsc::channel(4);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let gates = self.st.worker_index.is_some() && self.st.config.global.workers > 1;
        let reader = read_frames(&mut rd, max_frame.clone(), frame_tx, gates);
        // Other channels hold clones of `out_tx` to answer requests they
        // forwarded, so the writer stops on `done`, not when senders are gone.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = write_frames(wr, out_rx, done_rx);
        let main = async {
            let why = self.request_loop(frame_rx, out_tx, max_frame).await;
            self.out_tx = None;
            let _ = done_tx.send(());
            why
        };
        let work = async { tokio::join!(main, writer) };
        let (why, wr) = tokio::select! {
            r = work => r,
            () = reader => return Ok("reader stopped".into()),
        };
        let Some(m) = self.moving.take() else {
            return Ok(why);
        };
        match wr {
            Some(wr) => Err((rd.unsplit(wr), m.sid, m.frame)),
            None => Ok("write failed before moving".into()),
        }
    }

    /// Processes frames from the reader and completions of async requests,
    /// one at a time, and queues the resulting frames for the writer.
    async fn request_loop(
        &mut self,
        mut frames: mpsc::Receiver<Frame>,
        out: mpsc::UnboundedSender<BytesMut>,
        max_frame: Arc<AtomicUsize>,
    ) -> String {
        let (Some(mut done_rx), Some(mut close_rx), Some(mut break_rx), Some(mut fwd_rx)) = (
            self.done_rx.take(),
            self.close_rx.take(),
            self.break_rx.take(),
            self.fwd_rx.take(),
        ) else {
            return "connection served twice".into();
        };
        self.out_tx = Some(out.clone());
        let limit = self.st.config.global.limits.unauth_timeout_secs;
        // Counted from the accept, so time spent routing the connection counts.
        let unauth_deadline = tokio::time::sleep_until(
            tokio::time::Instant::from_std(self.started)
                + if limit == 0 {
                    std::time::Duration::from_secs(u64::from(u32::MAX))
                } else {
                    std::time::Duration::from_secs(limit)
                },
        );
        tokio::pin!(unauth_deadline);
        if let Some(buf) = self.first_frame.take() {
            // Moved here to be answered here: never moves on again.
            let resp = match self.process_frame(buf).await {
                Ok(r) => r,
                Err(why) => return why,
            };
            max_frame.store(self.max_frame(), Ordering::Relaxed);
            for f in std::mem::take(&mut self.outbox).into_iter().chain(resp) {
                if out.send(f).is_err() {
                    return "writer gone".into();
                }
            }
            if self.terminate {
                return "terminated by server".into();
            }
        }
        loop {
            let resp = tokio::select! {
                // A close asked for by a reconnect goes first, so that requests
                // arriving after the reconnect's response see the session gone.
                biased;
                Some(close) = close_rx.recv() => {
                    match close {
                        SessionClose::Channel(sid) => {
                            if self.channels.remove(&sid).is_some() {
                                info!(sid, "channel dropped: its session ended elsewhere");
                            }
                        }
                        SessionClose::Session { sid, done } => {
                            info!(sid, "session closed by a reconnect elsewhere");
                            self.drop_session(sid, true).await;
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                        }
                    }
                    None
                }
                Some(f) = fwd_rx.recv() => {
                    self.process_forwarded(f).await;
                    None
                }
                () = &mut unauth_deadline, if limit != 0 && !self.authenticated => {
                    warn!(limit_secs = limit, "no session setup completed in time; disconnecting");
                    return "unauthenticated too long".into();
                }
                f = frames.recv() => match f {
                    Some(Ok((buf, gate))) => {
                        if gate.is_some() {
                            if let Some(sid) = self.move_target(&buf) {
                                self.moving = Some(Moving { sid, frame: buf, _gate: gate });
                                return "moving to another worker".into();
                            }
                        }
                        // `gate` is dropped once the frame is handled.
                        match self.process_frame(buf).await {
                            Ok(r) => r,
                            Err(why) => return why,
                        }
                    }
                    Some(Err(why)) => return why,
                    None => return "reader gone".into(),
                },
                Some((async_id, result)) = done_rx.recv() => {
                    self.complete_async(async_id, result).await;
                    None
                }
                Some(notice) = break_rx.recv() => {
                    self.send_oplock_break(notice);
                    None
                }
            };
            // Breaks the request just handled caused for this connection's
            // own opens go out before its response (or interim response).
            while let Ok(notice) = break_rx.try_recv() {
                self.send_oplock_break(notice);
            }
            max_frame.store(self.max_frame(), Ordering::Relaxed);
            for f in std::mem::take(&mut self.outbox).into_iter().chain(resp) {
                if out.send(f).is_err() {
                    return "writer gone".into();
                }
            }
            if self.terminate {
                return "terminated by server".into();
            }
        }
    }

    /// Handles one transport frame; returns the response frame (without the
    /// 4-byte transport header), None for no response, or Err to disconnect.
    async fn process_frame(&mut self, buf: Vec<u8>) -> Result<Option<BytesMut>, String> {
        let out = self.process_frame_inner(buf).await;
        self.finish_logoffs();
        out
    }

    /// Sessions logged off in the last chain go once their replies are signed and sealed.
    pub fn finish_logoffs(&mut self) {
        for sid in std::mem::take(&mut self.logged_off) {
            self.sessions.remove(&sid);
            self.st.unregister_session(sid);
        }
    }

    async fn process_frame_inner(&mut self, buf: Vec<u8>) -> Result<Option<BytesMut>, String> {
        match buf.get(0..4) {
            Some(p) if p == header::SMB1_PROTOCOL_ID => self.smb1_negotiate(&buf).map(Some),
            Some(p) if p == header::PROTOCOL_ID => self.process_chain(&buf).await,
            Some(p) if p == header::TRANSFORM_PROTOCOL_ID => self.process_encrypted(&buf).await,
            _ => Err("unknown protocol id".into()),
        }
    }

    /// Decrypts a transform message, processes the chain inside, and encrypts the answer.
    async fn process_encrypted(&mut self, buf: &[u8]) -> Result<Option<BytesMut>, String> {
        let cipher = self
            .neg
            .cipher
            .ok_or("encrypted message without a negotiated cipher")?;
        let sid = crypto::transform_session_id(buf).ok_or("truncated transform header")?;
        let key = self
            .sessions
            .get(&sid)
            .and_then(|s| s.keys.as_ref())
            .map(|k| k.decrypt_client_out.clone())
            .or_else(|| {
                self.channels
                    .get(&sid)
                    .filter(|c| c.key().is_some())
                    .map(|c| c.target.keys.decrypt_client_out.clone())
            })
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("encrypted message for unknown session {sid:#x}"))?;
        let (_, plain) = crypto::decrypt_message(cipher, &key, buf)
            .map_err(|e| format!("decryption failed: {e:?}"))?;
        if plain.get(0..4) != Some(&header::PROTOCOL_ID[..]) {
            return Err("decrypted payload is not SMB2".into());
        }
        self.encrypted_chain = Some(sid);
        let out = self.process_chain(&plain).await;
        self.encrypted_chain = None;
        match out? {
            Some(resp) => self.encrypt_for(sid, &resp).map(Some),
            None => Ok(None),
        }
    }

    /// Wraps a response chain in a transform header with the session's key.
    pub fn encrypt_for(&mut self, sid: u64, plain: &[u8]) -> Result<BytesMut, String> {
        let cipher = self.neg.cipher.ok_or("no cipher")?;
        if !self.sessions.contains_key(&sid) {
            if let Some(c) = self.channels.get_mut(&sid) {
                let key = c.target.keys.encrypt_server_out.clone();
                let nonce = c.next_nonce(cipher.nonce_len());
                return Ok(BytesMut::from(
                    &crypto::encrypt_message(cipher, &key, sid, &nonce, plain)[..],
                ));
            }
        }
        let sess = self
            .sessions
            .get_mut(&sid)
            .ok_or("session gone before its encrypted reply")?;
        let key = sess
            .keys
            .as_ref()
            .map(|k| k.encrypt_server_out.clone())
            .ok_or("no encryption key")?;
        let nonce = sess.next_nonce(cipher.nonce_len());
        Ok(BytesMut::from(
            &crypto::encrypt_message(cipher, &key, sid, &nonce, plain)[..],
        ))
    }

    /// Processes a chain of (possibly compounded) SMB2 requests.
    pub async fn process_chain(&mut self, buf: &[u8]) -> Result<Option<BytesMut>, String> {
        self.process_chain_from(buf, ChainState::default()).await
    }

    /// Processes the requests of a chain from `state.next` on.
    async fn process_chain_from(
        &mut self,
        buf: &[u8],
        state: ChainState,
    ) -> Result<Option<BytesMut>, String> {
        let bounds = crate::wire::frame::split_compound(buf)
            .map_err(|e| format!("bad compound chain: {e}"))?;
        let max_compound = self.st.config.global.limits.max_compound;
        if bounds.len() > max_compound {
            // No status can answer a chain the server will not parse: like
            // a credit violation, it ends the connection.
            warn!(
                requests = bounds.len(),
                limit = max_compound,
                "compound chain too long"
            );
            return Err(format!("compound chain of {} requests", bounds.len()));
        }
        if state.next == 0
            && self.foreign.is_none()
            && !self.channels.is_empty()
            && self.try_forward(buf, &bounds)?
        {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        let ChainState {
            next: first,
            mut related_fid,
            mut chain_session,
            mut chain_tree,
            mut create_error,
        } = state;
        // The last request that gets a response (CANCEL gets none): its
        // response ends the chain, and only it may go async.
        let last_idx = bounds
            .iter()
            .rposition(|&(s, e)| {
                Header::decode(&buf[s..e]).map_or(true, |h| h.cmd() != Some(Command::Cancel))
            })
            .unwrap_or(0);
        for (idx, &(start, end)) in bounds.iter().enumerate().skip(first) {
            let msg = &buf[start..end];
            let mut hdr = Header::decode(msg).map_err(|e| format!("bad header: {e}"))?;
            if hdr.is_response() {
                return Err("response sent to server".into());
            }
            let related = hdr.is_related();
            // Credits: every request but CANCEL consumes its charge.
            let cmd = hdr.cmd();
            self.global_sign = None;
            if cmd != Some(Command::Cancel) && self.foreign.is_none() && !self.consume_credits(&hdr)
            {
                return Err(format!(
                    "message id {} outside the credit window",
                    hdr.message_id
                ));
            }
            if related && idx > 0 {
                hdr.session_id = chain_session;
                hdr.set_tree_id(chain_tree);
            }
            if cmd == Some(Command::Cancel) {
                // CANCEL never gets a response of its own (MS-SMB2 3.3.5.16).
                self.cancel_request(&hdr);
                continue;
            }
            let span = tracing::debug_span!("req", cmd = ?cmd, mid = hdr.message_id, sid = hdr.session_id, tid = hdr.tree_id());
            let result = if cmd.is_none() {
                Err(NtStatus::INVALID_PARAMETER)
            } else if related && (idx == 0 || !self.sessions.contains_key(&hdr.session_id)) {
                // A related request without a usable inherited session
                // (first in the chain, or after a bad SessionId).
                Err(NtStatus::INVALID_PARAMETER)
            } else if let Some(status) = create_error.filter(|_| related) {
                Err(status)
            } else {
                match self.check_signature(&hdr, msg) {
                    Err(s) => Err(s),
                    Ok(()) => {
                        let mut ctx = Ctx {
                            hdr: hdr.clone(),
                            msg,
                            related_fid: if related { related_fid } else { None },
                        };
                        self.async_work = None;
                        let r = self.dispatch(&mut ctx).instrument(span).await;
                        related_fid = ctx.related_fid;
                        match (r, self.async_work.take()) {
                            (Ok(_), Some(work)) if work.redo.is_some() && idx < last_idx => {
                                // A CREATE waiting for an oplock break in the
                                // middle of a chain: the chain stops here and
                                // the rest runs once the CREATE is done.
                                let sid = if !(related && idx == 0)
                                    && self.sessions.contains_key(&hdr.session_id)
                                {
                                    hdr.session_id
                                } else {
                                    0
                                };
                                let rest = ChainRest {
                                    buf: buf.to_vec(),
                                    state: ChainState {
                                        next: idx + 1,
                                        related_fid: None,
                                        chain_session: sid,
                                        chain_tree: hdr.tree_id(),
                                        create_error: None,
                                    },
                                };
                                let async_id = self.pending.next_async_id();
                                self.spawn_pending(
                                    async_id,
                                    hdr.clone(),
                                    work,
                                    self.encrypted_chain,
                                    Some(rest),
                                );
                                let reply = error_reply(NtStatus::PENDING);
                                let kind = ReplyKind::Interim(async_id);
                                self.finish_reply(
                                    &hdr,
                                    reply,
                                    related && idx > 0,
                                    true,
                                    kind,
                                    &mut out,
                                );
                                break;
                            }
                            (Ok(_), Some(work)) => self.go_async(&hdr, work, idx >= last_idx),
                            (r, _) => r.map(|r| (r, ReplyKind::Sync)),
                        }
                    }
                }
            };
            let (reply, kind) = match result {
                Ok(r) => r,
                Err(status) => {
                    debug!(?cmd, ?status, "request failed");
                    (error_reply(status), ReplyKind::Sync)
                }
            };
            // Remember what later related requests inherit.
            let sid = reply_session_id(&hdr, &reply);
            // A related first request inherits nothing, like a bad session.
            chain_session = if !(related && idx == 0) && self.sessions.contains_key(&sid) {
                sid
            } else {
                0
            };
            chain_tree = reply_tree_id(&hdr, &reply);
            if cmd == Some(Command::Create) {
                if reply.status.is_error() {
                    related_fid = None;
                    create_error = Some(reply.status);
                } else {
                    create_error = None;
                }
            }
            let last = idx >= last_idx;
            self.finish_reply(&hdr, reply, related && idx > 0, last, kind, &mut out);
            if self.terminate {
                break;
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Registers a request whose handler asked to finish later, and returns
    /// its interim response. Only the last request of a chain may go async;
    /// one in the middle fails with STATUS_INTERNAL_ERROR, as Windows does
    /// (MS-SMB2 <159>, checked by smbtorture compound.interim2).
    fn go_async(
        &mut self,
        req: &Header,
        work: AsyncWork,
        last: bool,
    ) -> Result<(Reply, ReplyKind), NtStatus> {
        if !last {
            return Err(NtStatus::INTERNAL_ERROR);
        }
        let max_async = self.st.config.global.limits.max_async;
        if self.pending.len() >= max_async {
            warn!(limit = max_async, "too many pending requests");
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let async_id = self.pending.next_async_id();
        self.spawn_pending(async_id, req.clone(), work, self.encrypted_chain, None);
        Ok((error_reply(NtStatus::PENDING), ReplyKind::Interim(async_id)))
    }

    /// Runs a pending request's task and records it under `async_id`.
    fn spawn_pending(
        &mut self,
        async_id: u64,
        req: Header,
        mut work: AsyncWork,
        encrypted: Option<u64>,
        rest: Option<ChainRest>,
    ) {
        let done = self.done_tx.clone();
        let (kind, file, gate, redo) = (work.kind, work.file, work.gate.clone(), work.redo.take());
        let fut = work.into_future();
        let task = tokio::spawn(
            async move {
                let r = fut.await;
                let _ = done.send((async_id, r));
            }
            .instrument(tracing::debug_span!(
                "async",
                async_id,
                mid = req.message_id
            )),
        );
        debug!(async_id, ?kind, "request went async");
        self.pending.insert(Pending {
            async_id,
            req,
            kind,
            file,
            encrypted,
            route: self.foreign.as_ref().map(|f| f.route.clone()),
            gate,
            abort: Some(task.abort_handle()),
            redo,
            rest,
        });
    }

    /// CANCEL: ends the pending request it names with STATUS_CANCELLED. A
    /// request that is not (or no longer) pending is ignored.
    fn cancel_request(&mut self, hdr: &Header) {
        let origin = self.foreign.as_ref().map(|f| f.route.conn_id);
        let id = if hdr.is_async() {
            Some(hdr.async_id()).filter(|id| self.pending.get(*id).is_some())
        } else {
            self.pending.by_message_id(hdr.message_id, origin)
        };
        match id {
            Some(id) => self.end_pending(id, NtStatus::CANCELLED),
            None => debug!(mid = hdr.message_id, "cancel for nothing pending"),
        }
    }

    /// Ends a pending request with `status`, unless its task already
    /// committed a result (its final response then follows from the task).
    pub fn end_pending(&mut self, async_id: u64, status: NtStatus) {
        let Some(p) = self.pending.get(async_id) else {
            return;
        };
        if !p.gate.cancel() {
            return;
        }
        if let Some(mut p) = self.pending.remove(async_id) {
            if let Some(a) = &p.abort {
                a.abort();
            }
            debug!(async_id, ?status, "pending request ended");
            self.send_final(&p, error_reply(status));
            if let Some(rest) = p.rest.take() {
                self.fail_chain_rest(rest, status, p.encrypted);
            }
        }
    }

    /// Ends the pending requests waiting on an open that is being closed.
    pub fn end_pending_on_file(&mut self, volatile: u64) {
        for id in self.pending.ids_where(|p| p.file == Some(volatile)) {
            let status = self
                .pending
                .get(id)
                .map_or(NtStatus::CANCELLED, |p| p.kind.closed_status());
            self.end_pending(id, status);
        }
    }

    /// A pending request's task finished: send its final response, or run
    /// the request again if that is what it waited for.
    async fn complete_async(&mut self, async_id: u64, result: Result<Reply, NtStatus>) {
        let Some(mut p) = self.pending.remove(async_id) else {
            return;
        };
        if let (Some(msg), true) = (p.redo.take(), result.is_ok()) {
            self.redo_pending(p, msg).await;
            return;
        }
        let reply = result.unwrap_or_else(error_reply);
        debug!(async_id, status = ?reply.status, "async request completed");
        self.send_final(&p, reply);
    }

    /// Runs a request that waited again, as if it had just arrived; it may
    /// have to wait once more, under the same AsyncId.
    async fn redo_pending(&mut self, p: Pending, msg: Vec<u8>) {
        let mut ctx = Ctx {
            hdr: p.req.clone(),
            msg: &msg,
            related_fid: None,
        };
        let saved = std::mem::replace(&mut self.encrypted_chain, p.encrypted);
        self.async_work = None;
        let span = tracing::debug_span!("redo", async_id = p.async_id, mid = p.req.message_id);
        let r = self.dispatch(&mut ctx).instrument(span).await;
        self.encrypted_chain = saved;
        let related_fid = ctx.related_fid;
        let mut p = p;
        match (r, self.async_work.take()) {
            (Ok(_), Some(work)) => {
                let rest = p.rest.take();
                self.spawn_pending(p.async_id, p.req.clone(), work, p.encrypted, rest)
            }
            (r, _) => {
                let reply = r.unwrap_or_else(error_reply);
                debug!(async_id = p.async_id, status = ?reply.status, "async request completed");
                let status = reply.status;
                self.send_final(&p, reply);
                if let Some(mut rest) = p.rest.take() {
                    if status.is_error() {
                        rest.state.create_error = Some(status);
                    } else {
                        rest.state.related_fid = related_fid;
                    }
                    self.resume_chain(rest, p.encrypted).await;
                }
            }
        }
    }

    /// Processes the rest of a chain that stopped at an async CREATE and
    /// queues its responses.
    async fn resume_chain(&mut self, rest: ChainRest, encrypted: Option<u64>) {
        let saved = std::mem::replace(&mut self.encrypted_chain, encrypted);
        let out = self.process_chain_from(&rest.buf, rest.state).await;
        self.encrypted_chain = saved;
        for sid in std::mem::take(&mut self.logged_off) {
            self.sessions.remove(&sid);
            self.st.unregister_session(sid);
        }
        let frame = match (out, encrypted) {
            (Ok(Some(resp)), Some(sid)) => match self.encrypt_for(sid, &resp) {
                Ok(f) => f,
                Err(e) => {
                    debug!(error = %e, "resumed chain responses dropped");
                    return;
                }
            },
            (Ok(Some(resp)), None) => resp,
            (Ok(None), _) => return,
            (Err(why), _) => {
                warn!(reason = %why, "resumed chain failed; disconnecting");
                self.terminate = true;
                return;
            }
        };
        self.outbox.push(frame);
    }

    /// A pending CREATE that stopped a chain was cancelled: the requests
    /// after it fail the same way (related ones have no FileId anyway).
    fn fail_chain_rest(&mut self, rest: ChainRest, status: NtStatus, encrypted: Option<u64>) {
        let Ok(bounds) = crate::wire::frame::split_compound(&rest.buf) else {
            return;
        };
        let todo: Vec<Header> = bounds
            .iter()
            .skip(rest.state.next)
            .filter_map(|&(s, e)| Header::decode(&rest.buf[s..e]).ok())
            .filter(|h| h.cmd() != Some(Command::Cancel))
            .collect();
        let mut out = BytesMut::new();
        let saved = std::mem::replace(&mut self.encrypted_chain, encrypted);
        let n = todo.len();
        for (i, mut h) in todo.into_iter().enumerate() {
            let related = h.is_related();
            if related {
                h.session_id = rest.state.chain_session;
                h.set_tree_id(rest.state.chain_tree);
            }
            let last = i + 1 == n;
            self.finish_reply(
                &h,
                error_reply(status),
                related,
                last,
                ReplyKind::Sync,
                &mut out,
            );
        }
        self.encrypted_chain = saved;
        if out.is_empty() {
            return;
        }
        let frame = match encrypted {
            Some(sid) => match self.encrypt_for(sid, &out) {
                Ok(f) => f,
                Err(_) => return,
            },
            None => out,
        };
        self.outbox.push(frame);
    }

    /// Builds, signs or encrypts the final response of a pending request and
    /// queues it.
    fn send_final(&mut self, p: &Pending, reply: Reply) {
        let mut out = BytesMut::new();
        let saved = std::mem::replace(&mut self.encrypted_chain, p.encrypted);
        // A request that came through another channel is answered there,
        // signed with that channel's key.
        let saved_foreign = std::mem::replace(
            &mut self.foreign,
            p.route.clone().map(|route| Foreign {
                route,
                grants: Vec::new(),
                next: 0,
            }),
        );
        self.finish_reply(
            &p.req,
            reply,
            false,
            true,
            ReplyKind::Final(p.async_id),
            &mut out,
        );
        self.encrypted_chain = saved;
        self.foreign = saved_foreign;
        let frame = match p.encrypted {
            Some(sid) => match self.encrypt_for(sid, &out) {
                Ok(f) => f,
                Err(e) => {
                    debug!(error = %e, "final response dropped");
                    return;
                }
            },
            None => out,
        };
        match &p.route {
            Some(r) => {
                let _ = r.out.send(frame);
            }
            None => self.outbox.push(frame),
        }
    }

    pub fn consume_credits(&mut self, hdr: &Header) -> bool {
        let charge = if self.neg.dialect >= 0x0210 {
            hdr.credit_charge
        } else {
            1
        };
        self.credits.consume(hdr.message_id, charge)
    }

    /// Verifies a request's signature, and that a session requiring signing got one.
    fn check_signature(&mut self, hdr: &Header, msg: &[u8]) -> Result<(), NtStatus> {
        let cmd = hdr.cmd();
        if matches!(cmd, Some(Command::Negotiate)) {
            return Ok(());
        }
        let Some(sess) = self.sessions.get(&hdr.session_id) else {
            // A channel here of a session owned elsewhere, or a session
            // setup naming such a session.
            if self.foreign.is_none() {
                self.global_sign = self.check_channel_request(hdr, msg)?;
            }
            return Ok(());
        };
        if self.encrypted_chain.is_some() {
            return Ok(());
        }
        let tree_encrypts = sess.trees.get(&hdr.tree_id()).is_some_and(|t| t.encrypt)
            && !matches!(
                cmd,
                Some(Command::SessionSetup | Command::TreeConnect | Command::Echo)
            );
        if tree_encrypts {
            warn!(
                mid = hdr.message_id,
                tid = hdr.tree_id(),
                "unencrypted request on a tree that requires encryption"
            );
            return Err(NtStatus::ACCESS_DENIED);
        }
        if sess.encrypt_data && sess.is_valid() && !matches!(cmd, Some(Command::SessionSetup)) {
            warn!(
                mid = hdr.message_id,
                "unencrypted request on a session that requires encryption"
            );
            return Err(NtStatus::ACCESS_DENIED);
        }
        if self.foreign.is_some() {
            // The channel it arrived on verified the signature.
            return Ok(());
        }
        if hdr.is_signed() {
            let (Some(key), Some(alg)) = (sess.signing_key(), self.neg.signing) else {
                // Signed by a session that has no key (still authenticating, guest).
                return if matches!(cmd, Some(Command::SessionSetup)) {
                    Ok(())
                } else {
                    Err(NtStatus::ACCESS_DENIED)
                };
            };
            if !crypto::verify_message(alg, key, msg) {
                warn!(mid = hdr.message_id, "bad signature");
                return Err(NtStatus::ACCESS_DENIED);
            }
        } else if sess.signing_required
            && sess.is_valid()
            && !matches!(cmd, Some(Command::SessionSetup))
        {
            warn!(
                mid = hdr.message_id,
                "unsigned request on a session that requires signing"
            );
            return Err(NtStatus::ACCESS_DENIED);
        }
        Ok(())
    }

    /// Builds the response header for `reply`, signs it if needed, appends it to `out`.
    fn finish_reply(
        &mut self,
        req: &Header,
        reply: Reply,
        related: bool,
        last: bool,
        kind: ReplyKind,
        out: &mut BytesMut,
    ) {
        let want = req.credits.max(1);
        // Credits go with the interim response of an async request, none with its final one.
        let granted = if req.cmd() == Some(Command::Cancel) || matches!(kind, ReplyKind::Final(_)) {
            0
        } else if let Some(f) = self.foreign.as_mut() {
            // The channel the request came on granted these.
            f.take_grant()
        } else {
            self.credits.grant(want)
        };
        let mut h = Header {
            credit_charge: req.credit_charge,
            status: reply.status.0,
            command: req.command,
            credits: granted,
            flags: FLAGS_SERVER_TO_REDIR | (req.flags & header::FLAGS_PRIORITY_MASK),
            next_command: 0,
            message_id: req.message_id,
            async_or_tree: req.async_or_tree,
            session_id: req.session_id,
            signature: [0; 16],
        };
        if related {
            h.flags |= FLAGS_RELATED_OPERATIONS;
        }
        h.session_id = reply_session_id(req, &reply);
        h.set_tree_id(reply_tree_id(req, &reply));
        if let ReplyKind::Interim(id) | ReplyKind::Final(id) = kind {
            h.flags |= FLAGS_ASYNC_COMMAND;
            h.async_or_tree = id;
        }
        let mut buf = reply.buf;
        let mut hb = BytesMut::with_capacity(HEADER_LEN);
        h.encode(&mut hb);
        buf[..HEADER_LEN].copy_from_slice(&hb);
        if !last {
            // NextCommand is part of what the signature covers, so it is set
            // here, before signing, to this response's padded length.
            crate::wire::pad_to(&mut buf, 8);
            let next = buf.len() as u32;
            buf[offsets::NEXT_COMMAND..offsets::NEXT_COMMAND + 4]
                .copy_from_slice(&next.to_le_bytes());
        }
        if let Some((key, alg)) = self.reply_signing_key(req, &h) {
            crypto::sign_message(alg, &key, &mut buf);
        } else if req.is_signed()
            && NtStatus(h.status) == NtStatus::USER_SESSION_DELETED
            && self.encrypted_chain.is_none()
        {
            // Clients skip the signature check for this status but a client
            // that signs wants the flag (MS-SMB2 3.3.4.1.1 has no key here).
            let flags = h.flags | header::FLAGS_SIGNED;
            buf[offsets::FLAGS..offsets::FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        }
        self.note_response(req.cmd(), NtStatus(h.status), h.session_id, &buf);
        out.put_slice(&buf);
    }

    /// The key and algorithm a response is signed with, if it is signed.
    fn reply_signing_key(
        &self,
        req: &Header,
        resp: &Header,
    ) -> Option<(Vec<u8>, SigningAlgorithm)> {
        if self.encrypted_chain.is_some() {
            return None;
        }
        if self.sessions.contains_key(&resp.session_id) {
            if !self.should_sign(req, resp) {
                return None;
            }
            if let Some(f) = &self.foreign {
                return Some((f.route.key.clone(), f.route.alg));
            }
            let key = self.sessions.get(&resp.session_id)?.signing_key()?;
            return Some((key.to_vec(), self.neg.signing?));
        }
        if let Some(k) = &self.global_sign {
            // A binding request (or a request for a session owned
            // elsewhere) verified with the session key: so is its answer.
            if req.cmd() != Some(Command::SessionSetup) {
                return Some(k.clone());
            }
            {
                let bound = self
                    .channels
                    .get(&resp.session_id)
                    .and_then(|c| c.key().map(|key| key.to_vec()));
                return match bound {
                    // The binding just completed: the channel key proves it.
                    Some(key) if NtStatus(resp.status) == NtStatus::SUCCESS => {
                        Some((key, self.neg.signing?))
                    }
                    _ => Some(k.clone()),
                };
            }
        }
        let c = self.channels.get(&resp.session_id)?;
        let key = c.key()?;
        let status = NtStatus(resp.status);
        let sign = if req.cmd() == Some(Command::SessionSetup) {
            req.is_signed() || status == NtStatus::SUCCESS
        } else {
            status != NtStatus::PENDING && (req.is_signed() || c.target.signing_required)
        };
        sign.then(|| (key.to_vec(), self.neg.signing))
            .and_then(|(k, a)| Some((k, a?)))
    }

    fn should_sign(&self, req: &Header, resp: &Header) -> bool {
        if self.encrypted_chain.is_some() {
            return false;
        }
        let Some(sess) = self.sessions.get(&resp.session_id) else {
            return false;
        };
        if sess.signing_key().is_none() {
            return false;
        }
        let status = NtStatus(resp.status);
        if req.cmd() == Some(Command::SessionSetup) {
            // The final SESSION_SETUP response proves the key (MS-SMB2 3.3.5.5.3).
            return status == NtStatus::SUCCESS
                && (sess.signing_required || self.neg.dialect >= 0x0300 || req.is_signed());
        }
        if status == NtStatus::PENDING {
            return false;
        }
        req.is_signed() || sess.signing_required
    }

    async fn dispatch(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let Some(cmd) = ctx.hdr.cmd() else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        if self.neg.dialect == 0 && cmd != Command::Negotiate {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        match cmd {
            Command::Negotiate => self.negotiate(ctx),
            Command::SessionSetup => self.session_setup(ctx).await,
            Command::Echo => {
                if !fixed_body_ok(ctx.msg, &[4]) {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let mut b = Reply::buf();
                b.put_u16_le(4);
                b.put_u16_le(0);
                Reply::ok(b)
            }
            _ => {
                self.session_for(ctx)?;
                match cmd {
                    Command::Logoff => self.logoff(ctx).await,
                    Command::TreeConnect => self.tree_connect(ctx),
                    Command::TreeDisconnect => self.tree_disconnect(ctx).await,
                    Command::Close
                    | Command::Flush
                    | Command::Read
                    | Command::Write
                    | Command::Ioctl
                    | Command::QueryInfo
                        if self.on_ipc(ctx) =>
                    {
                        self.pipe_command(ctx, cmd).await
                    }
                    Command::Create => self.create(ctx).await,
                    Command::Close => self.close(ctx).await,
                    Command::Flush => self.flush(ctx).await,
                    Command::Read => self.read(ctx).await,
                    Command::Write => self.write(ctx).await,
                    Command::Lock => self.lock(ctx).await,
                    Command::Ioctl => self.ioctl(ctx).await,
                    Command::QueryDirectory => self.query_directory(ctx).await,
                    Command::QueryInfo => self.query_info(ctx).await,
                    Command::SetInfo => self.set_info(ctx).await,
                    Command::ChangeNotify => self.change_notify(ctx).await,
                    // Neither an oplock (24) nor a lease (36) break acknowledgment
                    // (MS-SMB2 3.3.5.22).
                    Command::OplockBreak if !fixed_body_ok(ctx.msg, &[24, 36]) => {
                        Err(NtStatus::INVALID_PARAMETER)
                    }
                    Command::OplockBreak => self.oplock_break(ctx),
                    Command::Negotiate
                    | Command::SessionSetup
                    | Command::Echo
                    | Command::Cancel => Err(NtStatus::INVALID_PARAMETER),
                }
            }
        }
    }

    /// The valid session a request names (USER_SESSION_DELETED otherwise).
    pub fn session_for(&self, ctx: &Ctx<'_>) -> Result<&Session, NtStatus> {
        match self.sessions.get(&ctx.hdr.session_id) {
            Some(s) if s.is_valid() => Ok(s),
            Some(_) => Err(NtStatus::USER_SESSION_DELETED),
            None => Err(NtStatus::USER_SESSION_DELETED),
        }
    }

    /// Closes every open and session when the connection ends; durable
    /// opens are kept for a reconnect instead (MS-SMB2 3.3.7.1).
    async fn teardown(&mut self) {
        self.pending.abort_all();
        self.disconnect_opens_where(|_| true).await;
        self.st.broker.unregister_break_sink(self.conn_id);
        self.pipes.clear();
        for sid in self.sessions.keys() {
            self.st.unregister_session(*sid);
        }
        self.sessions.clear();
        for (sid, c) in self.channels.drain() {
            if c.key().is_some() {
                self.st.remove_channel(sid, self.conn_id);
                info!(
                    sid,
                    "channel closed; the session stays on its other connections"
                );
            }
        }
    }

    /// Deletes a session with its opens and pipes (failed reauthentication,
    /// reconnect). With `keep_durable` (a reconnect), durable opens are
    /// disconnected rather than closed.
    pub async fn drop_session(&mut self, sid: u64, keep_durable: bool) {
        if keep_durable {
            self.disconnect_opens_where(|o| o.session_id == sid).await;
        } else {
            self.close_opens_where(|o| o.session_id == sid).await;
        }
        self.close_pipes(sid, None);
        self.sessions.remove(&sid);
        self.st.unregister_session(sid);
    }

    /// Checks the credit charge of a request moving `payload` bytes.
    pub fn check_charge(&self, hdr: &Header, payload: u64) -> Result<(), NtStatus> {
        if self.neg.dialect >= 0x0210
            && self.neg.server_caps & crate::wire::negotiate::GLOBAL_CAP_LARGE_MTU != 0
        {
            let need = credits::required_charge(payload);
            if hdr.credit_charge.max(1) < need {
                return Err(NtStatus::INVALID_PARAMETER);
            }
        }
        Ok(())
    }
}

/// A reply with `status` and the SMB2 ERROR body.
pub fn error_reply(status: NtStatus) -> Reply {
    let mut b = Reply::buf();
    error_body(&mut b);
    Reply { status, buf: b }
}

/// Writes the 9-byte SMB2 ERROR response body.
pub fn error_body(b: &mut BytesMut) {
    b.put_u16_le(9);
    b.put_u8(0);
    b.put_u8(0);
    b.put_u32_le(0);
    b.put_u8(0);
}

/// Session setup and tree connect handlers leave the id they allocated in the
/// placeholder header (SessionId at 40, TreeId at 36) for the header builder.
fn hint(buf: &BytesMut, off: usize, len: usize) -> Option<u64> {
    let b = buf.get(off..off + len)?;
    let mut v = [0u8; 8];
    v[..len].copy_from_slice(b);
    let v = u64::from_le_bytes(v);
    (v != 0).then_some(v)
}

/// The SessionId the response carries.
fn reply_session_id(req: &Header, reply: &Reply) -> u64 {
    if req.cmd() == Some(Command::SessionSetup) {
        hint(&reply.buf, offsets::SESSION_ID, 8).unwrap_or(req.session_id)
    } else {
        req.session_id
    }
}

/// The TreeId the response carries.
fn reply_tree_id(req: &Header, reply: &Reply) -> u32 {
    if req.cmd() == Some(Command::TreeConnect) && reply.status.is_success() {
        hint(&reply.buf, TREE_ID_OFFSET, 4).map_or(req.tree_id(), |t| t as u32)
    } else {
        req.tree_id()
    }
}

/// True if the body of `msg` has one of the fixed StructureSizes in `sizes` and is
/// at least that long (for handlers that decode nothing else).
fn fixed_body_ok(msg: &[u8], sizes: &[u16]) -> bool {
    let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
    let Some(ss) = body.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
        return false;
    };
    sizes.contains(&ss) && body.len() >= usize::from(ss)
}

/// Reads transport frames and hands them to the request loop; reports the
/// reason the stream ended as its last item, then waits forever (the request
/// loop decides when the connection is over).
///
/// With `gates`, a frame on which the connection may move (see
/// `setup_naming_session`) goes with a gate, and nothing more is read until
/// the request loop has decided.
async fn read_frames<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_frame: Arc<AtomicUsize>,
    tx: mpsc::Sender<Frame>,
    gates: bool,
) {
    let why = loop {
        let mut len_buf = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut len_buf).await {
            break format!("read: {e}");
        }
        let len = match crate::wire::frame::parse_frame_len(len_buf) {
            Ok(l) => l,
            Err(e) => break format!("bad frame header: {e}"),
        };
        let max = max_frame.load(Ordering::Relaxed);
        if len > max {
            warn!(len, max, "frame larger than negotiated maximum");
            break "oversized frame".into();
        }
        if len < 4 {
            break "runt frame".into();
        }
        let mut buf = vec![0u8; len];
        if let Err(e) = rd.read_exact(&mut buf).await {
            break format!("read: {e}");
        }
        let (gate, wait) = if gates && setup_naming_session(&buf).is_some() {
            let (g, w) = oneshot::channel();
            (Some(g), Some(w))
        } else {
            (None, None)
        };
        if tx.send(Ok((buf, gate))).await.is_err() {
            break "request loop gone".into();
        }
        if let Some(w) = wait {
            let _ = w.await;
        }
    };
    let _ = tx.send(Err(why)).await;
    std::future::pending::<()>().await
}

/// Owns the write half: sends each finished frame with its transport header,
/// until every sender is gone (everything queued is flushed first).
/// Returns the write half unless a write failed.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<BytesMut>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Option<W> {
    let mut stopping = false;
    loop {
        let frame = if stopping {
            // The request loop ended: send what is queued, then stop.
            match rx.try_recv() {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
                _ = &mut done => {
                    stopping = true;
                    continue;
                }
            }
        };
        let hdr = crate::wire::frame::frame_header(frame.len());
        if let Err(e) = async {
            wr.write_all(&hdr).await?;
            wr.write_all(&frame).await
        }
        .await
        {
            debug!(error = %e, "write failed");
            return None;
        }
    }
    wr.flush().await.ok()?;
    Some(wr)
}

/// The session a SESSION_SETUP frame (alone or first of a chain, not
/// encrypted) names beyond this connection: the session it binds to, or the
/// PreviousSessionId a new session reconnects.
pub fn setup_naming_session(buf: &[u8]) -> Option<u64> {
    if buf.get(0..4)? != header::PROTOCOL_ID {
        return None;
    }
    let hdr = Header::decode(buf).ok()?;
    if hdr.cmd() != Some(Command::SessionSetup) || hdr.is_response() {
        return None;
    }
    // StructureSize(2) Flags(1) SecurityMode(1) Capabilities(4) Channel(4)
    // SecurityBufferOffset(2) SecurityBufferLength(2) PreviousSessionId(8)
    let body = buf.get(HEADER_LEN..HEADER_LEN + 24)?;
    if u16::from_le_bytes([body[0], body[1]]) != 25 {
        return None;
    }
    let binding = body[2] & crate::wire::session::SESSION_FLAG_BINDING != 0;
    let mut prev = [0u8; 8];
    prev.copy_from_slice(&body[16..24]);
    let prev = u64::from_le_bytes(prev);
    if binding {
        (hdr.session_id != 0).then_some(hdr.session_id)
    } else if hdr.session_id == 0 && prev != 0 {
        Some(prev)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SESSION_SETUP request frame: header, then the 24 fixed body bytes.
    fn setup(sid: u64, flags: u8, previous: u64) -> Vec<u8> {
        let h = Header {
            command: Command::SessionSetup as u16,
            session_id: sid,
            ..Header::default()
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        b.put_u16_le(25);
        b.put_u8(flags);
        b.put_u8(1);
        b.put_u32_le(0);
        b.put_u32_le(0);
        b.put_u16_le(0x58);
        b.put_u16_le(0);
        b.put_u64_le(previous);
        b.to_vec()
    }

    #[test]
    fn setup_naming_session_finds_binding_and_reconnect() {
        assert_eq!(
            setup_naming_session(&setup(0x0100_0002, 1, 0)),
            Some(0x0100_0002)
        );
        assert_eq!(
            setup_naming_session(&setup(0, 1, 0)),
            None,
            "binding to nothing"
        );
        assert_eq!(setup_naming_session(&setup(0, 0, 7)), Some(7), "reconnect");
        assert_eq!(setup_naming_session(&setup(9, 0, 7)), None, "later leg");
        assert_eq!(setup_naming_session(&setup(0, 0, 0)), None);
        let full = setup(5, 1, 0);
        for n in 0..full.len() {
            assert_eq!(setup_naming_session(&full[..n]), None, "prefix {n}");
        }
        let mut other = setup(5, 1, 0);
        other[12] = Command::Create as u8;
        assert_eq!(setup_naming_session(&other), None);
        let mut resp = setup(5, 1, 0);
        resp[16] |= 1; // SERVER_TO_REDIR
        assert_eq!(setup_naming_session(&resp), None);
    }

    fn worker_state(index: u32, workers: usize) -> (tempfile::TempDir, Arc<ServerState>) {
        let d = tempfile::tempdir().unwrap();
        let mut c = crate::config::Config::default();
        c.global.state_directory = d.path().to_path_buf();
        c.global.workers = workers;
        c.shares.clear();
        let mut st = ServerState::new(c).unwrap();
        st.set_worker(index, 0);
        (d, Arc::new(st))
    }

    #[test]
    fn only_a_stateless_connection_moves_to_another_workers_session() {
        let (_d, st) = worker_state(0, 2);
        let peer = "127.0.0.1:1".parse().unwrap();
        let conn = Connection::new(st.clone(), peer, 1);
        let other = 1 << crate::server::state::SID_INDEX_SHIFT | 7;
        assert_eq!(conn.move_target(&setup(other, 1, 0)), Some(other));
        assert_eq!(conn.move_target(&setup(0, 0, other)), Some(other));
        assert_eq!(
            conn.move_target(&setup(7, 1, 0)),
            None,
            "this worker's own id"
        );
        let beyond = 2 << crate::server::state::SID_INDEX_SHIFT | 7;
        assert_eq!(
            conn.move_target(&setup(beyond, 1, 0)),
            None,
            "no such worker"
        );
        let mut busy = Connection::new(st.clone(), peer, 2);
        let ntlm = crate::server::auth::NtlmServer::new(st.target.clone());
        busy.sessions
            .insert(3, Session::new(3, ntlm, PreauthHash::new()));
        assert_eq!(busy.move_target(&setup(other, 1, 0)), None, "has a session");
        let mut big = setup(other, 1, 0);
        big.resize(MAX_MOVED_FRAME + 1, 0);
        assert_eq!(conn.move_target(&big), None, "too large to carry");
        // one worker, or a single process: never
        let (_d1, one) = worker_state(0, 1);
        let c1 = Connection::new(one, peer, 3);
        assert_eq!(c1.move_target(&setup(other, 1, 0)), None);
    }

    #[test]
    fn resumed_connection_keeps_its_negotiated_state() {
        let (_d, st) = worker_state(1, 2);
        let peer = "127.0.0.1:2".parse().unwrap();
        let mut a = Connection::new(st.clone(), peer, 1);
        assert!(a.credits.consume(0, 1));
        a.credits.grant(5);
        a.neg.dialect = 0x0311;
        a.neg.client_guid = [4; 16];
        a.preauth.update(b"negotiate");
        let m = a.departure_state(setup(9, 1, 0));
        let b = Connection::resumed(st.clone(), 2, m.clone()).unwrap();
        assert_eq!(b.neg, a.neg);
        assert_eq!(b.preauth.value(), a.preauth.value());
        assert_eq!(b.credits.to_parts(), a.credits.to_parts());
        assert_eq!(b.first_frame.as_deref(), Some(&setup(9, 1, 0)[..]));
        let mut never = m;
        never.neg.dialect = 0;
        assert!(Connection::resumed(st, 3, never).is_err());
    }

    #[test]
    fn fixed_body_checks_structure_size_and_length() {
        let msg = |body: &[u8]| [&[0u8; HEADER_LEN][..], body].concat();
        assert!(fixed_body_ok(&msg(&[4, 0, 0, 0]), &[4]));
        assert!(!fixed_body_ok(&msg(&[4, 0]), &[4]));
        assert!(!fixed_body_ok(&msg(&[6, 0, 0, 0, 0, 0]), &[4]));
        assert!(!fixed_body_ok(&msg(&[]), &[4]));
        assert!(!fixed_body_ok(&[0u8; 10], &[4]));
        let mut ack = vec![24u8, 0];
        ack.resize(24, 0);
        assert!(fixed_body_ok(&msg(&ack), &[24, 36]));
        assert!(!fixed_body_ok(&msg(&ack[..20]), &[24, 36]));
        ack[0] = 36;
        assert!(!fixed_body_ok(&msg(&ack), &[24, 36]));
        ack.resize(36, 0);
        assert!(fixed_body_ok(&msg(&ack), &[24, 36]));
    }
}
