//! The worker side: takes connections from the supervisor, routes each to
//! the worker that owns its ClientGUID, and serves the ones it keeps.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_seqpacket::UnixSeqpacket;
use tracing::{info, warn, Instrument};

use super::broker_service::WorkerEnds;
use super::channel;
use super::proto::{ToSupervisor, ToWorker};
use crate::server::conn::{Connection, Departure};
use crate::server::ServerState;
use crate::wire::header::{PROTOCOL_ID, SMB1_PROTOCOL_ID};
use crate::wire::{Command, HEADER_LEN};

/// How long a client may take to send its first NEGOTIATE before the worker
/// stops waiting to route it (the connection is then served where it is).
const ROUTE_WAIT: Duration = Duration::from_secs(20);

/// First frames longer than this are not peeked at (a NEGOTIATE is small).
const MAX_ROUTED_FRAME: usize = 64 * 1024;

/// A worker's link to its supervisor.
pub struct WorkerLink {
    sock: UnixSeqpacket,
    next_req: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    /// Live connections per ClientGUID this worker serves.
    guids: Mutex<HashMap<[u8; 16], usize>>,
    /// How often the supervisor started this worker index (modulo 16).
    generation: AtomicU8,
}

impl WorkerLink {
    pub fn new(sock: UnixSeqpacket) -> Arc<Self> {
        Arc::new(WorkerLink {
            sock,
            next_req: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            guids: Mutex::new(HashMap::new()),
            generation: AtomicU8::new(0),
        })
    }

    /// This worker's generation, as the supervisor's first message said.
    pub fn generation(&self) -> u8 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Waits for the supervisor's first message, which carries this
    /// worker's ends of its broker link (event socket, then call sockets).
    pub async fn recv_broker(&self) -> io::Result<WorkerEnds> {
        let Some((msg, mut fds)) = channel::recv(&self.sock).await? else {
            return Err(io::Error::other("supervisor gone before the broker link"));
        };
        match ToWorker::decode(&msg) {
            Ok(ToWorker::Broker { generation }) if fds.len() >= 2 => {
                self.generation.store(generation, Ordering::Relaxed);
                let events = fds.remove(0);
                Ok(WorkerEnds { events, calls: fds })
            }
            m => Err(io::Error::other(format!(
                "expected the broker sockets first, got {m:?} with {} fds",
                fds.len()
            ))),
        }
    }

    /// True when this worker owns `guid` (it is registered as owner if
    /// nobody was); counts one more live connection for it then.
    async fn claim(&self, guid: [u8; 16]) -> io::Result<bool> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(req, tx);
        let msg = ToSupervisor::OwnerOf { req, guid }.encode();
        if let Err(e) = channel::send(&self.sock, &msg, None).await {
            lock(&self.waiting).remove(&req);
            return Err(e);
        }
        let here = rx.await.map_err(|_| io::Error::other("supervisor gone"))?;
        if here {
            *lock(&self.guids).entry(guid).or_insert(0) += 1;
        }
        Ok(here)
    }

    /// The last connection of `guid` here closed: the GUID is released,
    /// but only once no disconnected durable open of it waits in this
    /// worker (its reconnect must be routed here).
    async fn conn_closed(self: Arc<Self>, st: &Arc<ServerState>, guid: [u8; 16]) {
        if !self.conn_gone(guid) {
            return;
        }
        if st.durable.holds_client(&guid) {
            let st = st.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if lock(&self.guids).contains_key(&guid) {
                        return; // connected again; its close releases it
                    }
                    if !st.durable.holds_client(&guid) {
                        self.release(guid).await;
                        return;
                    }
                }
            });
            return;
        }
        self.release(guid).await;
    }

    async fn release(&self, guid: [u8; 16]) {
        let msg = ToSupervisor::Release { guid }.encode();
        let _ = channel::send(&self.sock, &msg, None).await;
    }

    /// Counts one connection of `guid` less; true if it was the last.
    fn conn_gone(&self, guid: [u8; 16]) -> bool {
        let last = {
            let mut g = lock(&self.guids);
            match g.get_mut(&guid) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    g.remove(&guid);
                    true
                }
                None => false,
            }
        };
        last
    }

    async fn hand_off(
        &self,
        sock: TcpStream,
        guid: [u8; 16],
        peer: SocketAddr,
        smb1_done: bool,
    ) -> io::Result<()> {
        let fd = OwnedFd::from(sock.into_std()?);
        let msg = ToSupervisor::Handoff {
            guid,
            peer,
            smb1_done,
        }
        .encode();
        channel::send(&self.sock, &msg, Some(&fd)).await
    }

    /// Passes a connection leaving for another worker to the supervisor.
    async fn send_move(&self, d: Departure<TcpStream>) -> io::Result<()> {
        let fd = OwnedFd::from(d.sock.into_std()?);
        let msg = ToSupervisor::Move {
            sid: d.sid,
            conn: Box::new(d.conn),
        }
        .encode();
        channel::send(&self.sock, &msg, Some(&fd)).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the worker until the supervisor closes its end of the link.
pub async fn run(st: Arc<ServerState>, link: Arc<WorkerLink>, index: u32) {
    let ids = AtomicU64::new(1);
    info!(index, "worker ready");
    loop {
        let (msg, mut fds) = match channel::recv(&link.sock).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                info!("supervisor closed the control socket; worker exiting");
                return;
            }
            Err(e) => {
                warn!(%e, "control socket error; worker exiting");
                return;
            }
        };
        match ToWorker::decode(&msg) {
            Ok(ToWorker::Owner { req, here }) => {
                if let Some(tx) = lock(&link.waiting).remove(&req) {
                    let _ = tx.send(here);
                }
            }
            Ok(ToWorker::Conn { peer, smb1_done }) => {
                let Some(fd) = fds.pop() else {
                    warn!("connection message without a socket");
                    continue;
                };
                let sock = match tcp_from_fd(fd) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(%e, "cannot adopt a passed connection");
                        continue;
                    }
                };
                // Connection ids are unique across workers.
                let id = (u64::from(index) + 1) << 48 | ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(
                    st.clone(),
                    Some(link.clone()),
                    sock,
                    peer,
                    id,
                    smb1_done,
                ));
            }
            Ok(ToWorker::Moved {
                sid,
                owner_gone,
                conn,
            }) => {
                let Some(fd) = fds.pop() else {
                    warn!(sid, "moved connection without a socket");
                    continue;
                };
                let sock = match tcp_from_fd(fd) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(%e, "cannot adopt a moved connection");
                        continue;
                    }
                };
                if owner_gone {
                    warn!(
                        sid,
                        peer = %conn.peer,
                        "the worker that held the session is gone; answering as for an unknown session"
                    );
                }
                let id = (u64::from(index) + 1) << 48 | ids.fetch_add(1, Ordering::Relaxed);
                match Connection::resumed(st.clone(), id, *conn) {
                    // Not counted toward its ClientGUID here: that GUID's
                    // owner is the worker it came from (or nobody).
                    Ok(c) => {
                        tokio::spawn(finish(st.clone(), Some(link.clone()), c, sock, None));
                    }
                    Err(e) => warn!(%e, sid, "cannot resume a moved connection; dropping it"),
                }
            }
            Ok(ToWorker::Broker { .. }) => warn!("unexpected second broker socket ignored"),
            Err(e) => warn!(%e, "bad control message"),
        }
    }
}

