//! The supervisor: owns the listeners, spawns the workers, hands each
//! accepted connection to one of them, keeps the ClientGUID -> worker table,
//! and restarts a worker that dies.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_seqpacket::UnixSeqpacket;
use tracing::{error, info, warn};

use super::broker_service::{call_sockets, BrokerService};
use super::channel;
use super::proto::{ToSupervisor, ToWorker};
use crate::server::state::{session_origin, SID_GENERATIONS};

/// How to start a worker: this binary with `--worker N` and the same config.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
}

#[derive(Default)]
struct Table {
    /// Control socket of each live worker, by index.
    links: Vec<Option<Arc<UnixSeqpacket>>>,
    pids: Vec<Option<u32>>,
    /// Generation of each worker index: how often it was started, modulo
    /// 16 (session ids carry it, see `state::session_origin`).
    generations: Vec<u8>,
    owners: HashMap<[u8; 16], usize>,
    next: usize,
}

impl Table {
    /// The next live worker, round robin.
    fn pick(&mut self) -> Option<(usize, Arc<UnixSeqpacket>)> {
        let n = self.links.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Some(s) = &self.links[i] {
                self.next = i + 1;
                return Some((i, s.clone()));
            }
        }
        None
    }
}

pub struct Supervisor {
    cmd: WorkerCommand,
    /// The open-file broker of all workers.
    broker: Arc<BrokerService>,
    table: Mutex<Table>,
    /// Set at shutdown: exiting workers are not restarted.
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    pub fn new(cmd: WorkerCommand, workers: usize) -> Arc<Self> {
        let t = Table {
            links: vec![None; workers],
            pids: vec![None; workers],
            generations: vec![0; workers],
            ..Table::default()
        };
        Arc::new(Supervisor {
            cmd,
            broker: BrokerService::new(),
            table: Mutex::new(t),
            stopping: AtomicBool::new(false),
        })
    }

