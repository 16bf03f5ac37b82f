//! The small fixed-size requests: CLOSE, FLUSH, LOCK, CHANGE_NOTIFY,
//! OPLOCK_BREAK (oplock and lease break acknowledgments), ECHO, CANCEL,
//! LOGOFF and TREE_DISCONNECT. Every decoder runs on every input; each
//! checks its own StructureSize.
#![no_main]

use holdfast_fuzz::round_trip;
use holdfast_smbd::wire::close::CloseRequest;
use holdfast_smbd::wire::lock::LockRequest;
use holdfast_smbd::wire::notify::ChangeNotifyRequest;
use holdfast_smbd::wire::oplock::BreakAck;
use holdfast_smbd::wire::session::LogoffRequest;
use holdfast_smbd::wire::simple::{CancelRequest, EchoRequest, FlushRequest};
use holdfast_smbd::wire::tree::TreeDisconnectRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    round_trip("close", data, CloseRequest::decode, CloseRequest::encode);
    round_trip("flush", data, FlushRequest::decode, FlushRequest::encode);
    if let Some(l) = round_trip("lock", data, LockRequest::decode, LockRequest::encode) {
        assert!(!l.locks.is_empty());
        let _ = (l.lock_sequence_number(), l.lock_sequence_index());
    }
    round_trip(
        "change notify",
        data,
        ChangeNotifyRequest::decode,
        ChangeNotifyRequest::encode,
    );
    round_trip("break ack", data, BreakAck::decode, BreakAck::encode);
    round_trip("echo", data, EchoRequest::decode, EchoRequest::encode);
    round_trip("cancel", data, CancelRequest::decode, CancelRequest::encode);
    round_trip("logoff", data, LogoffRequest::decode, LogoffRequest::encode);
    round_trip(
        "tree disconnect",
        data,
        TreeDisconnectRequest::decode,
        TreeDisconnectRequest::encode,
    );
});
