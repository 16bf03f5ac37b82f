//! SMB2 OPLOCK_BREAK command family (MS-SMB2 2.2.23-2.2.25): oplock and lease
//! break notifications, acknowledgments and responses.

use super::info::{request_body, take_file_id};
use super::{FileId, WireError, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64, le_u8};

/// SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED.
pub const LEASE_BREAK_FLAG_ACK_REQUIRED: u32 = 0x0000_0001;

const OPLOCK_SIZE: u16 = 24;
const LEASE_NOTIFY_SIZE: u16 = 44;
const LEASE_ACK_SIZE: u16 = 36;

fn take16(i: &[u8]) -> Result<(&[u8], [u8; 16]), WireError> {
    let b = i.get(..16).ok_or(WireError::Truncated)?;
    let mut k = [0u8; 16];
    k.copy_from_slice(b);
    Ok((&i[16..], k))
}

/// Oplock Break Notification, Acknowledgment and Response share this 24-byte layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OplockBreak {
    /// One of `create::oplock` levels.
    pub oplock_level: u8,
    pub file_id: FileId,
}

impl OplockBreak {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, OPLOCK_SIZE, 24, "oplock break structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, oplock_level) = le_u8(i)?;
        let (i, _reserved) = le_u8(i)?;
        let (i, _reserved2) = le_u32(i)?;
        let (_, file_id) = take_file_id(i)?;
        Ok(OplockBreak {
            oplock_level,
            file_id,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(OPLOCK_SIZE);
        out.put_u8(self.oplock_level);
        out.put_u8(0);
        out.put_u32_le(0);
        self.file_id.encode(out);
    }
}

/// Lease Break Notification (server to client, 44 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseBreakNotification {
    pub new_epoch: u16,
    /// LEASE_BREAK_FLAG_ACK_REQUIRED or 0.
    pub flags: u32,
    pub lease_key: [u8; 16],
    pub current_state: u32,
    pub new_state: u32,
    pub break_reason: u32,
    pub access_mask_hint: u32,
    pub share_mask_hint: u32,
}

impl LeaseBreakNotification {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(LEASE_NOTIFY_SIZE);
        out.put_u16_le(self.new_epoch);
        out.put_u32_le(self.flags);
        out.put_slice(&self.lease_key);
        out.put_u32_le(self.current_state);
        out.put_u32_le(self.new_state);
        out.put_u32_le(self.break_reason);
        out.put_u32_le(self.access_mask_hint);
        out.put_u32_le(self.share_mask_hint);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, LEASE_NOTIFY_SIZE, 44, "lease break structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, new_epoch) = le_u16(i)?;
        let (i, flags) = le_u32(i)?;
        let (i, lease_key) = take16(i)?;
        let (i, current_state) = le_u32(i)?;
        let (i, new_state) = le_u32(i)?;
        let (i, break_reason) = le_u32(i)?;
        let (i, access_mask_hint) = le_u32(i)?;
        let (_, share_mask_hint) = le_u32(i)?;
        Ok(LeaseBreakNotification {
            new_epoch,
            flags,
            lease_key,
            current_state,
            new_state,
            break_reason,
            access_mask_hint,
            share_mask_hint,
        })
    }
}

/// Lease Break Acknowledgment (client) and Lease Break Response (server), 36 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseBreakAck {
    /// Reserved on the wire; kept for fidelity.
    pub flags: u32,
    pub lease_key: [u8; 16],
    pub lease_state: u32,
    /// Reserved on the wire; kept for fidelity.
    pub lease_duration: u64,
}

impl LeaseBreakAck {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(LEASE_ACK_SIZE);
        out.put_u16_le(0);
        out.put_u32_le(self.flags);
        out.put_slice(&self.lease_key);
        out.put_u32_le(self.lease_state);
        out.put_u64_le(self.lease_duration);
    }

    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = request_body(msg, LEASE_ACK_SIZE, 36, "lease break ack structure size")?;
        let (i, _) = le_u16(b)?;
        let (i, _reserved) = le_u16(i)?;
        let (i, flags) = le_u32(i)?;
        let (i, lease_key) = take16(i)?;
        let (i, lease_state) = le_u32(i)?;
        let (_, lease_duration) = le_u64(i)?;
        Ok(LeaseBreakAck {
            flags,
            lease_key,
            lease_state,
            lease_duration,
        })
    }
}

/// An OPLOCK_BREAK request from a client: which acknowledgment it is follows
/// from StructureSize (24 = oplock, 36 = lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakAck {
    Oplock(OplockBreak),
    Lease(LeaseBreakAck),
}

impl BreakAck {
    pub fn decode(msg: &[u8]) -> Result<Self, WireError> {
        let b = msg.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let (_, ss) = le_u16(b)?;
        match ss {
            OPLOCK_SIZE => Ok(BreakAck::Oplock(OplockBreak::decode(msg)?)),
            LEASE_ACK_SIZE => Ok(BreakAck::Lease(LeaseBreakAck::decode(msg)?)),
            _ => Err(WireError::Invalid("oplock break structure size")),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            BreakAck::Oplock(o) => o.encode(out),
            BreakAck::Lease(l) => l.encode(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn hdr() -> BytesMut {
        let mut b = BytesMut::new();
        b.resize(HEADER_LEN, 0);
        b
    }

    proptest! {
        #[test]
        fn oplock_break_round_trip(l in any::<u8>(), p in any::<u64>(), v in any::<u64>()) {
            let r = OplockBreak { oplock_level: l, file_id: FileId { persistent: p, volatile: v } };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 24);
            prop_assert_eq!(OplockBreak::decode(&b).unwrap(), r);
            prop_assert_eq!(BreakAck::decode(&b).unwrap(), BreakAck::Oplock(r));
        }

        #[test]
        fn lease_break_notification_round_trip(e in any::<u16>(), f in any::<u32>(), k in any::<[u8; 16]>(),
                s in any::<[u32; 5]>()) {
            let r = LeaseBreakNotification { new_epoch: e, flags: f, lease_key: k, current_state: s[0],
                new_state: s[1], break_reason: s[2], access_mask_hint: s[3], share_mask_hint: s[4] };
            let mut b = hdr();
            r.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 44);
            prop_assert_eq!(LeaseBreakNotification::decode(&b).unwrap(), r);
        }

        #[test]
        fn lease_break_ack_round_trip(f in any::<u32>(), k in any::<[u8; 16]>(), s in any::<u32>(), d in any::<u64>()) {
            let r = LeaseBreakAck { flags: f, lease_key: k, lease_state: s, lease_duration: d };
            let mut b = hdr();
            BreakAck::Lease(r).encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN + 36);
            prop_assert_eq!(LeaseBreakAck::decode(&b).unwrap(), r);
            prop_assert_eq!(BreakAck::decode(&b).unwrap(), BreakAck::Lease(r));
        }

        #[test]
        fn oplock_decoders_never_panic(data in vec(any::<u8>(), 0..150)) {
            let _ = OplockBreak::decode(&data);
            let _ = LeaseBreakNotification::decode(&data);
            let _ = LeaseBreakAck::decode(&data);
            let _ = BreakAck::decode(&data);
        }
    }

    #[test]
    fn unknown_ack_size_rejected() {
        let mut b = hdr();
        OplockBreak::default().encode(&mut b);
        b[HEADER_LEN] = 30;
        assert!(BreakAck::decode(&b).is_err());
    }
}
