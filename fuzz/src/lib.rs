//! Helpers shared by the fuzz targets.

use bytes::BytesMut;
use holdfast_smbd::wire::{WireError, HEADER_LEN};
use std::fmt::Debug;

/// Whether `data` starts with the SMB2 protocol id (0xFE 'SMB').
pub fn is_smb2(data: &[u8]) -> bool {
    data.starts_with(&[0xFE, b'S', b'M', b'B'])
}

/// Decodes a request message with `decode`; when that succeeds, re-encodes it
/// behind the same 64-byte header with `encode`, decodes the result again and
/// asserts the two decodes are equal. Returns the first decode.
pub fn round_trip<T: PartialEq + Debug>(
    what: &str,
    msg: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
    encode: impl Fn(&T, &mut BytesMut),
) -> Option<T> {
    let first = decode(msg).ok()?;
    let mut out = BytesMut::from(&msg[..HEADER_LEN.min(msg.len())]);
    encode(&first, &mut out);
    let second = match decode(&out) {
        Ok(s) => s,
        Err(e) => panic!("{what}: re-decode failed: {e:?}\nfirst: {first:?}\nencoded: {out:02x?}"),
    };
    assert_eq!(first, second, "{what}: decode -> encode -> decode differs");
    Some(first)
}

/// Same as [`round_trip`] for payloads that are not whole messages
/// (encoders that return a `Vec<u8>`).
pub fn round_trip_vec<T: PartialEq + Debug, E: Debug>(
    what: &str,
    buf: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Option<T> {
    let first = decode(buf).ok()?;
    let enc = encode(&first);
    let second = match decode(&enc) {
        Ok(s) => s,
        Err(e) => panic!("{what}: re-decode failed: {e:?}\nfirst: {first:?}\nencoded: {enc:02x?}"),
    };
    assert_eq!(first, second, "{what}: decode -> encode -> decode differs");
    Some(first)
}

/// Splits `data` into `n` pieces: each but the last is prefixed by a 16-bit
/// little-endian length (clamped to what is left).
pub fn split_len_prefixed(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        let len = if data.len() >= 2 {
            let l = usize::from(u16::from_le_bytes([data[0], data[1]]));
            data = &data[2..];
            l.min(data.len())
        } else {
            data = &[];
            0
        };
        let (piece, rest) = data.split_at(len);
        out.push(piece);
        data = rest;
    }
    out.push(data);
    out
}
