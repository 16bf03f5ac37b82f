//! End-to-end tests of `holdfastctl user` against a throwaway state directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ctl(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfastctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holdfastctl");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        // The child may exit (e.g. on an error) without reading stdin.
        let _ = input.write_all(s.as_bytes());
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn user_add_list_del() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let conf = dir.path().join("smb.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nstate directory = {}\n[share]\npath = /srv/x\n",
            state.display()
        ),
    )
    .unwrap();

    let o = ctl(
        &conf,
        &[
            "user",
            "add",
            "alice",
            "--unix-user",
            "root",
            "--password-stdin",
        ],
        Some("secret\r\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = ctl(&conf, &["user", "list"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains("root")),
        "{}",
        stdout(&o)
    );

    let o = ctl(&conf, &["user", "list", "--json"], None);
    assert!(
        stdout(&o).starts_with("[{\"name\":\"alice\",\"unix_user\":\"root\","),
        "{}",
        stdout(&o)
    );

    let o = ctl(
        &conf,
        &[
            "user",
            "add",
            "ALICE",
            "--unix-user",
            "root",
            "--password-stdin",
        ],
        Some("other\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    let db = state.join("users.db");
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let o = ctl(&conf, &["user", "del", "alice"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ctl(&conf, &["user", "del", "alice"], None);
    assert_eq!(o.status.code(), Some(1));

    let o = ctl(&conf, &["user", "list", "--json"], None);
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn add_errors_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("smb.conf");
    std::fs::write(
        &conf,
        format!("[global]\nstate directory = {}\n", dir.path().display()),
    )
    .unwrap();

    let o = ctl(
        &conf,
        &[
            "user",
            "add",
            "bob",
            "--unix-user",
            "no-such-unix-user-hf",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no-such-unix-user-hf"),
        "{}",
        stderr(&o)
    );

    let o = ctl(
        &conf,
        &[
            "user",
            "add",
            "bob",
            "--unix-user",
            "root",
            "--password-stdin",
        ],
        Some("\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("empty password"), "{}", stderr(&o));

    let o = ctl(
        &conf,
        &["user", "add", "bob", "--unix-user", "root"],
        Some("pw\n"),
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing --password-stdin is a usage error"
    );
    let o = ctl(&conf, &["user", "frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn missing_config_falls_back_to_default() {
    let dir = tempfile::tempdir().unwrap();
    // The built-in default uses /var/lib/holdfast, so pick a command that
    // fails (unknown Unix user) before the database is opened.
    let o = ctl(
        &dir.path().join("absent.conf"),
        &[
            "user",
            "add",
            "x",
            "--unix-user",
            "no-such-unix-user-hf",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("built-in default"), "{}", stderr(&o));
}

/// `kernel probe` tries each feature on every share's file system; this
/// machine's kernel (5.x+, tmp on a local fs) has leases and OFD locks.
#[test]
fn kernel_probe_reports_each_share() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let conf = dir.path().join("smb.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\n\tstate directory = {}\n\n[data]\n\tpath = {}\n",
            dir.path().join("state").display(),
            share.display()
        ),
    )
    .unwrap();
    let o = ctl(&conf, &["kernel", "probe", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("\"share\":\"data\""), "{out}");
    assert!(out.contains("\"leases\":true"), "{out}");
    assert!(out.contains("\"ofd_locks\":true"), "{out}");
    assert!(out.contains("\"lease_break_time_s\":"), "{out}");
    // the scratch file is gone
    assert_eq!(std::fs::read_dir(&share).unwrap().count(), 0);
    let o = ctl(&conf, &["kernel", "probe"], None);
    assert!(o.status.success());
    assert!(stdout(&o).contains("lease-break-time"), "{}", stdout(&o));
}
