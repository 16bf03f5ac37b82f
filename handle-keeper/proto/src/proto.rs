//! The keeper's wire protocol (docs/keeper-protocol.md): one message per
//! SEQPACKET datagram, a fixed 12-byte header, little-endian fields. Pure
//! encoding and decoding; no I/O, so the codec can be unit-tested and fuzzed.

use std::fmt;

/// "HFKP" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"HFKP");
pub const HEADER_LEN: usize = 12;
/// Protocol versions this build speaks.
pub const MIN_VERSION: u16 = 1;
/// Version 2 adds Watch and the LeaseBreak notice (kernel leases of kept fds).
pub const MAX_VERSION: u16 = 2;
/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// At most this many lock lines are reported per handle.
pub const MAX_LOCK_LINES: usize = 256;

pub type Guid = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated")]
    Truncated,
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unknown opcode {0:#06x}")]
    UnknownOpcode(u16),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// How the open was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableKind {
    /// DHnQ (SMB 2.x durable handle).
    V1 = 1,
    /// DH2Q without the persistent flag.
    V2 = 2,
    /// DH2Q with SMB2_DHANDLE_FLAG_PERSISTENT on a CA share.
    Persistent = 3,
}

impl DurableKind {
    pub fn from_u8(v: u8) -> Option<DurableKind> {
        match v {
            1 => Some(DurableKind::V1),
            2 => Some(DurableKind::V2),
            3 => Some(DurableKind::Persistent),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DurableKind::V1 => "v1",
            DurableKind::V2 => "v2",
            DurableKind::Persistent => "persistent",
        }
    }
    /// V2 and persistent opens are bound to their CreateGUID.
    pub fn is_v2(self) -> bool {
        !matches!(self, DurableKind::V1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleState {
    /// A worker serves the open.
    Connected = 1,
    /// The client is gone; the timeout runs from `disconnected_at_ms`.
    Disconnected = 2,
}

impl HandleState {
    pub fn from_u8(v: u8) -> Option<HandleState> {
        match v {
            1 => Some(HandleState::Connected),
            2 => Some(HandleState::Disconnected),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            HandleState::Connected => "connected",
            HandleState::Disconnected => "disconnected",
        }
    }
}

/// Everything the keeper knows about one kept open. `id`, `state`,
/// `deposited_at_ms` and `disconnected_at_ms` are the keeper's; a depositor's
/// values for them are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub kind: DurableKind,
    pub state: HandleState,
    pub client_guid: Guid,
    /// All zero for v1 opens.
    pub create_guid: Guid,
    pub persistent_file_id: u64,
    pub lease_key: Option<Guid>,
    /// SMB2_LEASE_* bits (R=1, H=2, W=4) or 0.
    pub lease_state: u32,
    /// SMB2_OPLOCK_LEVEL_* of the open.
    pub oplock_level: u8,
    pub desired_access: u32,
    pub share_access: u32,
    pub uid: u32,
    /// The SMB user name the session authenticated as.
    pub user_name: String,
    pub share: String,
    /// Path relative to the share root, '/'-separated.
    pub path: String,
    /// Granted durable timeout in milliseconds.
    pub timeout_ms: u32,
    pub app_instance_id: Option<Guid>,
    pub client_addr: String,
    /// `name_to_handle_at` handle (persistent opens), opaque to the keeper.
    pub file_handle: Vec<u8>,
    pub deposited_at_ms: u64,
    pub disconnected_at_ms: Option<u64>,
}

impl Record {
    /// A record with every optional field empty; handy for callers and tests.
    pub fn new(kind: DurableKind, persistent_file_id: u64) -> Record {
        Record {
            id: 0,
            kind,
            state: HandleState::Connected,
            client_guid: [0; 16],
            create_guid: [0; 16],
            persistent_file_id,
            lease_key: None,
            lease_state: 0,
            oplock_level: 0,
            desired_access: 0,
            share_access: 0,
            uid: 0,
            user_name: String::new(),
            share: String::new(),
            path: String::new(),
            timeout_ms: 0,
            app_instance_id: None,
            client_addr: String::new(),
            file_handle: Vec::new(),
            deposited_at_ms: 0,
            disconnected_at_ms: None,
        }
    }
}

/// What a reconnecting worker presents (from the DHnC/DH2C create and the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// DHnC is `V1`; DH2C is `V2`, or `Persistent` when it carries the persistent flag.
    pub kind: DurableKind,
    pub persistent_file_id: u64,
    /// ClientGuid of the connection the reconnect arrived on.
    pub client_guid: Guid,
    /// From DH2C; ignored for `V1`.
    pub create_guid: Guid,
    /// Lease key of the request's lease context, if any.
    pub lease_key: Option<Guid>,
    pub uid: u32,
    pub user_name: String,
}

/// One lock line from /proc/locks on the kept file's inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    /// The line without its leading ordinal, e.g. "OFDLCK ADVISORY WRITE -1 08:01:42 0 EOF".
    pub text: String,
    /// Held through the kept open file description itself (from its fdinfo).
    pub own: bool,
}

