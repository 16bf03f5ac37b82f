//! Pure SMB2/3 codec: bytes in (nom), bytes out (`BytesMut`). No I/O, no state.
//!
//! Conventions shared by every message module:
//! - A request decoder takes the *whole message* (64-byte header first), because
//!   MS-SMB2 buffer offsets are relative to the start of the header.
//!   Signature: `fn decode(msg: &[u8]) -> Result<Self, WireError>`.
//! - A response encoder appends its body to `out`, which already holds this
//!   message's 64-byte header at `out[0..64]`; offsets are `out.len()` at the
//!   time of writing. Signature: `fn encode(&self, out: &mut BytesMut)`.
//! - Every length and offset from the peer is checked before it is used.

pub mod close;
pub mod create;
pub mod dcerpc;
pub mod error;
pub mod fileid;
pub mod frame;
pub mod header;
pub mod info;
pub mod ioctl;
pub mod lock;
pub mod negotiate;
pub mod notify;
pub mod ntlmssp;
pub mod oplock;
pub mod query_dir;
pub mod rw;
pub mod session;
pub mod simple;
pub mod smb1;
pub mod spnego;
pub mod status;
pub mod transform;
pub mod tree;

pub use fileid::FileId;
pub use header::{Command, Header, HEADER_LEN};
pub use status::NtStatus;

/// Why a buffer could not be decoded. Maps to STATUS_INVALID_PARAMETER unless
/// the caller knows better.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

impl<I> From<nom::Err<nom::error::Error<I>>> for WireError {
    fn from(e: nom::Err<nom::error::Error<I>>) -> Self {
        match e {
            nom::Err::Incomplete(_) => WireError::Truncated,
            nom::Err::Error(_) | nom::Err::Failure(_) => WireError::Truncated,
        }
    }
}

/// Returns `msg[offset..offset+len]`, or an error if the range leaves the message.
/// An empty range is always valid (offset is then ignored, as Windows does).
pub fn slice_at(msg: &[u8], offset: usize, len: usize) -> Result<&[u8], WireError> {
    if len == 0 {
        return Ok(&[]);
    }
    let end = offset
        .checked_add(len)
        .ok_or(WireError::Invalid("offset overflow"))?;
    msg.get(offset..end)
        .ok_or(WireError::Invalid("buffer outside message"))
}

/// Pads `out` with zeros to a multiple of `align` bytes.
pub fn pad_to(out: &mut bytes::BytesMut, align: usize) {
    let rem = out.len() % align;
    if rem != 0 {
        out.resize(out.len() + (align - rem), 0);
    }
}

/// Encodes a Rust string as UTF-16LE bytes.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Decodes UTF-16LE bytes; unpaired surrogates are an error.
pub fn from_utf16le(b: &[u8]) -> Result<String, WireError> {
    if b.len() & 1 != 0 {
        return Err(WireError::Invalid("odd UTF-16 length"));
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| WireError::Invalid("bad UTF-16"))
}
