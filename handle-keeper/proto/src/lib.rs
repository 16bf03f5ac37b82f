//! The handle keeper's wire protocol (docs/keeper-protocol.md) and the client
//! smbd workers and holdfastctl use. A crate of its own so that smbd can talk
//! to the keeper without depending on the daemon (which depends on smbd).

#![forbid(unsafe_code)]

pub mod client;
pub mod proto;

pub use client::{Client, ClientError, Notice, Watcher, DEFAULT_SOCKET};
pub use proto::{BreakAction, DurableKind, Entry, ErrorCode, FetchRequest, HandleState, Record};

use std::os::fd::OwnedFd;
use tokio_seqpacket::ancillary::OwnedAncillaryMessage;
use tokio_seqpacket::UnixSeqpacket;

/// Room for a few fds: a peer sending more gets BadMessage.
const ANCILLARY_LEN: usize = 128;

/// Receives one message and the fds that came with it. `Ok(None)` at EOF.
/// Returns `Err(reason)` text for a message the kernel had to cut.
pub async fn recv_message(
    sock: &UnixSeqpacket,
    buf: &mut [u8],
) -> std::io::Result<Option<(usize, Vec<OwnedFd>, Option<&'static str>)>> {
    let mut anc = [0u8; ANCILLARY_LEN];
    let (info, reader) = sock.recv_with_ancillary(buf, &mut anc).await?;
    let mut fds = Vec::new();
    for m in reader.into_messages() {
        if let OwnedAncillaryMessage::FileDescriptors(f) = m {
            fds.extend(f);
        }
    }
    if info.bytes_read() == 0 && fds.is_empty() {
        return Ok(None);
    }
    let problem = if info.truncated() {
        Some("message too long")
    } else if info.ancillary_truncated() {
        Some("too many fds attached")
    } else {
        None
    };
    Ok(Some((info.bytes_read(), fds, problem)))
}
