//! The srvsvc named pipe on IPC$ through smbprotocol's low-level API
//! (tests/python/pipe.py): READ/WRITE on the pipe, short reads, transceive
//! overflow, unknown pipe names; smbclient -L covers the transceive path.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_tests::{python, python_smbprotocol_available, run_with_timeout, Server};

#[test]
fn srvsvc_pipe_read_write_transceive() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pipe.py");
    let mut c = Command::new(python());
    c.arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--user", &srv.user, "--password", &srv.password])
        .args(["--expect", &srv.share, "IPC$"]);
    let out = run_with_timeout(&mut c, None, Duration::from_secs(60));
    assert!(out.success(), "pipe.py failed:\n{out}");
    assert!(out.stdout.contains("OK pipe"), "unexpected output:\n{out}");
}
