//! Durable handles with the handle keeper: a durable v2 handle survives
//! kill -9 of its worker, and comes back as the same open file description.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_tests::{bin_dir, python, python_smbprotocol_available, run_with_timeout, Server};

/// A private holdfast-keeper (test mode: it runs as the test's own user).
struct Keeper {
    child: Child,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Keeper {
    fn start() -> Keeper {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-keeper-it.")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("keeper.sock");
        let log = dir.path().join("keeper.log");
        let child = Command::new(bin_dir().join("holdfast-keeper"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--scavenge-interval-ms", "100"])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("keeper log"))
            .spawn()
            .expect("spawn holdfast-keeper");
        let k = Keeper {
            child,
            socket,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        while !k.log_text().contains("keeper ready") {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "keeper not ready:\n{}",
                k.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        k
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open a durable v2 handle (batch oplock), write, kill -9 the worker,
/// reconnect with DH2C on a new connection and read the data back; the new
/// worker's fd carries the offset set on the keeper's copy, and the keeper
/// lists the same record throughout. Another user and a wrong CreateGuid
/// are refused without disturbing the handle.
#[test]
fn durable_handle_survives_worker_kill_through_the_keeper() {
    if !python_smbprotocol_available() || !nix::unistd::geteuid().is_root() {
        return; // needs root (pidfd_getfd on the keeper, Unix users)
    }
    let keeper = Keeper::start();
    let srv = Server::start_config(
        &format!(
            "holdfast workers = 1\n\tholdfast keeper socket = {}",
            keeper.socket.display()
        ),
        "",
    );
    let Some(pid) = srv.pid() else {
        return; // external server
    };
    let password2 = srv
        .add_user("holdfasttest2", "holdfasttest2")
        .expect("second user");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/durable_keeper.py");
    let mut c = Command::new(python());
    c.arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--share", &srv.share, "--user", &srv.user])
        .args(["--password", &srv.password])
        .args(["--user2", "holdfasttest2", "--password2", &password2])
        .arg("--localdir")
        .arg(&srv.localdir)
        .arg("--keeper-socket")
        .arg(&keeper.socket)
        .arg("--ctl")
        .arg(bin_dir().join("holdfastctl"))
        .args(["--supervisor", &pid.to_string()])
        .args(["--keeper-pid", &keeper.child.id().to_string()]);
    let out = run_with_timeout(&mut c, None, Duration::from_secs(120));
    if !out.success() {
        srv.dump_log();
        panic!(
            "durable_keeper.py failed:\n{out}\n--- keeper log ---\n{}",
            keeper.log_text()
        );
    }
    println!("{}", out.stdout);
    for step in [
        "OK worker and keeper share one open file description",
        "OK reconnects as another user and with another CreateGuid refused",
        "OK DH2C on a new connection after the crash; data read back",
        "OK same open file description",
        "OK close removed the keeper record",
    ] {
        assert!(out.stdout.contains(step), "missing {step:?}:\n{out}");
    }
    assert!(srv
        .log_text()
        .contains("durable open rebuilt from the handle keeper"));
    assert!(keeper.log_text().contains("fetch refused; record kept"));
}
