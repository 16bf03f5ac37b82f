//! IOCTL (MS-SMB2 2.2.31, 2.2.32), FSCTL/IOCTL codes (MS-FSCC 2.3, MS-SMB2 2.2.31)
//! and the VALIDATE_NEGOTIATE_INFO payloads (2.2.31.4, 2.2.32.6).

use super::simple::checked_body;
use super::{pad_to, slice_at, FileId, WireError};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32};

/// IoctlRequest.Flags / IoctlResponse.Flags.
pub const IOCTL_IS_FSCTL: u32 = 0x0000_0001;

/// Control codes (CtlCode).
pub mod fsctl {
    pub const DFS_GET_REFERRALS: u32 = 0x0006_0194;
    pub const DFS_GET_REFERRALS_EX: u32 = 0x0006_01B0;
    pub const PIPE_PEEK: u32 = 0x0011_400C;
    pub const PIPE_WAIT: u32 = 0x0011_0018;
    pub const PIPE_TRANSCEIVE: u32 = 0x0011_C017;
    pub const SRV_COPYCHUNK: u32 = 0x0014_40F2;
    pub const SRV_COPYCHUNK_WRITE: u32 = 0x0014_80F2;
    pub const SRV_ENUMERATE_SNAPSHOTS: u32 = 0x0014_4064;
    pub const SRV_REQUEST_RESUME_KEY: u32 = 0x0014_0078;
    pub const SRV_READ_HASH: u32 = 0x0014_41BB;
    pub const LMR_REQUEST_RESILIENCY: u32 = 0x0014_01D4;
    pub const QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;
    pub const VALIDATE_NEGOTIATE_INFO: u32 = 0x0014_0204;

    pub const IS_PATHNAME_VALID: u32 = 0x0009_002C;
    pub const GET_COMPRESSION: u32 = 0x0009_003C;
    pub const SET_COMPRESSION: u32 = 0x0009_C040;
    pub const FILESYSTEM_GET_STATISTICS: u32 = 0x0009_0060;
    pub const GET_NTFS_VOLUME_DATA: u32 = 0x0009_0064;
    pub const SET_OBJECT_ID: u32 = 0x0009_0098;
    pub const GET_OBJECT_ID: u32 = 0x0009_009C;
    pub const DELETE_OBJECT_ID: u32 = 0x0009_00A0;
    pub const SET_REPARSE_POINT: u32 = 0x0009_00A4;
    pub const GET_REPARSE_POINT: u32 = 0x0009_00A8;
    pub const DELETE_REPARSE_POINT: u32 = 0x0009_00AC;
    pub const SET_OBJECT_ID_EXTENDED: u32 = 0x0009_00BC;
    pub const CREATE_OR_GET_OBJECT_ID: u32 = 0x0009_00C0;
    pub const SET_SPARSE: u32 = 0x0009_00C4;
    pub const SET_ZERO_DATA: u32 = 0x0009_80C8;
    pub const QUERY_ALLOCATED_RANGES: u32 = 0x0009_40CF;
    pub const SET_ZERO_ON_DEALLOCATION: u32 = 0x0009_0194;
    pub const GET_INTEGRITY_INFORMATION: u32 = 0x0009_027C;
    pub const SET_INTEGRITY_INFORMATION: u32 = 0x0009_C280;
    pub const QUERY_FILE_REGIONS: u32 = 0x0009_0284;
    pub const FILE_LEVEL_TRIM: u32 = 0x0009_8208;
    pub const OFFLOAD_READ: u32 = 0x0009_4264;
    pub const OFFLOAD_WRITE: u32 = 0x0009_8268;
    pub const DUPLICATE_EXTENTS_TO_FILE: u32 = 0x0009_8344;
}

/// SMB2 IOCTL Request (MS-SMB2 2.2.31).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoctlRequest {
    pub ctl_code: u32,
    pub file_id: FileId,
    pub input: Vec<u8>,
    /// The request's own output buffer; clients send it empty.
    pub output: Vec<u8>,
    pub max_input_response: u32,
    pub max_output_response: u32,
    /// IOCTL_IS_FSCTL.
    pub flags: u32,
}

