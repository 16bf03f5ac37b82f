//! Messages between a worker and the supervisor's open-file broker
//! (docs/architecture.md section 8.1): one SOCK_SEQPACKET message each, a
//! version byte and then a postcard-encoded body.
//!
//! Every broker method a worker uses is one [`Req`] variant answered by one
//! [`Resp`]; the supervisor also sends unsolicited break notices and wake-ups
//! ([`ToWorkerMsg`]). A new broker method is forwarded by adding a variant at
//! the end of the enums (postcard numbers variants by position).

use crate::fsa::broker::{CloseOutcome, FileKey};
use crate::fsa::lease::{LeaseGrant, LeaseId, LeaseRequest};
use crate::fsa::oplock::{BreakNotice, Intent, LeaseNotice, Level};
use crate::fsa::writetime::{Change, OpenWriteTime};
use crate::wire::NtStatus;
use serde::{Deserialize, Serialize};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped whenever a message changes meaning or layout.
pub const VERSION: u8 = 1;
/// Largest message either side accepts (a share path is at most ~100 KiB
/// of UTF-8; the socket buffer bounds a SEQPACKET message anyway).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// A [`FileKey`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
    pub stream: u64,
}

impl From<FileKey> for Key {
    fn from(k: FileKey) -> Key {
        Key {
            dev: k.dev,
            ino: k.ino,
            stream: k.stream,
        }
    }
}

impl From<Key> for FileKey {
    fn from(k: Key) -> FileKey {
        FileKey {
            dev: k.dev,
            ino: k.ino,
            stream: k.stream,
        }
    }
}

/// An [`Intent`] on the wire (levels as their SMB2 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireIntent {
    pub owner: u64,
    pub requested: u8,
    pub disposition: u32,
    pub is_dir: bool,
    pub oplocks: bool,
    pub level2: bool,
    pub break_timeout: Duration,
    pub may_break: bool,
    pub lease: Option<WireLease>,
}

/// A [`LeaseRequest`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLease {
    pub id: LeaseId,
    pub state: u32,
    pub v2: bool,
    pub epoch: u16,
    pub parent: Option<[u8; 16]>,
}

impl From<LeaseRequest> for WireLease {
    fn from(l: LeaseRequest) -> Self {
        WireLease {
            id: l.id,
            state: l.state,
            v2: l.v2,
            epoch: l.epoch,
            parent: l.parent,
        }
    }
}

impl From<WireLease> for LeaseRequest {
    fn from(l: WireLease) -> Self {
        LeaseRequest {
            id: l.id,
            state: l.state,
            v2: l.v2,
            epoch: l.epoch,
            parent: l.parent,
        }
    }
}

/// A [`LeaseNotice`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLeaseNotice {
    pub key: [u8; 16],
    pub from: u32,
    pub to: u32,
    pub epoch: u16,
    pub ack_required: bool,
}

impl From<LeaseNotice> for WireLeaseNotice {
    fn from(n: LeaseNotice) -> Self {
        WireLeaseNotice {
            key: n.key,
            from: n.from,
            to: n.to,
            epoch: n.epoch,
            ack_required: n.ack_required,
        }
    }
}

impl From<WireLeaseNotice> for LeaseNotice {
    fn from(n: WireLeaseNotice) -> Self {
        LeaseNotice {
            key: n.key,
            from: n.from,
            to: n.to,
            epoch: n.epoch,
            ack_required: n.ack_required,
        }
    }
}

/// A [`LeaseGrant`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGrant {
    pub state: u32,
    pub epoch: u16,
    pub v2: bool,
    pub parent: Option<[u8; 16]>,
    pub breaking: bool,
}

impl From<LeaseGrant> for WireGrant {
    fn from(g: LeaseGrant) -> Self {
        WireGrant {
            state: g.state,
            epoch: g.epoch,
            v2: g.v2,
            parent: g.parent,
            breaking: g.breaking,
        }
    }
}

