//! Multichannel: binding a second connection to a session (MS-SMB2
//! 3.3.5.5.2) and serving requests that arrive on it.
//!
//! A session's state (tree connects, opens, pending requests) lives on the
//! connection that created it. Another connection bound to the session keeps
//! a [`Channel`]: its own signing key and a copy of the session keys. It
//! checks the signature (or decrypts) and the credits of a request for the
//! session, then forwards the plain chain to the owning connection, which
//! processes it like its own and sends the responses, signed with the
//! channel's key, straight to the binding connection's writer.
//!
//! When the binding connection ends, only its channel goes. When the owning
//! connection ends, the session ends with it (its state cannot move yet);
//! the other channels are told to forget it.

use super::conn::{Connection, Ctx, Reply};
use super::state::BindTarget;
use crate::server::auth::{AuthStep, NtlmServer};
use crate::server::crypto::{self, PreauthHash, SigningAlgorithm};
use crate::wire::header::offsets;
use crate::wire::session::{SessionSetupRequest, SessionSetupResponse};
use crate::wire::{Command, Header, NtStatus};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Where the responses to a forwarded request go, and how they are signed.
#[derive(Clone)]
pub struct Route {
    /// The connection the request arrived on.
    pub conn_id: u64,
    /// That connection's writer.
    pub out: mpsc::UnboundedSender<BytesMut>,
    /// Its channel signing key and algorithm.
    pub key: Vec<u8>,
    pub alg: SigningAlgorithm,
    /// What that connection negotiated (VALIDATE_NEGOTIATE_INFO arriving on
    /// it is checked against these, not the owner's, MS-SMB2 3.3.5.15.12).
    pub neg: Arc<super::conn::Negotiated>,
}

/// A request chain that arrived on another channel of a session owned here.
pub struct Forwarded {
    /// The plain chain (decrypted if it came encrypted).
    pub chain: Vec<u8>,
    /// Session whose key decrypted it; the response is encrypted with it.
    pub encrypted: Option<u64>,
    pub route: Route,
    /// Credits the arriving connection granted, one per response in order.
    pub grants: Vec<u16>,
}

/// Per-chain state while the owning connection processes a forwarded chain.
pub struct Foreign {
    pub route: Route,
    pub grants: Vec<u16>,
    pub next: usize,
}

impl Foreign {
    /// Credits for the next response of the chain.
    pub fn take_grant(&mut self) -> u16 {
        let g = self.grants.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        g
    }
}

pub enum ChannelState {
    /// The binding authentication is under way.
    Binding {
        ntlm: Box<NtlmServer>,
        /// Channel.PreauthIntegrityHashValue (3.1.1).
        preauth: PreauthHash,
    },
    /// Bound: requests for the session are served on this connection.
    Bound { key: Vec<u8> },
}

/// This connection's channel of a session owned by another connection.
pub struct Channel {
    pub target: Arc<BindTarget>,
    pub state: ChannelState,
    /// Counter of the AEAD nonces this connection sends itself for the
    /// session (rare: only refusals); the top bit keeps them apart from the
    /// owning connection's nonces under the same key.
    pub nonce_counter: u64,
}

impl Channel {
    /// The channel signing key, once bound.
    pub fn key(&self) -> Option<&[u8]> {
        match &self.state {
            ChannelState::Bound { key } => Some(key),
            ChannelState::Binding { .. } => None,
        }
    }

    pub fn next_nonce(&mut self, len: usize) -> Vec<u8> {
        self.nonce_counter += 1;
        let mut n = (self.nonce_counter | 1 << 63).to_le_bytes().to_vec();
        n.resize(len.max(8), 0);
        n.truncate(len);
        n
    }
}

