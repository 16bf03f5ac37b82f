//! The FSA decoders that parse client data. The first byte selects one:
//!   0: fsa::setinfo::decode_set_file_info (class = next byte, then the buffer)
//!   1: fsa::security::parse_sd (+ parse_acl, and encode_sd round trip)
//!   2: fsa::names::smb_path_to_components (UTF-16LE name)
//!   3: fsa::wildcard::name_matches (UTF-16LE pattern, U+0000, UTF-16LE name)
#![no_main]

use holdfast_smbd::fsa::names::{components_to_unix, smb_path_to_components};
use holdfast_smbd::fsa::security::{encode_sd, mode_from_dacl, parse_acl, parse_sd};
use holdfast_smbd::fsa::setinfo::{decode_set_file_info, SetFileInfo};
use holdfast_smbd::fsa::wildcard::{has_wildcards, name_matches, names_equal};
use libfuzzer_sys::fuzz_target;

fn utf16_units(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn path(name: &str) {
    let Ok(p) = smb_path_to_components(name) else {
        return;
    };
    for c in &p.components {
        assert!(!c.is_empty(), "empty component from {name:?}");
        assert!(c != "." && c != "..", "dot component from {name:?}");
        assert!(
            !c.contains(['\\', '/', ':', '\0']),
            "bad component {c:?} from {name:?}"
        );
    }
    if let Some(s) = &p.stream {
        assert!(!s.is_empty() && !s.contains(['\\', '/', '\0']));
    }
    let _ = components_to_unix(&p.components);
}

fn sd(buf: &[u8]) {
    let _ = parse_acl(buf);
    let Ok(sd) = parse_sd(buf) else { return };
    if let Some(d) = &sd.dacl {
        let _ = mode_from_dacl(d, 1000, 1000, false);
    }
    let enc = encode_sd(sd.owner.as_ref(), sd.group.as_ref(), sd.dacl.as_deref());
    let again = parse_sd(&enc).expect("encode_sd output re-parses");
    assert_eq!(sd.owner, again.owner);
    assert_eq!(sd.group, again.group);
    assert_eq!(sd.dacl, again.dacl);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            let Some((&class, buf)) = rest.split_first() else {
                return;
            };
            match decode_set_file_info(class, buf) {
                Ok(SetFileInfo::Rename { name, .. }) | Ok(SetFileInfo::Link { name, .. }) => {
                    path(&name)
                }
                _ => {}
            }
        }
        1 => sd(rest),
        2 => path(&String::from_utf16_lossy(&utf16_units(rest))),
        _ => {
            let units = utf16_units(rest);
            let (p, n) = match units.iter().position(|&u| u == 0) {
                Some(i) => (&units[..i], &units[i + 1..]),
                None => (&units[..], &units[..]),
            };
            let (p, n) = (String::from_utf16_lossy(p), String::from_utf16_lossy(n));
            let m = name_matches(&p, &n);
            if !has_wildcards(&p) && p != "*.*" {
                assert_eq!(m, names_equal(&p, &n), "literal pattern {p:?} vs {n:?}");
            }
            if !n.is_empty() {
                assert!(name_matches("*", &n));
            }
        }
    }
});
