//! Messages between the supervisor and its workers (one SOCK_SEQPACKET
//! message each; a connection's socket rides along as SCM_RIGHTS).
//!
//! Layout: version (u8), kind (u8), then the kind's fields, little-endian.
//! Both ends are the same binary, but a version byte keeps a stale worker
//! (left over from an upgrade) from misreading a newer supervisor.

use std::net::SocketAddr;

pub const VERSION: u8 = 1;
/// Largest message either side sends (a peer address is at most ~60 bytes).
pub const MAX_MESSAGE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToSupervisor {
    /// Which worker serves ClientGUID `guid`? Answered by `Owner`; an
    /// unowned GUID is given to the asker.
    OwnerOf { req: u64, guid: [u8; 16] },
    /// The attached connection belongs to `guid`'s owner. `smb1_done`: an
    /// SMB1 negotiate was already answered on it.
    Handoff {
        guid: [u8; 16],
        peer: SocketAddr,
        smb1_done: bool,
    },
    /// The worker no longer serves any connection of `guid`.
    Release { guid: [u8; 16] },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Serve the attached connection.
    Conn { peer: SocketAddr, smb1_done: bool },
    /// Answer to `OwnerOf`: `here` when the asking worker owns the GUID.
    Owner { req: u64, here: bool },
    /// The attached fd is the worker's end of its broker socket (the first
    /// message a worker gets).
    Broker,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("unsupported control protocol version {0}")]
    Version(u8),
    #[error("unknown control message kind {0}")]
    Kind(u8),
    #[error("truncated control message")]
    Truncated,
    #[error("bad peer address in control message")]
    Peer,
}

struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn guid(&mut self) -> Result<[u8; 16], ProtoError> {
        let mut g = [0u8; 16];
        g.copy_from_slice(self.take(16)?);
        Ok(g)
    }
    fn peer(&mut self) -> Result<SocketAddr, ProtoError> {
        let n = self.u8()? as usize;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| ProtoError::Peer)?;
        s.parse().map_err(|_| ProtoError::Peer)
    }
    fn header(&mut self) -> Result<u8, ProtoError> {
        let v = self.u8()?;
        if v != VERSION {
            return Err(ProtoError::Version(v));
        }
        self.u8()
    }
}

fn put_peer(out: &mut Vec<u8>, peer: &SocketAddr) {
    let s = peer.to_string();
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

impl ToSupervisor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            ToSupervisor::OwnerOf { req, guid } => {
                out.push(1);
                out.extend_from_slice(&req.to_le_bytes());
                out.extend_from_slice(guid);
            }
            ToSupervisor::Handoff {
                guid,
                peer,
                smb1_done,
            } => {
                out.push(2);
                out.extend_from_slice(guid);
                out.push(u8::from(*smb1_done));
                put_peer(&mut out, peer);
            }
            ToSupervisor::Release { guid } => {
                out.push(3);
                out.extend_from_slice(guid);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Rd(b);
        Ok(match r.header()? {
            1 => ToSupervisor::OwnerOf {
                req: r.u64()?,
                guid: r.guid()?,
            },
            2 => ToSupervisor::Handoff {
                guid: r.guid()?,
                smb1_done: r.u8()? != 0,
                peer: r.peer()?,
            },
            3 => ToSupervisor::Release { guid: r.guid()? },
            k => return Err(ProtoError::Kind(k)),
        })
    }
}

impl ToWorker {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            ToWorker::Conn { peer, smb1_done } => {
                out.push(1);
                out.push(u8::from(*smb1_done));
                put_peer(&mut out, peer);
            }
            ToWorker::Owner { req, here } => {
                out.push(2);
                out.extend_from_slice(&req.to_le_bytes());
                out.push(u8::from(*here));
            }
            ToWorker::Broker => out.push(3),
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Rd(b);
        Ok(match r.header()? {
            1 => ToWorker::Conn {
                smb1_done: r.u8()? != 0,
                peer: r.peer()?,
            },
            2 => ToWorker::Owner {
                req: r.u64()?,
                here: r.u8()? != 0,
            },
            3 => ToWorker::Broker,
            k => return Err(ProtoError::Kind(k)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let peer: SocketAddr = "[::1]:49152".parse().unwrap();
        let g = [7u8; 16];
        for m in [
            ToSupervisor::OwnerOf { req: 9, guid: g },
            ToSupervisor::Handoff {
                guid: g,
                peer,
                smb1_done: true,
            },
            ToSupervisor::Release { guid: g },
        ] {
            let b = m.encode();
            assert!(b.len() <= MAX_MESSAGE);
            assert_eq!(ToSupervisor::decode(&b).unwrap(), m);
        }
        for m in [
            ToWorker::Conn {
                peer,
                smb1_done: false,
            },
            ToWorker::Owner { req: 3, here: true },
            ToWorker::Broker,
        ] {
            assert_eq!(ToWorker::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(ToWorker::decode(&[]), Err(ProtoError::Truncated));
        assert_eq!(ToWorker::decode(&[2, 1]), Err(ProtoError::Version(2)));
        assert_eq!(ToWorker::decode(&[VERSION, 9]), Err(ProtoError::Kind(9)));
        let mut b = ToSupervisor::OwnerOf {
            req: 1,
            guid: [0; 16],
        }
        .encode();
        b.pop();
        assert_eq!(ToSupervisor::decode(&b), Err(ProtoError::Truncated));
        assert_eq!(
            ToWorker::decode(&[VERSION, 1, 0, 3, b'x', b'y', b'z']),
            Err(ProtoError::Peer)
        );
        // every prefix of a valid message fails cleanly
        let full = ToSupervisor::Handoff {
            guid: [1; 16],
            peer: "127.0.0.1:1".parse().unwrap(),
            smb1_done: false,
        }
        .encode();
        for n in 0..full.len() {
            assert!(ToSupervisor::decode(&full[..n]).is_err());
        }
    }
}
