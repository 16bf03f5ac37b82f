//! Named pipes on IPC$: opens whose backing is an in-process DCE/RPC server
//! rather than a file. Only \PIPE\srvsvc exists, for share browsing. Pipe
//! opens live in `Connection::pipes` (not `opens`), keyed like opens by the
//! volatile FileId, so nothing in the file path has to know about them.

pub mod srvsvc;

use super::conn::{Connection, Ctx, Reply};
use super::state::ServerState;
use crate::wire::close::{CloseRequest, CloseResponse};
use crate::wire::create::{CreateRequest, CreateResponse};
use crate::wire::dcerpc::{self, Body, SyntaxId};
use crate::wire::header::Command;
use crate::wire::info::{QueryInfoRequest, QueryInfoResponse};
use crate::wire::ioctl::{fsctl, IoctlRequest, IoctlResponse};
use crate::wire::rw::{ReadRequest, ReadResponse, WriteRequest, WriteResponse};
use crate::wire::simple::FlushRequest;
use crate::wire::{FileId, NtStatus};
use bytes::{BufMut, BytesMut};
use srvsvc::{ServerView, ShareEntry};
use std::collections::VecDeque;
use tracing::debug;

/// Largest fragment we send or accept, what Windows and Samba use.
const MAX_FRAG: u16 = 4280;
const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
const FILE_OPENED: u32 = 1;
const FILE_STANDARD_INFORMATION: u8 = 5;
/// Unread output a client may pile up before further writes are refused.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;

fn srvsvc_syntax() -> SyntaxId {
    SyntaxId::parse("4b324fc8-1670-01d3-1278-5a47bf6ee188", 3, 0).unwrap_or_default()
}

fn ndr_syntax() -> SyntaxId {
    SyntaxId::parse("8a885d04-1ceb-11c9-9fe8-08002b104860", 2, 0).unwrap_or_default()
}

/// Whether `name` (as sent in CREATE on IPC$) is a pipe we serve.
pub fn is_srvsvc(name: &str) -> bool {
    let n = name.trim_start_matches('\\');
    let n = if n.len() > 5 && n[..5].eq_ignore_ascii_case("PIPE\\") {
        &n[5..]
    } else {
        n
    };
    n.eq_ignore_ascii_case("srvsvc")
}

/// One open of a named pipe: an RPC association and its undelivered output.
pub struct Pipe {
    pub fid: FileId,
    pub session_id: u64,
    pub tree_id: u32,
    /// Written bytes that do not yet make a whole PDU.
    input: Vec<u8>,
    /// Response messages (PDU fragments) not yet read; the front may be partly read.
    output: VecDeque<Vec<u8>>,
    /// Presentation contexts accepted for srvsvc.
    contexts: Vec<u16>,
    max_xmit: u16,
    assoc_group: u32,
}

impl Pipe {
    pub fn new(fid: FileId, session_id: u64, tree_id: u32) -> Pipe {
        Pipe {
            fid,
            session_id,
            tree_id,
            input: Vec::new(),
            output: VecDeque::new(),
            contexts: Vec::new(),
            max_xmit: MAX_FRAG,
            assoc_group: 0,
        }
    }

    /// Bytes waiting to be read.
    pub fn available(&self) -> usize {
        self.output.iter().map(Vec::len).sum()
    }

