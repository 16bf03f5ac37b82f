//! SMB 3.x message encryption with the TRANSFORM_HEADER (MS-SMB2 2.2.41,
//! 3.1.4.3) and decryption (3.3.5.2.1.1).

use aes::{Aes128, Aes256};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ccm::consts::{U11, U16};
use ccm::Ccm;

type Aes128Ccm = Ccm<Aes128, U16, U11>;
type Aes256Ccm = Ccm<Aes256, U16, U11>;

pub const TRANSFORM_HEADER_LEN: usize = 52;
const PROTOCOL_ID: [u8; 4] = [0xFD, b'S', b'M', b'B'];
/// Flags (3.1.1) / EncryptionAlgorithm (3.0.x): 0x0001 in both cases.
const FLAGS_ENCRYPTED: u16 = 0x0001;
const AAD: std::ops::Range<usize> = 20..52;

/// Encryption cipher ids (SMB2_ENCRYPTION_CAPABILITIES, MS-SMB2 2.2.3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Ccm = 1,
    Aes128Gcm = 2,
    Aes256Ccm = 3,
    Aes256Gcm = 4,
}

impl Cipher {
    pub fn from_u16(v: u16) -> Option<Cipher> {
        Some(match v {
            1 => Cipher::Aes128Ccm,
            2 => Cipher::Aes128Gcm,
            3 => Cipher::Aes256Ccm,
            4 => Cipher::Aes256Gcm,
            _ => return None,
        })
    }

    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Ccm | Cipher::Aes128Gcm => 16,
            Cipher::Aes256Ccm | Cipher::Aes256Gcm => 32,
        }
    }

    /// AEAD nonce length: 11 for CCM, 12 for GCM.
    pub fn nonce_len(self) -> usize {
        match self {
            Cipher::Aes128Ccm | Cipher::Aes256Ccm => 11,
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => 12,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("transform message truncated")]
    Truncated,
    #[error("not a transform header")]
    BadProtocolId,
    #[error("unsupported transform flags")]
    BadFlags,
    #[error("OriginalMessageSize does not match the message")]
    SizeMismatch,
    #[error("key length does not match the cipher")]
    BadKey,
    #[error("decryption failed (bad tag)")]
    AuthFailed,
}

