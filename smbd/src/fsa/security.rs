//! Security descriptors (MS-DTYP 2.4), mapped to and from POSIX ownership and
//! mode bits. Pure code: every offset from the peer is checked, nothing panics.
//!
//! Unix ids are represented with the Samba-compatible "Unix" SID authority 22:
//! users are `S-1-22-1-<uid>`, groups `S-1-22-2-<gid>`.
//!
//! Mapping of a POSIX mode to a DACL (`sd_from_mode`), in canonical order:
//! 1. ACCESS_DENIED for the owner user of the data rights the owner lacks but
//!    group or other have, and ACCESS_DENIED for the owning group of the data
//!    rights the group lacks but other has (only when non-empty), so that a
//!    Windows access check gives each class what POSIX gives it;
//! 2. ACCESS_ALLOWED for the owner user, the owning group and Everyone with the
//!    rights of the owner, group and other permission bits
//!    (see [`rights_for_bits`]).
//!
//! The owner's allow ACE also carries READ_CONTROL, WRITE_DAC, WRITE_OWNER,
//! DELETE and FILE_WRITE_ATTRIBUTES because an owner may chmod/chown/utimes
//! its file. Inheritable ACEs (CREATOR OWNER ...) are not produced: new files
//! get their mode from POSIX rules, not from ACL inheritance.

use std::fmt;

use bytes::BufMut;

use super::types::{access, FileMeta};
use crate::wire::NtStatus;

/// SECURITY_INFORMATION bits (AdditionalInformation of QUERY/SET_INFO).
pub mod secinfo {
    pub const OWNER: u32 = 0x0000_0001;
    pub const GROUP: u32 = 0x0000_0002;
    pub const DACL: u32 = 0x0000_0004;
    pub const SACL: u32 = 0x0000_0008;
}

/// SECURITY_DESCRIPTOR_CONTROL bits (MS-DTYP 2.4.6).
pub mod control {
    pub const OWNER_DEFAULTED: u16 = 0x0001;
    pub const GROUP_DEFAULTED: u16 = 0x0002;
    pub const DACL_PRESENT: u16 = 0x0004;
    pub const DACL_DEFAULTED: u16 = 0x0008;
    pub const SACL_PRESENT: u16 = 0x0010;
    pub const DACL_AUTO_INHERITED: u16 = 0x0400;
    pub const SACL_AUTO_INHERITED: u16 = 0x0800;
    pub const DACL_PROTECTED: u16 = 0x1000;
    pub const SACL_PROTECTED: u16 = 0x2000;
    pub const SELF_RELATIVE: u16 = 0x8000;
}

/// ACE types (MS-DTYP 2.4.4.1) we interpret.
pub mod ace_type {
    pub const ACCESS_ALLOWED: u8 = 0x00;
    pub const ACCESS_DENIED: u8 = 0x01;
    pub const SYSTEM_AUDIT: u8 = 0x02;
    pub const SYSTEM_ALARM: u8 = 0x03;
}

/// ACE flags (MS-DTYP 2.4.4.1).
pub mod ace_flags {
    pub const OBJECT_INHERIT: u8 = 0x01;
    pub const CONTAINER_INHERIT: u8 = 0x02;
    pub const NO_PROPAGATE_INHERIT: u8 = 0x04;
    pub const INHERIT_ONLY: u8 = 0x08;
    pub const INHERITED: u8 = 0x10;
}

/// Authority of the Unix user/group SIDs.
pub const UNIX_AUTHORITY: u64 = 22;

/// A security identifier (MS-DTYP 2.4.2).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sid {
    /// 48-bit identifier authority.
    pub authority: u64,
    /// At most 15 sub-authorities.
    pub sub: Vec<u32>,
}

/// A Unix identity a SID stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixId {
    User(u32),
    Group(u32),
}

