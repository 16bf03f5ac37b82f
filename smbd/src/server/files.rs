//! Opens and the file commands: CREATE, CLOSE, READ, WRITE, FLUSH, LOCK, IOCTL.

use super::conn::{Connection, Ctx, Reply};
use super::durable::{self, Ask};
use super::kernel_oplock;
use super::pending::{AsyncWork, Attempt, Gate, PendingKind};
use super::state::{ServerState, Share};
use crate::fsa::broker::{FileKey, Opened};
use crate::fsa::lease::LeaseId;
use crate::fsa::names;
use crate::fsa::oplock::{Intent, Level};
use crate::fsa::types::{access, action, attr, disposition, options, FileMeta};
use crate::fsa::writetime::{Change, OpenWriteTime};
use crate::posix::locks::OfdMirror;
use crate::posix::{self, CreateMode, DirMode, OpenRequest};
use crate::wire::close::{CloseRequest, CloseResponse};
use crate::wire::create::{
    CreateContext, CreateRequest, CreateResponse, DurableHandleResponse, DurableHandleResponseV2,
    LeaseContext,
};
use crate::wire::ioctl::{IoctlRequest, IoctlResponse};
use crate::wire::lock::{LockRequest, LockResponse};
use crate::wire::rw::{ReadRequest, ReadResponse, WriteRequest, WriteResponse};
use crate::wire::simple::FlushRequest;
use crate::wire::{FileId, NtStatus};
use bytes::{BufMut, BytesMut};
use kmod_interface::identity::Identity;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// State of a directory enumeration on an open.
#[derive(Default)]
pub struct DirCursor {
    pub entries: Vec<(String, FileMeta)>,
    pub next: usize,
    pub pattern: Option<String>,
}

/// An SMB open: one FileId, backed by one open file description.
pub struct Open {
    pub fid: FileId,
    pub session_id: u64,
    pub tree_id: u32,
    pub share: Arc<Share>,
    pub fd: Arc<OwnedFd>,
    pub key: FileKey,
    /// Share-relative path at open time (the broker tracks renames).
    pub path: PathBuf,
    /// The name as the client sent it, for name queries.
    pub smb_name: String,
    pub is_dir: bool,
    pub access: u32,
    pub identity: Arc<Identity>,
    pub position: u64,
    pub mode: u32,
    pub dir: Option<DirCursor>,
    /// This handle's part in LastWriteTime updates (the file's is in the broker).
    pub write_time: OpenWriteTime,
    /// Named stream of the file this open is on (its stored spelling).
    pub stream: Option<String>,
    /// Set for a durable open: it survives the loss of its connection.
    pub durable: Option<super::durable::Durable>,
    /// Lock sequence numbers of successful LOCK requests, by index
    /// (MS-SMB2 3.3.5.14), so that a replayed request is not applied twice.
    pub lock_seq: LockSequences,
    /// `posix locking = yes`: the OFD mirror of this open's byte-range locks.
    pub ofd: Option<Arc<OfdMirror>>,
}

/// Open.LockSequenceArray: 64 entries, each a 4-bit number or invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSequences([u8; 64]);

impl Default for LockSequences {
    fn default() -> Self {
        LockSequences([LockSequences::INVALID; 64])
    }
}

impl LockSequences {
    const INVALID: u8 = 0xFF;

    fn slot(seq: u32) -> Option<usize> {
        let index = (seq >> 4) as usize;
        (1..=64).contains(&index).then(|| index - 1)
    }

    /// True if `seq` repeats a request that already succeeded; otherwise
    /// its entry is invalidated until the request succeeds again.
    pub fn replayed(&mut self, seq: u32) -> bool {
        let Some(i) = Self::slot(seq) else {
            return false;
        };
        if self.0[i] == (seq & 0xF) as u8 {
            return true;
        }
        self.0[i] = Self::INVALID;
        false
    }

    /// The array as bytes (to move an open to another worker).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// The array [`Self::to_bytes`] wrote; all invalid if `b` is malformed.
    pub fn from_bytes(b: &[u8]) -> LockSequences {
        <[u8; 64]>::try_from(b).map_or_else(|_| LockSequences::default(), LockSequences)
    }

    pub fn succeeded(&mut self, seq: u32) {
        if let Some(i) = Self::slot(seq) {
            self.0[i] = (seq & 0xF) as u8;
        }
    }
}

/// What the READ/WRITE paths take from an open.
struct DataOpen {
    key: FileKey,
    oid: u64,
    fd: Arc<OwnedFd>,
    id: Arc<Identity>,
    access: u32,
}

/// Runs a file-system call on a blocking thread as `id`, mapping errors to NTSTATUS.
pub async fn fs<T, F>(id: Arc<Identity>, f: F) -> Result<T, NtStatus>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || posix::run_as(&id, f)).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) | Ok(Err(e)) => Err(posix::errors::errno_to_status(&e)),
        Err(_) => Err(NtStatus::INTERNAL_ERROR),
    }
}

const VALID_ATTRS: u32 = 0x0003_7FB7;
/// Largest end of file Windows accepts for a write (NTFS MAXFILESIZE).
const MAX_FILE_SIZE: u64 = 0x0000_0FFF_FFFF_0000;
const DATA_WRITE: u32 = access::FILE_WRITE_DATA | access::FILE_APPEND_DATA;
const DATA_READ: u32 = access::FILE_READ_DATA | access::FILE_EXECUTE;
/// Bits a read-only tree refuses.
const WRITE_BITS: u32 = access::FILE_WRITE_DATA
    | access::FILE_APPEND_DATA
    | access::FILE_WRITE_EA
    | access::FILE_WRITE_ATTRIBUTES
    | access::DELETE
    | access::WRITE_DAC
    | access::WRITE_OWNER
    | access::FILE_DELETE_CHILD;

struct Created {
    fd: Arc<OwnedFd>,
    meta: FileMeta,
    action: u32,
    access: u32,
}

impl Connection {
    /// Looks up an open by FileId for this request's session and tree.
    pub fn open_mut(&mut self, ctx: &Ctx<'_>, fid: FileId) -> Result<&mut Open, NtStatus> {
        let (sid, tid) = (ctx.hdr.session_id, ctx.hdr.tree_id());
        match self.opens.get_mut(&fid.volatile) {
            Some(o)
                if o.fid.persistent == fid.persistent
                    && o.session_id == sid
                    && o.tree_id == tid =>
            {
                Ok(o)
            }
            _ => Err(NtStatus::FILE_CLOSED),
        }
    }

    /// An open that may move data: not a directory, and granted one of `need`.
    fn data_open(&mut self, ctx: &Ctx<'_>, fid: FileId, need: u32) -> Result<DataOpen, NtStatus> {
        let open = self.open_mut(ctx, fid)?;
        if open.is_dir {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        if open.access & need == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        Ok(DataOpen {
            key: open.key,
            oid: open.fid.volatile,
            fd: open.fd.clone(),
            id: open.identity.clone(),
            access: open.access,
        })
    }

    /// Closes every open matching `pred` (logoff, tree disconnect, teardown).
    pub async fn close_opens_where(&mut self, pred: impl Fn(&Open) -> bool) {
        for o in self.take_opens_where(pred) {
            self.close_open(o).await;
        }
    }

    /// Removes the opens matching `pred` from the table, ending requests
    /// pending on them.
    fn take_opens_where(&mut self, pred: impl Fn(&Open) -> bool) -> Vec<Open> {
        let ids: Vec<u64> = self
            .opens
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(o) = self.opens.remove(&id) {
                self.end_pending_on_file(id);
                out.push(o);
            }
        }
        out
    }

    /// Like [`Connection::close_opens_where`], but durable opens that still
    /// hold their batch oplock are kept for a reconnect (connection loss,
    /// session reconnect, logoff).
    pub async fn disconnect_opens_where(&mut self, pred: impl Fn(&Open) -> bool) {
        for o in self.take_opens_where(pred) {
            let kept = o.durable.as_ref().and_then(|d| d.keeper_id);
            match super::durable::disconnect(&self.st, o) {
                Ok(()) => {
                    if let (Some(kid), Some(k)) = (kept, self.st.keeper.as_ref()) {
                        k.disconnect(kid).await;
                    }
                }
                Err(o) => self.close_open(*o).await,
            }
        }
    }

    /// Releases an open in the broker, stores a held LastWriteTime on the
    /// last close and performs a pending delete.
    pub async fn close_open(&self, open: Open) {
        close_open_in(&self.st, open).await;
    }

