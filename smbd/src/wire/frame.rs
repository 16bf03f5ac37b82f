//! Direct TCP transport framing (MS-SMB2 2.1) and compound chains (MS-SMB2 3.2.4.1.4).

use super::header::offsets;
use super::{WireError, HEADER_LEN};

/// Largest message a 24-bit Direct TCP length can describe.
pub const MAX_FRAME_LEN: usize = 0x00FF_FFFF;

/// Parses the 4-byte Direct TCP header: a zero byte, then a 24-bit big-endian length.
pub fn parse_frame_len(hdr: [u8; 4]) -> Result<usize, WireError> {
    if hdr[0] != 0 {
        return Err(WireError::Invalid("frame header first byte"));
    }
    Ok(usize::from(hdr[1]) << 16 | usize::from(hdr[2]) << 8 | usize::from(hdr[3]))
}

/// Builds the 4-byte Direct TCP header for a message of `len` bytes.
///
/// # Panics
/// If `len > MAX_FRAME_LEN`: the server never builds such a message, so this
/// is a programming error rather than peer input.
pub fn frame_header(len: usize) -> [u8; 4] {
    assert!(len <= MAX_FRAME_LEN, "frame too long: {len}");
    [0, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// Splits a compound chain into its messages, returning `(start, end)` of
/// each in `buf`. NextCommand of each message gives the offset of the next
/// one from its own start; it must be 8-byte aligned, at least one header
/// long and leave a whole header inside `buf`. The last message has
/// NextCommand 0 and runs to the end of `buf`.
///
/// Only the NextCommand field is looked at; each message's header still has to
/// be decoded by the caller.
pub fn split_compound(buf: &[u8]) -> Result<Vec<(usize, usize)>, WireError> {
    let mut out = Vec::new();
    let mut start = 0usize;
    loop {
        let rest = &buf[start..];
        if rest.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let nc = &rest[offsets::NEXT_COMMAND..offsets::NEXT_COMMAND + 4];
        let next = u32::from_le_bytes([nc[0], nc[1], nc[2], nc[3]]) as usize;
        if next == 0 {
            out.push((start, buf.len()));
            return Ok(out);
        }
        if !next.is_multiple_of(8) {
            return Err(WireError::Invalid("NextCommand not 8-byte aligned"));
        }
        if next < HEADER_LEN {
            return Err(WireError::Invalid("NextCommand too small"));
        }
        if next >= rest.len() {
            return Err(WireError::Invalid("NextCommand outside buffer"));
        }
        out.push((start, start + next));
        start += next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn chain(bodies: &[usize]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut out = BytesMut::new();
        let mut spans = Vec::new();
        for (n, &body) in bodies.iter().enumerate() {
            let start = out.len();
            let last = n + 1 == bodies.len();
            let len = HEADER_LEN + body;
            let padded = if last { len } else { (len + 7) & !7 };
            let h = Header {
                next_command: if last { 0 } else { padded as u32 },
                ..Default::default()
            };
            h.encode(&mut out);
            out.resize(start + padded, 0xAB);
            spans.push((start, out.len()));
        }
        (out.to_vec(), spans)
    }

    proptest! {
        #[test]
        fn frame_len_round_trip(len in 0usize..=MAX_FRAME_LEN) {
            prop_assert_eq!(parse_frame_len(frame_header(len)).unwrap(), len);
        }

        #[test]
        fn compound_round_trip(bodies in proptest::collection::vec(0usize..200, 1..6)) {
            let (buf, spans) = chain(&bodies);
            prop_assert_eq!(split_compound(&buf).unwrap(), spans);
        }

        #[test]
        fn compound_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = split_compound(&buf);
        }
    }

    #[test]
    fn frame_header_rejects_nonzero_first_byte() {
        assert!(parse_frame_len([1, 0, 0, 4]).is_err());
        assert_eq!(parse_frame_len([0, 1, 2, 3]).unwrap(), 0x010203);
        assert_eq!(frame_header(0x010203), [0, 1, 2, 3]);
    }

    #[test]
    fn compound_bad_next_command() {
        let (mut buf, _) = chain(&[10, 10]);
        // Misaligned.
        buf[20] = 81;
        assert!(split_compound(&buf).is_err());
        // Smaller than a header.
        buf[20] = 56;
        assert!(split_compound(&buf).is_err());
        // Past the end.
        buf[20] = 0;
        buf[21] = 1;
        assert!(split_compound(&buf).is_err());
        // Leaves less than a header for the next message.
        let (mut buf, _) = chain(&[10, 10]);
        buf.truncate(80 + 40);
        assert_eq!(split_compound(&buf), Err(WireError::Truncated));
        assert_eq!(split_compound(&[0u8; 10]), Err(WireError::Truncated));
    }
}
