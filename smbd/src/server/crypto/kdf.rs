//! SP800-108 KDF in counter mode with HMAC-SHA256 (MS-SMB2 3.1.4.2) and the
//! per-session key schedule (MS-SMB2 3.3.5.5.3).

use super::Cipher;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Counter-mode KDF with the counter before the fixed input:
/// K(i) = HMAC-SHA256(key, [i]_32 || fixed), output truncated to `out_len`.
fn kdf_counter_fixed(key: &[u8], fixed: &[u8], out_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(out_len + 32);
    let mut i: u32 = 1;
    while out.len() < out_len {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            break;
        };
        mac.update(&i.to_be_bytes());
        mac.update(fixed);
        out.extend_from_slice(&mac.finalize().into_bytes());
        i = i.wrapping_add(1);
    }
    out.truncate(out_len);
    out
}

/// SP800-108 counter-mode KDF, PRF = HMAC-SHA256, r = 32, as MS-SMB2 3.1.4.2
/// uses it: fixed input = Label || 0x00 || Context || [L]_32 with L in bits.
/// Pass `label` and `context` exactly as MS-SMB2 writes them, trailing NUL
/// included (e.g. `b"SMB2AESCMAC\0"`, `b"SmbSign\0"`).
pub fn kdf_sp800_108(key: &[u8], label: &[u8], context: &[u8], out_len_bytes: usize) -> Vec<u8> {
    let l_bits = (out_len_bytes as u64 * 8) as u32;
    let mut fixed = Vec::with_capacity(label.len() + context.len() + 5);
    fixed.extend_from_slice(label);
    fixed.push(0);
    fixed.extend_from_slice(context);
    fixed.extend_from_slice(&l_bits.to_be_bytes());
    kdf_counter_fixed(key, &fixed, out_len_bytes)
}

/// The keys of one session (MS-SMB2 3.3.1.8), from the server's point of view.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Session.SigningKey (16 bytes).
    pub signing: Vec<u8>,
    /// Session.EncryptionKey: the server encrypts (server-to-client) with it.
    /// Empty for 2.x dialects.
    pub encrypt_server_out: Vec<u8>,
    /// Session.DecryptionKey: the server decrypts (client-to-server) with it.
    /// Empty for 2.x dialects.
    pub decrypt_client_out: Vec<u8>,
    /// Session.ApplicationKey.
    pub application: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

