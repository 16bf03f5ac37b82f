//! The 64-byte SMB2 packet header (MS-SMB2 2.2.1).

use super::WireError;
use bytes::{BufMut, BytesMut};
use nom::number::complete::{le_u16, le_u32, le_u64};

pub const HEADER_LEN: usize = 64;
pub const PROTOCOL_ID: [u8; 4] = [0xFE, b'S', b'M', b'B'];
pub const SMB1_PROTOCOL_ID: [u8; 4] = [0xFF, b'S', b'M', b'B'];
pub const TRANSFORM_PROTOCOL_ID: [u8; 4] = [0xFD, b'S', b'M', b'B'];

pub const FLAGS_SERVER_TO_REDIR: u32 = 0x0000_0001;
pub const FLAGS_ASYNC_COMMAND: u32 = 0x0000_0002;
pub const FLAGS_RELATED_OPERATIONS: u32 = 0x0000_0004;
pub const FLAGS_SIGNED: u32 = 0x0000_0008;
pub const FLAGS_PRIORITY_MASK: u32 = 0x0000_0070;
pub const FLAGS_DFS_OPERATIONS: u32 = 0x1000_0000;
pub const FLAGS_REPLAY_OPERATION: u32 = 0x2000_0000;

/// SMB2 command codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Command {
    Negotiate = 0,
    SessionSetup = 1,
    Logoff = 2,
    TreeConnect = 3,
    TreeDisconnect = 4,
    Create = 5,
    Close = 6,
    Flush = 7,
    Read = 8,
    Write = 9,
    Lock = 10,
    Ioctl = 11,
    Cancel = 12,
    Echo = 13,
    QueryDirectory = 14,
    ChangeNotify = 15,
    QueryInfo = 16,
    SetInfo = 17,
    OplockBreak = 18,
}

impl Command {
    pub fn from_u16(v: u16) -> Option<Command> {
        use Command::*;
        Some(match v {
            0 => Negotiate,
            1 => SessionSetup,
            2 => Logoff,
            3 => TreeConnect,
            4 => TreeDisconnect,
            5 => Create,
            6 => Close,
            7 => Flush,
            8 => Read,
            9 => Write,
            10 => Lock,
            11 => Ioctl,
            12 => Cancel,
            13 => Echo,
            14 => QueryDirectory,
            15 => ChangeNotify,
            16 => QueryInfo,
            17 => SetInfo,
            18 => OplockBreak,
            _ => return None,
        })
    }
}

/// A decoded SMB2 header. `command` is kept raw so that an unknown command can
/// still be answered with STATUS_INVALID_PARAMETER under its own message id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub credit_charge: u16,
    /// ChannelSequence/Reserved in requests (3.x), Status in responses.
    pub status: u32,
    pub command: u16,
    /// CreditRequest in requests, CreditResponse in responses.
    pub credits: u16,
    pub flags: u32,
    pub next_command: u32,
    pub message_id: u64,
    /// AsyncId when FLAGS_ASYNC_COMMAND is set; otherwise (TreeId << 32) | ProcessId.
    pub async_or_tree: u64,
    pub session_id: u64,
    pub signature: [u8; 16],
}

impl Header {
    pub fn is_async(&self) -> bool {
        self.flags & FLAGS_ASYNC_COMMAND != 0
    }
    pub fn is_related(&self) -> bool {
        self.flags & FLAGS_RELATED_OPERATIONS != 0
    }
    pub fn is_signed(&self) -> bool {
        self.flags & FLAGS_SIGNED != 0
    }
    pub fn is_response(&self) -> bool {
        self.flags & FLAGS_SERVER_TO_REDIR != 0
    }
    pub fn tree_id(&self) -> u32 {
        (self.async_or_tree >> 32) as u32
    }
    pub fn process_id(&self) -> u32 {
        self.async_or_tree as u32
    }
    pub fn async_id(&self) -> u64 {
        self.async_or_tree
    }
    pub fn set_tree_id(&mut self, tree_id: u32) {
        self.async_or_tree = (u64::from(tree_id) << 32) | u64::from(self.process_id());
    }
    pub fn cmd(&self) -> Option<Command> {
        Command::from_u16(self.command)
    }

    /// Decodes the header at the start of `msg`.
    pub fn decode(msg: &[u8]) -> Result<Header, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if msg[0..4] != PROTOCOL_ID {
            return Err(WireError::Invalid("protocol id"));
        }
        let i = &msg[4..];
        let (i, structure_size) = le_u16(i)?;
        if structure_size != 64 {
            return Err(WireError::Invalid("header structure size"));
        }
        let (i, credit_charge) = le_u16(i)?;
        let (i, status) = le_u32(i)?;
        let (i, command) = le_u16(i)?;
        let (i, credits) = le_u16(i)?;
        let (i, flags) = le_u32(i)?;
        let (i, next_command) = le_u32(i)?;
        let (i, message_id) = le_u64(i)?;
        let (i, async_or_tree) = le_u64(i)?;
        let (i, session_id) = le_u64(i)?;
        let mut signature = [0u8; 16];
        signature.copy_from_slice(&i[..16]);
        Ok(Header {
            credit_charge,
            status,
            command,
            credits,
            flags,
            next_command,
            message_id,
            async_or_tree,
            session_id,
            signature,
        })
    }

    /// Appends the 64-byte header to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN);
        out.put_slice(&PROTOCOL_ID);
        out.put_u16_le(64);
        out.put_u16_le(self.credit_charge);
        out.put_u32_le(self.status);
        out.put_u16_le(self.command);
        out.put_u16_le(self.credits);
        out.put_u32_le(self.flags);
        out.put_u32_le(self.next_command);
        out.put_u64_le(self.message_id);
        out.put_u64_le(self.async_or_tree);
        out.put_u64_le(self.session_id);
        out.put_slice(&self.signature);
    }
}

/// Offsets of header fields, for patching an encoded response in place.
pub mod offsets {
    pub const STATUS: usize = 8;
    pub const CREDITS: usize = 14;
    pub const FLAGS: usize = 16;
    pub const NEXT_COMMAND: usize = 20;
    pub const SESSION_ID: usize = 40;
    pub const SIGNATURE: usize = 48;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trip(cc in any::<u16>(), st in any::<u32>(), cmd in 0u16..19, cr in any::<u16>(),
                             fl in any::<u32>(), nc in any::<u32>(), mid in any::<u64>(), at in any::<u64>(),
                             sid in any::<u64>(), sig in any::<[u8; 16]>()) {
            let h = Header { credit_charge: cc, status: st, command: cmd, credits: cr, flags: fl,
                             next_command: nc, message_id: mid, async_or_tree: at, session_id: sid, signature: sig };
            let mut b = BytesMut::new();
            h.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN);
            prop_assert_eq!(Header::decode(&b).unwrap(), h);
        }
    }

    #[test]
    fn rejects_short_and_bad_magic() {
        assert_eq!(Header::decode(&[0u8; 10]), Err(WireError::Truncated));
        let mut b = BytesMut::new();
        Header::default().encode(&mut b);
        b[0] = 0xFF;
        assert!(Header::decode(&b).is_err());
    }
}
