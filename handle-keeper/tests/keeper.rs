//! End-to-end tests of the real holdfast-keeper binary on a private socket,
//! including a restart that gets its fds back through an emulated systemd
//! fd store (NOTIFY_SOCKET + LISTEN_FDS).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_keeper::{Client, DurableKind, ErrorCode, FetchRequest, HandleState, Record};

const KEEPER: &str = env!("CARGO_BIN_EXE_holdfast-keeper");
const CTL: &str = env!("CARGO_BIN_EXE_holdfastctl");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Keeper {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

struct Opts<'a> {
    dir: &'a Path,
    /// Distinguishes log files of successive keepers in one directory.
    tag: &'a str,
    notify: Option<&'a Path>,
    listen_fds: Vec<(String, OwnedFd)>,
    extra: Vec<String>,
}

impl<'a> Opts<'a> {
    fn new(dir: &'a Path) -> Opts<'a> {
        Opts {
            dir,
            tag: "k",
            notify: None,
            listen_fds: Vec::new(),
            extra: Vec::new(),
        }
    }
}

impl Keeper {
    fn start(o: Opts<'_>) -> Keeper {
        let socket = o.dir.join("keeper.sock");
        let log = o.dir.join(format!("{}.log", o.tag));
        // `sh` puts its own pid (which exec keeps) in LISTEN_PID, as systemd does.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
            .arg(KEEPER)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(o.dir.join("state"))
            .arg("--scavenge-interval-ms")
            .arg("50")
            .args(&o.extra)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        if let Some(n) = o.notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        if !o.listen_fds.is_empty() {
            let names: Vec<&str> = o.listen_fds.iter().map(|(n, _)| n.as_str()).collect();
            cmd.env("LISTEN_FDS", o.listen_fds.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
            let fds = o.listen_fds.into_iter().map(|(_, f)| f).collect();
            kmod_interface::fdpass::pass_listen_fds(&mut cmd, fds).unwrap();
        }
        let child = cmd.spawn().expect("spawn holdfast-keeper");
        let mut k = Keeper {
            child: Some(child),
            socket,
            log,
        };
        k.wait_ready();
        k
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("keeper exited early ({st}):\n{}", self.log_text());
            }
            if self.log_text().contains("keeper ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("keeper not ready:\n{}", self.log_text());
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> Client {
        Client::connect(&self.socket, "test")
            .await
            .expect("connect")
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, sig).unwrap();
        self.child.take().unwrap().wait().unwrap()
    }

    /// Polls `f` until it is true (10 s at most).
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log never said {needle:?}:\n{}", self.log_text());
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

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(CTL)
        .arg("handles")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A v2 record for `path` with a lease, owned by uid 1000 "smbtest".
fn v2_record(fid: u64, path: &str, timeout_ms: u32) -> Record {
    let mut r = Record::new(DurableKind::V2, fid);
    r.client_guid = [0x11; 16];
    r.create_guid = [fid as u8; 16];
    r.lease_key = Some([0x33; 16]);
    r.lease_state = 0x7;
    r.desired_access = 0x0012_019f;
    r.share_access = 0x7;
    r.uid = 1000;
    r.user_name = "smbtest".into();
    r.share = "share".into();
    r.path = path.into();
    r.timeout_ms = timeout_ms;
    r.client_addr = "127.0.0.1:51000".into();
    r
}

fn fetch_for(r: &Record) -> FetchRequest {
    FetchRequest {
        kind: r.kind,
        persistent_file_id: r.persistent_file_id,
        client_guid: r.client_guid,
        create_guid: r.create_guid,
        lease_key: r.lease_key,
        uid: r.uid,
        user_name: r.user_name.clone(),
    }
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// Offsets belong to the open file description: moving one moves the other.
fn assert_same_description(a: &mut File, b: &mut File) {
    a.seek(SeekFrom::Start(3)).unwrap();
    assert_eq!(b.stream_position().unwrap(), 3);
    b.seek(SeekFrom::Start(5)).unwrap();
    assert_eq!(a.stream_position().unwrap(), 5);
}

#[tokio::test]
async fn deposit_disconnect_fetch_reconnect_close() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let data = dir.path().join("data.txt");
    std::fs::write(&data, b"0123456789").unwrap();
    let mut orig = rw(&data);
    kmod_interface::ofd::ofd_lock(orig.as_fd(), 2, 3, true, false).unwrap();

    let mut worker = k.client().await;
    assert_eq!(worker.version(), 2);
    assert!(!worker.fd_store());
    let rec = v2_record(0x1001, "data.txt", 60_000);
    let id = worker.deposit(&rec, &orig).await.unwrap();

    let listed = worker.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.id, id);
    assert_eq!(listed[0].record.state, HandleState::Connected);
    assert_eq!(listed[0].time_left_ms, None);
    assert_eq!(listed[0].record.path, "data.txt");

    // A fetch while the owner is connected is refused.
    let e = worker.fetch(&fetch_for(&rec)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Busy));

