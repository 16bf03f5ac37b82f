//! CREATE request, its create context chain and every typed context payload
//! decoder in `wire::create` (plus SecD through `fsa::security::parse_sd`).
//!
//! Input: a CREATE message (0xFE 'SMB'...), or otherwise a raw create
//! context chain (the CreateContexts buffer of a request).
#![no_main]

use bytes::BytesMut;
use holdfast_fuzz::{is_smb2, round_trip, round_trip_vec};
use holdfast_smbd::fsa::security::parse_sd;
use holdfast_smbd::wire::create::{
    ctx, decode_allocation_size, decode_contexts, decode_timewarp, decode_u64_context,
    encode_contexts, CreateContext, CreateRequest, DurableHandleReconnect,
    DurableHandleReconnectV2, DurableHandleRequest, DurableHandleRequestV2, DurableHandleResponse,
    DurableHandleResponseV2, LeaseContext, MxAcRequest, MxAcResponse, QFidResponse,
};
use libfuzzer_sys::fuzz_target;

fn u64_enc(v: &u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Runs the typed decoder for `c.name` (all of them when `all`), with a
/// decode -> encode -> decode check where an encoder exists.
fn typed(c: &CreateContext, all: bool) {
    let d = &c.data[..];
    let is = |n: &[u8]| all || c.name == n;
    if is(ctx::QUERY_MAXIMAL_ACCESS) {
        round_trip_vec("MxAc req", d, MxAcRequest::decode, MxAcRequest::encode);
        round_trip_vec("MxAc resp", d, MxAcResponse::decode, MxAcResponse::encode);
    }
    if is(ctx::QUERY_ON_DISK_ID) {
        round_trip_vec("QFid", d, QFidResponse::decode, QFidResponse::encode);
    }
    if is(ctx::DURABLE_HANDLE_REQUEST) {
        round_trip_vec(
            "DHnQ",
            d,
            DurableHandleRequest::decode,
            DurableHandleRequest::encode,
        );
        round_trip_vec(
            "DHnQ resp",
            d,
            DurableHandleResponse::decode,
            DurableHandleResponse::encode,
        );
    }
    if is(ctx::DURABLE_HANDLE_RECONNECT) {
        round_trip_vec(
            "DHnC",
            d,
            DurableHandleReconnect::decode,
            DurableHandleReconnect::encode,
        );
    }
    if is(ctx::DURABLE_HANDLE_REQUEST_V2) {
        round_trip_vec(
            "DH2Q",
            d,
            DurableHandleRequestV2::decode,
            DurableHandleRequestV2::encode,
        );
        round_trip_vec(
            "DH2Q resp",
            d,
            DurableHandleResponseV2::decode,
            DurableHandleResponseV2::encode,
        );
    }
    if is(ctx::DURABLE_HANDLE_RECONNECT_V2) {
        round_trip_vec(
            "DH2C",
            d,
            DurableHandleReconnectV2::decode,
            DurableHandleReconnectV2::encode,
        );
    }
    if is(ctx::REQUEST_LEASE) {
        round_trip_vec("RqLs", d, LeaseContext::decode, LeaseContext::encode);
    }
    if is(ctx::ALLOCATION_SIZE) {
        round_trip_vec("AlSi", d, decode_allocation_size, u64_enc);
    }
    if is(ctx::TIMEWARP_TOKEN) {
        round_trip_vec("TWrp", d, decode_timewarp, u64_enc);
        round_trip_vec("u64", d, decode_u64_context, u64_enc);
    }
    if is(ctx::SD_BUFFER) {
        let _ = parse_sd(d);
    }
}

fn chain_round_trip(ctxs: &[CreateContext]) {
    let mut out = BytesMut::new();
    let (off, len) = encode_contexts(&mut out, ctxs);
    let buf = &out[off as usize..(off + len) as usize];
    let again = decode_contexts(buf).expect("context chain re-decode");
    assert_eq!(again, ctxs);
}

fuzz_target!(|data: &[u8]| {
    if is_smb2(data) {
        if let Some(req) = round_trip("create", data, CreateRequest::decode, CreateRequest::encode)
        {
            for c in &req.contexts {
                typed(c, false);
            }
        }
    } else if let Ok(ctxs) = decode_contexts(data) {
        chain_round_trip(&ctxs);
        for c in &ctxs {
            typed(c, false);
        }
    } else {
        // Not a chain: try every payload decoder on the bytes as they are.
        typed(&CreateContext::new(b"", data.to_vec()), true);
    }
});
