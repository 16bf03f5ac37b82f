//! Sessions and the user a session acts as.

use crate::server::auth::NtlmServer;
use crate::server::crypto::{PreauthHash, SessionKeys};
use crate::server::state::Share;
use kmod_interface::identity::Identity;
use std::collections::HashMap;
use std::sync::Arc;

/// Who a session is, for access checks and for the file system.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub domain: String,
    pub identity: Arc<Identity>,
    pub guest: bool,
    pub anonymous: bool,
}

pub enum SessionState {
    /// Authentication under way.
    InProgress(Box<NtlmServer>),
    Valid,
    /// Reauthentication under way: the session stays usable with its old
    /// user and keys until the new exchange succeeds (MS-SMB2 3.3.5.5.3).
    Reauth(Box<NtlmServer>),
}

/// A tree connect.
pub struct Tree {
    pub id: u32,
    pub share: Arc<Share>,
    pub read_only: bool,
    pub maximal_access: u32,
    /// Requests on this tree must arrive encrypted (`smb encrypt = required`).
    pub encrypt: bool,
}

pub struct Session {
    pub id: u64,
    pub state: SessionState,
    pub user: Option<User>,
    pub keys: Option<SessionKeys>,
    pub signing_required: bool,
    pub preauth: PreauthHash,
    pub trees: HashMap<u32, Tree>,
    next_tree: u32,
    /// Every request and response must be encrypted (SMB2_SESSION_FLAG_ENCRYPT_DATA).
    pub encrypt_data: bool,
    /// Fixed random part and counter of the AEAD nonces this session sends.
    nonce_prefix: [u8; 4],
    nonce_counter: u64,
}

impl Session {
    pub fn new(id: u64, ntlm: NtlmServer, preauth: PreauthHash) -> Self {
        Session {
            id,
            state: SessionState::InProgress(Box::new(ntlm)),
            user: None,
            keys: None,
            signing_required: false,
            preauth,
            trees: HashMap::new(),
            next_tree: 1,
            encrypt_data: false,
            nonce_prefix: rand::random(),
            nonce_counter: 0,
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self.state, SessionState::Valid | SessionState::Reauth(_))
    }

    /// The exchange under way, if any, and whether it reauthenticates.
    pub fn ntlm_mut(&mut self) -> Option<(&mut NtlmServer, bool)> {
        match &mut self.state {
            SessionState::InProgress(n) => Some((n, false)),
            SessionState::Reauth(n) => Some((n, true)),
            SessionState::Valid => None,
        }
    }

    /// The signing key, if this session has one (not for guest or anonymous).
    pub fn signing_key(&self) -> Option<&[u8]> {
        self.keys.as_ref().map(|k| k.signing.as_slice())
    }

    /// A nonce never used before with this session's key: a counter plus a random part.
    pub fn next_nonce(&mut self, len: usize) -> Vec<u8> {
        self.nonce_counter += 1;
        let mut n = self.nonce_counter.to_le_bytes().to_vec();
        n.extend_from_slice(&self.nonce_prefix);
        n.truncate(len);
        n
    }

    pub fn add_tree(&mut self, share: Arc<Share>, read_only: bool, maximal_access: u32) -> u32 {
        let id = self.next_tree;
        self.next_tree = self.next_tree.wrapping_add(1).max(1);
        self.trees.insert(
            id,
            Tree {
                id,
                share,
                read_only,
                maximal_access,
                encrypt: false,
            },
        );
        id
    }
}
