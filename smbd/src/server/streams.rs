//! Opens of named streams ("file:stream[:$DATA]"): CREATE, READ, WRITE, end of
//! file, stream listing and delete. files.rs and query.rs only hook in here;
//! the rules live in fsa::streams and the storage in posix::streams.
//!
//! A stream open keeps an fd of the base file (xattrs are reached through it)
//! and a broker key with the stream's id, so share modes and byte-range locks
//! are per stream while delete-pending of the file covers its streams.
//! Reads and writes are read-modify-write of one xattr; two opens writing the
//! same stream at the same moment may lose one write (accepted for now).

use super::conn::{Connection, Ctx, Reply};
use super::files::{fs, Open};
use super::state::Share;
use crate::fsa::broker::{FileKey, Opened};
use crate::fsa::names::{self, ParsedPath};
use crate::fsa::oplock::Intent;
use crate::fsa::streams::{self as rules, StreamEntry};
use crate::fsa::types::{access, action, attr, disposition, options, FileMeta};
use crate::posix::{self, CreateMode, DirMode, OpenRequest};
use crate::wire::create::{CreateRequest, CreateResponse};
use crate::wire::rw::{ReadRequest, ReadResponse, WriteRequest, WriteResponse};
use crate::wire::{FileId, NtStatus};
use bytes::{BufMut, BytesMut};
use kmod_interface::identity::Identity;
use nix::libc;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, info, warn};

const DATA_WRITE: u32 = access::FILE_WRITE_DATA | access::FILE_APPEND_DATA;
const DATA_READ: u32 = access::FILE_READ_DATA | access::FILE_EXECUTE;

