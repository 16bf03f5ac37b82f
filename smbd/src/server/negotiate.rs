//! NEGOTIATE (and the SMB1 upgrade), SESSION_SETUP and LOGOFF.

use super::conn::{Connection, Ctx, Reply};
use super::session::{Session, SessionState, User};
use crate::config::{Encrypt, MapToGuest, Signing};
use crate::server::auth::{AuthStep, NtlmServer};
use crate::server::crypto::{self, SigningAlgorithm};
use crate::wire::header::{offsets, Header, FLAGS_SERVER_TO_REDIR};
use crate::wire::negotiate::{self as neg, NegotiateContext, NegotiateRequest, NegotiateResponse};
use crate::wire::session::{LogoffRequest, SessionSetupRequest, SessionSetupResponse};
use crate::wire::{Command, NtStatus};
use bytes::{BufMut, BytesMut};
use kmod_interface::identity::Identity;
use std::sync::Arc;
use tracing::{info, warn};

/// How long a session reconnect waits for the connection owning the
/// previous session to close it.
const PREVIOUS_SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest read/write/transact size offered with LARGE_MTU.
pub const MAX_IO: u32 = 8 * 1024 * 1024;
const SMB2_WILDCARD_DIALECT: u16 = 0x02FF;
/// Ciphers in the order the server prefers them.
const CIPHER_PREFERENCE: [crypto::Cipher; 4] = [
    crypto::Cipher::Aes128Gcm,
    crypto::Cipher::Aes128Ccm,
    crypto::Cipher::Aes256Gcm,
    crypto::Cipher::Aes256Ccm,
];
const SESSION_FLAG_ENCRYPT_DATA: u16 = 0x0004;
const SESSION_FLAG_IS_GUEST: u16 = 0x0001;
const SESSION_FLAG_IS_NULL: u16 = 0x0002;
const SIGNING_ENABLED: u16 = 0x0001;
const SIGNING_REQUIRED: u16 = 0x0002;

impl Connection {
    fn dialect_range(&self) -> (u16, u16) {
        let g = &self.st.config.global;
        (
            g.server_min_protocol.revision(),
            g.server_max_protocol.revision(),
        )
    }

    fn server_security_mode(&self) -> u16 {
        match self.st.config.global.server_signing {
            Signing::Mandatory => SIGNING_ENABLED | SIGNING_REQUIRED,
            _ => SIGNING_ENABLED,
        }
    }

    fn base_response(&self, dialect: u16) -> NegotiateResponse {
        let large = dialect >= 0x0210 && dialect != SMB2_WILDCARD_DIALECT;
        let io = if large { MAX_IO } else { 65536 };
        let mut caps = 0;
        if large {
            caps |= neg::GLOBAL_CAP_LARGE_MTU;
            if self.st.config.global.smb2_leases {
                caps |= neg::GLOBAL_CAP_LEASING;
            }
        }
        if dialect >= 0x0300
            && dialect != SMB2_WILDCARD_DIALECT
            && self.st.config.global.server_multi_channel_support
        {
            caps |= neg::GLOBAL_CAP_MULTI_CHANNEL;
        }
        if dialect >= 0x0300
            && dialect != SMB2_WILDCARD_DIALECT
            && self.st.config.global.smb2_leases
            && self.st.config.global.smb3_directory_leases
        {
            caps |= neg::GLOBAL_CAP_DIRECTORY_LEASING;
        }
        NegotiateResponse {
            security_mode: self.server_security_mode(),
            dialect,
            server_guid: self.st.guid,
            capabilities: caps,
            max_transact_size: io,
            max_read_size: io,
            max_write_size: io,
            system_time: crate::fsa::types::nt_now(),
            server_start_time: 0,
            security_buffer: crate::server::auth::spnego_negotiate_token(),
            contexts: Vec::new(),
        }
    }

