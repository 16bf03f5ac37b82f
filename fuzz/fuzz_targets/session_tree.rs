//! SESSION_SETUP and TREE_CONNECT requests (whole messages, header first).
//! Both decoders run on every input; each checks its own StructureSize.
#![no_main]

use holdfast_fuzz::round_trip;
use holdfast_smbd::wire::session::SessionSetupRequest;
use holdfast_smbd::wire::tree::TreeConnectRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    round_trip(
        "session setup",
        data,
        SessionSetupRequest::decode,
        SessionSetupRequest::encode,
    );
    round_trip(
        "tree connect",
        data,
        TreeConnectRequest::decode,
        TreeConnectRequest::encode,
    );
});