    pub async fn create(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = CreateRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        debug!(name = %req.name, access = format_args!("{:#x}", req.desired_access), disposition = req.create_disposition, options = format_args!("{:#x}", req.create_options), "create");
        let tree = self.tree(ctx)?;
        let (share, tree_ro, tree_id) = (tree.share.clone(), tree.read_only, tree.id);
        let user = self
            .sessions
            .get(&ctx.hdr.session_id)
            .and_then(|s| s.user.clone())
            .ok_or(NtStatus::USER_SESSION_DELETED)?;
        if share.is_ipc() {
            return self.pipe_create(ctx, &req, tree_id);
        }
        // A durable reconnect ignores everything but its context (MS-SMB2 3.3.5.9.7).
        let ask = durable::parse(&req.contexts, self.neg.dialect >= 0x0300)?;
        if ask.is_reconnect() {
            return self.durable_reconnect(ctx, &req, ask).await;
        }
        validate_create(&req)?;
        let max_opens = self.st.config.global.limits.max_opens_per_session;
        if self.opens.len() >= max_opens {
            let sid = ctx.hdr.session_id;
            if self.opens.values().filter(|o| o.session_id == sid).count() >= max_opens {
                warn!(sid, limit = max_opens, "too many opens on this session");
                return Err(NtStatus::TOO_MANY_OPENED_FILES);
            }
        }
        let parsed = names::smb_path_to_components(&req.name)?;
        if let Some(stream) = parsed.stream.clone() {
            let c = super::streams::StreamCreate {
                share,
                identity: user.identity.clone(),
                tree_ro,
                tree_id,
            };
            return self.create_stream(ctx, &req, &parsed, stream, c).await;
        }
        let rel = names::components_to_unix(&parsed.components);
        let mut want = access::map_generic(req.desired_access);
        if tree_ro
            && (want & WRITE_BITS != 0
                || req.create_disposition != disposition::OPEN
                || req.create_options & options::DELETE_ON_CLOSE != 0)
        {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let identity = user.identity.clone();
        let root_share = share.clone();
        let rel2 = rel.clone();
        let (disp, opts, attrs) = (
            req.create_disposition,
            req.create_options,
            req.file_attributes,
        );
        let opts = super::streams::default_stream_options(&parsed, opts)?;
        // AllocationSize of a created or overwritten file (MS-SMB2 3.3.5.9).
        let alloc_size =
            CreateContext::find(&req.contexts, crate::wire::create::ctx::ALLOCATION_SIZE)
                .map(|c| crate::wire::create::decode_allocation_size(&c.data))
                .transpose()
                .map_err(|_| NtStatus::INVALID_PARAMETER)?
                .filter(|s| *s > 0);
        let trailing = parsed.trailing_slash;
        let is_root_path = parsed.components.is_empty();
        let st = self.st.clone();
        let share_access = req.share_access;
        let max_allowed = want & access::MAXIMUM_ALLOWED != 0;
        want &= !access::MAXIMUM_ALLOWED;
        let id2 = identity.clone();
        // Phase 1: find out what exists, matching names case-insensitively.
        let (existing, rel, parent_key) = fs(identity.clone(), move || {
            let root = root_share
                .root
                .as_ref()
                .ok_or_else(|| io::Error::from_raw_os_error(libc_enoent()))?;
            let probe = |p: &std::path::Path| posix::open(root, p, &OpenRequest::probe());
            let rel = match probe(&rel2) {
                Ok(o) => return Ok((Some(o), rel2, None)),
                Err(e) if e.raw_os_error() == Some(libc_enoent()) => {
                    posix::resolve_case(root, &rel2, crate::fsa::wildcard::names_equal)?
                }
                Err(e) => return Err(e),
            };
            if rel != rel2 {
                if let Ok(o) = probe(&rel) {
                    return Ok((Some(o), rel, None));
                }
            }
            // Distinguish a missing name from a missing parent directory.
            let parent = rel
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            match probe(&parent) {
                Ok(p) if p.meta.is_dir() => {
                    let key = FileKey {
                        dev: p.meta.dev,
                        ino: p.meta.ino,
                        stream: 0,
                    };
                    Ok((None, rel, Some(key)))
                }
                Ok(_) => Err(io::Error::from_raw_os_error(libc_enotdir())),
                Err(e) if e.raw_os_error() == Some(libc_enoent()) => {
                    Err(io::Error::from_raw_os_error(libc_enotdir()))
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|s| {
            if s == NtStatus::OBJECT_NAME_NOT_FOUND {
                NtStatus::OBJECT_PATH_NOT_FOUND
            } else {
                s
            }
        })?;

        let open_id = self.st.next_file_id();
        let mut granted: Level;
        // The file's LastWriteTime as the broker holds it, read with the grant.
        let held_at_open: Option<u64>;
        let lease_id;
        let created = match existing {
            Some(probe) => {
                let meta = probe.meta.clone();
                let is_dir = meta.is_dir();
                if disp == disposition::CREATE {
                    return Err(NtStatus::OBJECT_NAME_COLLISION);
                }
                if opts & options::DIRECTORY_FILE != 0 && !is_dir {
                    return Err(NtStatus::NOT_A_DIRECTORY);
                }
                if opts & options::NON_DIRECTORY_FILE != 0 && is_dir {
                    return Err(NtStatus::FILE_IS_A_DIRECTORY);
                }
                if trailing && !is_dir {
                    return Err(NtStatus::OBJECT_NAME_INVALID);
                }
                let overwrite = matches!(
                    disp,
                    disposition::OVERWRITE | disposition::OVERWRITE_IF | disposition::SUPERSEDE
                );
                match disp {
                    disposition::CREATE => return Err(NtStatus::OBJECT_NAME_COLLISION),
                    _ if overwrite && is_dir => return Err(NtStatus::INVALID_PARAMETER),
                    _ => {}
                }
                // DELETE is the parent directory's to grant (write and search,
                // sticky rule): checked here so that a delete-on-close the file
                // system would refuse fails at open instead of silently at
                // close (an anonymous reauth made smbtorture reauth5 loop).
                let deleting = max_allowed
                    || want & access::DELETE != 0
                    || opts & options::DELETE_ON_CLOSE != 0;
                let may_delete = if deleting {
                    let (root, p, owner) = (share.clone(), rel.clone(), meta.uid);
                    fs(identity.clone(), move || match root.root.as_ref() {
                        Some(r) => posix::may_delete(r, &p, owner),
                        None => Ok(false),
                    })
                    .await?
                } else {
                    true
                };
                if !may_delete
                    && (want & access::DELETE != 0 || opts & options::DELETE_ON_CLOSE != 0)
                {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if max_allowed {
                    want |= crate::fsa::security::maximal_access(
                        identity.uid,
                        &identity.groups,
                        &meta,
                        identity.uid == 0,
                        may_delete,
                    );
                }
                if overwrite {
                    want |= access::FILE_WRITE_DATA;
                    if meta.attributes & attr::HIDDEN != 0 && attrs & attr::HIDDEN == 0
                        || meta.attributes & attr::SYSTEM != 0 && attrs & attr::SYSTEM == 0
                    {
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                }
                if meta.attributes & attr::READONLY != 0 {
                    if opts & options::DELETE_ON_CLOSE != 0 {
                        return Err(NtStatus::CANNOT_DELETE);
                    }
                    if want & DATA_WRITE != 0 && !is_dir {
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                }
                if opts & options::DELETE_ON_CLOSE != 0 && is_root_path {
                    return Err(NtStatus::CANNOT_DELETE);
                }
                let key = FileKey {
                    dev: meta.dev,
                    ino: meta.ino,
                    stream: 0,
                };
                let lease_req =
                    self.lease_request(req.requested_oplock_level, &req.contexts, is_dir);
                lease_id = lease_req.map(|l| l.id);
                let intent = Intent {
                    lease: lease_req,
                    ..self.oplock_intent(&share, req.requested_oplock_level, disp, is_dir)
                };
                let (opened, held) = st.broker.open_with_time(
                    key,
                    rel.clone(),
                    open_id,
                    want,
                    share_access,
                    opts & options::DELETE_ON_CLOSE != 0,
                    &intent,
                )?;
                let Opened::Granted(level) = opened else {
                    return Ok(self.wait_for_oplock_break(ctx, key));
                };
                granted = level;
                held_at_open = held;
                let read = want & DATA_READ != 0 && !is_dir;
                let write = want & DATA_WRITE != 0 && !is_dir;
                let kernel = kernel_oplock::enabled(&share) && (read || write);
                // Another open of this lease key may lend its fd (and so its
                // kernel lease); otherwise kernel leases our new fd would
                // break are released first.
                let shared = lease_id
                    .filter(|_| kernel)
                    .and_then(|id| st.kernel.dup_for(key, id, read, write));
                let sharing = shared.is_some();
                if kernel && !sharing {
                    st.kernel.before_open(&st, key, write);
                }
                let wait_id = id2.clone();
                let reopen = fs(id2, move || {
                    let fd = if let Some(fd) = shared {
                        posix::check_access(probe.fd.as_fd(), read, write)?;
                        fd
                    } else if read || write {
                        match posix::reopen_nowait(probe.fd.as_fd(), read, write) {
                            Ok(fd) => fd,
                            // A lease of a local process or NFS client is
                            // being broken: wait without blocking the
                            // connection, then run the CREATE again.
                            Err(e) if e.raw_os_error() == Some(nix::libc::EWOULDBLOCK) => {
                                return Ok(Err(probe.fd));
                            }
                            Err(e) => return Err(e),
                        }
                    } else if is_dir {
                        posix::reopen(probe.fd.as_fd(), true, false)?
                    } else {
                        probe.fd
                    };
                    if overwrite {
                        posix::set_size(fd.as_fd(), 0)?;
                        posix::streams::remove_all(fd.as_fd())?;
                        posix::set_attributes(
                            fd.as_fd(),
                            (attrs & attr::SETTABLE) | attr::ARCHIVE,
                        )?;
                        if let Some(size) = alloc_size {
                            posix::allocate(fd.as_fd(), size)?;
                        }
                    }
                    let meta = posix::stat(fd.as_fd())?;
                    Ok(Ok((fd, meta)))
                })
                .await;
                let (fd, meta) = match reopen {
                    Ok(Ok(v)) => v,
                    Ok(Err(path_fd)) => {
                        st.broker.close(key, open_id);
                        return Ok(self.wait_for_local_lease(ctx, path_fd, wait_id, read, write));
                    }
                    Err(s) => {
                        st.broker.close(key, open_id);
                        return Err(s);
                    }
                };
                let fd = Arc::new(fd);
                match lease_id {
                    Some(id) if sharing => st.kernel.add_sharer(&st, key, id, open_id, &fd),
                    _ if kernel => {
                        st.kernel.after_open(&st, key, open_id, &fd);
                        granted = st.broker.oplock_level(key, open_id);
                    }
                    _ => {}
                }
                let act = match disp {
                    disposition::SUPERSEDE => action::SUPERSEDED,
                    disposition::OVERWRITE | disposition::OVERWRITE_IF => action::OVERWRITTEN,
                    _ => action::OPENED,
                };
                Created {
                    fd,
                    meta,
                    action: act,
                    access: want,
                }
            }
            None => {
                if matches!(disp, disposition::OPEN | disposition::OVERWRITE) {
                    return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
                }
                let dir = opts & options::DIRECTORY_FILE != 0;
                if dir && !matches!(disp, disposition::CREATE | disposition::OPEN_IF) {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                // A lease key leases one file: a new file cannot take it.
                if let Some(id) = self
                    .lease_request(req.requested_oplock_level, &req.contexts, false)
                    .map(|l| l.id)
                {
                    if st.broker.lease_file(id).is_some() {
                        return Err(NtStatus::INVALID_PARAMETER);
                    }
                }
                if trailing && !dir {
                    return Err(NtStatus::OBJECT_NAME_INVALID);
                }
                if attrs & attr::READONLY != 0 && opts & options::DELETE_ON_CLOSE != 0 {
                    return Err(NtStatus::CANNOT_DELETE);
                }
                if max_allowed {
                    want |= access::FILE_ALL_ACCESS;
                }
                let read = want & DATA_READ != 0 && !dir;
                let write = want & DATA_WRITE != 0 && !dir;
                let root_share = share.clone();
                let rel3 = rel.clone();
                let o = fs(identity.clone(), move || {
                    let root = root_share
                        .root
                        .as_ref()
                        .ok_or_else(|| io::Error::from_raw_os_error(libc_enoent()))?;
                    let req = OpenRequest {
                        read,
                        write,
                        append_only: false,
                        // Another client may create the name first; then OPEN_IF opens it.
                        create: if disp == disposition::CREATE {
                            CreateMode::CreateNew
                        } else {
                            CreateMode::OpenOrCreate
                        },
                        truncate: false,
                        directory: if dir {
                            DirMode::MustBeDir
                        } else {
                            DirMode::MustNotBeDir
                        },
                        mode: if dir { 0o777 } else { 0o666 },
                        attributes: (attrs & attr::SETTABLE) | if dir { 0 } else { attr::ARCHIVE },
                    };
                    let mut o = posix::open(root, &rel3, &req)?;
                    if let (Some(size), true) = (alloc_size, o.created && !dir) {
                        posix::allocate(o.fd.as_fd(), size)?;
                        o.meta = posix::stat(o.fd.as_fd())?;
                    }
                    Ok(o)
                })
                .await?;
                let key = FileKey {
                    dev: o.meta.dev,
                    ino: o.meta.ino,
                    stream: 0,
                };
                // A fresh file has no oplocks to break (another client
                // racing to create it just gets none or level II).
                let intent = Intent {
                    may_break: false,
                    lease: self.lease_request(req.requested_oplock_level, &req.contexts, dir),
                    ..self.oplock_intent(&share, req.requested_oplock_level, disp, dir)
                };
                lease_id = intent.lease.map(|l| l.id);
                let (opened, held) = st.broker.open_with_time(
                    key,
                    rel.clone(),
                    open_id,
                    want,
                    share_access,
                    opts & options::DELETE_ON_CLOSE != 0,
                    &intent,
                )?;
                held_at_open = held;
                granted = match opened {
                    Opened::Granted(level) => level,
                    Opened::Wait => return Err(NtStatus::SHARING_VIOLATION),
                };
                let fd = Arc::new(o.fd);
                if kernel_oplock::enabled(&share) && !dir {
                    st.kernel.after_open(&st, key, open_id, &fd);
                    granted = st.broker.oplock_level(key, open_id);
                }
                info!(path = %rel.display(), dir, created = o.created, "created");
                if let (true, Some(pk)) = (o.created, parent_key) {
                    if st.broker.has_dir_leases() {
                        let except = intent.lease.and_then(|l| l.parent.map(|p| (l.id.0, p)));
                        st.broker.break_dir_leases(pk, except);
                    }
                }
                Created {
                    fd,
                    meta: o.meta,
                    action: if o.created {
                        action::CREATED
                    } else {
                        action::OPENED
                    },
                    access: want,
                }
            }
        };
        let mut meta = created.meta;
        let key = FileKey {
            dev: meta.dev,
            ino: meta.ino,
            stream: 0,
        };
        if let Some(t) = held_at_open {
            meta.last_write_time = t;
        }
        let fid = FileId {
            persistent: open_id,
            volatile: open_id,
        };
        let mut ctxs = reply_contexts(&req.contexts, &meta, &identity, tree_ro, share.serial);
        if granted != Level::NoOplock {
            debug!(fid = open_id, level = ?granted, "oplock granted");
        }
        let lease_ctx = lease_id.and_then(|id| self.lease_context(key, id));
        if let Some(c) = lease_ctx.clone() {
            ctxs.push(c);
        }
        let handle_lease = lease_id
            .and_then(|id| self.st.broker.lease_grant(key, id))
            .is_some_and(|g| g.state & crate::fsa::lease::H != 0);
        let mut durable = self.grant_durable(
            ask,
            &share,
            granted == Level::Batch || handle_lease,
            meta.is_dir(),
            share_access,
        );
        if let Some(d) = &durable {
            debug!(
                fid = open_id,
                v2 = d.v2,
                timeout_ms = d.timeout.as_millis() as u64,
                "durable"
            );
            ctxs.push(if d.v2 {
                DurableHandleResponseV2 {
                    timeout: u32::try_from(d.timeout.as_millis()).unwrap_or(u32::MAX),
                    flags: 0,
                }
                .context()
            } else {
                DurableHandleResponse.context()
            });
        }
        let resp = CreateResponse {
            oplock_level: granted.response_level(lease_ctx.is_some()),
            flags: 0,
            create_action: created.action,
            creation_time: meta.creation_time,
            last_access_time: meta.last_access_time,
            last_write_time: meta.last_write_time,
            change_time: meta.change_time,
            allocation_size: if meta.is_dir() { 0 } else { meta.allocation },
            end_of_file: if meta.is_dir() { 0 } else { meta.size },
            file_attributes: meta.attributes,
            file_id: fid,
            contexts: ctxs,
        };
        let fd = created.fd;
        let ofd =
            (!meta.is_dir() && posix_locking(&share)).then(|| Arc::new(OfdMirror::new(fd.clone())));
        if let (Some(d), Some(k)) = (durable.as_mut(), self.st.keeper.as_ref()) {
            let mut rec = keeper_record(d, fid, created.access, &user, &share, &rel, &self.peer);
            // A lease-based handle is bound to its lease (ClientGuid and key):
            // the keeper checks both on a reconnect (MS-SMB2 3.3.5.9.12).
            if let Some(id) = self.st.broker.open_lease(key, open_id) {
                rec.lease_key = Some(id.1);
                rec.lease_state = self.st.broker.lease_grant(key, id).map_or(0, |g| g.state);
                rec.oplock_level = crate::fsa::oplock::WIRE_LEASE;
            }
            d.keeper_id = k.deposit(&rec, fd.as_fd()).await;
            if d.keeper_id.is_some() {
                self.st.broker.durable_kept(key, open_id, d.timeout);
            }
        }
        self.opens.insert(
            open_id,
            Open {
                fid,
                session_id: ctx.hdr.session_id,
                tree_id,
                share,
                fd,
                key,
                path: rel,
                smb_name: req.name.clone(),
                is_dir: meta.is_dir(),
                access: created.access,
                identity,
                position: 0,
                mode: opts
                    & (options::WRITE_THROUGH
                        | options::SEQUENTIAL_ONLY
                        | options::NO_INTERMEDIATE_BUFFERING
                        | options::SYNCHRONOUS_IO_ALERT
                        | options::SYNCHRONOUS_IO_NONALERT
                        | options::DELETE_ON_CLOSE),
                dir: None,
                write_time: OpenWriteTime::default(),
                stream: None,
                durable,
                lock_seq: LockSequences::default(),
                ofd,
            },
        );
        ctx.related_fid = Some(fid);
        debug!(fid = open_id, name = %req.name, "opened");
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    /// Whether a new open becomes durable (MS-SMB2 3.3.5.9.6, 3.3.5.9.10):
    /// asked for, on a file (not a directory) of a share that allows it, and
    /// holding a batch oplock or a handle-caching lease. Persistent handles
    /// are never granted.
    fn grant_durable(
        &self,
        ask: Ask,
        share: &Share,
        caches_handle: bool,
        is_dir: bool,
        share_access: u32,
    ) -> Option<durable::Durable> {
        let create_guid = match ask {
            Ask::V1 => [0; 16],
            Ask::V2 { create_guid, .. } => create_guid,
            _ => return None,
        };
        let allowed = share
            .conf
            .as_ref()
            .is_some_and(|c| c.durable_handles.unwrap_or(true));
        if !allowed || is_dir || !caches_handle {
            return None;
        }
        let g = &self.st.config.global;
        Some(durable::Durable {
            v2: matches!(ask, Ask::V2 { .. }),
            create_guid,
            client_guid: self.neg.client_guid,
            timeout: durable::granted_timeout(ask, g.durable_timeout, g.durable_max_timeout),
            share_access,
            keeper_id: None,
        })
    }

    /// DHnC / DH2C: reattaches a disconnected durable open to this session
    /// and tree (MS-SMB2 3.3.5.9.7, 3.3.5.9.12). The name, access, share
    /// mode and options of the request are ignored; the open keeps its file
    /// description, locks, position and oplock.
    async fn durable_reconnect(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &CreateRequest,
        ask: Ask,
    ) -> Result<Reply, NtStatus> {
        let file_id = match ask {
            Ask::ReconnectV1 { file_id } | Ask::ReconnectV2 { file_id, .. } => file_id,
            _ => return Err(NtStatus::INTERNAL_ERROR),
        };
        let tree = self.tree(ctx)?;
        let (share, tree_ro, tree_id) = (tree.share.clone(), tree.read_only, tree.id);
        let user = self
            .sessions
            .get(&ctx.hdr.session_id)
            .and_then(|s| s.user.clone())
            .ok_or(NtStatus::USER_SESSION_DELETED)?;
        let lease = CreateContext::find(&req.contexts, crate::wire::create::ctx::REQUEST_LEASE)
            .map(|c| {
                let key = LeaseContext::decode(&c.data)
                    .map(|l| l.key)
                    .unwrap_or_default();
                (self.neg.client_guid, key)
            });
        // Another worker may hold it: a client that comes back with a new
        // ClientGuid is routed by that GUID, not to the open's worker.
        if !self.st.durable.contains(file_id.persistent) {
            durable::claim(&self.st, file_id.persistent).await;
        }
        if !self.st.durable.contains(file_id.persistent) && self.st.keeper.is_some() {
            return self
                .keeper_reconnect(ctx, req, ask, file_id, &share, tree_ro, tree_id, &user)
                .await;
        }
        let st = self.st.clone();
        let (mut open, level) = durable::reclaim(&self.st, file_id.persistent, self.conn_id, |o| {
            let held = st.broker.open_lease(o.key, o.fid.volatile);
            durable::check_reconnect(o, ask, user.identity.uid, &share.name, lease, held)?;
            // A lease belongs to a file name (MS-SMB2 3.3.5.9.7).
            let same_name = |a: &str, b: &str| {
                a.trim_start_matches('\\')
                    .eq_ignore_ascii_case(b.trim_start_matches('\\'))
            };
            if held.is_some() && !same_name(&req.name, &o.smb_name) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            Ok(())
        })
        .inspect_err(|status| {
            info!(fid = file_id.persistent, user = %user.name, ?status, "durable reconnect refused")
        })?;
        if self.st.kernel.lost_lease(&open.fd) {
            // A local open broke the kernel lease while the open was
            // disconnected (the keeper purges it; its notice is on the way).
            info!(
                fid = file_id.persistent,
                "durable reconnect refused: the kernel lease was broken"
            );
            self.close_open(open).await;
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        open.session_id = ctx.hdr.session_id;
        open.tree_id = tree_id;
        if let (Some(kid), Some(k)) = (
            open.durable.as_ref().and_then(|d| d.keeper_id),
            self.st.keeper.as_ref(),
        ) {
            k.reconnected(kid).await;
        }
        self.st.kernel.reclaimed(&self.st, &open.fd);
        let fd = open.fd.clone();
        let mut meta = match fs(open.identity.clone(), move || posix::stat(fd.as_fd())).await {
            Ok(m) => m,
            Err(status) => {
                warn!(
                    fid = file_id.persistent,
                    ?status,
                    "reconnected durable open cannot be read; closing it"
                );
                self.close_open(open).await;
                return Err(status);
            }
        };
        if let Some(t) = self.st.broker.write_time(open.key) {
            meta.last_write_time = t;
        }
        let fid = open.fid;
        info!(fid = fid.persistent, path = %open.path.display(), user = %user.name, "durable open reconnected");
        let mut contexts =
            reply_contexts(&req.contexts, &meta, &open.identity, tree_ro, share.serial);
        let lease_ctx = self
            .st
            .broker
            .open_lease(open.key, open.fid.volatile)
            .and_then(|id| self.lease_context(open.key, id));
        contexts.extend(lease_ctx.clone());
        let resp = CreateResponse {
            oplock_level: level.response_level(lease_ctx.is_some()),
            flags: 0,
            create_action: action::OPENED,
            creation_time: meta.creation_time,
            last_access_time: meta.last_access_time,
            last_write_time: meta.last_write_time,
            change_time: meta.change_time,
            allocation_size: if meta.is_dir() { 0 } else { meta.allocation },
            end_of_file: if meta.is_dir() { 0 } else { meta.size },
            file_attributes: meta.attributes,
            file_id: fid,
            contexts,
        };
        self.opens.insert(fid.volatile, open);
        ctx.related_fid = Some(fid);
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    /// A reconnect for an open this process does not know: the worker that
    /// had it died (or smbd restarted). The keeper checks the bindings and
    /// hands back the very open file description; the open is rebuilt around
    /// it and registered with the broker again. If another open of the file
    /// exists by now, it would have purged the handle: it is purged now.
    #[allow(clippy::too_many_arguments)]
    async fn keeper_reconnect(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &CreateRequest,
        ask: Ask,
        file_id: FileId,
        share: &Arc<Share>,
        tree_ro: bool,
        tree_id: u32,
        user: &super::session::User,
    ) -> Result<Reply, NtStatus> {
        use holdfast_keeper_proto::{DurableKind, ErrorCode, FetchRequest};
        let Some(keeper) = self.st.keeper.as_ref() else {
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        };
        // The request's lease key goes to the keeper, which binds a leased
        // handle to it and to the ClientGuid.
        let lease_key = CreateContext::find(&req.contexts, crate::wire::create::ctx::REQUEST_LEASE)
            .map(|c| {
                LeaseContext::decode(&c.data)
                    .map(|l| l.key)
                    .unwrap_or_default()
            });
        let (kind, create_guid) = match ask {
            Ask::ReconnectV2 { create_guid, .. } => (DurableKind::V2, create_guid),
            _ => (DurableKind::V1, [0; 16]),
        };
        let fetch = FetchRequest {
            kind,
            persistent_file_id: file_id.persistent,
            client_guid: self.neg.client_guid,
            create_guid,
            lease_key,
            uid: user.identity.uid,
            user_name: user.name.clone(),
        };
        let (rec, fd) = keeper.fetch(&fetch).await.map_err(|e| {
            info!(fid = file_id.persistent, user = %user.name, error = %e, "keeper refused the durable reconnect");
            match e.code() {
                Some(ErrorCode::UserMismatch | ErrorCode::NotAllowed) => NtStatus::ACCESS_DENIED,
                _ => NtStatus::OBJECT_NAME_NOT_FOUND,
            }
        })?;
        // A lease-based handle gets its lease back (the supervisor's broker
        // dropped it with the dead worker's opens): same key, the state the
        // record holds, the version and epoch of the request's context. The
        // keeper has checked the key and the ClientGuid.
        let lease = match rec.lease_key {
            None => None,
            Some(key) if self.leasing() => {
                let l = CreateContext::find(&req.contexts, crate::wire::create::ctx::REQUEST_LEASE)
                    .and_then(|c| LeaseContext::decode(&c.data).ok());
                let v2 = l.and_then(|l| l.v2).filter(|_| self.neg.dialect >= 0x0300);
                Some(crate::fsa::lease::LeaseRequest {
                    id: (self.neg.client_guid, key),
                    state: rec.lease_state,
                    v2: v2.is_some(),
                    epoch: v2.map_or(0, |v| v.epoch),
                    parent: None,
                })
            }
            Some(_) => {
                info!(
                    fid = file_id.persistent,
                    "a lease-based durable handle needs leasing on the connection"
                );
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
            }
        };
        let open_id = rec.persistent_file_id;
        if !rec.share.eq_ignore_ascii_case(&share.name)
            || open_id != file_id.persistent
            || self.opens.contains_key(&open_id)
        {
            info!(fid = open_id, share = %rec.share, "kept handle is for another share or FileId in use");
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        let fd = Arc::new(fd);
        let ofd_fd = fd.clone();
        let f2 = fd.clone();
        let meta = fs(user.identity.clone(), move || posix::stat(f2.as_fd())).await?;
        let key = FileKey {
            dev: meta.dev,
            ino: meta.ino,
            stream: 0,
        };
        let path = PathBuf::from(&rec.path);
        // The supervisor may have kept the dead worker's records of the open
        // (share mode, oplock or lease, byte-range locks): take them over.
        if let Some((level, locks)) = self.st.broker.adopt_orphan(key, open_id, self.conn_id) {
            info!(
                fid = open_id,
                locks = locks.len(),
                "the broker kept the dead worker's open; adopted"
            );
            let mirror =
                posix_locking(share).then(|| Arc::new(OfdMirror::with_locks(ofd_fd, &locks)));
            return self
                .keeper_rebuilt(
                    ctx,
                    req,
                    &rec,
                    fd,
                    key,
                    meta,
                    level,
                    mirror,
                    (share, tree_ro, tree_id, user),
                )
                .await;
        }
        let requested = if lease.is_some() {
            crate::fsa::oplock::WIRE_LEASE
        } else {
            Level::Batch.wire()
        };
        let intent = Intent {
            may_break: false,
            lease,
            ..self.oplock_intent(share, requested, disposition::OPEN, false)
        };
        let opened = self.st.broker.open_with(
            key,
            path.clone(),
            open_id,
            rec.desired_access,
            rec.share_access,
            false,
            &intent,
        );
        // The lease must come back caching handles: an open that would have
        // taken H away (a sharing conflict) would have purged the handle.
        // One that took only W (compatible sharing) would not have, and the
        // lease comes back without W then.
        let lease_back = |id| {
            self.st
                .broker
                .lease_grant(key, id)
                .is_some_and(|g| g.state & crate::fsa::lease::H != 0)
        };
        let restored = match (&opened, lease) {
            (Ok(Opened::Granted(_)), Some(l)) => lease_back(l.id),
            (Ok(Opened::Granted(Level::Batch)), None) => true,
            _ => false,
        };
        match opened {
            _ if restored => {}
            other => {
                if matches!(other, Ok(Opened::Granted(_))) {
                    self.st.broker.close(key, open_id);
                }
                info!(fid = open_id, path = %rec.path, "the file was opened since the worker died; kept handle purged");
                keeper
                    .purge(rec.id, "the file was opened while the handle had no worker")
                    .await;
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
            }
        }
        // The description may still carry the dead worker's mirrored locks;
        // they stay until close (the broker lost them with the worker).
        let mirror = posix_locking(share).then(|| Arc::new(OfdMirror::new(ofd_fd)));
        let level = if lease.is_some() {
            Level::NoOplock
        } else {
            Level::Batch
        };
        self.keeper_rebuilt(
            ctx,
            req,
            &rec,
            fd,
            key,
            meta,
            level,
            mirror,
            (share, tree_ro, tree_id, user),
        )
        .await
    }

    /// The end of [`Self::keeper_reconnect`]: the broker holds the open
    /// again (`level`, or a lease); reports the reconnect to the keeper and
    /// answers.
    #[allow(clippy::too_many_arguments)]
    async fn keeper_rebuilt(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &CreateRequest,
        rec: &holdfast_keeper_proto::Record,
        fd: Arc<OwnedFd>,
        key: FileKey,
        mut meta: FileMeta,
        level: Level,
        ofd: Option<Arc<OfdMirror>>,
        (share, tree_ro, tree_id, user): (&Arc<Share>, bool, u32, &super::session::User),
    ) -> Result<Reply, NtStatus> {
        let open_id = rec.persistent_file_id;
        let timeout = std::time::Duration::from_millis(u64::from(rec.timeout_ms));
        if let Some(keeper) = self.st.keeper.as_ref() {
            // The keeper purged the handle (a local open broke its kernel
            // lease) between the fetch and now.
            if !keeper.reconnected(rec.id).await {
                self.st.broker.close(key, open_id);
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
            }
        }
        self.st.broker.durable_kept(key, open_id, timeout);
        // The keeper held the description's kernel lease while no worker
        // did; this worker takes it (and its breaks) back, which may lower
        // the grant.
        let mut level = level;
        if kernel_oplock::enabled(share) {
            self.st.kernel.after_open(&self.st, key, open_id, &fd);
            level = self.st.broker.oplock_level(key, open_id);
        }
        if let Some(t) = self.st.broker.write_time(key) {
            meta.last_write_time = t;
        }
        let fid = FileId {
            persistent: open_id,
            volatile: open_id,
        };
        info!(fid = open_id, path = %rec.path, user = %user.name, keeper_id = rec.id, "durable open rebuilt from the handle keeper");
        let mut contexts =
            reply_contexts(&req.contexts, &meta, &user.identity, tree_ro, share.serial);
        let lease_ctx = self
            .st
            .broker
            .open_lease(key, open_id)
            .and_then(|id| self.lease_context(key, id));
        contexts.extend(lease_ctx.clone());
        let resp = CreateResponse {
            oplock_level: level.response_level(lease_ctx.is_some()),
            flags: 0,
            create_action: action::OPENED,
            creation_time: meta.creation_time,
            last_access_time: meta.last_access_time,
            last_write_time: meta.last_write_time,
            change_time: meta.change_time,
            allocation_size: meta.allocation,
            end_of_file: meta.size,
            file_attributes: meta.attributes,
            file_id: fid,
            contexts,
        };
        self.opens.insert(
            open_id,
            Open {
                fid,
                session_id: ctx.hdr.session_id,
                tree_id,
                share: share.clone(),
                fd,
                key,
                path: PathBuf::from(&rec.path),
                smb_name: rec.path.replace('/', "\\"),
                is_dir: false,
                access: rec.desired_access,
                identity: user.identity.clone(),
                position: 0,
                mode: 0,
                dir: None,
                write_time: OpenWriteTime::default(),
                stream: None,
                durable: Some(durable::Durable {
                    v2: rec.kind.is_v2(),
                    create_guid: rec.create_guid,
                    client_guid: rec.client_guid,
                    timeout,
                    share_access: rec.share_access,
                    keeper_id: Some(rec.id),
                }),
                lock_seq: LockSequences::default(),
                ofd,
            },
        );
        ctx.related_fid = Some(fid);
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    pub async fn close(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = CloseRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        self.open_mut(ctx, fid)?;
        let mut open = self
            .opens
            .remove(&fid.volatile)
            .ok_or(NtStatus::FILE_CLOSED)?;
        ctx.related_fid = Some(fid);
        self.end_pending_on_file(fid.volatile);
        let mut resp = CloseResponse::default();
        if req.flags & 1 != 0 {
            // The time to report, with this handle's owed update applied
            // (closing the open below applies it otherwise).
            let held = self
                .st
                .broker
                .write_time_close(open.key, &mut open.write_time);
            let fd = open.fd.clone();
            if let Ok(m) = fs(open.identity.clone(), move || posix::stat(fd.as_fd())).await {
                resp = CloseResponse {
                    flags: 1,
                    creation_time: m.creation_time,
                    last_access_time: m.last_access_time,
                    last_write_time: held.unwrap_or(m.last_write_time),
                    change_time: m.change_time,
                    allocation_size: if m.is_dir() { 0 } else { m.allocation },
                    end_of_file: if m.is_dir() { 0 } else { m.size },
                    file_attributes: m.attributes,
                };
            }
        }
        self.close_open(open).await;
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    pub async fn flush(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = FlushRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        let st = self.st.clone();
        let open = self.open_mut(ctx, fid)?;
        ctx.related_fid = Some(fid);
        if open.access & DATA_WRITE == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let (fd, id) = (open.fd.clone(), open.identity.clone());
        st.broker.write_time_flush(open.key, &mut open.write_time);
        fs(id, move || posix::fsync(fd.as_fd())).await?;
        let mut b = Reply::buf();
        b.put_u16_le(4);
        b.put_u16_le(0);
        Reply::ok(b)
    }

    pub async fn read(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = ReadRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        self.check_charge(&ctx.hdr, u64::from(req.length))?;
        if req.length > self.neg.max_read {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if req
            .offset
            .checked_add(u64::from(req.length))
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let fid = ctx.fid(req.file_id);
        if self.open_mut(ctx, fid)?.stream.is_some() {
            return self.read_stream(ctx, fid, &req).await;
        }
        let DataOpen {
            key, oid, fd, id, ..
        } = self.data_open(ctx, fid, DATA_READ)?;
        ctx.related_fid = Some(fid);
        self.st
            .broker
            .check_io(key, oid, req.offset, u64::from(req.length), false)?;
        let (len, off) = (req.length as usize, req.offset);
        let data = fs(id, move || {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                let n = posix::read_at(fd.as_fd(), &mut buf[got..], off + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await?;
        if (data.is_empty() && req.length > 0) || data.len() < req.minimum_count as usize {
            return Err(NtStatus::END_OF_FILE);
        }
        if let Some(o) = self.opens.get_mut(&fid.volatile) {
            o.position = off + data.len() as u64;
        }
        let mut b = BytesMut::with_capacity(crate::wire::HEADER_LEN + 16 + data.len());
        b.resize(crate::wire::HEADER_LEN, 0);
        ReadResponse::encode_header(&mut b, data.len() as u32, 0, 0);
        b.put_slice(&data);
        Reply::ok(b)
    }

    pub async fn write(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let (req, range) =
            WriteRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let data = ctx.msg[range].to_vec();
        self.check_charge(&ctx.hdr, data.len() as u64)?;
        if data.len() > self.neg.max_write as usize {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let fid = ctx.fid(req.file_id);
        if self.open_mut(ctx, fid)?.stream.is_some() {
            return self.write_stream(ctx, fid, &req, data).await;
        }
        let DataOpen {
            key,
            oid,
            fd,
            id,
            access: open_access,
        } = self.data_open(ctx, fid, DATA_WRITE)?;
        ctx.related_fid = Some(fid);
        // All-ones means "at end of file", but only for append-only handles (MS-SMB2 3.3.5.13).
        let append = req.offset == u64::MAX && open_access & access::FILE_WRITE_DATA == 0;
        if !append {
            let end = req.offset.checked_add(data.len() as u64);
            let past_max = !data.is_empty() && end.is_some_and(|e| e > MAX_FILE_SIZE);
            if end.is_none_or(|e| e > i64::MAX as u64) || past_max {
                return Err(NtStatus::INVALID_PARAMETER);
            }
        }
        if !append {
            self.st
                .broker
                .check_io(key, oid, req.offset, data.len() as u64, true)?;
        }
        self.break_level2_oplocks(key, oid);
        let off = req.offset;
        let n = data.len();
        let hold = self.st.broker.write_time_needs_hold(key);
        let (end, pre_mtime) = fs(id, move || {
            let pre = if append || hold {
                Some(posix::stat(fd.as_fd())?)
            } else {
                None
            };
            let start = match (&pre, append) {
                (Some(m), true) => m.size,
                _ => off,
            };
            let mut done = 0;
            while done < data.len() {
                done += posix::write_at(fd.as_fd(), &data[done..], start + done as u64)?;
            }
            Ok((start + done as u64, pre.map(|m| m.last_write_time)))
        })
        .await?;
        if let Some(o) = self.opens.get_mut(&fid.volatile) {
            o.position = end;
            self.st
                .broker
                .write_time_modified(key, &mut o.write_time, Change::Write, pre_mtime);
        }
        let mut b = Reply::buf();
        WriteResponse {
            count: n as u32,
            remaining: 0,
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    pub async fn lock(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        use crate::wire::lock::flags::{
            EXCLUSIVE as LOCKFLAG_EXCLUSIVE_LOCK, FAIL_IMMEDIATELY as LOCKFLAG_FAIL_IMMEDIATELY,
            SHARED as LOCKFLAG_SHARED_LOCK, UNLOCK as LOCKFLAG_UNLOCK,
        };
        let req = LockRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        // Lock sequences are checked for durable opens and, as Samba does,
        // for every open of a multichannel-capable connection.
        let check_seq = self.neg.dialect != 0x0202
            && self.neg.server_caps & crate::wire::negotiate::GLOBAL_CAP_MULTI_CHANNEL != 0;
        let seq = req.lock_sequence;
        let (key, oid, ofd) = {
            let o = self.open_mut(ctx, fid)?;
            if (check_seq || o.durable.is_some()) && o.lock_seq.replayed(seq) {
                debug!(
                    fid = o.fid.volatile,
                    seq, "lock request replayed; not applied again"
                );
                ctx.related_fid = Some(fid);
                return Ok(lock_reply());
            }
            (o.key, o.fid.volatile, o.ofd.clone())
        };
        ctx.related_fid = Some(fid);
        let unlocking = req
            .locks
            .first()
            .is_some_and(|l| l.flags & LOCKFLAG_UNLOCK != 0);
        if !unlocking {
            // Byte-range locks end level II caching (MS-FSA 2.1.4.12).
            self.break_level2_oplocks(key, oid);
        }
        let mut taken: Vec<(u64, u64)> = Vec::new();
        for l in &req.locks {
            let f = l.flags;
            let result = if unlocking {
                if f != LOCKFLAG_UNLOCK {
                    Err(NtStatus::INVALID_PARAMETER)
                } else {
                    release_lock(&self.st, key, oid, ofd.as_deref(), l.offset, l.length)
                }
            } else {
                let kind = f & !LOCKFLAG_FAIL_IMMEDIATELY;
                let bad_kind = kind != LOCKFLAG_SHARED_LOCK && kind != LOCKFLAG_EXCLUSIVE_LOCK;
                // Blocking locks come one at a time (MS-SMB2 3.3.5.14).
                let blocking_in_list = req.locks.len() > 1 && f & LOCKFLAG_FAIL_IMMEDIATELY == 0;
                if bad_kind || blocking_in_list {
                    Err(NtStatus::INVALID_PARAMETER)
                } else {
                    grant_lock(
                        &self.st,
                        key,
                        oid,
                        ofd.as_deref(),
                        l.offset,
                        l.length,
                        kind == LOCKFLAG_EXCLUSIVE_LOCK,
                    )
                }
            };
            let blocking = !unlocking && req.locks.len() == 1 && f & LOCKFLAG_FAIL_IMMEDIATELY == 0;
            if blocking && result == Err(NtStatus::LOCK_NOT_GRANTED) {
                // A blocking lock waits until the conflicting locks go away.
                let l = *l;
                let st = self.st.clone();
                let gate = Gate::default();
                let g = gate.clone();
                let exclusive = f & LOCKFLAG_EXCLUSIVE_LOCK != 0;
                let ofd = ofd.clone();
                self.async_work = Some(AsyncWork::new(
                    PendingKind::Lock,
                    Some(oid),
                    gate,
                    async move {
                        loop {
                            let n = st
                                .broker
                                .unlock_notify(key)
                                .ok_or(NtStatus::RANGE_NOT_LOCKED)?;
                            let released = n.notified();
                            tokio::pin!(released);
                            released.as_mut().enable();
                            let attempt = g.attempt(|| {
                                match grant_lock(
                                    &st,
                                    key,
                                    oid,
                                    ofd.as_deref(),
                                    l.offset,
                                    l.length,
                                    exclusive,
                                ) {
                                    Err(NtStatus::LOCK_NOT_GRANTED) => None,
                                    r => Some(r),
                                }
                            });
                            match attempt {
                                Attempt::Done(r) => {
                                    r?;
                                    debug!(
                                        offset = l.offset,
                                        len = l.length,
                                        "blocked lock granted"
                                    );
                                    return Ok(lock_reply());
                                }
                                Attempt::Cancelled => return Err(NtStatus::CANCELLED),
                                // A local lock's release wakes nobody: poll.
                                Attempt::Again if ofd.is_some() => {
                                    tokio::select! {
                                        _ = released => {}
                                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                                    }
                                }
                                Attempt::Again => released.await,
                            }
                        }
                    },
                ));
                return Ok(lock_reply());
            }
            match result {
                Ok(()) => taken.push((l.offset, l.length)),
                Err(s) => {
                    if !unlocking {
                        for (o, len) in taken {
                            let _ = release_lock(&self.st, key, oid, ofd.as_deref(), o, len);
                        }
                    }
                    return Err(s);
                }
            }
        }
        if let Some(o) = self.opens.get_mut(&oid) {
            if check_seq || o.durable.is_some() {
                o.lock_seq.succeeded(seq);
            }
        }
        Ok(lock_reply())
    }

    pub async fn ioctl(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        use crate::wire::ioctl::fsctl;
        use crate::wire::ioctl::fsctl::{
            DFS_GET_REFERRALS as FSCTL_DFS_GET_REFERRALS,
            VALIDATE_NEGOTIATE_INFO as FSCTL_VALIDATE_NEGOTIATE_INFO,
        };
        use crate::wire::ioctl::{ValidateNegotiateInfoRequest, ValidateNegotiateInfoResponse};
        let req = IoctlRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        if req.flags & 1 == 0 {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        match req.ctl_code {
            FSCTL_VALIDATE_NEGOTIATE_INFO => {
                if self.neg.dialect == 0x0311 {
                    warn!("VALIDATE_NEGOTIATE_INFO on 3.1.1; terminating");
                    self.terminate = true;
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let v = ValidateNegotiateInfoRequest::decode(&req.input)
                    .map_err(|_| NtStatus::INVALID_PARAMETER)?;
                // A request forwarded from another channel validates that
                // channel's negotiation.
                let neg = self
                    .foreign
                    .as_ref()
                    .map_or(&self.neg, |f| &*f.route.neg)
                    .clone();
                let ok = v.capabilities == neg.client_caps
                    && v.guid == neg.client_guid
                    && v.security_mode == neg.client_security_mode
                    && v.dialects == neg.client_dialects;
                if !ok {
                    warn!("VALIDATE_NEGOTIATE_INFO mismatch: possible downgrade; terminating");
                    self.terminate = true;
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if req.max_output_response < 24 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let out = ValidateNegotiateInfoResponse {
                    capabilities: neg.server_caps,
                    guid: self.st.guid,
                    security_mode: neg.server_security_mode,
                    dialect: neg.dialect,
                }
                .encode();
                let mut b = Reply::buf();
                IoctlResponse {
                    ctl_code: req.ctl_code,
                    file_id: req.file_id,
                    input: Vec::new(),
                    output: out,
                    flags: 0,
                }
                .encode(&mut b);
                Reply::ok(b)
            }
            FSCTL_DFS_GET_REFERRALS => Err(NtStatus::FS_DRIVER_REQUIRED),
            fsctl::CREATE_OR_GET_OBJECT_ID | fsctl::GET_OBJECT_ID => {
                let fid = ctx.fid(req.file_id);
                let open = self.open_mut(ctx, fid)?;
                let (fd, id, serial) = (open.fd.clone(), open.identity.clone(), open.share.serial);
                ctx.related_fid = Some(fid);
                if req.max_output_response < OBJECT_ID_BUFFER_LEN {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let meta = fs(id, move || posix::stat(fd.as_fd())).await?;
                let mut b = Reply::buf();
                IoctlResponse {
                    ctl_code: req.ctl_code,
                    file_id: req.file_id,
                    input: Vec::new(),
                    output: object_id_buffer(meta.file_id, serial),
                    flags: 0,
                }
                .encode(&mut b);
                Reply::ok(b)
            }
            _ => {
                let fid = ctx.fid(req.file_id);
                if self.open_mut(ctx, fid).is_ok() {
                    ctx.related_fid = Some(fid);
                    Err(NtStatus::INVALID_DEVICE_REQUEST)
                } else {
                    Err(NtStatus::NOT_SUPPORTED)
                }
            }
        }
    }
}

/// Releases an open in the broker (of a connection, or a disconnected
/// durable one),, stores a held LastWriteTime on the
/// last close and performs a pending delete.
/// `posix locking = yes` on this share (default: no, Holdfast's SMB locks
/// stay inside the server).
pub(super) fn posix_locking(share: &Share) -> bool {
    share
        .conf
        .as_ref()
        .and_then(|c| c.posix_locking)
        .unwrap_or(false)
}

/// Takes an SMB byte-range lock in the broker and, with `posix locking`, on
/// the open file description; a range a local process (or NFS) holds
/// refuses it with LOCK_NOT_GRANTED and leaves the broker as it was.
fn grant_lock(
    st: &ServerState,
    key: FileKey,
    oid: u64,
    ofd: Option<&OfdMirror>,
    offset: u64,
    length: u64,
    exclusive: bool,
) -> Result<(), NtStatus> {
    st.broker.lock(key, oid, offset, length, exclusive)?;
    let Some(m) = ofd else {
        return Ok(());
    };
    match m.lock(offset, length, exclusive) {
        Ok(()) => Ok(()),
        Err(e) if crate::posix::locks::is_conflict(&e) => {
            let _ = st.broker.unlock(key, oid, offset, length);
            debug!(
                offset,
                length, exclusive, "byte-range lock held locally (posix locking)"
            );
            Err(NtStatus::LOCK_NOT_GRANTED)
        }
        Err(e) => {
            warn!(offset, length, error = %e, "could not mirror a byte-range lock as an OFD lock");
            Ok(())
        }
    }
}

/// Releases an SMB byte-range lock in the broker and its OFD mirror.
fn release_lock(
    st: &ServerState,
    key: FileKey,
    oid: u64,
    ofd: Option<&OfdMirror>,
    offset: u64,
    length: u64,
) -> Result<(), NtStatus> {
    st.broker.unlock(key, oid, offset, length)?;
    if let Some(m) = ofd {
        m.unlock(offset, length);
    }
    Ok(())
}

pub async fn close_open_in(st: &ServerState, mut open: Open) {
    if let Some(m) = &open.ofd {
        m.release_all();
    }
    if let (Some(kid), Some(k)) = (
        open.durable.as_ref().and_then(|d| d.keeper_id),
        st.keeper.as_ref(),
    ) {
        k.close(kid).await;
    }
    let written = open.write_time.written();
    let parent_lease = st.broker.lease_parent(open.key, open.fid.volatile);
    // Before the broker forgets the open, so that an open waiting for it
    // does not find our kernel lease still there.
    st.kernel.forget(&open.fd);
    let (outcome, wake) = st
        .broker
        .close_open(open.key, open.fid.volatile, &mut open.write_time);
    if (written || outcome.delete.is_some()) && st.broker.has_dir_leases() {
        break_parent_leases(st, &open, parent_lease).await;
    }
    if let (Some(t), None) = (outcome.write_time, outcome.delete.as_ref()) {
        let fd = open.fd.clone();
        let r = fs(open.identity.clone(), move || {
            if posix::stat(fd.as_fd())?.last_write_time != t {
                posix::set_times(fd.as_fd(), None, None, Some(t), None)?;
            }
            Ok(())
        })
        .await;
        if let Err(status) = r {
            debug!(path = %open.path.display(), ?status, "cannot store write time on close");
        }
    }
    if outcome.delete_stream {
        super::streams::remove_stream(&open).await;
    }
    if let (Some(path), Some(_)) = (outcome.delete, open.share.root.as_ref()) {
        let share = open.share.clone();
        let is_dir = open.is_dir;
        let r = fs(open.identity.clone(), move || {
            let root = share
                .root
                .as_ref()
                .ok_or_else(|| io::Error::from_raw_os_error(libc_enoent()))?;
            posix::unlink(root, &path, is_dir)
        })
        .await;
        match r {
            Ok(()) => info!(path = %open.path.display(), "deleted on close"),
            Err(status) => {
                warn!(path = %open.path.display(), ?status, "delete on close failed")
            }
        }
    }
    if let Some(w) = wake {
        w.notify_waiters();
    }
    debug!(fid = open.fid.volatile, "closed");
}

/// A change to an entry ends the caching of its directory's leases (but
/// the one its own lease names as parent).
async fn break_parent_leases(st: &ServerState, open: &Open, except: Option<LeaseId>) {
    let (share, path) = (open.share.clone(), open.path.clone());
    let parent = fs(open.identity.clone(), move || {
        let root = share
            .root
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc_enoent()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(posix::open(root, &dir, &OpenRequest::probe())?.meta)
    })
    .await;
    if let Ok(m) = parent {
        let key = FileKey {
            dev: m.dev,
            ino: m.ino,
            stream: 0,
        };
        st.broker.break_dir_leases(key, except);
    }
}

/// The keeper's record of a durable open being granted.
fn keeper_record(
    d: &durable::Durable,
    fid: FileId,
    access: u32,
    user: &super::session::User,
    share: &Share,
    path: &std::path::Path,
    peer: &std::net::SocketAddr,
) -> holdfast_keeper_proto::Record {
    use holdfast_keeper_proto::{DurableKind, HandleState, Record};
    Record {
        id: 0,
        kind: if d.v2 {
            DurableKind::V2
        } else {
            DurableKind::V1
        },
        state: HandleState::Connected,
        client_guid: d.client_guid,
        create_guid: d.create_guid,
        persistent_file_id: fid.persistent,
        lease_key: None,
        lease_state: 0,
        oplock_level: Level::Batch.wire(),
        desired_access: access,
        share_access: d.share_access,
        uid: user.identity.uid,
        user_name: user.name.clone(),
        share: share.name.clone(),
        path: path.to_string_lossy().into_owned(),
        timeout_ms: u32::try_from(d.timeout.as_millis()).unwrap_or(u32::MAX),
        app_instance_id: None,
        client_addr: peer.to_string(),
        file_handle: Vec::new(),
        deposited_at_ms: 0,
        disconnected_at_ms: None,
    }
}

/// Size of FILE_OBJECTID_BUFFER (MS-FSCC 2.1.3).
const OBJECT_ID_BUFFER_LEN: u32 = 64;

/// A FILE_OBJECTID_BUFFER for a file that never had an object id set: a
/// stable id derived from the file id and the volume serial, so that
/// CREATE_OR_GET_OBJECT_ID and GET_OBJECT_ID agree across opens without
/// storing anything. Layout: ObjectId, BirthVolumeId, BirthObjectId, DomainId
/// (16 bytes each).
fn object_id_buffer(file_id: u64, volume_serial: u32) -> Vec<u8> {
    let mut object_id = [0u8; 16];
    object_id[..8].copy_from_slice(&file_id.to_le_bytes());
    object_id[8..12].copy_from_slice(&volume_serial.to_le_bytes());
    let mut volume_id = [0u8; 16];
    volume_id[..4].copy_from_slice(&volume_serial.to_le_bytes());
    let mut out = Vec::with_capacity(OBJECT_ID_BUFFER_LEN as usize);
    out.extend_from_slice(&object_id);
    out.extend_from_slice(&volume_id);
    out.extend_from_slice(&object_id);
    out.extend_from_slice(&[0u8; 16]);
    out
}

/// The (empty) successful LOCK response.
fn lock_reply() -> Reply {
    let mut b = Reply::buf();
    LockResponse.encode(&mut b);
    Reply {
        status: NtStatus::SUCCESS,
        buf: b,
    }
}

/// The create contexts we answer (MxAc, QFid); the rest are ignored, as
/// MS-SMB2 3.3.5.9 allows. `meta` is the file's (a stream's base file).
pub fn reply_contexts(
    requested: &[CreateContext],
    meta: &FileMeta,
    identity: &Identity,
    tree_ro: bool,
    volume_serial: u32,
) -> Vec<CreateContext> {
    use crate::wire::create::{MxAcResponse, QFidResponse};
    requested
        .iter()
        .filter_map(|c| match c.name.as_slice() {
            b"MxAc" => {
                let mut mx = crate::fsa::security::maximal_access(
                    identity.uid,
                    &identity.groups,
                    meta,
                    identity.uid == 0,
                    true,
                );
                if tree_ro {
                    mx &= access::FILE_GENERIC_READ | access::FILE_GENERIC_EXECUTE;
                }
                Some(
                    MxAcResponse {
                        query_status: 0,
                        maximal_access: mx,
                    }
                    .context(),
                )
            }
            b"QFid" => Some(
                QFidResponse {
                    disk_file_id: meta.file_id,
                    volume_id: u64::from(volume_serial),
                }
                .context(),
            ),
            _ => None,
        })
        .collect()
}

/// Checks CREATE parameters before anything touches the file system (MS-SMB2 3.3.5.9).
fn validate_create(req: &CreateRequest) -> Result<(), NtStatus> {
    if req.impersonation_level > 3 {
        return Err(NtStatus::BAD_IMPERSONATION_LEVEL);
    }
    if req.create_options & options::UNSUPPORTED != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    if req.create_options & (options::DIRECTORY_FILE | options::NON_DIRECTORY_FILE)
        == (options::DIRECTORY_FILE | options::NON_DIRECTORY_FILE)
    {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.create_options & 0xFF00_0000 != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.create_disposition > disposition::OVERWRITE_IF {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.file_attributes & !VALID_ATTRS != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.create_options & options::DELETE_ON_CLOSE != 0
        && access::map_generic(req.desired_access) & (access::DELETE | access::MAXIMUM_ALLOWED) == 0
    {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.desired_access & access::ACCESS_SYSTEM_SECURITY != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    if req.desired_access & 0x00E0_0000 != 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    Ok(())
}

/// True for the share root ("" or ".").
pub fn is_root(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty() || p == std::path::Path::new(".")
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

fn libc_enotdir() -> i32 {
    nix::errno::Errno::ENOTDIR as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_is_stable_and_well_formed() {
        let a = object_id_buffer(0x1122_3344_5566_7788, 0xAABB_CCDD);
        assert_eq!(a.len(), OBJECT_ID_BUFFER_LEN as usize);
        assert_eq!(a, object_id_buffer(0x1122_3344_5566_7788, 0xAABB_CCDD));
        assert_ne!(a, object_id_buffer(0x1122_3344_5566_7789, 0xAABB_CCDD));
        assert_eq!(a[..16], a[32..48], "birth object id equals object id");
        assert_eq!(&a[16..20], &0xAABB_CCDDu32.to_le_bytes());
        assert!(a[48..].iter().all(|b| *b == 0), "no domain id");
    }
}