fn tcp_from_fd(fd: OwnedFd) -> io::Result<TcpStream> {
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true)?;
    let _ = s.set_nodelay(true);
    TcpStream::from_std(s)
}

enum Route {
    /// Serve it here; `Some(guid)` when it counts toward that GUID.
    Keep(TcpStream, Option<[u8; 16]>),
    /// Passed to another worker, or dropped.
    Gone,
}

/// Serves one connection, first routing it by ClientGUID when there is a link.
pub async fn serve(
    st: Arc<ServerState>,
    link: Option<Arc<WorkerLink>>,
    sock: TcpStream,
    peer: SocketAddr,
    id: u64,
    smb1_done: bool,
) {
    let mut conn = Connection::new(st.clone(), peer, id);
    if smb1_done {
        conn.resume_after_smb1_upgrade();
    }
    let (sock, guid) = match &link {
        Some(l) => {
            let span = tracing::info_span!("route", id, peer = %peer);
            match route(&mut conn, sock, smb1_done, l).instrument(span).await {
                Route::Keep(s, g) => (s, g),
                Route::Gone => return,
            }
        }
        None => (sock, None),
    };
    finish(st, link, conn, sock, guid).await;
}

/// Serves a connection until it ends or moves to another worker; `guid`:
/// the ClientGUID it counts toward here.
async fn finish(
    st: Arc<ServerState>,
    link: Option<Arc<WorkerLink>>,
    conn: Connection,
    sock: TcpStream,
    guid: Option<[u8; 16]>,
) {
    let departure = conn.run_movable(sock).await;
    if let (Some(l), Some(d)) = (&link, departure) {
        let (sid, peer) = (d.sid, d.conn.peer);
        match l.send_move(d).await {
            Ok(()) => info!(sid, %peer, "connection moved toward the session's worker"),
            Err(e) => warn!(%e, sid, %peer, "cannot move a connection; dropping it"),
        }
    }
    if let (Some(l), Some(g)) = (link, guid) {
        l.conn_closed(&st, g).await;
    }
}