/// The status a new binding of a connection (dialect, signing algorithm,
/// cipher) to a session gets, if it is refused. The order follows what
/// Windows answers (smbtorture smb2.session.bind_negative_*): a GMAC
/// mismatch first, then the dialect family, the cipher, and the dialect.
pub fn bind_refusal(
    target: &BindTarget,
    dialect: u16,
    signing: Option<SigningAlgorithm>,
    cipher: Option<crypto::Cipher>,
    multichannel: bool,
) -> Option<NtStatus> {
    let gmac = SigningAlgorithm::AesGmac;
    if target.signing == gmac && signing != Some(gmac) {
        return Some(NtStatus::REQUEST_OUT_OF_SEQUENCE);
    }
    if signing == Some(gmac) && target.signing != gmac {
        return Some(NtStatus::NOT_SUPPORTED);
    }
    if dialect < 0x0300 || !multichannel {
        return Some(NtStatus::REQUEST_NOT_ACCEPTED);
    }
    if target.cipher != cipher || target.dialect != dialect {
        return Some(NtStatus::INVALID_PARAMETER);
    }
    if !target.can_bind {
        return Some(NtStatus::NOT_SUPPORTED);
    }
    None
}

impl Connection {
    /// True if this connection may serve requests on other channels' sessions.
    fn multichannel(&self) -> bool {
        self.neg.server_caps & crate::wire::negotiate::GLOBAL_CAP_MULTI_CHANNEL != 0
    }

