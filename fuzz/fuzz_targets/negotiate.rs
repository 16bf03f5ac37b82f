//! NEGOTIATE request (+ its 3.1.1 negotiate contexts) and the SMB1
//! multi-protocol NEGOTIATE.
//!
//! Input: an SMB2 NEGOTIATE message (0xFE 'SMB'...), an SMB1 message
//! (0xFF 'SMB'...), or otherwise a ContextType (u16 LE) followed by one
//! negotiate context's Data.
#![no_main]

use bytes::BytesMut;
use holdfast_fuzz::{is_smb2, round_trip};
use holdfast_smbd::wire::negotiate::{NegotiateContext, NegotiateRequest};
use holdfast_smbd::wire::smb1::{smb1_negotiate_dialects, smb2_dialect_for_smb1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if is_smb2(data) {
        if let Some(req) = round_trip(
            "negotiate",
            data,
            NegotiateRequest::decode,
            NegotiateRequest::encode,
        ) {
            for c in &req.contexts {
                let d = c.encode_data();
                let again = NegotiateContext::decode_data(c.ctx_type(), &d).expect("context");
                assert_eq!(&again, c);
            }
        }
    } else if data.starts_with(&[0xFF, b'S', b'M', b'B']) {
        if let Ok(d) = smb1_negotiate_dialects(data) {
            let _ = smb2_dialect_for_smb1(&d, true);
            let _ = smb2_dialect_for_smb1(&d, false);
        }
    } else if let [a, b, rest @ ..] = data {
        let ty = u16::from_le_bytes([*a, *b]);
        if let Ok(c) = NegotiateContext::decode_data(ty, rest) {
            assert_eq!(c.ctx_type(), ty);
            let d = c.encode_data();
            let again = NegotiateContext::decode_data(ty, &d).expect("context re-decode");
            assert_eq!(again, c);
            // And as a chain of one in a message.
            let mut out = BytesMut::from(&[0u8; 64][..]);
            let off = holdfast_smbd::wire::negotiate::encode_contexts(&mut out, &[c.clone()]);
            let list = holdfast_smbd::wire::negotiate::decode_contexts(&out, off as usize, 1)
                .expect("context chain re-decode");
            assert_eq!(list, vec![c]);
        }
    }
});
