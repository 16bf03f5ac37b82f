//! `kernel oplocks = yes`: an SMB client's batch oplock or RWH lease is
//! backed by a kernel lease, so a local open of the file (from this test
//! process, on the share's directory) makes the server break the client
//! first (tests/python/kernel_break.py holds the grant and checks the break),
//! and the local open proceeds once the client acknowledged.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_tests::{python, python_smbprotocol_available, random_name, Server};

/// The server's break timeout: a local open must get in well before it.
const BREAK_TIMEOUT: Duration = Duration::from_secs(35);

/// Runs kernel_break.py holding `file` in `mode`; once it is ready, calls
/// `local` and then returns the script's whole output.
fn hold_and_open(srv: &Server, mode: &str, file: &str, local: impl FnOnce(&Path)) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kernel_break.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--share", &srv.share, "--user", &srv.user])
        .args(["--password", &srv.password, "--file", file, "--mode", mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run kernel_break.py");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read script output") == 0 {
            let _ = child.wait();
            srv.dump_log();
            panic!("kernel_break.py {mode} ended before READY:\n{text}");
        }
        text.push_str(&line);
        if line.starts_with("READY") {
            break;
        }
    }
    local(&srv.localdir.join(file));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read script output");
    text.push_str(&rest);
    let status = child.wait().expect("wait for kernel_break.py");
    if !status.success() {
        srv.dump_log();
        panic!("kernel_break.py {mode} failed:\n{text}");
    }
    text
}

fn kernel_server() -> Option<Server> {
    if !python_smbprotocol_available() {
        return None;
    }
    let srv = Server::start_with("kernel oplocks = yes");
    if srv.external {
        return None;
    }
    Some(srv)
}

#[test]
fn local_reader_breaks_batch_oplock() {
    let Some(srv) = kernel_server() else { return };
    let file = format!("kb-{}.txt", random_name(8));
    let out = hold_and_open(&srv, "oplock", &file, |p| {
        // A non-blocking open finds the kernel lease held (and starts its
        // break); a plain open then waits for the SMB client's answer.
        let e = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p)
            .expect_err("the file must be under a kernel lease");
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "{e}");
        let t0 = Instant::now();
        let data = std::fs::read(p).expect("local open after the break");
        assert!(
            t0.elapsed() < BREAK_TIMEOUT,
            "local open waited {:?}",
            t0.elapsed()
        );
        assert_eq!(data, b"cached by the SMB client");
    });
    assert!(out.contains("READY batch"), "{out}");
    // The client's fd is read/write: no read lease can stay behind, so
    // the oplock goes entirely.
    assert!(out.contains("OK break to oplock level 0x0"), "{out}");
    assert!(out.contains("OK acknowledged"), "{out}");
    assert!(srv
        .log_text()
        .contains("kernel lease break: breaking the SMB holder"));
}

#[test]
fn local_writer_breaks_rwh_lease() {
    let Some(srv) = kernel_server() else { return };
    let file = format!("kl-{}.txt", random_name(8));
    let out = hold_and_open(&srv, "lease", &file, |p| {
        let t0 = Instant::now();
        let f = OpenOptions::new()
            .write(true)
            .open(p)
            .expect("local writer after the break");
        assert!(
            t0.elapsed() < BREAK_TIMEOUT,
            "local open waited {:?}",
            t0.elapsed()
        );
        drop(f);
    });
    assert!(out.contains("READY RWH"), "{out}");
    // A writer takes every caching bit away.
    assert!(out.contains("OK break of lease 0x7 -> 0x0"), "{out}");
    assert!(out.contains("OK acknowledged"), "{out}");
}

#[test]
fn local_reader_breaks_rwh_lease_of_a_writable_open() {
    let Some(srv) = kernel_server() else { return };
    let file = format!("kr-{}.txt", random_name(8));
    let out = hold_and_open(&srv, "lease", &file, |p| {
        let t0 = Instant::now();
        std::fs::read(p).expect("local reader after the break");
        assert!(
            t0.elapsed() < BREAK_TIMEOUT,
            "local open waited {:?}",
            t0.elapsed()
        );
    });
    // Read caching cannot stay backed on a read/write fd: all of it goes.
    assert!(out.contains("OK break of lease 0x7 -> 0x0"), "{out}");
    assert!(out.contains("OK acknowledged"), "{out}");
}

/// Without the option nothing is leased: a local open goes through at once
/// and the client keeps its oplock (the script would wait for a break, so
/// only the grant and the immediate open are checked here).
#[test]
fn without_kernel_oplocks_local_open_is_not_held() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    if srv.external {
        return;
    }
    let file = format!("kn-{}.txt", random_name(8));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kernel_break.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--share", &srv.share, "--user", &srv.user])
        .args(["--password", &srv.password, "--file", &file])
        .args(["--mode", "oplock", "--timeout", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kernel_break.py");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert!(line.starts_with("READY batch"), "{line}");
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(srv.localdir.join(&file))
        .expect("no kernel lease without kernel oplocks");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let _ = child.wait();
    assert!(rest.contains("FAIL no break"), "no break expected:\n{rest}");
}
