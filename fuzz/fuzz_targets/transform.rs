//! SMB2 TRANSFORM_HEADER (encrypted message framing).
#![no_main]

use bytes::BytesMut;
use holdfast_smbd::wire::transform::{TransformHeader, AAD_OFFSET, TRANSFORM_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((h, payload)) = TransformHeader::decode(data) else {
        return;
    };
    assert_eq!(h.original_message_size as usize, payload.len());
    let mut out = BytesMut::new();
    h.encode(&mut out);
    assert_eq!(out.len(), TRANSFORM_HEADER_LEN);
    assert_eq!(&out[AAD_OFFSET..], &h.aad()[..]);
    out.extend_from_slice(payload);
    let (h2, p2) = TransformHeader::decode(&out).expect("transform re-decode");
    assert_eq!(h, h2);
    assert_eq!(p2, payload);
});
