//! Just enough SMB1 to accept a multi-protocol SMB_COM_NEGOTIATE
//! (MS-CIFS 2.2.4.52.1) and upgrade it to SMB2 (MS-SMB2 3.3.5.3.1).

use super::header::SMB1_PROTOCOL_ID;
use super::negotiate::{DIALECT_SMB2_002, DIALECT_SMB2_WILDCARD};
use super::WireError;

pub const SMB1_HEADER_LEN: usize = 32;
pub const SMB1_COM_NEGOTIATE: u8 = 0x72;
/// BufferFormat byte preceding each dialect string.
pub const SMB1_DIALECT_BUFFER_FORMAT: u8 = 0x02;

/// Dialect strings (without the 0x02 BufferFormat byte) that select SMB2.
pub const SMB1_DIALECT_SMB2_002: &str = "SMB 2.002";
pub const SMB1_DIALECT_SMB2_WILDCARD: &str = "SMB 2.???";

/// Returns the dialect strings of an SMB1 NEGOTIATE request, in order,
/// without their 0x02 BufferFormat byte and NUL terminator ("SMB 2.002",
/// "SMB 2.???", "NT LM 0.12", ...). Bytes are taken as Latin-1.
pub fn smb1_negotiate_dialects(msg: &[u8]) -> Result<Vec<String>, WireError> {
    if msg.len() < SMB1_HEADER_LEN + 3 {
        return Err(WireError::Truncated);
    }
    if msg[0..4] != SMB1_PROTOCOL_ID {
        return Err(WireError::Invalid("SMB1 protocol id"));
    }
    if msg[4] != SMB1_COM_NEGOTIATE {
        return Err(WireError::Invalid("SMB1 command is not NEGOTIATE"));
    }
    let word_count = usize::from(msg[SMB1_HEADER_LEN]);
    let bc_at = SMB1_HEADER_LEN + 1 + 2 * word_count;
    let bc = msg.get(bc_at..bc_at + 2).ok_or(WireError::Truncated)?;
    let byte_count = usize::from(u16::from_le_bytes([bc[0], bc[1]]));
    let mut bytes = msg
        .get(bc_at + 2..bc_at + 2 + byte_count)
        .ok_or(WireError::Truncated)?;
    let mut out = Vec::new();
    while let Some((&fmt, rest)) = bytes.split_first() {
        if fmt != SMB1_DIALECT_BUFFER_FORMAT {
            return Err(WireError::Invalid("SMB1 dialect buffer format"));
        }
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Invalid("unterminated SMB1 dialect"))?;
        out.push(rest[..nul].iter().map(|&b| char::from(b)).collect());
        bytes = &rest[nul + 1..];
    }
    Ok(out)
}

/// The SMB2 dialect to answer an SMB1 NEGOTIATE with (MS-SMB2 3.3.5.3.1):
/// 0x02FF if the server implements 2.1 or later and "SMB 2.???" was offered,
/// else 0x0202 if "SMB 2.002" was offered, else `None` (not an SMB2 client).
pub fn smb2_dialect_for_smb1(dialects: &[String], server_beyond_2002: bool) -> Option<u16> {
    let has = |s: &str| dialects.iter().any(|d| d == s);
    if server_beyond_2002 && has(SMB1_DIALECT_SMB2_WILDCARD) {
        Some(DIALECT_SMB2_WILDCARD)
    } else if has(SMB1_DIALECT_SMB2_002) {
        Some(DIALECT_SMB2_002)
    } else {
        None
    }
}

/// Builds an SMB1 NEGOTIATE request offering `dialects` (for tests and fuzz
/// seeds). Characters above U+00FF are replaced by '?'.
pub fn encode_smb1_negotiate(dialects: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    for d in dialects {
        body.push(SMB1_DIALECT_BUFFER_FORMAT);
        body.extend(d.chars().map(|c| u8::try_from(c).unwrap_or(b'?')));
        body.push(0);
    }
    let mut m = Vec::with_capacity(SMB1_HEADER_LEN + 3 + body.len());
    m.extend_from_slice(&SMB1_PROTOCOL_ID);
    m.push(SMB1_COM_NEGOTIATE);
    m.extend_from_slice(&[0; 4]); // Status
    m.push(0x18); // Flags: canonicalized paths, case insensitive
    m.extend_from_slice(&0xC853u16.to_le_bytes()); // Flags2 as sent by Windows
    m.extend_from_slice(&[0; SMB1_HEADER_LEN - 12]);
    m.push(0); // WordCount
    m.extend_from_slice(&(body.len() as u16).to_le_bytes());
    m.extend_from_slice(&body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn windows_style_negotiate() {
        let m = encode_smb1_negotiate(&[
            "PC NETWORK PROGRAM 1.0",
            "NT LM 0.12",
            "SMB 2.002",
            "SMB 2.???",
        ]);
        assert_eq!(m.len(), 32 + 3 + 24 + 12 + 11 + 11);
        let d = smb1_negotiate_dialects(&m).unwrap();
        assert_eq!(
            d,
            vec![
                "PC NETWORK PROGRAM 1.0",
                "NT LM 0.12",
                "SMB 2.002",
                "SMB 2.???"
            ]
        );
        assert_eq!(smb2_dialect_for_smb1(&d, true), Some(0x02FF));
        assert_eq!(smb2_dialect_for_smb1(&d, false), Some(0x0202));
        assert_eq!(smb2_dialect_for_smb1(&d[..2], true), None);
    }

    #[test]
    fn rejects_bad() {
        let mut m = encode_smb1_negotiate(&["SMB 2.002"]);
        let last = m.len() - 1;
        m[last] = b'x'; // lose the NUL
        assert!(smb1_negotiate_dialects(&m).is_err());
        let mut m = encode_smb1_negotiate(&["SMB 2.002"]);
        m[4] = 0x73;
        assert!(smb1_negotiate_dialects(&m).is_err());
        let mut m = encode_smb1_negotiate(&["SMB 2.002"]);
        m[35] = 0x03;
        assert!(smb1_negotiate_dialects(&m).is_err());
        let m = encode_smb1_negotiate(&["SMB 2.002"]);
        assert_eq!(
            smb1_negotiate_dialects(&m[..m.len() - 1]),
            Err(WireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn round_trip(ds in vec("[ -~]{0,20}", 0..6)) {
            let refs: Vec<&str> = ds.iter().map(String::as_str).collect();
            let m = encode_smb1_negotiate(&refs);
            prop_assert_eq!(smb1_negotiate_dialects(&m).unwrap(), ds);
        }

        #[test]
        fn never_panics(mut buf in vec(any::<u8>(), 0..80)) {
            if buf.len() >= 5 {
                buf[0..4].copy_from_slice(&SMB1_PROTOCOL_ID);
                buf[4] = SMB1_COM_NEGOTIATE;
            }
            let _ = smb1_negotiate_dialects(&buf);
        }
    }
}