/// Runs the AEAD in place; returns the tag, or None on a bad key.
fn seal(cipher: Cipher, key: &[u8], nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> Option<[u8; 16]> {
    macro_rules! go {
        ($t:ty) => {{
            let c = <$t>::new_from_slice(key).ok()?;
            let tag = c.encrypt_in_place_detached(nonce.into(), aad, buf).ok()?;
            let mut out = [0u8; 16];
            out.copy_from_slice(&tag);
            Some(out)
        }};
    }
    match cipher {
        Cipher::Aes128Ccm => go!(Aes128Ccm),
        Cipher::Aes256Ccm => go!(Aes256Ccm),
        Cipher::Aes128Gcm => go!(Aes128Gcm),
        Cipher::Aes256Gcm => go!(Aes256Gcm),
    }
}

fn open(
    cipher: Cipher,
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    macro_rules! go {
        ($t:ty) => {{
            let c = <$t>::new_from_slice(key).map_err(|_| CryptoError::BadKey)?;
            c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
                .map_err(|_| CryptoError::AuthFailed)
        }};
    }
    match cipher {
        Cipher::Aes128Ccm => go!(Aes128Ccm),
        Cipher::Aes256Ccm => go!(Aes256Ccm),
        Cipher::Aes128Gcm => go!(Aes128Gcm),
        Cipher::Aes256Gcm => go!(Aes256Gcm),
    }
}

/// Encrypts one SMB2 message (or compound chain) and returns TRANSFORM_HEADER
/// followed by the ciphertext.
///
/// `nonce` is the caller's unique per-message nonce: 11 bytes for CCM, 12 for
/// GCM; it is zero-padded to the 16-byte Nonce field. A 16-byte `nonce` is
/// written to the Nonce field verbatim (its first 11/12 bytes are the AEAD
/// nonce), which reproduces Windows traces. Any other length is zero-padded
/// or truncated to the AEAD nonce length (a caller bug, caught by a debug
/// assertion). With a key of the wrong length (also a caller bug) the body
/// is zeroed rather than sent in clear and the signature is all-zero, so the
/// peer rejects the message.
pub fn encrypt_message(
    cipher: Cipher,
    key: &[u8],
    session_id: u64,
    nonce: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let n = cipher.nonce_len();
    debug_assert!(nonce.len() == n || nonce.len() == 16, "nonce length");
    debug_assert_eq!(key.len(), cipher.key_len(), "key length");
    let mut field = [0u8; 16];
    if nonce.len() == 16 {
        field.copy_from_slice(nonce);
    } else {
        let k = nonce.len().min(n);
        field[..k].copy_from_slice(&nonce[..k]);
    }
    let mut out = Vec::with_capacity(TRANSFORM_HEADER_LEN + plaintext.len());
    out.extend_from_slice(&PROTOCOL_ID);
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&field);
    out.extend_from_slice(&(plaintext.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&FLAGS_ENCRYPTED.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(plaintext);
    let (hdr, body) = out.split_at_mut(TRANSFORM_HEADER_LEN);
    match seal(cipher, key, &field[..n], &hdr[AAD], body) {
        Some(tag) => hdr[4..20].copy_from_slice(&tag),
        None => {
            // Never leak plaintext on a key error.
            body.fill(0);
        }
    }
    out
}

/// The SessionId of a transform message, if it is long enough and has the
/// transform protocol id.
pub fn transform_session_id(transform_msg: &[u8]) -> Option<u64> {
    if transform_msg.len() < TRANSFORM_HEADER_LEN || transform_msg[..4] != PROTOCOL_ID {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&transform_msg[44..52]);
    Some(u64::from_le_bytes(b))
}

/// Checks and decrypts a transform message; returns (SessionId, plaintext).
pub fn decrypt_message(
    cipher: Cipher,
    key: &[u8],
    transform_msg: &[u8],
) -> Result<(u64, Vec<u8>), CryptoError> {
    if transform_msg.len() < TRANSFORM_HEADER_LEN {
        return Err(CryptoError::Truncated);
    }
    if transform_msg[..4] != PROTOCOL_ID {
        return Err(CryptoError::BadProtocolId);
    }
    let (hdr, body) = transform_msg.split_at(TRANSFORM_HEADER_LEN);
    let flags = u16::from_le_bytes([hdr[42], hdr[43]]);
    if flags != FLAGS_ENCRYPTED {
        return Err(CryptoError::BadFlags);
    }
    let size = u32::from_le_bytes([hdr[36], hdr[37], hdr[38], hdr[39]]) as usize;
    if size != body.len() || size == 0 {
        return Err(CryptoError::SizeMismatch);
    }
    if key.len() != cipher.key_len() {
        return Err(CryptoError::BadKey);
    }
    let session_id = transform_session_id(transform_msg).ok_or(CryptoError::Truncated)?;
    let mut plain = body.to_vec();
    let nonce = &hdr[20..20 + cipher.nonce_len()];
    open(cipher, key, nonce, &hdr[AAD], &mut plain, &hdr[4..20])?;
    Ok((session_id, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // Microsoft Open Specifications blog "Encryption in SMB 3.0: A protocol
    // perspective" (SessionKey B4546771..., AES-128-CCM).
    const SID_300: u64 = 0x8e40014000011;
    const WRITE_PLAIN: &str = "FE534D4240000100000000000900400008000000000000000400000000000000\
        FFFE0000010000001100001400E4080000000000000000000000000000000000\
        3100700017000000000000000000000015010000390000020100000039020000\
        00000000000000007000000000000000536D623320656E6372797074696F6E20\
        74657374696E67";
    const WRITE_TRANSFORMED: &str =
        "FD534D4281A286535415445DAE393921E44FA42E66E69A111892584FB5ED524A\
        744DA3EE87000000000001001100001400E4080025C8FEE16605A437832D1CD5\
        2DA9F4645333482A175FE5384563F45FCDAFAEF38BC62BA4D5C62897996625A4\
        4C29BE5658DE2E6117585779E7B59FFD971278D08580D7FA899E410E910EABF5\
        AA1DB43050B33B49182637759AC15D84BFCDF5B6B238993C0F4CF4D6012023F6\
        C627297075D84B7803912D0A9639634453595EF3E33FFE4E7AC2AB";
    const READ_RESP_TRANSFORMED: &str =
        "FD534D42ABD518B68C2F04D7879F482B689EB83F870000000000000011000014\
        00E4080067000000000001001100001400E40800493D6FE2BDBEB435CF5F5469\
        70C7BB57BF20E713C75A3D045507E0D68E5C0346659D6FFB8AC1504A786CA2BB\
        89C9E7FE4F313E910A04180D2D0EA7DF636329E5A3285984500EF86FE9D55DA4\
        FAB9531CFDD4C551D47F3C73124BB4590A45052B694048B991CCF5";
    const READ_RESP_PLAIN: &str =
        "FE534D4240000100000000000800210009000000000000000500000000000000\
        FFFE0000010000001100001400E4080000000000000000000000000000000000\
        11005000170000000000000000000000536D623320656E6372797074696F6E20\
        74657374696E67";

    #[test]
    fn smb300_ccm_published_example() {
        // Server decrypts the client's WRITE with the "ServerIn " key.
        let server_in = h("261B72350558F2E9DCF613070383EDBF");
        let (sid, plain) =
            decrypt_message(Cipher::Aes128Ccm, &server_in, &h(WRITE_TRANSFORMED)).unwrap();
        assert_eq!(sid, SID_300);
        assert_eq!(plain, h(WRITE_PLAIN));
        // ...and the same operation in the encrypt direction reproduces the
        // client's bytes (16-byte nonce field as Windows sent it).
        let enc = encrypt_message(
            Cipher::Aes128Ccm,
            &server_in,
            SID_300,
            &h("66E69A111892584FB5ED524A744DA3EE"),
            &h(WRITE_PLAIN),
        );
        assert_eq!(enc, h(WRITE_TRANSFORMED));
        // Server encrypts the READ response with the "ServerOut" key.
        let server_out = h("8FE2B57EC34D2DB5B1A9727F526BBDB5");
        let enc = encrypt_message(
            Cipher::Aes128Ccm,
            &server_out,
            SID_300,
            &h("87000000000000001100001400E40800"),
            &h(READ_RESP_PLAIN),
        );
        assert_eq!(enc, h(READ_RESP_TRANSFORMED));
        let (_, p) = decrypt_message(Cipher::Aes128Ccm, &server_out, &enc).unwrap();
        assert_eq!(p, h(READ_RESP_PLAIN));
    }

    // "SMB 3.1.1 Encryption in Windows 10" blog (AES-128-GCM, SessionKey
    // 419FDDF34C1E001909D362AE7FB6AF79).
    #[test]
    fn smb311_gcm_published_example() {
        let sid = 0x100000000025u64;
        let client_write = h(
            "FE534D4240000100000000000900010008000000000000000500000000000000FFFE000001000000\
            25000000001000000000000000000000000000000000000031007000170000000000000000000000\
            0600000004000000010000000400000000000000000000007000000000000000536D623320656E63\
            72797074696F6E2074657374696E67",
        );
        let write_transformed = h(
            "FD534D42BD73D97D2BC9001BCAFAC0FDFF5FEEBCC7D6822D269CAF48904C664C0000000087000000\
            0000010025000000001000006ECDD2A7AFC7B47763057A041B8FD4DAFFE990B70C9E09D36C084E02\
            D14EF247F8BDE38ACF6256F8B1D3B56F77FBDEB312FEA5E92CBCC1ED8FB2EBBFAA75E49A4A394BB4\
            4576545567C24D4C014D47C9FBDFDAFD2C4F9B72F8D256452620A299F48E29E53D6B61D1C13A19E9\
            1AF013F00D17E3ABC2FC3D36C8C1B6B93973253852DBD442E46EE8",
        );
        let c2s = h("A2F5E80E5D59103034F32E52F698E5EC");
        assert_eq!(
            encrypt_message(
                Cipher::Aes128Gcm,
                &c2s,
                sid,
                &h("C7D6822D269CAF48904C664C"),
                &client_write
            ),
            write_transformed
        );
        assert_eq!(
            decrypt_message(Cipher::Aes128Gcm, &c2s, &write_transformed).unwrap(),
            (sid, client_write)
        );
        let s2c = h("748C50868C90F302962A5C35F5F9A8BF");
        let resp_plain = h(
            "FE534D4240000100000000000900010001000000000000000500000000000000FFFE000001000000\
            25000000001000000000000000000000000000000000000011000000170000000000000000000000",
        );
        let resp_transformed = h(
            "FD534D42ACBE1CB7ED343ADF1725EF144D90D4B0E06831DD2E8EB7B4000000000000000050000000\
            00000100250000000010000026BBBF949983A6C1C796559D0F2C510CB651D1F7B6AC8DED32A2A0B8\
            F2D793A815C6F6B848D69767A215841A42D400AE6DDB5F0B44173A014973321FDD7950DA6179159B\
            82E03C9E18A050FF0EA1C967",
        );
        assert_eq!(
            encrypt_message(
                Cipher::Aes128Gcm,
                &s2c,
                sid,
                &h("E06831DD2E8EB7B400000000"),
                &resp_plain
            ),
            resp_transformed
        );
    }

    #[test]
    fn round_trip_and_tamper_all_ciphers() {
        let plain: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        for c in [
            Cipher::Aes128Ccm,
            Cipher::Aes128Gcm,
            Cipher::Aes256Ccm,
            Cipher::Aes256Gcm,
        ] {
            let key = vec![0x5au8; c.key_len()];
            let nonce = vec![0x01u8; c.nonce_len()];
            let t = encrypt_message(c, &key, 77, &nonce, &plain);
            assert_eq!(t.len(), TRANSFORM_HEADER_LEN + plain.len());
            assert_eq!(transform_session_id(&t), Some(77));
            assert_eq!(
                &t[20 + c.nonce_len()..36],
                &vec![0u8; 16 - c.nonce_len()][..]
            );
            assert_ne!(&t[52..], &plain[..]);
            assert_eq!(decrypt_message(c, &key, &t).unwrap(), (77, plain.clone()));
            // Any flipped bit in signature, AAD or ciphertext must fail.
            for idx in [4usize, 20, 36, 44, 60, t.len() - 1] {
                let mut bad = t.clone();
                bad[idx] ^= 0x80;
                assert!(decrypt_message(c, &key, &bad).is_err(), "{c:?} idx {idx}");
            }
            let wrong = vec![0x5bu8; c.key_len()];
            assert_eq!(decrypt_message(c, &wrong, &t), Err(CryptoError::AuthFailed));
            assert_eq!(decrypt_message(c, &key[..8], &t), Err(CryptoError::BadKey));
        }
    }

    #[test]
    fn malformed_transform_rejected() {
        let key = [0u8; 16];
        assert_eq!(
            decrypt_message(Cipher::Aes128Gcm, &key, &[0xFD, b'S']),
            Err(CryptoError::Truncated)
        );
        let mut t = encrypt_message(Cipher::Aes128Gcm, &key, 1, &[0u8; 12], b"hello");
        assert_eq!(transform_session_id(&t[..51]), None);
        t[36] = 9;
        assert_eq!(
            decrypt_message(Cipher::Aes128Gcm, &key, &t),
            Err(CryptoError::SizeMismatch)
        );
        t[0] = 0xFE;
        assert_eq!(
            decrypt_message(Cipher::Aes128Gcm, &key, &t),
            Err(CryptoError::BadProtocolId)
        );
    }

    proptest::proptest! {
        #[test]
        fn decrypt_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let mut d = data;
            if d.len() >= 4 { d[..4].copy_from_slice(&PROTOCOL_ID); }
            for c in [Cipher::Aes128Ccm, Cipher::Aes128Gcm, Cipher::Aes256Ccm, Cipher::Aes256Gcm] {
                let _ = decrypt_message(c, &vec![1u8; c.key_len()], &d);
            }
        }
    }
}
