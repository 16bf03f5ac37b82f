//! IOCTL request and the FSCTL_VALIDATE_NEGOTIATE_INFO input it carries.
//!
//! Input: an IOCTL message (0xFE 'SMB'...), or otherwise a raw
//! VALIDATE_NEGOTIATE_INFO input buffer.
#![no_main]

use holdfast_fuzz::{is_smb2, round_trip, round_trip_vec};
use holdfast_smbd::wire::ioctl::{fsctl, IoctlRequest, ValidateNegotiateInfoRequest};
use libfuzzer_sys::fuzz_target;

fn vni(buf: &[u8]) {
    round_trip_vec(
        "validate negotiate info",
        buf,
        ValidateNegotiateInfoRequest::decode,
        ValidateNegotiateInfoRequest::encode,
    );
}

fuzz_target!(|data: &[u8]| {
    if is_smb2(data) {
        if let Some(req) = round_trip("ioctl", data, IoctlRequest::decode, IoctlRequest::encode) {
            if req.ctl_code == fsctl::VALIDATE_NEGOTIATE_INFO {
                vni(&req.input);
            }
        }
    } else {
        vni(data);
    }
});
