//! Helpers for Holdfast's integration tests: a private server per test, and the real
//! clients (Samba's smbclient, Python smbprotocol) run against it.
//!
//! Environment:
//! * `HOLDFAST_BIN_DIR` — where `holdfast-smbd` and `holdfastctl` are (scripts/test.sh sets
//!   it to target/release; default: target/release, else target/debug of this workspace).
//! * `HOLDFAST_TEST_EXTERNAL=port:share:user:pass:localdir` — do not start Holdfast, use an
//!   already running server instead (e.g. the anchor's reference Samba:
//!   `4455:share:smbtest:Test123!:/tmp/anchor-samba/share`). Proves the tests themselves.
//! * `HOLDFAST_SKIP_PEERS=1` — a missing client tool skips the test instead of failing it.
//! * `HOLDFAST_PYTHON` — python with smbprotocol (default `python3`).

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Unix user that owns the test share; the SMB test user maps to it.
pub const UNIX_USER: &str = "holdfasttest";
/// SMB user created with holdfastctl for each private server.
pub const SMB_USER: &str = "holdfasttest";
/// Default timeout for one client command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static USERADD: Mutex<()> = Mutex::new(());

/// Output of a finished (or killed) command.
#[derive(Debug)]
pub struct Output {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.map(|s| s.success()).unwrap_or(false)
    }
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// The first NT_STATUS_* code in the output, if any.
    pub fn nt_status(&self) -> Option<String> {
        let all = self.all();
        let i = all.find("NT_STATUS_")?;
        Some(
            all[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        )
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status={:?} timed_out={} elapsed={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.timed_out, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` with stdin from `input` (or /dev/null), killing it (and its process group)
/// after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let t0 = Instant::now();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        // A child that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(data);
    }
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let ho = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let he = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if t0.elapsed() > timeout => {
                timed_out = true;
                kill_group(child.id(), libc::SIGKILL);
                break child.wait().ok();
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = String::from_utf8_lossy(&ho.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&he.join().unwrap_or_default()).into_owned();
    Output {
        status,
        stdout,
        stderr,
        timed_out,
        elapsed: t0.elapsed(),
    }
}

fn kill_group(pid: u32, sig: libc::c_int) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let Ok(sig) = Signal::try_from(sig) else {
        return;
    };
    let pid = Pid::from_raw(pid as libc::pid_t);
    if killpg(pid, sig).is_err() {
        let _ = kill(pid, sig);
    }
}

/// True if `tool` can be run (found on PATH).
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Check that the client tools a test needs are there. Missing tools fail the test, unless
/// `HOLDFAST_SKIP_PEERS=1`: then this prints why and returns false (the test should return).
pub fn peers_available(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("HOLDFAST_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("SKIPPED (HOLDFAST_SKIP_PEERS=1): missing {missing:?}");
        return false;
    }
    panic!(
        "missing test peers {missing:?}: run scripts/setup.sh --no-run \
         (or set HOLDFAST_SKIP_PEERS=1 to skip these tests explicitly)"
    );
}

/// Python interpreter for the smbprotocol tests.
pub fn python() -> String {
    std::env::var("HOLDFAST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Like [`peers_available`] for python3 with the smbprotocol module.
pub fn python_smbprotocol_available() -> bool {
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", "import smbprotocol"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("HOLDFAST_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("SKIPPED (HOLDFAST_SKIP_PEERS=1): {py} cannot import smbprotocol");
        return false;
    }
    panic!(
        "{py} cannot import smbprotocol: run scripts/setup.sh --no-run (or HOLDFAST_SKIP_PEERS=1)"
    );
}

/// A random alphanumeric string.
pub fn random_name(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill(&mut v[..]);
    v
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(&data))
}

/// Directory holding holdfast-smbd and holdfastctl.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOLDFAST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for prof in ["release", "debug"] {
        let d = ws.join("target").join(prof);
        if d.join("holdfast-smbd").is_file() {
            return d;
        }
    }
    ws.join("target/release")
}

/// A loopback port nobody listens on (and not handed out before in this process).
pub fn free_port() -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local_addr").port();
        if used.insert(p) {
            return p;
        }
    }
    panic!("no free port");
}

fn ensure_unix_user(name: &str) -> (u32, u32) {
    let _g = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        if !o.status.success() {
            return None;
        }
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", name])
            .status()
            .expect("run useradd (the integration tests run as root)");
        assert!(st.success() || id("-u").is_some(), "useradd {name} failed");
    }
    (
        id("-u").expect("uid of test user"),
        id("-g").expect("gid of test user"),
    )
}

/// A running SMB server for one test: a private holdfast-smbd (killed on drop), or the
/// external server named by `HOLDFAST_TEST_EXTERNAL`.
pub struct Server {
    pub host: String,
    pub port: u16,
    pub share: String,
    pub user: String,
    pub password: String,
    /// Server-side path of `share`, to check what the clients did.
    pub localdir: PathBuf,
    /// True for a HOLDFAST_TEST_EXTERNAL server.
    pub external: bool,
    child: Option<Child>,
    log: Option<PathBuf>,
    conf: Option<PathBuf>,
    _base: Option<tempfile::TempDir>,
}

impl Server {
    /// Start a private Holdfast (or attach to HOLDFAST_TEST_EXTERNAL).
    pub fn start() -> Server {
        Self::start_with("")
    }

    /// Like `start`, with extra smb.conf lines for the test share (e.g. "smb encrypt = required").
    pub fn start_with(share_options: &str) -> Server {
        Self::start_config("", share_options)
    }

    /// Same as `start_config`.
    pub fn start_configured(global_options: &str, share_options: &str) -> Server {
        Self::start_config(global_options, share_options)
    }

    /// Like `start_with`, with extra [global] lines too (e.g. "holdfast workers = 2").
    pub fn start_config(global_options: &str, share_options: &str) -> Server {
        if let Ok(spec) = std::env::var("HOLDFAST_TEST_EXTERNAL") {
            return Self::external(&spec);
        }
        let bin = bin_dir();
        let smbd = bin.join("holdfast-smbd");
        let ctl = bin.join("holdfastctl");
        assert!(
            smbd.is_file() && ctl.is_file(),
            "holdfast-smbd/holdfastctl not found in {} (cargo build --release, or set HOLDFAST_BIN_DIR)",
            bin.display()
        );
        let (uid, gid) = ensure_unix_user(UNIX_USER);
        let base = tempfile::Builder::new()
            .prefix("holdfast-it.")
            .tempdir()
            .expect("tempdir");
        let b = base.path();
        fs::set_permissions(b, fs::Permissions::from_mode(0o755)).expect("chmod base");
        let share = b.join("share");
        let state = b.join("state");
        fs::create_dir(&share).expect("mkdir share");
        fs::create_dir(&state).expect("mkdir state");
        std::os::unix::fs::chown(&share, Some(uid), Some(gid)).expect("chown share");
        fs::set_permissions(&share, fs::Permissions::from_mode(0o755)).expect("chmod share");
        let port = free_port();
        let conf = b.join("smb.conf");
        fs::write(
            &conf,
            format!(
                "[global]\n\tinterfaces = 127.0.0.1\n\tsmb ports = {port}\n\
                 \tstate directory = {state}\n\tserver min protocol = SMB2_02\n\
                 \tserver max protocol = SMB3_11\n\tserver signing = auto\n\tlog level = 2\n\
                 \t{global_options}\n\n\
                 [share]\n\tpath = {share}\n\tcomment = integration test share\n\
                 \tread only = no\n\tguest ok = no\n\t{share_options}\n",
                state = state.display(),
                share = share.display()
            ),
        )
        .expect("write smb.conf");

        let check = run_with_timeout(
            Command::new(&smbd)
                .arg("--config")
                .arg(&conf)
                .arg("--check"),
            None,
            Duration::from_secs(30),
        );
        assert!(check.success(), "holdfast-smbd --check failed:\n{check}");

        let password = random_name(20);
        let add = run_with_timeout(
            Command::new(&ctl).arg("--config").arg(&conf).args([
                "user",
                "add",
                SMB_USER,
                "--unix-user",
                UNIX_USER,
                "--password-stdin",
            ]),
            Some(format!("{password}\n").as_bytes()),
            Duration::from_secs(30),
        );
        assert!(add.success(), "holdfastctl user add failed:\n{add}");

        let log = b.join("holdfast.log");
        let logf = fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(&smbd);
        cmd.arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .process_group(0);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", smbd.display()));
        let mut srv = Server {
            host: "127.0.0.1".into(),
            port,
            share: "share".into(),
            user: SMB_USER.into(),
            password,
            localdir: share,
            external: false,
            child: Some(child),
            log: Some(log),
            conf: Some(conf),
            _base: Some(base),
        };
        srv.wait_ready(Duration::from_secs(20));
        srv
    }

    fn external(spec: &str) -> Server {
        // port:share:user:pass:localdir (the password may contain ':', the path may not)
        let (rest, localdir) = spec
            .rsplit_once(':')
            .expect("HOLDFAST_TEST_EXTERNAL=port:share:user:pass:localdir");
        let mut it = rest.splitn(4, ':');
        let port = it.next().and_then(|p| p.parse().ok()).expect("port");
        let share = it.next().expect("share").to_string();
        let user = it.next().expect("user").to_string();
        let password = it.next().expect("password").to_string();
        let srv = Server {
            host: "127.0.0.1".into(),
            port,
            share,
            user,
            password,
            localdir: PathBuf::from(localdir),
            external: true,
            child: None,
            log: None,
            conf: None,
            _base: None,
        };
        assert!(
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(2)
            )
            .is_ok(),
            "external server 127.0.0.1:{port} not reachable"
        );
        srv
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    self.dump_log();
                    panic!("holdfast-smbd exited before listening on {addr}: {st}");
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if t0.elapsed() > timeout {
                self.dump_log();
                panic!("holdfast-smbd not listening on {addr} after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Adds another SMB user mapped to a Unix user (created if missing);
    /// returns its password. None for an external server.
    pub fn add_user(&self, smb_user: &str, unix_user: &str) -> Option<String> {
        let conf = self.conf.as_ref()?;
        ensure_unix_user(unix_user);
        let password = random_name(20);
        let add = run_with_timeout(
            Command::new(bin_dir().join("holdfastctl"))
                .arg("--config")
                .arg(conf)
                .args([
                    "user",
                    "add",
                    smb_user,
                    "--unix-user",
                    unix_user,
                    "--password-stdin",
                ]),
            Some(format!("{password}\n").as_bytes()),
            Duration::from_secs(30),
        );
        assert!(
            add.success(),
            "holdfastctl user add {smb_user} failed:\n{add}"
        );
        Some(password)
    }

    /// Runs tests/python/`script` against this server with the usual
    /// `--host --port --share --user --password` arguments and then `extra`.
    pub fn python_script(&self, script: &str, extra: &[&str], timeout: Duration) -> Output {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join(script);
        let mut c = Command::new(python());
        c.arg(&path)
            .args(["--host", &self.host, "--port", &self.port.to_string()])
            .args(["--share", &self.share, "--user", &self.user])
            .args(["--password", &self.password])
            .args(extra);
        run_with_timeout(&mut c, None, timeout)
    }

    /// Pid of the private server (the supervisor when it runs workers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The whole server log so far ("" for an external server).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// Print the server log (last 300 lines) to stderr.
    pub fn dump_log(&self) {
        let Some(log) = &self.log else { return };
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(300);
        eprintln!(
            "---- holdfast-smbd log {} (last {} lines) ----",
            log.display(),
            lines.len() - from
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
        eprintln!("---- end of log ----");
    }

    /// `//127.0.0.1/<share>`
    pub fn unc(&self, share: &str) -> String {
        format!("//{}/{}", self.host, share)
    }

    /// smbclient against `share` with the given credentials; `extra` goes before `-c CMDS`.
    pub fn smbclient_as(
        &self,
        share: &str,
        user: &str,
        password: &str,
        extra: &[&str],
        cmds: &str,
    ) -> Output {
        let mut c = Command::new("smbclient");
        c.arg(self.unc(share))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(format!("{user}%{password}"))
            .args(extra)
            .arg("-c")
            .arg(cmds);
        run_with_timeout(&mut c, None, CMD_TIMEOUT)
    }

    /// smbclient as the test user on the test share.
    pub fn smbclient(&self, extra: &[&str], cmds: &str) -> Output {
        self.smbclient_as(&self.share, &self.user, &self.password, extra, cmds)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(Some(st)) = c.try_wait() {
                eprintln!("holdfast-smbd had exited during the test: {st}");
                self.dump_log();
            } else {
                kill_group(c.id(), libc::SIGTERM);
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                if let Ok(None) = c.try_wait() {
                    kill_group(c.id(), libc::SIGKILL);
                    let _ = c.wait();
                }
                if thread::panicking() {
                    self.dump_log();
                }
            }
        }
    }
}

/// Assert that an smbclient run succeeded: exit 0, no timeout, no NT_STATUS_ error.
#[track_caller]
pub fn assert_smb_ok(what: &str, out: &Output) {
    assert!(
        out.success() && out.nt_status().is_none(),
        "{what} failed ({:?}):\n{out}",
        out.nt_status()
    );
}