/// A record plus what the kernel says about its fd (for List/Show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub record: Record,
    /// Time until the scavenger closes it; `None` while connected.
    pub time_left_ms: Option<u64>,
    /// `F_GETLEASE` on the kept fd: "none", "read", "write" or "unknown".
    pub kernel_lease: String,
    pub dev: u64,
    pub ino: u64,
    pub locks: Vec<LockLine>,
    /// Lock lines left out beyond MAX_LOCK_LINES.
    pub locks_omitted: u32,
}

/// Error codes; docs/keeper-protocol.md maps them to NT statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadMessage = 1,
    UnsupportedVersion = 2,
    NotAllowed = 3,
    NotFound = 4,
    UserMismatch = 5,
    Busy = 6,
    Internal = 7,
    NeedHello = 8,
    Exists = 9,
    MissingFd = 10,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match v {
            1 => BadMessage,
            2 => UnsupportedVersion,
            3 => NotAllowed,
            4 => NotFound,
            5 => UserMismatch,
            6 => Busy,
            7 => Internal,
            8 => NeedHello,
            9 => Exists,
            10 => MissingFd,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        min_version: u16,
        max_version: u16,
        client: String,
    },
    /// Carries exactly one fd.
    Deposit(Record),
    Fetch(FetchRequest),
    Disconnect {
        id: u64,
        /// Unix ms when the connection was lost; 0 = now.
        at_ms: u64,
    },
    Reconnected {
        id: u64,
    },
    Close {
        id: u64,
    },
    Purge {
        id: u64,
        reason: String,
    },
    List,
    Show {
        id: u64,
    },
    Evict {
        id: u64,
        reason: String,
    },
    /// Version 2: turns the connection into a one-way channel of
    /// [`Response::LeaseBreak`] notices (after a `Done`).
    Watch,
}

