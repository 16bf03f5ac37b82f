//! The keeper's socket side: accept, check SO_PEERCRED, exchange Hello, then
//! feed requests to the `Keeper` and send its replies (with fds) back.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_seqpacket::ancillary::AncillaryMessageWriter;
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};
use tracing::{debug, info, warn};

use crate::keeper::{now_ms, Keeper, Peer, Policy, Reply};
use crate::proto::{self, ErrorCode, Request, Response, MAX_MESSAGE};
pub use holdfast_keeper_proto::recv_message;

pub type Shared = Arc<Mutex<Keeper>>;

/// Locks the keeper; a poisoned lock (a panic elsewhere) is taken over, since
/// every Keeper method leaves its maps and keeper.db consistent step by step.
pub fn lock(keeper: &Shared) -> std::sync::MutexGuard<'_, Keeper> {
    keeper.lock().unwrap_or_else(|p| p.into_inner())
}

async fn send(sock: &UnixSeqpacket, request_id: u32, (resp, fd): &Reply) -> std::io::Result<()> {
    let buf = resp.encode(request_id);
    match fd {
        Some(fd) => {
            let mut anc = [0u8; 64];
            let mut w = AncillaryMessageWriter::new(&mut anc);
            w.add_fds([fd.as_fd()])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            sock.send_with_ancillary(&buf, &mut w).await?;
        }
        None => {
            sock.send(&buf).await?;
        }
    }
    Ok(())
}

async fn serve_conn(keeper: Shared, policy: Arc<Policy>, sock: UnixSeqpacket, conn: u64) {
    let cred = match sock.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(conn, error = %e, "SO_PEERCRED failed; dropping connection");
            return;
        }
    };
    let peer = Peer {
        conn,
        uid: cred.uid(),
        pid: cred.pid().unwrap_or(-1),
    };
    let Some(role) = policy.role(peer.uid) else {
        warn!(
            conn,
            uid = peer.uid,
            pid = peer.pid,
            "peer uid not allowed; refused"
        );
        let _ = send(
            &sock,
            0,
            &(
                Response::error(
                    ErrorCode::NotAllowed,
                    format!("uid {} may not use the keeper", peer.uid),
                ),
                None,
            ),
        )
        .await;
        return;
    };
    debug!(conn, uid = peer.uid, pid = peer.pid, "peer connected");
    let mut version: Option<u16> = None;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, fds, problem) = match recv_message(&sock, &mut buf).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                warn!(conn, error = %e, "receive failed; dropping connection");
                break;
            }
        };
        let msg = &buf[..n];
        let rid = proto::peek_request_id(msg).unwrap_or(0);
        if let Some(p) = problem {
            warn!(conn, pid = peer.pid, problem = p, "bad message");
            let _ = send(
                &sock,
                rid,
                &(Response::error(ErrorCode::BadMessage, p), None),
            )
            .await;
            continue;
        }
        let req = match Request::decode(msg) {
            Ok((req, _)) => req,
            Err(e) => {
                warn!(conn, pid = peer.pid, error = %e, "undecodable request");
                let _ = send(
                    &sock,
                    rid,
                    &(Response::error(ErrorCode::BadMessage, e.to_string()), None),
                )
                .await;
                continue;
            }
        };
        let replies: Vec<Reply> = match (&req, version) {
            (
                Request::Hello {
                    min_version,
                    max_version,
                    client,
                },
                None,
            ) => {
                let v = (*max_version).min(proto::MAX_VERSION);
                if !fds.is_empty() {
                    vec![(
                        Response::error(ErrorCode::BadMessage, "Hello carries no fds"),
                        None,
                    )]
                } else if v < *min_version || v < proto::MIN_VERSION {
                    vec![(
                        Response::error(
                            ErrorCode::UnsupportedVersion,
                            format!(
                                "keeper speaks versions {}..={}",
                                proto::MIN_VERSION,
                                proto::MAX_VERSION
                            ),
                        ),
                        None,
                    )]
                } else {
                    version = Some(v);
                    info!(conn, uid = peer.uid, pid = peer.pid, %client, version = v, "hello");
                    let fd_store = lock(&keeper).fd_store_available();
                    vec![(
                        Response::HelloOk {
                            version: v,
                            keeper_pid: std::process::id(),
                            fd_store,
                        },
                        None,
                    )]
                }
            }
            (_, None) => vec![(
                Response::error(ErrorCode::NeedHello, "send Hello first"),
                None,
            )],
            (req, Some(_)) if !Policy::allows(role, req) => {
                warn!(
                    conn,
                    uid = peer.uid,
                    pid = peer.pid,
                    request = req.name(),
                    "request not allowed for this peer"
                );
                vec![(
                    Response::error(
                        ErrorCode::NotAllowed,
                        format!("uid {} may not send {}", peer.uid, req.name()),
                    ),
                    None,
                )]
            }
            (Request::Watch, Some(v)) if v >= 2 && fds.is_empty() => {
                let rx = lock(&keeper).add_watcher();
                if send(&sock, rid, &(Response::Done, None)).await.is_ok() {
                    info!(conn, pid = peer.pid, "watching lease breaks");
                    watch(&sock, rx, &mut buf).await;
                }
                break;
            }
            (_, Some(_)) => lock(&keeper).handle(peer, req, fds),
        };
        for r in &replies {
            if let Err(e) = send(&sock, rid, r).await {
                warn!(conn, error = %e, "send failed");
                break;
            }
        }
    }
    debug!(conn, "peer gone");
    lock(&keeper).conn_closed(conn, now_ms());
}

/// A Watch connection: sends lease-break notices (request id 0) until the
/// peer goes away. The peer sends nothing more; anything it does send is
/// ignored.
async fn watch(
    sock: &UnixSeqpacket,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Response>,
    buf: &mut [u8],
) {
    loop {
        tokio::select! {
            n = rx.recv() => {
                let Some(n) = n else { return };
                if send(sock, 0, &(n, None)).await.is_err() {
                    return;
                }
            }
            m = recv_message(sock, buf) => {
                if !matches!(m, Ok(Some(_))) {
                    return;
                }
            }
        }
    }
}

/// Reads kernel lease-break signals (blocked in every thread by main) and
/// hands them to the keeper, which purges the disconnected handle whose
/// lease it is.
pub fn lease_breaks(keeper: Shared) {
    use kmod_interface::lease::{break_signal, SignalFd};
    let sfd = match SignalFd::new(&[break_signal(), libc::SIGIO]) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read kernel lease breaks; local opens will wait out lease-break-time");
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("lease-breaks".into())
        .spawn(move || loop {
            match sfd.read() {
                Ok(ev) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reading lease break signals");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the lease break reader");
        return;
    }
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let mut k = lock(&keeper);
            if ev.signo == libc::SIGIO {
                warn!("lease break signal queue overflowed; checking every kept lease");
                k.check_leases();
            } else {
                k.on_lease_break(ev.fd);
            }
        }
    });
}

/// Accepts peers forever.
pub async fn serve(mut listener: UnixSeqpacketListener, keeper: Shared, policy: Policy) {
    let policy = Arc::new(policy);
    let mut next_conn = 1u64;
    loop {
        match listener.accept().await {
            Ok(sock) => {
                let conn = next_conn;
                next_conn += 1;
                tokio::spawn(serve_conn(keeper.clone(), policy.clone(), sock, conn));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Closes timed-out disconnected handles every `interval`.
pub async fn scavenger(keeper: Shared, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lock(&keeper).scavenge(now_ms());
    }
}
