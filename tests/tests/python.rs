//! Python smbprotocol (low-level API) against Holdfast: SMB 3.1.1, signing required,
//! 1 MiB write/read/compare/delete (tests/python/roundtrip.py).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_tests::{python, python_smbprotocol_available, run_with_timeout, Server};

#[test]
fn smbprotocol_311_signed_roundtrip() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/roundtrip.py");
    let mut c = Command::new(python());
    c.arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args([
            "--share",
            &srv.share,
            "--user",
            &srv.user,
            "--password",
            &srv.password,
        ])
        .arg("--localdir")
        .arg(&srv.localdir);
    let out = run_with_timeout(&mut c, None, Duration::from_secs(120));
    assert!(out.success(), "roundtrip.py failed:\n{out}");
    assert!(
        out.stdout.contains("OK smbprotocol"),
        "unexpected output:\n{out}"
    );
}
