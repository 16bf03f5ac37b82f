//! READ and WRITE requests (whole messages). Both decoders run on every input.
#![no_main]

use bytes::BytesMut;
use holdfast_fuzz::round_trip;
use holdfast_smbd::wire::rw::{ReadRequest, WriteRequest};
use holdfast_smbd::wire::HEADER_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    round_trip("read", data, ReadRequest::decode, ReadRequest::encode);

    if let Ok((req, range)) = WriteRequest::decode(data) {
        assert!(range.end <= data.len());
        assert!(range.is_empty() || range.start >= HEADER_LEN + 48);
        let payload = &data[range];
        let mut out = BytesMut::from(&data[..HEADER_LEN]);
        req.encode(&mut out, payload);
        let (req2, range2) = WriteRequest::decode(&out).expect("write re-decode");
        assert_eq!(req, req2);
        assert_eq!(&out[range2], payload);
    }
});
