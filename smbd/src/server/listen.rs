//! Listening sockets and the accept loop.

use super::conn::Connection;
use super::state::ServerState;
use crate::config::Config;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

/// Binds one listener. IPv6 sockets are v6-only so that "0.0.0.0" and "::" can coexist.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd: OwnedFd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    socket::listen(
        &fd,
        socket::Backlog::new(256).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// Resolves the configured interfaces and ports to socket addresses.
pub fn listen_addrs(cfg: &Config) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for iface in &cfg.global.interfaces {
        let s = iface.trim_start_matches('[').trim_end_matches(']');
        let s = s.split('/').next().unwrap_or(s);
        match s.parse::<IpAddr>() {
            Ok(ip) => {
                for port in &cfg.global.smb_ports {
                    out.push(SocketAddr::new(ip, *port));
                }
            }
            Err(_) => {
                warn!(interface = %iface, "interfaces: only IP addresses are supported; ignored")
            }
        }
    }
    out
}

/// Binds all listeners (before privileges could be dropped).
pub fn bind_all(cfg: &Config) -> io::Result<Vec<TcpListener>> {
    let mut ls = Vec::new();
    for a in listen_addrs(cfg) {
        match bind(a) {
            Ok(l) => {
                info!(addr = %a, "listening");
                ls.push(l);
            }
            Err(e) => {
                error!(addr = %a, %e, "cannot listen");
                return Err(io::Error::new(e.kind(), format!("listen on {a}: {e}")));
            }
        }
    }
    if ls.is_empty() {
        return Err(io::Error::other("no usable listen address in 'interfaces'"));
    }
    Ok(ls)
}

/// Listeners passed by systemd socket activation (`take_listen_fds`, fd
/// name "smb" or unnamed); must run inside the runtime.
pub fn adopt(fds: Vec<(String, OwnedFd)>) -> io::Result<Vec<TcpListener>> {
    let mut ls = Vec::new();
    for (name, fd) in fds {
        if name != "smb" && name != "unknown" {
            warn!(%name, "ignoring a passed fd that is not named \"smb\"");
            continue;
        }
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        info!(addr = ?l.local_addr().ok(), "listening (socket activation)");
        ls.push(TcpListener::from_std(l)?);
    }
    Ok(ls)
}

/// Accepts connections on every listener until the task is dropped.
pub async fn serve(st: Arc<ServerState>, listeners: Vec<TcpListener>) {
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for l in listeners {
        let st = st.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((sock, peer)) => {
                        let _ = sock.set_nodelay(true);
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        let conn = Connection::new(st.clone(), peer, id);
                        tokio::spawn(conn.run(sock));
                    }
                    Err(e) => {
                        warn!(%e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