impl IoctlRequest {
    pub const STRUCTURE_SIZE: u16 = 57;
    const FIXED: usize = 56;

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, ctl_code) = le_u32(i)?;
        let (i, file_id) = FileId::parse(i)?;
        let (i, in_off) = le_u32(i)?;
        let (i, in_count) = le_u32(i)?;
        let (i, max_input_response) = le_u32(i)?;
        let (i, out_off) = le_u32(i)?;
        let (i, out_count) = le_u32(i)?;
        let (i, max_output_response) = le_u32(i)?;
        let (i, flags) = le_u32(i)?;
        let (_, _reserved2) = le_u32(i)?;
        let input = slice_at(msg, in_off as usize, in_count as usize)?.to_vec();
        let output = slice_at(msg, out_off as usize, out_count as usize)?.to_vec();
        Ok(IoctlRequest {
            ctl_code,
            file_id,
            input,
            output,
            max_input_response,
            max_output_response,
            flags,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        let in_off = start + Self::FIXED;
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(0);
        out.put_u32_le(self.ctl_code);
        self.file_id.encode(out);
        out.put_u32_le(in_off as u32);
        out.put_u32_le(self.input.len() as u32);
        out.put_u32_le(self.max_input_response);
        let out_off_at = out.len();
        out.put_u32_le(0); // OutputOffset, patched below
        out.put_u32_le(self.output.len() as u32);
        out.put_u32_le(self.max_output_response);
        out.put_u32_le(self.flags);
        out.put_u32_le(0);
        out.put_slice(&self.input);
        if !self.output.is_empty() {
            pad_to(out, 8);
        }
        let out_off = out.len() as u32;
        out[out_off_at..out_off_at + 4].copy_from_slice(&out_off.to_le_bytes());
        out.put_slice(&self.output);
    }
}

/// SMB2 IOCTL Response (MS-SMB2 2.2.32).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoctlResponse {
    pub ctl_code: u32,
    pub file_id: FileId,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub flags: u32,
}

impl IoctlResponse {
    pub const STRUCTURE_SIZE: u16 = 49;
    const FIXED: usize = 48;

    /// Appends the response. InputOffset is right after the fixed part, even
    /// when the input is empty; a non-empty output is 8-byte aligned after it.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        let in_off = start + Self::FIXED;
        out.put_u16_le(Self::STRUCTURE_SIZE);
        out.put_u16_le(0);
        out.put_u32_le(self.ctl_code);
        self.file_id.encode(out);
        out.put_u32_le(in_off as u32);
        out.put_u32_le(self.input.len() as u32);
        let out_off_at = out.len();
        out.put_u32_le(0); // OutputOffset, patched below
        out.put_u32_le(self.output.len() as u32);
        out.put_u32_le(self.flags);
        out.put_u32_le(0);
        out.put_slice(&self.input);
        if !self.output.is_empty() {
            pad_to(out, 8);
        }
        let out_off = out.len() as u32;
        out[out_off_at..out_off_at + 4].copy_from_slice(&out_off.to_le_bytes());
        out.put_slice(&self.output);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let i = checked_body(msg, Self::STRUCTURE_SIZE)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, ctl_code) = le_u32(i)?;
        let (i, file_id) = FileId::parse(i)?;
        let (i, in_off) = le_u32(i)?;
        let (i, in_count) = le_u32(i)?;
        let (i, out_off) = le_u32(i)?;
        let (i, out_count) = le_u32(i)?;
        let (i, flags) = le_u32(i)?;
        let (_, _reserved2) = le_u32(i)?;
        let input = slice_at(msg, in_off as usize, in_count as usize)?.to_vec();
        let output = slice_at(msg, out_off as usize, out_count as usize)?.to_vec();
        Ok(IoctlResponse {
            ctl_code,
            file_id,
            input,
            output,
            flags,
        })
    }
}

/// VALIDATE_NEGOTIATE_INFO request payload (MS-SMB2 2.2.31.4), the IOCTL input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidateNegotiateInfoRequest {
    pub capabilities: u32,
    pub guid: [u8; 16],
    pub security_mode: u16,
    pub dialects: Vec<u16>,
}

impl ValidateNegotiateInfoRequest {
    /// Decodes the IOCTL input buffer (not a whole message). Bytes after the
    /// dialects are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (i, capabilities) = le_u32(buf)?;
        let g = i.get(..16).ok_or(WireError::Truncated)?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(g);
        let (i, security_mode) = le_u16(&i[16..])?;
        let (i, count) = le_u16(i)?;
        let n = usize::from(count) * 2;
        let dialects = i
            .get(..n)
            .ok_or(WireError::Truncated)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(ValidateNegotiateInfoRequest {
            capabilities,
            guid,
            security_mode,
            dialects,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + 2 * self.dialects.len());
        b.extend_from_slice(&self.capabilities.to_le_bytes());
        b.extend_from_slice(&self.guid);
        b.extend_from_slice(&self.security_mode.to_le_bytes());
        b.extend_from_slice(&(self.dialects.len() as u16).to_le_bytes());
        for d in &self.dialects {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b
    }
}

/// VALIDATE_NEGOTIATE_INFO response payload (MS-SMB2 2.2.32.6), the IOCTL output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidateNegotiateInfoResponse {
    pub capabilities: u32,
    pub guid: [u8; 16],
    pub security_mode: u16,
    pub dialect: u16,
}

