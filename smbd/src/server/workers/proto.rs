//! Messages between the supervisor and its workers (one SOCK_SEQPACKET
//! message each; a connection's socket rides along as SCM_RIGHTS).
//!
//! Layout: version (u8), kind (u8), then the kind's fields, little-endian.
//! Both ends are the same binary, but a version byte keeps a stale worker
//! (left over from an upgrade) from misreading a newer supervisor.
//!
//! Version 2 added the worker's generation to `Broker` and the `Move` /
//! `Moved` pair, which carries a negotiated connection (its [`MovedConn`])
//! to the worker holding the session its next request names.
//!
//! A [`MovedConn`] is encoded as: peer (u8 length + text), dialect u16,
//! ClientGuid (16), client capabilities u32, client security mode u16,
//! dialect count u16 + dialects u16 each, server security mode u16, server
//! capabilities u32, signing algorithm u16 (its negotiate id, 0xFFFF none),
//! cipher u16 (0 none), max read/write/transact u32 each, credit window (low
//! u64, max u64, id count u32, one bit per id from low, set when used),
//! preauth hash (64), age in ms u64, authenticated u8, then the unanswered
//! request frame (u32 length + bytes).

use std::net::SocketAddr;

use crate::server::conn::Negotiated;
use crate::server::credits::WindowParts;
use crate::server::crypto::{Cipher, SigningAlgorithm};

pub const VERSION: u8 = 2;
/// Largest message either side sends: a `Move` with its request frame.
pub const MAX_MESSAGE: usize = 96 * 1024;
/// Largest request frame a moving connection takes along (a binding
/// SESSION_SETUP is a few KiB).
pub const MAX_MOVED_FRAME: usize = 64 * 1024;
/// Most credit-window ids and offered dialects a moving connection carries.
pub const MAX_MOVED_CREDITS: usize = 65535;
pub const MAX_MOVED_DIALECTS: usize = 1024;

