//! CHANGE_NOTIFY (MS-SMB2 3.3.5.19). For now a valid request pends until it
//! is cancelled or its handle is closed; reporting real changes comes later.

use super::conn::{Connection, Ctx, Reply};
use super::pending::{AsyncWork, Gate, PendingKind};
use crate::fsa::types::access;
use crate::wire::notify::ChangeNotifyRequest;
use crate::wire::NtStatus;

impl Connection {
    pub async fn change_notify(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = ChangeNotifyRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        let max_transact = self.neg.max_transact;
        let open = self.open_mut(ctx, fid)?;
        ctx.related_fid = Some(fid);
        // Invalid requests are answered at once, never with an interim response.
        if !open.is_dir || req.output_buffer_length > max_transact {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if open.access & access::FILE_LIST_DIRECTORY == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let volatile = open.fid.volatile;
        self.async_work = Some(AsyncWork::new(
            PendingKind::ChangeNotify,
            Some(volatile),
            Gate::default(),
            std::future::pending(),
        ));
        Ok(super::conn::error_reply(NtStatus::PENDING))
    }
}