/// What the keeper did about a kernel lease break on a kept fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakAction {
    /// The handle was disconnected: the keeper purged it and released the
    /// lease; a worker still holding the open must close it.
    Purged = 1,
    /// The handle is connected: its worker must break the SMB holder (the
    /// signal reached the keeper because the worker had not yet taken the
    /// lease back).
    Forwarded = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    HelloOk {
        version: u16,
        keeper_pid: u32,
        /// Whether kept fds survive a keeper restart (systemd fd store present).
        fd_store: bool,
    },
    Deposited {
        id: u64,
    },
    /// Carries exactly one fd: the kept open file description.
    Fetched(Record),
    Done,
    ListItem(Entry),
    ListEnd {
        count: u32,
    },
    Shown(Entry),
    /// Version 2, unsolicited on a Watch connection (request id 0).
    LeaseBreak {
        id: u64,
        persistent_file_id: u64,
        action: BreakAction,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

mod op {
    pub const HELLO: u16 = 0x0001;
    pub const DEPOSIT: u16 = 0x0002;
    pub const FETCH: u16 = 0x0003;
    pub const DISCONNECT: u16 = 0x0004;
    pub const RECONNECTED: u16 = 0x0005;
    pub const CLOSE: u16 = 0x0006;
    pub const PURGE: u16 = 0x0007;
    pub const LIST: u16 = 0x0008;
    pub const SHOW: u16 = 0x0009;
    pub const EVICT: u16 = 0x000a;
    pub const WATCH: u16 = 0x000b;
    pub const HELLO_OK: u16 = 0x8001;
    pub const DEPOSITED: u16 = 0x8002;
    pub const FETCHED: u16 = 0x8003;
    pub const DONE: u16 = 0x8004;
    pub const LIST_ITEM: u16 = 0x8005;
    pub const LIST_END: u16 = 0x8006;
    pub const SHOWN: u16 = 0x8007;
    pub const LEASE_BREAK: u16 = 0x8008;
    pub const ERROR: u16 = 0x80ff;
}

// ---- encoding ----

struct W(Vec<u8>);

impl W {
    fn new(opcode: u16, request_id: u32) -> W {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.extend_from_slice(&opcode.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&request_id.to_le_bytes());
        W(v)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn guid(&mut self, g: &Guid) {
        self.0.extend_from_slice(g);
    }
    fn opt_guid(&mut self, g: &Option<Guid>) {
        match g {
            Some(g) => {
                self.u8(1);
                self.guid(g);
            }
            None => self.u8(0),
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    /// u16 length + bytes; longer input is cut at a char boundary below 64 KiB.
    fn bytes(&mut self, b: &[u8]) {
        let n = b.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.0.extend_from_slice(&b[..n]);
    }
    fn str(&mut self, s: &str) {
        let mut n = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes(&s.as_bytes()[..n]);
    }
    fn record(&mut self, r: &Record) {
        self.u64(r.id);
        self.u8(r.kind as u8);
        self.u8(r.state as u8);
        self.guid(&r.client_guid);
        self.guid(&r.create_guid);
        self.u64(r.persistent_file_id);
        self.opt_guid(&r.lease_key);
        self.u32(r.lease_state);
        self.u8(r.oplock_level);
        self.u32(r.desired_access);
        self.u32(r.share_access);
        self.u32(r.uid);
        self.str(&r.user_name);
        self.str(&r.share);
        self.str(&r.path);
        self.u32(r.timeout_ms);
        self.opt_guid(&r.app_instance_id);
        self.str(&r.client_addr);
        self.bytes(&r.file_handle);
        self.u64(r.deposited_at_ms);
        self.opt_u64(r.disconnected_at_ms);
    }
    fn entry(&mut self, e: &Entry) {
        self.record(&e.record);
        self.opt_u64(e.time_left_ms);
        self.str(&e.kernel_lease);
        self.u64(e.dev);
        self.u64(e.ino);
        let n = e.locks.len().min(MAX_LOCK_LINES);
        self.u16(n as u16);
        for l in &e.locks[..n] {
            self.str(&l.text);
            self.u8(l.own as u8);
        }
        self.u32(e.locks_omitted + (e.locks.len() - n) as u32);
    }
}

impl Request {
    pub fn encode(&self, request_id: u32) -> Vec<u8> {
        let mut w;
        match self {
            Request::Hello {
                min_version,
                max_version,
                client,
            } => {
                w = W::new(op::HELLO, request_id);
                w.u16(*min_version);
                w.u16(*max_version);
                w.str(client);
            }
            Request::Deposit(r) => {
                w = W::new(op::DEPOSIT, request_id);
                w.record(r);
            }
            Request::Fetch(f) => {
                w = W::new(op::FETCH, request_id);
                w.u8(f.kind as u8);
                w.u64(f.persistent_file_id);
                w.guid(&f.client_guid);
                w.guid(&f.create_guid);
                w.opt_guid(&f.lease_key);
                w.u32(f.uid);
                w.str(&f.user_name);
            }
            Request::Disconnect { id, at_ms } => {
                w = W::new(op::DISCONNECT, request_id);
                w.u64(*id);
                w.u64(*at_ms);
            }
            Request::Reconnected { id } => {
                w = W::new(op::RECONNECTED, request_id);
                w.u64(*id);
            }
            Request::Close { id } => {
                w = W::new(op::CLOSE, request_id);
                w.u64(*id);
            }
            Request::Purge { id, reason } => {
                w = W::new(op::PURGE, request_id);
                w.u64(*id);
                w.str(reason);
            }
            Request::List => w = W::new(op::LIST, request_id),
            Request::Show { id } => {
                w = W::new(op::SHOW, request_id);
                w.u64(*id);
            }
            Request::Evict { id, reason } => {
                w = W::new(op::EVICT, request_id);
                w.u64(*id);
                w.str(reason);
            }
            Request::Watch => w = W::new(op::WATCH, request_id),
        }
        w.0
    }

    /// Number of fds that must accompany this request.
    pub fn fd_count(&self) -> usize {
        matches!(self, Request::Deposit(_)) as usize
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Deposit(_) => "Deposit",
            Request::Fetch(_) => "Fetch",
            Request::Disconnect { .. } => "Disconnect",
            Request::Reconnected { .. } => "Reconnected",
            Request::Close { .. } => "Close",
            Request::Purge { .. } => "Purge",
            Request::List => "List",
            Request::Show { .. } => "Show",
            Request::Evict { .. } => "Evict",
            Request::Watch => "Watch",
        }
    }
}

impl Response {
    pub fn encode(&self, request_id: u32) -> Vec<u8> {
        let mut w;
        match self {
            Response::HelloOk {
                version,
                keeper_pid,
                fd_store,
            } => {
                w = W::new(op::HELLO_OK, request_id);
                w.u16(*version);
                w.u32(*keeper_pid);
                w.u8(*fd_store as u8);
            }
            Response::Deposited { id } => {
                w = W::new(op::DEPOSITED, request_id);
                w.u64(*id);
            }
            Response::Fetched(r) => {
                w = W::new(op::FETCHED, request_id);
                w.record(r);
            }
            Response::Done => w = W::new(op::DONE, request_id),
            Response::ListItem(e) => {
                w = W::new(op::LIST_ITEM, request_id);
                w.entry(e);
            }
            Response::ListEnd { count } => {
                w = W::new(op::LIST_END, request_id);
                w.u32(*count);
            }
            Response::Shown(e) => {
                w = W::new(op::SHOWN, request_id);
                w.entry(e);
            }
            Response::LeaseBreak {
                id,
                persistent_file_id,
                action,
            } => {
                w = W::new(op::LEASE_BREAK, request_id);
                w.u64(*id);
                w.u64(*persistent_file_id);
                w.u8(*action as u8);
            }
            Response::Error { code, message } => {
                w = W::new(op::ERROR, request_id);
                w.u16(*code as u16);
                w.str(message);
            }
        }
        w.0
    }

    /// Number of fds that accompany this response.
    pub fn fd_count(&self) -> usize {
        matches!(self, Response::Fetched(_)) as usize
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

// ---- decoding ----

struct R<'a> {
    b: &'a [u8],
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
    fn guid(&mut self) -> Result<Guid, DecodeError> {
        Ok(self.take(16)?.try_into().unwrap())
    }
    fn opt_guid(&mut self, what: &'static str) -> Result<Option<Guid>, DecodeError> {
        Ok(if self.bool(what)? {
            Some(self.guid()?)
        } else {
            None
        })
    }
    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        Ok(if self.bool(what)? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid(what))
    }
    fn kind(&mut self) -> Result<DurableKind, DecodeError> {
        DurableKind::from_u8(self.u8()?).ok_or(DecodeError::Invalid("durable kind"))
    }
    fn record(&mut self) -> Result<Record, DecodeError> {
        Ok(Record {
            id: self.u64()?,
            kind: self.kind()?,
            state: HandleState::from_u8(self.u8()?).ok_or(DecodeError::Invalid("state"))?,
            client_guid: self.guid()?,
            create_guid: self.guid()?,
            persistent_file_id: self.u64()?,
            lease_key: self.opt_guid("lease key flag")?,
            lease_state: self.u32()?,
            oplock_level: self.u8()?,
            desired_access: self.u32()?,
            share_access: self.u32()?,
            uid: self.u32()?,
            user_name: self.str("user name")?,
            share: self.str("share")?,
            path: self.str("path")?,
            timeout_ms: self.u32()?,
            app_instance_id: self.opt_guid("app instance flag")?,
            client_addr: self.str("client address")?,
            file_handle: self.bytes()?,
            deposited_at_ms: self.u64()?,
            disconnected_at_ms: self.opt_u64("disconnected-at flag")?,
        })
    }
    fn entry(&mut self) -> Result<Entry, DecodeError> {
        let record = self.record()?;
        let time_left_ms = self.opt_u64("time-left flag")?;
        let kernel_lease = self.str("kernel lease")?;
        let dev = self.u64()?;
        let ino = self.u64()?;
        let n = self.u16()? as usize;
        if n > MAX_LOCK_LINES {
            return Err(DecodeError::Invalid("lock count"));
        }
        let mut locks = Vec::with_capacity(n);
        for _ in 0..n {
            locks.push(LockLine {
                text: self.str("lock line")?,
                own: self.bool("lock owner flag")?,
            });
        }
        Ok(Entry {
            record,
            time_left_ms,
            kernel_lease,
            dev,
            ino,
            locks,
            locks_omitted: self.u32()?,
        })
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.b.len()))
        }
    }
}

