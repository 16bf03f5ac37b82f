//! SMB2 CREATE (MS-SMB2 2.2.13, 2.2.14) and create contexts (2.2.13.2, 2.2.14.2).
//!
//! The file name is decoded from UTF-16LE as sent; no path normalization here.

use super::info::{len32, off16, request_body, request_buffer, take_file_id};
use super::{from_utf16le, pad_to, utf16le, FileId, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64, le_u8};

/// RequestedOplockLevel / OplockLevel values.
pub mod oplock {
    pub const NONE: u8 = 0x00;
    pub const II: u8 = 0x01;
    pub const EXCLUSIVE: u8 = 0x08;
    pub const BATCH: u8 = 0x09;
    pub const LEASE: u8 = 0xFF;
}

/// ImpersonationLevel values.
pub mod impersonation {
    pub const ANONYMOUS: u32 = 0;
    pub const IDENTIFICATION: u32 = 1;
    pub const IMPERSONATION: u32 = 2;
    pub const DELEGATE: u32 = 3;
}

/// Lease state bits (SMB2_LEASE_*_CACHING).
pub mod lease_state {
    pub const NONE: u32 = 0x00;
    pub const READ: u32 = 0x01;
    pub const HANDLE: u32 = 0x02;
    pub const WRITE: u32 = 0x04;
}

/// Lease context flags.
pub mod lease_flags {
    pub const BREAK_IN_PROGRESS: u32 = 0x02;
    pub const PARENT_LEASE_KEY_SET: u32 = 0x04;
}

/// DH2Q / DH2C Flags.
pub mod durable_flags {
    pub const PERSISTENT: u32 = 0x02;
}

/// CREATE response Flags.
pub mod response_flags {
    pub const REPARSEPOINT: u8 = 0x01;
}

/// Create context names as they appear on the wire.
pub mod ctx {
    pub const EA_BUFFER: &[u8] = b"ExtA";
    pub const SD_BUFFER: &[u8] = b"SecD";
    pub const DURABLE_HANDLE_REQUEST: &[u8] = b"DHnQ";
    pub const DURABLE_HANDLE_RECONNECT: &[u8] = b"DHnC";
    pub const ALLOCATION_SIZE: &[u8] = b"AlSi";
    pub const QUERY_MAXIMAL_ACCESS: &[u8] = b"MxAc";
    pub const TIMEWARP_TOKEN: &[u8] = b"TWrp";
    pub const QUERY_ON_DISK_ID: &[u8] = b"QFid";
    pub const REQUEST_LEASE: &[u8] = b"RqLs";
    pub const DURABLE_HANDLE_REQUEST_V2: &[u8] = b"DH2Q";
    pub const DURABLE_HANDLE_RECONNECT_V2: &[u8] = b"DH2C";
    pub const APP_INSTANCE_ID: &[u8] = &[
        0x45, 0xBC, 0xA6, 0x6A, 0xEF, 0xA7, 0xF7, 0x4A, 0x90, 0x08, 0xFA, 0x46, 0x2E, 0x14, 0x4D,
        0x74,
    ];
    pub const APP_INSTANCE_VERSION: &[u8] = &[
        0xB9, 0x82, 0xD0, 0xB7, 0x3B, 0x56, 0x07, 0x4F, 0xA0, 0x7B, 0x52, 0x4A, 0x81, 0x16, 0xA0,
        0x10,
    ];
}

const REQ_SIZE: u16 = 57;
const REQ_FIXED: usize = 56;
const RESP_SIZE: u16 = 89;
const RESP_FIXED: usize = 88;
const CTX_HDR: usize = 16;

/// One create context: a name (4 ASCII bytes or a 16-byte GUID) and opaque data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateContext {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

impl CreateContext {
    pub fn new(name: &[u8], data: Vec<u8>) -> Self {
        CreateContext {
            name: name.to_vec(),
            data,
        }
    }

    /// The first context in `ctxs` named `name`.
    pub fn find<'a>(ctxs: &'a [CreateContext], name: &[u8]) -> Option<&'a CreateContext> {
        ctxs.iter().find(|c| c.name == name)
    }
}