impl Sid {
    pub fn new(authority: u64, sub: &[u32]) -> Sid {
        Sid {
            authority: authority & 0xFFFF_FFFF_FFFF,
            sub: sub.iter().copied().take(15).collect(),
        }
    }
    pub fn unix_user(uid: u32) -> Sid {
        Sid::new(UNIX_AUTHORITY, &[1, uid])
    }
    pub fn unix_group(gid: u32) -> Sid {
        Sid::new(UNIX_AUTHORITY, &[2, gid])
    }
    /// S-1-1-0.
    pub fn everyone() -> Sid {
        Sid::new(1, &[0])
    }
    /// S-1-3-0.
    pub fn creator_owner() -> Sid {
        Sid::new(3, &[0])
    }
    /// S-1-3-1.
    pub fn creator_group() -> Sid {
        Sid::new(3, &[1])
    }
    /// S-1-5-11.
    pub fn authenticated_users() -> Sid {
        Sid::new(5, &[11])
    }
    /// S-1-5-18.
    pub fn local_system() -> Sid {
        Sid::new(5, &[18])
    }
    /// S-1-5-32-544.
    pub fn builtin_administrators() -> Sid {
        Sid::new(5, &[32, 544])
    }

    /// Encoded length in bytes.
    pub fn wire_len(&self) -> usize {
        8 + 4 * self.sub.len().min(15)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.sub.len().min(15);
        out.put_u8(1);
        out.put_u8(n as u8);
        out.put_slice(&self.authority.to_be_bytes()[2..]);
        for s in &self.sub[..n] {
            out.put_u32_le(*s);
        }
    }

