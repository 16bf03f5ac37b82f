//! SMB2/3 message signing (MS-SMB2 3.1.4.1) and verification (3.1.5.1).

use crate::wire::header::{FLAGS_SERVER_TO_REDIR, FLAGS_SIGNED, HEADER_LEN};
use aes::Aes128;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use cmac::Cmac;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const SIG: std::ops::Range<usize> = 48..64;
const COMMAND_CANCEL: u16 = 0x000C;

/// Signing algorithm (SMB2_SIGNING_CAPABILITIES ids, MS-SMB2 2.2.3.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// 2.0.2 / 2.1.
    HmacSha256,
    /// 3.0, 3.0.2, and 3.1.1 without a negotiated algorithm.
    AesCmac,
    /// 3.1.1 with SMB2_SIGNING_CAPABILITIES.
    AesGmac,
}

impl SigningAlgorithm {
    pub fn from_negotiate_id(id: u16) -> Option<SigningAlgorithm> {
        Some(match id {
            0 => SigningAlgorithm::HmacSha256,
            1 => SigningAlgorithm::AesCmac,
            2 => SigningAlgorithm::AesGmac,
            _ => return None,
        })
    }

    pub fn negotiate_id(self) -> u16 {
        match self {
            SigningAlgorithm::HmacSha256 => 0,
            SigningAlgorithm::AesCmac => 1,
            SigningAlgorithm::AesGmac => 2,
        }
    }
}

/// Computes the 16-byte signature of `msg`, whose signature field must
/// already be zero. `None` if the key does not fit the algorithm or the
/// message is shorter than a header.
fn compute(alg: SigningAlgorithm, key: &[u8], msg: &[u8]) -> Option<[u8; 16]> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let mut sig = [0u8; 16];
    match alg {
        SigningAlgorithm::HmacSha256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
            mac.update(msg);
            sig.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        }
        SigningAlgorithm::AesCmac => {
            let mut mac = <Cmac<Aes128> as Mac>::new_from_slice(key).ok()?;
            mac.update(msg);
            sig.copy_from_slice(&mac.finalize().into_bytes());
        }
        SigningAlgorithm::AesGmac => {
            // Nonce: MessageId (8 bytes LE), then a 32-bit LE word whose bit 0
            // is set when the sender is the server and bit 1 when the message
            // is an SMB2 CANCEL request (MS-SMB2 3.1.4.1).
            let flags = u32::from_le_bytes([msg[16], msg[17], msg[18], msg[19]]);
            let command = u16::from_le_bytes([msg[12], msg[13]]);
            let is_response = flags & FLAGS_SERVER_TO_REDIR != 0;
            let mut word = 0u32;
            if is_response {
                word |= 1;
            }
            if command == COMMAND_CANCEL && !is_response {
                word |= 2;
            }
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&msg[24..32]);
            nonce[8..].copy_from_slice(&word.to_le_bytes());
            let gcm = Aes128Gcm::new_from_slice(key).ok()?;
            let tag = gcm
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), msg, &mut [])
                .ok()?;
            sig.copy_from_slice(&tag);
        }
    }
    Some(sig)
}

/// Signs one SMB2 message in place: sets SMB2_FLAGS_SIGNED, zeroes the
/// signature field, computes the signature and writes it at [48..64].
/// `msg` is exactly this message's bytes (for a compound element: up to
/// NextCommand, padding included). A message shorter than the header is left
/// untouched; a key of the wrong size leaves an all-zero signature (which no
/// peer will accept) — keys come from [`super::derive_session_keys`], so
/// neither happens in practice.
pub fn sign_message(alg: SigningAlgorithm, key: &[u8], msg: &mut [u8]) {
    if msg.len() < HEADER_LEN {
        return;
    }
    let flags = u32::from_le_bytes([msg[16], msg[17], msg[18], msg[19]]) | FLAGS_SIGNED;
    msg[16..20].copy_from_slice(&flags.to_le_bytes());
    msg[SIG].fill(0);
    if let Some(sig) = compute(alg, key, msg) {
        msg[SIG].copy_from_slice(&sig);
    }
}