/// Looks at the first SMB2 NEGOTIATE without consuming it (answering an
/// SMB1 multi-protocol negotiate first if one comes), and hands the socket
/// to the GUID's owner when that is another worker.
async fn route(
    conn: &mut Connection,
    mut sock: TcpStream,
    mut smb1_done: bool,
    link: &WorkerLink,
) -> Route {
    // Never wait longer than the unauthenticated limit allows the connection.
    let limit = conn.st.config.global.limits.unauth_timeout_secs;
    let wait = if limit == 0 {
        ROUTE_WAIT
    } else {
        ROUTE_WAIT.min(Duration::from_secs(limit))
    };
    let deadline = conn.started + wait;
    loop {
        // Anything odd (short, oversized) is left to the connection's own checks.
        let Ok(len) = peek_exact(&sock, 4, deadline).await else {
            return Route::Keep(sock, None);
        };
        let frame_len = u32::from_be_bytes([0, len[1], len[2], len[3]]) as usize;
        if len[0] != 0 || !(4..=MAX_ROUTED_FRAME).contains(&frame_len) {
            return Route::Keep(sock, None);
        }
        let Ok(head) = peek_exact(&sock, 8, deadline).await else {
            return Route::Keep(sock, None);
        };
        if head[4..8] == SMB1_PROTOCOL_ID && !smb1_done {
            match answer_smb1(conn, &mut sock).await {
                Ok(true) => {
                    smb1_done = true;
                    continue;
                }
                // 2.0.2 chosen: no ClientGUID to route by.
                Ok(false) => return Route::Keep(sock, None),
                Err(e) => {
                    info!(%e, "SMB1 negotiate failed during routing");
                    return Route::Gone;
                }
            }
        }
        if head[4..8] != PROTOCOL_ID {
            return Route::Keep(sock, None);
        }
        let Some(guid) = peek_negotiate_guid(&sock, 4 + frame_len, deadline).await else {
            return Route::Keep(sock, None);
        };
        match link.claim(guid).await {
            Ok(true) => return Route::Keep(sock, Some(guid)),
            Ok(false) => {}
            Err(e) => {
                warn!(%e, "cannot ask the supervisor; serving here");
                return Route::Keep(sock, None);
            }
        }
        return match link.hand_off(sock, guid, conn.peer, smb1_done).await {
            Ok(()) => {
                info!(guid = %hex(&guid), "connection handed to the ClientGUID's worker");
                Route::Gone
            }
            Err(e) => {
                warn!(%e, "handoff failed; dropping the connection");
                Route::Gone
            }
        };
    }
}

/// Reads one whole SMB1 frame, answers it; Ok(true) when the client was
/// told to go on with SMB2 NEGOTIATE (wildcard dialect).
async fn answer_smb1(conn: &mut Connection, sock: &mut TcpStream) -> io::Result<bool> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len).await?;
    let n =
        crate::wire::frame::parse_frame_len(len).map_err(|e| io::Error::other(e.to_string()))?;
    if !(4..=64 * 1024).contains(&n) {
        return Err(io::Error::other("bad SMB1 frame length"));
    }
    let mut buf = vec![0u8; n];
    sock.read_exact(&mut buf).await?;
    let resp = conn.smb1_negotiate(&buf).map_err(io::Error::other)?;
    sock.write_all(&crate::wire::frame::frame_header(resp.len()))
        .await?;
    sock.write_all(&resp).await?;
    Ok(conn.neg.dialect == 0)
}

/// The ClientGUID of a peeked SMB2 NEGOTIATE, if it offers a dialect that
/// has one (2.1 or later). `frame_end` bounds the peek to the first frame,
/// so a short (malformed) message is never waited on.
async fn peek_negotiate_guid(
    sock: &TcpStream,
    frame_end: usize,
    deadline: Instant,
) -> Option<[u8; 16]> {
    // transport header, SMB2 header, then StructureSize(2) DialectCount(2)
    // SecurityMode(2) Reserved(2) Capabilities(4) ClientGuid(16) ...
    const BODY: usize = 4 + HEADER_LEN;
    if frame_end < BODY + 36 {
        return None;
    }
    let fixed = peek_exact(sock, BODY + 36, deadline).await.ok()?;
    let cmd = u16::from_le_bytes([fixed[4 + 12], fixed[4 + 13]]);
    if cmd != Command::Negotiate as u16 {
        return None;
    }
    let count = u16::from_le_bytes([fixed[BODY + 2], fixed[BODY + 3]]) as usize;
    if count == 0 || count > 64 || frame_end < BODY + 36 + 2 * count {
        return None;
    }
    let all = peek_exact(sock, BODY + 36 + 2 * count, deadline)
        .await
        .ok()?;
    let dialects = &all[BODY + 36..];
    let modern = dialects
        .chunks_exact(2)
        .any(|d| u16::from_le_bytes([d[0], d[1]]) > 0x0202);
    if !modern {
        return None;
    }
    let mut g = [0u8; 16];
    g.copy_from_slice(&fixed[BODY + 12..BODY + 28]);
    Some(g)
}

/// Peeks `n` bytes, waiting for more to arrive, without consuming any.
async fn peek_exact(sock: &TcpStream, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    loop {
        let got = tokio::time::timeout_at(deadline.into(), sock.peek(&mut buf))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if got >= n {
            return Ok(buf);
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Part of the message is here; wait briefly for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
