//! The srvsvc interface (MS-SRVS): enough of NetrShareEnumAll,
//! NetrShareGetInfo and NetrServerGetInfo for share browsing. Arguments and
//! results are NDR (C706 chapter 14) in the 32-bit little-endian transfer
//! syntax; stubs start 8-aligned, so alignment is relative to the stub start.

use crate::wire::dcerpc::{fault, Reader};
use crate::wire::WireError;

pub const OPNUM_SHARE_ENUM_ALL: u16 = 15;
pub const OPNUM_SHARE_GET_INFO: u16 = 16;
pub const OPNUM_SERVER_GET_INFO: u16 = 21;

/// Win32 / NERR results (MS-ERREF 2.2).
pub mod werr {
    pub const OK: u32 = 0;
    pub const ACCESS_DENIED: u32 = 5;
    pub const INVALID_LEVEL: u32 = 0x7C;
    /// What Windows answers NetrShareGetInfo for a share it does not have.
    pub const NET_NAME_NOT_FOUND: u32 = 0x906;
}

/// Share types (MS-SRVS 2.2.2.4).
pub const STYPE_DISKTREE: u32 = 0;
pub const STYPE_IPC_HIDDEN: u32 = 0x8000_0003;
/// SV_TYPE_WORKSTATION | SV_TYPE_SERVER | SV_TYPE_SERVER_NT (MS-SRVS 2.2.2.7).
pub const SERVER_TYPE: u32 = 0x0000_8003;
const PLATFORM_ID_NT: u32 = 500;

/// One share as browsing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareEntry {
    pub name: String,
    pub stype: u32,
    pub comment: String,
}

/// What srvsvc reports about this server; built from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    pub netbios_name: String,
    pub comment: String,
    /// Shares enumeration lists (browseable ones and IPC$).
    pub listed: Vec<ShareEntry>,
    /// Every share, for NetrShareGetInfo by name.
    pub all: Vec<ShareEntry>,
}

/// Runs one call; Err is a fault status for the RPC layer.
pub fn call(opnum: u16, stub: &[u8], view: &ServerView) -> Result<Vec<u8>, u32> {
    let bad = |_: WireError| fault::BAD_STUB_DATA;
    match opnum {
        OPNUM_SHARE_ENUM_ALL => Ok(share_enum_all(&parse_enum(stub).map_err(bad)?, view)),
        OPNUM_SHARE_GET_INFO => {
            let (name, level) = parse_get_info(stub).map_err(bad)?;
            Ok(share_get_info(&name, level, view))
        }
        OPNUM_SERVER_GET_INFO => {
            let mut r = Reader::new(stub);
            unique_string(&mut r).map_err(bad)?;
            let level = r.u32().map_err(bad)?;
            Ok(server_get_info(level, view))
        }
        _ => Err(fault::OP_RNG_ERROR),
    }
}

/// NetrShareEnumAll arguments we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumArgs {
    pub level: u32,
    /// None when the client passed no resume handle.
    pub resume: Option<u32>,
}

/// NetrShareEnumAll in: ServerName (unique string), InfoStruct (level, union
/// of a unique container pointer), PreferedMaximumLength, ResumeHandle (unique).
pub fn parse_enum(stub: &[u8]) -> Result<EnumArgs, WireError> {
    let mut r = Reader::new(stub);
    unique_string(&mut r)?;
    let level = r.u32()?;
    let _arm = r.u32()?;
    if r.u32()? != 0 {
        // The container: EntriesRead and a buffer pointer that clients leave null.
        let _entries = r.u32()?;
        if r.u32()? != 0 {
            return Err(WireError::Invalid("share enum buffer in request"));
        }
    }
    let _max_len = r.u32()?;
    let resume = match r.u32()? {
        0 => None,
        _ => Some(r.u32()?),
    };
    Ok(EnumArgs { level, resume })
}

/// NetrShareGetInfo in: ServerName (unique string), NetName (ref string), Level.
pub fn parse_get_info(stub: &[u8]) -> Result<(String, u32), WireError> {
    let mut r = Reader::new(stub);
    unique_string(&mut r)?;
    let name = string(&mut r)?;
    let level = r.u32()?;
    Ok((name, level))
}

fn share_enum_all(args: &EnumArgs, view: &ServerView) -> Vec<u8> {
    let mut w = Ndr::default();
    w.u32(args.level);
    w.u32(args.level);
    let status = match args.level {
        0 | 1 => {
            w.ptr();
            let n = view.listed.len() as u32;
            w.u32(n);
            w.ptr();
            w.u32(n); // conformance of the array
            for s in &view.listed {
                w.ptr();
                if args.level == 1 {
                    w.u32(s.stype);
                    w.ptr();
                }
            }
            for s in &view.listed {
                w.string(&s.name);
                if args.level == 1 {
                    w.string(&s.comment);
                }
            }
            w.u32(n); // TotalEntries
            werr::OK
        }
        2 | 502 | 503 => {
            // Paths and permissions are for administrators (MS-SRVS 3.1.4.8).
            w.u32(0);
            w.u32(0);
            werr::ACCESS_DENIED
        }
        _ => {
            w.u32(0);
            w.u32(0);
            werr::INVALID_LEVEL
        }
    };
    match args.resume {
        Some(_) => {
            w.ptr();
            w.u32(0);
        }
        None => w.u32(0),
    }
    w.u32(status);
    w.buf
}