    /// Feeds written bytes; each complete PDU queues its answer.
    pub fn write(&mut self, data: &[u8], view: &ServerView) -> Result<(), NtStatus> {
        if self.available() > MAX_PENDING_OUTPUT {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        self.input.extend_from_slice(data);
        while self.input.len() >= dcerpc::HEADER_LEN {
            let Ok(h) = dcerpc::decode_header(&self.input) else {
                self.input.clear();
                return Err(NtStatus::INVALID_PARAMETER);
            };
            let len = usize::from(h.frag_length);
            if len > self.input.len() {
                break;
            }
            let pdu: Vec<u8> = self.input.drain(..len).collect();
            self.handle(h, &pdu, view);
        }
        Ok(())
    }

    /// Takes up to `max` bytes of the next message; the flag says more of it remains.
    pub fn read(&mut self, max: usize) -> Option<(Vec<u8>, bool)> {
        let front = self.output.front_mut()?;
        if front.len() > max {
            let rest = front.split_off(max);
            let part = std::mem::replace(front, rest);
            return Some((part, true));
        }
        self.output.pop_front().map(|m| (m, false))
    }

    fn handle(&mut self, h: dcerpc::Header, pdu: &[u8], view: &ServerView) {
        let call = h.call_id;
        if !h.is_little_endian() {
            self.output.push_back(dcerpc::encode_fault(
                call,
                0,
                dcerpc::fault::UNSUPPORTED_TYPE,
            ));
            return;
        }
        let p = match dcerpc::decode(pdu) {
            Ok(p) => p,
            Err(e) => {
                debug!(ptype = h.ptype, %e, "bad rpc pdu");
                let reply = if h.ptype == dcerpc::PTYPE_BIND {
                    dcerpc::encode_bind_nak(call, 0)
                } else {
                    dcerpc::encode_fault(call, 0, dcerpc::fault::PROTO_ERROR)
                };
                self.output.push_back(reply);
                return;
            }
        };
        match p.body {
            Body::Bind(b) => self.bind(call, &b, false),
            Body::AlterContext(b) => self.bind(call, &b, true),
            Body::Request(r) => {
                let whole = dcerpc::PFC_FIRST_FRAG | dcerpc::PFC_LAST_FRAG;
                let status = if h.flags & whole != whole {
                    Err(dcerpc::fault::PROTO_ERROR)
                } else if !self.contexts.contains(&r.context_id) {
                    Err(dcerpc::fault::CONTEXT_MISMATCH)
                } else {
                    srvsvc::call(r.opnum, &r.stub, view)
                };
                debug!(opnum = r.opnum, ok = status.is_ok(), "srvsvc call");
                match status {
                    Ok(stub) => self.output.extend(dcerpc::encode_response(
                        call,
                        r.context_id,
                        &stub,
                        self.max_xmit,
                    )),
                    Err(f) => self
                        .output
                        .push_back(dcerpc::encode_fault(call, r.context_id, f)),
                }
            }
            // AUTH3, cancels, orphans and stray responses expect no answer.
            _ => {}
        }
    }

    fn bind(&mut self, call: u32, b: &dcerpc::Bind, alter: bool) {
        let (srvsvc, ndr) = (srvsvc_syntax(), ndr_syntax());
        self.max_xmit = b.max_recv_frag.clamp(64, MAX_FRAG);
        if self.assoc_group == 0 {
            self.assoc_group = if b.assoc_group != 0 {
                b.assoc_group
            } else {
                0x1_0000 | u32::from(rand::random::<u16>())
            };
        }
        let mut results = Vec::with_capacity(b.contexts.len());
        for c in &b.contexts {
            let r = if c.abstract_syntax != srvsvc {
                dcerpc::ContextResult {
                    result: dcerpc::RESULT_PROVIDER_REJECTION,
                    reason: dcerpc::REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED,
                    transfer_syntax: SyntaxId::default(),
                }
            } else if !c.transfer_syntaxes.contains(&ndr) {
                dcerpc::ContextResult {
                    result: dcerpc::RESULT_PROVIDER_REJECTION,
                    reason: dcerpc::REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
                    transfer_syntax: SyntaxId::default(),
                }
            } else {
                if !self.contexts.contains(&c.id) {
                    self.contexts.push(c.id);
                }
                dcerpc::ContextResult {
                    result: dcerpc::RESULT_ACCEPTANCE,
                    reason: 0,
                    transfer_syntax: ndr,
                }
            };
            results.push(r);
        }
        let ack = dcerpc::BindAck {
            max_xmit_frag: self.max_xmit,
            max_recv_frag: b.max_xmit_frag.clamp(64, MAX_FRAG),
            assoc_group: self.assoc_group,
            // ALTER_CONTEXT_RESP carries no secondary address.
            sec_addr: if alter {
                String::new()
            } else {
                "\\PIPE\\srvsvc".into()
            },
            results,
        };
        self.output
            .push_back(dcerpc::encode_bind_ack(call, &ack, alter));
    }
}

/// The srvsvc view of the configuration.
pub fn server_view(st: &ServerState) -> ServerView {
    let mut view = ServerView {
        netbios_name: st.config.global.netbios_name.clone(),
        comment: st.config.global.server_string.clone(),
        ..Default::default()
    };
    for s in &st.shares {
        let (entry, listed) = match &s.conf {
            None => (
                ShareEntry {
                    name: s.name.clone(),
                    stype: srvsvc::STYPE_IPC_HIDDEN,
                    comment: "IPC Service".into(),
                },
                true,
            ),
            Some(c) => (
                ShareEntry {
                    name: s.name.clone(),
                    stype: srvsvc::STYPE_DISKTREE,
                    comment: c.comment.clone(),
                },
                c.browseable,
            ),
        };
        if listed {
            view.listed.push(entry.clone());
        }
        view.all.push(entry);
    }
    view
}

impl Connection {
    /// CREATE on IPC$: opens a pipe we serve.
    pub fn pipe_create(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &CreateRequest,
        tree_id: u32,
    ) -> Result<Reply, NtStatus> {
        if !is_srvsvc(&req.name) {
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        let id = self.st.next_file_id();
        let fid = FileId {
            persistent: id,
            volatile: id,
        };
        self.pipes
            .insert(id, Pipe::new(fid, ctx.hdr.session_id, tree_id));
        ctx.related_fid = Some(fid);
        debug!(fid = id, name = %req.name, "pipe opened");
        let mut b = Reply::buf();
        CreateResponse {
            create_action: FILE_OPENED,
            file_attributes: FILE_ATTRIBUTE_NORMAL,
            file_id: fid,
            ..Default::default()
        }
        .encode(&mut b);
        Reply::ok(b)
    }

    /// Whether the request's tree is IPC$, whose opens are pipes.
    pub fn on_ipc(&self, ctx: &Ctx<'_>) -> bool {
        self.tree(ctx).is_ok_and(|t| t.share.is_ipc())
    }

    fn pipe_mut(&mut self, ctx: &mut Ctx<'_>, fid: FileId) -> Result<&mut Pipe, NtStatus> {
        let (sid, tid) = (ctx.hdr.session_id, ctx.hdr.tree_id());
        match self.pipes.get_mut(&fid.volatile) {
            Some(p) if p.fid == fid && p.session_id == sid && p.tree_id == tid => {
                ctx.related_fid = Some(fid);
                Ok(p)
            }
            _ => Err(NtStatus::FILE_CLOSED),
        }
    }

    /// Drops the pipes of a session (and tree, when given).
    pub fn close_pipes(&mut self, session_id: u64, tree_id: Option<u32>) {
        self.pipes
            .retain(|_, p| p.session_id != session_id || tree_id.is_some_and(|t| t != p.tree_id));
    }

    /// The file commands on an IPC$ tree (CREATE is routed from `create`).
    pub async fn pipe_command(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: Command,
    ) -> Result<Reply, NtStatus> {
        let bad = |_| NtStatus::INVALID_PARAMETER;
        match cmd {
            Command::Close => {
                let req = CloseRequest::decode(ctx.msg).map_err(bad)?;
                let fid = ctx.fid(req.file_id);
                self.pipe_mut(ctx, fid)?;
                self.pipes.remove(&fid.volatile);
                let mut b = Reply::buf();
                CloseResponse::default().encode(&mut b);
                Reply::ok(b)
            }
            Command::Flush => {
                let req = FlushRequest::decode(ctx.msg).map_err(bad)?;
                self.pipe_mut(ctx, ctx.fid(req.file_id))?;
                let mut b = Reply::buf();
                b.put_u16_le(4);
                b.put_u16_le(0);
                Reply::ok(b)
            }
            Command::Write => {
                let (req, range) = WriteRequest::decode(ctx.msg).map_err(bad)?;
                let data = ctx.msg.get(range).ok_or(NtStatus::INVALID_PARAMETER)?;
                self.check_charge(&ctx.hdr, data.len() as u64)?;
                let data = data.to_vec();
                let view = server_view(&self.st);
                self.pipe_mut(ctx, ctx.fid(req.file_id))?
                    .write(&data, &view)?;
                let mut b = Reply::buf();
                WriteResponse {
                    count: data.len() as u32,
                    remaining: 0,
                }
                .encode(&mut b);
                Reply::ok(b)
            }
            Command::Read => {
                let req = ReadRequest::decode(ctx.msg).map_err(bad)?;
                self.check_charge(&ctx.hdr, u64::from(req.length))?;
                let max = req.length.min(self.neg.max_read) as usize;
                let pipe = self.pipe_mut(ctx, ctx.fid(req.file_id))?;
                // Nobody else writes to our pipes: an empty one stays empty.
                let (data, more) = pipe.read(max).ok_or(NtStatus::PIPE_EMPTY)?;
                let mut b = BytesMut::with_capacity(crate::wire::HEADER_LEN + 16 + data.len());
                b.resize(crate::wire::HEADER_LEN, 0);
                ReadResponse::encode_header(&mut b, data.len() as u32, 0, 0);
                b.put_slice(&data);
                Reply::with_status(overflow(more), b)
            }
            Command::QueryInfo => {
                let req = QueryInfoRequest::decode(ctx.msg).map_err(bad)?;
                let avail = self.pipe_mut(ctx, ctx.fid(req.file_id))?.available();
                if req.info_type != 1 || req.file_info_class != FILE_STANDARD_INFORMATION {
                    return Err(NtStatus::NOT_SUPPORTED);
                }
                if req.output_buffer_length < 24 {
                    return Err(NtStatus::INFO_LENGTH_MISMATCH);
                }
                // FILE_STANDARD_INFORMATION: allocation, end of file = bytes readable, one link.
                let mut info = Vec::with_capacity(24);
                info.extend_from_slice(&4096u64.to_le_bytes());
                info.extend_from_slice(&(avail as u64).to_le_bytes());
                info.extend_from_slice(&1u32.to_le_bytes());
                info.extend_from_slice(&[0, 0, 0, 0]);
                let mut b = Reply::buf();
                QueryInfoResponse { buffer: info }.encode(&mut b);
                Reply::ok(b)
            }
            Command::Ioctl => {
                let req = IoctlRequest::decode(ctx.msg).map_err(bad)?;
                if req.ctl_code != fsctl::PIPE_TRANSCEIVE {
                    return self.ioctl(ctx).await;
                }
                self.check_charge(&ctx.hdr, req.input.len() as u64)?;
                let view = server_view(&self.st);
                let pipe = self.pipe_mut(ctx, ctx.fid(req.file_id))?;
                if pipe.available() > 0 {
                    // A transceive needs an empty pipe (MS-FSCC 2.3.49).
                    return Err(NtStatus::PIPE_BUSY);
                }
                pipe.write(&req.input, &view)?;
                let (output, more) = pipe
                    .read(req.max_output_response as usize)
                    .unwrap_or_default();
                let mut b = Reply::buf();
                IoctlResponse {
                    ctl_code: req.ctl_code,
                    file_id: req.file_id,
                    input: Vec::new(),
                    output,
                    flags: 0,
                }
                .encode(&mut b);
                Reply::with_status(overflow(more), b)
            }
            _ => Err(NtStatus::INVALID_DEVICE_REQUEST),
        }
    }
}

fn overflow(more: bool) -> NtStatus {
    if more {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIND: &str = "05000b03100000004800000001000000b810b810000000000100000000000100c84f324b7016d30112785a47bf6ee18803000000045d888aeb1cc9119fe808002b10486002000000";
    const ENUM: &str = "05000003100000005c000000020000004400000000000f00000002000a000000000000000a0000003100320037002e0030002e0030002e00310000000100000001000000040002000000000000000000ffffffff0800020000000000";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn view() -> ServerView {
        let e = |n: &str, t| ShareEntry {
            name: n.into(),
            stype: t,
            comment: String::new(),
        };
        ServerView {
            netbios_name: "HF".into(),
            comment: "x".into(),
            listed: vec![
                e("share", 0),
                e("ca", 0),
                e("IPC$", srvsvc::STYPE_IPC_HIDDEN),
            ],
            all: vec![],
        }
    }

    #[test]
    fn names() {
        assert!(is_srvsvc("srvsvc"));
        assert!(is_srvsvc("SRVSVC"));
        assert!(is_srvsvc("\\PIPE\\srvsvc"));
        assert!(!is_srvsvc("lsarpc"));
        assert!(!is_srvsvc("PIPE\\"));
    }

    #[test]
    fn smbclient_conversation() {
        let mut p = Pipe::new(FileId::default(), 1, 1);
        p.write(&unhex(BIND), &view()).unwrap();
        let (ack, more) = p.read(4280).unwrap();
        assert!(!more);
        let d = dcerpc::decode(&ack).unwrap();
        let Body::BindAck(a) = d.body else { panic!() };
        assert_eq!(a.sec_addr, "\\PIPE\\srvsvc");
        assert_eq!(a.results[0].result, dcerpc::RESULT_ACCEPTANCE);
        assert!(p.read(4280).is_none());
        // Written in two pieces, like a client splitting a large write.
        let e = unhex(ENUM);
        p.write(&e[..10], &view()).unwrap();
        assert!(p.read(4280).is_none());
        p.write(&e[10..], &view()).unwrap();
        let (first, more) = p.read(20).unwrap();
        assert!(more);
        let (rest, more) = p.read(4280).unwrap();
        assert!(!more);
        let resp = [first, rest].concat();
        let d = dcerpc::decode(&resp).unwrap();
        assert_eq!(d.header.call_id, 2);
        let Body::Response(r) = d.body else { panic!() };
        assert_eq!(r.stub[12..16], 3u32.to_le_bytes());
        assert_eq!(r.stub[r.stub.len() - 4..], [0, 0, 0, 0]);
    }

    #[test]
    fn unread_output_is_bounded() {
        let mut p = Pipe::new(FileId::default(), 1, 1);
        let bind = unhex(BIND);
        let mut refused = false;
        for _ in 0..10_000 {
            if p.write(&bind, &view()).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert!(p.available() <= MAX_PENDING_OUTPUT + 4280);
    }

    #[test]
    fn faults() {
        let mut p = Pipe::new(FileId::default(), 1, 1);
        // A request before any bind: no such context.
        p.write(&unhex(ENUM), &view()).unwrap();
        let d = dcerpc::decode(&p.read(4280).unwrap().0).unwrap();
        assert!(matches!(d.body, Body::Fault(f) if f.status == dcerpc::fault::CONTEXT_MISMATCH));
        p.write(&unhex(BIND), &view()).unwrap();
        p.read(4280).unwrap();
        // Unknown opnum.
        let mut e = unhex(ENUM);
        e[22] = 99;
        p.write(&e, &view()).unwrap();
        let d = dcerpc::decode(&p.read(4280).unwrap().0).unwrap();
        assert!(matches!(d.body, Body::Fault(f) if f.status == dcerpc::fault::OP_RNG_ERROR));
        // A first-but-not-last fragment.
        let mut e = unhex(ENUM);
        e[3] = dcerpc::PFC_FIRST_FRAG;
        p.write(&e, &view()).unwrap();
        let d = dcerpc::decode(&p.read(4280).unwrap().0).unwrap();
        assert!(matches!(d.body, Body::Fault(f) if f.status == dcerpc::fault::PROTO_ERROR));
        // Big-endian data representation.
        let mut e = unhex(ENUM);
        e[4] = 0;
        p.write(&e, &view()).unwrap();
        let d = dcerpc::decode_header(&p.read(4280).unwrap().0).unwrap();
        assert_eq!(d.ptype, dcerpc::PTYPE_FAULT);
    }

    #[test]
    fn rejects_other_syntaxes() {
        let mut b = unhex(BIND);
        b[32] ^= 0xff; // abstract syntax uuid
        let mut p = Pipe::new(FileId::default(), 1, 1);
        p.write(&b, &view()).unwrap();
        let d = dcerpc::decode(&p.read(4280).unwrap().0).unwrap();
        let Body::BindAck(a) = d.body else { panic!() };
        assert_eq!(a.results[0].result, dcerpc::RESULT_PROVIDER_REJECTION);
        assert_eq!(
            a.results[0].reason,
            dcerpc::REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED
        );
        let mut b = unhex(BIND);
        b[52] ^= 0xff; // transfer syntax uuid
        p.write(&b, &view()).unwrap();
        let d = dcerpc::decode(&p.read(4280).unwrap().0).unwrap();
        let Body::BindAck(a) = d.body else { panic!() };
        assert_eq!(
            a.results[0].reason,
            dcerpc::REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED
        );
    }
}
