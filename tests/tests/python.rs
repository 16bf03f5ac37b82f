//! Python smbprotocol (low-level API) against Holdfast: SMB 3.1.1, 1 MiB
//! write/read/compare/delete (tests/python/roundtrip.py), signed, and encrypted
//! with each of the four ciphers.

use std::time::Duration;

use holdfast_tests::{python_smbprotocol_available, Server};

fn roundtrip(srv: &Server, extra: &[&str]) -> String {
    let localdir = srv.localdir.display().to_string();
    let mut args = vec!["--localdir", localdir.as_str()];
    args.extend_from_slice(extra);
    let out = srv.python_script("roundtrip.py", &args, Duration::from_secs(120));
    assert!(out.success(), "roundtrip.py {extra:?} failed:\n{out}");
    out.stdout
}

#[test]
fn smbprotocol_311_signed_roundtrip() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    let out = roundtrip(&srv, &[]);
    assert!(
        out.contains("OK smbprotocol SMB 3.1.1 signed"),
        "unexpected output:\n{out}"
    );
}

/// The client offers exactly one cipher and requires encryption; the script
/// checks the negotiated cipher and that the session encrypts.
#[test]
fn smbprotocol_311_encrypted_roundtrip_each_cipher() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    for cipher in ["AES_128_CCM", "AES_128_GCM", "AES_256_CCM", "AES_256_GCM"] {
        let out = roundtrip(&srv, &["--cipher", cipher, "--size", "262144"]);
        let want = format!("OK smbprotocol SMB 3.1.1 encrypted with {cipher}");
        assert!(
            out.contains(&want),
            "unexpected output for {cipher}:\n{out}"
        );
    }
}