impl ValidateNegotiateInfoResponse {
    pub const LEN: usize = 24;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.extend_from_slice(&self.capabilities.to_le_bytes());
        b.extend_from_slice(&self.guid);
        b.extend_from_slice(&self.security_mode.to_le_bytes());
        b.extend_from_slice(&self.dialect.to_le_bytes());
        b
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (i, capabilities) = le_u32(buf)?;
        let g = i.get(..16).ok_or(WireError::Truncated)?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(g);
        let (i, security_mode) = le_u16(&i[16..])?;
        let (_, dialect) = le_u16(i)?;
        Ok(ValidateNegotiateInfoResponse {
            capabilities,
            guid,
            security_mode,
            dialect,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::simple::tests::{msg, with_header};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn file_id() -> impl Strategy<Value = FileId> {
        (any::<u64>(), any::<u64>()).prop_map(|(p, v)| FileId {
            persistent: p,
            volatile: v,
        })
    }

    proptest! {
        #[test]
        fn request_round_trip(ctl in any::<u32>(), fid in file_id(), input in vec(any::<u8>(), 0..100),
                              output in vec(any::<u8>(), 0..30), mi in any::<u32>(), mo in any::<u32>(),
                              flags in any::<u32>()) {
            let r = IoctlRequest { ctl_code: ctl, file_id: fid, input, output, max_input_response: mi,
                                   max_output_response: mo, flags };
            let mut b = with_header();
            r.encode(&mut b);
            prop_assert_eq!(IoctlRequest::decode(&b).unwrap(), r);
        }

        #[test]
        fn response_round_trip(ctl in any::<u32>(), fid in file_id(), input in vec(any::<u8>(), 0..100),
                               output in vec(any::<u8>(), 0..100), flags in any::<u32>()) {
            let r = IoctlResponse { ctl_code: ctl, file_id: fid, input, output, flags };
            let mut b = with_header();
            r.encode(&mut b);
            let out_off = u32::from_le_bytes([b[96], b[97], b[98], b[99]]);
            if !r.output.is_empty() {
                prop_assert_eq!(out_off % 8, 0);
            }
            prop_assert_eq!(IoctlResponse::decode(&b).unwrap(), r);
        }

        #[test]
        fn vni_round_trip(caps in any::<u32>(), guid in any::<[u8; 16]>(), sm in any::<u16>(),
                          dialects in vec(any::<u16>(), 0..8), d in any::<u16>()) {
            let q = ValidateNegotiateInfoRequest { capabilities: caps, guid, security_mode: sm, dialects };
            prop_assert_eq!(ValidateNegotiateInfoRequest::decode(&q.encode()).unwrap(), q);
            let r = ValidateNegotiateInfoResponse { capabilities: caps, guid, security_mode: sm, dialect: d };
            let e = r.encode();
            prop_assert_eq!(e.len(), ValidateNegotiateInfoResponse::LEN);
            prop_assert_eq!(ValidateNegotiateInfoResponse::decode(&e).unwrap(), r);
        }

        #[test]
        fn never_panics(body in vec(any::<u8>(), 0..160)) {
            let m = msg(&body);
            let _ = IoctlRequest::decode(&m);
            let _ = IoctlResponse::decode(&m);
            let _ = ValidateNegotiateInfoRequest::decode(&body);
            let _ = ValidateNegotiateInfoResponse::decode(&body);
        }
    }

    #[test]
    fn response_layout() {
        let r = IoctlResponse {
            ctl_code: fsctl::VALIDATE_NEGOTIATE_INFO,
            file_id: FileId::ANY,
            input: vec![],
            output: vec![9; 24],
            flags: IOCTL_IS_FSCTL,
        };
        let mut b = with_header();
        r.encode(&mut b);
        assert_eq!(u32::from_le_bytes([b[88], b[89], b[90], b[91]]), 112);
        assert_eq!(u32::from_le_bytes([b[96], b[97], b[98], b[99]]), 112);
        assert_eq!(b.len(), 112 + 24);
    }

    #[test]
    fn input_outside_message() {
        let mut b = with_header();
        IoctlRequest {
            input: vec![1; 8],
            ..Default::default()
        }
        .encode(&mut b);
        // InputCount huge.
        b[92..96].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IoctlRequest::decode(&b).is_err());
    }
}
