//! Direct TCP framing, compound chains and the 64-byte SMB2 header.
//!
//! Input: one frame as on the wire: the 4-byte Direct TCP header, then the
//! message or compound chain. The header is parsed (and rebuilt); the rest is
//! split into a compound chain whose every header is decoded and re-encoded.
#![no_main]

use bytes::BytesMut;
use holdfast_smbd::wire::frame::{frame_header, parse_frame_len, split_compound, MAX_FRAME_LEN};
use holdfast_smbd::wire::{Command, Header};
use libfuzzer_sys::fuzz_target;

fn header_round_trip(msg: &[u8]) {
    let Ok(h) = Header::decode(msg) else { return };
    let _ = (
        h.cmd(),
        h.is_async(),
        h.is_related(),
        h.is_signed(),
        h.is_response(),
    );
    let _ = (h.tree_id(), h.process_id(), h.async_id());
    let mut out = BytesMut::new();
    h.encode(&mut out);
    assert_eq!(out.len(), 64);
    let h2 = Header::decode(&out).expect("re-decode header");
    assert_eq!(h, h2);
    // The encoding is the input header byte for byte.
    assert_eq!(&out[..], &msg[..64]);
    if let Some(c) = Command::from_u16(h.command) {
        assert_eq!(c as u16, h.command);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((hdr, chain)) = data.split_first_chunk::<4>() else {
        return;
    };
    if let Ok(len) = parse_frame_len(*hdr) {
        assert!(len <= MAX_FRAME_LEN);
        assert_eq!(frame_header(len), *hdr);
    }
    header_round_trip(chain);
    if let Ok(spans) = split_compound(chain) {
        let mut prev_end = 0;
        for (start, end) in spans {
            assert_eq!(start, prev_end, "compound spans must be contiguous");
            assert!(start < end && end <= chain.len());
            assert!(end - start >= 64);
            prev_end = end;
            header_round_trip(&chain[start..end]);
        }
        assert_eq!(prev_end, chain.len());
    }
});