/// Splits a message into (opcode, request id, body reader).
fn header(buf: &[u8]) -> Result<(u16, u32, R<'_>), DecodeError> {
    if buf.len() > MAX_MESSAGE {
        return Err(DecodeError::Invalid("message length"));
    }
    let mut r = R { b: buf };
    let magic = r.u32()?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let opcode = r.u16()?;
    let flags = r.u16()?;
    if flags != 0 {
        return Err(DecodeError::Invalid("header flags"));
    }
    let id = r.u32()?;
    Ok((opcode, id, r))
}

/// The request id of a message whose header is intact (to answer errors).
pub fn peek_request_id(buf: &[u8]) -> Option<u32> {
    header(buf).ok().map(|(_, id, _)| id)
}

impl Request {
    /// Decodes one request; returns it with its request id.
    pub fn decode(buf: &[u8]) -> Result<(Request, u32), DecodeError> {
        let (opcode, id, mut r) = header(buf)?;
        let req = match opcode {
            op::HELLO => Request::Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                client: r.str("client name")?,
            },
            op::DEPOSIT => Request::Deposit(r.record()?),
            op::FETCH => Request::Fetch(FetchRequest {
                kind: r.kind()?,
                persistent_file_id: r.u64()?,
                client_guid: r.guid()?,
                create_guid: r.guid()?,
                lease_key: r.opt_guid("lease key flag")?,
                uid: r.u32()?,
                user_name: r.str("user name")?,
            }),
            op::DISCONNECT => Request::Disconnect {
                id: r.u64()?,
                at_ms: r.u64()?,
            },
            op::RECONNECTED => Request::Reconnected { id: r.u64()? },
            op::CLOSE => Request::Close { id: r.u64()? },
            op::PURGE => Request::Purge {
                id: r.u64()?,
                reason: r.str("reason")?,
            },
            op::LIST => Request::List,
            op::SHOW => Request::Show { id: r.u64()? },
            op::EVICT => Request::Evict {
                id: r.u64()?,
                reason: r.str("reason")?,
            },
            op::WATCH => Request::Watch,
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        r.end()?;
        Ok((req, id))
    }
}

