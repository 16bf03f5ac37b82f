//! Failure paths seen by smbclient: wrong password, unknown share, share listing.

use std::process::Command;
use std::time::Duration;

use holdfast_tests::{peers_available, run_with_timeout, Server};

#[test]
fn wrong_password_is_logon_failure() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let bad = format!("{}-wrong", srv.password);
    let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &bad, &[], "ls");
    assert!(
        !out.success(),
        "smbclient with a wrong password succeeded:\n{out}"
    );
    assert_eq!(
        out.nt_status().as_deref(),
        Some("NT_STATUS_LOGON_FAILURE"),
        "wrong password:\n{out}"
    );
}

#[test]
fn unknown_user_is_logon_failure() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let out = srv.smbclient_as(&srv.share.clone(), "nosuchuser-hf", "whatever", &[], "ls");
    assert!(
        !out.success(),
        "smbclient with an unknown user succeeded:\n{out}"
    );
    assert_eq!(
        out.nt_status().as_deref(),
        Some("NT_STATUS_LOGON_FAILURE"),
        "unknown user:\n{out}"
    );
}

#[test]
fn unknown_share_is_bad_network_name() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let out = srv.smbclient_as("nosuchshare", &srv.user, &srv.password, &[], "ls");
    assert!(
        !out.success(),
        "smbclient on an unknown share succeeded:\n{out}"
    );
    assert_eq!(
        out.nt_status().as_deref(),
        Some("NT_STATUS_BAD_NETWORK_NAME"),
        "unknown share:\n{out}"
    );
}

/// `smbclient -L` needs srvsvc over IPC$, which Holdfast does not implement yet. It must not
/// hang, and must end clearly: either a failure with an NT_STATUS code, or (once listing
/// exists, and against Samba) success with the test share in the list.
#[test]
fn share_listing_does_not_hang() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let mut c = Command::new("smbclient");
    c.arg("-L")
        .arg(format!("//{}", srv.host))
        .arg("-p")
        .arg(srv.port.to_string())
        .arg("-U")
        .arg(format!("{}%{}", srv.user, srv.password));
    let out = run_with_timeout(&mut c, None, Duration::from_secs(30));
    assert!(
        !out.timed_out,
        "smbclient -L hung (killed after 30 s):\n{out}"
    );
    if out.success() {
        assert!(
            out.stdout.contains(&srv.share),
            "smbclient -L succeeded but does not list '{}':\n{out}",
            srv.share
        );
    } else {
        assert!(
            out.nt_status().is_some(),
            "smbclient -L failed without an NT_STATUS code:\n{out}"
        );
    }
}

/// After `holdfast failed logon limit` wrong passwords from one address, that
/// address is refused (even with the right password) until the lockout ends;
/// the refusal is logged.
#[test]
fn repeated_wrong_passwords_block_the_address() {
    if !peers_available(&["smbclient"]) || std::env::var("HOLDFAST_TEST_EXTERNAL").is_ok() {
        return;
    }
    let srv = Server::start_configured(
        "\tholdfast failed logon limit = 3\n\tholdfast failed logon window = 60\n\
         \tholdfast failed logon lockout = 60\n",
        "",
    );
    let bad = format!("{}-wrong", srv.password);
    for i in 0..3 {
        let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &bad, &[], "ls");
        assert_eq!(
            out.nt_status().as_deref(),
            Some("NT_STATUS_LOGON_FAILURE"),
            "wrong password #{i}:\n{out}"
        );
    }
    let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &srv.password, &[], "ls");
    assert!(!out.success(), "a blocked address logged on:\n{out}");
    assert_eq!(
        out.nt_status().as_deref(),
        Some("NT_STATUS_ACCOUNT_LOCKED_OUT"),
        "right password from a blocked address:\n{out}"
    );
}

/// Below the limit, a successful logon clears the failures.
#[test]
fn success_resets_the_failure_count() {
    if !peers_available(&["smbclient"]) || std::env::var("HOLDFAST_TEST_EXTERNAL").is_ok() {
        return;
    }
    let srv = Server::start_configured("\tholdfast failed logon limit = 3\n", "");
    let bad = format!("{}-wrong", srv.password);
    for _ in 0..2 {
        let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &bad, &[], "ls");
        assert_eq!(
            out.nt_status().as_deref(),
            Some("NT_STATUS_LOGON_FAILURE"),
            "{out}"
        );
    }
    let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &srv.password, &[], "ls");
    assert!(out.success(), "right password refused:\n{out}");
    for _ in 0..2 {
        let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &bad, &[], "ls");
        assert_eq!(
            out.nt_status().as_deref(),
            Some("NT_STATUS_LOGON_FAILURE"),
            "{out}"
        );
    }
    let out = srv.smbclient_as(&srv.share.clone(), &srv.user, &srv.password, &[], "ls");
    assert!(
        out.success(),
        "the count was not reset by the success:\n{out}"
    );
}

/// A connection that never completes a session setup is dropped after
/// `holdfast unauthenticated timeout` seconds.
#[test]
fn unauthenticated_connection_is_dropped() {
    use std::io::Read;
    if std::env::var("HOLDFAST_TEST_EXTERNAL").is_ok() {
        return;
    }
    let srv = Server::start_configured("\tholdfast unauthenticated timeout = 1\n", "");
    let mut s = std::net::TcpStream::connect((srv.host.as_str(), srv.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sent data instead of closing");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
}
