//! Client side of the keeper protocol, for smbd workers and holdfastctl.
//! One request at a time per `Client`; share it behind a mutex if needed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tokio_seqpacket::ancillary::AncillaryMessageWriter;
use tokio_seqpacket::UnixSeqpacket;

use crate::proto::{
    self, DecodeError, Entry, ErrorCode, FetchRequest, Record, Request, Response, MAX_MESSAGE,
};
use crate::recv_message;

/// The socket the keeper listens on unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/holdfast/keeper.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("keeper socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("keeper sent an undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("keeper refused ({code}): {message}")]
    Keeper { code: ErrorCode, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The keeper's error code, when the keeper refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Keeper { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub struct Client {
    sock: UnixSeqpacket,
    next_id: u32,
    version: u16,
    keeper_pid: u32,
    fd_store: bool,
    buf: Vec<u8>,
}

impl Client {
    /// Connects and exchanges Hello; `name` shows up in the keeper's log.
    pub async fn connect(path: impl AsRef<Path>, name: &str) -> Result<Client> {
        let sock = UnixSeqpacket::connect(path).await?;
        let mut c = Client {
            sock,
            next_id: 1,
            version: 0,
            keeper_pid: 0,
            fd_store: false,
            buf: vec![0u8; MAX_MESSAGE],
        };
        let hello = Request::Hello {
            min_version: proto::MIN_VERSION,
            max_version: proto::MAX_VERSION,
            client: name.to_string(),
        };
        match c.call(&hello, None).await? {
            (
                Response::HelloOk {
                    version,
                    keeper_pid,
                    fd_store,
                },
                None,
            ) => {
                c.version = version;
                c.keeper_pid = keeper_pid;
                c.fd_store = fd_store;
                Ok(c)
            }
            other => Err(unexpected(&other.0)),
        }
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn keeper_pid(&self) -> u32 {
        self.keeper_pid
    }

    /// Whether kept fds survive a keeper restart.
    pub fn fd_store(&self) -> bool {
        self.fd_store
    }

    async fn send(&mut self, req: &Request, fd: Option<BorrowedFd<'_>>) -> Result<u32> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let buf = req.encode(id);
        match fd {
            Some(fd) => {
                let mut anc = [0u8; 64];
                let mut w = AncillaryMessageWriter::new(&mut anc);
                w.add_fds([fd])
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                self.sock.send_with_ancillary(&buf, &mut w).await?;
            }
            None => {
                self.sock.send(&buf).await?;
            }
        }
        Ok(id)
    }

    async fn recv(&mut self, want_id: u32) -> Result<(Response, Option<OwnedFd>)> {
        let Some((n, fds, problem)) = recv_message(&self.sock, &mut self.buf).await? else {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        };
        if let Some(p) = problem {
            return Err(ClientError::Protocol(p.to_string()));
        }
        let (resp, id) = Response::decode(&self.buf[..n])?;
        if let Response::Error { code, message } = resp {
            return Err(ClientError::Keeper { code, message });
        }
        if id != want_id {
            return Err(ClientError::Protocol(format!(
                "reply to request {id}, expected {want_id}"
            )));
        }
        if fds.len() != resp.fd_count() {
            return Err(ClientError::Protocol(format!(
                "reply carries {} fds, expected {}",
                fds.len(),
                resp.fd_count()
            )));
        }
        Ok((resp, fds.into_iter().next()))
    }

    async fn call(
        &mut self,
        req: &Request,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(Response, Option<OwnedFd>)> {
        let id = self.send(req, fd).await?;
        self.recv(id).await
    }

    async fn call_done(&mut self, req: Request) -> Result<()> {
        match self.call(&req, None).await? {
            (Response::Done, _) => Ok(()),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Hands a duplicate of a durable open's fd to the keeper; returns the record id.
    pub async fn deposit(&mut self, rec: &Record, fd: impl AsFd) -> Result<u64> {
        match self
            .call(&Request::Deposit(rec.clone()), Some(fd.as_fd()))
            .await?
        {
            (Response::Deposited { id }, _) => Ok(id),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Reclaims a disconnected handle: the very open file description deposited.
    pub async fn fetch(&mut self, req: &FetchRequest) -> Result<(Record, OwnedFd)> {
        match self.call(&Request::Fetch(req.clone()), None).await? {
            (Response::Fetched(rec), Some(fd)) => Ok((rec, fd)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// The client connection is gone; `at_ms` 0 means now. Starts the timeout.
    pub async fn disconnect(&mut self, id: u64, at_ms: u64) -> Result<()> {
        self.call_done(Request::Disconnect { id, at_ms }).await
    }

    /// A worker took the handle over after Fetch and a successful reconnect.
    pub async fn reconnected(&mut self, id: u64) -> Result<()> {
        self.call_done(Request::Reconnected { id }).await
    }

    /// The client closed the handle.
    pub async fn close(&mut self, id: u64) -> Result<()> {
        self.call_done(Request::Close { id }).await
    }

    /// smbd discards a disconnected handle (e.g. a conflicting open).
    pub async fn purge(&mut self, id: u64, reason: &str) -> Result<()> {
        self.call_done(Request::Purge {
            id,
            reason: reason.to_string(),
        })
        .await
    }

    /// Administrator removal (root only); `reason` goes to the keeper's log.
    pub async fn evict(&mut self, id: u64, reason: &str) -> Result<()> {
        self.call_done(Request::Evict {
            id,
            reason: reason.to_string(),
        })
        .await
    }

    pub async fn list(&mut self) -> Result<Vec<Entry>> {
        let id = self.send(&Request::List, None).await?;
        let mut out = Vec::new();
        loop {
            match self.recv(id).await? {
                (Response::ListItem(e), _) => out.push(e),
                (Response::ListEnd { count }, _) => {
                    if count as usize != out.len() {
                        return Err(ClientError::Protocol(format!(
                            "ListEnd says {count} entries, got {}",
                            out.len()
                        )));
                    }
                    return Ok(out);
                }
                (other, _) => return Err(unexpected(&other)),
            }
        }
    }

    /// Version 2: turns this connection into a [`Watcher`] that receives the
    /// keeper's lease-break notices.
    pub async fn watch(mut self) -> Result<Watcher> {
        if self.version < 2 {
            return Err(ClientError::Protocol(format!(
                "the keeper speaks version {}; Watch needs 2",
                self.version
            )));
        }
        self.call_done(Request::Watch).await?;
        Ok(Watcher { c: self })
    }

    pub async fn show(&mut self, id: u64) -> Result<Entry> {
        match self.call(&Request::Show { id }, None).await? {
            (Response::Shown(e), _) => Ok(e),
            (other, _) => Err(unexpected(&other)),
        }
    }
}

/// A keeper connection that only receives [`Response::LeaseBreak`] notices.
pub struct Watcher {
    c: Client,
}

/// One lease-break notice: keeper record `id`, the open's persistent FileId,
/// and what the keeper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub id: u64,
    pub persistent_file_id: u64,
    pub action: crate::proto::BreakAction,
}

impl Watcher {
    /// Waits for the next notice; an error means the connection is gone.
    pub async fn next(&mut self) -> Result<Notice> {
        match self.c.recv(0).await? {
            (
                Response::LeaseBreak {
                    id,
                    persistent_file_id,
                    action,
                },
                _,
            ) => Ok(Notice {
                id,
                persistent_file_id,
                action,
            }),
            (other, _) => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}
