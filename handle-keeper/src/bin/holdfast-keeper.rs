//! holdfast-keeper: the handle keeper daemon (docs/architecture.md section 9).
//!
//! Start-up order matters: take systemd's fds, open keeper.db, bind and chown
//! the socket, then drop capabilities on the only thread, and only then start
//! the tokio runtime, whose threads inherit the reduced sets.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use holdfast_keeper::keeper::{Keeper, Policy};
use holdfast_keeper::server;
use holdfast_keeper::store::Store;
use holdfast_keeper::sysd::Notifier;
use holdfast_keeper::DEFAULT_SOCKET;
use kmod_interface::caps::Capability;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "holdfast-keeper",
    about = "Keeps durable SMB open file descriptions"
)]
struct Args {
    /// SEQPACKET socket to serve (mode 0600, owned by the smbd user).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory for keeper.db.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/holdfast")]
    state_dir: PathBuf,
    /// User (name or uid) smbd runs as; it may deposit and fetch handles.
    /// Default: root, or the keeper's own uid when it does not run as root.
    #[arg(long, value_name = "USER")]
    smbd_user: Option<String>,
    /// How often the scavenger looks for expired disconnected handles.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    scavenge_interval_ms: u64,
}

/// Capabilities the keeper keeps: leases on files it does not own, and
/// open_by_handle_at for persistent handles.
const KEEP: [Capability; 2] = [Capability::CAP_LEASE, Capability::CAP_DAC_READ_SEARCH];

fn resolve_user(spec: &str) -> Result<(u32, u32), String> {
    if let Ok(uid) = spec.parse::<u32>() {
        let gid = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .unwrap_or(uid);
        return Ok((uid, gid));
    }
    match nix::unistd::User::from_name(spec) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(format!("no such user {spec:?}")),
        Err(e) => Err(format!("looking up user {spec:?}: {e}")),
    }
}

fn main() -> ExitCode {
    // Before anything else opens an fd: systemd's fds sit at 3, 4, ...
    let listen_fds = kmod_interface::fdpass::take_listen_fds();
    let notifier = Notifier::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Plain text for the journal and log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let listen_fds = match listen_fds {
        Ok(f) => f,
        Err(e) => {
            error!(error = %e, "could not take the fds passed by systemd");
            Vec::new()
        }
    };
    match run(args, listen_fds, notifier) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args, listen_fds: Vec<(String, OwnedFd)>, notifier: Notifier) -> Result<(), String> {
    // Kernel lease breaks of kept fds arrive as signals read from a
    // signalfd; blocked before any other thread exists (and before restored
    // fds' leases are taken over), so every thread inherits the mask.
    kmod_interface::lease::block_signals(&[kmod_interface::lease::break_signal(), libc::SIGIO])
        .map_err(|e| format!("blocking lease break signals: {e}"))?;
    let euid = nix::unistd::geteuid().as_raw();
    let (smbd_uid, smbd_gid) = match &args.smbd_user {
        Some(spec) => resolve_user(spec)?,
        None => (euid, nix::unistd::getegid().as_raw()),
    };
    let store = Store::open(&args.state_dir).map_err(|e| e.to_string())?;
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Chown needs CAP_CHOWN, which is dropped below; do it now.
    let owner = (euid == 0 && smbd_uid != 0).then_some((smbd_uid, smbd_gid));
    let listener_fd = kmod_interface::fdpass::seqpacket_listener(&args.socket, 0o600, owner)
        .map_err(|e| format!("socket {}: {e}", args.socket.display()))?;

    if euid == 0 {
        let kept = kmod_interface::caps::restrict_to(&KEEP)
            .map_err(|e| format!("dropping capabilities: {e}"))?;
        let mut names: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
        names.sort();
        info!(capabilities = %names.join(","), "capabilities dropped");
    } else {
        warn!(
            uid = euid,
            "not running as root: test mode (no capabilities to drop; uid {euid} may administer)"
        );
    }

    let mut keeper = Keeper::new(store, notifier.clone());
    keeper
        .restore(listen_fds, holdfast_keeper::keeper::now_ms())
        .map_err(|e| e.to_string())?;
    if !notifier.available() {
        warn!("no NOTIFY_SOCKET: kept handles will not survive a keeper restart (no fd store)");
    }
    let restored = keeper.len();
    let keeper = Arc::new(Mutex::new(keeper));
    let policy = Policy {
        smbd_uid,
        keeper_uid: euid,
    };

    // A current-thread runtime: the keeper's work is tiny and serialised by
    // one lock anyway; any blocking-pool thread inherits the dropped caps.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let socket_path = args.socket.clone();
    let result = rt.block_on(async move {
        let listener = tokio_seqpacket::UnixSeqpacketListener::try_from(listener_fd)
            .map_err(|e| format!("listener: {e}"))?;
        info!(
            socket = %socket_path.display(),
            smbd_uid,
            restored,
            fd_store = notifier.available(),
            "keeper ready"
        );
        if let Err(e) = notifier.ready(&format!("{restored} handles kept")) {
            warn!(error = %e, "READY=1 notification failed");
        }
        let interval = Duration::from_millis(args.scavenge_interval_ms.max(10));
        tokio::spawn(server::scavenger(keeper.clone(), interval));
        server::lease_breaks(keeper.clone());
        tokio::spawn(server::serve(listener, keeper.clone(), policy));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("signal handler: {e}"))?;
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        }
        let _ = notifier.stopping();
        let n = server::lock(&keeper).len();
        if n > 0 && !notifier.available() {
            warn!(
                n,
                "stopping without an fd store: these kept handles are lost"
            );
        }
        Ok::<(), String>(())
    });
    let _ = std::fs::remove_file(&args.socket);
    result
}
