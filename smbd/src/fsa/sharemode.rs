//! Share-access check (MS-FSA 2.1.5.1.2.1, "Algorithm to Check Sharing
//! Access to an Existing Stream or Directory").
//!
//! Only data-access rights count: FILE_READ_DATA and FILE_EXECUTE need the
//! other side to share READ, FILE_WRITE_DATA and FILE_APPEND_DATA need WRITE,
//! DELETE needs DELETE. An open with none of those rights never conflicts and
//! is never conflicted against (e.g. a FILE_READ_ATTRIBUTES-only open).

use super::types::{access, share};

/// Rights that take part in share-mode checks.
pub const DATA_ACCESS: u32 = access::FILE_READ_DATA
    | access::FILE_WRITE_DATA
    | access::FILE_APPEND_DATA
    | access::FILE_EXECUTE
    | access::DELETE;

/// The share bits an open with `access` needs from every other open.
fn needed_share(access: u32) -> u32 {
    let mut s = 0;
    if access & (access::FILE_READ_DATA | access::FILE_EXECUTE) != 0 {
        s |= share::READ;
    }
    if access & (access::FILE_WRITE_DATA | access::FILE_APPEND_DATA) != 0 {
        s |= share::WRITE;
    }
    if access & access::DELETE != 0 {
        s |= share::DELETE;
    }
    s
}

/// Whether two opens of the same stream conflict.
pub fn pair_conflicts(a_access: u32, a_share: u32, b_access: u32, b_share: u32) -> bool {
    if a_access & DATA_ACCESS == 0 || b_access & DATA_ACCESS == 0 {
        return false;
    }
    needed_share(a_access) & !b_share != 0 || needed_share(b_access) & !a_share != 0
}

/// Whether a new open (`new_access` granted, `new_share` offered) conflicts
/// with any existing open `(granted access, share access)`: the caller then
/// fails the create with STATUS_SHARING_VIOLATION.
pub fn share_conflict(existing: &[(u32, u32)], new_access: u32, new_share: u32) -> bool {
    existing
        .iter()
        .any(|&(a, s)| pair_conflicts(a, s, new_access, new_share))
}

#[cfg(test)]
mod tests {
    use super::*;
    use access::*;

    const R: u32 = share::READ;
    const W: u32 = share::WRITE;
    const D: u32 = share::DELETE;

    #[test]
    fn no_existing_opens() {
        assert!(!share_conflict(&[], FILE_ALL_ACCESS, 0));
    }

    #[test]
    fn attribute_only_opens_never_conflict() {
        let attr_only = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE;
        assert!(!share_conflict(&[(FILE_ALL_ACCESS, 0)], attr_only, 0));
        assert!(!share_conflict(&[(attr_only, 0)], FILE_ALL_ACCESS, 0));
        assert!(!share_conflict(
            &[(WRITE_DAC | WRITE_OWNER, 0)],
            FILE_READ_DATA,
            0
        ));
    }

    #[test]
    fn read_write_delete_pairs() {
        // existing access, existing share, new access, new share, conflict?
        let cases = [
            (FILE_READ_DATA, R, FILE_READ_DATA, R, false),
            (FILE_READ_DATA, 0, FILE_READ_DATA, R, true),
            (FILE_READ_DATA, R, FILE_READ_DATA, 0, true),
            (FILE_EXECUTE, R, FILE_READ_DATA, R, false),
            (FILE_EXECUTE, W, FILE_READ_DATA, R, true),
            (FILE_READ_DATA, R, FILE_EXECUTE, 0, true),
            (FILE_WRITE_DATA, R | W, FILE_READ_DATA, R | W, false),
            (FILE_WRITE_DATA, R, FILE_WRITE_DATA, R | W, true),
            (FILE_APPEND_DATA, R | W, FILE_READ_DATA, R, true),
            (FILE_APPEND_DATA, W, FILE_APPEND_DATA, W, false),
            (FILE_READ_DATA, R | W, FILE_WRITE_DATA, R | W, false),
            (FILE_READ_DATA, R, FILE_WRITE_DATA, R | W, true),
            (DELETE, D, DELETE, D, false),
            (DELETE, R | W, DELETE, D, true),
            (DELETE, D, FILE_READ_DATA, R, true),
            (FILE_READ_DATA, R, DELETE, D, true),
            (FILE_READ_DATA, R | D, DELETE, R, false),
            (
                DELETE | FILE_READ_ATTRIBUTES,
                D,
                FILE_READ_DATA,
                R | D,
                true,
            ),
            (
                DELETE | FILE_READ_ATTRIBUTES,
                R | D,
                FILE_READ_DATA,
                D,
                false,
            ),
            (
                FILE_ALL_ACCESS,
                R | W | D,
                FILE_ALL_ACCESS,
                R | W | D,
                false,
            ),
            (FILE_ALL_ACCESS, R | W, FILE_ALL_ACCESS, R | W | D, true),
            (FILE_GENERIC_READ, R, FILE_GENERIC_WRITE, R | W, true),
            (FILE_GENERIC_READ, R | W, FILE_GENERIC_WRITE, R, false),
        ];
        for (i, (ea, es, na, ns, want)) in cases.into_iter().enumerate() {
            assert_eq!(share_conflict(&[(ea, es)], na, ns), want, "case {i}");
            // The relation is symmetric.
            assert_eq!(pair_conflicts(na, ns, ea, es), want, "case {i} swapped");
        }
    }

    #[test]
    fn any_existing_open_conflicts() {
        let existing = [
            (FILE_READ_DATA, R | W),
            (FILE_WRITE_DATA, R | W),
            (DELETE, R),
        ];
        assert!(share_conflict(&existing, FILE_READ_DATA, R | W));
        assert!(!share_conflict(&existing, FILE_READ_DATA, R | W | D));
        assert!(!share_conflict(&existing, FILE_READ_ATTRIBUTES, 0));
    }

    /// Exhaustive over the five data rights and the three share bits against a
    /// direct statement of the rule.
    #[test]
    fn exhaustive() {
        let rights = [
            FILE_READ_DATA,
            FILE_WRITE_DATA,
            FILE_APPEND_DATA,
            FILE_EXECUTE,
            DELETE,
        ];
        let mask = |m: u32| -> u32 {
            rights
                .iter()
                .enumerate()
                .filter(|(i, _)| m & (1 << i) != 0)
                .fold(0, |a, (_, r)| a | r)
        };
        let model = |a: u32, sa: u32, b: u32, sb: u32| -> bool {
            if a & DATA_ACCESS == 0 || b & DATA_ACCESS == 0 {
                return false;
            }
            let reads = |x: u32| x & (FILE_READ_DATA | FILE_EXECUTE) != 0;
            let writes = |x: u32| x & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
            let dels = |x: u32| x & DELETE != 0;
            (reads(a) && sb & R == 0)
                || (writes(a) && sb & W == 0)
                || (dels(a) && sb & D == 0)
                || (reads(b) && sa & R == 0)
                || (writes(b) && sa & W == 0)
                || (dels(b) && sa & D == 0)
        };
        for ma in 0..32 {
            for mb in 0..32 {
                for sa in 0..8 {
                    for sb in 0..8 {
                        let (a, b) = (mask(ma) | SYNCHRONIZE, mask(mb) | FILE_READ_ATTRIBUTES);
                        assert_eq!(share_conflict(&[(a, sa)], b, sb), model(a, sa, b, sb));
                    }
                }
            }
        }
    }
}