    /// Pids of the running workers (for shutdown and tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.table).pids.iter().flatten().copied().collect()
    }

    /// Starts every worker and keeps restarting them; returns once all are
    /// up for the first time (the caller then accepts).
    pub async fn start_workers(self: &Arc<Self>) -> io::Result<()> {
        let n = lock(&self.table).links.len();
        let mut ready = Vec::new();
        for i in 0..n {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let me = self.clone();
            tokio::spawn(async move { me.keep_worker(i, tx).await });
            ready.push(rx);
        }
        for r in ready {
            r.await
                .map_err(|_| io::Error::other("a worker failed to start"))??;
        }
        Ok(())
    }

    /// Runs worker `i`, restarting it when it exits (with a back-off when it
    /// keeps dying).
    async fn keep_worker(
        self: Arc<Self>,
        i: usize,
        first: tokio::sync::oneshot::Sender<io::Result<()>>,
    ) {
        let mut first = Some(first);
        let mut recent: Vec<Instant> = Vec::new();
        let mut starts: u8 = 0;
        loop {
            let generation = starts % SID_GENERATIONS;
            starts = starts.wrapping_add(1) % SID_GENERATIONS;
            let started = match self.spawn_worker(i) {
                Ok((child, link)) => self
                    .give_broker(i, &link, generation)
                    .await
                    .map(|()| (child, link)),
                Err(e) => Err(e),
            };
            let (mut child, link) = match started {
                Ok(x) => x,
                Err(e) => {
                    error!(worker = i, %e, "cannot start worker");
                    if let Some(f) = first.take() {
                        let _ = f.send(Err(e));
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let pid = child.id();
            {
                let mut t = lock(&self.table);
                t.links[i] = Some(link.clone());
                t.pids[i] = pid;
                t.generations[i] = generation;
            }
            info!(worker = i, pid, generation, "worker started");
            if let Some(f) = first.take() {
                let _ = f.send(Ok(()));
            }
            let reader = self.clone().read_worker(i, link.clone());
            let status = tokio::select! {
                s = child.wait() => s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                () = reader => {
                    // The worker closed its link: it is exiting or wedged.
                    let _ = child.start_kill();
                    child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                }
            };
            {
                let mut t = lock(&self.table);
                t.links[i] = None;
                t.pids[i] = None;
                t.owners.retain(|_, w| *w != i);
            }
            if self.stopping.load(Ordering::SeqCst) {
                info!(worker = i, pid, %status, "worker stopped");
                return;
            }
            warn!(worker = i, pid, %status, "worker exited; restarting it");
            let now = Instant::now();
            recent.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
            recent.push(now);
            let pause = if recent.len() > 5 {
                Duration::from_secs(5)
            } else {
                Duration::from_millis(100)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends a newly started worker its broker socket (its first message).
    async fn give_broker(&self, i: usize, link: &UnixSeqpacket, generation: u8) -> io::Result<()> {
        let ends = self.broker.attach(i, call_sockets())?;
        let mut fds = vec![&ends.events];
        fds.extend(ends.calls.iter());
        channel::send_fds(link, &ToWorker::Broker { generation }.encode(), &fds).await
    }

    /// The live worker that issued session `sid`: its index must be running
    /// in the generation the id carries, or the session died with it.
    fn session_worker(&self, sid: u64) -> Option<(usize, Arc<UnixSeqpacket>)> {
        let (w, generation) = session_origin(sid)?;
        let w = w as usize;
        let t = lock(&self.table);
        if t.generations.get(w) != Some(&generation) {
            return None;
        }
        t.links.get(w)?.clone().map(|s| (w, s))
    }

    fn spawn_worker(&self, i: usize) -> io::Result<(tokio::process::Child, Arc<UnixSeqpacket>)> {
        let (ours, theirs) = UnixSeqpacket::pair()?;
        let mut c = tokio::process::Command::new(&self.cmd.exe);
        c.arg("--worker").arg(i.to_string());
        if let Some(p) = &self.cmd.config {
            c.arg("--config").arg(p);
        }
        // The control socket is the worker's stdin: the one fd a child
        // inherits without unsafe pre-exec code.
        c.stdin(Stdio::from(OwnedFd::from(theirs)));
        c.kill_on_drop(true);
        let child = c.spawn()?;
        Ok((child, Arc::new(ours)))
    }

    /// Serves one worker's requests until its link closes.
    async fn read_worker(self: Arc<Self>, i: usize, link: Arc<UnixSeqpacket>) {
        loop {
            let (msg, mut fds) = match channel::recv(&link).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    warn!(worker = i, %e, "control socket error");
                    return;
                }
            };
            match ToSupervisor::decode(&msg) {
                Ok(ToSupervisor::OwnerOf { req, guid }) => {
                    let here = *lock(&self.table).owners.entry(guid).or_insert(i) == i;
                    let m = ToWorker::Owner { req, here }.encode();
                    if let Err(e) = channel::send(&link, &m, None).await {
                        warn!(worker = i, %e, "cannot answer worker");
                        return;
                    }
                }
                Ok(ToSupervisor::Handoff {
                    guid,
                    peer,
                    smb1_done,
                }) => {
                    let Some(fd) = fds.pop() else {
                        warn!(worker = i, "handoff without a socket");
                        continue;
                    };
                    let target = {
                        let mut t = lock(&self.table);
                        let owner = t.owners.get(&guid).copied();
                        match owner.and_then(|w| t.links[w].clone().map(|s| (w, s))) {
                            Some(x) => Some(x),
                            None => {
                                // The owner died meanwhile: give the GUID to a live worker.
                                let p = t.pick();
                                if let Some((w, _)) = &p {
                                    t.owners.insert(guid, *w);
                                }
                                p
                            }
                        }
                    };
                    let Some((w, sock)) = target else {
                        warn!(%peer, "no live worker for a handed-off connection; dropping it");
                        continue;
                    };
                    let m = ToWorker::Conn { peer, smb1_done }.encode();
                    if let Err(e) = channel::send(&sock, &m, Some(&fd)).await {
                        warn!(worker = w, %e, "cannot pass a connection on");
                    }
                }
                Ok(ToSupervisor::Move { sid, conn }) => {
                    let Some(fd) = fds.pop() else {
                        warn!(worker = i, sid, "move without a socket");
                        continue;
                    };
                    let peer = conn.peer;
                    let (dest, w, owner_gone) = match self.session_worker(sid) {
                        Some((w, s)) => (s, w, false),
                        None => {
                            // Back to the sender, which answers as for an
                            // unknown session.
                            warn!(worker = i, sid, %peer, "no live worker holds the session; the connection goes back");
                            (link.clone(), i, true)
                        }
                    };
                    let m = ToWorker::Moved {
                        sid,
                        owner_gone,
                        conn,
                    };
                    match channel::send(&dest, &m.encode(), Some(&fd)).await {
                        Ok(()) if owner_gone => {}
                        Ok(()) => {
                            info!(from = i, to = w, sid, %peer, "connection moved to the session's worker")
                        }
                        Err(e) if w != i => {
                            warn!(worker = w, %e, sid, "cannot move a connection there; it goes back");
                            let ToWorker::Moved { conn, .. } = m else {
                                continue;
                            };
                            let back = ToWorker::Moved {
                                sid,
                                owner_gone: true,
                                conn,
                            };
                            if let Err(e) = channel::send(&link, &back.encode(), Some(&fd)).await {
                                warn!(worker = i, %e, "cannot return a moved connection; dropping it");
                            }
                        }
                        Err(e) => {
                            warn!(worker = i, %e, "cannot return a moved connection; dropping it")
                        }
                    }
                }
                Ok(ToSupervisor::Release { guid }) => {
                    let mut t = lock(&self.table);
                    if t.owners.get(&guid) == Some(&i) {
                        t.owners.remove(&guid);
                    }
                }
                Err(e) => warn!(worker = i, %e, "bad control message from worker"),
            }
        }
    }

    /// Accepts on every listener and deals connections out round robin.
    pub async fn accept(self: &Arc<Self>, listeners: Vec<TcpListener>) {
        let mut tasks = Vec::new();
        for l in listeners {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((sock, peer)) => {
                            let target = lock(&me.table).pick();
                            let Some((w, link)) = target else {
                                warn!(%peer, "no live worker; dropping the connection");
                                continue;
                            };
                            let fd = match sock.into_std() {
                                Ok(s) => OwnedFd::from(s),
                                Err(e) => {
                                    warn!(%e, "cannot detach an accepted socket");
                                    continue;
                                }
                            };
                            let m = ToWorker::Conn {
                                peer,
                                smb1_done: false,
                            }
                            .encode();
                            if let Err(e) = channel::send(&link, &m, Some(&fd)).await {
                                warn!(worker = w, %e, "cannot pass a connection to a worker");
                            }
                        }
                        Err(e) => {
                            warn!(%e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Asks every worker to stop (SIGTERM) and waits up to `grace` for them.
    pub async fn stop_workers(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let pids = self.worker_pids();
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && pids.iter().any(|p| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), None).is_ok()
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
