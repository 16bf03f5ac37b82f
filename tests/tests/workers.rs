//! Supervisor and worker processes: ClientGUID routing and worker restart.

use std::time::{Duration, Instant};

use holdfast_tests::{
    assert_smb_ok, peers_available, python_smbprotocol_available, Output, Server,
};

/// Pids of the supervisor's child processes (its workers).
fn workers_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out.sort_unstable();
    out
}

/// Waits for the supervisor to have `n` workers (they start after it listens).
fn wait_workers(pid: u32, n: usize) -> Vec<u32> {
    let t0 = Instant::now();
    loop {
        let w = workers_of(pid);
        if w.len() == n || t0.elapsed() > Duration::from_secs(10) {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With two workers, the second connection of a ClientGUID lands on the
/// other worker (round robin) and must be passed to the first: only then
/// can its PreviousSessionId close the session the first connection holds.
#[test]
fn connections_of_one_client_guid_share_a_worker() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start_config("holdfast workers = 2", "");
    let Some(pid) = srv.pid() else {
        return; // external server
    };
    assert_eq!(wait_workers(pid, 2).len(), 2, "want two workers");
    let out = srv.python_script("reconnect.py", &[], Duration::from_secs(60));
    assert!(out.success(), "reconnect.py failed:\n{out}");
    assert!(out.stdout.contains("OK session reconnect"), "{out}");
    assert!(
        srv.log_text()
            .contains("connection handed to the ClientGUID's worker"),
        "the second connection was not routed"
    );
}

/// kill -9 of a worker: the supervisor starts a new one and keeps serving.
#[test]
fn killed_worker_is_restarted() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start_config("holdfast workers = 2", "");
    let Some(pid) = srv.pid() else {
        return;
    };
    let before = wait_workers(pid, 2);
    assert_eq!(before.len(), 2, "want two workers: {before:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker");
    let t0 = Instant::now();
    let after = loop {
        let w = workers_of(pid);
        if w.len() == 2 && !w.contains(&before[0]) {
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "worker not restarted: {w:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after.contains(&before[1]), "the other worker was disturbed");
    // Both workers serve (round robin hands consecutive connections to each).
    for _ in 0..4 {
        let out = srv.smbclient(&[], "ls");
        assert_smb_ok("ls after a worker restart", &out);
    }
    assert!(srv.log_text().contains("worker exited; restarting it"));
}

/// The worker (index) that served the connection from local port `port`:
/// connection ids carry `index + 1` in their top 16 bits.
fn worker_of_port(log: &str, port: &str) -> Option<u64> {
    let peer = format!("peer=127.0.0.1:{port}}}");
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(&peer) && l.ends_with("connected"))
        .find_map(|l| {
            let id = l.split("conn{id=").nth(1)?.split(' ').next()?;
            Some((id.parse::<u64>().ok()? >> 48) - 1)
        })
}

fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut it = l.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// tests/python/cross_worker.py: share modes, locks against locks and I/O,
/// and a blocking lock between two clients. Returns the workers that served
/// the two connections.
fn cross_client_conflicts(global: &str) -> Option<(u64, u64)> {
    let srv = Server::start_config(global, "");
    srv.pid()?; // None: an external server
    let out = srv.python_script("cross_worker.py", &[], Duration::from_secs(60));
    assert!(out.success(), "cross_worker.py ({global}) failed:\n{out}");
    for want in [
        "OK cross-client share modes",
        "OK cross-client byte-range locks",
    ] {
        assert!(out.stdout.contains(want), "{out}");
    }
    let ports: Vec<&str> = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PORTS "))
        .expect("script prints its ports")
        .split(' ')
        .collect();
    let log = srv.log_text();
    let w1 = worker_of_port(&log, ports[0]).expect("first connection in the log");
    let w2 = worker_of_port(&log, ports[1]).expect("second connection in the log");
    Some((w1, w2))
}

/// Two clients on different workers get the same sharing violations and
/// lock conflicts as on one worker: the broker lives in the supervisor.
#[test]
fn clients_on_different_workers_conflict_as_on_one() {
    if !python_smbprotocol_available() {
        return;
    }
    let Some((a, b)) = cross_client_conflicts("holdfast workers = 2") else {
        return; // external server
    };
    assert_ne!(a, b, "the two clients must be served by different workers");
    let Some((a, b)) = cross_client_conflicts("holdfast workers = 1") else {
        return;
    };
    assert_eq!(a, b);
}

/// A connection with another ClientGUID binds to a session of the other
/// worker (MS-SMB2 3.3.5.5.2): its SESSION_SETUP names a session id that
/// carries the owning worker's index, so the connection moves there with its
/// negotiated state and the binding request, and then works as a channel of
/// the session (reads what the first channel wrote, meets its share mode).
#[test]
fn session_binds_across_workers() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start_config("holdfast workers = 2", "");
    let Some(pid) = srv.pid() else {
        return; // external server
    };
    assert_eq!(wait_workers(pid, 2).len(), 2, "want two workers");
    // 3.0.2 also checks VALIDATE_NEGOTIATE_INFO sent on the bound channel.
    for dialect in ["3.1.1", "3.0.2"] {
        let out = srv.python_script(
            "bind_across_workers.py",
            &["--dialect", dialect],
            Duration::from_secs(60),
        );
        assert!(
            out.success(),
            "bind_across_workers.py {dialect} failed:\n{out}"
        );
        for want in [
            "OK bound session",
            "OK the bound channel reads what the first channel wrote",
            "OK first channel unaffected",
        ] {
            assert!(out.stdout.contains(want), "{dialect}: {out}");
        }
        let ports: Vec<&str> = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("PORTS "))
            .expect("script prints its ports")
            .split(' ')
            .collect();
        let log = srv.log_text();
        let owner = worker_of_port(&log, ports[0]).expect("first connection in the log");
        let arrived = worker_of_port(&log, ports[1]).expect("second connection in the log");
        assert_ne!(
            owner, arrived,
            "{dialect}: the clients must start on different workers"
        );
        let moved_to = worker_of_moved_port(&log, ports[1]).expect("the second connection moved");
        assert_eq!(moved_to, owner, "{dialect}: moved to the session's worker");
    }
    assert!(srv.log_text().contains("channel bound to session"));
}