impl From<WireGrant> for LeaseGrant {
    fn from(g: WireGrant) -> Self {
        LeaseGrant {
            state: g.state,
            epoch: g.epoch,
            v2: g.v2,
            parent: g.parent,
            breaking: g.breaking,
        }
    }
}

impl From<&Intent> for WireIntent {
    fn from(i: &Intent) -> Self {
        WireIntent {
            owner: i.owner,
            requested: i.requested.wire(),
            disposition: i.disposition,
            is_dir: i.is_dir,
            oplocks: i.oplocks,
            level2: i.level2,
            break_timeout: i.break_timeout,
            may_break: i.may_break,
            lease: i.lease.map(WireLease::from),
        }
    }
}

impl From<WireIntent> for Intent {
    fn from(i: WireIntent) -> Self {
        Intent {
            owner: i.owner,
            requested: Level::from_wire(i.requested),
            disposition: i.disposition,
            is_dir: i.is_dir,
            oplocks: i.oplocks,
            level2: i.level2,
            break_timeout: i.break_timeout,
            may_break: i.may_break,
            lease: i.lease.map(LeaseRequest::from),
        }
    }
}

/// A [`CloseOutcome`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireClose {
    pub delete: Option<Vec<u8>>,
    pub last: bool,
    pub write_time: Option<u64>,
    pub delete_stream: bool,
}

impl From<CloseOutcome> for WireClose {
    fn from(c: CloseOutcome) -> Self {
        WireClose {
            delete: c.delete.map(path_bytes),
            last: c.last,
            write_time: c.write_time,
            delete_stream: c.delete_stream,
        }
    }
}

impl From<WireClose> for CloseOutcome {
    fn from(c: WireClose) -> Self {
        CloseOutcome {
            delete: c.delete.map(bytes_path),
            last: c.last,
            write_time: c.write_time,
            delete_stream: c.delete_stream,
        }
    }
}

/// Paths travel as raw bytes: a Linux path need not be UTF-8.
pub fn path_bytes(p: impl AsRef<Path>) -> Vec<u8> {
    p.as_ref().as_os_str().as_bytes().to_vec()
}

pub fn bytes_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

pub fn change_byte(c: Change) -> u8 {
    match c {
        Change::Write => 0,
        Change::Resize => 1,
    }
}

pub fn byte_change(b: u8) -> Change {
    if b == 1 {
        Change::Resize
    } else {
        Change::Write
    }
}