/// Parses a chain of create contexts occupying exactly `buf`.
/// Every Next/Name/Data offset and length is checked; a malformed chain is an error.
pub fn decode_contexts(buf: &[u8]) -> Result<Vec<CreateContext>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let c = &buf[pos..];
        if c.len() < CTX_HDR {
            return Err(WireError::Invalid("create context truncated"));
        }
        let (i, next) = le_u32(c)?;
        let (i, name_off) = le_u16(i)?;
        let (i, name_len) = le_u16(i)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, data_off) = le_u16(i)?;
        let (_, data_len) = le_u32(i)?;
        let next = next as usize;
        let this = if next == 0 {
            c
        } else {
            if !next.is_multiple_of(8) || next < CTX_HDR || next > c.len() {
                return Err(WireError::Invalid("create context next offset"));
            }
            &c[..next]
        };
        let (name_off, name_len) = (name_off as usize, name_len as usize);
        if name_len == 0 || name_off < CTX_HDR {
            return Err(WireError::Invalid("create context name"));
        }
        let name = super::slice_at(this, name_off, name_len)?;
        let data_len = data_len as usize;
        let data = if data_len == 0 {
            &[][..]
        } else {
            if (data_off as usize) < CTX_HDR {
                return Err(WireError::Invalid("create context data offset"));
            }
            super::slice_at(this, data_off as usize, data_len)?
        };
        out.push(CreateContext {
            name: name.to_vec(),
            data: data.to_vec(),
        });
        if next == 0 {
            break;
        }
        pos += next;
    }
    Ok(out)
}

/// Appends `ctxs` to `out` as an 8-byte aligned chain (after padding `out` to 8).
/// Returns (offset of the first context in `out`, total length), both 0 when
/// `ctxs` is empty.
pub fn encode_contexts(out: &mut BytesMut, ctxs: &[CreateContext]) -> (u32, u32) {
    if ctxs.is_empty() {
        return (0, 0);
    }
    pad_to(out, 8);
    let first = out.len();
    for (n, c) in ctxs.iter().enumerate() {
        let start = out.len();
        let name_len = c.name.len();
        // Data starts 8-aligned after the name.
        let data_rel = (CTX_HDR + name_len).div_ceil(8) * 8;
        out.put_u32_le(0); // Next, patched below
        out.put_u16_le(CTX_HDR as u16);
        out.put_u16_le(u16::try_from(name_len).unwrap_or(0));
        out.put_u16_le(0);
        out.put_u16_le(if c.data.is_empty() {
            0
        } else {
            off16(data_rel)
        });
        out.put_u32_le(len32(c.data.len()));
        out.put_slice(&c.name);
        if !c.data.is_empty() {
            pad_to(out, 8);
            out.put_slice(&c.data);
        }
        if n + 1 < ctxs.len() {
            pad_to(out, 8);
            let next = len32(out.len() - start);
            out[start..start + 4].copy_from_slice(&next.to_le_bytes());
        }
    }
    (len32(first), len32(out.len() - first))
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    pub security_flags: u8,
    pub requested_oplock_level: u8,
    pub impersonation_level: u32,
    pub smb_create_flags: u64,
    pub desired_access: u32,
    pub file_attributes: u32,
    pub share_access: u32,
    pub create_disposition: u32,
    pub create_options: u32,
    /// As sent, decoded from UTF-16LE; empty when NameLength is 0.
    pub name: String,
    pub contexts: Vec<CreateContext>,
}

