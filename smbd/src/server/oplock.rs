//! SMB2 oplocks on the connection side: the oplock a CREATE asks for, the
//! wait of a CREATE behind an oplock break (MS-SMB2 3.3.5.9: it goes async
//! and is run again once the holders answered), break notifications
//! (3.3.4.6) and acknowledgments (3.3.5.22.1). The rules are in
//! `fsa::oplock`, the state in the broker.

use super::conn::{error_reply, Connection, Ctx, Reply};
use super::pending::{AsyncWork, Attempt, Gate, PendingKind};
use super::state::{ServerState, Share};
use crate::fsa::broker::FileKey;
use crate::fsa::oplock::{BreakNotice, Intent, Level};
use crate::wire::header::FLAGS_SERVER_TO_REDIR;
use crate::wire::oplock::{BreakAck, OplockBreak};
use crate::wire::{Command, Header, NtStatus, HEADER_LEN};
use bytes::BytesMut;
use std::sync::Arc;
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
        }
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
                wait_for_breaks(&st, key).await;
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
            // Leases are never granted, so there is no lease break to answer.
            Ok(BreakAck::Lease(_)) => return Err(NtStatus::INVALID_OPLOCK_PROTOCOL),
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
        let mut b = Reply::buf();
        OplockBreak {
            oplock_level: level.wire(),
            file_id: fid,
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    /// Data of an open's stream changes: level II holders lose their oplock.
    pub fn break_level2_oplocks(&self, key: FileKey) {
        self.st.broker.oplock_break_level2(key);
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

/// Waits until no break of `key` is outstanding: each acknowledgment, close
/// or timeout wakes the waiter, which completes timed-out breaks itself.
async fn wait_for_breaks(st: &Arc<ServerState>, key: FileKey) {
    loop {
        let Some(changed) = st.broker.oplock_changed(key) else {
            return;
        };
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(deadline) = st.broker.oplock_deadline(key) else {
            return;
        };
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline.into()) => st.broker.oplock_expire(key),
        }
    }
}
