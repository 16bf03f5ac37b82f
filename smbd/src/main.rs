//! holdfast-smbd: the Holdfast SMB2/3 server.

use clap::Parser;
use holdfast_smbd::config::{self, Config};
use holdfast_smbd::server::{listen, ServerState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
}

fn load(args: &Args) -> Result<Config, String> {
    let (cfg, warnings) = match &args.config {
        Some(p) => config::load(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            config::load(std::path::Path::new(DEFAULT_CONFIG_PATH))
                .map_err(|e| format!("{DEFAULT_CONFIG_PATH}: {e}"))?
        }
        None => {
            eprintln!("holdfast-smbd: {DEFAULT_CONFIG_PATH} not found; using the embedded default configuration");
            config::parse(config::DEFAULT_CONFIG).map_err(|e| format!("embedded default: {e}"))?
        }
    };
    for w in warnings {
        eprintln!("holdfast-smbd: warning: {w}");
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    let cfg = match load(&args) {
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
    let st = match ServerState::new(cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(%e, "startup failed");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(%e, "cannot start runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listeners = match listen::bind_all(&st) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%e, "startup failed");
                return ExitCode::FAILURE;
            }
        };
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%e, "cannot install SIGTERM handler");
                    return ExitCode::FAILURE;
                }
            };
        tracing::info!(guid = %hex(&st.guid), "holdfast-smbd ready");
        tokio::select! {
            _ = listen::serve(st.clone(), listeners) => {}
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        ExitCode::SUCCESS
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