impl CreateRequest {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, REQ_SIZE, REQ_FIXED, "create structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, security_flags) = le_u8(i)?;
        let (i, requested_oplock_level) = le_u8(i)?;
        let (i, impersonation_level) = le_u32(i)?;
        let (i, smb_create_flags) = le_u64(i)?;
        let (i, _reserved) = le_u64(i)?;
        let (i, desired_access) = le_u32(i)?;
        let (i, file_attributes) = le_u32(i)?;
        let (i, share_access) = le_u32(i)?;
        let (i, create_disposition) = le_u32(i)?;
        let (i, create_options) = le_u32(i)?;
        let (i, name_off) = le_u16(i)?;
        let (i, name_len) = le_u16(i)?;
        let (i, ctx_off) = le_u32(i)?;
        let (_, ctx_len) = le_u32(i)?;
        let name = request_buffer(msg, REQ_FIXED, name_off as usize, name_len as usize)?;
        let name = from_utf16le(name)?;
        let ctx_buf = request_buffer(msg, REQ_FIXED, ctx_off as usize, ctx_len as usize)?;
        let contexts = decode_contexts(ctx_buf)?;
        Ok(CreateRequest {
            security_flags,
            requested_oplock_level,
            impersonation_level,
            smb_create_flags,
            desired_access,
            file_attributes,
            share_access,
            create_disposition,
            create_options,
            name,
            contexts,
        })
    }

    /// Appends the request body (for tests and clients): name at 0x78, contexts
    /// 8-aligned after it.
    pub fn encode(&self, out: &mut BytesMut) {
        let body = out.len();
        let name = utf16le(&self.name);
        out.put_u16_le(REQ_SIZE);
        out.put_u8(self.security_flags);
        out.put_u8(self.requested_oplock_level);
        out.put_u32_le(self.impersonation_level);
        out.put_u64_le(self.smb_create_flags);
        out.put_u64_le(0);
        out.put_u32_le(self.desired_access);
        out.put_u32_le(self.file_attributes);
        out.put_u32_le(self.share_access);
        out.put_u32_le(self.create_disposition);
        out.put_u32_le(self.create_options);
        out.put_u16_le(off16(body + REQ_FIXED));
        out.put_u16_le(u16::try_from(name.len()).unwrap_or(0));
        let ctx_fields = out.len();
        out.put_u32_le(0);
        out.put_u32_le(0);
        out.put_slice(&name);
        if name.is_empty() && self.contexts.is_empty() {
            out.put_u8(0);
        }
        let (off, len) = encode_contexts(out, &self.contexts);
        out[ctx_fields..ctx_fields + 4].copy_from_slice(&off.to_le_bytes());
        out[ctx_fields + 4..ctx_fields + 8].copy_from_slice(&len.to_le_bytes());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateResponse {
    pub oplock_level: u8,
    pub flags: u8,
    pub create_action: u32,
    pub creation_time: u64,
    pub last_access_time: u64,
    pub last_write_time: u64,
    pub change_time: u64,
    pub allocation_size: u64,
    pub end_of_file: u64,
    pub file_attributes: u32,
    pub file_id: FileId,
    pub contexts: Vec<CreateContext>,
}

impl CreateResponse {
    /// Appends the body; contexts are 8-aligned and chained. Without contexts a
    /// single pad byte stands for the Buffer.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(RESP_FIXED + 8);
        out.put_u16_le(RESP_SIZE);
        out.put_u8(self.oplock_level);
        out.put_u8(self.flags);
        out.put_u32_le(self.create_action);
        out.put_u64_le(self.creation_time);
        out.put_u64_le(self.last_access_time);
        out.put_u64_le(self.last_write_time);
        out.put_u64_le(self.change_time);
        out.put_u64_le(self.allocation_size);
        out.put_u64_le(self.end_of_file);
        out.put_u32_le(self.file_attributes);
        out.put_u32_le(0);
        self.file_id.encode(out);
        let ctx_fields = out.len();
        out.put_u32_le(0);
        out.put_u32_le(0);
        if self.contexts.is_empty() {
            out.put_u8(0);
            return;
        }
        let (off, len) = encode_contexts(out, &self.contexts);
        out[ctx_fields..ctx_fields + 4].copy_from_slice(&off.to_le_bytes());
        out[ctx_fields + 4..ctx_fields + 8].copy_from_slice(&len.to_le_bytes());
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, RESP_SIZE, RESP_FIXED, "create response structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, oplock_level) = le_u8(i)?;
        let (i, flags) = le_u8(i)?;
        let (i, create_action) = le_u32(i)?;
        let (i, creation_time) = le_u64(i)?;
        let (i, last_access_time) = le_u64(i)?;
        let (i, last_write_time) = le_u64(i)?;
        let (i, change_time) = le_u64(i)?;
        let (i, allocation_size) = le_u64(i)?;
        let (i, end_of_file) = le_u64(i)?;
        let (i, file_attributes) = le_u32(i)?;
        let (i, _reserved2) = le_u32(i)?;
        let (i, file_id) = take_file_id(i)?;
        let (i, ctx_off) = le_u32(i)?;
        let (_, ctx_len) = le_u32(i)?;
        let ctx_buf = request_buffer(msg, RESP_FIXED, ctx_off as usize, ctx_len as usize)?;
        Ok(CreateResponse {
            oplock_level,
            flags,
            create_action,
            creation_time,
            last_access_time,
            last_write_time,
            change_time,
            allocation_size,
            end_of_file,
            file_attributes,
            file_id,
            contexts: decode_contexts(ctx_buf)?,
        })
    }
}

