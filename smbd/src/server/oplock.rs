//! SMB2 oplocks on the connection side: the oplock a CREATE asks for, the
//! wait of a CREATE behind an oplock break (MS-SMB2 3.3.5.9: it goes async
//! and is run again once the holders answered), break notifications
//! (3.3.4.6) and acknowledgments (3.3.5.22.1). The rules are in
//! `fsa::oplock`, the state in the broker.

use super::conn::{error_reply, Connection, Ctx, Reply};
use super::pending::{AsyncWork, Attempt, Gate, PendingKind};
use super::state::Share;
use super::workers::BrokerHandle;
use crate::fsa::broker::FileKey;
use crate::fsa::lease::{LeaseId, LeaseRequest};
use crate::fsa::oplock::{BreakNotice, Intent, LeaseNotice, Level, WIRE_LEASE};
use crate::wire::create::{ctx, lease_flags, CreateContext, LeaseContext, LeaseV2};
use crate::wire::header::FLAGS_SERVER_TO_REDIR;
use crate::wire::oplock::{
    BreakAck, LeaseBreakAck, LeaseBreakNotification, OplockBreak, LEASE_BREAK_FLAG_ACK_REQUIRED,
};
use crate::wire::{Command, Header, NtStatus, HEADER_LEN};
use bytes::BytesMut;
use std::time::Duration;
use tracing::{debug, warn};

/// MessageId of an unsolicited notification (MS-SMB2 2.2.1.2).
const NOTIFICATION_MESSAGE_ID: u64 = u64::MAX;

impl Connection {
    /// What a CREATE asks for, with the share's oplock options.
    pub fn oplock_intent(
        &self,
        share: &Share,
        requested: u8,
        disposition: u32,
        is_dir: bool,
    ) -> Intent {
        let (oplocks, level2) = share.conf.as_ref().map_or((false, false), |c| {
            (c.oplocks, c.oplocks && c.level2_oplocks)
        });
        Intent {
            owner: self.conn_id,
            requested: Level::from_wire(requested),
            disposition,
            is_dir,
            oplocks,
            level2,
            break_timeout: Duration::from_secs(u64::from(
                self.st.config.global.oplock_break_timeout,
            )),
            may_break: true,
            lease: None,
        }
    }

    /// The lease a CREATE asks for (MS-SMB2 3.3.5.9.8, 3.3.5.9.11): only
    /// with OplockLevel LEASE, on SMB 2.1 and later with leasing on, and not
    /// for directories unless directory leasing applies (a v2 context on
    /// SMB 3.x). A v2 context counts as v2 only on SMB 3.x.
    pub fn lease_request(
        &self,
        requested: u8,
        contexts: &[CreateContext],
        is_dir: bool,
    ) -> Option<LeaseRequest> {
        if requested != WIRE_LEASE || !self.leasing() {
            return None;
        }
        let c = CreateContext::find(contexts, ctx::REQUEST_LEASE)?;
        let l = LeaseContext::decode(&c.data).ok()?;
        let v2 = l.v2.filter(|_| self.neg.dialect >= 0x0300);
        // Directory leases are v2 leases of SMB 3.x.
        if is_dir && (v2.is_none() || !self.st.config.global.smb3_directory_leases) {
            return None;
        }
        Some(LeaseRequest {
            id: (self.neg.client_guid, l.key),
            state: l.state,
            v2: v2.is_some(),
            epoch: v2.map_or(0, |v| v.epoch),
            parent: v2
                .filter(|_| l.flags & lease_flags::PARENT_LEASE_KEY_SET != 0)
                .map(|v| v.parent_key),
        })
    }

    /// Leases are offered on this connection (SMB2_GLOBAL_CAP_LEASING).
    pub fn leasing(&self) -> bool {
        self.neg.dialect >= 0x0210
            && self.neg.dialect != 0x02FF
            && self.st.config.global.smb2_leases
    }

    /// The lease response context for a granted lease.
    pub fn lease_context(&self, key: FileKey, id: LeaseId) -> Option<CreateContext> {
        let g = self.st.broker.lease_grant(key, id)?;
        let mut flags = 0;
        if g.breaking {
            flags |= lease_flags::BREAK_IN_PROGRESS;
        }
        if g.parent.is_some() {
            flags |= lease_flags::PARENT_LEASE_KEY_SET;
        }
        Some(
            LeaseContext {
                key: id.1,
                state: g.state,
                flags,
                duration: 0,
                v2: g.v2.then(|| LeaseV2 {
                    parent_key: g.parent.unwrap_or_default(),
                    epoch: g.epoch,
                }),
            }
            .context(),
        )
    }

