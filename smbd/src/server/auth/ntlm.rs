//! NTLMSSP acceptor (MS-NLMP 3.2), NTLMv2 only, inside SPNEGO or raw.

use super::TargetInfo;
use crate::wire::ntlmssp::{
    self as n, decode_av_pairs, encode_av_pairs, AuthenticateMessage, AvPair, ChallengeMessage,
    NegotiateMessage,
};
use crate::wire::spnego::{self, NegState, NegTokenResp, SpnegoToken, OID_NTLMSSP};
use crate::wire::{utf16le, NtStatus};
use hmac::{Hmac, Mac};
use md4::Md4;
use md5::{Digest, Md5};
use rand::RngCore;
use rc4::consts::U16;
use rc4::{KeyInit, Rc4, StreamCipher};
use subtle::ConstantTimeEq;

const CLIENT_SIGN_MAGIC: &[u8] = b"session key to client-to-server signing key magic constant\0";
const SERVER_SIGN_MAGIC: &[u8] = b"session key to server-to-client signing key magic constant\0";
const CLIENT_SEAL_MAGIC: &[u8] = b"session key to client-to-server sealing key magic constant\0";
const SERVER_SEAL_MAGIC: &[u8] = b"session key to server-to-client sealing key magic constant\0";

/// Fixed part of NTLMv2_CLIENT_CHALLENGE before the AV pairs (2.2.2.7).
const BLOB_FIXED_LEN: usize = 28;

/// Result of one [`NtlmServer::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this token with STATUS_MORE_PROCESSING_REQUIRED.
    Continue(Vec<u8>),
    /// Authentication succeeded.
    Done(AuthOutcome),
    /// Authentication failed. `user`/`domain` are what the client claimed,
    /// when it got that far (for logging and guest mapping).
    Failed {
        status: NtStatus,
        user: Option<String>,
        domain: Option<String>,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub struct AuthOutcome {
    /// Final token for the SESSION_SETUP response: negTokenResp
    /// accept-completed (+ mechListMIC) for SPNEGO, empty for raw NTLMSSP.
    pub token: Vec<u8>,
    pub user: String,
    pub domain: String,
    pub workstation: String,
    /// NTLM ExportedSessionKey = SMB Session.SessionKey. Zero for anonymous.
    pub session_key: [u8; 16],
    pub anonymous: bool,
}

impl std::fmt::Debug for AuthOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthOutcome")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("workstation", &self.workstation)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// MD4(UTF-16LE(password)) (MS-NLMP 3.3.1 NTOWFv1).
pub fn nt_hash(password: &str) -> [u8; 16] {
    let mut h = Md4::new();
    h.update(utf16le(password));
    h.finalize().into()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC takes keys of any length; the fallback is unreachable.
    let Ok(mut mac) = <Hmac<Md5> as Mac>::new_from_slice(key) else {
        return [0u8; 16];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn rc4_new(key: &[u8; 16]) -> Rc4<U16> {
    Rc4::new(key.into())
}

/// Per-character uppercase, as Windows does (no length-changing mappings).
fn upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

/// NTOWFv2 = HMAC_MD5(NT hash, UNICODE(Uppercase(User) || UserDom)).
pub(crate) fn ntowfv2(nt_hash: &[u8; 16], user: &str, domain: &str) -> [u8; 16] {
    let mut s = upper(user);
    s.push_str(domain);
    hmac_md5(nt_hash, &[&utf16le(&s)])
}

/// SIGNKEY with extended session security (MS-NLMP 3.4.5.2).
pub(crate) fn sign_key(exported: &[u8; 16], server: bool) -> [u8; 16] {
    md5(&[
        exported,
        if server {
            SERVER_SIGN_MAGIC
        } else {
            CLIENT_SIGN_MAGIC
        },
    ])
}

/// SEALKEY with extended session security (MS-NLMP 3.4.5.3).
pub(crate) fn seal_key(flags: u32, exported: &[u8; 16], server: bool) -> [u8; 16] {
    let magic = if server {
        SERVER_SEAL_MAGIC
    } else {
        CLIENT_SEAL_MAGIC
    };
    if flags & n::NEGOTIATE_128 != 0 {
        md5(&[exported, magic])
    } else if flags & n::NEGOTIATE_56 != 0 {
        md5(&[&exported[..7], magic])
    } else {
        md5(&[&exported[..5], magic])
    }
}

/// MAC with extended session security (MS-NLMP 3.4.4.2): Version 1,
/// HMAC_MD5(SigningKey, SeqNum || Message)[0..8] (RC4-encrypted with the
/// sealing handle when KEY_EXCH was negotiated), SeqNum.
pub(crate) fn ntlm_mac(
    flags: u32,
    sign: &[u8; 16],
    seal: &mut Rc4<U16>,
    seq: u32,
    msg: &[u8],
) -> [u8; 16] {
    let full = hmac_md5(sign, &[&seq.to_le_bytes(), msg]);
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&full[..8]);
    if flags & n::NEGOTIATE_KEY_EXCH != 0 {
        seal.apply_keystream(&mut checksum);
    }
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..12].copy_from_slice(&checksum);
    out[12..].copy_from_slice(&seq.to_le_bytes());
    out
}

/// SPNEGO mechListMIC for one direction: MAC over the client's MechTypeList
/// DER with that direction's keys, sequence 0, fresh RC4 handle.
fn mech_list_mic(flags: u32, exported: &[u8; 16], server: bool, mech_types_der: &[u8]) -> [u8; 16] {
    let sign = sign_key(exported, server);
    let mut seal = rc4_new(&seal_key(flags, exported, server));
    ntlm_mac(flags, &sign, &mut seal, 0, mech_types_der)
}

fn filetime_now() -> u64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(d.subsec_nanos() / 100),
        Err(_) => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for NEGOTIATE_MESSAGE.
    Initial,
    /// CHALLENGE sent, waiting for AUTHENTICATE_MESSAGE.
    ChallengeSent,
    /// Done or failed; further tokens are refused.
    Finished,
}