// ---------------------------------------------------------------------------
// Typed create context payloads. `decode` takes a context's data; `encode`
// returns it; `context()` wraps it with its name.

fn exact(data: &[u8], n: usize, what: &'static str) -> Result<(), WireError> {
    if data.len() != n {
        return Err(WireError::Invalid(what));
    }
    Ok(())
}

fn guid(i: &[u8]) -> Result<(&[u8], [u8; 16]), WireError> {
    let b = i.get(..16).ok_or(WireError::Truncated)?;
    let mut g = [0u8; 16];
    g.copy_from_slice(b);
    Ok((&i[16..], g))
}

/// MxAc request: an optional timestamp (DataLength 0 or 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MxAcRequest {
    pub timestamp: Option<u64>,
}

impl MxAcRequest {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        match data.len() {
            0 => Ok(MxAcRequest { timestamp: None }),
            8 => Ok(MxAcRequest {
                timestamp: Some(le_u64(data)?.1),
            }),
            _ => Err(WireError::Invalid("MxAc length")),
        }
    }
    pub fn encode(&self) -> Vec<u8> {
        self.timestamp
            .map(|t| t.to_le_bytes().to_vec())
            .unwrap_or_default()
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::QUERY_MAXIMAL_ACCESS, self.encode())
    }
}

/// MxAc response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MxAcResponse {
    pub query_status: u32,
    pub maximal_access: u32,
}

impl MxAcResponse {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 8, "MxAc response length")?;
        let (i, query_status) = le_u32(data)?;
        let (_, maximal_access) = le_u32(i)?;
        Ok(MxAcResponse {
            query_status,
            maximal_access,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&self.query_status.to_le_bytes());
        v.extend_from_slice(&self.maximal_access.to_le_bytes());
        v
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::QUERY_MAXIMAL_ACCESS, self.encode())
    }
}

/// QFid response: DiskFileId, VolumeId, 16 reserved bytes (32 in all).
/// (The QFid request has no data.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QFidResponse {
    pub disk_file_id: u64,
    pub volume_id: u64,
}

impl QFidResponse {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 32, "QFid response length")?;
        let (i, disk_file_id) = le_u64(data)?;
        let (_, volume_id) = le_u64(i)?;
        Ok(QFidResponse {
            disk_file_id,
            volume_id,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.extend_from_slice(&self.disk_file_id.to_le_bytes());
        v.extend_from_slice(&self.volume_id.to_le_bytes());
        v.extend_from_slice(&[0u8; 16]);
        v
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::QUERY_ON_DISK_ID, self.encode())
    }
}

/// DHnQ request: 16 reserved bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleRequest;

impl DurableHandleRequest {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 16, "DHnQ length")?;
        Ok(DurableHandleRequest)
    }
    pub fn encode(&self) -> Vec<u8> {
        vec![0u8; 16]
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_REQUEST, self.encode())
    }
}

/// DHnQ response: 8 reserved bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleResponse;

impl DurableHandleResponse {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 8, "DHnQ response length")?;
        Ok(DurableHandleResponse)
    }
    pub fn encode(&self) -> Vec<u8> {
        vec![0u8; 8]
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_REQUEST, self.encode())
    }
}

