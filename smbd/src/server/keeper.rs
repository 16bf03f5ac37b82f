//! The worker's side of the handle keeper (docs/architecture.md section 9):
//! a durable open's fd is deposited with the keeper when durability is
//! granted, its disconnects, reconnects and close are reported, and a
//! reconnect this process does not know (the worker or smbd restarted)
//! fetches the very same open file description back from the keeper.
//!
//! The keeper is an optimisation of availability, never a requirement: when
//! it is not configured or not reachable, durable handles live only in the
//! worker, and every keeper failure is logged and otherwise ignored.

use super::state::ServerState;
use holdfast_keeper_proto::{Client, ClientError, ErrorCode, FetchRequest, Record};
use std::collections::HashSet;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// How long one keeper request may take before the worker gives up on it
/// (and on the connection).
const KEEPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn timed_out() -> ClientError {
    ClientError::Protocol(format!("no answer within {KEEPER_TIMEOUT:?}"))
}

/// One connection to the keeper, opened on first use and again after it
/// breaks. Requests are serialised (the protocol answers in order).
pub struct KeeperLink {
    path: PathBuf,
    name: String,
    client: Mutex<Link>,
    watching: AtomicBool,
}

#[derive(Default)]
struct Link {
    client: Option<Client>,
    /// Keeper record ids this process holds connected (deposited or
    /// reconnected, not yet disconnected or closed). A new keeper connection
    /// claims them again: the keeper marks a dead connection's handles (and,
    /// after a restart, all restored ones) disconnected and runs their timer.
    owned: HashSet<u64>,
    /// A connection existed before, so the next one is a reconnect.
    was_connected: bool,
}

impl KeeperLink {
    pub fn new(path: PathBuf, name: String) -> KeeperLink {
        KeeperLink {
            path,
            name,
            client: Mutex::new(Link::default()),
            watching: AtomicBool::new(false),
        }
    }