/// A bind to a session whose worker was killed (and restarted, a new
/// generation) is answered USER_SESSION_DELETED by the binding connection's
/// worker: the supervisor sends the connection back.
#[test]
fn bind_to_a_dead_workers_session_is_refused() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start_config("holdfast workers = 2", "");
    let Some(pid) = srv.pid() else {
        return;
    };
    assert_eq!(wait_workers(pid, 2).len(), 2, "want two workers");
    let script = kill_holders_worker(&srv, pid, "bind_across_workers.py", true);
    assert!(
        script.success(),
        "bind_across_workers.py --handshake failed:\n{script}"
    );
    assert!(
        script
            .stdout
            .contains("OK bind to a dead worker's session: USER_SESSION_DELETED"),
        "{script}"
    );
    assert!(srv
        .log_text()
        .contains("answering as for an unknown session"));
}

/// The worker a connection from local port `port` was moved to.
fn worker_of_moved_port(log: &str, port: &str) -> Option<u64> {
    let peer = format!("peer=127.0.0.1:{port}}}");
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(&peer) && l.contains("connected (moved here from another worker)"))
        .find_map(|l| {
            let id = l.split("conn{id=").nth(1)?.split(' ').next()?;
            Some((id.parse::<u64>().ok()? >> 48) - 1)
        })
}

/// A worker killed while it holds an exclusive open and a lock: the
/// supervisor's broker releases them, so a client of the other worker can
/// open and lock the file.
#[test]
fn killed_workers_opens_are_released() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start_config("holdfast workers = 2", "");
    let Some(pid) = srv.pid() else {
        return;
    };
    assert_eq!(wait_workers(pid, 2).len(), 2, "want two workers");
    let script = kill_holders_worker(&srv, pid, "cross_worker.py", false);
    assert!(
        script.success(),
        "cross_worker.py --handshake failed:\n{script}"
    );
    assert!(
        script
            .stdout
            .contains("OK released after the holder's worker died"),
        "{script}"
    );
    assert!(srv.log_text().contains("the worker's opens are released"));
}

