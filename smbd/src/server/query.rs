//! QUERY_DIRECTORY, QUERY_INFO and SET_INFO.

use super::conn::{Connection, Ctx, Reply};
use super::files::{fs, DirCursor};
use super::workers::BrokerHandle;
use crate::fsa::broker::FileKey;
use crate::fsa::dirent::{dir_class_supported, DirEncoder};
use crate::fsa::fsinfo::{query_fs_info, VolumeView};
use crate::fsa::info::{query_file_info, OpenView};
use crate::fsa::setinfo::{decode_set_file_info, SetFileInfo, TimeUpdate};
use crate::fsa::types::{access, attr, share, FileMeta};
use crate::fsa::writetime::Change;
use crate::fsa::{names, security, wildcard};
use crate::posix;
use crate::wire::info::{QueryInfoRequest, QueryInfoResponse, SetInfoRequest};
use crate::wire::query_dir::{QueryDirectoryRequest, QueryDirectoryResponse};
use crate::wire::NtStatus;
use bytes::BufMut;
use std::os::fd::AsFd;
use tracing::info;

const INFO_FILE: u8 = 1;
const INFO_FILESYSTEM: u8 = 2;
const INFO_SECURITY: u8 = 3;
const RESTART_SCANS: u8 = 0x01;
const RETURN_SINGLE_ENTRY: u8 = 0x02;
// SMB2_INDEX_SPECIFIED (0x04) is not honoured yet: enumeration resumes where it stopped.
const REOPEN: u8 = 0x10;

