//! QUERY_DIRECTORY, QUERY_INFO and SET_INFO requests (whole messages). Every
//! decoder runs on every input. A SET_INFO payload goes on to the FSA
//! decoder the server hands it to (file classes, security descriptors), and
//! a search pattern to the wildcard matcher.
#![no_main]

use holdfast_fuzz::round_trip;
use holdfast_smbd::fsa::security::parse_sd;
use holdfast_smbd::fsa::setinfo::decode_set_file_info;
use holdfast_smbd::fsa::wildcard::{has_wildcards, name_matches};
use holdfast_smbd::wire::info::{info_type, QueryInfoRequest, SetInfoRequest};
use holdfast_smbd::wire::query_dir::QueryDirectoryRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = round_trip(
        "query directory",
        data,
        QueryDirectoryRequest::decode,
        QueryDirectoryRequest::encode,
    ) {
        let _ = has_wildcards(&q.pattern);
        let _ = name_matches(&q.pattern, "Some File.txt");
        let _ = name_matches(&q.pattern, &q.pattern);
    }
    round_trip(
        "query info",
        data,
        QueryInfoRequest::decode,
        QueryInfoRequest::encode,
    );
    if let Some(s) = round_trip(
        "set info",
        data,
        SetInfoRequest::decode,
        SetInfoRequest::encode,
    ) {
        match s.info_type {
            info_type::FILE => {
                let _ = decode_set_file_info(s.file_info_class, &s.buffer);
            }
            info_type::SECURITY => {
                let _ = parse_sd(&s.buffer);
            }
            _ => {}
        }
    }
});