/// DHnC request: the FileId of the durable open being reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleReconnect {
    pub file_id: FileId,
}

impl DurableHandleReconnect {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 16, "DHnC length")?;
        Ok(DurableHandleReconnect {
            file_id: take_file_id(data)?.1,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(16);
        self.file_id.encode(&mut b);
        b.to_vec()
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_RECONNECT, self.encode())
    }
}

/// DH2Q request: Timeout, Flags, 8 reserved, CreateGuid (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleRequestV2 {
    pub timeout: u32,
    pub flags: u32,
    pub create_guid: [u8; 16],
}

impl DurableHandleRequestV2 {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 32, "DH2Q length")?;
        let (i, timeout) = le_u32(data)?;
        let (i, flags) = le_u32(i)?;
        let (i, _reserved) = le_u64(i)?;
        let (_, create_guid) = guid(i)?;
        Ok(DurableHandleRequestV2 {
            timeout,
            flags,
            create_guid,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.extend_from_slice(&self.timeout.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&[0u8; 8]);
        v.extend_from_slice(&self.create_guid);
        v
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_REQUEST_V2, self.encode())
    }
}

/// DH2Q response: Timeout, Flags (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleResponseV2 {
    pub timeout: u32,
    pub flags: u32,
}

impl DurableHandleResponseV2 {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 8, "DH2Q response length")?;
        let (i, timeout) = le_u32(data)?;
        let (_, flags) = le_u32(i)?;
        Ok(DurableHandleResponseV2 { timeout, flags })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&self.timeout.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_REQUEST_V2, self.encode())
    }
}

/// DH2C request: FileId, CreateGuid, Flags (36 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHandleReconnectV2 {
    pub file_id: FileId,
    pub create_guid: [u8; 16],
    pub flags: u32,
}

impl DurableHandleReconnectV2 {
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        exact(data, 36, "DH2C length")?;
        let (i, file_id) = take_file_id(data)?;
        let (i, create_guid) = guid(i)?;
        let (_, flags) = le_u32(i)?;
        Ok(DurableHandleReconnectV2 {
            file_id,
            create_guid,
            flags,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(36);
        self.file_id.encode(&mut b);
        b.put_slice(&self.create_guid);
        b.put_u32_le(self.flags);
        b.to_vec()
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::DURABLE_HANDLE_RECONNECT_V2, self.encode())
    }
}

/// The v2-only part of a lease context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseV2 {
    pub parent_key: [u8; 16],
    pub epoch: u16,
}

/// RqLs request or response: v1 (32 bytes) or v2 (52 bytes, `v2` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseContext {
    pub key: [u8; 16],
    pub state: u32,
    pub flags: u32,
    pub duration: u64,
    pub v2: Option<LeaseV2>,
}

impl LeaseContext {
    pub const V1_LEN: usize = 32;
    pub const V2_LEN: usize = 52;

    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        if data.len() != Self::V1_LEN && data.len() != Self::V2_LEN {
            return Err(WireError::Invalid("RqLs length"));
        }
        let (i, key) = guid(data)?;
        let (i, state) = le_u32(i)?;
        let (i, flags) = le_u32(i)?;
        let (i, duration) = le_u64(i)?;
        let v2 = if data.len() == Self::V2_LEN {
            let (i, parent_key) = guid(i)?;
            let (_, epoch) = le_u16(i)?;
            Some(LeaseV2 { parent_key, epoch })
        } else {
            None
        };
        Ok(LeaseContext {
            key,
            state,
            flags,
            duration,
            v2,
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::V2_LEN);
        v.extend_from_slice(&self.key);
        v.extend_from_slice(&self.state.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.duration.to_le_bytes());
        if let Some(x) = &self.v2 {
            v.extend_from_slice(&x.parent_key);
            v.extend_from_slice(&x.epoch.to_le_bytes());
            v.extend_from_slice(&[0u8; 2]);
        }
        v
    }
    pub fn context(&self) -> CreateContext {
        CreateContext::new(ctx::REQUEST_LEASE, self.encode())
    }
}