impl Response {
    /// Decodes one response; returns it with its request id.
    pub fn decode(buf: &[u8]) -> Result<(Response, u32), DecodeError> {
        let (opcode, id, mut r) = header(buf)?;
        let resp = match opcode {
            op::HELLO_OK => Response::HelloOk {
                version: r.u16()?,
                keeper_pid: r.u32()?,
                fd_store: r.bool("fd store flag")?,
            },
            op::DEPOSITED => Response::Deposited { id: r.u64()? },
            op::FETCHED => Response::Fetched(r.record()?),
            op::DONE => Response::Done,
            op::LIST_ITEM => Response::ListItem(r.entry()?),
            op::LIST_END => Response::ListEnd { count: r.u32()? },
            op::SHOWN => Response::Shown(r.entry()?),
            op::LEASE_BREAK => Response::LeaseBreak {
                id: r.u64()?,
                persistent_file_id: r.u64()?,
                action: match r.u8()? {
                    1 => BreakAction::Purged,
                    2 => BreakAction::Forwarded,
                    _ => return Err(DecodeError::Invalid("break action")),
                },
            },
            op::ERROR => {
                let raw = r.u16()?;
                Response::Error {
                    code: ErrorCode::from_u16(raw).ok_or(DecodeError::Invalid("error code"))?,
                    message: r.str("error message")?,
                }
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        r.end()?;
        Ok((resp, id))
    }
}

/// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in the GUID's mixed-endian text form.
pub fn guid_string(g: &Guid) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record() -> Record {
        Record {
            id: 42,
            kind: DurableKind::V2,
            state: HandleState::Disconnected,
            client_guid: [1; 16],
            create_guid: [2; 16],
            persistent_file_id: 0x1122_3344_5566_7788,
            lease_key: Some([3; 16]),
            lease_state: 7,
            oplock_level: 0xff,
            desired_access: 0x0012_019f,
            share_access: 7,
            uid: 1000,
            user_name: "smbtest".into(),
            share: "ca".into(),
            path: "dir/fïle.txt".into(),
            timeout_ms: 60_000,
            app_instance_id: None,
            client_addr: "127.0.0.1:50000".into(),
            file_handle: vec![9, 8, 7],
            deposited_at_ms: 1_700_000_000_000,
            disconnected_at_ms: Some(1_700_000_001_000),
        }
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Hello {
                min_version: 1,
                max_version: 3,
                client: "smbd worker 0".into(),
            },
            Request::Deposit(sample_record()),
            Request::Fetch(FetchRequest {
                kind: DurableKind::Persistent,
                persistent_file_id: 5,
                client_guid: [4; 16],
                create_guid: [5; 16],
                lease_key: None,
                uid: 0,
                user_name: "root".into(),
            }),
            Request::Disconnect { id: 1, at_ms: 99 },
            Request::Reconnected { id: 2 },
            Request::Close { id: 3 },
            Request::Purge {
                id: 4,
                reason: "conflict".into(),
            },
            Request::List,
            Request::Show { id: 6 },
            Request::Evict {
                id: 7,
                reason: "stuck client".into(),
            },
            Request::Watch,
        ]
    }