impl Connection {
    pub async fn query_directory(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req =
            QueryDirectoryRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        let max_transact = self.neg.max_transact;
        self.check_charge(&ctx.hdr, u64::from(req.output_buffer_length))?;
        let st = self.st.clone();
        let open = self.open_mut(ctx, fid)?;
        ctx.related_fid = Some(fid);
        if !open.is_dir {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if open.access & access::FILE_LIST_DIRECTORY == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        if !dir_class_supported(req.file_information_class) {
            return Err(NtStatus::INVALID_INFO_CLASS);
        }
        if req.output_buffer_length > max_transact {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let restart = req.flags & (RESTART_SCANS | REOPEN) != 0 || open.dir.is_none();
        if restart {
            let pattern = if req.pattern.is_empty() {
                "*".to_string()
            } else {
                req.pattern.clone()
            };
            if pattern.contains('\\') {
                return Err(NtStatus::OBJECT_NAME_INVALID);
            }
            let (fd, id) = (open.fd.clone(), open.identity.clone());
            let root_meta_share = open.share.clone();
            let is_root = super::files::is_root(&open.path);
            let entries = fs(id, move || {
                let mut list = posix::read_dir(fd.as_fd())?;
                if is_root {
                    // ".." of the share root is the root itself.
                    if let Some(root) = root_meta_share.root.as_ref() {
                        let m = posix::stat(root.fd())?;
                        for e in list.iter_mut().filter(|e| e.name == "..") {
                            e.meta = Some(m.clone());
                        }
                    }
                }
                Ok(list)
            })
            .await?;
            let broker = &st.broker;
            let entries: Vec<(String, FileMeta)> = entries
                .into_iter()
                .filter_map(|e| e.meta.map(|m| (e.name, held_write_time(broker, m))))
                .filter(|(n, _)| wildcard::name_matches(&pattern, n))
                .collect();
            open.dir = Some(DirCursor {
                entries,
                next: 0,
                pattern: Some(pattern),
            });
        }
        if !restart {
            // Entries may have gone since the listing was taken: re-check the
            // ones this reply could return (about one per 64 bytes of buffer).
            let want = req.output_buffer_length as usize / 64 + 1;
            let mut checked = 0;
            loop {
                let cursor = open.dir.as_mut().ok_or(NtStatus::INTERNAL_ERROR)?;
                let from = cursor.next + checked;
                let n = (want - checked).min(cursor.entries.len() - from);
                if n == 0 {
                    break;
                }
                let batch: Vec<String> = cursor.entries[from..from + n]
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect();
                let (fd, id) = (open.fd.clone(), open.identity.clone());
                let fresh = fs(id, move || {
                    Ok(batch
                        .into_iter()
                        .filter_map(|n| {
                            let m = posix::entry_meta(fd.as_fd(), std::path::Path::new(&n))
                                .ok()
                                .flatten();
                            m.map(|m| (n, m))
                        })
                        .collect::<Vec<_>>())
                })
                .await?;
                let cursor = open.dir.as_mut().ok_or(NtStatus::INTERNAL_ERROR)?;
                let tail = cursor.entries.split_off(from + n);
                cursor.entries.truncate(from);
                checked += fresh.len();
                let broker = &st.broker;
                cursor.entries.extend(
                    fresh
                        .into_iter()
                        .map(|(n, m)| (n, held_write_time(broker, m))),
                );
                cursor.entries.extend(tail);
            }
        }
        let cursor = open.dir.as_mut().ok_or(NtStatus::INTERNAL_ERROR)?;
        let mut enc = DirEncoder::new(
            req.file_information_class,
            req.output_buffer_length as usize,
        )
        .ok_or(NtStatus::INVALID_INFO_CLASS)?;
        let start = cursor.next;
        while let Some((name, meta)) = cursor.entries.get(cursor.next) {
            if !enc.push(name, meta, cursor.next as u32) {
                break;
            }
            cursor.next += 1;
            if req.flags & RETURN_SINGLE_ENTRY != 0 {
                break;
            }
        }
        if cursor.next == start {
            return Err(if cursor.next < cursor.entries.len() {
                NtStatus::INFO_LENGTH_MISMATCH
            } else if restart && cursor.entries.is_empty() {
                NtStatus::NO_SUCH_FILE
            } else {
                NtStatus::NO_MORE_FILES
            });
        }
        let mut b = Reply::buf();
        QueryDirectoryResponse {
            buffer: enc.finish(),
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    pub async fn query_info(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = QueryInfoRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        self.check_charge(&ctx.hdr, u64::from(req.output_buffer_length))?;
        if req.output_buffer_length > self.neg.max_transact {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // FileNormalizedNameInformation exists from SMB 3.1.1 on (MS-SMB2 3.3.5.20.1).
        if req.info_type == INFO_FILE
            && req.file_info_class == crate::fsa::info::class::NORMALIZED_NAME
            && self.neg.dialect < 0x0311
        {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        let fid = ctx.fid(req.file_id);
        let broker = &self.st.broker;
        let open = self.opens.get(&fid.volatile).filter(|o| {
            o.fid.persistent == fid.persistent
                && o.session_id == ctx.hdr.session_id
                && o.tree_id == ctx.hdr.tree_id()
        });
        let open = open.ok_or(NtStatus::FILE_CLOSED)?;
        ctx.related_fid = Some(fid);
        let (fd, id) = (open.fd.clone(), open.identity.clone());
        let max = req.output_buffer_length as usize;
        let (data, overflow) = match req.info_type {
            INFO_FILE => {
                if needs_read_attributes(req.file_info_class)
                    && open.access & access::FILE_READ_ATTRIBUTES == 0
                {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let meta = super::streams::stat_open(open).await?;
                let meta = held_write_time(broker, meta);
                let normalized = super::streams::normalized_name(open);
                let view = OpenView {
                    meta: &meta,
                    name: if req.file_info_class == crate::fsa::info::class::NORMALIZED_NAME {
                        &normalized
                    } else {
                        &open.smb_name
                    },
                    position: open.position,
                    mode: open.mode,
                    access: open.access,
                    delete_pending: broker.delete_pending(open.key),
                    ea_size: 0,
                    volume_serial: u64::from(open.share.serial),
                };
                if req.file_info_class == crate::fsa::info::class::STREAM {
                    super::streams::stream_information(open, max).await?
                } else {
                    query_file_info(req.file_info_class, &view, max)?
                }
            }
            INFO_FILESYSTEM => {
                let serial = open.share.serial;
                let label = open.share.name.clone();
                let (stats, root_meta) = fs(id, move || {
                    Ok((posix::fs_stats(fd.as_fd())?, posix::stat(fd.as_fd())?))
                })
                .await?;
                let view = VolumeView {
                    label,
                    serial,
                    created: root_meta.creation_time,
                    block_size: stats.block_size as u32,
                    total_units: stats.total_blocks,
                    free_units: stats.free_blocks,
                    avail_units: stats.avail_blocks,
                    fs_name: "NTFS".into(),
                    max_name_len: 255,
                    object_id: [0; 16],
                };
                query_fs_info(req.file_info_class, &view, max)?
            }
            INFO_SECURITY => {
                if open.access & access::READ_CONTROL == 0 {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let meta = fs(id, move || posix::stat(fd.as_fd())).await?;
                let sd = security::sd_from_mode(
                    meta.uid,
                    meta.gid,
                    meta.mode,
                    meta.is_dir(),
                    req.additional_information,
                );
                if sd.len() > max {
                    // The client learns the size it needs (MS-SMB2 3.3.5.20.3).
                    let mut b = Reply::buf();
                    b.put_u16_le(9);
                    b.put_u8(0);
                    b.put_u8(0);
                    b.put_u32_le(4);
                    b.put_u32_le(sd.len() as u32);
                    return Reply::with_status(NtStatus::BUFFER_TOO_SMALL, b);
                }
                (sd, false)
            }
            _ => return Err(NtStatus::INVALID_PARAMETER),
        };
        let mut b = Reply::buf();
        QueryInfoResponse { buffer: data }.encode(&mut b);
        Reply::with_status(
            if overflow {
                NtStatus::BUFFER_OVERFLOW
            } else {
                NtStatus::SUCCESS
            },
            b,
        )
    }

    pub async fn set_info(&mut self, ctx: &mut Ctx<'_>) -> Result<Reply, NtStatus> {
        let req = SetInfoRequest::decode(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let fid = ctx.fid(req.file_id);
        let tree_ro = self.tree(ctx)?.read_only;
        let st = self.st.clone();
        let open = self.open_mut(ctx, fid)?;
        ctx.related_fid = Some(fid);
        if tree_ro {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let (fd, id) = (open.fd.clone(), open.identity.clone());
        match req.info_type {
            INFO_FILE => {
                let info = decode_set_file_info(req.file_info_class, &req.buffer)?;
                match info {
                    SetFileInfo::Basic {
                        creation,
                        last_access,
                        last_write,
                        change,
                        attributes,
                    } => {
                        if open.access & access::FILE_WRITE_ATTRIBUTES == 0 {
                            return Err(NtStatus::ACCESS_DENIED);
                        }
                        let is_dir = open.is_dir;
                        if attributes.is_some_and(|a| a & attr::DIRECTORY != 0) && !is_dir {
                            return Err(NtStatus::INVALID_PARAMETER);
                        }
                        let t = |v: TimeUpdate| match v {
                            TimeUpdate::Set(t) => Some(t),
                            _ => None,
                        };
                        let (c, a, w, ch) = (t(creation), t(last_access), t(last_write), t(change));
                        // Any basic-info set makes a pending write-time update happen.
                        st.broker.write_time_flush(open.key, &mut open.write_time);
                        fs(id, move || {
                            posix::set_times(fd.as_fd(), c, a, w, ch)?;
                            if let Some(attrs) = attributes {
                                posix::set_attributes(fd.as_fd(), attrs & attr::SETTABLE)?;
                            }
                            Ok(())
                        })
                        .await?;
                        match last_write {
                            TimeUpdate::Set(t) => {
                                st.broker.write_time_set(open.key, &mut open.write_time, t)
                            }
                            TimeUpdate::Freeze => open.write_time.freeze(),
                            TimeUpdate::Resume => open.write_time.thaw(),
                            TimeUpdate::Unchanged => {}
                        }
                    }
                    SetFileInfo::Disposition { delete } => {
                        self.set_disposition(ctx, fid, delete).await?
                    }
                    SetFileInfo::DispositionEx { flags } => {
                        self.set_disposition(ctx, fid, flags & 1 != 0).await?
                    }
                    SetFileInfo::Position(p) => open.position = p,
                    SetFileInfo::Mode(m) => open.mode = m,
                    SetFileInfo::EndOfFile(size) | SetFileInfo::Allocation(size) => {
                        let allocation = matches!(info, SetFileInfo::Allocation(_));
                        if open.access & access::FILE_WRITE_DATA == 0 {
                            return Err(NtStatus::ACCESS_DENIED);
                        }
                        if open.is_dir {
                            return Err(NtStatus::INVALID_PARAMETER);
                        }
                        st.broker.oplock_break_level2(open.key, open.fid.volatile);
                        if open.stream.is_some() {
                            super::streams::set_size(open, size, allocation).await?;
                        } else {
                            let hold = st.broker.write_time_needs_hold(open.key);
                            let pre = fs(id, move || {
                                let pre = hold_mtime(fd.as_fd(), hold)?;
                                // Allocation never grows the end of file, but below it truncates (MS-FSA).
                                if !allocation || size < posix::stat(fd.as_fd())?.size {
                                    posix::set_size(fd.as_fd(), size)?;
                                } else {
                                    posix::allocate(fd.as_fd(), size)?;
                                }
                                Ok(pre)
                            })
                            .await?;
                            st.broker.write_time_modified(
                                open.key,
                                &mut open.write_time,
                                Change::Resize,
                                pre,
                            );
                        }
                    }
                    SetFileInfo::Rename { replace, name, .. } => {
                        // Other keys' handle caching ends with the old
                        // name: the rename waits until they acknowledge
                        // (or time out), then runs again.
                        let (key, oid) = (open.key, open.fid.volatile);
                        self.st.broker.break_handle_leases(key, oid);
                        if self.st.broker.oplock_deadline(key).is_some() {
                            return Ok(self.wait_for_oplock_break(ctx, key));
                        }
                        self.rename(ctx, fid, replace, &name).await?;
                    }
                    SetFileInfo::Link { .. } => return Err(NtStatus::NOT_SUPPORTED),
                    SetFileInfo::ValidDataLength(_) => return Err(NtStatus::NOT_SUPPORTED),
                }
            }
            INFO_SECURITY => {
                let parsed = security::parse_sd(&req.buffer)?;
                let ai = req.additional_information;
                if ai & 0x3 != 0 && open.access & access::WRITE_OWNER == 0 {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if ai & 0x4 != 0 && open.access & access::WRITE_DAC == 0 {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let is_dir = open.is_dir;
                fs(id, move || {
                    let meta = posix::stat(fd.as_fd())?;
                    if let Some(dacl) = parsed.dacl.as_ref().filter(|_| ai & 0x4 != 0) {
                        let mode = security::mode_from_dacl(dacl, meta.uid, meta.gid, is_dir);
                        if mode & 0o7777 != meta.mode & 0o7777 {
                            posix::fchmod_mode(fd.as_fd(), mode & 0o7777)?;
                        }
                    }
                    Ok(())
                })
                .await?;
                let _ = st;
            }
            _ => return Err(NtStatus::NOT_SUPPORTED),
        }
        let mut b = Reply::buf();
        b.put_u16_le(2);
        Reply::ok(b)
    }

    async fn set_disposition(
        &mut self,
        ctx: &Ctx<'_>,
        fid: crate::wire::FileId,
        delete: bool,
    ) -> Result<(), NtStatus> {
        let open = self.open_mut(ctx, fid)?;
        if open.access & access::DELETE == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let (fd, id, is_dir, key, oid) = (
            open.fd.clone(),
            open.identity.clone(),
            open.is_dir,
            open.key,
            open.fid.volatile,
        );
        if delete {
            let (meta, empty) = fs(id, move || {
                let m = posix::stat(fd.as_fd())?;
                let empty = if m.is_dir() {
                    posix::read_dir(fd.as_fd())?
                        .iter()
                        .all(|e| e.name == "." || e.name == "..")
                } else {
                    true
                };
                Ok((m, empty))
            })
            .await?;
            if meta.attributes & attr::READONLY != 0 {
                return Err(NtStatus::CANNOT_DELETE);
            }
            if is_dir && !empty {
                return Err(NtStatus::DIRECTORY_NOT_EMPTY);
            }
            if super::files::is_root(&open.path) {
                return Err(NtStatus::CANNOT_DELETE);
            }
        }
        self.st.broker.set_delete_pending(key, delete);
        if delete {
            // Other keys' handle caching would keep the doomed file open.
            self.st.broker.break_handle_leases(key, oid);
        }
        Ok(())
    }

    async fn rename(
        &mut self,
        ctx: &Ctx<'_>,
        fid: crate::wire::FileId,
        replace: bool,
        name: &str,
    ) -> Result<(), NtStatus> {
        let st = self.st.clone();
        let open = self.open_mut(ctx, fid)?;
        if open.access & access::DELETE == 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let target = names::smb_path_to_components(name.trim_start_matches('\\'))?;
        if open.stream.is_some() || target.stream.is_some() {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        // A file whose streams are open elsewhere keeps its name (Windows).
        if st.broker.streams_open(open.key) {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let to = names::components_to_unix(&target.components);
        let from = st
            .broker
            .path(open.key)
            .unwrap_or_else(|| open.path.clone());
        if super::files::is_root(&to) || super::files::is_root(&from) {
            return Err(NtStatus::ACCESS_DENIED);
        }
        if open.is_dir && st.broker.has_open_below(&from) {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let share = open.share.clone();
        let (id, from2, to2) = (open.identity.clone(), from.clone(), to.clone());
        let st2 = st.clone();
        let parents = fs(id, move || {
            let root = share
                .root
                .as_ref()
                .ok_or_else(|| std::io::Error::from_raw_os_error(2))?;
            // Renaming deletes a name from the parent: it conflicts with opens of
            // the parent that hold DELETE access or do not share delete.
            let parent = from2
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let mut parents = Vec::new();
            if let Ok(p) = posix::open(root, &parent, &posix::OpenRequest::probe()) {
                let key = crate::fsa::broker::FileKey {
                    dev: p.meta.dev,
                    ino: p.meta.ino,
                    stream: 0,
                };
                parents.push(key);
                if st2
                    .broker
                    .would_conflict(key, access::DELETE, share::READ | share::WRITE)
                    == Some(NtStatus::SHARING_VIOLATION)
                {
                    return Err(std::io::Error::from_raw_os_error(
                        nix::errno::Errno::EBUSY as i32,
                    ));
                }
            }
            if from2 != to2 && !same_ignoring_case(&from2, &to2) {
                if let Ok(t) = posix::open(root, &to2, &posix::OpenRequest::probe()) {
                    if !replace {
                        return Err(std::io::Error::from_raw_os_error(
                            nix::errno::Errno::EEXIST as i32,
                        ));
                    }
                    let key = crate::fsa::broker::FileKey {
                        dev: t.meta.dev,
                        ino: t.meta.ino,
                        stream: 0,
                    };
                    if t.meta.is_dir() || st2.broker.open_count(key) > 0 {
                        return Err(std::io::Error::from_raw_os_error(
                            nix::errno::Errno::EACCES as i32,
                        ));
                    }
                }
            }
            posix::rename(root, &from2, &to2, replace)?;
            // Both directories' leases end (their listings changed).
            if st2.broker.has_dir_leases() {
                let dst = to2
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                if let Ok(p) = posix::open(root, &dst, &posix::OpenRequest::probe()) {
                    parents.push(crate::fsa::broker::FileKey {
                        dev: p.meta.dev,
                        ino: p.meta.ino,
                        stream: 0,
                    });
                }
            }
            Ok(parents)
        })
        .await?;
        st.broker.renamed(open.key, to.clone());
        if st.broker.has_dir_leases() {
            let except = st.broker.lease_parent(open.key, open.fid.volatile);
            let mut parents = parents;
            parents.dedup();
            for p in parents {
                st.broker.break_dir_leases(p, except);
            }
        }
        info!(from = %from.display(), to = %to.display(), "renamed");
        open.path = to;
        open.smb_name = name.trim_start_matches('\\').to_string();
        Ok(())
    }
}

fn same_ignoring_case(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.to_string_lossy().to_lowercase() == b.to_string_lossy().to_lowercase()
}

/// The disk's mtime before a data change, when the broker needs it to hold
/// LastWriteTime (see `fsa::writetime`).
fn hold_mtime(fd: std::os::fd::BorrowedFd<'_>, hold: bool) -> std::io::Result<Option<u64>> {
    Ok(if hold {
        Some(posix::stat(fd)?.last_write_time)
    } else {
        None
    })
}

/// Reports the broker's held LastWriteTime for a file that is open.
fn held_write_time(broker: &BrokerHandle, mut m: FileMeta) -> FileMeta {
    if let Some(t) = broker.write_time(FileKey {
        dev: m.dev,
        ino: m.ino,
        stream: 0,
    }) {
        m.last_write_time = t;
    }
    m
}

/// Classes MS-FSA guards with FILE_READ_ATTRIBUTES.
fn needs_read_attributes(class: u8) -> bool {
    matches!(class, 4 | 18 | 34 | 35 | 59)
}