/// Decodes an 8-byte little-endian payload (AlSi AllocationSize, TWrp Timestamp).
pub fn decode_u64_context(data: &[u8]) -> Result<u64, WireError> {
    exact(data, 8, "context length")?;
    Ok(le_u64(data)?.1)
}

/// AlSi: requested allocation size.
pub fn decode_allocation_size(data: &[u8]) -> Result<u64, WireError> {
    decode_u64_context(data)
}

/// TWrp: snapshot timestamp (NT time).
pub fn decode_timewarp(data: &[u8]) -> Result<u64, WireError> {
    decode_u64_context(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HEADER_LEN;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn hdr() -> BytesMut {
        let mut b = BytesMut::new();
        b.resize(HEADER_LEN, 0);
        b
    }

    fn fid() -> impl Strategy<Value = FileId> {
        (any::<u64>(), any::<u64>()).prop_map(|(persistent, volatile)| FileId {
            persistent,
            volatile,
        })
    }

    fn context() -> impl Strategy<Value = CreateContext> {
        (vec(any::<u8>(), 1..20), vec(any::<u8>(), 0..64))
            .prop_map(|(name, data)| CreateContext { name, data })
    }

    proptest! {
        #[test]
        fn create_request_round_trip(sf in any::<u8>(), ol in any::<u8>(), il in any::<u32>(), cf in any::<u64>(),
                da in any::<u32>(), fa in any::<u32>(), sa in any::<u32>(), cd in any::<u32>(), co in any::<u32>(),
                name in "\\PC{0,30}", contexts in vec(context(), 0..5)) {
            let r = CreateRequest { security_flags: sf, requested_oplock_level: ol, impersonation_level: il,
                smb_create_flags: cf, desired_access: da, file_attributes: fa, share_access: sa,
                create_disposition: cd, create_options: co, name, contexts };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(CreateRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn create_response_round_trip(ol in any::<u8>(), fl in any::<u8>(), ca in any::<u32>(), t in any::<[u64; 6]>(),
                fa in any::<u32>(), file_id in fid(), contexts in vec(context(), 0..5)) {
            let r = CreateResponse { oplock_level: ol, flags: fl, create_action: ca, creation_time: t[0],
                last_access_time: t[1], last_write_time: t[2], change_time: t[3], allocation_size: t[4],
                end_of_file: t[5], file_attributes: fa, file_id, contexts };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert!(b.len() >= HEADER_LEN + 89);
            if !r.contexts.is_empty() {
                let off = u32::from_le_bytes(b[HEADER_LEN + 80..HEADER_LEN + 84].try_into().unwrap());
                prop_assert_eq!(off % 8, 0);
            }
            prop_assert_eq!(CreateResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn contexts_chain_aligned(contexts in vec(context(), 1..6)) {
            let mut b = hdr();
            b.put_u8(0); // misalign on purpose
            let (off, len) = encode_contexts(&mut b, &contexts);
            prop_assert_eq!(off % 8, 0);
            let region = &b[off as usize..(off + len) as usize];
            let mut pos = 0usize;
            loop {
                let next = u32::from_le_bytes(region[pos..pos + 4].try_into().unwrap()) as usize;
                prop_assert_eq!(next % 8, 0);
                let doff = u16::from_le_bytes(region[pos + 10..pos + 12].try_into().unwrap()) as usize;
                prop_assert_eq!(doff % 8, 0);
                if next == 0 { break; }
                pos += next;
            }
            prop_assert_eq!(decode_contexts(region).unwrap(), contexts);
        }

        #[test]
        fn create_decoders_never_panic(data in vec(any::<u8>(), 0..300)) {
            let _ = CreateRequest::decode(&data);
            let _ = CreateResponse::decode(&data);
            let _ = decode_contexts(&data);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&57u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = CreateRequest::decode(&m);
            let mut m = vec![0u8; HEADER_LEN];
            m.extend_from_slice(&89u16.to_le_bytes());
            m.extend_from_slice(&data);
            let _ = CreateResponse::decode(&m);
            let _ = LeaseContext::decode(&data);
            let _ = MxAcRequest::decode(&data);
            let _ = DurableHandleReconnectV2::decode(&data);
        }

        #[test]
        fn mxac_round_trip(ts in proptest::option::of(any::<u64>()), qs in any::<u32>(), ma in any::<u32>()) {
            let r = MxAcRequest { timestamp: ts };
            prop_assert_eq!(MxAcRequest::decode(&r.context().data).unwrap(), r);
            let s = MxAcResponse { query_status: qs, maximal_access: ma };
            prop_assert_eq!(MxAcResponse::decode(&s.context().data).unwrap(), s);
        }

        #[test]
        fn qfid_round_trip(d in any::<u64>(), v in any::<u64>()) {
            let r = QFidResponse { disk_file_id: d, volume_id: v };
            let c = r.context();
            prop_assert_eq!(c.data.len(), 32);
            prop_assert_eq!(QFidResponse::decode(&c.data).unwrap(), r);
        }

        #[test]
        fn durable_round_trip(file_id in fid(), t in any::<u32>(), f in any::<u32>(), g in any::<[u8; 16]>()) {
            prop_assert_eq!(DurableHandleRequest::decode(&DurableHandleRequest.encode()).unwrap(), DurableHandleRequest);
            prop_assert_eq!(DurableHandleResponse::decode(&DurableHandleResponse.encode()).unwrap(), DurableHandleResponse);
            let c = DurableHandleReconnect { file_id };
            prop_assert_eq!(DurableHandleReconnect::decode(&c.encode()).unwrap(), c);
            let q = DurableHandleRequestV2 { timeout: t, flags: f, create_guid: g };
            prop_assert_eq!(q.encode().len(), 32);
            prop_assert_eq!(DurableHandleRequestV2::decode(&q.encode()).unwrap(), q);
            let qr = DurableHandleResponseV2 { timeout: t, flags: f };
            prop_assert_eq!(DurableHandleResponseV2::decode(&qr.encode()).unwrap(), qr);
            let c2 = DurableHandleReconnectV2 { file_id, create_guid: g, flags: f };
            prop_assert_eq!(c2.encode().len(), 36);
            prop_assert_eq!(DurableHandleReconnectV2::decode(&c2.encode()).unwrap(), c2);
        }

        #[test]
        fn lease_round_trip(key in any::<[u8; 16]>(), st in any::<u32>(), fl in any::<u32>(), du in any::<u64>(),
                v2 in proptest::option::of((any::<[u8; 16]>(), any::<u16>()))) {
            let l = LeaseContext { key, state: st, flags: fl, duration: du,
                v2: v2.map(|(parent_key, epoch)| LeaseV2 { parent_key, epoch }) };
            let d = l.encode();
            prop_assert_eq!(d.len(), if l.v2.is_some() { 52 } else { 32 });
            prop_assert_eq!(LeaseContext::decode(&d).unwrap(), l);
        }

        #[test]
        fn u64_contexts_round_trip(v in any::<u64>()) {
            prop_assert_eq!(decode_allocation_size(&v.to_le_bytes()).unwrap(), v);
            prop_assert_eq!(decode_timewarp(&v.to_le_bytes()).unwrap(), v);
        }
    }

    /// Hand-assembled from the MS-SMB2 2.2.13 field table, independent of the encoder.
    #[test]
    fn create_request_known_layout() {
        let mut m = vec![0u8; HEADER_LEN];
        let mut body = vec![0u8; 56];
        body[0] = 57;
        body[3] = oplock::BATCH;
        body[4] = 2; // impersonation
        body[24..28].copy_from_slice(&0x0012_0089u32.to_le_bytes()); // desired access
        body[28..32].copy_from_slice(&0x80u32.to_le_bytes());
        body[32..36].copy_from_slice(&7u32.to_le_bytes());
        body[36..40].copy_from_slice(&1u32.to_le_bytes());
        body[40..44].copy_from_slice(&0x40u32.to_le_bytes());
        body[44..46].copy_from_slice(&0x78u16.to_le_bytes());
        body[46..48].copy_from_slice(&6u16.to_le_bytes());
        body[48..52].copy_from_slice(&0x80u32.to_le_bytes());
        // CreateContextsLength is patched below.
        m.extend_from_slice(&body);
        m.extend_from_slice(&[b'a', 0, b'\\', 0, b'b', 0, 0, 0]); // "a\\b" + pad to 0x80
                                                                  // One MxAc context without data.
        let mut c = vec![0u8; 16];
        c[4..6].copy_from_slice(&16u16.to_le_bytes());
        c[6..8].copy_from_slice(&4u16.to_le_bytes());
        c.extend_from_slice(b"MxAc");
        let clen = c.len() as u32;
        m.extend_from_slice(&c);
        m[HEADER_LEN + 52..HEADER_LEN + 56].copy_from_slice(&clen.to_le_bytes());
        let r = CreateRequest::decode(&m).unwrap();
        assert_eq!(r.requested_oplock_level, oplock::BATCH);
        assert_eq!(r.impersonation_level, 2);
        assert_eq!(r.desired_access, 0x0012_0089);
        assert_eq!(r.file_attributes, 0x80);
        assert_eq!(r.share_access, 7);
        assert_eq!(r.create_disposition, 1);
        assert_eq!(r.create_options, 0x40);
        assert_eq!(r.name, "a\\b");
        assert_eq!(r.contexts, vec![CreateContext::new(b"MxAc", vec![])]);
        assert_eq!(
            MxAcRequest::decode(&r.contexts[0].data).unwrap(),
            MxAcRequest { timestamp: None }
        );
    }

    #[test]
    fn empty_name_and_no_contexts() {
        let r = CreateRequest::default();
        let mut b = hdr();
        r.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN + 57);
        assert_eq!(CreateRequest::decode(&b).unwrap(), r);
    }

    #[test]
    fn malformed_context_chains_rejected() {
        let ctxs = vec![
            MxAcRequest::default().context(),
            LeaseContext::default().context(),
        ];
        let mut b = BytesMut::new();
        let (off, len) = encode_contexts(&mut b, &ctxs);
        assert_eq!(off, 0);
        let good = b[..len as usize].to_vec();
        assert_eq!(decode_contexts(&good).unwrap(), ctxs);

        // Next not 8-aligned.
        let mut bad = good.clone();
        bad[0] = bad[0].wrapping_add(1);
        assert!(decode_contexts(&bad).is_err());
        // Next past the end.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(decode_contexts(&bad).is_err());
        // Zero-length name.
        let mut bad = good.clone();
        bad[6] = 0;
        assert!(decode_contexts(&bad).is_err());
        // Data past its context.
        let mut bad = good.clone();
        let next = u32::from_le_bytes(good[0..4].try_into().unwrap()) as usize;
        bad[next + 12..next + 16].copy_from_slice(&33u32.to_le_bytes());
        assert!(decode_contexts(&bad).is_err());
        // Truncated trailing context header.
        assert!(decode_contexts(&good[..next + 8]).is_err());
        // Name offset inside the context header.
        let mut bad = good;
        bad[4] = 8;
        assert!(decode_contexts(&bad).is_err());
    }

    #[test]
    fn typed_payload_lengths_checked() {
        assert!(MxAcRequest::decode(&[0; 4]).is_err());
        assert!(LeaseContext::decode(&[0; 40]).is_err());
        assert!(DurableHandleRequest::decode(&[0; 15]).is_err());
        assert!(QFidResponse::decode(&[0; 16]).is_err());
        assert!(decode_allocation_size(&[0; 7]).is_err());
    }

    #[test]
    fn find_context_by_name() {
        let ctxs = vec![
            DurableHandleRequest.context(),
            MxAcRequest::default().context(),
        ];
        assert!(CreateContext::find(&ctxs, ctx::QUERY_MAXIMAL_ACCESS).is_some());
        assert!(CreateContext::find(&ctxs, ctx::REQUEST_LEASE).is_none());
    }
}
