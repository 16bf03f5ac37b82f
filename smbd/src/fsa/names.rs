//! SMB path names (MS-SMB2 3.3.5.9, MS-FSCC 2.1.5, MS-FSA 2.1.5.1): validation
//! and conversion to share-relative Unix paths.
//!
//! Rules applied by [`smb_path_to_components`]:
//! - "" is the share root;
//! - a leading backslash is INVALID_PARAMETER (MS-SMB2 3.3.5.9);
//! - components are separated by '\\'; '/' counts as '\\' too, as in Samba
//!   (smbtorture sends "dir/file"; '/' is never a valid name character, so
//!   no valid name changes meaning); an empty component in the middle
//!   ("a\\\\b") is OBJECT_NAME_INVALID; one trailing backslash is allowed and
//!   reported as `trailing_slash` (the caller requires a directory);
//! - "." components are dropped and ".." removes the previous component;
//!   ".." that would climb above the share root is OBJECT_PATH_SYNTAX_BAD
//!   (what Samba answers; Windows never lets a client above the share root);
//! - a component longer than 255 UTF-16 units, or containing a character
//!   below 0x20 or one of `"*/<>?|`, is OBJECT_NAME_INVALID;
//! - a ':' in the last component introduces a stream, `name:stream[:type]`;
//!   the only type accepted is `$DATA` (case-insensitive), anything else is
//!   OBJECT_NAME_INVALID. "name::$DATA" and "name:$DATA" both mean the
//!   default stream (`stream: None`); "name:" is OBJECT_NAME_INVALID, and so
//!   is ':' in any other component or together with a trailing backslash.

use std::path::PathBuf;

use crate::wire::NtStatus;

/// Longest component, in UTF-16 code units.
pub const MAX_COMPONENT_UNITS: usize = 255;

/// A validated SMB path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedPath {
    /// Share-relative components, with "." and ".." resolved; empty for the root.
    pub components: Vec<String>,
    /// The name ended with a backslash: it must name a directory.
    pub trailing_slash: bool,
    /// Named stream (without the ":$DATA" suffix); None for the default stream.
    pub stream: Option<String>,
    /// The name spelled out the default stream ("f::$DATA", "f:$DATA"): it
    /// then names data, so a directory is not acceptable (MS-FSA 2.1.5.1).
    pub default_stream_named: bool,
}

fn bad_char(c: char) -> bool {
    (c as u32) < 0x20 || matches!(c, '"' | '*' | '/' | '<' | '>' | '?' | '|')
}