    worker.disconnect(id, 0).await.unwrap();
    let e = worker.show(id).await.unwrap();
    assert_eq!(e.record.state, HandleState::Disconnected);
    let left = e.time_left_ms.unwrap();
    assert!(left > 50_000 && left <= 60_000, "{left}");

    // holdfastctl shows the OFD lock taken through this very description.
    let o = ctl(&k.socket, &["--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let json = text(&o.stdout);
    assert!(json.contains(&format!("\"id\":{id}")), "{json}");
    assert!(json.contains("\"state\":\"disconnected\""), "{json}");
    assert!(json.contains("\"kind\":\"v2\""), "{json}");
    assert!(
        json.contains("\"client_addr\":\"127.0.0.1:51000\""),
        "{json}"
    );
    assert!(
        json.contains("\"client_guid\":\"11111111-1111-1111-1111-111111111111\""),
        "{json}"
    );
    assert!(json.contains("\"user\":\"smbtest\""), "{json}");
    assert!(json.contains("\"kernel_lease\":\"none\""), "{json}");
    assert!(
        json.contains("OFDLCK ADVISORY WRITE -1 ") && json.contains(" 2 4\",\"own\":true"),
        "{json}"
    );
    let o = ctl(&k.socket, &[]);
    let table = text(&o.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("disconnected") && table.contains("lease:RHW"),
        "{table}"
    );
    assert!(table.contains("(this handle)"), "{table}");
    let o = ctl(&k.socket, &["show", &id.to_string()]);
    assert!(
        text(&o.stdout).contains("create guid"),
        "{}",
        text(&o.stdout)
    );

    // A second worker reclaims it: the very same open file description.
    let mut worker2 = k.client().await;
    let (got, fd) = worker2.fetch(&fetch_for(&rec)).await.unwrap();
    assert_eq!(got.id, id);
    let mut fetched = File::from(fd);
    assert_same_description(&mut orig, &mut fetched);
    orig.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    fetched.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123456789");
    worker2.reconnected(id).await.unwrap();
    assert_eq!(
        worker2.show(id).await.unwrap().record.state,
        HandleState::Connected
    );
    // Someone else cannot claim it now.
    assert_eq!(
        worker.reconnected(id).await.unwrap_err().code(),
        Some(ErrorCode::Busy)
    );

    // The reclaiming worker dies without Disconnect: the keeper disconnects it.
    drop(worker2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if worker.show(id).await.unwrap().record.state == HandleState::Disconnected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not disconnected after peer exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    worker.close(id).await.unwrap();
    assert!(worker.list().await.unwrap().is_empty());
    assert_eq!(
        worker.close(id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    k.wait_log("kept handle closed");
}

#[tokio::test]
async fn mismatched_fetch_is_refused_and_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let f = rw(&dir.path().join("f"));
    let mut c = k.client().await;
    let rec = v2_record(0x2002, "f", 60_000);
    let id = c.deposit(&rec, &f).await.unwrap();
    c.disconnect(id, 0).await.unwrap();
    let before = c.show(id).await.unwrap().record;

    let mut bad = fetch_for(&rec);
    bad.create_guid = [0xee; 16];
    assert_eq!(
        c.fetch(&bad).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    let mut bad = fetch_for(&rec);
    bad.uid = 1001;
    bad.user_name = "smbtest2".into();
    assert_eq!(
        c.fetch(&bad).await.unwrap_err().code(),
        Some(ErrorCode::UserMismatch)
    );
    let mut bad = fetch_for(&rec);
    bad.client_guid = [0x99; 16];
    assert_eq!(
        c.fetch(&bad).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    let mut bad = fetch_for(&rec);
    bad.lease_key = Some([0x44; 16]);
    assert_eq!(
        c.fetch(&bad).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );

    // Untouched: same row, still disconnected, and still fetchable by its owner.
    assert_eq!(c.show(id).await.unwrap().record, before);
    let (got, _fd) = c.fetch(&fetch_for(&rec)).await.unwrap();
    assert_eq!(got, before);
    k.wait_log("fetch refused; record kept");
}

#[tokio::test]
async fn timed_out_handle_is_scavenged_and_its_description_closed() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let p = dir.path().join("locked");
    std::fs::write(&p, b"xxxxxxxx").unwrap();
    let mut c = k.client().await;
    let id = {
        let f = rw(&p);
        kmod_interface::ofd::ofd_lock(f.as_fd(), 0, 4, true, false).unwrap();
        c.deposit(&v2_record(0x3003, "locked", 300), &f)
            .await
            .unwrap()
        // Our copy closes here; only the keeper holds the description (and its lock).
    };
    let other = rw(&p);
    assert!(kmod_interface::ofd::ofd_lock(other.as_fd(), 0, 1, true, false).is_err());
    c.disconnect(id, 0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.list().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "not scavenged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.wait_log("durable handle timed out while disconnected");
    // The description died with the keeper's fd: its lock is gone.
    kmod_interface::ofd::ofd_lock(other.as_fd(), 0, 1, true, false).unwrap();
    // A connected handle never times out.
    let f = rw(&p);
    let id2 = c
        .deposit(&v2_record(0x3004, "locked", 1), &f)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.show(id2).await.unwrap().record.id, id2);
}

#[tokio::test]
async fn evict_via_holdfastctl_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let f = rw(&dir.path().join("e"));
    let mut c = k.client().await;
    let id = c
        .deposit(&v2_record(0x4004, "e", 60_000), &f)
        .await
        .unwrap();
    let o = ctl(&k.socket, &["evict", &id.to_string()]);
    assert_eq!(o.status.code(), Some(2), "--reason is required");
    let o = ctl(
        &k.socket,
        &["evict", &id.to_string(), "--reason", "client gone for good"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(c.list().await.unwrap().is_empty());
    k.wait_log("evicted by an administrator");
    let log = k.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("evicted by an administrator"))
        .unwrap();
    assert!(line.contains("client gone for good"), "{line}");
    assert!(
        line.contains(&format!("by_uid={}", nix::unistd::geteuid())),
        "{line}"
    );
    let o = ctl(&k.socket, &["evict", "999", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("NotFound"), "{}", text(&o.stderr));
    let o = ctl(&dir.path().join("nope.sock"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot reach the keeper"));
}

#[tokio::test]
async fn protocol_errors_need_hello_and_fds() {
    use holdfast_keeper::proto::{Request, Response};
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let sock = tokio_seqpacket::UnixSeqpacket::connect(&k.socket)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    sock.send(&Request::List.encode(5)).await.unwrap();
    let n = sock.recv(&mut buf).await.unwrap().bytes_read();
    let (resp, rid) = Response::decode(&buf[..n]).unwrap();
    assert_eq!(rid, 5);
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::NeedHello,
                ..
            }
        ),
        "{resp:?}"
    );
    sock.send(b"garbage").await.unwrap();
    let n = sock.recv(&mut buf).await.unwrap().bytes_read();
    assert!(matches!(
        Response::decode(&buf[..n]).unwrap().0,
        Response::Error {
            code: ErrorCode::BadMessage,
            ..
        }
    ));
    let hello = Request::Hello {
        min_version: 7,
        max_version: 9,
        client: "future".into(),
    };
    sock.send(&hello.encode(6)).await.unwrap();
    let n = sock.recv(&mut buf).await.unwrap().bytes_read();
    assert!(matches!(
        Response::decode(&buf[..n]).unwrap().0,
        Response::Error {
            code: ErrorCode::UnsupportedVersion,
            ..
        }
    ));
    // Deposit without an fd.
    let mut c = k.client().await;
    drop(sock);
    let e = {
        let sock = tokio_seqpacket::UnixSeqpacket::connect(&k.socket)
            .await
            .unwrap();
        let hello = Request::Hello {
            min_version: 1,
            max_version: 1,
            client: "raw".into(),
        };
        sock.send(&hello.encode(1)).await.unwrap();
        sock.recv(&mut buf).await.unwrap();
        sock.send(&Request::Deposit(v2_record(1, "x", 1)).encode(2))
            .await
            .unwrap();
        let n = sock.recv(&mut buf).await.unwrap().bytes_read();
        Response::decode(&buf[..n]).unwrap().0
    };
    assert!(
        matches!(
            e,
            Response::Error {
                code: ErrorCode::MissingFd,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(c.list().await.unwrap().is_empty());
}

/// Capabilities and the SO_PEERCRED policy need root to observe.
#[tokio::test]
async fn root_keeper_drops_caps_and_checks_peers() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = Opts::new(dir.path());
    o.extra = vec!["--smbd-user".into(), "65534".into()];
    let mut k = Keeper::start(o);

    // Every thread keeps exactly CAP_DAC_READ_SEARCH (2) and CAP_LEASE (28).
    let want = format!("{:016x}", (1u64 << 2) | (1u64 << 28));
    for task in std::fs::read_dir(format!("/proc/{}/task", k.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .trim();
            assert_eq!(v, want, "{key}");
        }
    }
    // The socket is 0600 and belongs to the smbd user.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&k.socket).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid()), (0o600, 65534));

    let as_uid = |uid: &str, args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid",
                uid,
                "--regid",
                uid,
                "--clear-groups",
                CTL,
                "handles",
            ])
            .args(args)
            .arg("--socket")
            .arg(&k.socket)
            .output()
            .unwrap()
    };
    let f = rw(&dir.path().join("x"));
    let mut c = k.client().await;
    let id = c
        .deposit(&v2_record(0x5005, "x", 60_000), &f)
        .await
        .unwrap();
    // The smbd user may list, but evicting is root's.
    let o = as_uid("65534", &["--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&format!("\"id\":{id}")));
    let o = as_uid("65534", &["evict", &id.to_string(), "--reason", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("NotAllowed"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(c.list().await.unwrap().len(), 1);
    // Anyone else cannot even connect (socket mode 0600).
    let o = as_uid("65533", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot reach the keeper"));

    // SIGTERM: clean exit, socket removed.
    let st = k.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{st}");
    assert!(!k.socket.exists());
}

/// A stand-in for systemd's notify socket and fd store.
struct FakeSystemd {
    messages: Arc<Mutex<Vec<String>>>,
    store: Arc<Mutex<Vec<(String, OwnedFd)>>>,
    path: PathBuf,
}

impl FakeSystemd {
    fn new(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store: Arc<Mutex<Vec<(String, OwnedFd)>>> = Arc::new(Mutex::new(Vec::new()));
        let (m, s) = (messages.clone(), store.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends when the test process exits; recv blocks otherwise.
            while let Ok((n, fds)) = kmod_interface::fdpass::recv_with_fds(sock.as_fd(), &mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let kv: HashMap<&str, &str> =
                    msg.lines().filter_map(|l| l.split_once('=')).collect();
                let name = kv.get("FDNAME").copied().unwrap_or("stored").to_string();
                let mut store = s.lock().unwrap();
                if kv.get("FDSTORE") == Some(&"1") {
                    for fd in fds {
                        store.push((name.clone(), fd));
                    }
                } else if kv.get("FDSTOREREMOVE") == Some(&"1") {
                    store.retain(|(n, _)| *n != name);
                }
                drop(store);
                m.lock().unwrap().push(msg);
            }
        });
        FakeSystemd {
            messages,
            store,
            path,
        }
    }

    fn wait_for(&self, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if pred(&self.messages.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("notify messages: {:?}", self.messages.lock().unwrap());
    }

    fn stored_names(&self) -> Vec<String> {
        self.store
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// What systemd passes a restarted service: a dup of every stored fd.
    fn listen_fds(&self) -> Vec<(String, OwnedFd)> {
        self.store
            .lock()
            .unwrap()
            .iter()
            .map(|(n, f)| (n.clone(), f.try_clone().unwrap()))
            .collect()
    }
}

#[tokio::test]
async fn restart_takes_fds_back_from_the_fd_store() {
    let dir = tempfile::tempdir().unwrap();
    let sd = FakeSystemd::new(dir.path());
    let mut o = Opts::new(dir.path());
    o.notify = Some(&sd.path);
    let mut k = Keeper::start(o);
    sd.wait_for(|m| m.iter().any(|s| s.starts_with("READY=1")));

    let p = dir.path().join("kept.txt");
    std::fs::write(&p, b"abcdefghij").unwrap();
    let mut orig = rw(&p);
    let mut c = k.client().await;
    assert!(c.fd_store());
    let rec = v2_record(0x6006, "kept.txt", 60_000);
    let id = c.deposit(&rec, &orig).await.unwrap();
    let f2 = rw(&dir.path().join("closed.txt"));
    let closed = c
        .deposit(&v2_record(0x6007, "closed.txt", 60_000), &f2)
        .await
        .unwrap();
    let f3 = rw(&dir.path().join("lost.txt"));
    let lost = c
        .deposit(&v2_record(0x6008, "lost.txt", 60_000), &f3)
        .await
        .unwrap();
    c.close(closed).await.unwrap();
    sd.wait_for(|m| m.iter().any(|s| s.starts_with("FDSTOREREMOVE=1")));
    let mut names = sd.stored_names();
    names.sort();
    let mut want = vec![id.to_string(), lost.to_string()];
    want.sort();
    assert_eq!(names, want);
    assert!(sd
        .messages
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains(&format!("FDNAME={id}")) && m.contains("FDSTORE=1")));

    // The keeper crashes. The worker's connection goes with it.
    drop(c);
    let st = k.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(!st.success());

    // Restart with the stored fds, minus one (as if it had not been stored).
    let fds: Vec<(String, OwnedFd)> = sd
        .listen_fds()
        .into_iter()
        .filter(|(n, _)| *n != lost.to_string())
        .collect();
    assert_eq!(fds.len(), 1);
    let mut o = Opts::new(dir.path());
    o.tag = "k2";
    o.notify = Some(&sd.path);
    o.listen_fds = fds;
    let k2 = Keeper::start(o);
    k2.wait_log("kept handles were lost: systemd's fd store did not hand their fds back");
    k2.wait_log("kept handle restored from the fd store");

    let mut c = k2.client().await;
    let all = c.list().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let e = &all[0];
    assert_eq!(e.record.id, id);
    // Nobody owns it after a restart: disconnected, timeout running.
    assert_eq!(e.record.state, HandleState::Disconnected);
    assert!(e.time_left_ms.is_some());
    let (got, fd) = c.fetch(&fetch_for(&rec)).await.unwrap();
    assert_eq!(got.path, "kept.txt");
    let mut fetched = File::from(fd);
    assert_same_description(&mut orig, &mut fetched);
    fetched.write_all(b"XY").unwrap();
    assert_eq!(orig.stream_position().unwrap(), 7);
    assert_eq!(std::fs::read(&p).unwrap(), b"abcdeXYhij");
}

/// A disconnected handle's kernel lease is taken over by the keeper process:
/// a local open breaks it, the keeper purges the handle at once (the open
/// does not wait out lease-break-time) and a watch connection hears of it.
#[tokio::test]
async fn local_open_breaks_a_kept_lease_and_the_keeper_purges() {
    use holdfast_keeper::{BreakAction, Notice};
    use kmod_interface::lease::{set_lease, LeaseKind};
    let dir = tempfile::tempdir().unwrap();
    let k = Keeper::start(Opts::new(dir.path()));
    let data = dir.path().join("leased.txt");
    std::fs::write(&data, b"leased").unwrap();
    let orig = rw(&data);
    // No F_SETSIG/F_SETOWN here: nobody would be signalled before the
    // keeper takes the lease over.
    if set_lease(orig.as_fd(), LeaseKind::Write).is_err() {
        return;
    }
    let mut watcher = k.client().await.watch().await.unwrap();
    let mut worker = k.client().await;
    let id = worker
        .deposit(&v2_record(0x2001, "leased.txt", 60_000), &orig)
        .await
        .unwrap();
    drop(orig);
    worker.disconnect(id, 0).await.unwrap();
    assert_eq!(worker.show(id).await.unwrap().kernel_lease, "write");
    k.wait_log("kept handle's kernel lease taken over");

    let p = data.clone();
    let (elapsed, read) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let got = std::fs::read(&p).unwrap();
        (t0.elapsed(), got)
    })
    .await
    .unwrap();
    assert_eq!(read, b"leased");
    assert!(
        elapsed < Duration::from_secs(5),
        "local open waited {elapsed:?}"
    );
    let n = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("a notice")
        .unwrap();
    assert_eq!(
        n,
        Notice {
            id,
            persistent_file_id: 0x2001,
            action: BreakAction::Purged
        }
    );
    assert!(worker.list().await.unwrap().is_empty());
    assert!(k.log_text().contains("a local open broke its kernel lease"));
}
