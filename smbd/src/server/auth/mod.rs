//! Session-setup authentication: SPNEGO (RFC 4178 / MS-SPNG) carrying
//! NTLMSSP (MS-NLMP), NTLMv2 only. The server layer feeds each SESSION_SETUP
//! security buffer to [`NtlmServer::step`] and derives the SMB keys from
//! [`AuthOutcome::session_key`] with [`crate::server::crypto`].

mod ntlm;

pub use ntlm::{nt_hash, AuthOutcome, AuthStep, NtlmServer};

use crate::wire::spnego::{NegTokenInit, NEG_HINTS_PRINCIPAL, OID_NTLMSSP};

/// Names the server announces in the NTLM CHALLENGE target info.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetInfo {
    pub netbios_domain: String,
    pub netbios_computer: String,
    pub dns_domain: String,
    pub dns_computer: String,
}

/// The NegTokenInit2 for the NEGOTIATE response security buffer: offers only
/// NTLMSSP and carries the "not_defined_in_RFC4178@please_ignore" negHints
/// principal that Windows and Samba servers send.
pub fn spnego_negotiate_token() -> Vec<u8> {
    NegTokenInit {
        mech_types: vec![OID_NTLMSSP.to_vec()],
        hint_name: Some(NEG_HINTS_PRINCIPAL.to_string()),
        ..Default::default()
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::spnego::{decode, SpnegoToken};

    #[test]
    fn negotiate_token_shape() {
        let t = spnego_negotiate_token();
        assert_eq!(t[0], 0x60);
        let SpnegoToken::Init(init) = decode(&t).unwrap() else {
            panic!()
        };
        assert_eq!(init.mech_types, vec![OID_NTLMSSP.to_vec()]);
        assert_eq!(init.hint_name.as_deref(), Some(NEG_HINTS_PRINCIPAL));
        assert!(init.mech_token.is_none());
        // Byte layout as Samba sends it (checked by hand against RFC 4178 /
        // MS-SPNG 2.2.1 NegTokenInit2).
        let mut want = vec![0x60, 0x48, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
        want.extend([0xa0, 0x3e, 0x30, 0x3c, 0xa0, 0x0e, 0x30, 0x0c, 0x06, 0x0a]);
        want.extend(OID_NTLMSSP);
        want.extend([0xa3, 0x2a, 0x30, 0x28, 0xa0, 0x26, 0x1b, 0x24]);
        want.extend(NEG_HINTS_PRINCIPAL.as_bytes());
        assert_eq!(t, want);
    }
}
