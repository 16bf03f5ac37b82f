//! NTLMSSP messages (NEGOTIATE, CHALLENGE, AUTHENTICATE) and AV_PAIR lists.
//!
//! Input: an NTLMSSP message ("NTLMSSP\0"...), or otherwise a raw AV_PAIR list.
#![no_main]

use holdfast_fuzz::round_trip_vec;
use holdfast_smbd::wire::ntlmssp::{
    decode_av_pairs, encode_av_pairs, message_type, AuthenticateMessage, ChallengeMessage,
    NegotiateMessage, MSG_AUTHENTICATE, MSG_CHALLENGE, MSG_NEGOTIATE, NEGOTIATE_VERSION, SIGNATURE,
};
use libfuzzer_sys::fuzz_target;

/// Offset of the AV pairs in an NTLMv2 response: NTProofStr (16) plus the
/// fixed part of NTLMv2_CLIENT_CHALLENGE (28).
const NTLMV2_AV_PAIRS: usize = 16 + 28;

fn av_pairs(b: &[u8]) {
    round_trip_vec("av pairs", b, decode_av_pairs, |p| encode_av_pairs(p));
}

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(SIGNATURE) {
        av_pairs(data);
        return;
    }
    match message_type(data) {
        Some(MSG_NEGOTIATE) => {
            round_trip_vec(
                "ntlm negotiate",
                data,
                NegotiateMessage::decode,
                NegotiateMessage::encode,
            );
        }
        Some(MSG_CHALLENGE) => {
            if let Ok(c) = ChallengeMessage::decode(data) {
                let mut again = ChallengeMessage::decode(&c.encode()).expect("challenge re-decode");
                // The encoder always writes the Version field; a short input
                // with NEGOTIATE_VERSION set decodes without one.
                if c.version.is_none() && c.flags & NEGOTIATE_VERSION != 0 {
                    assert_eq!(again.version, Some([0; 8]));
                    again.version = None;
                }
                assert_eq!(c, again, "challenge decode -> encode -> decode differs");
                av_pairs(&c.target_info);
            }
        }
        Some(MSG_AUTHENTICATE) => {
            if let Ok(a) = AuthenticateMessage::decode(data) {
                let mut again =
                    AuthenticateMessage::decode(&a.encode()).expect("authenticate re-decode");
                // The encoder always writes a MIC field (zeros when absent).
                if a.mic.is_none() {
                    assert_eq!(again.mic, Some([0; 16]));
                    again.mic = None;
                }
                assert_eq!(a, again, "authenticate decode -> encode -> decode differs");
                if let Some(b) = a.nt_response.get(NTLMV2_AV_PAIRS..) {
                    av_pairs(b);
                }
            }
        }
        _ => {}
    }
});