    /// The CREATE cannot finish before oplock holders of `key` answer their
    /// break: it goes async and this request is run again afterwards.
    pub fn wait_for_oplock_break(&mut self, ctx: &Ctx<'_>, key: FileKey) -> Reply {
        let st = self.st.clone();
        let gate = Gate::default();
        let g = gate.clone();
        debug!(?key, "create waits for an oplock break");
        self.async_work = Some(
            AsyncWork::new(PendingKind::OplockBreak, None, gate, async move {
                wait_for_breaks(&st.broker, key).await;
                // Holders that lost write caching release their kernel
                // leases before this open makes its fd.
                st.kernel.reconcile(&st, key);
                match g.attempt(|| Some(())) {
                    Attempt::Cancelled => Err(NtStatus::CANCELLED),
                    _ => Ok(error_reply(NtStatus::PENDING)),
                }
            })
            .redo(ctx.msg.to_vec()),
        );
        error_reply(NtStatus::PENDING)
    }

    /// OPLOCK_BREAK request: an oplock break acknowledgment (3.3.5.22.1).
    pub fn oplock_break(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let ack = match BreakAck::decode(ctx.msg) {
            Ok(BreakAck::Oplock(a)) => a,
            Ok(BreakAck::Lease(a)) => return self.lease_break_ack(a),
            Err(_) => return Err(NtStatus::INVALID_PARAMETER),
        };
        let fid = ctx.fid(ack.file_id);
        let open = self.open_mut(ctx, fid)?;
        let (key, oid) = (open.key, open.fid.volatile);
        ctx.related_fid = Some(fid);
        let level = self
            .st
            .broker
            .oplock_ack(key, oid, ack.oplock_level)
            .inspect_err(|s| debug!(fid = oid, level = ack.oplock_level, ?s, "bad oplock ack"))?;
        debug!(fid = oid, ?level, "oplock break acknowledged");
        self.st.kernel.reconcile(&self.st, key);
        let mut b = Reply::buf();
        OplockBreak {
            oplock_level: level.wire(),
            file_id: fid,
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    /// Lease Break Acknowledgment (MS-SMB2 3.3.5.22.2), answered with the
    /// state the lease now has.
    fn lease_break_ack(&mut self, a: LeaseBreakAck) -> Result<Reply, NtStatus> {
        if !self.leasing() {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        let id = (self.neg.client_guid, a.lease_key);
        let state = self
            .st
            .broker
            .lease_ack(id, a.lease_state)
            .inspect_err(|s| debug!(state = a.lease_state, ?s, "bad lease break ack"))?;
        debug!(state, "lease break acknowledged");
        if let Some(key) = self.st.broker.lease_file(id) {
            self.st.kernel.reconcile(&self.st, key);
        }
        let mut b = Reply::buf();
        LeaseBreakAck {
            flags: 0,
            lease_key: a.lease_key,
            lease_state: state,
            lease_duration: 0,
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    /// Data of an open's stream changes through open `actor`: level II
    /// holders and other keys' leases lose read caching.
    pub fn break_level2_oplocks(&self, key: FileKey, actor: u64) {
        if self.st.broker.oplock_break_level2(key, actor) > 0 {
            self.st.kernel.reconcile(&self.st, key);
        }
    }

    /// Queues an Oplock Break Notification for one of this connection's
    /// opens (MS-SMB2 3.3.4.6): unsolicited, MessageId all ones, SessionId 0,
    /// not signed; encrypted when the open's session or tree encrypts.
    pub fn send_oplock_break(&mut self, n: BreakNotice) {
        let Some(open) = self.opens.get(&n.open_id) else {
            debug!(open = n.open_id, "break for an open already closed");
            return;
        };
        let (fid, sid, tid) = (open.fid, open.session_id, open.tree_id);
        if let Some(l) = n.lease {
            self.send_lease_break(l, sid, tid);
            return;
        }
        let encrypt = self.neg.cipher.is_some()
            && self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.encrypt_data || s.trees.get(&tid).is_some_and(|t| t.encrypt));
        let h = Header {
            command: Command::OplockBreak as u16,
            flags: FLAGS_SERVER_TO_REDIR,
            message_id: NOTIFICATION_MESSAGE_ID,
            ..Header::default()
        };
        let mut buf = BytesMut::with_capacity(HEADER_LEN + 24);
        h.encode(&mut buf);
        OplockBreak {
            oplock_level: n.to.wire(),
            file_id: fid,
        }
        .encode(&mut buf);
        let frame = if encrypt {
            match self.encrypt_for(sid, &buf) {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "oplock break notification dropped");
                    return;
                }
            }
        } else {
            buf
        };
        debug!(fid = fid.volatile, to = ?n.to, "oplock break sent");
        self.outbox.push(frame);
    }
}

impl Connection {
    fn encrypts_for(&self, sid: u64, tid: u32) -> bool {
        self.neg.cipher.is_some()
            && self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.encrypt_data || s.trees.get(&tid).is_some_and(|t| t.encrypt))
    }

    /// Queues a Lease Break Notification (MS-SMB2 3.3.4.7); like an oplock
    /// break it is unsolicited and encrypted when the open's session or
    /// tree encrypts.
    fn send_lease_break(&mut self, l: LeaseNotice, sid: u64, tid: u32) {
        let h = Header {
            command: Command::OplockBreak as u16,
            flags: FLAGS_SERVER_TO_REDIR,
            message_id: NOTIFICATION_MESSAGE_ID,
            ..Header::default()
        };
        let mut buf = BytesMut::with_capacity(HEADER_LEN + 44);
        h.encode(&mut buf);
        LeaseBreakNotification {
            new_epoch: l.epoch,
            flags: if l.ack_required {
                LEASE_BREAK_FLAG_ACK_REQUIRED
            } else {
                0
            },
            lease_key: l.key,
            current_state: l.from,
            new_state: l.to,
            ..LeaseBreakNotification::default()
        }
        .encode(&mut buf);
        let frame = if self.encrypts_for(sid, tid) {
            match self.encrypt_for(sid, &buf) {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "lease break notification dropped");
                    return;
                }
            }
        } else {
            buf
        };
        debug!(
            from = l.from,
            to = l.to,
            ack = l.ack_required,
            "lease break sent"
        );
        self.outbox.push(frame);
    }
}