/// A negotiated connection on its way to another worker: what the
/// receiving worker needs to go on serving it as if it had been there all
/// along, and the request it is to answer first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedConn {
    pub peer: SocketAddr,
    pub neg: Negotiated,
    pub credits: WindowParts,
    pub preauth: [u8; 64],
    /// Milliseconds since the connection was accepted (its unauthenticated
    /// time limit keeps counting).
    pub age_ms: u64,
    pub authenticated: bool,
    /// The request frame (without its transport header) not yet answered.
    pub frame: Vec<u8>,
}

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
    /// Move the attached connection to the worker that issued session
    /// `sid` (it names that session in `conn.frame`).
    Move { sid: u64, conn: Box<MovedConn> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Serve the attached connection.
    Conn { peer: SocketAddr, smb1_done: bool },
    /// Answer to `OwnerOf`: `here` when the asking worker owns the GUID.
    Owner { req: u64, here: bool },
    /// The attached fds are the worker's ends of its broker link (the first
    /// message a worker gets); `generation` counts the starts of this
    /// worker index (modulo 16), for its session ids.
    Broker { generation: u8 },
    /// Serve the attached connection, moved here from another worker,
    /// starting with `conn.frame`. `owner_gone`: session `sid`'s worker is
    /// gone and the connection came back to the worker that sent it.
    Moved {
        sid: u64,
        owner_gone: bool,
        conn: Box<MovedConn>,
    },
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
    #[error("bad moved connection state: {0}")]
    Moved(&'static str),
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
    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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

impl MovedConn {
    /// True when the encoding stays within [`MAX_MESSAGE`] (checked before
    /// a connection commits to moving).
    pub fn fits(&self) -> bool {
        self.frame.len() <= MAX_MOVED_FRAME
            && self.credits.used.len() <= MAX_MOVED_CREDITS
            && self.neg.client_dialects.len() <= MAX_MOVED_DIALECTS
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let n = &self.neg;
        put_peer(out, &self.peer);
        out.extend_from_slice(&n.dialect.to_le_bytes());
        out.extend_from_slice(&n.client_guid);
        out.extend_from_slice(&n.client_caps.to_le_bytes());
        out.extend_from_slice(&n.client_security_mode.to_le_bytes());
        out.extend_from_slice(&(n.client_dialects.len() as u16).to_le_bytes());
        for d in &n.client_dialects {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&n.server_security_mode.to_le_bytes());
        out.extend_from_slice(&n.server_caps.to_le_bytes());
        let signing = n.signing.map_or(0xFFFF, SigningAlgorithm::negotiate_id);
        out.extend_from_slice(&signing.to_le_bytes());
        out.extend_from_slice(&n.cipher.map_or(0u16, |c| c as u16).to_le_bytes());
        for v in [n.max_read, n.max_write, n.max_transact] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let c = &self.credits;
        out.extend_from_slice(&c.low.to_le_bytes());
        out.extend_from_slice(&c.max.to_le_bytes());
        out.extend_from_slice(&(c.used.len() as u32).to_le_bytes());
        for chunk in c.used.chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, u)| b | (u8::from(*u) << i));
            out.push(byte);
        }
        out.extend_from_slice(&self.preauth);
        out.extend_from_slice(&self.age_ms.to_le_bytes());
        out.push(u8::from(self.authenticated));
        out.extend_from_slice(&(self.frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.frame);
    }

    fn decode(r: &mut Rd<'_>) -> Result<MovedConn, ProtoError> {
        let peer = r.peer()?;
        let dialect = r.u16()?;
        let client_guid = r.guid()?;
        let client_caps = r.u32()?;
        let client_security_mode = r.u16()?;
        let nd = r.u16()? as usize;
        if nd > MAX_MOVED_DIALECTS {
            return Err(ProtoError::Moved("too many dialects"));
        }
        let client_dialects = (0..nd).map(|_| r.u16()).collect::<Result<Vec<_>, _>>()?;
        let server_security_mode = r.u16()?;
        let server_caps = r.u32()?;
        let signing = match r.u16()? {
            0xFFFF => None,
            id => Some(
                SigningAlgorithm::from_negotiate_id(id)
                    .ok_or(ProtoError::Moved("signing algorithm"))?,
            ),
        };
        let cipher = match r.u16()? {
            0 => None,
            id => Some(Cipher::from_u16(id).ok_or(ProtoError::Moved("cipher"))?),
        };
        let (max_read, max_write, max_transact) = (r.u32()?, r.u32()?, r.u32()?);
        let low = r.u64()?;
        let max = r.u64()?;
        let n = r.u32()? as usize;
        if n > MAX_MOVED_CREDITS {
            return Err(ProtoError::Moved("credit window too large"));
        }
        let bits = r.take(n.div_ceil(8))?;
        let used = (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect();
        let mut preauth = [0u8; 64];
        preauth.copy_from_slice(r.take(64)?);
        let age_ms = r.u64()?;
        let authenticated = r.u8()? != 0;
        let flen = r.u32()? as usize;
        if flen > MAX_MOVED_FRAME {
            return Err(ProtoError::Moved("request frame too large"));
        }
        let frame = r.take(flen)?.to_vec();
        Ok(MovedConn {
            peer,
            neg: Negotiated {
                dialect,
                client_guid,
                client_caps,
                client_security_mode,
                client_dialects,
                server_security_mode,
                server_caps,
                signing,
                cipher,
                max_read,
                max_write,
                max_transact,
            },
            credits: WindowParts { low, used, max },
            preauth,
            age_ms,
            authenticated,
            frame,
        })
    }
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
            ToSupervisor::Move { sid, conn } => {
                out.push(4);
                out.extend_from_slice(&sid.to_le_bytes());
                conn.encode(&mut out);
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
            4 => ToSupervisor::Move {
                sid: r.u64()?,
                conn: Box::new(MovedConn::decode(&mut r)?),
            },
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
            ToWorker::Broker { generation } => {
                out.push(3);
                out.push(*generation);
            }
            ToWorker::Moved {
                sid,
                owner_gone,
                conn,
            } => {
                out.push(4);
                out.extend_from_slice(&sid.to_le_bytes());
                out.push(u8::from(*owner_gone));
                conn.encode(&mut out);
            }
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
            3 => ToWorker::Broker {
                generation: r.u8()?,
            },
            4 => ToWorker::Moved {
                sid: r.u64()?,
                owner_gone: r.u8()? != 0,
                conn: Box::new(MovedConn::decode(&mut r)?),
            },
            k => return Err(ProtoError::Kind(k)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(frame_len: usize) -> MovedConn {
        MovedConn {
            peer: "[fe80::1]:445".parse().unwrap(),
            neg: Negotiated {
                dialect: 0x0311,
                client_guid: [9; 16],
                client_caps: 0x7f,
                client_security_mode: 1,
                client_dialects: vec![0x0202, 0x0210, 0x0300, 0x0302, 0x0311],
                server_security_mode: 1,
                server_caps: 0x4f,
                signing: Some(SigningAlgorithm::AesGmac),
                cipher: Some(Cipher::Aes256Gcm),
                max_read: 1 << 23,
                max_write: 1 << 23,
                max_transact: 1 << 23,
            },
            credits: WindowParts {
                low: 3,
                used: vec![false, true, true, false, false, false, false, false, true],
                max: 8192,
            },
            preauth: [0xab; 64],
            age_ms: 1234,
            authenticated: false,
            frame: (0..frame_len).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn round_trips() {
        let peer: SocketAddr = "[::1]:49152".parse().unwrap();
        let g = [7u8; 16];
        let mut plain = moved(0);
        plain.neg.signing = None;
        plain.neg.cipher = None;
        plain.credits.used = vec![false];
        for m in [
            ToSupervisor::OwnerOf { req: 9, guid: g },
            ToSupervisor::Handoff {
                guid: g,
                peer,
                smb1_done: true,
            },
            ToSupervisor::Release { guid: g },
            ToSupervisor::Move {
                sid: 0x0110_0003,
                conn: Box::new(moved(300)),
            },
            ToSupervisor::Move {
                sid: 1,
                conn: Box::new(plain),
            },
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
            ToWorker::Broker { generation: 15 },
            ToWorker::Moved {
                sid: 0x0200_0001,
                owner_gone: true,
                conn: Box::new(moved(10)),
            },
        ] {
            assert_eq!(ToWorker::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn largest_move_fits_a_message() {
        let mut m = moved(MAX_MOVED_FRAME);
        m.credits.used = vec![false; MAX_MOVED_CREDITS];
        m.neg.client_dialects = vec![0x0311; MAX_MOVED_DIALECTS];
        assert!(m.fits());
        let b = ToWorker::Moved {
            sid: 1,
            owner_gone: false,
            conn: Box::new(m.clone()),
        }
        .encode();
        assert!(b.len() <= MAX_MESSAGE, "{} bytes", b.len());
        m.frame.push(0);
        assert!(!m.fits());
    }

    #[test]
    fn rejects_bad_moves() {
        let full = ToSupervisor::Move {
            sid: 7,
            conn: Box::new(moved(40)),
        }
        .encode();
        for n in 0..full.len() {
            assert!(ToSupervisor::decode(&full[..n]).is_err(), "prefix {n}");
        }
        // the signing algorithm id sits after the fixed fields and dialects
        let m = moved(0);
        let peer_len = 1 + m.peer.to_string().len();
        let sign_at = 2 + 8 + peer_len + 2 + 16 + 4 + 2 + 2 + 2 * 5 + 2 + 4;
        let mut bad = ToSupervisor::Move {
            sid: 7,
            conn: Box::new(m.clone()),
        }
        .encode();
        bad[sign_at] = 9;
        assert_eq!(
            ToSupervisor::decode(&bad),
            Err(ProtoError::Moved("signing algorithm"))
        );
        let mut bad = ToSupervisor::Move {
            sid: 7,
            conn: Box::new(m),
        }
        .encode();
        bad[sign_at + 2] = 77;
        assert_eq!(ToSupervisor::decode(&bad), Err(ProtoError::Moved("cipher")));
        // a frame length beyond the limit is refused before it is read
        let mut huge = full.clone();
        let at = huge.len() - 40 - 4;
        huge[at..at + 4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert_eq!(
            ToSupervisor::decode(&huge),
            Err(ProtoError::Moved("request frame too large"))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(ToWorker::decode(&[]), Err(ProtoError::Truncated));
        assert_eq!(ToWorker::decode(&[1, 1]), Err(ProtoError::Version(1)));
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
