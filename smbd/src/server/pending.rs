//! Requests answered asynchronously (MS-SMB2 3.3.4.2): the per-connection
//! table of pending requests and the gate that decides, without races, whether
//! a pending request ends by itself or by CANCEL/close.
//!
//! A request that may block indefinitely gets an interim STATUS_PENDING
//! response with a fresh AsyncId; its continuation runs as a tokio task and
//! reports back to the connection loop, which owns this table and sends the
//! final response. Whoever wins the [`Gate`] (the task finishing, or the
//! connection cancelling) decides the final status, so exactly one final
//! response is sent and a granted byte-range lock is never silently dropped.

use super::conn::Reply;
use crate::wire::{Header, NtStatus};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// What a pending request is waiting for; decides the status it ends with
/// when its handle goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    ChangeNotify,
    Lock,
    /// A CREATE waiting for oplock holders to acknowledge their break.
    OplockBreak,
}

impl PendingKind {
    /// Final status when the open the request waits on is closed.
    pub fn closed_status(self) -> NtStatus {
        match self {
            PendingKind::ChangeNotify => NtStatus::NOTIFY_CLEANUP,
            PendingKind::Lock => NtStatus::RANGE_NOT_LOCKED,
            PendingKind::OplockBreak => NtStatus::CANCELLED,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Waiting,
    Done,
    Cancelled,
}

/// Shared between a pending request's task and the connection: the first of
/// "task commits a result" and "connection cancels" wins.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Mutex<GateState>>);

/// Outcome of [`Gate::attempt`].
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt<R> {
    /// The request was cancelled; the task must stop without side effects.
    Cancelled,
    /// `f` asked to keep waiting.
    Again,
    /// `f` produced the final result; a later cancel is a no-op.
    Done(R),
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (which may take a lock in the broker) unless the request was
    /// cancelled. `Some(r)` from `f` makes `r` the final result.
    pub fn attempt<R>(&self, f: impl FnOnce() -> Option<R>) -> Attempt<R> {
        let mut st = self.state();
        if *st == GateState::Cancelled {
            return Attempt::Cancelled;
        }
        match f() {
            Some(r) => {
                *st = GateState::Done;
                Attempt::Done(r)
            }
            None => Attempt::Again,
        }
    }

    /// Cancels the request; false if its task already committed a result
    /// (the final response then comes from the task).
    pub fn cancel(&self) -> bool {
        let mut st = self.state();
        match *st {
            GateState::Waiting => {
                *st = GateState::Cancelled;
                true
            }
            GateState::Cancelled => true,
            GateState::Done => false,
        }
    }
}

type WorkFuture = Pin<Box<dyn Future<Output = Result<Reply, NtStatus>> + Send>>;

/// The continuation of a request a handler decided to answer asynchronously.
pub struct AsyncWork {
    pub kind: PendingKind,
    /// Volatile FileId of the open the request waits on.
    pub file: Option<u64>,
    pub gate: Gate,
    /// The request message to run again once the task succeeds (its reply
    /// is then ignored): for requests that wait for a condition and then
    /// need the connection's state to finish.
    pub redo: Option<Vec<u8>>,
    /// Behind a mutex only so that the connection (which may hold this
    /// between a handler and the chain loop) stays `Sync`; never contended.
    fut: Mutex<WorkFuture>,
}

impl AsyncWork {
    pub fn new(
        kind: PendingKind,
        file: Option<u64>,
        gate: Gate,
        fut: impl Future<Output = Result<Reply, NtStatus>> + Send + 'static,
    ) -> Self {
        AsyncWork {
            kind,
            file,
            gate,
            redo: None,
            fut: Mutex::new(Box::pin(fut)),
        }
    }

    /// Runs `msg` again when the task succeeds.
    pub fn redo(mut self, msg: Vec<u8>) -> Self {
        self.redo = Some(msg);
        self
    }

    /// The future to run as the request's task.
    pub fn into_future(self) -> WorkFuture {
        self.fut.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// One entry of Connection.AsyncCommandList.
pub struct Pending {
    pub async_id: u64,
    /// The request header; the final response is built from it.
    pub req: Header,
    pub kind: PendingKind,
    pub file: Option<u64>,
    /// Session whose key encrypted the request (the final response is encrypted too).
    pub encrypted: Option<u64>,
    /// Set when the request came through another channel of the session:
    /// the final response goes there.
    pub route: Option<super::channel::Route>,
    pub gate: Gate,
    /// Stops the task once the request was cancelled.
    pub abort: Option<tokio::task::AbortHandle>,
    /// See [`AsyncWork::redo`].
    pub redo: Option<Vec<u8>>,
    /// The rest of the chain this request stopped (it was not the last).
    pub rest: Option<super::conn::ChainRest>,
}

/// Pending requests of one connection, by AsyncId.
#[derive(Default)]
pub struct PendingTable {
    next_id: u64,
    by_async: HashMap<u64, Pending>,
}

impl PendingTable {
    pub fn len(&self) -> usize {
        self.by_async.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_async.is_empty()
    }

    /// A fresh nonzero AsyncId, unique on this connection.
    pub fn next_async_id(&mut self) -> u64 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.by_async.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    pub fn insert(&mut self, p: Pending) {
        self.by_async.insert(p.async_id, p);
    }

    pub fn get(&self, async_id: u64) -> Option<&Pending> {
        self.by_async.get(&async_id)
    }

    pub fn remove(&mut self, async_id: u64) -> Option<Pending> {
        self.by_async.remove(&async_id)
    }

    /// The AsyncId of the pending request with this MessageId (sync
    /// CANCEL), among those that arrived on connection `origin` (None: this
    /// one); message ids are per connection.
    pub fn by_message_id(&self, mid: u64, origin: Option<u64>) -> Option<u64> {
        self.by_async
            .values()
            .find(|p| p.req.message_id == mid && p.route.as_ref().map(|r| r.conn_id) == origin)
            .map(|p| p.async_id)
    }

    /// AsyncIds of the pending requests matching `pred`.
    pub fn ids_where(&self, pred: impl Fn(&Pending) -> bool) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .by_async
            .values()
            .filter(|p| pred(p))
            .map(|p| p.async_id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Empties the table, stopping every task (connection teardown).
    pub fn abort_all(&mut self) {
        for (_, p) in self.by_async.drain() {
            p.gate.cancel();
            if let Some(a) = p.abort {
                a.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(t: &mut PendingTable, mid: u64, file: u64) -> u64 {
        let id = t.next_async_id();
        t.insert(Pending {
            async_id: id,
            req: Header {
                message_id: mid,
                ..Header::default()
            },
            kind: PendingKind::Lock,
            file: Some(file),
            encrypted: None,
            route: None,
            gate: Gate::default(),
            abort: None,
            redo: None,
            rest: None,
        });
        id
    }

    #[test]
    fn ids_unique_nonzero_and_lookups() {
        let mut t = PendingTable::default();
        let a = pending(&mut t, 10, 1);
        let b = pending(&mut t, 11, 2);
        let c = pending(&mut t, 12, 1);
        assert!(a != 0 && a != b && b != c && a != c);
        assert_eq!(t.by_message_id(11, None), Some(b));
        assert_eq!(t.by_message_id(99, None), None);
        assert_eq!(t.by_message_id(11, Some(7)), None, "another channel's ids");
        assert_eq!(t.ids_where(|p| p.file == Some(1)), vec![a, c]);
        assert!(t.remove(b).is_some());
        assert!(t.remove(b).is_none());
        assert_eq!(t.len(), 2);
        t.abort_all();
        assert!(t.is_empty());
    }

    #[test]
    fn async_id_skips_zero_and_live_ids() {
        let mut t = PendingTable {
            next_id: u64::MAX - 1,
            ..Default::default()
        };
        let a = pending(&mut t, 1, 1);
        assert_eq!(a, u64::MAX);
        assert_eq!(t.next_async_id(), 1, "wraps past zero");
    }

    #[test]
    fn gate_first_wins() {
        let g = Gate::default();
        assert_eq!(g.attempt(|| None::<u8>), Attempt::Again);
        assert!(g.cancel());
        let mut ran = false;
        assert_eq!(
            g.attempt(|| {
                ran = true;
                Some(1)
            }),
            Attempt::Cancelled
        );
        assert!(!ran, "a cancelled request must not take effect");

        let g = Gate::default();
        assert_eq!(g.attempt(|| Some(7)), Attempt::Done(7));
        assert!(!g.cancel(), "completion already committed");
    }

    #[test]
    fn closed_status_by_kind() {
        assert_eq!(
            PendingKind::ChangeNotify.closed_status(),
            NtStatus::NOTIFY_CLEANUP
        );
        assert_eq!(
            PendingKind::Lock.closed_status(),
            NtStatus::RANGE_NOT_LOCKED
        );
        assert_eq!(
            PendingKind::OplockBreak.closed_status(),
            NtStatus::CANCELLED
        );
    }
}
