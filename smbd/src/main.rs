//! holdfast-smbd: the Holdfast SMB2/3 server.

use clap::Parser;
use holdfast_smbd::config::{self, Config};
use holdfast_smbd::server::workers::broker_link::RemoteBroker;
use holdfast_smbd::server::workers::{self, BrokerHandle, Supervisor, WorkerCommand, WorkerLink};
use holdfast_smbd::server::{listen, ServerState};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

const DEFAULT_CONFIG_PATH: &str = "/etc/holdfast/smb.conf";

#[derive(Parser)]
#[command(
    name = "holdfast-smbd",
    version,
    about = "Holdfast SMB2/SMB3 file server"
)]
struct Args {
    /// Configuration file (smb.conf syntax).
    #[arg(long, short = 's')]
    config: Option<PathBuf>,
    /// Validate the configuration, print the effective settings and exit.
    #[arg(long)]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Internal: run as worker N of a supervisor (control link on stdin).
    #[arg(long, hide = true)]
    worker: Option<u32>,
}

/// The configuration and the file it came from (None: the embedded default).
fn load(args: &Args) -> Result<(Config, Option<PathBuf>), String> {
    let path = match &args.config {
        Some(p) => Some(p.clone()),
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Some(PathBuf::from(DEFAULT_CONFIG_PATH))
        }
        None => None,
    };
    let (cfg, warnings) = match &path {
        Some(p) => config::load(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => {
            eprintln!("holdfast-smbd: {DEFAULT_CONFIG_PATH} not found; using the embedded default configuration");
            config::parse(config::DEFAULT_CONFIG).map_err(|e| format!("embedded default: {e}"))?
        }
    };
    // A worker re-reads the file; its supervisor already printed the warnings.
    if args.worker.is_none() {
        for w in warnings {
            eprintln!("holdfast-smbd: warning: {w}");
        }
    }
    Ok((cfg, path))
}

fn main() -> ExitCode {
    // Before any thread exists: this edits the environment.
    let inherited = match kmod_interface::fdpass::take_listen_fds() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("holdfast-smbd: cannot take the sockets systemd passed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    let (cfg, path) = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("holdfast-smbd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        print!("{}", cfg.render_effective());
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.global.tracing_filter());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    if let Some(index) = args.worker {
        return run_worker(cfg, index);
    }
    if cfg.global.workers == 0 {
        return run_single(cfg, inherited);
    }
    run_supervisor(cfg, path, inherited)
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    // Before any thread exists, so that every thread inherits the mask.
    if let Err(e) = holdfast_smbd::server::kernel_oplock::block_break_signals() {
        tracing::error!(%e, "cannot block the kernel lease break signals");
        return None;
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!(%e, "cannot start runtime");
            None
        }
    }
}

fn state(cfg: Config) -> Option<Arc<ServerState>> {
    match ServerState::new(cfg) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::error!(%e, "startup failed");
            None
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<(), ExitCode> {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, "cannot install SIGTERM handler");
            return Err(ExitCode::FAILURE);
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    Ok(())
}

/// The sockets systemd passed, or our own from `interfaces` / `smb ports`.
fn listeners(
    cfg: &Config,
    inherited: Vec<(String, OwnedFd)>,
) -> std::io::Result<Vec<tokio::net::TcpListener>> {
    if inherited.is_empty() {
        return listen::bind_all(cfg);
    }
    let ls = listen::adopt(inherited)?;
    if ls.is_empty() {
        return Err(std::io::Error::other(
            "systemd passed no usable listening socket",
        ));
    }
    Ok(ls)
}

/// `holdfast workers = 0`: listen and serve in this one process.
fn run_single(cfg: Config, inherited: Vec<(String, OwnedFd)>) -> ExitCode {
    let Some(st) = state(cfg) else {
        return ExitCode::FAILURE;
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let listeners = match listeners(&st.config, inherited) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%e, "startup failed");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(guid = %hex(&st.guid), "holdfast-smbd ready (single process)");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tokio::select! {
            _ = listen::serve(st.clone(), listeners) => ExitCode::SUCCESS,
            r = shutdown_signal() => r.err().unwrap_or(ExitCode::SUCCESS),
        }
    })
}

/// The supervisor: listeners, workers, routing; no SMB state of its own.
fn run_supervisor(
    cfg: Config,
    path: Option<PathBuf>,
    inherited: Vec<(String, OwnedFd)>,
) -> ExitCode {
    let workers = cfg.global.workers;
    // Validate shares, users and the state directory once, before any worker.
    let Some(st) = state(cfg.clone()) else {
        return ExitCode::FAILURE;
    };
    let guid = hex(&st.guid);
    drop(st);
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(%e, "cannot find my own executable to start workers");
            return ExitCode::FAILURE;
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let listeners = match listeners(&cfg, inherited) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%e, "startup failed");
                return ExitCode::FAILURE;
            }
        };
        let sup = Supervisor::new(WorkerCommand { exe, config: path }, workers);
        if let Err(e) = sup.start_workers().await {
            tracing::error!(%e, "startup failed");
            return ExitCode::FAILURE;
        }
        tracing::info!(%guid, workers, "holdfast-smbd ready");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let code = tokio::select! {
            _ = sup.accept(listeners) => ExitCode::SUCCESS,
            r = shutdown_signal() => r.err().unwrap_or(ExitCode::SUCCESS),
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        sup.stop_workers(Duration::from_secs(5)).await;
        code
    })
}

/// Worker `index`: serves what the supervisor passes over stdin.
fn run_worker(cfg: Config, index: u32) -> ExitCode {
    let mut st = match ServerState::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, "startup failed");
            return ExitCode::FAILURE;
        }
    };
    st.disconnected_owner = holdfast_smbd::server::durable::disconnected_owner(index);
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let link = match std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| {
                nix::fcntl::fcntl(
                    fd.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )?;
                tokio_seqpacket::UnixSeqpacket::try_from(fd)
            }) {
            Ok(s) => WorkerLink::new(s),
            Err(e) => {
                tracing::error!(%e, "worker: stdin is not the supervisor's control socket");
                return ExitCode::FAILURE;
            }
        };
        // Share modes, oplocks and locks live in the supervisor's broker.
        match link.recv_broker().await.and_then(RemoteBroker::new) {
            Ok(b) => {
                st.broker = BrokerHandle::Remote(b);
                // Session ids name this worker (MS-SMB2 GlobalSessionTable
                // spans the workers: see workers::proto Move).
                st.set_worker(index, link.generation());
            }
            Err(e) => {
                tracing::error!(%e, "worker: no broker link from the supervisor");
                return ExitCode::FAILURE;
            }
        }
        let st = Arc::new(st);
        let span = tracing::info_span!("worker", index);
        tokio::select! {
            () = workers::worker::run(st, link, index).instrument(span) => ExitCode::SUCCESS,
            r = shutdown_signal() => r.err().unwrap_or(ExitCode::SUCCESS),
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
