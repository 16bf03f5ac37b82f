//! Durable handles with the handle keeper: a durable v2 handle survives
//! kill -9 of its worker, and comes back as the same open file description.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use holdfast_tests::{bin_dir, python, python_smbprotocol_available, run_with_timeout, Server};

/// A private holdfast-keeper (test mode: it runs as the test's own user).
struct Keeper {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

/// How to start a keeper in a directory (socket, state and logs live there).
struct KeeperOpts<'a> {
    dir: &'a Path,
    /// Names the log file, so successive keepers in one directory keep theirs.
    tag: &'a str,
    notify: Option<&'a Path>,
    listen_fds: Vec<(String, OwnedFd)>,
}

impl Keeper {
    fn start(o: KeeperOpts<'_>) -> Keeper {
        let socket = o.dir.join("keeper.sock");
        let log = o.dir.join(format!("{}.log", o.tag));
        // `sh` puts its own pid (which exec keeps) in LISTEN_PID, as systemd does.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
            .arg(bin_dir().join("holdfast-keeper"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(o.dir.join("state"))
            .args(["--scavenge-interval-ms", "100"])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("keeper log"));
        if let Some(n) = o.notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        if !o.listen_fds.is_empty() {
            let names: Vec<&str> = o.listen_fds.iter().map(|(n, _)| n.as_str()).collect();
            cmd.env("LISTEN_FDS", o.listen_fds.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
            let fds = o.listen_fds.into_iter().map(|(_, f)| f).collect();
            kmod_interface::fdpass::pass_listen_fds(&mut cmd, fds).expect("pass LISTEN_FDS");
        }
        let child = cmd.spawn().expect("spawn holdfast-keeper");
        let mut k = Keeper {
            child: Some(child),
            socket,
            log,
        };
        let t0 = Instant::now();
        while !k.log_text().contains("keeper ready") {
            if let Some(st) = k.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("keeper exited early ({st}):\n{}", k.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "keeper not ready:\n{}",
                k.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        k
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running keeper").id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` and reaps the keeper.
    fn stop(&mut self, sig: Signal) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running keeper");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("kill");
        c.wait().expect("wait keeper")
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A stand-in for systemd's notify socket and fd store: keeps every fd sent
/// with FDSTORE=1 under its FDNAME and drops it on FDSTOREREMOVE=1.
struct FakeSystemd {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    store: Arc<Mutex<Vec<(String, OwnedFd)>>>,
}

impl FakeSystemd {
    fn new(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store: Arc<Mutex<Vec<(String, OwnedFd)>>> = Arc::new(Mutex::new(Vec::new()));
        let (m, s) = (messages.clone(), store.clone());
        // Lives as long as the test process; recv blocks otherwise.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, fds)) = kmod_interface::fdpass::recv_with_fds(sock.as_fd(), &mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let kv: HashMap<&str, &str> =
                    msg.lines().filter_map(|l| l.split_once('=')).collect();
                let name = kv.get("FDNAME").copied().unwrap_or("stored").to_string();
                let mut store = s.lock().unwrap_or_else(|e| e.into_inner());
                if kv.get("FDSTORE") == Some(&"1") {
                    store.extend(fds.into_iter().map(|fd| (name.clone(), fd)));
                } else if kv.get("FDSTOREREMOVE") == Some(&"1") {
                    store.retain(|(n, _)| *n != name);
                }
                drop(store);
                m.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
            }
        });
        FakeSystemd {
            path,
            messages,
            store,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stored_names(&self) -> Vec<String> {
        let s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The file offset of the stored fd `name` (the description's offset).
    fn stored_offset(&self, name: &str) -> Option<i64> {
        let s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let (_, fd) = s.iter().find(|(n, _)| n == name)?;
        nix::unistd::lseek(fd.as_raw_fd(), 0, nix::unistd::Whence::SeekCur).ok()
    }

    /// What systemd passes a restarted service: a dup of every stored fd.
    fn listen_fds(&self) -> Vec<(String, OwnedFd)> {
        let s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .map(|(n, f)| (n.clone(), f.try_clone().expect("dup stored fd")))
            .collect()
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
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
    let dir = tempfile::Builder::new()
        .prefix("holdfast-keeper-it.")
        .tempdir()
        .expect("tempdir");
    let keeper = Keeper::start(KeeperOpts {
        dir: dir.path(),
        tag: "keeper",
        notify: None,
        listen_fds: Vec::new(),
    });
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
        .args(["--keeper-pid", &keeper.pid().to_string()]);
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

/// The offset durable_keeper_restart.py puts on the kept description.
const MARKER: i64 = 4242;

/// Drives durable_keeper_restart.py: a durable v2 handle is opened and
/// written, the keeper is stopped with `sig` and started again, with the
/// fds it stored through NOTIFY_SOCKET handed back as LISTEN_FDS (`store`)
/// or with no fd store at all, then the worker is killed and the handle
/// reconnected (or, without a store, found lost). Returns the script's
/// stdout and both keeper logs.
fn keeper_restart(sig: Signal, store: bool) -> Option<(String, String, String)> {
    if !python_smbprotocol_available() || !nix::unistd::geteuid().is_root() {
        return None; // needs root (pidfd_getfd on the keeper, Unix users)
    }
    let dir = tempfile::Builder::new()
        .prefix("holdfast-keeper-restart.")
        .tempdir()
        .expect("tempdir");
    let sd = store.then(|| FakeSystemd::new(dir.path()));
    let notify = sd.as_ref().map(|s| s.path.clone());
    let mut k1 = Keeper::start(KeeperOpts {
        dir: dir.path(),
        tag: "keeper1",
        notify: notify.as_deref(),
        listen_fds: Vec::new(),
    });
    if let Some(sd) = &sd {
        wait_until("READY=1", Duration::from_secs(10), || {
            sd.messages().iter().any(|m| m.starts_with("READY=1"))
        });
    }
    let srv = Server::start_config(
        &format!(
            "holdfast workers = 1\n\tholdfast keeper socket = {}",
            k1.socket.display()
        ),
        "",
    );
    let pid = srv.pid()?;
    let password2 = srv
        .add_user("holdfasttest2", "holdfasttest2")
        .expect("second user");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/durable_keeper_restart.py");
    let mut py = Command::new(python())
        .arg(&script)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--share", &srv.share, "--user", &srv.user])
        .args(["--password", &srv.password])
        .args(["--user2", "holdfasttest2", "--password2", &password2])
        .arg("--localdir")
        .arg(&srv.localdir)
        .arg("--keeper-socket")
        .arg(&k1.socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--ctl")
        .arg(bin_dir().join("holdfastctl"))
        .args(["--supervisor", &pid.to_string()])
        .args(["--keeper-pid", &k1.pid().to_string()])
        .args(["--store", if store { "yes" } else { "no" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.path().join("py.err")).expect("py.err"))
        .spawn()
        .expect("spawn python");
    let mut to_py = py.stdin.take().expect("stdin");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = py.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = String::new();
    let mut k2: Option<Keeper> = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    let k1_log = k1.log.clone();
    let fail = |why: &str, stdout: &str, k2: &Option<Keeper>| -> ! {
        srv.dump_log();
        panic!(
            "{why}\n--- script ---\n{stdout}\n{}\n--- keeper 1 ---\n{}\n--- keeper 2 ---\n{}",
            std::fs::read_to_string(dir.path().join("py.err")).unwrap_or_default(),
            std::fs::read_to_string(&k1_log).unwrap_or_default(),
            k2.as_ref().map(|k| k.log_text()).unwrap_or_default()
        );
    };
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => l,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    let _ = py.kill();
                    fail("durable_keeper_restart.py timed out", &stdout, &k2);
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        stdout.push_str(&line);
        stdout.push('\n');
        let Some(id) = line.strip_prefix("RESTART ") else {
            continue;
        };
        if let Some(sd) = &sd {
            // The keeper stored the deposited fd: the very description
            // (the script moved its offset through the keeper's own fd).
            wait_until("FDSTORE=1 for the record", Duration::from_secs(10), || {
                sd.stored_names().iter().any(|n| n == id)
            });
            assert!(sd
                .messages()
                .iter()
                .any(|m| m.contains("FDSTORE=1") && m.contains(&format!("FDNAME={id}"))));
            assert_eq!(sd.stored_offset(id), Some(MARKER), "stored fd's offset");
        }
        let st = k1.stop(sig);
        match sig {
            Signal::SIGTERM => {
                assert!(st.success(), "keeper exit after SIGTERM: {st}");
                assert!(k1.log_text().contains("SIGTERM: stopping"));
                let warned = k1
                    .log_text()
                    .contains("stopping without an fd store: these kept handles are lost");
                assert_eq!(warned, !store, "{}", k1.log_text());
                if let Some(sd) = &sd {
                    assert!(sd.messages().iter().any(|m| m == "STOPPING=1"));
                }
            }
            _ => assert!(!st.success()),
        }
        let k = Keeper::start(KeeperOpts {
            dir: dir.path(),
            tag: "keeper2",
            notify: notify.as_deref(),
            listen_fds: sd.as_ref().map(|s| s.listen_fds()).unwrap_or_default(),
        });
        writeln!(to_py, "GO {}", k.pid()).expect("write to script");
        to_py.flush().expect("flush");
        k2 = Some(k);
    }
    let status = py.wait().expect("wait python");
    if !status.success() {
        fail(&format!("script failed: {status}"), &stdout, &k2);
    }
    let k2 = k2.expect("the keeper was restarted");
    if let Some(sd) = &sd {
        // Closed by its owner: gone from the fd store too.
        wait_until("FDSTOREREMOVE", Duration::from_secs(10), || {
            sd.stored_names().is_empty()
        });
    }
    println!("{stdout}");
    if store {
        assert_worker_reconnected_to_keeper(&srv.log_text());
    }
    Some((stdout, k1.log_text(), k2.log_text()))
}

fn assert_restored(stdout: &str, k2_log: &str) {
    for step in [
        "OK keeper.db row and record",
        "OK restarted keeper holds the same open file description",
        "OK the worker claimed record",
        "OK holdfastctl handles --json: disconnected, time left",
        "OK another user and a wrong CreateGuid refused after the restart",
        "OK DH2C on a new connection after keeper restart and worker crash; data read back",
        "OK reclaimed from another ClientGuid, as MS-SMB2 allows for an oplock handle",
        "OK same open file description (offset 4242)",
        "OK close removed the keeper record",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    assert!(k2_log.contains("kept handle restored from the fd store"));
    assert!(k2_log.contains("fetch refused; record kept"));
    assert!(!k2_log.contains("kept handle lost"));
}

/// The worker noticed the keeper restart on its next request, sent it again
/// on a new connection and claimed its connected handle again.
fn assert_worker_reconnected_to_keeper(srv_log: &str) {
    assert!(
        srv_log
            .contains("handle keeper connection lost (keeper restarted?); retrying on a new one"),
        "no retry in the smbd log"
    );
    assert!(srv_log.contains("kept handle claimed again after a keeper reconnect"));
    assert!(!srv_log.contains("handle keeper deposit failed"));
}

/// Issue 4 acceptance: the keeper is killed (-9) and restarted under an
/// emulated systemd fd store; the handle comes back to a new connection as
/// the same open file description, with its keeper.db row.
#[test]
fn durable_handle_survives_keeper_kill_through_the_fd_store() {
    if let Some((stdout, _, k2)) = keeper_restart(Signal::SIGKILL, true) {
        assert_restored(&stdout, &k2);
    }
}

/// As above with an orderly stop (SIGTERM), as `systemctl restart` does.
#[test]
fn durable_handle_survives_keeper_sigterm_through_the_fd_store() {
    if let Some((stdout, _, k2)) = keeper_restart(Signal::SIGTERM, true) {
        assert_restored(&stdout, &k2);
    }
}

/// Without systemd (no NOTIFY_SOCKET) a keeper restart loses the kept
/// non-persistent handles, and both keepers say so in their logs.
#[test]
fn keeper_restart_without_fd_store_loses_handles_and_logs_it() {
    let Some((stdout, k1, k2)) = keeper_restart(Signal::SIGTERM, false) else {
        return;
    };
    for step in [
        "OK restart without an fd store: record",
        "OK after the worker crash the handle is gone (OBJECT_NAME_NOT_FOUND)",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    assert!(k1.contains("no NOTIFY_SOCKET: kept handles will not survive a keeper restart"));
    assert!(k1.contains("stopping without an fd store: these kept handles are lost"));
    assert!(
        k2.contains("kept handle lost across the keeper restart"),
        "{k2}"
    );
}

/// Starts a private keeper and a one-worker server that deposits its
/// durable opens with it (`share_opts` for the share), runs
/// `python/<script>` against both and returns its stdout and the keeper's
/// log; None where the test cannot run (no smbprotocol, not root, an
/// external server). `localdir` passes the share's directory too.
fn run_with_keeper(script: &str, share_opts: &str, localdir: bool) -> Option<(String, String)> {
    run_with_keeper_args(script, share_opts, localdir, &[], 1).map(|(out, klog, _)| (out, klog))
}

/// [`run_with_keeper`] with `extra` arguments for the script.
fn run_with_keeper_args(
    script: &str,
    share_opts: &str,
    localdir: bool,
    extra: &[&str],
    workers: usize,
) -> Option<(String, String, String)> {
    if !python_smbprotocol_available() || !nix::unistd::geteuid().is_root() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("holdfast-keeper-script.")
        .tempdir()
        .expect("tempdir");
    let keeper = Keeper::start(KeeperOpts {
        dir: dir.path(),
        tag: "keeper",
        notify: None,
        listen_fds: Vec::new(),
    });
    let srv = Server::start_config(
        &format!(
            "holdfast workers = {workers}\n\tholdfast keeper socket = {}",
            keeper.socket.display()
        ),
        share_opts,
    );
    let pid = srv.pid()?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut c = Command::new(python());
    c.arg(&path)
        .args(["--host", &srv.host, "--port", &srv.port.to_string()])
        .args(["--share", &srv.share, "--user", &srv.user])
        .args(["--password", &srv.password])
        .arg("--keeper-socket")
        .arg(&keeper.socket)
        .arg("--ctl")
        .arg(bin_dir().join("holdfastctl"))
        .args(["--supervisor", &pid.to_string()]);
    if localdir {
        c.arg("--localdir").arg(&srv.localdir);
    }
    c.args(extra);
    let out = run_with_timeout(&mut c, None, Duration::from_secs(120));
    if !out.success() {
        srv.dump_log();
        panic!(
            "{script} failed:\n{out}\n--- keeper log ---\n{}",
            keeper.log_text()
        );
    }
    println!("{}", out.stdout);
    Some((out.stdout.clone(), keeper.log_text(), srv.log_text()))
}

/// `posix locking = yes` (issue 5): SMB byte-range locks are mirrored as OFD
/// locks on the open's description, so a local process (standing in for
/// NFS) is kept out by them and keeps SMB out with its own, while
/// connected and while the keeper holds a disconnected durable handle.
#[test]
fn posix_locking_mirrors_smb_locks_for_local_processes() {
    let Some((stdout, _)) = run_with_keeper("posix_locking.py", "posix locking = yes", true) else {
        return;
    };
    for step in [
        "OK an SMB exclusive lock makes local F_OFD_SETLK and F_SETLK fail (EAGAIN)",
        "OK an SMB shared lock admits local readers and refuses local writers",
        "OK local OFD and POSIX locks refuse the SMB lock with LOCK_NOT_GRANTED",
        "OK a blocking SMB lock was granted",
        "OK SMB unlock releases the local view",
        "OK while disconnected (worker killed, keeper holds the fd) the lock keeps local processes out",
        "OK after reconnect and close nothing is locked locally",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
}

/// A lease-based durable handle is bound to its ClientGuid (MS-SMB2
/// 3.3.5.9.12): a reconnect from another client instance is refused in the
/// worker and, after the worker died, by the keeper, and the handle stays
/// for its owner.
#[test]
fn leased_durable_handle_refuses_another_client_guid() {
    let Some((stdout, klog)) = run_with_keeper("durable_lease_binding.py", "", false) else {
        return;
    };
    for step in [
        "OK lease-based durable v2 open; the keeper's record carries its lease key",
        "OK in the worker: another ClientGuid refused, the owner's ClientGuid reconnects",
        "OK through the keeper: another ClientGuid refused, record",
        "OK through the keeper: the owner's ClientGuid gets the leased handle back",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    assert!(
        klog.contains("ClientGUID differs") && klog.contains("fetch refused; record kept"),
        "{klog}"
    );
}

/// Issue 5 (durable interop): with `kernel oplocks = yes` the keeper takes
/// over the kernel lease of a disconnected durable handle; a local open (a
/// stand-in for NFS) breaks it, the keeper purges the handle at once rather
/// than letting the opener wait out fs.lease-break-time, and the reconnect
/// fails with OBJECT_NAME_NOT_FOUND. Runs `kernel_durable.py` with `args`.
fn kernel_durable(args: &[&str]) -> Option<(String, String)> {
    kernel_durable_on(1, args).map(|(out, klog, _)| (out, klog))
}

/// [`kernel_durable`] with `workers` worker processes; also returns the
/// server log.
fn kernel_durable_on(workers: usize, args: &[&str]) -> Option<(String, String, String)> {
    let mut all = args.to_vec();
    all.push("--posix-locking");
    run_with_keeper_args(
        "kernel_durable.py",
        "kernel oplocks = yes\n\tposix locking = yes",
        true,
        &all,
        workers,
    )
}

fn assert_purged(stdout: &str, klog: &str) {
    for step in [
        "kernel lease of the connected open's description: write",
        "keeper record",
        "kept fd holds a write lease",
        "OK local open went on after",
        "OK the keeper no longer lists the handle",
        "OK the purged open's byte-range lock is gone",
        "OK reconnect refused with OBJECT_NAME_NOT_FOUND",
        "OK a new SMB open for writing and its lock on the same range are granted",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    assert!(
        klog.contains("kept handle's kernel lease taken over"),
        "{klog}"
    );
    assert!(
        klog.contains("a local open broke its kernel lease"),
        "{klog}"
    );
}

#[test]
fn local_open_purges_disconnected_durable_owner() {
    let Some((stdout, klog)) = kernel_durable(&["--scenario", "purge", "--mode", "oplock"]) else {
        return;
    };
    assert_purged(&stdout, &klog);
}

#[test]
fn local_open_purges_disconnected_durable_lease_owner() {
    let Some((stdout, klog)) = kernel_durable(&["--scenario", "purge", "--mode", "lease"]) else {
        return;
    };
    assert_purged(&stdout, &klog);
}

/// As above after kill -9 of the worker: only the keeper holds the open
/// file description, and its breaks.
#[test]
fn local_open_purges_durable_owner_of_a_killed_worker() {
    let Some((stdout, klog)) =
        kernel_durable(&["--scenario", "purge", "--mode", "lease", "--kill"])
    else {
        return;
    };
    assert!(stdout.contains("OK worker killed -9"), "{stdout}");
    assert_purged(&stdout, &klog);
}

fn assert_breaks_again(stdout: &str, klog: &str) {
    // The break reached the worker directly: the keeper did not have to
    // pass it on, so the worker had taken the lease back.
    assert!(
        klog.contains("kept handle's kernel lease taken over"),
        "{klog}"
    );
    assert!(!klog.contains("passed on to the workers"), "{klog}");
    for step in [
        "OK reconnected with the batch oplock; the description holds a write lease",
        "OK the local open broke the client's oplock",
        "OK acknowledged; the local open went on",
        "OK close removed the keeper record",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
}

/// After a reconnect in the same worker the worker takes the kernel lease
/// back from the keeper: a local open breaks the SMB client again.
#[test]
fn reconnected_durable_handle_breaks_again_on_local_open() {
    let Some((stdout, klog)) = kernel_durable(&["--scenario", "reconnect"]) else {
        return;
    };
    assert!(stdout.contains("OK connection dropped"), "{stdout}");
    assert_breaks_again(&stdout, &klog);
}

/// With two workers, a reconnect from a new ClientGuid lands on the other
/// worker: the disconnected open moves there with its kernel lease, which
/// that worker re-issues, so a local open breaks the SMB client again.
#[test]
fn moved_durable_handle_breaks_again_on_local_open() {
    let Some((stdout, klog, slog)) =
        kernel_durable_on(2, &["--scenario", "reconnect", "--new-client-guid"])
    else {
        return;
    };
    assert!(stdout.contains("OK connection dropped"), "{stdout}");
    assert!(
        slog.contains("durable open given up to another worker"),
        "the open did not move:\n{slog}"
    );
    assert_breaks_again(&stdout, &klog);
}

/// The same after kill -9 of the worker: the handle is rebuilt from the
/// keeper in a new worker, which takes the lease.
#[test]
fn rebuilt_durable_handle_breaks_again_on_local_open() {
    let Some((stdout, klog)) = kernel_durable(&["--scenario", "reconnect", "--kill"]) else {
        return;
    };
    assert!(stdout.contains("OK worker killed -9"), "{stdout}");
    assert_breaks_again(&stdout, &klog);
}

/// The supervisor keeps a dead worker's kept durable opens in its broker
/// (share mode, oplock, byte-range locks): the handle comes back through the
/// keeper with its lock, and a conflicting open purges it meanwhile.
#[test]
fn kept_durable_handle_keeps_its_lock_across_a_worker_crash() {
    let Some((stdout, _)) = run_with_keeper("durable_keeper_locks.py", "", false) else {
        return;
    };
    for step in [
        "OK durable open with a lock; worker killed while it was disconnected",
        "OK after the crash the handle comes back with its lock",
        "OK a conflicting open purges the orphaned handle",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
}