/// A broker call from a worker. Each names the [`crate::fsa::broker::Broker`]
/// method of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    OpenWith {
        key: Key,
        path: Vec<u8>,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
        intent: WireIntent,
    },
    Close {
        key: Key,
        open_id: u64,
    },
    CloseDeferringWake {
        key: Key,
        open_id: u64,
    },
    /// The caller of `CloseDeferringWake` fires the wake it was handed.
    Wake {
        key: Key,
    },
    RegisterBreakSink {
        owner: u64,
    },
    UnregisterBreakSink {
        owner: u64,
    },
    OplockAck {
        key: Key,
        open_id: u64,
        wire_level: u8,
    },
    OplockBreakLevel2 {
        key: Key,
        actor: u64,
    },
    /// `oplock_changed` and `unlock_notify`: the worker wants wake-ups for
    /// this key from now on; answered with whether the file has opens.
    Watch {
        key: Key,
    },
    OplockDeadline {
        key: Key,
    },
    OplockExpire {
        key: Key,
    },
    OplockDisconnect {
        key: Key,
        open_id: u64,
        owner: u64,
    },
    OplockReattach {
        key: Key,
        open_id: u64,
        owner: u64,
    },
    OplockLevel {
        key: Key,
        open_id: u64,
    },
    WouldConflict {
        key: Key,
        access: u32,
        share: u32,
    },
    OpenCount {
        key: Key,
    },
    StreamsOpen {
        key: Key,
    },
    WriteTime {
        key: Key,
    },
    WriteTimeNeedsHold {
        key: Key,
    },
    WriteTimeModified {
        key: Key,
        open: OpenWriteTime,
        change: u8,
        pre_mtime: Option<u64>,
    },
    WriteTimeFlush {
        key: Key,
        open: OpenWriteTime,
    },
    WriteTimeSet {
        key: Key,
        open: OpenWriteTime,
        time: u64,
    },
    WriteTimeClose {
        key: Key,
        open: OpenWriteTime,
    },
    SetDeletePending {
        key: Key,
        pending: bool,
    },
    SetDeleteOnClose {
        key: Key,
        open_id: u64,
        on: bool,
    },
    DeletePending {
        key: Key,
    },
    Renamed {
        key: Key,
        path: Vec<u8>,
    },
    Path {
        key: Key,
    },
    HasOpenBelow {
        dir: Vec<u8>,
    },
    Lock {
        key: Key,
        open_id: u64,
        offset: u64,
        length: u64,
        exclusive: bool,
    },
    Unlock {
        key: Key,
        open_id: u64,
        offset: u64,
        length: u64,
    },
    CheckIo {
        key: Key,
        open_id: u64,
        offset: u64,
        length: u64,
        write: bool,
    },
    /// `write_time_close` then `close_deferring_wake`: an open goes, in one
    /// round trip.
    CloseOpen {
        key: Key,
        open_id: u64,
        open: OpenWriteTime,
    },
    OpenLease {
        key: Key,
        open_id: u64,
    },
    LeaseFile {
        id: LeaseId,
    },
    LeaseGrant {
        key: Key,
        id: LeaseId,
    },
    LeaseAck {
        id: LeaseId,
        state: u32,
    },
    BreakHandleLeases {
        key: Key,
        actor: u64,
    },
    LeaseParent {
        key: Key,
        open_id: u64,
    },
    HasDirLeases,
    BreakDirLeases {
        key: Key,
        except: Option<LeaseId>,
    },
    Caching {
        key: Key,
        open_id: u64,
    },
    KernelLimit {
        key: Key,
        open_id: u64,
        keep: u32,
    },
    KernelBreak {
        key: Key,
        open_id: u64,
        keep: u32,
        timeout: Duration,
    },
    /// A durable reconnect names disconnected open `open_id`, which another
    /// worker holds: the supervisor asks that worker to give it up
    /// ([`ToWorkerMsg::Surrender`]) and answers with [`Resp::Moved`], the
    /// open's fd attached. Its broker records are re-owned to the caller and
    /// its breaks go to `to_owner` (the caller's disconnected-open owner).
    DurableClaim {
        open_id: u64,
        to_owner: u64,
    },
    /// The answer to [`ToWorkerMsg::Surrender`]: the open given up (its fd
    /// attached), or None if the worker no longer holds it disconnected.
    /// Answered with `Bool`: false means nobody took it, and the worker keeps
    /// it.
    Surrendered {
        claim: u64,
        from_owner: u64,
        open: Option<Box<MovedOpen>>,
    },
    /// Open `open_id` is durable and the handle keeper holds its fd: if this
    /// worker dies, the supervisor keeps its broker records (share mode,
    /// oplock or lease, byte-range locks) for `timeout` instead of closing
    /// them, until a conflicting open purges it or a worker adopts it.
    DurableKept {
        key: Key,
        open_id: u64,
        timeout: Duration,
    },
    /// A worker rebuilding open `open_id` from the keeper takes over the
    /// records a dead worker left (`Resp::Adopted`), breaks going to
    /// `owner`.
    AdoptOrphan {
        key: Key,
        open_id: u64,
        owner: u64,
    },
    /// Failed-logon throttling is per client address across all workers:
    /// how much longer `addr` is refused (`Resp::Blocked`).
    LogonBlocked {
        addr: std::net::IpAddr,
    },
    /// A failed logon from `addr` (`Resp::Blocked`: the lockout it just
    /// started, if it did).
    LogonFailed {
        addr: std::net::IpAddr,
        limit: u32,
        window: Duration,
        lockout: Duration,
    },
    /// A successful logon from `addr` forgets its failures (`Resp::Unit`).
    LogonSucceeded {
        addr: std::net::IpAddr,
    },
}

