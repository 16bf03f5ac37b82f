//! Supervisor and worker processes: ClientGUID routing and worker restart.

use std::time::{Duration, Instant};

use holdfast_tests::{assert_smb_ok, peers_available, python_smbprotocol_available, Server};

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