fn check_component(c: &str) -> Result<(), NtStatus> {
    if c.is_empty() || c.encode_utf16().count() > MAX_COMPONENT_UNITS || c.chars().any(bad_char) {
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    Ok(())
}

/// Splits "base[:stream[:type]]" of the last component; `Some(None)` is the
/// default stream named explicitly.
fn split_stream(last: &str) -> Result<(&str, Option<Option<String>>), NtStatus> {
    let Some((base, rest)) = last.split_once(':') else {
        return Ok((last, None));
    };
    let (stream, ty) = match rest.split_once(':') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    };
    if let Some(t) = ty {
        if !t.eq_ignore_ascii_case("$DATA") {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
    }
    if stream.is_empty() {
        // "name::$DATA" is the default stream; "name:" is invalid.
        return match ty {
            Some(_) => Ok((base, Some(None))),
            None => Err(NtStatus::OBJECT_NAME_INVALID),
        };
    }
    // A bare ":$DATA" names the default stream too.
    if ty.is_none() && stream.eq_ignore_ascii_case("$DATA") {
        return Ok((base, Some(None)));
    }
    super::streams::validate_name(stream)?;
    Ok((base, Some(Some(stream.to_string()))))
}

/// Validates an SMB2 CREATE name and splits it into components.
pub fn smb_path_to_components(name: &str) -> Result<ParsedPath, NtStatus> {
    let name: std::borrow::Cow<'_, str> = if name.contains('/') {
        name.replace('/', "\\").into()
    } else {
        name.into()
    };
    let name = name.as_ref();
    if name.is_empty() {
        return Ok(ParsedPath::default());
    }
    if name.starts_with('\\') {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let (body, trailing_slash) = match name.strip_suffix('\\') {
        Some(b) => (b, true),
        None => (name, false),
    };
    let raw: Vec<&str> = body.split('\\').collect();
    let mut components: Vec<String> = Vec::with_capacity(raw.len());
    let mut stream = None;
    let mut default_stream_named = false;
    let last_index = raw.len() - 1;
    for (i, part) in raw.iter().enumerate() {
        let mut part = *part;
        if i == last_index && part.contains(':') {
            if trailing_slash {
                return Err(NtStatus::OBJECT_NAME_INVALID);
            }
            let (base, s) = split_stream(part)?;
            part = base;
            default_stream_named = s == Some(None);
            stream = s.flatten();
            if part == "." || part == ".." {
                return Err(NtStatus::OBJECT_NAME_INVALID);
            }
        } else if part.contains(':') {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        match part {
            "." => {}
            ".." => {
                if components.pop().is_none() {
                    return Err(NtStatus::OBJECT_PATH_SYNTAX_BAD);
                }
            }
            _ => {
                check_component(part)?;
                components.push(part.to_string());
            }
        }
    }
    Ok(ParsedPath {
        components,
        trailing_slash,
        stream,
        default_stream_named,
    })
}

/// Share-relative Unix path for validated components: "a/b/c", or "." for
/// the share root. Components come from [`smb_path_to_components`] and hold
/// no '/' or NUL.
pub fn components_to_unix(c: &[String]) -> PathBuf {
    if c.is_empty() {
        return PathBuf::from(".");
    }
    c.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(n: &str) -> ParsedPath {
        smb_path_to_components(n).unwrap_or_else(|e| panic!("{n:?}: {e:?}"))
    }
    fn err(n: &str) -> NtStatus {
        smb_path_to_components(n).unwrap_err()
    }
    fn comps(n: &str) -> Vec<String> {
        ok(n).components
    }

    #[test]
    fn basic_paths() {
        assert_eq!(ok(""), ParsedPath::default());
        assert_eq!(comps("a"), ["a"]);
        assert_eq!(comps("a\\b\\c.txt"), ["a", "b", "c.txt"]);
        assert_eq!(comps("with space\\ünïcödé"), ["with space", "ünïcödé"]);
        assert_eq!(err("\\a"), NtStatus::INVALID_PARAMETER);
        assert_eq!(err("\\"), NtStatus::INVALID_PARAMETER);
    }

    #[test]
    fn forward_slash_separates() {
        assert_eq!(comps("a/b\\c"), ["a", "b", "c"]);
        assert!(ok("dir/").trailing_slash);
        assert_eq!(err("/a"), NtStatus::INVALID_PARAMETER);
        assert_eq!(err("a//b"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("f:s/x"), NtStatus::OBJECT_NAME_INVALID);
    }

    #[test]
    fn trailing_slash() {
        let p = ok("dir\\");
        assert_eq!(p.components, ["dir"]);
        assert!(p.trailing_slash);
        assert!(!ok("dir").trailing_slash);
        assert_eq!(err("dir\\\\"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("a\\\\b"), NtStatus::OBJECT_NAME_INVALID);
    }

    #[test]
    fn dots() {
        assert_eq!(comps("a\\.\\b"), ["a", "b"]);
        assert_eq!(comps("a\\..\\b"), ["b"]);
        assert!(comps("a\\..").is_empty());
        assert!(comps(".").is_empty());
        assert_eq!(err(".."), NtStatus::OBJECT_PATH_SYNTAX_BAD);
        assert_eq!(err("a\\..\\..\\b"), NtStatus::OBJECT_PATH_SYNTAX_BAD);
        assert_eq!(comps("...\\.a\\a."), ["...", ".a", "a."]);
    }

    #[test]
    fn invalid_chars_and_length() {
        for bad in ["a*", "a?", "a<b", "a>b", "a|b", "a\"b", "a\u{1}", "x\\a\tb"] {
            assert_eq!(err(bad), NtStatus::OBJECT_NAME_INVALID, "{bad:?}");
        }
        let long = "x".repeat(255);
        assert_eq!(comps(&long), vec![long]);
        assert_eq!(err(&"x".repeat(256)), NtStatus::OBJECT_NAME_INVALID);
        // 128 non-BMP characters are 256 UTF-16 units.
        assert_eq!(err(&"😀".repeat(128)), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(comps(&"😀".repeat(127)).len(), 1);
    }

    #[test]
    fn streams() {
        let p = ok("f.txt:s1");
        assert_eq!(p.components, ["f.txt"]);
        assert_eq!(p.stream.as_deref(), Some("s1"));
        assert_eq!(ok("d\\f:s1:$DATA").stream.as_deref(), Some("s1"));
        assert_eq!(ok("d\\f:s1:$data").stream.as_deref(), Some("s1"));
        let p = ok("f::$DATA");
        assert_eq!(p.components, ["f"]);
        assert_eq!(p.stream, None);
        assert_eq!(ok("f:$DATA").stream, None);
        assert!(ok("f:$DATA").default_stream_named);
        assert!(ok("f::$DATA").default_stream_named);
        assert!(!ok("f").default_stream_named);
        assert!(!ok("f:s").default_stream_named);
        assert_eq!(ok("f:\u{5}s\n ?*").stream.as_deref(), Some("\u{5}s\n ?*"));
        assert_eq!(err("f:s:$INDEX_ALLOCATION"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("f:"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("f:s:$DATA:x"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("d:s\\f"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("f:s\\"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err(":s"), NtStatus::OBJECT_NAME_INVALID);
        assert_eq!(err("..:s"), NtStatus::OBJECT_NAME_INVALID);
    }

    #[test]
    fn unix_paths() {
        assert_eq!(components_to_unix(&[]), PathBuf::from("."));
        assert_eq!(
            components_to_unix(&comps("a\\b\\c")),
            PathBuf::from("a/b/c")
        );
    }

    #[test]
    fn never_panics() {
        for s in [
            "\\\\", ":", "::", ":::", "a\\:", "\\:", ".\\..", "a:\\b", "\u{0}",
        ] {
            let _ = smb_path_to_components(s);
        }
    }
}