/// One in-progress NTLMSSP acceptor (one per session setup).
pub struct NtlmServer {
    target: TargetInfo,
    challenge: [u8; 8],
    phase: Phase,
    /// None until the first token tells us the wrapping.
    spnego: Option<bool>,
    /// The client's MechTypeList DER (for mechListMIC).
    mech_types_der: Option<Vec<u8>>,
    /// NTLMSSP was not the client's first mechanism: mechListMIC mandatory.
    mic_required: bool,
    negotiate_msg: Vec<u8>,
    challenge_msg: Vec<u8>,
}

fn fail(status: NtStatus) -> AuthStep {
    AuthStep::Failed {
        status,
        user: None,
        domain: None,
    }
}

fn fail_user(status: NtStatus, user: &str, domain: &str) -> AuthStep {
    AuthStep::Failed {
        status,
        user: Some(user.to_string()),
        domain: Some(domain.to_string()),
    }
}

impl NtlmServer {
    pub fn new(target: TargetInfo) -> Self {
        let mut challenge = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut challenge);
        Self::with_challenge(target, challenge)
    }

    /// Fixed server challenge (tests only; never use a predictable one).
    pub fn with_challenge(target: TargetInfo, challenge: [u8; 8]) -> Self {
        NtlmServer {
            target,
            challenge,
            phase: Phase::Initial,
            spnego: None,
            mech_types_der: None,
            mic_required: false,
            negotiate_msg: Vec::new(),
            challenge_msg: Vec::new(),
        }
    }

    /// Processes one security token from SESSION_SETUP. `lookup(user,
    /// domain)` returns the account's NT hash (MD4 of the UTF-16 password).
    pub fn step(
        &mut self,
        token: &[u8],
        lookup: &dyn Fn(&str, &str) -> Option<[u8; 16]>,
    ) -> AuthStep {
        let res = self.step_inner(token, lookup);
        if !matches!(res, AuthStep::Continue(_)) {
            self.phase = Phase::Finished;
        }
        res
    }

    fn step_inner(
        &mut self,
        token: &[u8],
        lookup: &dyn Fn(&str, &str) -> Option<[u8; 16]>,
    ) -> AuthStep {
        if self.phase == Phase::Finished {
            return fail(NtStatus::INVALID_PARAMETER);
        }
        // Unwrap.
        let raw = token.starts_with(n::SIGNATURE);
        match (self.spnego, raw) {
            (None, _) => self.spnego = Some(!raw),
            (Some(s), r) if s == r => return fail(NtStatus::INVALID_PARAMETER),
            _ => {}
        }
        let (ntlm, client_mic) = if raw {
            (token.to_vec(), None)
        } else {
            match spnego::decode(token) {
                Ok(SpnegoToken::Init(init)) => {
                    if self.phase != Phase::Initial || self.mech_types_der.is_some() {
                        return fail(NtStatus::INVALID_PARAMETER);
                    }
                    if !init.mech_types.iter().any(|m| m == OID_NTLMSSP) {
                        return fail(NtStatus::NOT_SUPPORTED);
                    }
                    self.mic_required =
                        init.mech_types.first().map(|m| m.as_slice()) != Some(OID_NTLMSSP);
                    self.mech_types_der = Some(init.mech_types_der);
                    match init.mech_token {
                        Some(t) if n::message_type(&t) == Some(n::MSG_NEGOTIATE) => {
                            (t, init.mech_list_mic)
                        }
                        // Optimistic token for another mechanism (or none):
                        // select NTLMSSP and ask for its first token.
                        _ => {
                            let state = if self.mic_required {
                                NegState::RequestMic
                            } else {
                                NegState::AcceptIncomplete
                            };
                            let resp = NegTokenResp {
                                neg_state: Some(state),
                                supported_mech: Some(OID_NTLMSSP.to_vec()),
                                response_token: None,
                                mech_list_mic: None,
                            };
                            return AuthStep::Continue(resp.encode());
                        }
                    }
                }
                Ok(SpnegoToken::Resp(resp)) => {
                    if self.mech_types_der.is_none() || resp.neg_state == Some(NegState::Reject) {
                        return fail(NtStatus::INVALID_PARAMETER);
                    }
                    match resp.response_token {
                        Some(t) => (t, resp.mech_list_mic),
                        None => return fail(NtStatus::INVALID_PARAMETER),
                    }
                }
                Err(_) => return fail(NtStatus::INVALID_PARAMETER),
            }
        };
        match self.phase {
            Phase::Initial => self.on_negotiate(ntlm),
            Phase::ChallengeSent => self.on_authenticate(&ntlm, client_mic.as_deref(), lookup),
            Phase::Finished => fail(NtStatus::INVALID_PARAMETER),
        }
    }

    fn on_negotiate(&mut self, msg: Vec<u8>) -> AuthStep {
        let Ok(neg) = NegotiateMessage::decode(&msg) else {
            return fail(NtStatus::INVALID_PARAMETER);
        };
        let mut flags = n::NEGOTIATE_NTLM
            | n::NEGOTIATE_TARGET_INFO
            | n::TARGET_TYPE_SERVER
            | n::REQUEST_TARGET;
        if neg.flags & n::NEGOTIATE_UNICODE != 0 || neg.flags & n::NEGOTIATE_OEM == 0 {
            flags |= n::NEGOTIATE_UNICODE;
        } else {
            flags |= n::NEGOTIATE_OEM;
        }
        flags |= neg.flags
            & (n::NEGOTIATE_EXTENDED_SESSIONSECURITY
                | n::NEGOTIATE_128
                | n::NEGOTIATE_56
                | n::NEGOTIATE_KEY_EXCH
                | n::NEGOTIATE_SIGN
                | n::NEGOTIATE_SEAL
                | n::NEGOTIATE_ALWAYS_SIGN
                | n::NEGOTIATE_VERSION);
        let t = &self.target;
        let target_info = encode_av_pairs(&[
            AvPair {
                id: n::AV_NB_DOMAIN_NAME,
                value: utf16le(&t.netbios_domain),
            },
            AvPair {
                id: n::AV_NB_COMPUTER_NAME,
                value: utf16le(&t.netbios_computer),
            },
            AvPair {
                id: n::AV_DNS_DOMAIN_NAME,
                value: utf16le(&t.dns_domain),
            },
            AvPair {
                id: n::AV_DNS_COMPUTER_NAME,
                value: utf16le(&t.dns_computer),
            },
            AvPair {
                id: n::AV_TIMESTAMP,
                value: filetime_now().to_le_bytes().to_vec(),
            },
        ]);
        let chal = ChallengeMessage {
            flags,
            target_name: t.netbios_computer.clone(),
            server_challenge: self.challenge,
            target_info,
            version: (flags & n::NEGOTIATE_VERSION != 0).then_some(n::OUR_VERSION),
        };
        self.negotiate_msg = msg;
        self.challenge_msg = chal.encode();
        self.phase = Phase::ChallengeSent;
        if self.spnego == Some(true) {
            let state = if self.mic_required {
                NegState::RequestMic
            } else {
                NegState::AcceptIncomplete
            };
            AuthStep::Continue(
                NegTokenResp {
                    neg_state: Some(state),
                    supported_mech: Some(OID_NTLMSSP.to_vec()),
                    response_token: Some(self.challenge_msg.clone()),
                    mech_list_mic: None,
                }
                .encode(),
            )
        } else {
            AuthStep::Continue(self.challenge_msg.clone())
        }
    }

    fn final_token(&self, server_mic: Option<[u8; 16]>) -> Vec<u8> {
        if self.spnego == Some(true) {
            NegTokenResp {
                neg_state: Some(NegState::AcceptCompleted),
                supported_mech: None,
                response_token: None,
                mech_list_mic: server_mic.map(|m| m.to_vec()),
            }
            .encode()
        } else {
            Vec::new()
        }
    }

    fn on_authenticate(
        &mut self,
        msg: &[u8],
        client_mic: Option<&[u8]>,
        lookup: &dyn Fn(&str, &str) -> Option<[u8; 16]>,
    ) -> AuthStep {
        let Ok(auth) = AuthenticateMessage::decode(msg) else {
            return fail(NtStatus::INVALID_PARAMETER);
        };
        let (user, domain) = (auth.user.as_str(), auth.domain.as_str());

        // Anonymous (MS-NLMP 3.2.5.1.2).
        if user.is_empty()
            && auth.nt_response.is_empty()
            && matches!(auth.lm_response.as_slice(), [] | [0])
        {
            return AuthStep::Done(AuthOutcome {
                token: self.final_token(None),
                user: String::new(),
                domain: auth.domain.clone(),
                workstation: auth.workstation.clone(),
                session_key: [0u8; 16],
                anonymous: true,
            });
        }
        // NTLMv2 only: LM / NTLMv1 / NTLM2-session responses are 24 bytes.
        if auth.nt_response.len() <= 24 {
            return fail_user(NtStatus::LOGON_FAILURE, user, domain);
        }
        if auth.nt_response.len() < 16 + BLOB_FIXED_LEN {
            return fail_user(NtStatus::INVALID_PARAMETER, user, domain);
        }
        // A client challenge whose AV pair list does not parse is malformed,
        // not a wrong password (MS-NLMP 2.2.2.7; smbtorture ntlmssp_bug14932).
        let Ok(av) = decode_av_pairs(auth.nt_response.get(16 + BLOB_FIXED_LEN..).unwrap_or(&[]))
        else {
            return fail_user(NtStatus::INVALID_PARAMETER, user, domain);
        };
        let Some(hash) = lookup(user, domain) else {
            return fail_user(NtStatus::LOGON_FAILURE, user, domain);
        };
        let (proof, blob) = auth.nt_response.split_at(16);

        // Clients differ on the domain they hash with: try the one sent, then "".
        let mut response_key = None;
        for dom in [domain, ""] {
            let key = ntowfv2(&hash, user, dom);
            let expect = hmac_md5(&key, &[&self.challenge, blob]);
            if bool::from(expect.ct_eq(proof)) {
                response_key = Some(key);
                break;
            }
            if domain.is_empty() {
                break;
            }
        }
        let Some(response_key) = response_key else {
            return fail_user(NtStatus::LOGON_FAILURE, user, domain);
        };
        let session_base_key = hmac_md5(&response_key, &[proof]);

        // KXKEY for NTLMv2 is the session base key; KEY_EXCH decrypts the
        // client's random session key with it.
        let flags = auth.flags;
        let exported: [u8; 16] = if flags & n::NEGOTIATE_KEY_EXCH != 0 {
            match auth.encrypted_random_session_key.len() {
                16 => {
                    let mut k = [0u8; 16];
                    k.copy_from_slice(&auth.encrypted_random_session_key);
                    rc4_new(&session_base_key).apply_keystream(&mut k);
                    k
                }
                0 => session_base_key,
                _ => return fail_user(NtStatus::INVALID_PARAMETER, user, domain),
            }
        } else {
            session_base_key
        };

        // MIC (MS-NLMP 3.2.5.1.2), present when MsvAvFlags says so.
        let av_flags = av
            .iter()
            .find(|p| p.id == n::AV_FLAGS)
            .and_then(|p| p.value.get(..4))
            .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
            .unwrap_or(0);
        if av_flags & n::AV_FLAG_MIC_PRESENT != 0 {
            let Some(mic) = auth.mic else {
                return fail_user(NtStatus::LOGON_FAILURE, user, domain);
            };
            let mut zeroed = msg.to_vec();
            zeroed[n::MIC_OFFSET..n::MIC_OFFSET + 16].fill(0);
            let expect = hmac_md5(
                &exported,
                &[&self.negotiate_msg, &self.challenge_msg, &zeroed],
            );
            if !bool::from(expect.ct_eq(&mic)) {
                return fail_user(NtStatus::LOGON_FAILURE, user, domain);
            }
        }

        // SPNEGO mechListMIC (MS-SPNG 3.2.5.1, RFC 4178 5).
        let mut server_mic = None;
        if self.spnego == Some(true) {
            match (client_mic, &self.mech_types_der) {
                (Some(got), Some(der)) => {
                    let expect = mech_list_mic(flags, &exported, false, der);
                    if !bool::from(expect.as_slice().ct_eq(got)) {
                        return fail_user(NtStatus::LOGON_FAILURE, user, domain);
                    }
                    server_mic = Some(mech_list_mic(flags, &exported, true, der));
                }
                (None, _) if self.mic_required => {
                    return fail_user(NtStatus::LOGON_FAILURE, user, domain)
                }
                _ => {}
            }
        }

        AuthStep::Done(AuthOutcome {
            token: self.final_token(server_mic),
            user: auth.user.clone(),
            domain: auth.domain.clone(),
            workstation: auth.workstation.clone(),
            session_key: exported,
            anonymous: false,
        })
    }
}

#[cfg(test)]
#[path = "ntlm_tests.rs"]
mod tests;