    /// Answers an SMB1 NEGOTIATE that offers SMB2 (MS-SMB2 3.3.5.3.1).
    pub fn smb1_negotiate(&mut self, buf: &[u8]) -> Result<BytesMut, String> {
        if self.neg.dialect != 0 {
            return Err("SMB1 negotiate after negotiation".into());
        }
        let dialects = crate::wire::smb1::smb1_negotiate_dialects(buf)
            .map_err(|e| format!("bad SMB1 negotiate: {e}"))?;
        let (min, max) = self.dialect_range();
        let dialect = if dialects.iter().any(|d| d == "SMB 2.???") && max >= 0x0210 {
            SMB2_WILDCARD_DIALECT
        } else if dialects.iter().any(|d| d == "SMB 2.002") && min <= 0x0202 {
            0x0202
        } else {
            return Err("SMB1-only client".into());
        };
        if !self.credits.consume(0, 1) {
            return Err("SMB1 negotiate after message 0".into());
        }
        info!(
            dialect = format_args!("{dialect:#06x}"),
            "SMB1 negotiate upgraded"
        );
        let resp = self.base_response(dialect);
        if dialect == 0x0202 {
            self.set_negotiated(dialect, [0; 16], 0, 0, vec![0x0202], None, None);
        }
        let mut out = BytesMut::new();
        let h = Header {
            command: Command::Negotiate as u16,
            credits: self.credits.grant(1),
            flags: FLAGS_SERVER_TO_REDIR,
            ..Header::default()
        };
        h.encode(&mut out);
        resp.encode(&mut out);
        Ok(out)
    }