fn share_get_info(name: &str, level: u32, view: &ServerView) -> Vec<u8> {
    let mut w = Ndr::default();
    w.u32(level);
    let share = view.all.iter().find(|s| s.name.eq_ignore_ascii_case(name));
    let status = match (share, level) {
        (_, 2 | 502 | 503) => werr::ACCESS_DENIED,
        (None, 0 | 1 | 1005) => werr::NET_NAME_NOT_FOUND,
        (Some(s), 0) => {
            w.ptr();
            w.ptr();
            w.string(&s.name);
            werr::OK
        }
        (Some(s), 1) => {
            w.ptr();
            w.ptr();
            w.u32(s.stype);
            w.ptr();
            w.string(&s.name);
            w.string(&s.comment);
            werr::OK
        }
        (Some(_), 1005) => {
            // SHARE_INFO_1005: no DFS, manual client-side caching.
            w.ptr();
            w.u32(0);
            werr::OK
        }
        _ => werr::INVALID_LEVEL,
    };
    if status != werr::OK {
        w.u32(0);
    }
    w.u32(status);
    w.buf
}

fn server_get_info(level: u32, view: &ServerView) -> Vec<u8> {
    let mut w = Ndr::default();
    w.u32(level);
    let status = match level {
        100 => {
            w.ptr();
            w.u32(PLATFORM_ID_NT);
            w.ptr();
            w.string(&view.netbios_name);
            werr::OK
        }
        101 => {
            w.ptr();
            w.u32(PLATFORM_ID_NT);
            w.ptr();
            w.u32(10);
            w.u32(0);
            w.u32(SERVER_TYPE);
            w.ptr();
            w.string(&view.netbios_name);
            w.string(&view.comment);
            werr::OK
        }
        _ => {
            w.u32(0);
            werr::INVALID_LEVEL
        }
    };
    w.u32(status);
    w.buf
}

/// A [string, unique] wchar_t*: referent id, then the string when non-null.
fn unique_string(r: &mut Reader<'_>) -> Result<Option<String>, WireError> {
    match r.u32()? {
        0 => Ok(None),
        _ => string(r).map(Some),
    }
}

/// A conformant varying UTF-16 string (max count, offset, actual count).
fn string(r: &mut Reader<'_>) -> Result<String, WireError> {
    r.align(0, 4)?;
    let max = r.u32()?;
    let offset = r.u32()?;
    let actual = r.u32()?;
    if offset != 0 || actual > max {
        return Err(WireError::Invalid("ndr string bounds"));
    }
    let raw = r.take(
        (actual as usize)
            .checked_mul(2)
            .ok_or(WireError::Truncated)?,
    )?;
    r.align(0, 4)?;
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let units = units.strip_suffix(&[0]).unwrap_or(&units);
    Ok(String::from_utf16_lossy(units))
}

/// NDR writer with the referent-id numbering clients are used to.
struct Ndr {
    buf: Vec<u8>,
    next_ref: u32,
}

impl Default for Ndr {
    fn default() -> Self {
        Ndr {
            buf: Vec::new(),
            next_ref: 0x0002_0000,
        }
    }
}

