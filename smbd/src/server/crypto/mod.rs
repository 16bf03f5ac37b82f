//! SMB2/3 cryptography (MS-SMB2 3.1.4): SP800-108 key derivation, session key
//! schedule, message signing (HMAC-SHA256, AES-CMAC, AES-GMAC), message
//! encryption (AES-128/256-CCM/GCM transform) and the 3.1.1 preauth hash.
//! All primitives come from RustCrypto crates; only the KDF loop is ours.

mod encryption;
mod kdf;
mod preauth;
mod signing;

pub use encryption::{
    decrypt_message, encrypt_message, transform_session_id, Cipher, CryptoError,
    TRANSFORM_HEADER_LEN,
};
pub use kdf::{derive_session_keys, kdf_sp800_108, SessionKeys};
pub use preauth::PreauthHash;
pub use signing::{sign_message, verify_message, SigningAlgorithm};
