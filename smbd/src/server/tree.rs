//! TREE_CONNECT and TREE_DISCONNECT.

use super::conn::{Connection, Ctx, Reply, TREE_ID_OFFSET};
use crate::config::Encrypt;
use crate::fsa::types::access;
use crate::wire::tree::{TreeConnectRequest, TreeConnectResponse, TreeDisconnectRequest};
use crate::wire::NtStatus;
use bytes::BufMut;
use tracing::{info, warn};

const SHARE_TYPE_DISK: u8 = 1;
/// SMB2_SHAREFLAG_ENCRYPT_DATA.
const SHAREFLAG_ENCRYPT_DATA: u32 = 0x0000_8000;
const SHARE_TYPE_PIPE: u8 = 2;
/// What a read-only tree grants at most.
const READ_ONLY_ACCESS: u32 = access::FILE_GENERIC_READ | access::FILE_GENERIC_EXECUTE;
/// Most that any tree connect grants.
const FULL_ACCESS: u32 = access::FILE_ALL_ACCESS;

impl Connection {
    pub fn tree_connect(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = TreeConnectRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        // Path is \\server\share; only the share part matters.
        let name = req
            .path
            .trim_start_matches('\\')
            .split('\\')
            .nth(1)
            .ok_or(NtStatus::BAD_NETWORK_NAME)?
            .to_string();
        let share = self.st.share(&name).ok_or_else(|| {
            warn!(share = %name, "tree connect to unknown share");
            NtStatus::BAD_NETWORK_NAME
        })?;
        let sess = self
            .sessions
            .get_mut(&ctx.hdr.session_id)
            .ok_or(NtStatus::USER_SESSION_DELETED)?;
        let user = sess.user.clone().ok_or(NtStatus::ACCESS_DENIED)?;
        let (share_type, read_only) = match &share.conf {
            None => (SHARE_TYPE_PIPE, false),
            Some(conf) => {
                if (user.guest || user.anonymous) && !conf.guest_ok {
                    warn!(share = %name, user = %user.name, "guest access refused");
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if !conf.valid_users.is_empty()
                    && !conf
                        .valid_users
                        .iter()
                        .any(|u| u.eq_ignore_ascii_case(&user.name))
                {
                    warn!(share = %name, user = %user.name, "user not in valid users");
                    return Err(NtStatus::ACCESS_DENIED);
                }
                (SHARE_TYPE_DISK, conf.read_only)
            }
        };
        // Per-share encryption (MS-SMB2 3.3.5.7): `smb encrypt = required` refuses
        // clients that cannot encrypt and makes every request on the tree encrypted.
        let encrypt = share
            .conf
            .as_ref()
            .and_then(|c| c.smb_encrypt)
            .unwrap_or(self.st.config.global.server_smb_encrypt);
        let can_encrypt = self.neg.cipher.is_some() && !user.guest && !user.anonymous;
        let (share_flags, enforce) = match encrypt {
            Encrypt::Required if !can_encrypt => {
                warn!(share = %name, user = %user.name, "share requires encryption; client cannot encrypt");
                return Err(NtStatus::ACCESS_DENIED);
            }
            Encrypt::Required => (SHAREFLAG_ENCRYPT_DATA, true),
            Encrypt::Desired if can_encrypt => (SHAREFLAG_ENCRYPT_DATA, false),
            _ => (0, false),
        };
        let maximal = if read_only {
            READ_ONLY_ACCESS
        } else {
            FULL_ACCESS
        };
        let tid = sess.add_tree(share.clone(), read_only, maximal);
        if let Some(t) = sess.trees.get_mut(&tid) {
            t.encrypt = enforce;
        }
        info!(share = %share.name, tid, user = %user.name, "tree connected");
        let mut b = Reply::buf();
        b[TREE_ID_OFFSET..TREE_ID_OFFSET + 4].copy_from_slice(&tid.to_le_bytes());
        TreeConnectResponse {
            share_type,
            share_flags,
            capabilities: 0,
            maximal_access: maximal,
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    pub async fn tree_disconnect(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        TreeDisconnectRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let (sid, tid) = (ctx.hdr.session_id, ctx.hdr.tree_id());
        self.tree(ctx)?;
        self.close_opens_where(|o| o.session_id == sid && o.tree_id == tid)
            .await;
        self.close_pipes(sid, Some(tid));
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.trees.remove(&tid);
        }
        let mut b = Reply::buf();
        b.put_u16_le(4);
        b.put_u16_le(0);
        Reply::ok(b)
    }

    /// The tree connect a request names (NETWORK_NAME_DELETED otherwise).
    pub fn tree(&self, ctx: &Ctx<'_>) -> Result<&super::session::Tree, NtStatus> {
        self.sessions
            .get(&ctx.hdr.session_id)
            .and_then(|s| s.trees.get(&ctx.hdr.tree_id()))
            .ok_or(NtStatus::NETWORK_NAME_DELETED)
    }
}
