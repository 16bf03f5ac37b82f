//! The worker's side of the handle keeper (docs/architecture.md section 9):
//! a durable open's fd is deposited with the keeper when durability is
//! granted, its disconnects, reconnects and close are reported, and a
//! reconnect this process does not know (the worker or smbd restarted)
//! fetches the very same open file description back from the keeper.
//!
//! The keeper is an optimisation of availability, never a requirement: when
//! it is not configured or not reachable, durable handles live only in the
//! worker, and every keeper failure is logged and otherwise ignored.

use holdfast_keeper_proto::{Client, ClientError, FetchRequest, Record};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// How long one keeper request may take before the worker gives up on it
/// (and on the connection).
const KEEPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One connection to the keeper, opened on first use and again after it
/// breaks. Requests are serialised (the protocol answers in order).
pub struct KeeperLink {
    path: PathBuf,
    name: String,
    client: Mutex<Option<Client>>,
}

impl KeeperLink {
    pub fn new(path: PathBuf, name: String) -> KeeperLink {
        KeeperLink {
            path,
            name,
            client: Mutex::new(None),
        }
    }

    /// Runs one request, connecting first if needed. An I/O or protocol
    /// failure drops the connection so the next request starts afresh (the
    /// keeper then marks this worker's handles disconnected, which a later
    /// Reconnected repairs).
    async fn call<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let timed_out = || ClientError::Protocol(format!("no answer within {KEEPER_TIMEOUT:?}"));
        let mut guard = self.client.lock().await;
        if guard.is_none() {
            let c = tokio::time::timeout(KEEPER_TIMEOUT, Client::connect(&self.path, &self.name))
                .await
                .map_err(|_| timed_out())??;
            debug!(
                keeper_pid = c.keeper_pid(),
                "connected to the handle keeper"
            );
            *guard = Some(c);
        }
        let Some(c) = guard.as_mut() else {
            return Err(ClientError::Protocol("no keeper connection".into()));
        };
        // A keeper that hangs must not hang the SMB requests waiting on it.
        let r = tokio::time::timeout(KEEPER_TIMEOUT, f(c))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if let Err(e) = &r {
            if e.code().is_none() {
                warn!(what, error = %e, "handle keeper connection failed; reconnecting next time");
                *guard = None;
            }
        }
        r
    }

    /// Deposits a durable open; returns the keeper's record id.
    pub async fn deposit(&self, rec: &Record, fd: BorrowedFd<'_>) -> Option<u64> {
        match self
            .call("deposit", async |c| c.deposit(rec, fd).await)
            .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(error = %e, path = %rec.path, "handle keeper deposit failed; the handle is durable in this worker only");
                None
            }
        }
    }

    pub async fn disconnect(&self, id: u64) {
        self.notify("disconnect", id, async |c| c.disconnect(id, 0).await)
            .await
    }

    pub async fn reconnected(&self, id: u64) {
        self.notify("reconnected", id, async |c| c.reconnected(id).await)
            .await
    }

    pub async fn close(&self, id: u64) {
        self.notify("close", id, async |c| c.close(id).await).await
    }

    pub async fn purge(&self, id: u64, reason: &str) {
        self.notify("purge", id, async |c| c.purge(id, reason).await)
            .await
    }

    async fn notify(
        &self,
        what: &str,
        id: u64,
        f: impl AsyncFnOnce(&mut Client) -> Result<(), ClientError>,
    ) {
        if let Err(e) = self.call(what, f).await {
            warn!(what, id, error = %e, "handle keeper request failed");
        }
    }

    /// Asks the keeper for a disconnected handle this process does not know.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<(Record, OwnedFd), ClientError> {
        self.call("fetch", async |c| c.fetch(req).await).await
    }
}