/// Derives the session keys for `dialect` (MS-SMB2 3.3.5.5.3).
///
/// `session_key` is the full GSS session key (for NTLM the 16-byte exported
/// session key). Session.SessionKey is its first 16 bytes, zero-padded; the
/// full key is used only for AES-256 cipher keys in 3.1.1. `preauth_hash` is
/// Session.PreauthIntegrityHashValue (required for 0x0311; zeros if absent).
/// 0x0202/0x0210 (and anything below 0x0300): signing key and application
/// key are the session key, no cipher keys.
pub fn derive_session_keys(
    dialect: u16,
    session_key: &[u8],
    preauth_hash: Option<&[u8; 64]>,
    cipher: Option<Cipher>,
) -> SessionKeys {
    let mut sk16 = [0u8; 16];
    let n = session_key.len().min(16);
    sk16[..n].copy_from_slice(&session_key[..n]);
    match dialect {
        0x0300 | 0x0302 => SessionKeys {
            signing: kdf_sp800_108(&sk16, b"SMB2AESCMAC\0", b"SmbSign\0", 16),
            encrypt_server_out: kdf_sp800_108(&sk16, b"SMB2AESCCM\0", b"ServerOut\0", 16),
            decrypt_client_out: kdf_sp800_108(&sk16, b"SMB2AESCCM\0", b"ServerIn \0", 16),
            application: kdf_sp800_108(&sk16, b"SMB2APP\0", b"SmbRpc\0", 16),
        },
        0x0311 => {
            let zero = [0u8; 64];
            let ctx: &[u8] = preauth_hash.unwrap_or(&zero);
            let (cipher_key, cipher_len): (&[u8], usize) = match cipher {
                Some(c @ (Cipher::Aes256Ccm | Cipher::Aes256Gcm)) => (session_key, c.key_len()),
                _ => (&sk16, 16),
            };
            SessionKeys {
                signing: kdf_sp800_108(&sk16, b"SMBSigningKey\0", ctx, 16),
                encrypt_server_out: kdf_sp800_108(
                    cipher_key,
                    b"SMBS2CCipherKey\0",
                    ctx,
                    cipher_len,
                ),
                decrypt_client_out: kdf_sp800_108(
                    cipher_key,
                    b"SMBC2SCipherKey\0",
                    ctx,
                    cipher_len,
                ),
                application: kdf_sp800_108(&sk16, b"SMBAppKey\0", ctx, 16),
            }
        }
        _ => SessionKeys {
            signing: sk16.to_vec(),
            encrypt_server_out: Vec::new(),
            decrypt_client_out: Vec::new(),
            application: sk16.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// NIST CAVP KBKDF "KDFCTR_gen.txt" (CAVS 14.4),
    /// [PRF=HMAC_SHA256] [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS].
    #[test]
    fn nist_cavp_counter_hmac_sha256() {
        // COUNT=0, L=128
        let ko = kdf_counter_fixed(
            &h("dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0"),
            &h(
                "01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b8\
                64a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
            ),
            16,
        );
        assert_eq!(hex::encode(ko), "10621342bfb0fd40046c0e29f2cfdbf0");
        // COUNT=30, L=320 (two PRF blocks)
        let ko = kdf_counter_fixed(
            &h("c4bedbddb66493e7c7259a3bbbc25f8c7e0ca7fe284d92d431d9cd99a0d214ac"),
            &h(
                "1c69c54766791e315c2cc5c47ecd3ffab87d0d273dd920e70955814c220eacac\
                e6a5946542da3dfe24ff626b4897898cafb7db83bdff3c14fa46fd4b",
            ),
            40,
        );
        assert_eq!(
            hex::encode(ko),
            "1da47638d6c9c4d04d74d4640bbd42ab814d9e8cc22f4326695239f96b0693f12d0dd1152cf44430"
        );
    }

    /// Microsoft Open Specifications blog, "SMB 2 and SMB 3 security in
    /// Windows 10: the anatomy of signing and cryptographic keys", appendix.
    /// The blog's Encryption/DecryptionKey are the client's, i.e. our
    /// decrypt/encrypt keys respectively.
    #[test]
    fn smb300_blog_example() {
        let k = derive_session_keys(0x0300, &h("7CD451825D0450D235424E44BA6E78CC"), None, None);
        assert_eq!(k.signing, h("0B7E9C5CAC36C0F6EA9AB275298CEDCE"));
        assert_eq!(k.decrypt_client_out, h("FAD27796665B313EBB578F388632B4F7"));
        assert_eq!(k.encrypt_server_out, h("B0F0427F7CEB416D1D9DCC0CD4F99447"));
        assert_eq!(k.application, h("BB23A4575AA26C721AF525AF15A87B4F"));
        // Second channel of the same example: signing key only.
        let k2 = derive_session_keys(0x0300, &h("4E01A2B313BCF660CC250BEF021AEDE6"), None, None);
        assert_eq!(k2.signing, h("BA1A17DBBFEC349BCA105563D598952F"));
        // "Encryption in SMB 3.0: A protocol perspective" blog.
        let k3 = derive_session_keys(0x0300, &h("B4546771B515F766A86735532DD6C4F0"), None, None);
        assert_eq!(k3.signing, h("F773CD23C18FD1E08EE510CADA7CF852"));
        assert_eq!(k3.decrypt_client_out, h("261B72350558F2E9DCF613070383EDBF"));
        assert_eq!(k3.encrypt_server_out, h("8FE2B57EC34D2DB5B1A9727F526BBDB5"));
        assert_eq!(k3.application, h("77432F808CE99156B5BC6A3676D730D1"));
    }

    pub(crate) const PREAUTH_311: &str =
        "0DD13628CC3ED218EF9DF9772D436D0887AB9814BFAE63A80AA845F36909DB79\
        28622DDDAD522D9751640A459762C5A9D6BB084CBB3CE6BDADEF5D5BCE3C6C01";

    #[test]
    fn smb311_blog_example() {
        let mut pa = [0u8; 64];
        pa.copy_from_slice(&h(PREAUTH_311));
        let k = derive_session_keys(
            0x0311,
            &h("270E1BA896585EEB7AF3472D3B4C75A7"),
            Some(&pa),
            Some(Cipher::Aes128Gcm),
        );
        assert_eq!(k.signing, h("73FE7A9A77BEF0BDE49C650D8CCB5F76"));
        assert_eq!(k.decrypt_client_out, h("629BCBC54422A0F572B97F45989B6073"));
        assert_eq!(k.encrypt_server_out, h("E2AF0DCEFAC68DA71A0DFBD0D1350D74"));
        assert_eq!(k.application, h("6D7AD7954E9EC61E907B4D473DC178FF"));
        // Second channel (session binding): signing key only.
        let mut pa2 = [0u8; 64];
        pa2.copy_from_slice(&h(
            "EA3BF912B11CBFEC5B1889E8209614218687F82FA5294521AD3063425E49E88A\
            10BD022124CE25123BC9111F52D9566BA88BF46344E6063DC5E3FF0389026F6C",
        ));
        let k2 = derive_session_keys(
            0x0311,
            &h("84B9DBB730116A8FA6E9889555C265F9"),
            Some(&pa2),
            None,
        );
        assert_eq!(k2.signing, h("C962BCA1A9DD1697B030644199705431"));
    }

    #[test]
    fn smb2_and_aes256_shapes() {
        let sk = [0x11u8; 16];
        let k = derive_session_keys(0x0210, &sk, None, None);
        assert_eq!(k.signing, sk.to_vec());
        assert!(k.encrypt_server_out.is_empty());
        let pa = [0u8; 64];
        let k256 = derive_session_keys(0x0311, &sk, Some(&pa), Some(Cipher::Aes256Gcm));
        assert_eq!(k256.encrypt_server_out.len(), 32);
        assert_eq!(k256.decrypt_client_out.len(), 32);
        assert_eq!(k256.signing.len(), 16);
        // L is part of the PRF input, so the 256-bit key is not an extension
        // of the 128-bit one.
        let k128 = derive_session_keys(0x0311, &sk, Some(&pa), Some(Cipher::Aes128Gcm));
        assert_ne!(k256.encrypt_server_out[..16], k128.encrypt_server_out[..]);
        assert_eq!(
            k256.encrypt_server_out,
            kdf_sp800_108(&sk, b"SMBS2CCipherKey\0", &pa, 32)
        );
    }
}