/// Byte-range locks of one open: (offset, length, exclusive).
pub type Locks = Vec<(u64, u64, bool)>;

/// What a worker needs to rebuild a disconnected durable open another
/// worker gave up (the fd travels beside it as SCM_RIGHTS). The broker's
/// records of the open (share mode, oplock or lease, byte-range locks) stay
/// where they are, under the same open id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedOpen {
    /// Persistent and volatile FileId (and broker open id): they are equal.
    pub open_id: u64,
    pub key: Key,
    pub share: String,
    pub path: Vec<u8>,
    pub smb_name: String,
    pub is_dir: bool,
    pub access: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub position: u64,
    pub mode: u32,
    pub write_time: OpenWriteTime,
    pub stream: Option<String>,
    pub durable_v2: bool,
    pub create_guid: [u8; 16],
    pub client_guid: [u8; 16],
    pub timeout: Duration,
    pub share_access: u32,
    pub keeper_id: Option<u64>,
    /// Open.LockSequenceArray.
    pub lock_seq: Vec<u8>,
    /// The OFD-mirrored byte-range locks (offset, length, exclusive).
    pub ofd_locks: Locks,
    /// Time left before the disconnected open times out.
    pub remaining: Duration,
    /// Set by the supervisor: the open was being broken when it moved, so
    /// the claimant closes it (as the purge it missed would have).
    pub purge: bool,
    /// The kernel lease on the description (`kernel oplocks` shares): 0
    /// none, 1 read, 2 write. The claimant re-issues it on its own fd.
    pub kernel_lease: u8,
}

