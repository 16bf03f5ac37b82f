//! The NTLM acceptor (`server::auth::NtlmServer::step`) driven with
//! arbitrary tokens: it must answer every token without panicking.
//!
//! Input: token 1 (u16 LE length prefix), token 2 (u16 LE length prefix),
//! token 3 (the rest). Tokens are SPNEGO-wrapped or raw NTLMSSP, as a client
//! sends them in SESSION_SETUP.
#![no_main]

use holdfast_fuzz::split_len_prefixed;
use holdfast_smbd::server::auth::{nt_hash, AuthStep, NtlmServer, TargetInfo};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn hash() -> [u8; 16] {
    static H: OnceLock<[u8; 16]> = OnceLock::new();
    *H.get_or_init(|| nt_hash("Test123!"))
}

fuzz_target!(|data: &[u8]| {
    let target = TargetInfo {
        netbios_domain: "HOLDFAST".into(),
        netbios_computer: "FUZZ".into(),
        dns_domain: "holdfast.test".into(),
        dns_computer: "fuzz.holdfast.test".into(),
    };
    let lookup = |user: &str, _domain: &str| -> Option<[u8; 16]> {
        user.eq_ignore_ascii_case("smbtest").then(hash)
    };
    let mut srv = NtlmServer::with_challenge(target, *b"fuzzchal");
    let mut finished = false;
    for tok in split_len_prefixed(data, 3) {
        let step = srv.step(tok, &lookup);
        if finished {
            // Once done or failed, every further token is refused.
            assert!(
                matches!(step, AuthStep::Failed { .. }),
                "step after finish: {step:?}"
            );
        }
        finished |= !matches!(step, AuthStep::Continue(_));
    }
});