    /// Connects if needed; on a reconnect, claims the owned handles again.
    /// Returns whether the connection was made by this call.
    async fn ensure(&self, link: &mut Link) -> Result<bool, ClientError> {
        if link.client.is_some() {
            return Ok(false);
        }
        let mut c = tokio::time::timeout(KEEPER_TIMEOUT, Client::connect(&self.path, &self.name))
            .await
            .map_err(|_| timed_out())??;
        debug!(
            keeper_pid = c.keeper_pid(),
            fd_store = c.fd_store(),
            "connected to the handle keeper"
        );
        if link.was_connected && !link.owned.is_empty() {
            let mut ids: Vec<u64> = link.owned.iter().copied().collect();
            ids.sort_unstable();
            for id in ids {
                match tokio::time::timeout(KEEPER_TIMEOUT, c.reconnected(id)).await {
                    Ok(Ok(())) => info!(id, "kept handle claimed again after a keeper reconnect"),
                    Ok(Err(e)) if e.code().is_some() => {
                        warn!(id, error = %e, "the keeper no longer keeps this handle; it is durable in this worker only");
                        link.owned.remove(&id);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(timed_out()),
                }
            }
        }
        link.client = Some(c);
        link.was_connected = true;
        Ok(true)
    }

    /// Runs one request, connecting first if needed. A connection that was
    /// already open may have died with a keeper restart unnoticed: its I/O
    /// failure is retried once on a fresh connection. Any other I/O or
    /// protocol failure drops the connection so the next request starts
    /// afresh.
    async fn call(&self, op: Op<'_>) -> Result<Done, ClientError> {
        let mut link = self.client.lock().await;
        let mut fresh = self.ensure(&mut link).await?;
        loop {
            let Some(c) = link.client.as_mut() else {
                return Err(ClientError::Protocol("no keeper connection".into()));
            };
            // A keeper that hangs must not hang the SMB requests waiting on it.
            let r = tokio::time::timeout(KEEPER_TIMEOUT, op.run(c))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            if let Err(e) = &r {
                if e.code().is_none() {
                    link.client = None;
                    if !fresh && matches!(e, ClientError::Io(_)) {
                        info!(what = op.name(), error = %e, "handle keeper connection lost (keeper restarted?); retrying on a new one");
                        fresh = self.ensure(&mut link).await?;
                        continue;
                    }
                    warn!(what = op.name(), error = %e, "handle keeper connection failed; reconnecting next time");
                }
            }
            return r;
        }
    }

    async fn own(&self, id: u64, owned: bool) {
        let mut link = self.client.lock().await;
        if owned {
            link.owned.insert(id);
        } else {
            link.owned.remove(&id);
        }
    }

    /// Deposits a durable open; returns the keeper's record id.
    pub async fn deposit(&self, rec: &Record, fd: BorrowedFd<'_>) -> Option<u64> {
        match self.call(Op::Deposit(rec, fd)).await {
            Ok(Done::Id(id)) => {
                self.own(id, true).await;
                Some(id)
            }
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, path = %rec.path, "handle keeper deposit failed; the handle is durable in this worker only");
                None
            }
        }
    }

    pub async fn disconnect(&self, id: u64) {
        self.own(id, false).await;
        self.notify(id, Op::Disconnect(id)).await
    }

    /// Claims kept handle `id` for this worker again. False only when the
    /// keeper answers that it no longer keeps it (purged, evicted or timed
    /// out since a Fetch).
    pub async fn reconnected(&self, id: u64) -> bool {
        self.own(id, true).await;
        match self.call(Op::Reconnected(id)).await {
            Ok(_) => true,
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                self.own(id, false).await;
                info!(id, "the keeper purged this handle meanwhile");
                false
            }
            Err(e) => {
                warn!(what = "reconnected", id, error = %e, "handle keeper request failed");
                true
            }
        }
    }

    /// Starts (once) a task that keeps a Watch connection to the keeper and
    /// passes its lease-break notices to [`super::kernel_oplock::on_keeper_notice`]:
    /// the keeper holds the kernel leases of disconnected handles and hears
    /// their breaks.
    pub fn start_watch(&self, st: &Arc<ServerState>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (path, name) = (self.path.clone(), self.name.clone());
        let st: Weak<ServerState> = Arc::downgrade(st);
        tokio::spawn(async move {
            loop {
                let watcher = match Client::connect(&path, &name).await {
                    Ok(c) => c.watch().await,
                    Err(e) => Err(e),
                };
                match watcher {
                    Ok(mut w) => {
                        debug!("watching the keeper's lease breaks");
                        loop {
                            match w.next().await {
                                Ok(n) => {
                                    let Some(st) = st.upgrade() else { return };
                                    super::kernel_oplock::on_keeper_notice(&st, n).await;
                                }
                                Err(e) => {
                                    debug!(error = %e, "keeper watch connection ended");
                                    break;
                                }
                            }
                        }
                    }
                    Err(ClientError::Protocol(e)) => {
                        warn!(error = %e, "the keeper cannot report lease breaks of kept handles");
                        return;
                    }
                    Err(e) => debug!(error = %e, "keeper watch connection failed"),
                }
                if st.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    pub async fn close(&self, id: u64) {
        self.own(id, false).await;
        self.notify(id, Op::Close(id)).await
    }

    pub async fn purge(&self, id: u64, reason: &str) {
        self.own(id, false).await;
        self.notify(id, Op::Purge(id, reason)).await
    }

    async fn notify(&self, id: u64, op: Op<'_>) {
        let what = op.name();
        if let Err(e) = self.call(op).await {
            warn!(what, id, error = %e, "handle keeper request failed");
        }
    }

    /// Asks the keeper for a disconnected handle this process does not know.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<(Record, OwnedFd), ClientError> {
        match self.call(Op::Fetch(req)).await? {
            Done::Fetched(rec, fd) => Ok((*rec, fd)),
            _ => Err(ClientError::Protocol("fetch: unexpected result".into())),
        }
    }
}

/// One keeper request, kept as data so a request that met a dead connection
/// can be sent again on a new one.
#[derive(Clone, Copy)]
enum Op<'a> {
    Deposit(&'a Record, BorrowedFd<'a>),
    Fetch(&'a FetchRequest),
    Disconnect(u64),
    Reconnected(u64),
    Close(u64),
    Purge(u64, &'a str),
}

/// What a request returned.
enum Done {
    Id(u64),
    Fetched(Box<Record>, OwnedFd),
    Unit,
}

impl Op<'_> {
    fn name(&self) -> &'static str {
        match self {
            Op::Deposit(..) => "deposit",
            Op::Fetch(_) => "fetch",
            Op::Disconnect(_) => "disconnect",
            Op::Reconnected(_) => "reconnected",
            Op::Close(_) => "close",
            Op::Purge(..) => "purge",
        }
    }

    async fn run(&self, c: &mut Client) -> Result<Done, ClientError> {
        Ok(match *self {
            Op::Deposit(rec, fd) => Done::Id(c.deposit(rec, fd).await?),
            Op::Fetch(req) => {
                let (rec, fd) = c.fetch(req).await?;
                Done::Fetched(Box::new(rec), fd)
            }
            Op::Disconnect(id) => {
                c.disconnect(id, 0).await?;
                Done::Unit
            }
            Op::Reconnected(id) => {
                c.reconnected(id).await?;
                Done::Unit
            }
            Op::Close(id) => {
                c.close(id).await?;
                Done::Unit
            }
            Op::Purge(id, reason) => {
                c.purge(id, reason).await?;
                Done::Unit
            }
        })
    }
}