    /// SESSION_SETUP with SMB2_SESSION_FLAG_BINDING (MS-SMB2 3.3.5.5.2).
    pub async fn session_bind(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &SessionSetupRequest,
    ) -> Result<Reply, NtStatus> {
        let sid = ctx.hdr.session_id;
        if !self.st.config.global.server_multi_channel_support {
            warn!(
                sid,
                "session binding refused: server multi channel support = no"
            );
            return Err(NtStatus::REQUEST_NOT_ACCEPTED);
        }
        if sid == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let target = match self.channels.get(&sid) {
            Some(c) => c.target.clone(),
            None => self
                .st
                .bind_target(sid)
                .ok_or(NtStatus::USER_SESSION_DELETED)?,
        };
        if !ctx.hdr.is_signed() {
            warn!(sid, "unsigned session binding request");
            return Err(NtStatus::INVALID_PARAMETER);
        }
        match self.channels.get(&sid).map(|c| &c.state) {
            Some(ChannelState::Bound { .. }) => {
                warn!(sid, "session already bound on this connection");
                return Err(NtStatus::REQUEST_NOT_ACCEPTED);
            }
            Some(ChannelState::Binding { .. }) => {}
            None => {
                if let Some(status) = bind_refusal(
                    &target,
                    self.neg.dialect,
                    self.neg.signing,
                    self.neg.cipher,
                    self.multichannel(),
                ) {
                    warn!(sid, ?status, "session binding refused");
                    return Err(status);
                }
                if self.sessions.contains_key(&sid) {
                    return Err(NtStatus::REQUEST_NOT_ACCEPTED);
                }
                self.channels.insert(
                    sid,
                    Channel {
                        target: target.clone(),
                        state: ChannelState::Binding {
                            ntlm: Box::new(NtlmServer::new(self.st.target.clone())),
                            preauth: self.preauth.clone(),
                        },
                        nonce_counter: 0,
                    },
                );
            }
        }
        let dialect = self.neg.dialect;
        let st = self.st.clone();
        let Some(Channel {
            state: ChannelState::Binding { ntlm, preauth },
            ..
        }) = self.channels.get_mut(&sid)
        else {
            return Err(NtStatus::INTERNAL_ERROR);
        };
        if dialect == 0x0311 {
            preauth.update(ctx.msg);
        }
        let lookup = |user: &str, _domain: &str| -> Option<[u8; 16]> {
            let db = st.users.lock().ok()?;
            db.lookup(user).ok().flatten().map(|r| r.nt_hash)
        };
        let step = ntlm.step(&req.security_buffer, &lookup);
        let preauth_value = *preauth.value();
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
                let same_user = !outcome.anonymous
                    && self
                        .bind_user_name(&outcome.user)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&target.user));
                if !same_user {
                    // A channel carries the session's user; another user (or
                    // anonymous) is refused (MS-SMB2 3.3.5.5.3).
                    warn!(sid, user = %outcome.user, session_user = %target.user, peer = %self.peer, "session binding as a different user refused");
                    self.channels.remove(&sid);
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let preauth = (dialect == 0x0311).then_some(preauth_value);
                let key = crypto::derive_session_keys(
                    dialect,
                    &outcome.session_key,
                    preauth.as_ref(),
                    self.neg.cipher,
                )
                .signing;
                if !self
                    .st
                    .add_channel(sid, self.conn_id, self.close_tx.clone())
                {
                    self.channels.remove(&sid);
                    return Err(NtStatus::USER_SESSION_DELETED);
                }
                if let Some(c) = self.channels.get_mut(&sid) {
                    c.state = ChannelState::Bound { key };
                }
                self.note_logon_success();
                self.authenticated = true;
                info!(sid, user = %target.user, channels = self.st.channel_count(sid) + 1, "channel bound to session");
                SessionSetupResponse {
                    session_flags: 0,
                    security_buffer: outcome.token,
                }
                .encode(&mut b);
                Reply::ok(b)
            }
            AuthStep::Failed { status, user, .. } => {
                warn!(sid, user = %user.unwrap_or_default(), peer = %self.peer, ?status, "session binding logon failed");
                self.channels.remove(&sid);
                if status == NtStatus::LOGON_FAILURE {
                    self.note_logon_failure();
                }
                Err(status)
            }
        }
    }

    /// The account name a binding authenticated as, if it is a known user.
    fn bind_user_name(&self, name: &str) -> Option<String> {
        let db = self.st.users.lock().ok()?;
        db.lookup(name).ok().flatten().map(|r| r.name)
    }

    /// Checks a request for a session bound here as a channel: signature
    /// with the channel key (or the session key while binding), signing and
    /// encryption requirements. Ok(Some(..)) names the session key that
    /// verified a binding request, for signing its response.
    pub fn check_channel_request(
        &self,
        hdr: &Header,
        msg: &[u8],
    ) -> Result<Option<(Vec<u8>, SigningAlgorithm)>, NtStatus> {
        let cmd = hdr.cmd();
        let setup = matches!(cmd, Some(Command::SessionSetup));
        let Some(ch) = self.channels.get(&hdr.session_id) else {
            // Not ours at all: a signed request naming a session of another
            // connection is checked with that session's key, so that the
            // refusal can be signed (MS-SMB2 3.3.5.2.4).
            if hdr.is_signed() {
                if let Some(t) = self.st.bind_target(hdr.session_id) {
                    if t.can_bind {
                        if crypto::verify_message(t.signing, &t.keys.signing, msg) {
                            return Ok(Some((t.keys.signing.clone(), t.signing)));
                        }
                        if setup {
                            // Never start a binding that the session key did not sign.
                            warn!(
                                mid = hdr.message_id,
                                "bad signature on a session setup for another connection's session"
                            );
                            return Err(NtStatus::ACCESS_DENIED);
                        }
                    }
                }
            }
            return Ok(None);
        };
        if self.encrypted_chain.is_some() {
            return Ok(None);
        }
        match &ch.state {
            ChannelState::Binding { .. } => {
                let t = &ch.target;
                if hdr.is_signed() {
                    if !crypto::verify_message(t.signing, &t.keys.signing, msg) {
                        warn!(mid = hdr.message_id, "bad signature on a binding request");
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                    return Ok(Some((t.keys.signing.clone(), t.signing)));
                }
                Ok(None)
            }
            ChannelState::Bound { key } => {
                if ch.target.encrypt_data && !setup {
                    warn!(
                        mid = hdr.message_id,
                        "unencrypted request on a channel of a session that requires encryption"
                    );
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if hdr.is_signed() {
                    let alg = self.neg.signing.ok_or(NtStatus::ACCESS_DENIED)?;
                    if !crypto::verify_message(alg, key, msg) {
                        warn!(mid = hdr.message_id, "bad signature on a channel");
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                } else if ch.target.signing_required {
                    // Even a reauthentication: on a channel the signature is
                    // the only proof that the request belongs to the session.
                    warn!(
                        mid = hdr.message_id,
                        "unsigned request on a channel of a session that requires signing"
                    );
                    return Err(NtStatus::ACCESS_DENIED);
                }
                Ok(None)
            }
        }
    }

    /// Forwards a chain whose first request names a session bound here as a
    /// channel to the session's owning connection. Returns false (and
    /// consumes nothing) when the chain is to be answered here: a binding
    /// request, a failed check, or a session that is gone.
    pub fn try_forward(&mut self, buf: &[u8], bounds: &[(usize, usize)]) -> Result<bool, String> {
        let Some(&(s0, e0)) = bounds.first() else {
            return Ok(false);
        };
        let Ok(first) = Header::decode(&buf[s0..e0]) else {
            return Ok(false);
        };
        let sid = first.session_id;
        let Some(ch) = self.channels.get(&sid) else {
            return Ok(false);
        };
        let ChannelState::Bound { key } = &ch.state else {
            return Ok(false);
        };
        if ch.target.forward.is_closed() {
            debug!(sid, "owning connection of a bound session is gone");
            self.channels.remove(&sid);
            return Ok(false);
        }
        let (Some(alg), Some(out)) = (self.neg.signing, self.out_tx.clone()) else {
            return Ok(false);
        };
        let mut hdrs = Vec::with_capacity(bounds.len());
        for &(s, e) in bounds {
            let msg = &buf[s..e];
            let Ok(h) = Header::decode(msg) else {
                return Ok(false);
            };
            let binding_setup = h.cmd() == Some(Command::SessionSetup)
                && SessionSetupRequest::decode(msg)
                    .is_ok_and(|r| r.flags & crate::wire::session::SESSION_FLAG_BINDING != 0);
            if h.is_response()
                || matches!(h.cmd(), None | Some(Command::Negotiate))
                || binding_setup
                || (!h.is_related() && h.session_id != sid)
                || self.check_channel_request(&h, msg).is_err()
            {
                return Ok(false);
            }
            hdrs.push(h);
        }
        let route = Route {
            conn_id: self.conn_id,
            out,
            key: key.clone(),
            alg,
            neg: Arc::new(self.neg.clone()),
        };
        let forward = ch.target.forward.clone();
        let mut grants = Vec::with_capacity(hdrs.len());
        for h in &hdrs {
            if h.cmd() == Some(Command::Cancel) {
                continue;
            }
            if !self.consume_credits(h) {
                return Err(format!(
                    "message id {} outside the credit window",
                    h.message_id
                ));
            }
            grants.push(self.credits.grant(h.credits.max(1)));
        }
        let fwd = Forwarded {
            chain: buf.to_vec(),
            encrypted: self.encrypted_chain,
            route,
            grants,
        };
        if forward.send(fwd).is_err() {
            // The owner went away between the check and now: the credits
            // are spent, the client times out these requests.
            warn!(sid, "owning connection of a bound session vanished");
            self.channels.remove(&sid);
        }
        Ok(true)
    }

    /// Processes a chain forwarded by another channel of a session owned
    /// here and sends the answer to that channel.
    pub async fn process_forwarded(&mut self, f: Forwarded) {
        let saved_enc = std::mem::replace(&mut self.encrypted_chain, f.encrypted);
        let saved_term = self.terminate;
        let out = f.route.out.clone();
        self.foreign = Some(Foreign {
            route: f.route,
            grants: f.grants,
            next: 0,
        });
        let r = self.process_chain(&f.chain).await;
        self.foreign = None;
        self.encrypted_chain = saved_enc;
        if self.terminate && !saved_term {
            // A violation on the other channel is that channel's problem.
            warn!("protocol violation in a forwarded chain ignored here");
            self.terminate = false;
        }
        self.finish_logoffs();
        let resp = match r {
            Ok(Some(resp)) => resp,
            Ok(None) => return,
            Err(why) => {
                warn!(reason = %why, "forwarded chain dropped");
                return;
            }
        };
        let frame = match f.encrypted {
            Some(sid) => match self.encrypt_for(sid, &resp) {
                Ok(fr) => fr,
                Err(e) => {
                    debug!(error = %e, "forwarded response dropped");
                    return;
                }
            },
            None => resp,
        };
        let _ = out.send(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::crypto::{Cipher, SessionKeys};

    fn target(dialect: u16, signing: SigningAlgorithm, cipher: Option<Cipher>) -> BindTarget {
        let (tx, _rx) = mpsc::unbounded_channel();
        BindTarget {
            dialect,
            signing,
            cipher,
            keys: crypto::derive_session_keys(dialect, &[7; 16], Some(&[1; 64]), cipher),
            user: "u".into(),
            can_bind: true,
            signing_required: false,
            encrypt_data: false,
            forward: tx,
        }
    }

    #[test]
    fn bind_refusals_follow_windows_order() {
        use SigningAlgorithm::*;
        let t = target(0x0311, AesCmac, Some(Cipher::Aes128Gcm));
        let g = Some(Cipher::Aes128Gcm);
        assert_eq!(bind_refusal(&t, 0x0311, Some(AesCmac), g, true), None);
        // A different non-GMAC algorithm is allowed (the channel has its own key).
        assert_eq!(bind_refusal(&t, 0x0311, Some(HmacSha256), g, true), None);
        assert_eq!(
            bind_refusal(&t, 0x0311, Some(AesGmac), g, true),
            Some(NtStatus::NOT_SUPPORTED)
        );
        let tg = target(0x0311, AesGmac, g);
        assert_eq!(
            bind_refusal(&tg, 0x0311, Some(AesCmac), g, true),
            Some(NtStatus::REQUEST_OUT_OF_SEQUENCE)
        );
        assert_eq!(
            bind_refusal(&t, 0x0210, Some(HmacSha256), None, false),
            Some(NtStatus::REQUEST_NOT_ACCEPTED)
        );
        assert_eq!(
            bind_refusal(&t, 0x0311, Some(AesCmac), Some(Cipher::Aes128Ccm), true),
            Some(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            bind_refusal(&t, 0x0302, Some(AesCmac), g, true),
            Some(NtStatus::INVALID_PARAMETER)
        );
        let two = target(0x0210, HmacSha256, None);
        assert_eq!(
            bind_refusal(&two, 0x0302, Some(AesCmac), None, true),
            Some(NtStatus::INVALID_PARAMETER)
        );
        let mut guest = target(0x0311, AesCmac, g);
        guest.can_bind = false;
        guest.keys = SessionKeys {
            signing: Vec::new(),
            encrypt_server_out: Vec::new(),
            decrypt_client_out: Vec::new(),
            application: Vec::new(),
        };
        assert_eq!(
            bind_refusal(&guest, 0x0311, Some(AesCmac), g, true),
            Some(NtStatus::NOT_SUPPORTED)
        );
    }

    #[test]
    fn channel_nonces_never_meet_session_nonces() {
        let mut c = Channel {
            target: Arc::new(target(0x0311, SigningAlgorithm::AesCmac, None)),
            state: ChannelState::Bound { key: vec![1; 16] },
            nonce_counter: 0,
        };
        let a = c.next_nonce(12);
        let b = c.next_nonce(12);
        assert_ne!(a, b);
        assert_eq!(a[7] & 0x80, 0x80, "top counter bit marks channel nonces");
        assert_eq!(c.next_nonce(11).len(), 11);
        assert_eq!(c.key(), Some(&[1u8; 16][..]));
    }
}