/// Verifies the signature of one SMB2 message (constant-time compare). The
/// input is not modified. Returns false for messages shorter than a header.
pub fn verify_message(alg: SigningAlgorithm, key: &[u8], msg: &[u8]) -> bool {
    if msg.len() < HEADER_LEN {
        return false;
    }
    let mut copy = msg.to_vec();
    let mut received = [0u8; 16];
    received.copy_from_slice(&copy[SIG]);
    copy[SIG].fill(0);
    match compute(alg, key, &copy) {
        Some(expected) => bool::from(expected.ct_eq(&received)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Final SESSION_SETUP response of the SMB 3.1.1 example in the Microsoft
    /// Open Specifications blog "SMB 2 and SMB 3 security in Windows 10: the
    /// anatomy of signing and cryptographic keys": signed with AES-CMAC under
    /// SigningKey 73FE7A9A77BEF0BDE49C650D8CCB5F76.
    const SIGNED_311: &str = "FE534D4240000100000000000100800009000000000000000300000000000000\
        FFFE0000000000001900000000100000EBE146DA120BA25FC3376A49DFE31BC1\
        0900000048001D00A11B3019A0030A0100A3120410010000003B453CDC3524164200000000";
    const KEY_311: &str = "73FE7A9A77BEF0BDE49C650D8CCB5F76";

    #[test]
    fn aes_cmac_published_example() {
        let signed = h(SIGNED_311);
        let key = h(KEY_311);
        assert!(verify_message(SigningAlgorithm::AesCmac, &key, &signed));
        let mut m = signed.clone();
        m[48..64].fill(0xAA);
        sign_message(SigningAlgorithm::AesCmac, &key, &mut m);
        assert_eq!(m, signed);
        // Second channel of the same example (SigningKey C962...).
        let second = h(
            "FE534D4240000100000000000100800009000000000000000300000000000000\
            FFFE00000000000019000000001000008D604217FFBACF40635BF9D872992150\
            0900000048001D00A11B3019A0030A0100A312041001000000CFB046FC5D368E2200000000",
        );
        assert!(verify_message(
            SigningAlgorithm::AesCmac,
            &h("C962BCA1A9DD1697B030644199705431"),
            &second
        ));
    }

    fn sample(response: bool, command: u16) -> Vec<u8> {
        let mut m = vec![0u8; 64 + 24];
        m[..4].copy_from_slice(&[0xFE, b'S', b'M', b'B']);
        m[4] = 64;
        m[12..14].copy_from_slice(&command.to_le_bytes());
        if response {
            m[16] = 1;
        }
        m[24..32].copy_from_slice(&0x1234u64.to_le_bytes());
        for (i, b) in m[64..].iter_mut().enumerate() {
            *b = i as u8;
        }
        m
    }

    #[test]
    fn hmac_sha256_independent_value() {
        let key = [0x42u8; 16];
        let mut m = sample(true, 5);
        sign_message(SigningAlgorithm::HmacSha256, &key, &mut m);
        assert_eq!(m[16] & 0x08, 0x08);
        let mut zeroed = m.clone();
        zeroed[48..64].fill(0);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&zeroed);
        assert_eq!(&m[48..64], &mac.finalize().into_bytes()[..16]);
    }

    #[test]
    fn gmac_nonce_layout_independent_value() {
        let key = [0x17u8; 16];
        for (response, cmd, word) in [(false, 5u16, 0u32), (true, 5, 1), (false, 12, 2)] {
            let mut m = sample(response, cmd);
            sign_message(SigningAlgorithm::AesGmac, &key, &mut m);
            let mut zeroed = m.clone();
            zeroed[48..64].fill(0);
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&0x1234u64.to_le_bytes());
            nonce[8..].copy_from_slice(&word.to_le_bytes());
            let tag = Aes128Gcm::new_from_slice(&key)
                .unwrap()
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), &zeroed, &mut [])
                .unwrap();
            assert_eq!(&m[48..64], tag.as_slice());
        }
    }

    #[test]
    fn sign_verify_tamper_all() {
        let key = [9u8; 16];
        for alg in [
            SigningAlgorithm::HmacSha256,
            SigningAlgorithm::AesCmac,
            SigningAlgorithm::AesGmac,
        ] {
            let mut m = sample(false, 8);
            sign_message(alg, &key, &mut m);
            assert!(verify_message(alg, &key, &m), "{alg:?}");
            assert!(!verify_message(alg, &[8u8; 16], &m), "{alg:?} wrong key");
            for idx in [0usize, 16, 24, 50, 70, m.len() - 1] {
                let mut t = m.clone();
                t[idx] ^= 0x01;
                assert!(!verify_message(alg, &key, &t), "{alg:?} tamper {idx}");
            }
            assert!(!verify_message(alg, &key, &m[..63]));
        }
        // The role bit matters for GMAC: a response signature does not verify
        // as a request with the same bytes otherwise.
        let mut r = sample(true, 8);
        sign_message(SigningAlgorithm::AesGmac, &key, &mut r);
        r[16] &= !1;
        assert!(!verify_message(SigningAlgorithm::AesGmac, &key, &r));
    }

    #[test]
    fn bad_key_never_panics() {
        let mut m = sample(false, 1);
        sign_message(SigningAlgorithm::AesCmac, &[1, 2, 3], &mut m);
        assert_eq!(&m[48..64], &[0u8; 16]);
        assert!(!verify_message(SigningAlgorithm::AesGmac, &[], &m));
        let mut short = vec![0u8; 10];
        sign_message(SigningAlgorithm::HmacSha256, &[1; 16], &mut short);
        assert_eq!(short, vec![0u8; 10]);
    }
}