impl Ndr {
    fn align4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn u32(&mut self, v: u32) {
        self.align4();
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A non-null unique or full pointer: its referent id.
    fn ptr(&mut self) {
        let id = self.next_ref;
        self.next_ref += 4;
        self.u32(id);
    }
    /// A conformant varying UTF-16 string including its NUL.
    fn string(&mut self, s: &str) {
        let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
        let n = units.len() as u32;
        self.u32(n);
        self.u32(0);
        self.u32(n);
        for u in units {
            self.buf.extend_from_slice(&u.to_le_bytes());
        }
        self.align4();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NetrShareEnumAll level 1 stub from smbclient 4.x (captured against Samba).
    const SMBCLIENT_ENUM: &str = "000002000a000000000000000a0000003100320037002e0030002e0030002e00310000000100000001000000040002000000000000000000ffffffff0800020000000000";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn view() -> ServerView {
        let share = ShareEntry {
            name: "share".into(),
            stype: STYPE_DISKTREE,
            comment: "Holdfast share".into(),
        };
        let ipc = ShareEntry {
            name: "IPC$".into(),
            stype: STYPE_IPC_HIDDEN,
            comment: "IPC Service".into(),
        };
        ServerView {
            netbios_name: "HOLDFAST".into(),
            comment: "Holdfast".into(),
            listed: vec![share.clone(), ipc.clone()],
            all: vec![share, ipc],
        }
    }

    /// Independent decoder for a level-1 NetrShareEnumAll result.
    fn decode_enum1(b: &[u8]) -> (Vec<(String, u32, String)>, u32, u32) {
        let mut r = Reader::new(b);
        assert_eq!(r.u32().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 1);
        assert_ne!(r.u32().unwrap(), 0);
        let n = r.u32().unwrap();
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!(r.u32().unwrap(), n);
        let mut fixed = Vec::new();
        for _ in 0..n {
            let p1 = r.u32().unwrap();
            let t = r.u32().unwrap();
            let p2 = r.u32().unwrap();
            assert!(p1 != 0 && p2 != 0);
            fixed.push(t);
        }
        let mut out = Vec::new();
        for t in fixed {
            let name = string(&mut r).unwrap();
            let comment = string(&mut r).unwrap();
            out.push((name, t, comment));
        }
        let total = r.u32().unwrap();
        assert_ne!(r.u32().unwrap(), 0, "resume handle pointer");
        r.u32().unwrap();
        let status = r.u32().unwrap();
        assert!(r.rest().is_empty());
        (out, total, status)
    }

    #[test]
    fn parses_smbclient_enum_request() {
        let a = parse_enum(&unhex(SMBCLIENT_ENUM)).unwrap();
        assert_eq!(
            a,
            EnumArgs {
                level: 1,
                resume: Some(0)
            }
        );
    }

    #[test]
    fn enum_level1_decodes() {
        let out = call(OPNUM_SHARE_ENUM_ALL, &unhex(SMBCLIENT_ENUM), &view()).unwrap();
        let (shares, total, status) = decode_enum1(&out);
        assert_eq!(status, 0);
        assert_eq!(total, 2);
        assert_eq!(
            shares,
            vec![
                ("share".into(), STYPE_DISKTREE, "Holdfast share".into()),
                ("IPC$".into(), STYPE_IPC_HIDDEN, "IPC Service".into()),
            ]
        );
    }

    #[test]
    fn enum_other_levels() {
        let mut req = unhex(SMBCLIENT_ENUM);
        // Level and union arm sit right after the 36-byte server name.
        req[36..40].copy_from_slice(&7u32.to_le_bytes());
        req[40..44].copy_from_slice(&7u32.to_le_bytes());
        let out = call(OPNUM_SHARE_ENUM_ALL, &req, &view()).unwrap();
        assert_eq!(out[out.len() - 4..], werr::INVALID_LEVEL.to_le_bytes());
        req[36..40].copy_from_slice(&0u32.to_le_bytes());
        req[40..44].copy_from_slice(&0u32.to_le_bytes());
        let out = call(OPNUM_SHARE_ENUM_ALL, &req, &view()).unwrap();
        assert_eq!(out[out.len() - 4..], [0, 0, 0, 0]);
    }

    fn get_info_req(name: &str, level: u32) -> Vec<u8> {
        let mut w = Ndr::default();
        w.u32(0); // null server name
        w.string(name);
        w.u32(level);
        w.buf
    }

    #[test]
    fn get_info_levels() {
        let out = call(OPNUM_SHARE_GET_INFO, &get_info_req("SHARE", 1), &view()).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(r.u32().unwrap(), 1);
        assert_ne!(r.u32().unwrap(), 0);
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!(r.u32().unwrap(), STYPE_DISKTREE);
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!(string(&mut r).unwrap(), "share");
        assert_eq!(string(&mut r).unwrap(), "Holdfast share");
        assert_eq!(r.u32().unwrap(), 0);
        let out = call(OPNUM_SHARE_GET_INFO, &get_info_req("nope", 1), &view()).unwrap();
        assert_eq!(out, [1, 0, 0, 0, 0, 0, 0, 0, 0x06, 0x09, 0, 0]);
        let out = call(OPNUM_SHARE_GET_INFO, &get_info_req("share", 2), &view()).unwrap();
        assert_eq!(out[8..], werr::ACCESS_DENIED.to_le_bytes());
    }

    #[test]
    fn server_info_101() {
        let mut w = Ndr::default();
        w.u32(0);
        w.u32(101);
        let out = call(OPNUM_SERVER_GET_INFO, &w.buf, &view()).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(r.u32().unwrap(), 101);
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!(r.u32().unwrap(), 500);
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (10, 0));
        assert_eq!(r.u32().unwrap(), SERVER_TYPE);
        assert_ne!(r.u32().unwrap(), 0);
        assert_eq!(string(&mut r).unwrap(), "HOLDFAST");
        assert_eq!(string(&mut r).unwrap(), "Holdfast");
        assert_eq!(r.u32().unwrap(), 0);
    }

    #[test]
    fn unknown_opnum_and_garbage() {
        assert_eq!(call(99, &[], &view()), Err(fault::OP_RNG_ERROR));
        assert_eq!(
            call(OPNUM_SHARE_ENUM_ALL, &[1, 0, 0, 0], &view()),
            Err(fault::BAD_STUB_DATA)
        );
    }

    proptest::proptest! {
        #[test]
        fn calls_never_panic(op in 14u16..23, data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = call(op, &data, &view());
        }
    }
}