/// Runs `script --handshake DIR`: once it writes DIR/held (the local port
/// of the connection holding something on one worker), that worker is
/// killed with -9 (with `respawned`, the replacement is awaited), then
/// DIR/go lets the script go on.
fn kill_holders_worker(srv: &Server, pid: u32, script: &str, respawned: bool) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let hs = dir.path().display().to_string();
    std::thread::scope(|s| {
        let run =
            s.spawn(|| srv.python_script(script, &["--handshake", &hs], Duration::from_secs(90)));
        let held = dir.path().join("held");
        let t0 = Instant::now();
        while !held.exists() && !run.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{script} never held anything"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if held.exists() {
            let port = std::fs::read_to_string(&held).expect("held");
            let log = srv.log_text();
            let w = worker_of_port(&log, port.trim()).expect("holder in the log");
            let victim = worker_pid(&log, w).expect("holder's worker pid in the log");
            let others = workers_of(pid);
            assert!(others.contains(&victim), "{victim} not among {others:?}");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill the holder's worker");
            // Go on once the replacement runs (or while none does).
            let t0 = Instant::now();
            while respawned && t0.elapsed() < Duration::from_secs(10) {
                let w = workers_of(pid);
                if w.len() == 2 && !w.contains(&victim) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(dir.path().join("go"), b"").expect("go");
        }
        run.join().expect("script thread")
    })
}

/// Pid of worker `index` as the supervisor last logged it.
fn worker_pid(log: &str, index: u64) -> Option<u32> {
    let want = format!("worker={index} ");
    log.lines()
        .rev()
        .map(strip_ansi)
        .filter(|l| l.contains("worker started") && l.contains(&want))
        .filter_map(|l| {
            l.split("pid=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
}

/// tests/python/durable_move.py under `global`: returns the workers that
/// served client 1 (the durable open) and client 2 (its reconnect), and
/// the server log.
fn durable_move(global: &str) -> Option<(u64, u64, String)> {
    // smbprotocol does not answer oplock breaks: client 3's conflicting
    // open waits this long for client 2's batch oplock.
    let srv = Server::start_config(&format!("{global}\noplock break timeout = 2"), "");
    srv.pid()?;
    let out = srv.python_script("durable_move.py", &[], Duration::from_secs(90));
    assert!(out.success(), "durable_move.py ({global}) failed:\n{out}");
    for want in [
        "OK a reconnect with a wrong CreateGuid is refused",
        "OK reconnected from another ClientGuid; data read back",
        "OK the byte-range lock moved with the open",
        "OK client 3 refused by the moved open's share mode",
        "OK client 3 opens once client 2 closed",
    ] {
        assert!(out.stdout.contains(want), "{want}:\n{out}");
    }
    let ports: Vec<&str> = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PORTS "))
        .expect("script prints its ports")
        .split(' ')
        .collect();
    let log = srv.log_text();
    let w1 = worker_of_port(&log, ports[0]).expect("client 1 in the log");
    let w2 = worker_of_port(&log, ports[1]).expect("client 2 in the log");
    Some((w1, w2, log))
}

/// A durable handle opened on one worker is reconnected from a client with
/// another ClientGuid that the supervisor deals to the other worker: the
/// open moves there with its data, lock and share mode (and a wrong
/// CreateGuid is refused without harming it).
#[test]
fn durable_handle_moves_to_the_reconnecting_worker() {
    if !python_smbprotocol_available() {
        return;
    }
    let Some((a, b, log)) = durable_move("holdfast workers = 2") else {
        return; // external server
    };
    assert_ne!(a, b, "the two clients must be served by different workers");
    assert!(
        log.contains("durable open moved between workers"),
        "the open did not move"
    );
    let Some((a, b, log)) = durable_move("holdfast workers = 1") else {
        return;
    };
    assert_eq!(a, b);
    assert!(!log.contains("durable open moved between workers"));
}