    /// State after another worker answered this connection's SMB1
    /// multi-protocol negotiate with the wildcard dialect: message id 0 is
    /// used and one credit granted, as `smb1_negotiate` leaves it.
    pub fn resume_after_smb1_upgrade(&mut self) {
        if self.credits.consume(0, 1) {
            self.credits.grant(1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn set_negotiated(
        &mut self,
        dialect: u16,
        client_guid: [u8; 16],
        client_caps: u32,
        client_security_mode: u16,
        client_dialects: Vec<u16>,
        signing: Option<SigningAlgorithm>,
        cipher: Option<crypto::Cipher>,
    ) {
        let resp = self.base_response(dialect);
        self.neg.dialect = dialect;
        self.neg.client_guid = client_guid;
        self.neg.client_caps = client_caps;
        self.neg.client_security_mode = client_security_mode;
        self.neg.client_dialects = client_dialects;
        self.neg.server_security_mode = resp.security_mode;
        self.neg.server_caps = resp.capabilities;
        self.neg.max_read = resp.max_read_size;
        self.neg.max_write = resp.max_write_size;
        self.neg.max_transact = resp.max_transact_size;
        self.neg.signing = Some(signing.unwrap_or(if dialect >= 0x0300 {
            SigningAlgorithm::AesCmac
        } else {
            SigningAlgorithm::HmacSha256
        }));
        self.neg.cipher = cipher;
    }

    pub fn negotiate(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        if self.neg.dialect != 0 {
            // A second NEGOTIATE on a negotiated connection (MS-SMB2 3.3.5.4).
            self.terminate = true;
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let req = NegotiateRequest::decode(ctx.msg).map_err(|e| {
            warn!(%e, "malformed NEGOTIATE");
            NtStatus::INVALID_PARAMETER
        })?;
        if req.dialects.is_empty() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let (min, max) = self.dialect_range();
        let Some(dialect) = [0x0311u16, 0x0302, 0x0300, 0x0210, 0x0202]
            .into_iter()
            .find(|d| *d >= min && *d <= max && req.dialects.contains(d))
        else {
            warn!(offered = ?req.dialects, "no common dialect");
            return Err(NtStatus::NOT_SUPPORTED);
        };
        let mut resp = self.base_response(dialect);
        let mut signing = None;
        let mut cipher = None;
        let encryption_on = !matches!(self.st.config.global.server_smb_encrypt, Encrypt::Off);
        if matches!(dialect, 0x0300 | 0x0302)
            && encryption_on
            && req.capabilities & neg::GLOBAL_CAP_ENCRYPTION != 0
        {
            resp.capabilities |= neg::GLOBAL_CAP_ENCRYPTION;
            cipher = Some(crypto::Cipher::Aes128Ccm);
        }
        if dialect == 0x0311 {
            let mut have_preauth = false;
            for c in &req.contexts {
                match c {
                    NegotiateContext::PreauthIntegrity {
                        hash_algorithms, ..
                    } => {
                        if !hash_algorithms.contains(&neg::HASH_ALGORITHM_SHA512) {
                            return Err(NtStatus::NOT_SUPPORTED);
                        }
                        have_preauth = true;
                    }
                    NegotiateContext::Encryption { ciphers } if encryption_on => {
                        cipher = CIPHER_PREFERENCE
                            .into_iter()
                            .find(|c| ciphers.contains(&(*c as u16)));
                    }
                    NegotiateContext::Signing { algorithms } => {
                        signing = [
                            neg::SIGNING_AES_GMAC,
                            neg::SIGNING_AES_CMAC,
                            neg::SIGNING_HMAC_SHA256,
                        ]
                        .into_iter()
                        .find(|a| algorithms.contains(a));
                    }
                    _ => {}
                }
            }
            if !have_preauth {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            resp.contexts.push(NegotiateContext::PreauthIntegrity {
                hash_algorithms: vec![neg::HASH_ALGORITHM_SHA512],
                salt: rand::random::<[u8; 32]>().to_vec(),
            });
            if req
                .contexts
                .iter()
                .any(|c| matches!(c, NegotiateContext::Encryption { .. }))
            {
                // Cipher 0 tells the client there is no common cipher.
                resp.contexts.push(NegotiateContext::Encryption {
                    ciphers: vec![cipher.map_or(0, |c| c as u16)],
                });
            }
            if let Some(a) = signing {
                resp.contexts.push(NegotiateContext::Signing {
                    algorithms: vec![a],
                });
            }
        }
        let signing = signing.and_then(SigningAlgorithm::from_negotiate_id);
        self.set_negotiated(
            dialect,
            req.client_guid,
            req.capabilities,
            req.security_mode,
            req.dialects.clone(),
            signing,
            cipher,
        );
        if dialect == 0x0311
            && cipher.is_some()
            && req.capabilities & neg::GLOBAL_CAP_ENCRYPTION != 0
        {
            resp.capabilities |= neg::GLOBAL_CAP_ENCRYPTION;
        }
        self.neg.server_caps = resp.capabilities;
        if dialect == 0x0311 {
            self.preauth.update(ctx.msg);
        }
        info!(dialect = format_args!("{dialect:#06x}"), "negotiated");
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    /// Called with the finished response bytes of NEGOTIATE/SESSION_SETUP, for the 3.1.1 preauth hash.
    pub fn note_response(
        &mut self,
        cmd: Option<Command>,
        status: NtStatus,
        session_id: u64,
        bytes: &[u8],
    ) {
        if self.neg.dialect != 0x0311 {
            return;
        }
        match cmd {
            Some(Command::Negotiate) if status == NtStatus::SUCCESS => self.preauth.update(bytes),
            Some(Command::SessionSetup) if status == NtStatus::MORE_PROCESSING_REQUIRED => {
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    s.preauth.update(bytes);
                } else if let Some(crate::server::channel::Channel {
                    state: crate::server::channel::ChannelState::Binding { preauth, .. },
                    ..
                }) = self.channels.get_mut(&session_id)
                {
                    preauth.update(bytes);
                }
            }
            _ => {}
        }
    }

    pub async fn session_setup(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = SessionSetupRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        if let Some(left) = self.logon_blocked() {
            warn!(peer = %self.peer, secs_left = left.as_secs(), "session setup refused: too many failed logons from this address");
            return Err(NtStatus::ACCOUNT_LOCKED_OUT);
        }
        if req.flags & crate::wire::session::SESSION_FLAG_BINDING != 0 {
            return self.session_bind(ctx, &req).await;
        }
        let sid = if ctx.hdr.session_id == 0 {
            let max = self.st.config.global.limits.max_sessions_per_conn;
            if self.sessions.len() >= max {
                warn!(peer = %self.peer, limit = max, "too many sessions on this connection");
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            let id = self.st.new_session_id();
            let ntlm = NtlmServer::new(self.st.target.clone());
            self.sessions
                .insert(id, Session::new(id, ntlm, self.preauth.clone()));
            id
        } else {
            let sess = self
                .sessions
                .get_mut(&ctx.hdr.session_id)
                .ok_or(NtStatus::USER_SESSION_DELETED)?;
            if matches!(sess.state, SessionState::Valid) {
                // Reauthentication: a fresh exchange, the session stays usable meanwhile.
                sess.state =
                    SessionState::Reauth(Box::new(NtlmServer::new(self.st.target.clone())));
            }
            ctx.hdr.session_id
        };
        let dialect = self.neg.dialect;
        let st = self.st.clone();
        let sess = self
            .sessions
            .get_mut(&sid)
            .ok_or(NtStatus::USER_SESSION_DELETED)?;
        if dialect == 0x0311 && !matches!(sess.state, SessionState::Reauth(_)) {
            sess.preauth.update(ctx.msg);
        }
        let Some((ntlm, reauth)) = sess.ntlm_mut() else {
            return Err(NtStatus::INTERNAL_ERROR);
        };
        let lookup = |user: &str, _domain: &str| -> Option<[u8; 16]> {
            let db = st.users.lock().ok()?;
            db.lookup(user).ok().flatten().map(|r| r.nt_hash)
        };
        let step = ntlm.step(&req.security_buffer, &lookup);
        let mut b = Reply::buf();
        b[offsets::SESSION_ID..offsets::SESSION_ID + 8].copy_from_slice(&sid.to_le_bytes());
        match step {
            AuthStep::Continue(token) => {
                SessionSetupResponse {
                    session_flags: 0,
                    security_buffer: token,
                }
                .encode(&mut b);
                Reply::with_status(NtStatus::MORE_PROCESSING_REQUIRED, b)
            }
            AuthStep::Done(outcome) => {
                let (user, flags) = if outcome.anonymous {
                    {
                        if self.st.config.global.restrict_anonymous >= 2 {
                            warn!(peer = %self.peer, "anonymous logon refused (restrict anonymous = 2)");
                            self.drop_session(sid, false).await;
                            return Err(NtStatus::ACCESS_DENIED);
                        }
                        (self.guest_user("", true)?, SESSION_FLAG_IS_NULL)
                    }
                } else {
                    match self.map_user(&outcome.user, &outcome.domain) {
                        Ok(u) => (u, 0),
                        Err(status) => {
                            warn!(user = %outcome.user, peer = %self.peer, ?status, "authenticated user has no usable Unix account");
                            self.drop_session(sid, false).await;
                            return Err(status);
                        }
                    }
                };
                let sess = self
                    .sessions
                    .get_mut(&sid)
                    .ok_or(NtStatus::USER_SESSION_DELETED)?;
                // Reauthentication keeps the keys of the first authentication.
                if !outcome.anonymous && !reauth {
                    let preauth = (dialect == 0x0311).then(|| *sess.preauth.value());
                    sess.keys = Some(crypto::derive_session_keys(
                        dialect,
                        &outcome.session_key,
                        preauth.as_ref(),
                        self.neg.cipher,
                    ));
                    sess.signing_required =
                        matches!(self.st.config.global.server_signing, Signing::Mandatory)
                            || u16::from(req.security_mode) & SIGNING_REQUIRED != 0;
                    if self.neg.cipher.is_some()
                        && matches!(self.st.config.global.server_smb_encrypt, Encrypt::Required)
                    {
                        sess.encrypt_data = true;
                    }
                }
                let flags = if sess.encrypt_data {
                    flags | SESSION_FLAG_ENCRYPT_DATA
                } else {
                    flags
                };
                info!(user = %user.name, domain = %outcome.domain, sid, anonymous = outcome.anonymous, reauth, "session established");
                let name = user.name.clone();
                sess.user = Some(user);
                sess.state = SessionState::Valid;
                if !outcome.anonymous {
                    self.note_logon_success();
                }
                self.session_valid(sid, &name, req.previous_session_id)
                    .await;
                SessionSetupResponse {
                    session_flags: flags,
                    security_buffer: outcome.token,
                }
                .encode(&mut b);
                Reply::ok(b)
            }
            AuthStep::Failed {
                status,
                user,
                domain,
            } => {
                let name = user.unwrap_or_default();
                if status == NtStatus::LOGON_FAILURE
                    && !name.is_empty()
                    && matches!(self.st.config.global.map_to_guest, MapToGuest::BadUser)
                    && self.user_unknown(&name)
                {
                    let guest = self.guest_user(&name, false)?;
                    let sess = self
                        .sessions
                        .get_mut(&sid)
                        .ok_or(NtStatus::USER_SESSION_DELETED)?;
                    info!(user = %name, "unknown user mapped to guest");
                    sess.user = Some(guest);
                    sess.state = SessionState::Valid;
                    self.session_valid(sid, &name, req.previous_session_id)
                        .await;
                    SessionSetupResponse {
                        session_flags: SESSION_FLAG_IS_GUEST,
                        security_buffer: Vec::new(),
                    }
                    .encode(&mut b);
                    return Reply::ok(b);
                }
                // A failed reauthentication deletes the session too (smbtorture reauth6).
                warn!(user = %name, domain = %domain.unwrap_or_default(), peer = %self.peer, reauth, ?status, "logon failed");
                if status == NtStatus::LOGON_FAILURE {
                    self.note_logon_failure();
                }
                self.drop_session(sid, false).await;
                Err(status)
            }
        }
    }

    /// Registers a newly valid session globally and, for a reconnect, closes
    /// the previous session of the same user wherever it lives (MS-SMB2 3.3.5.5.3).
    async fn session_valid(&mut self, sid: u64, user: &str, previous: u64) {
        if previous != 0 && previous != sid {
            match self.st.take_session_of(previous, user) {
                Some((conn, _)) if conn == self.conn_id => {
                    info!(previous, "previous session closed by reconnect");
                    self.drop_session(previous, true).await;
                }
                Some((_, close_tx)) => {
                    info!(
                        previous,
                        "asking the owning connection to close the previous session"
                    );
                    // Wait until its durable opens are disconnected, so that
                    // a durable reconnect right after this response finds them.
                    let (done, wait) = tokio::sync::oneshot::channel();
                    let close = crate::server::state::SessionClose::Session {
                        sid: previous,
                        done: Some(done),
                    };
                    if close_tx.send(close).is_ok() {
                        let _ = tokio::time::timeout(PREVIOUS_SESSION_WAIT, wait).await;
                    }
                }
                None => {}
            }
        }
        self.authenticated = true;
        let Some(sess) = self.sessions.get(&sid) else {
            return;
        };
        let keys = sess.keys.clone().unwrap_or(crypto::SessionKeys {
            signing: Vec::new(),
            encrypt_server_out: Vec::new(),
            decrypt_client_out: Vec::new(),
            application: Vec::new(),
        });
        let can_bind = sess.user.as_ref().is_some_and(|u| !u.guest && !u.anonymous)
            && !keys.signing.is_empty();
        let bind = Arc::new(crate::server::state::BindTarget {
            dialect: self.neg.dialect,
            signing: self.neg.signing.unwrap_or(SigningAlgorithm::HmacSha256),
            cipher: self.neg.cipher,
            keys,
            user: user.to_string(),
            can_bind,
            signing_required: sess.signing_required,
            encrypt_data: sess.encrypt_data,
            forward: self.fwd_tx.clone(),
        });
        self.st.register_session(
            sid,
            crate::server::state::SessionEntry {
                conn_id: self.conn_id,
                user: user.to_string(),
                close_tx: self.close_tx.clone(),
                bind,
                channels: Vec::new(),
            },
        );
    }

    /// How much longer this client's address is refused after failed logons.
    fn logon_blocked(&self) -> Option<std::time::Duration> {
        // Across all workers: the supervisor's broker keeps the counts.
        self.st
            .broker
            .logon_blocked(&self.st.logons, self.peer.ip())
    }

    /// Counts a failed logon against this client's address.
    pub fn note_logon_failure(&self) {
        let l = &self.st.config.global.limits;
        let blocked = self.st.broker.logon_failed(
            &self.st.logons,
            self.peer.ip(),
            l.failed_logon_limit,
            std::time::Duration::from_secs(l.failed_logon_window_secs),
            std::time::Duration::from_secs(l.failed_logon_lockout_secs),
        );
        if let Some(d) = blocked {
            warn!(peer = %self.peer.ip(), failures = l.failed_logon_limit, lockout_secs = d.as_secs(), "address blocked after repeated failed logons");
        }
    }

    /// A successful logon forgets this address's failures.
    pub fn note_logon_success(&self) {
        self.st
            .broker
            .logon_succeeded(&self.st.logons, self.peer.ip());
    }

    fn user_unknown(&self, name: &str) -> bool {
        self.st
            .users
            .lock()
            .ok()
            .and_then(|db| db.lookup(name).ok())
            .is_some_and(|r| r.is_none())
    }

    fn map_user(&self, name: &str, domain: &str) -> Result<User, NtStatus> {
        let rec = {
            let db = self.st.users.lock().map_err(|_| NtStatus::INTERNAL_ERROR)?;
            db.lookup(name)
                .map_err(|_| NtStatus::INTERNAL_ERROR)?
                .ok_or(NtStatus::LOGON_FAILURE)?
        };
        let acct = crate::userdb::resolve_unix_user(&rec.unix_user)
            .map_err(|_| NtStatus::LOGON_FAILURE)?;
        Ok(User {
            name: rec.name,
            domain: domain.to_string(),
            identity: Arc::new(Identity {
                uid: acct.uid,
                gid: acct.gid,
                groups: acct.groups,
            }),
            guest: false,
            anonymous: false,
        })
    }

    fn guest_user(&self, name: &str, anonymous: bool) -> Result<User, NtStatus> {
        let acct = crate::userdb::resolve_unix_user(&self.st.config.global.guest_account).map_err(|_| {
            warn!(account = %self.st.config.global.guest_account, "guest account does not exist");
            NtStatus::LOGON_FAILURE
        })?;
        Ok(User {
            name: name.to_string(),
            domain: String::new(),
            identity: Arc::new(Identity {
                uid: acct.uid,
                gid: acct.gid,
                groups: acct.groups,
            }),
            guest: !anonymous,
            anonymous,
        })
    }

    /// LOGOFF closes the session's opens; durable ones are disconnected and
    /// may be reclaimed from another session, as Windows does (smbtorture
    /// durable-open.reopen4).
    pub async fn logoff(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        LogoffRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let sid = ctx.hdr.session_id;
        self.disconnect_opens_where(|o| o.session_id == sid).await;
        self.close_pipes(sid, None);
        // Keep the session object until the response is signed, then drop it.
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.trees.clear();
        }
        self.logged_off.push(sid);
        let mut b = Reply::buf();
        b.put_u16_le(4);
        b.put_u16_le(0);
        Reply::ok(b)
    }
}