    fn sample_entry() -> Entry {
        Entry {
            record: sample_record(),
            time_left_ms: Some(1234),
            kernel_lease: "read".into(),
            dev: 0x801,
            ino: 77,
            locks: vec![LockLine {
                text: "OFDLCK ADVISORY WRITE -1 08:01:77 0 EOF".into(),
                own: true,
            }],
            locks_omitted: 0,
        }
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::HelloOk {
                version: 1,
                keeper_pid: 123,
                fd_store: true,
            },
            Response::Deposited { id: 9 },
            Response::Fetched(sample_record()),
            Response::Done,
            Response::ListItem(sample_entry()),
            Response::ListEnd { count: 1 },
            Response::Shown(sample_entry()),
            Response::LeaseBreak {
                id: 3,
                persistent_file_id: 0x55,
                action: BreakAction::Purged,
            },
            Response::LeaseBreak {
                id: 4,
                persistent_file_id: 0x56,
                action: BreakAction::Forwarded,
            },
            Response::error(ErrorCode::UserMismatch, "user differs"),
        ]
    }

    #[test]
    fn requests_round_trip() {
        for (i, req) in all_requests().into_iter().enumerate() {
            let buf = req.encode(i as u32 + 10);
            assert_eq!(&buf[..4], b"HFKP");
            let (back, id) = Request::decode(&buf).unwrap();
            assert_eq!(back, req);
            assert_eq!(id, i as u32 + 10);
        }
    }

    #[test]
    fn responses_round_trip() {
        for (i, resp) in all_responses().into_iter().enumerate() {
            let buf = resp.encode(i as u32);
            let (back, id) = Response::decode(&buf).unwrap();
            assert_eq!(back, resp);
            assert_eq!(id, i as u32);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for req in all_requests() {
            let buf = req.encode(1);
            for n in 0..buf.len() {
                assert!(
                    Request::decode(&buf[..n]).is_err(),
                    "{} cut at {n}",
                    req.name()
                );
            }
        }
        for resp in all_responses() {
            let buf = resp.encode(1);
            for n in 0..buf.len() {
                assert!(Response::decode(&buf[..n]).is_err());
            }
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut buf = Request::Close { id: 1 }.encode(5);
        buf.push(0);
        assert_eq!(Request::decode(&buf), Err(DecodeError::Trailing(1)));
        let mut buf = Request::List.encode(5);
        buf[0] = b'X';
        assert!(matches!(
            Request::decode(&buf),
            Err(DecodeError::BadMagic(_))
        ));
        let mut buf = Request::List.encode(5);
        buf[4] = 0x77;
        assert_eq!(
            Request::decode(&buf),
            Err(DecodeError::UnknownOpcode(0x0077))
        );
        // A response opcode is not a request.
        assert!(Request::decode(&Response::Done.encode(1)).is_err());
        let mut buf = Request::Deposit(sample_record()).encode(1);
        buf[HEADER_LEN + 8] = 9; // durable kind
        assert_eq!(
            Request::decode(&buf),
            Err(DecodeError::Invalid("durable kind"))
        );
        let mut buf = Request::Hello {
            min_version: 1,
            max_version: 1,
            client: "ab".into(),
        }
        .encode(1);
        let n = buf.len();
        buf[n - 1] = 0xff; // not UTF-8
        assert_eq!(
            Request::decode(&buf),
            Err(DecodeError::Invalid("client name"))
        );
        assert_eq!(peek_request_id(&Request::List.encode(77)), Some(77));
        assert!(Request::decode(&vec![0u8; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let mut r = sample_record();
        r.path = "é".repeat(40_000); // 80 000 bytes
        let (back, _) = Request::decode(&Request::Deposit(r).encode(1)).unwrap();
        let Request::Deposit(back) = back else {
            panic!()
        };
        assert_eq!(back.path.len(), 65_534);
    }

    #[test]
    fn guid_text_form() {
        let g: Guid = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(guid_string(&g), "00112233-4455-6677-8899-aabbccddeeff");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                    opcode in 0u16..12, reply in proptest::bool::ANY) {
            let opcode = if reply { 0x8000 | opcode } else { opcode };
            let mut buf = W::new(opcode, 1).0;
            buf.extend_from_slice(&body);
            let _ = Request::decode(&buf);
            let _ = Response::decode(&buf);
            let _ = Request::decode(&body);
        }

        #[test]
        fn records_round_trip(id in proptest::num::u64::ANY, fid in proptest::num::u64::ANY,
                              kind in 1u8..4, lease in proptest::option::of(proptest::array::uniform16(proptest::num::u8::ANY)),
                              path in ".{0,40}", timeout in proptest::num::u32::ANY,
                              at in proptest::option::of(proptest::num::u64::ANY)) {
            let mut r = sample_record();
            r.id = id;
            r.persistent_file_id = fid;
            r.kind = DurableKind::from_u8(kind).unwrap();
            r.lease_key = lease;
            r.path = path;
            r.timeout_ms = timeout;
            r.disconnected_at_ms = at;
            let req = Request::Deposit(r);
            let (back, _) = Request::decode(&req.encode(3)).unwrap();
            proptest::prop_assert_eq!(back, req);
        }
    }
}