/// What CREATE already worked out before it hands a stream name over.
pub struct StreamCreate {
    pub share: Arc<Share>,
    pub identity: Arc<Identity>,
    pub tree_ro: bool,
    pub tree_id: u32,
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// Result of the file-system half of a stream create.
struct Prepared {
    fd: OwnedFd,
    base: FileMeta,
    rel: PathBuf,
    /// Stored spelling of the stream, if it exists already.
    existing: Option<String>,
    base_created: bool,
}

/// A CREATE with a stream name may also create the base file (MS-FSA 2.1.5.1).
fn creates(disp: u32) -> bool {
    !matches!(disp, disposition::OPEN | disposition::OVERWRITE)
}

/// Finds (or, if the disposition allows, creates) the base file of a stream.
fn prepare(
    share: &Share,
    rel: PathBuf,
    stream: &str,
    disp: u32,
    attrs: u32,
) -> io::Result<Prepared> {
    let root = share.root.as_ref().ok_or_else(|| errno(libc::ENOENT))?;
    let probe = |p: &std::path::Path| posix::open(root, p, &OpenRequest::probe());
    let (found, rel) = match probe(&rel) {
        Ok(o) => (Some(o), rel),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let r = posix::resolve_case(root, &rel, crate::fsa::wildcard::names_equal)?;
            match probe(&r) {
                Ok(o) => (Some(o), r),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (None, r),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let (o, base_created) = match found {
        Some(o) => (o, false),
        None if !creates(disp) => return Err(errno(libc::ENOENT)),
        None => {
            let req = OpenRequest {
                create: CreateMode::CreateNew,
                directory: DirMode::MustNotBeDir,
                mode: 0o666,
                attributes: (attrs & attr::SETTABLE) | attr::ARCHIVE,
                ..OpenRequest::default()
            };
            let o = posix::open(root, &rel, &req).map_err(|e| {
                // A missing parent is a path error, not a name error.
                if e.raw_os_error() == Some(libc::ENOENT) {
                    errno(libc::ENOTDIR)
                } else {
                    e
                }
            })?;
            (o, true)
        }
    };
    let stored = posix::streams::names(o.fd.as_fd())?;
    let existing = rules::find(&stored, stream).map(str::to_string);
    Ok(Prepared {
        fd: o.fd,
        base: o.meta,
        rel,
        existing,
        base_created,
    })
}

impl Connection {
    /// CREATE of "file:stream": opens, creates or overwrites one named stream.
    pub async fn create_stream(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &CreateRequest,
        parsed: &ParsedPath,
        stream: String,
        c: StreamCreate,
    ) -> Result<Reply, NtStatus> {
        let (disp, opts, attrs) = (
            req.create_disposition,
            req.create_options,
            req.file_attributes,
        );
        // A stream holds data: it is never a directory.
        if opts & options::DIRECTORY_FILE != 0 {
            return Err(NtStatus::NOT_A_DIRECTORY);
        }
        let mut want = access::map_generic(req.desired_access);
        let max_allowed = want & access::MAXIMUM_ALLOWED != 0;
        want &= !access::MAXIMUM_ALLOWED;
        let doc = opts & options::DELETE_ON_CLOSE != 0;
        if c.tree_ro
            && (want & !(access::FILE_GENERIC_READ | access::FILE_GENERIC_EXECUTE) != 0
                || disp != disposition::OPEN
                || doc)
        {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let rel = names::components_to_unix(&parsed.components);
        if super::files::is_root(&rel) {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        let share = c.share.clone();
        let name = stream.clone();
        let p = fs(c.identity.clone(), move || {
            prepare(&share, rel, &name, disp, attrs)
        })
        .await?;
        let overwrite = matches!(
            disp,
            disposition::OVERWRITE | disposition::OVERWRITE_IF | disposition::SUPERSEDE
        );
        match (&p.existing, disp) {
            (Some(_), disposition::CREATE) => return Err(NtStatus::OBJECT_NAME_COLLISION),
            (None, disposition::OPEN | disposition::OVERWRITE) => {
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND)
            }
            _ => {}
        }
        let base = &p.base;
        if max_allowed {
            want |= crate::fsa::security::maximal_access(
                c.identity.uid,
                &c.identity.groups,
                base,
                c.identity.uid == 0,
                true,
            );
        }
        if overwrite {
            want |= access::FILE_WRITE_DATA;
        }
        if base.attributes & attr::READONLY != 0 {
            if doc {
                return Err(NtStatus::CANNOT_DELETE);
            }
            if want & DATA_WRITE != 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
        }
        let stored = p.existing.clone().unwrap_or(stream);
        let key = FileKey {
            dev: base.dev,
            ino: base.ino,
            stream: rules::stream_id(Some(&stored)),
        };
        let open_id = self.st.next_file_id();
        let lease_req = self.lease_request(req.requested_oplock_level, &req.contexts, false);
        let intent = Intent {
            lease: lease_req,
            ..self.oplock_intent(&c.share, req.requested_oplock_level, disp, false)
        };
        let opened = self.st.broker.open_with(
            key,
            p.rel.clone(),
            open_id,
            want,
            req.share_access,
            doc,
            &intent,
        )?;
        let Opened::Granted(granted) = opened else {
            return Ok(self.wait_for_oplock_break(ctx, key));
        };
        let (is_dir, fresh) = (base.is_dir(), p.existing.is_none());
        let (read, write) = (want & DATA_READ != 0, want & DATA_WRITE != 0);
        // With kernel oplocks a data open of the base file would break
        // the file's kernel leases (streams are separate files for SMB), so
        // the stream keeps its O_PATH fd (xattrs are reached through it)
        // and access is checked without an open.
        let kernel = super::kernel_oplock::enabled(&c.share);
        let (fd0, name) = (p.fd, stored.clone());
        let opened = fs(c.identity.clone(), move || {
            // Reopening with the data access asked for checks it against
            // the file's permissions; directories keep their O_PATH fd.
            let fd = if kernel && !is_dir && (read || write) {
                posix::check_access(fd0.as_fd(), read, write)?;
                fd0
            } else if !is_dir && (read || write) {
                posix::reopen(fd0.as_fd(), read, write)?
            } else {
                fd0
            };
            let content = if fresh || overwrite {
                posix::streams::write(fd.as_fd(), &name, &[])?;
                Vec::new()
            } else {
                posix::streams::read(fd.as_fd(), &name)?.unwrap_or_default()
            };
            let meta = posix::stat(fd.as_fd())?;
            Ok((fd, rules::stream_meta(&meta, content.len() as u64)))
        })
        .await;
        let (fd, meta) = match opened {
            Ok(v) => v,
            Err(s) => {
                self.st.broker.close(key, open_id);
                return Err(s);
            }
        };
        let fd = Arc::new(fd);
        let create_action = match disp {
            _ if p.base_created || fresh => action::CREATED,
            disposition::SUPERSEDE => action::SUPERSEDED,
            disposition::OVERWRITE | disposition::OVERWRITE_IF => action::OVERWRITTEN,
            _ => action::OPENED,
        };
        if create_action == action::CREATED {
            info!(path = %p.rel.display(), stream = %stored, "stream created");
        }
        let fid = FileId {
            persistent: open_id,
            volatile: open_id,
        };
        let lease_ctx = lease_req.and_then(|l| self.lease_context(key, l.id));
        let mut contexts = super::files::reply_contexts(
            &req.contexts,
            &meta,
            &c.identity,
            c.tree_ro,
            c.share.serial,
        );
        contexts.extend(lease_ctx.clone());
        let resp = CreateResponse {
            oplock_level: granted.response_level(lease_ctx.is_some()),
            flags: 0,
            create_action,
            creation_time: meta.creation_time,
            last_access_time: meta.last_access_time,
            last_write_time: meta.last_write_time,
            change_time: meta.change_time,
            allocation_size: meta.allocation,
            end_of_file: meta.size,
            file_attributes: crate::fsa::info::wire_attributes(&meta),
            file_id: fid,
            contexts,
        };
        self.opens.insert(
            open_id,
            Open {
                fid,
                session_id: ctx.hdr.session_id,
                tree_id: c.tree_id,
                share: c.share,
                fd,
                write_time: Default::default(),
                key,
                path: p.rel,
                smb_name: req.name.clone(),
                is_dir: false,
                access: want,
                identity: c.identity,
                position: 0,
                mode: opts & crate::fsa::info::MODE_BITS,
                dir: None,
                stream: Some(stored),
                durable: None,
                lock_seq: super::files::LockSequences::default(),
                ofd: None,
            },
        );
        ctx.related_fid = Some(fid);
        debug!(fid = open_id, name = %req.name, "stream opened");
        let mut b = Reply::buf();
        resp.encode(&mut b);
        Reply::ok(b)
    }

    /// READ on a stream open.
    pub async fn read_stream(
        &mut self,
        ctx: &mut Ctx<'_>,
        fid: FileId,
        req: &ReadRequest,
    ) -> Result<Reply, NtStatus> {
        let (key, fd, id, name) = self.stream_data_open(ctx, fid, DATA_READ)?;
        ctx.related_fid = Some(fid);
        self.st
            .broker
            .check_io(key, fid.volatile, req.offset, u64::from(req.length), false)?;
        let (off, len) = (req.offset, req.length as usize);
        let data = fs(id, move || {
            let content = posix::streams::read(fd.as_fd(), &name)?.unwrap_or_default();
            Ok(rules::read_range(&content, off, len).to_vec())
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

    /// What READ/WRITE on a stream open need from it, once the handle has
    /// `need` access.
    fn stream_data_open(
        &mut self,
        ctx: &Ctx<'_>,
        fid: FileId,
        need: u32,
    ) -> Result<(FileKey, Arc<OwnedFd>, Arc<Identity>, String), NtStatus> {
        let open = self.open_mut(ctx, fid)?;
        if open.access & need == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        Ok((
            open.key,
            open.fd.clone(),
            open.identity.clone(),
            stream_of(open)?,
        ))
    }

    /// WRITE on a stream open (offset u64::MAX appends).
    pub async fn write_stream(
        &mut self,
        ctx: &mut Ctx<'_>,
        fid: FileId,
        req: &WriteRequest,
        data: Vec<u8>,
    ) -> Result<Reply, NtStatus> {
        let (key, fd, id, name) = self.stream_data_open(ctx, fid, DATA_WRITE)?;
        ctx.related_fid = Some(fid);
        let append = req.offset == u64::MAX;
        if !append {
            self.st
                .broker
                .check_io(key, fid.volatile, req.offset, data.len() as u64, true)?;
        }
        self.break_level2_oplocks(key, fid.volatile);
        let (off, n) = (req.offset, data.len());
        let end = fs(id, move || {
            let mut content = posix::streams::read(fd.as_fd(), &name)?.unwrap_or_default();
            let start = if append { content.len() as u64 } else { off };
            rules::write_range(&mut content, start, &data).map_err(|_| errno(libc::ENOSPC))?;
            posix::streams::write(fd.as_fd(), &name, &content)?;
            Ok(start + data.len() as u64)
        })
        .await?;
        if let Some(o) = self.opens.get_mut(&fid.volatile) {
            o.position = end;
        }
        let mut b = Reply::buf();
        WriteResponse {
            count: n as u32,
            remaining: 0,
        }
        .encode(&mut b);
        Reply::ok(b)
    }
}

fn stream_of(open: &Open) -> Result<String, NtStatus> {
    open.stream.clone().ok_or(NtStatus::INTERNAL_ERROR)
}

/// CREATE options for a name that spelled out the default stream
/// ("f::$DATA"): it names data, so a directory is refused, with
/// NOT_A_DIRECTORY if the client asked for one and FILE_IS_A_DIRECTORY if
/// one is found (MS-FSA 2.1.5.1).
pub fn default_stream_options(parsed: &ParsedPath, opts: u32) -> Result<u32, NtStatus> {
    if !parsed.default_stream_named {
        return Ok(opts);
    }
    if opts & options::DIRECTORY_FILE != 0 {
        return Err(NtStatus::NOT_A_DIRECTORY);
    }
    Ok(opts | options::NON_DIRECTORY_FILE)
}

/// The name FileNormalizedNameInformation reports: the path as stored (the
/// case found on disk, not as the client typed it) and, for a stream open,
/// ":stream" as created, without ":$DATA".
pub fn normalized_name(open: &Open) -> String {
    let mut n = if super::files::is_root(&open.path) {
        String::new()
    } else {
        let parts: Vec<_> = open.path.iter().map(|c| c.to_string_lossy()).collect();
        parts.join("\\")
    };
    if let Some(s) = &open.stream {
        n.push(':');
        n.push_str(s);
    }
    n
}

/// Metadata as an open reports it: a stream open gets its stream's sizes.
pub async fn stat_open(open: &Open) -> Result<FileMeta, NtStatus> {
    let (fd, stream) = (open.fd.clone(), open.stream.clone());
    fs(open.identity.clone(), move || {
        let meta = posix::stat(fd.as_fd())?;
        Ok(match stream {
            Some(s) => {
                let size = posix::streams::read(fd.as_fd(), &s)?.map_or(0, |v| v.len());
                rules::stream_meta(&meta, size as u64)
            }
            None => meta,
        })
    })
    .await
}

/// FileStreamInformation for any open of a file: "::$DATA" (files only)
/// followed by every named stream.
pub async fn stream_information(open: &Open, max: usize) -> Result<(Vec<u8>, bool), NtStatus> {
    // The smallest buffer Windows accepts for this class (as fsa::info).
    if max < 32 {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    let fd = open.fd.clone();
    let entries = fs(open.identity.clone(), move || {
        let meta = posix::stat(fd.as_fd())?;
        let mut entries = Vec::new();
        if !meta.is_dir() {
            entries.push(StreamEntry {
                name: String::new(),
                size: meta.size,
                allocation: meta.allocation,
            });
        }
        for (name, size) in posix::streams::list(fd.as_fd())? {
            entries.push(StreamEntry {
                name,
                size,
                allocation: rules::allocation(size),
            });
        }
        Ok(entries)
    })
    .await?;
    Ok(rules::encode_stream_info(&entries, max))
}

/// SET_INFO end of file (or, shrinking only, allocation) on a stream open.
pub async fn set_size(open: &Open, size: u64, allocation_only: bool) -> Result<(), NtStatus> {
    let name = stream_of(open)?;
    let fd = open.fd.clone();
    fs(open.identity.clone(), move || {
        let mut content = posix::streams::read(fd.as_fd(), &name)?.unwrap_or_default();
        if allocation_only && size >= content.len() as u64 {
            return Ok(());
        }
        rules::set_size(&mut content, size).map_err(|_| errno(libc::ENOSPC))?;
        posix::streams::write(fd.as_fd(), &name, &content)
    })
    .await
}

/// Removes a stream whose last open was delete-on-close.
pub async fn remove_stream(open: &Open) {
    let Some(name) = open.stream.clone() else {
        return;
    };
    let fd = open.fd.clone();
    match fs(open.identity.clone(), move || {
        posix::streams::remove(fd.as_fd(), &name)
    })
    .await
    {
        Ok(()) => {
            info!(path = %open.path.display(), stream = ?open.stream, "stream deleted on close")
        }
        Err(status) => warn!(path = %open.path.display(), ?status, "stream delete failed"),
    }
}