    /// Decodes a SID at the start of `buf`; returns it and its length.
    /// INVALID_SID if truncated, of an unknown revision or with more than 15
    /// sub-authorities.
    pub fn parse(buf: &[u8]) -> Result<(Sid, usize), NtStatus> {
        let hdr = buf.get(..8).ok_or(NtStatus::INVALID_SID)?;
        if hdr[0] != 1 {
            return Err(NtStatus::INVALID_SID);
        }
        let n = usize::from(hdr[1]);
        if n > 15 {
            return Err(NtStatus::INVALID_SID);
        }
        let mut a = [0u8; 8];
        a[2..].copy_from_slice(&hdr[2..8]);
        let len = 8 + 4 * n;
        let body = buf.get(8..len).ok_or(NtStatus::INVALID_SID)?;
        let sub = body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((
            Sid {
                authority: u64::from_be_bytes(a),
                sub,
            },
            len,
        ))
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority < (1 << 32) {
            write!(f, "S-1-{}", self.authority)?;
        } else {
            write!(f, "S-1-0x{:012X}", self.authority)?;
        }
        for s in &self.sub {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The Unix user or group a SID maps to, if it is an `S-1-22-1-x` / `S-1-22-2-x` SID.
pub fn sid_to_unix(sid: &Sid) -> Option<UnixId> {
    match (sid.authority, sid.sub.as_slice()) {
        (UNIX_AUTHORITY, [1, uid]) => Some(UnixId::User(*uid)),
        (UNIX_AUTHORITY, [2, gid]) => Some(UnixId::Group(*gid)),
        _ => None,
    }
}

/// One access control entry. Only ACCESS_ALLOWED, ACCESS_DENIED, SYSTEM_AUDIT
/// and SYSTEM_ALARM ACEs are decoded; other types are skipped by [`parse_sd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    pub ace_type: u8,
    pub flags: u8,
    pub mask: u32,
    pub sid: Sid,
}

impl Ace {
    pub fn allow(sid: Sid, mask: u32) -> Ace {
        Ace {
            ace_type: ace_type::ACCESS_ALLOWED,
            flags: 0,
            mask,
            sid,
        }
    }
    fn wire_len(&self) -> usize {
        8 + self.sid.wire_len()
    }
}

/// Encodes an ACL (revision 2) with the given ACEs.
pub fn encode_acl(aces: &[Ace], out: &mut Vec<u8>) {
    let size: usize = 8 + aces.iter().map(Ace::wire_len).sum::<usize>();
    out.put_u8(2);
    out.put_u8(0);
    out.put_u16_le(u16::try_from(size).unwrap_or(u16::MAX));
    out.put_u16_le(u16::try_from(aces.len()).unwrap_or(u16::MAX));
    out.put_u16_le(0);
    for a in aces {
        out.put_u8(a.ace_type);
        out.put_u8(a.flags);
        out.put_u16_le(a.wire_len() as u16);
        out.put_u32_le(a.mask);
        a.sid.encode(out);
    }
}

/// Encodes a self-relative security descriptor with the parts given.
pub fn encode_sd(owner: Option<&Sid>, group: Option<&Sid>, dacl: Option<&[Ace]>) -> Vec<u8> {
    let mut ctl = control::SELF_RELATIVE;
    if dacl.is_some() {
        ctl |= control::DACL_PRESENT;
    }
    let mut body = Vec::new();
    let off = |present: bool, body: &Vec<u8>| -> u32 {
        if present {
            20 + body.len() as u32
        } else {
            0
        }
    };
    let owner_off = off(owner.is_some(), &body);
    if let Some(s) = owner {
        s.encode(&mut body);
    }
    let group_off = off(group.is_some(), &body);
    if let Some(s) = group {
        s.encode(&mut body);
    }
    let dacl_off = off(dacl.is_some(), &body);
    if let Some(a) = dacl {
        encode_acl(a, &mut body);
    }
    let mut out = Vec::with_capacity(20 + body.len());
    out.put_u8(1);
    out.put_u8(0);
    out.put_u16_le(ctl);
    out.put_u32_le(owner_off);
    out.put_u32_le(group_off);
    out.put_u32_le(0); // no SACL
    out.put_u32_le(dacl_off);
    out.extend_from_slice(&body);
    out
}

/// Rights every class gets: anybody who can look the file up can stat it.
pub const BASE_RIGHTS: u32 =
    access::FILE_READ_ATTRIBUTES | access::READ_CONTROL | access::SYNCHRONIZE;

/// Rights the file owner gets besides its rwx bits in the DACL.
pub const OWNER_RIGHTS: u32 = access::READ_CONTROL
    | access::WRITE_DAC
    | access::WRITE_OWNER
    | access::DELETE
    | access::FILE_WRITE_ATTRIBUTES;

/// Rights for one rwx triplet (`bits` & 7): r -> FILE_GENERIC_READ,
/// w -> FILE_GENERIC_WRITE (plus FILE_DELETE_CHILD on a directory),
/// x -> FILE_GENERIC_EXECUTE (traverse on a directory), always [`BASE_RIGHTS`].
pub fn rights_for_bits(bits: u32, is_dir: bool) -> u32 {
    let mut m = BASE_RIGHTS;
    if bits & 4 != 0 {
        m |= access::FILE_GENERIC_READ;
    }
    if bits & 2 != 0 {
        m |= access::FILE_GENERIC_WRITE;
        if is_dir {
            m |= access::FILE_DELETE_CHILD;
        }
    }
    if bits & 1 != 0 {
        m |= access::FILE_GENERIC_EXECUTE;
    }
    m
}

/// rwx triplet for an access mask (generic bits mapped first).
pub fn bits_for_rights(mask: u32) -> u32 {
    let m = access::map_generic(mask);
    let mut b = 0;
    if m & access::FILE_READ_DATA != 0 {
        b |= 4;
    }
    if m & (access::FILE_WRITE_DATA | access::FILE_APPEND_DATA) != 0 {
        b |= 2;
    }
    if m & access::FILE_EXECUTE != 0 {
        b |= 1;
    }
    b
}

/// Data rights only, used in deny ACEs so that READ_CONTROL and the like are
/// never denied: r -> FILE_READ_DATA, w -> FILE_WRITE_DATA | FILE_APPEND_DATA
/// (plus FILE_DELETE_CHILD on a directory), x -> FILE_EXECUTE.
pub fn data_rights_for_bits(bits: u32, is_dir: bool) -> u32 {
    let mut m = 0;
    if bits & 4 != 0 {
        m |= access::FILE_READ_DATA;
    }
    if bits & 2 != 0 {
        m |= access::FILE_WRITE_DATA | access::FILE_APPEND_DATA;
        if is_dir {
            m |= access::FILE_DELETE_CHILD;
        }
    }
    if bits & 1 != 0 {
        m |= access::FILE_EXECUTE;
    }
    m
}

/// The DACL `sd_from_mode` produces (see the module docs).
pub fn dacl_from_mode(uid: u32, gid: u32, mode: u32, is_dir: bool) -> Vec<Ace> {
    let (u, g, o) = ((mode >> 6) & 7, (mode >> 3) & 7, mode & 7);
    let mut aces = Vec::with_capacity(5);
    let deny_u = (g | o) & !u;
    if deny_u != 0 {
        aces.push(Ace {
            ace_type: ace_type::ACCESS_DENIED,
            flags: 0,
            mask: data_rights_for_bits(deny_u, is_dir),
            sid: Sid::unix_user(uid),
        });
    }
    let deny_g = o & !g;
    if deny_g != 0 {
        aces.push(Ace {
            ace_type: ace_type::ACCESS_DENIED,
            flags: 0,
            mask: data_rights_for_bits(deny_g, is_dir),
            sid: Sid::unix_group(gid),
        });
    }
    aces.push(Ace::allow(
        Sid::unix_user(uid),
        rights_for_bits(u, is_dir) | OWNER_RIGHTS,
    ));
    aces.push(Ace::allow(Sid::unix_group(gid), rights_for_bits(g, is_dir)));
    aces.push(Ace::allow(Sid::everyone(), rights_for_bits(o, is_dir)));
    aces
}

/// Self-relative security descriptor for a POSIX file, with only the parts
/// asked for in `additional_info` (secinfo bits). A SACL is never returned
/// (we keep none); SACL_PRESENT stays clear.
pub fn sd_from_mode(uid: u32, gid: u32, mode: u32, is_dir: bool, additional_info: u32) -> Vec<u8> {
    let owner = (additional_info & secinfo::OWNER != 0).then(|| Sid::unix_user(uid));
    let group = (additional_info & secinfo::GROUP != 0).then(|| Sid::unix_group(gid));
    let dacl =
        (additional_info & secinfo::DACL != 0).then(|| dacl_from_mode(uid, gid, mode, is_dir));
    encode_sd(owner.as_ref(), group.as_ref(), dacl.as_deref())
}

/// A decoded security descriptor (SET_INFO payload).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedSd {
    pub control: u16,
    pub owner: Option<Sid>,
    pub group: Option<Sid>,
    /// The DACL when DACL_PRESENT is set with a non-zero offset.
    pub dacl: Option<Vec<Ace>>,
    /// DACL_PRESENT with offset 0: a NULL DACL, which grants everybody everything.
    pub dacl_null: bool,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes the ACL at the start of `buf` (which may extend past the ACL).
/// Unknown ACE types are validated for size and skipped.
pub fn parse_acl(buf: &[u8]) -> Result<Vec<Ace>, NtStatus> {
    let bad = NtStatus::INVALID_ACL;
    let rev = *buf.first().ok_or(bad)?;
    if rev != 2 && rev != 4 {
        return Err(bad);
    }
    let size = usize::from(u16_at(buf, 2).ok_or(bad)?);
    let count = usize::from(u16_at(buf, 4).ok_or(bad)?);
    if size < 8 {
        return Err(bad);
    }
    let acl = buf.get(..size).ok_or(bad)?;
    let mut aces = Vec::with_capacity(count.min(size / 8));
    let mut pos = 8usize;
    for _ in 0..count {
        let t = *acl.get(pos).ok_or(bad)?;
        let flags = *acl.get(pos + 1).ok_or(bad)?;
        let ace_size = usize::from(u16_at(acl, pos + 2).ok_or(bad)?);
        if ace_size < 4 || ace_size % 4 != 0 {
            return Err(bad);
        }
        let ace = acl.get(pos..pos + ace_size).ok_or(bad)?;
        if t <= ace_type::SYSTEM_ALARM {
            let mask = u32_at(ace, 4).ok_or(bad)?;
            let (sid, _) = Sid::parse(ace.get(8..).ok_or(bad)?).map_err(|_| bad)?;
            aces.push(Ace {
                ace_type: t,
                flags,
                mask,
                sid,
            });
        }
        pos += ace_size;
    }
    Ok(aces)
}

/// Decodes a self-relative security descriptor, validating every offset.
/// INVALID_SECURITY_DESCR for a bad header or offsets, INVALID_SID for a bad
/// owner/group SID, INVALID_ACL for a bad DACL or SACL.
pub fn parse_sd(buf: &[u8]) -> Result<ParsedSd, NtStatus> {
    let bad = NtStatus::INVALID_SECURITY_DESCR;
    if buf.len() < 20 || buf[0] != 1 {
        return Err(bad);
    }
    let ctl = u16_at(buf, 2).ok_or(bad)?;
    if ctl & control::SELF_RELATIVE == 0 {
        return Err(bad);
    }
    let at = |o: usize| -> Result<Option<&[u8]>, NtStatus> {
        let off = u32_at(buf, o).ok_or(bad)? as usize;
        if off == 0 {
            return Ok(None);
        }
        if off < 20 || off >= buf.len() {
            return Err(bad);
        }
        Ok(buf.get(off..))
    };
    let owner = at(4)?.map(|b| Sid::parse(b).map(|s| s.0)).transpose()?;
    let group = at(8)?.map(|b| Sid::parse(b).map(|s| s.0)).transpose()?;
    let sacl = at(12)?;
    if ctl & control::SACL_PRESENT != 0 {
        if let Some(b) = sacl {
            parse_acl(b)?;
        }
    }
    let dacl_at = at(16)?;
    let (dacl, dacl_null) = if ctl & control::DACL_PRESENT != 0 {
        match dacl_at {
            Some(b) => (Some(parse_acl(b)?), false),
            None => (None, true),
        }
    } else {
        (None, false)
    };
    Ok(ParsedSd {
        control: ctl,
        owner,
        group,
        dacl,
        dacl_null,
    })
}

/// Best-effort inverse of [`dacl_from_mode`]: the permission bits (0o777, no
/// file type, no setuid/setgid/sticky) for a DACL.
///
/// - Inherit-only ACEs and ACE types other than allow/deny are ignored.
/// - Owner bits come from ACEs for `S-1-22-1-<owner_uid>`, group bits from ACEs
///   for `S-1-22-2-<owner_gid>`, other bits from ACEs for Everyone or
///   Authenticated Users.
/// - A class with no ACE of its own (owner or group) takes the other bits, as a
///   Windows access check would grant it through Everyone.
/// - ACEs are evaluated in order as Windows does: a bit is decided by the first
///   ACE that mentions it; a deny for Everyone also denies owner and group.
/// - ACEs for other SIDs cannot be represented in a mode and are dropped.
pub fn mode_from_dacl(dacl: &[Ace], owner_uid: u32, owner_gid: u32, is_dir: bool) -> u32 {
    let _ = is_dir; // the rwx mapping is the same for files and directories
    let user = Sid::unix_user(owner_uid);
    let group = Sid::unix_group(owner_gid);
    let is_world = |s: &Sid| *s == Sid::everyone() || *s == Sid::authenticated_users();

    // Evaluate for a principal that matches `own` (if any) and the world SIDs.
    let eval = |own: Option<&Sid>| -> (u32, bool) {
        let mut granted = 0u32;
        let mut denied = 0u32;
        let mut own_seen = false;
        for a in dacl {
            if a.flags & ace_flags::INHERIT_ONLY != 0 {
                continue;
            }
            let mine = own.is_some_and(|o| *o == a.sid);
            if !(mine || is_world(&a.sid)) {
                continue;
            }
            own_seen |= mine;
            let bits = bits_for_rights(a.mask) & !(granted | denied);
            match a.ace_type {
                ace_type::ACCESS_ALLOWED => granted |= bits,
                ace_type::ACCESS_DENIED => denied |= bits,
                _ => {}
            }
        }
        (granted, own_seen)
    };
    let (other, _) = eval(None);
    let (mut u, u_seen) = eval(Some(&user));
    let (mut g, g_seen) = eval(Some(&group));
    if !u_seen {
        u = other;
    }
    if !g_seen {
        g = other;
    }
    (u << 6) | (g << 3) | other
}

/// Maximal access (MxAc create context) of a requester on a file, from the
/// POSIX mode: the requester is in the owner, group or other class as POSIX
/// decides (first match). The owner also gets READ_CONTROL, WRITE_DAC,
/// WRITE_OWNER, FILE_READ_ATTRIBUTES and FILE_WRITE_ATTRIBUTES. DELETE is
/// granted when the requester may write the parent directory
/// (`parent_writable`, which the caller computes including the sticky-bit
/// rule). Root gets FILE_ALL_ACCESS.
pub fn maximal_access(
    uid_of_requester: u32,
    groups: &[u32],
    meta: &FileMeta,
    is_root: bool,
    parent_writable: bool,
) -> u32 {
    if is_root {
        return access::FILE_ALL_ACCESS;
    }
    let is_dir = meta.is_dir();
    let mut m = if uid_of_requester == meta.uid {
        rights_for_bits(meta.mode >> 6, is_dir)
            | access::READ_CONTROL
            | access::WRITE_DAC
            | access::WRITE_OWNER
            | access::FILE_READ_ATTRIBUTES
            | access::FILE_WRITE_ATTRIBUTES
    } else if groups.contains(&meta.gid) {
        rights_for_bits(meta.mode >> 3, is_dir)
    } else {
        rights_for_bits(meta.mode, is_dir)
    };
    if parent_writable {
        m |= access::DELETE;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_roundtrip_and_display() {
        let s = Sid::unix_user(1000);
        assert_eq!(s.to_string(), "S-1-22-1-1000");
        assert_eq!(Sid::everyone().to_string(), "S-1-1-0");
        assert_eq!(Sid::builtin_administrators().to_string(), "S-1-5-32-544");
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..8], &[1, 2, 0, 0, 0, 0, 0, 22]);
        let (p, n) = Sid::parse(&b).unwrap();
        assert_eq!((p, n), (s, 16));
        assert_eq!(Sid::parse(&b[..15]), Err(NtStatus::INVALID_SID));
        assert_eq!(
            Sid::parse(&[2, 0, 0, 0, 0, 0, 0, 1]),
            Err(NtStatus::INVALID_SID)
        );
        assert_eq!(
            Sid::parse(&[1, 16, 0, 0, 0, 0, 0, 1]),
            Err(NtStatus::INVALID_SID)
        );
        assert_eq!(Sid::new(1 << 40, &[]).to_string(), "S-1-0x010000000000");
    }

    #[test]
    fn sid_unix_mapping() {
        assert_eq!(sid_to_unix(&Sid::unix_user(5)), Some(UnixId::User(5)));
        assert_eq!(sid_to_unix(&Sid::unix_group(7)), Some(UnixId::Group(7)));
        assert_eq!(sid_to_unix(&Sid::everyone()), None);
        assert_eq!(sid_to_unix(&Sid::new(22, &[3, 1])), None);
        assert_eq!(sid_to_unix(&Sid::new(22, &[1, 1, 1])), None);
    }

    #[test]
    fn sd_parts() {
        let all = secinfo::OWNER | secinfo::GROUP | secinfo::DACL;
        let sd = sd_from_mode(1000, 100, 0o750, false, all);
        let p = parse_sd(&sd).unwrap();
        assert_eq!(p.owner, Some(Sid::unix_user(1000)));
        assert_eq!(p.group, Some(Sid::unix_group(100)));
        let dacl = p.dacl.unwrap();
        assert_eq!(dacl.len(), 3); // no deny ACEs needed for 0o750
        assert_eq!(dacl[0].mask & access::WRITE_DAC, access::WRITE_DAC);
        assert_eq!(
            dacl[1].mask & access::FILE_READ_DATA,
            access::FILE_READ_DATA
        );
        assert_eq!(dacl[1].mask & access::FILE_WRITE_DATA, 0);
        assert_eq!(dacl[2].mask & access::FILE_READ_DATA, 0);
        assert!(p.control & control::DACL_PRESENT != 0);

        let sd = sd_from_mode(1000, 100, 0o750, false, secinfo::OWNER);
        let p = parse_sd(&sd).unwrap();
        assert!(p.owner.is_some() && p.group.is_none() && p.dacl.is_none());
        assert!(!p.dacl_null);

        let sd = sd_from_mode(1, 2, 0o777, true, secinfo::SACL);
        assert_eq!(sd.len(), 20);
        assert_eq!(
            parse_sd(&sd).unwrap(),
            ParsedSd {
                control: control::SELF_RELATIVE,
                ..Default::default()
            }
        );
    }

    #[test]
    fn mode_roundtrip() {
        for mode in 0..0o1000 {
            for dir in [false, true] {
                let d = dacl_from_mode(10, 20, mode, dir);
                assert_eq!(mode_from_dacl(&d, 10, 20, dir), mode, "{mode:o}");
            }
        }
    }

    #[test]
    fn mode_from_windows_style_dacls() {
        // Only Everyone: full control -> 0o777.
        let d = vec![Ace::allow(Sid::everyone(), access::GENERIC_ALL)];
        assert_eq!(mode_from_dacl(&d, 1, 2, false), 0o777);
        // Deny write to everyone first, then allow all to owner.
        let d = vec![
            Ace {
                ace_type: ace_type::ACCESS_DENIED,
                flags: 0,
                mask: access::FILE_WRITE_DATA,
                sid: Sid::everyone(),
            },
            Ace::allow(Sid::unix_user(1), access::FILE_ALL_ACCESS),
            Ace::allow(Sid::everyone(), access::FILE_GENERIC_READ),
        ];
        assert_eq!(mode_from_dacl(&d, 1, 2, false), 0o544);
        // Inherit-only ACEs and unknown SIDs are ignored.
        let d = vec![
            Ace {
                ace_type: ace_type::ACCESS_ALLOWED,
                flags: ace_flags::INHERIT_ONLY | ace_flags::OBJECT_INHERIT,
                mask: access::FILE_ALL_ACCESS,
                sid: Sid::creator_owner(),
            },
            Ace::allow(Sid::local_system(), access::FILE_ALL_ACCESS),
            Ace::allow(Sid::unix_user(1), access::FILE_GENERIC_READ),
        ];
        assert_eq!(mode_from_dacl(&d, 1, 2, false), 0o400);
        assert_eq!(mode_from_dacl(&[], 1, 2, false), 0);
    }

    fn header(ctl: u16, owner: u32, group: u32, sacl: u32, dacl: u32) -> Vec<u8> {
        let mut b = vec![1, 0];
        b.extend_from_slice(&ctl.to_le_bytes());
        for o in [owner, group, sacl, dacl] {
            b.extend_from_slice(&o.to_le_bytes());
        }
        b
    }

    #[test]
    fn parse_rejects_bad_input() {
        let sr = control::SELF_RELATIVE;
        assert_eq!(parse_sd(&[]), Err(NtStatus::INVALID_SECURITY_DESCR));
        assert_eq!(
            parse_sd(&header(0, 0, 0, 0, 0)),
            Err(NtStatus::INVALID_SECURITY_DESCR)
        );
        let mut b = header(sr, 0, 0, 0, 0);
        b[0] = 2;
        assert_eq!(parse_sd(&b), Err(NtStatus::INVALID_SECURITY_DESCR));
        assert_eq!(
            parse_sd(&header(sr, 20, 0, 0, 0)),
            Err(NtStatus::INVALID_SECURITY_DESCR)
        );
        assert_eq!(
            parse_sd(&header(sr, 4, 0, 0, 0)),
            Err(NtStatus::INVALID_SECURITY_DESCR)
        );
        let mut b = header(sr, 20, 0, 0, 0);
        b.extend_from_slice(&[1, 5, 0, 0, 0, 0, 0, 5]);
        assert_eq!(parse_sd(&b), Err(NtStatus::INVALID_SID));
        // NULL DACL.
        let p = parse_sd(&header(sr | control::DACL_PRESENT, 0, 0, 0, 0)).unwrap();
        assert!(p.dacl_null && p.dacl.is_none());
        // Bad ACL revision, size, ACE size, ACE count.
        let dp = sr | control::DACL_PRESENT;
        for acl in [
            vec![9u8, 0, 8, 0, 0, 0, 0, 0],
            vec![2u8, 0, 4, 0, 0, 0, 0, 0],
            vec![2u8, 0, 200, 0, 0, 0, 0, 0],
            vec![2u8, 0, 8, 0, 1, 0, 0, 0],
            vec![2u8, 0, 12, 0, 1, 0, 0, 0, 0, 0, 2, 0],
            vec![2u8, 0, 16, 0, 1, 0, 0, 0, 0, 0, 8, 0, 1, 0, 0, 0],
        ] {
            let mut b = header(dp, 0, 0, 0, 20);
            b.extend_from_slice(&acl);
            assert_eq!(parse_sd(&b), Err(NtStatus::INVALID_ACL), "{acl:?}");
        }
        // Unknown ACE type is skipped.
        let mut b = header(dp, 0, 0, 0, 20);
        b.extend_from_slice(&[2, 0, 16, 0, 1, 0, 0, 0, 0x11, 0, 8, 0, 0, 0, 0, 0]);
        assert_eq!(parse_sd(&b).unwrap().dacl, Some(vec![]));
    }

    #[test]
    fn parse_never_panics() {
        let sd = sd_from_mode(1, 2, 0o755, true, 7);
        for cut in 0..sd.len() {
            let _ = parse_sd(&sd[..cut]);
        }
        for i in 0..sd.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = sd.clone();
                b[i] = v;
                let _ = parse_sd(&b);
            }
        }
    }

    #[test]
    fn maximal_access_classes() {
        let meta = FileMeta {
            mode: 0o100640,
            uid: 10,
            gid: 20,
            ..Default::default()
        };
        let owner = maximal_access(10, &[], &meta, false, false);
        assert_eq!(owner & access::FILE_WRITE_DATA, access::FILE_WRITE_DATA);
        assert_eq!(owner & access::WRITE_DAC, access::WRITE_DAC);
        assert_eq!(owner & access::DELETE, 0);
        assert_eq!(owner & access::FILE_EXECUTE, 0);
        let group = maximal_access(11, &[20], &meta, false, true);
        assert_eq!(group & access::FILE_READ_DATA, access::FILE_READ_DATA);
        assert_eq!(group & access::FILE_WRITE_DATA, 0);
        assert_eq!(group & access::DELETE, access::DELETE);
        assert_eq!(group & access::WRITE_DAC, 0);
        let other = maximal_access(12, &[21], &meta, false, false);
        assert_eq!(other, BASE_RIGHTS);
        assert_eq!(
            maximal_access(12, &[], &meta, true, false),
            access::FILE_ALL_ACCESS
        );
        let d = FileMeta {
            mode: 0o040770,
            uid: 10,
            gid: 20,
            ..Default::default()
        };
        let g = maximal_access(11, &[20], &d, false, false);
        assert_eq!(g & access::FILE_DELETE_CHILD, access::FILE_DELETE_CHILD);
    }
}
