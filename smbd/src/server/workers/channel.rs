//! One SOCK_SEQPACKET message, optionally with fds attached (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};
use tokio_seqpacket::ancillary::{AncillaryMessageWriter, OwnedAncillaryMessage};
use tokio_seqpacket::UnixSeqpacket;

use super::proto::MAX_MESSAGE;

/// Room for the fds of one message (a worker's broker link has the most).
const CBUF: usize = 1024;

/// Sends `msg` with `fd` attached (if any).
pub async fn send(sock: &UnixSeqpacket, msg: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
    let fds: Vec<&OwnedFd> = fd.into_iter().collect();
    send_fds(sock, msg, &fds).await
}

/// Sends `msg` with `fds` attached, in order.
pub async fn send_fds(sock: &UnixSeqpacket, msg: &[u8], fds: &[&OwnedFd]) -> io::Result<()> {
    let mut cbuf = [0u8; CBUF];
    let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut anc = AncillaryMessageWriter::new(&mut cbuf);
    if !fds.is_empty() {
        anc.add_fds(&fds[..])
            .map_err(|_| io::Error::other("control buffer too small for an fd"))?;
    }
    let n = sock
        .send_vectored_with_ancillary(&[IoSlice::new(msg)], &mut anc)
        .await?;
    if n != msg.len() {
        return Err(io::Error::other("short control message send"));
    }
    Ok(())
}

/// Receives one message and the fds attached to it (taking ownership, so
/// none leak). `Ok(None)` means the peer closed the socket.
pub async fn recv(sock: &UnixSeqpacket) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cbuf = [0u8; CBUF];
    let (info, anc) = sock
        .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut buf)], &mut cbuf)
        .await?;
    let mut fds = Vec::new();
    for m in anc.into_messages() {
        if let OwnedAncillaryMessage::FileDescriptors(f) = m {
            fds.extend(f);
        }
    }
    let n = info.bytes_read();
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if info.truncated() {
        return Err(io::Error::other("oversized control message"));
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[tokio::test]
    async fn passes_a_message_and_an_fd() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello").unwrap();
        let fd = OwnedFd::from(f.try_clone().unwrap());
        send(&a, b"msg", Some(&fd)).await.unwrap();
        let (m, mut fds) = recv(&b).await.unwrap().unwrap();
        assert_eq!(m, b"msg");
        assert_eq!(fds.len(), 1);
        // same open file description: the offset moved by our write is shared
        let mut g = std::fs::File::from(fds.pop().unwrap());
        assert_eq!(g.stream_position().unwrap(), 5);
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        send(&a, b"x", None).await.unwrap();
        let (m, fds) = recv(&b).await.unwrap().unwrap();
        assert_eq!((m.as_slice(), fds.len()), (&b"x"[..], 0));
        drop(a);
        assert!(recv(&b).await.unwrap().is_none());
    }
}