/// The answer to one [`Req`]; statuses as their NTSTATUS values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    Unit,
    Bool(bool),
    Count(u64),
    Status(Result<(), u32>),
    /// `open_with`: the granted level, or None for "wait"; and when granted,
    /// the file's `write_time` just after.
    Opened(Result<Option<u8>, u32>, Option<u64>),
    Level(u8),
    LevelResult(Result<u8, u32>),
    OptLevel(Option<u8>),
    OptStatus(Option<u32>),
    OptTime(Option<u64>),
    /// Time left before a break deadline (zero if it passed).
    Deadline(Option<Duration>),
    Close(WireClose),
    /// `close_deferring_wake`: the caller owes a `Wake` once it is done.
    CloseDeferred(WireClose, bool),
    WriteTime(OpenWriteTime),
    WriteTimeAnd(OpenWriteTime, Option<u64>),
    Path(Option<Vec<u8>>),
    Lease(Option<LeaseId>),
    File(Option<Key>),
    Grant(Option<WireGrant>),
    State(Result<u32, u32>),
    /// `DurableClaim`: the open taken over (its fd attached), if any.
    Moved(Option<Box<MovedOpen>>),
    /// `AdoptOrphan`: the open's oplock level and byte-range locks (offset,
    /// length, exclusive), if the broker still had it.
    Adopted(Option<(u8, Locks)>),
    /// `LogonBlocked` / `LogonFailed`.
    Blocked(Option<Duration>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToBroker {
    pub id: u64,
    pub req: Req,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorkerMsg {
    Reply {
        id: u64,
        resp: Resp,
    },
    /// An oplock break for an owner the worker registered.
    Break {
        owner: u64,
        open_id: u64,
        to: u8,
        lease: Option<WireLeaseNotice>,
    },
    /// Oplocks or locks of the key changed: wake the local waiters.
    Wake {
        key: Key,
    },
    /// Another worker claims disconnected durable open `open_id`: give it
    /// up and answer with `Req::Surrendered { claim, .. }`.
    Surrender {
        claim: u64,
        open_id: u64,
    },
}

impl ToWorkerMsg {
    pub fn from_notice(n: &BreakNotice) -> Self {
        ToWorkerMsg::Break {
            owner: n.owner,
            open_id: n.open_id,
            to: n.to.wire(),
            lease: n.lease.map(WireLeaseNotice::from),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerProtoError {
    #[error("unsupported broker protocol version {0}")]
    Version(u8),
    #[error("empty broker message")]
    Empty,
    #[error("malformed broker message: {0}")]
    Body(String),
}

pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    let out = vec![VERSION];
    // Serialising these plain types into a Vec cannot fail; an empty body
    // would be refused by the peer's decode rather than misread.
    match postcard::to_extend(m, out) {
        Ok(v) => v,
        Err(_) => vec![VERSION],
    }
}

pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, BrokerProtoError> {
    let (&v, body) = b.split_first().ok_or(BrokerProtoError::Empty)?;
    if v != VERSION {
        return Err(BrokerProtoError::Version(v));
    }
    postcard::from_bytes(body).map_err(|e| BrokerProtoError::Body(e.to_string()))
}

pub fn status(r: Result<(), NtStatus>) -> Result<(), u32> {
    r.map_err(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            dev: 1,
            ino: u64::MAX,
            stream: 7,
        }
    }

    #[test]
    fn round_trips() {
        let intent = WireIntent::from(&Intent::none());
        let reqs = [
            Req::OpenWith {
                key: key(),
                path: b"a/\xffb".to_vec(),
                open_id: 5,
                access: 0x1f01ff,
                share: 7,
                delete_on_close: true,
                intent,
            },
            Req::WriteTimeModified {
                key: key(),
                open: OpenWriteTime::default(),
                change: 1,
                pre_mtime: Some(9),
            },
            Req::HasOpenBelow { dir: vec![] },
            Req::CheckIo {
                key: key(),
                open_id: u64::MAX,
                offset: 0,
                length: 1,
                write: true,
            },
        ];
        for (id, req) in reqs.into_iter().enumerate() {
            let m = ToBroker { id: id as u64, req };
            assert_eq!(decode::<ToBroker>(&encode(&m)).unwrap(), m);
        }
        for m in [
            ToWorkerMsg::Reply {
                id: 3,
                resp: Resp::Opened(Err(0xC000_0043), Some(5)),
            },
            ToWorkerMsg::Reply {
                id: 4,
                resp: Resp::Deadline(Some(Duration::from_millis(35_000))),
            },
            ToWorkerMsg::Break {
                owner: 1 << 48,
                open_id: 2,
                to: 1,
                lease: Some(WireLeaseNotice {
                    key: [3; 16],
                    from: 7,
                    to: 1,
                    epoch: 9,
                    ack_required: true,
                }),
            },
            ToWorkerMsg::Wake { key: key() },
        ] {
            assert_eq!(decode::<ToWorkerMsg>(&encode(&m)).unwrap(), m);
        }
        assert_eq!(
            bytes_path(path_bytes("x/\u{e9}")),
            PathBuf::from("x/\u{e9}")
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode::<ToBroker>(&[]), Err(BrokerProtoError::Empty));
        assert_eq!(
            decode::<ToBroker>(&[VERSION + 1, 0]),
            Err(BrokerProtoError::Version(VERSION + 1))
        );
        let full = encode(&ToBroker {
            id: 1,
            req: Req::Lock {
                key: key(),
                open_id: 2,
                offset: 3,
                length: 4,
                exclusive: true,
            },
        });
        for n in 1..full.len() {
            assert!(decode::<ToBroker>(&full[..n]).is_err(), "prefix {n}");
        }
        assert!(decode::<ToBroker>(&[VERSION, 0xff, 0xff, 0xff]).is_err());
    }
}