/// Waits until no break of `key` is outstanding: each acknowledgment, close
/// or timeout wakes the waiter, which completes timed-out breaks itself.
pub(crate) async fn wait_for_breaks(broker: &BrokerHandle, key: FileKey) {
    loop {
        let Some(changed) = broker.oplock_changed(key) else {
            return;
        };
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(deadline) = broker.oplock_deadline(key) else {
            return;
        };
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline.into()) => broker.oplock_expire(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsa::broker::Opened;
    use crate::fsa::types::{access, share};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    const K: FileKey = FileKey {
        dev: 3,
        ino: 4,
        stream: 0,
    };
    const RW: u32 = access::FILE_READ_DATA | access::FILE_WRITE_DATA;

    fn intent(owner: u64, requested: Level, timeout: Duration) -> Intent {
        Intent {
            owner,
            requested,
            oplocks: true,
            level2: true,
            may_break: true,
            break_timeout: timeout,
            ..Intent::none()
        }
    }

    /// A batch holder on owner 1 and a conflicting open from owner 2 that
    /// has to wait; returns the broker and the holder's break queue.
    fn contended(timeout: Duration) -> (Arc<BrokerHandle>, mpsc::UnboundedReceiver<BreakNotice>) {
        let b = Arc::new(BrokerHandle::new());
        let (tx, rx) = mpsc::unbounded_channel();
        b.register_break_sink(1, tx);
        let first = intent(1, Level::Batch, timeout);
        assert_eq!(
            b.open_with(K, "f".into(), 10, RW, share::ALL, false, &first),
            Ok(Opened::Granted(Level::Batch))
        );
        let second = intent(2, Level::Batch, timeout);
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &second),
            Ok(Opened::Wait)
        );
        (b, rx)
    }

    #[tokio::test]
    async fn acknowledgment_releases_the_waiting_open() {
        let (b, mut rx) = contended(Duration::from_secs(30));
        assert_eq!(
            rx.try_recv(),
            Ok(BreakNotice {
                owner: 1,
                open_id: 10,
                to: Level::LevelII,
                lease: None,
            })
        );
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { wait_for_breaks(&b, K).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "must wait for the holder");
        assert_eq!(b.oplock_ack(K, 10, 0x01), Ok(Level::LevelII));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the acknowledgment must wake the waiter")
            .unwrap();
        // Run again, the open gets level II next to the holder's level II.
        let second = intent(2, Level::Batch, Duration::from_secs(30));
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &second),
            Ok(Opened::Granted(Level::LevelII))
        );
        // A second acknowledgment is a protocol error.
        assert_eq!(
            b.oplock_ack(K, 10, 0x01),
            Err(NtStatus::INVALID_OPLOCK_PROTOCOL)
        );
        // A write breaks both level II oplocks to none, nobody waits.
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        b.register_break_sink(2, tx2);
        assert_eq!(b.oplock_break_level2(K, 11), 2);
        assert_eq!(rx.try_recv().map(|n| n.to), Ok(Level::NoOplock));
        assert_eq!(rx2.try_recv().map(|n| n.to), Ok(Level::NoOplock));
        assert_eq!(b.oplock_level(K, 10), Level::NoOplock);
    }

    #[tokio::test]
    async fn closing_the_holder_releases_the_waiting_open() {
        let (b, _rx) = contended(Duration::from_secs(30));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { wait_for_breaks(&b, K).await }
        });
        tokio::task::yield_now().await;
        b.close(K, 10);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("closing the holder must wake the waiter")
            .unwrap();
        let second = intent(2, Level::Batch, Duration::from_secs(30));
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &second),
            Ok(Opened::Granted(Level::Batch))
        );
    }

    #[tokio::test]
    async fn unanswered_break_times_out() {
        let (b, _rx) = contended(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), wait_for_breaks(&b, K))
            .await
            .expect("the break must time out");
        assert_eq!(b.oplock_level(K, 10), Level::NoOplock);
        assert_eq!(
            b.oplock_ack(K, 10, 0x01),
            Err(NtStatus::INVALID_OPLOCK_PROTOCOL),
            "a late acknowledgment has nothing to acknowledge"
        );
    }

    #[tokio::test]
    async fn disconnected_batch_holder_gets_breaks_at_its_new_owner() {
        let (b, mut rx) = contended(Duration::from_secs(30));
        // Holder 10 is being broken (owner 2 waits): it cannot be kept.
        assert!(!b.oplock_disconnect(K, 10, 99));
        assert_eq!(rx.try_recv().map(|n| n.open_id), Ok(10));
        b.close(K, 10);
        // A fresh batch holder may be disconnected; its breaks go to owner 99.
        let first = intent(1, Level::Batch, Duration::from_secs(30));
        assert_eq!(
            b.open_with(K, "f".into(), 12, RW, share::ALL, false, &first),
            Ok(Opened::Granted(Level::Batch))
        );
        let (tx99, mut rx99) = mpsc::unbounded_channel();
        b.register_break_sink(99, tx99);
        assert!(b.oplock_disconnect(K, 12, 99));
        // Reclaimed by connection 3: it keeps its batch oplock.
        assert_eq!(b.oplock_reattach(K, 12, 3), Some(Level::Batch));
        assert!(b.oplock_disconnect(K, 12, 99));
        let second = intent(2, Level::Batch, Duration::from_secs(30));
        assert_eq!(
            b.open_with(K, "f".into(), 13, RW, share::ALL, false, &second),
            Ok(Opened::Wait)
        );
        assert_eq!(rx99.try_recv().map(|n| n.open_id), Ok(12));
        // Being broken: no reconnect may take it back.
        assert_eq!(b.oplock_reattach(K, 12, 3), None);
        assert_eq!(b.oplock_reattach(K, 77, 3), None, "unknown open");
    }

    #[tokio::test]
    async fn sharing_violation_waits_for_batch_then_fails() {
        let b = BrokerHandle::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        b.register_break_sink(1, tx);
        let t = Duration::from_secs(30);
        assert_eq!(
            b.open_with(K, "f".into(), 10, RW, 0, false, &intent(1, Level::Batch, t)),
            Ok(Opened::Granted(Level::Batch))
        );
        let other = intent(2, Level::NoOplock, t);
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &other),
            Ok(Opened::Wait)
        );
        assert_eq!(rx.try_recv().map(|n| n.to), Ok(Level::LevelII));
        assert_eq!(b.oplock_ack(K, 10, 0x01), Ok(Level::LevelII));
        wait_for_breaks(&b, K).await;
        assert_eq!(
            b.open_with(K, "f".into(), 11, RW, share::ALL, false, &other),
            Err(NtStatus::SHARING_VIOLATION)
        );
        assert!(rx.try_recv().is_err(), "no second break");
    }
}
