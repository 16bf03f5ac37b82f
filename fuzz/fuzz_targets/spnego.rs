//! SPNEGO tokens (GSS-API framed NegTokenInit / bare NegTokenResp), as
//! carried in SESSION_SETUP security buffers.
#![no_main]

use holdfast_smbd::wire::ntlmssp;
use holdfast_smbd::wire::spnego::{decode, encode_mech_types, SpnegoToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = decode(data) else { return };
    match tok {
        SpnegoToken::Init(mut init) => {
            let enc = init.encode();
            let SpnegoToken::Init(mut again) = decode(&enc).expect("init re-decode") else {
                panic!("NegTokenInit re-decoded as another choice");
            };
            // The re-encoding carries the list it was given, in DER.
            assert_eq!(again.mech_types_der, encode_mech_types(&init.mech_types));
            // The original DER is kept as received (it may be non-minimal
            // or absent); compare the rest.
            init.mech_types_der.clear();
            again.mech_types_der.clear();
            assert_eq!(
                init, again,
                "NegTokenInit decode -> encode -> decode differs"
            );
            if let Some(t) = &init.mech_token {
                let _ = ntlmssp::message_type(t);
                let _ = ntlmssp::NegotiateMessage::decode(t);
            }
        }
        SpnegoToken::Resp(resp) => {
            let enc = resp.encode();
            let again = decode(&enc).expect("resp re-decode");
            assert_eq!(
                again,
                SpnegoToken::Resp(resp.clone()),
                "NegTokenResp decode -> encode -> decode differs"
            );
            if let Some(t) = &resp.response_token {
                let _ = ntlmssp::AuthenticateMessage::decode(t);
            }
        }
    }
});
