//! Name matching for QUERY_DIRECTORY search patterns, with the semantics of
//! MS-FSA 2.1.4.4 (FsRtlIsNameInExpression), case-insensitive.
//!
//! Wildcards:
//! - `*` matches zero or more characters;
//! - `?` matches exactly one character;
//! - `<` (DOS_STAR) matches zero or more characters, but never the final `.`
//!   of the name;
//! - `>` (DOS_QM) matches one character, except that at a `.` or at the end of
//!   the name it matches nothing (so a run of them stops at the dot);
//! - `"` (DOS_DOT) matches a `.`, or nothing at the end of the name.
//!
//! Characters are compared after Unicode simple upper-casing (a character whose
//! upper case is more than one character is compared as is). Matching works on
//! Unicode scalar values: a `?` matches one non-BMP character where Windows
//! would see two UTF-16 units; names with such characters are rare enough.

const DOS_STAR: char = '<';
const DOS_QM: char = '>';
const DOS_DOT: char = '"';

/// Simple (one-to-one) Unicode upper case.
pub fn simple_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Whether `pattern` contains any wildcard character (MS-FSA 2.1.4.3).
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', DOS_STAR, DOS_QM, DOS_DOT])
}

/// Case-insensitive comparison of two names (simple upper case).
pub fn names_equal(a: &str, b: &str) -> bool {
    a.chars().map(simple_upper).eq(b.chars().map(simple_upper))
}

/// Does `name` match the search expression `pattern`?
///
/// Runs in O(len(pattern) * len(name)) time and O(len(name)) memory whatever
/// the input, so hostile patterns cannot blow up.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    // Part 1 of MS-FSA 2.1.4.4.
    match (pattern.is_empty(), name.is_empty()) {
        (true, true) => return true,
        (true, false) | (false, true) => return false,
        _ => {}
    }
    if pattern == "*" || pattern == "*.*" {
        return true;
    }
    let p: Vec<char> = pattern.chars().map(simple_upper).collect();
    let n: Vec<char> = name.chars().map(simple_upper).collect();
    let len = n.len();
    let last_dot = n.iter().rposition(|&c| c == '.');

    // next[j]: does p[i+1..] match n[j..]?  cur[j]: does p[i..] match n[j..]?
    let mut next = vec![false; len + 1];
    next[len] = true;
    let mut cur = vec![false; len + 1];
    for &pc in p.iter().rev() {
        for j in (0..=len).rev() {
            let at_end = j == len;
            let ch = n.get(j).copied();
            cur[j] = match pc {
                '*' => next[j] || (!at_end && cur[j + 1]),
                DOS_STAR => {
                    let is_final_dot = ch == Some('.') && last_dot == Some(j);
                    let consumable = !at_end && !is_final_dot;
                    next[j] || (consumable && cur[j + 1])
                }
                '?' => !at_end && next[j + 1],
                DOS_QM => {
                    if at_end || ch == Some('.') {
                        next[j]
                    } else {
                        next[j + 1]
                    }
                }
                DOS_DOT => {
                    if at_end {
                        next[j]
                    } else {
                        ch == Some('.') && next[j + 1]
                    }
                }
                lit => ch == Some(lit) && next[j + 1],
            };
        }
        std::mem::swap(&mut cur, &mut next);
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        name_matches(p, n)
    }

    #[test]
    fn empties() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("*", ""));
        assert!(!m("a", ""));
    }

    #[test]
    fn star_and_star_dot_star() {
        for n in ["a", "a.txt", ".", "..", "noext", "a.b.c", ".hidden"] {
            assert!(m("*", n), "{n}");
            assert!(m("*.*", n), "{n}");
        }
        assert!(m("**", "abc"));
        assert!(m("a*", "a"));
        assert!(m("a*", "abc"));
        assert!(!m("a*", "ba"));
        assert!(m("*a", "bca"));
        assert!(m("*a*", "xay"));
        assert!(!m("*a*", "xyz"));
        // "*.*" only gets the special case when it is the whole pattern.
        assert!(!m("a*.*", "abc"));
        assert!(m("a*.*", "ab.c"));
    }

    #[test]
    fn star_suffix() {
        assert!(m("*.txt", "a.txt"));
        assert!(m("*.txt", "A.TXT"));
        assert!(m("*.txt", ".txt"));
        assert!(m("*.txt", "a.b.txt"));
        assert!(!m("*.txt", "a.txt.bak"));
        assert!(!m("*.txt", "atxt"));
        assert!(!m("*.txt", "txt"));
    }

    #[test]
    fn question_mark() {
        assert!(m("a?c", "abc"));
        assert!(m("a?c", "a.c"));
        assert!(!m("a?c", "ac"));
        assert!(!m("a?c", "abbc"));
        assert!(m("???", "abc"));
        assert!(!m("???", "ab"));
        assert!(!m("???", "abcd"));
    }

    #[test]
    fn literal_case_insensitive() {
        assert!(m("abc", "ABC"));
        assert!(m("ÄBC", "äbc"));
        assert!(m("straße", "STRAßE"));
        assert!(!m("abc", "abd"));
        assert!(m("ǅ", "ǆ"));
        assert!(names_equal("Hello.TXT", "hello.txt"));
        assert!(!names_equal("a", "ab"));
    }

    #[test]
    fn dos_star() {
        assert!(m("<.txt", "a.txt"));
        assert!(m("<.txt", "a.b.txt"));
        assert!(m("<.txt", ".txt"));
        assert!(!m("<.txt", "a.txt.bak"));
        assert!(m("<", "abc"));
        assert!(!m("<", "a.b"));
        assert!(m("<.<", "a.b"));
        assert!(m("<.<", "a.b.c"));
        assert!(m("a<", "abc"));
        assert!(m("<\"", "abc")); // Win32 "*." : names without extension
        assert!(m("<\"", "abc."));
        assert!(!m("<\"", "abc.d"));
        assert!(m("<.*", "a.b"));
        assert!(m("<*", "a.b"));
    }

    #[test]
    fn dos_qm() {
        assert!(m("a>>", "a"));
        assert!(m("a>>", "ab"));
        assert!(m("a>>", "abc"));
        assert!(!m("a>>", "abcd"));
        assert!(!m("a>>", "a.b"));
        assert!(m(">>>.txt", "ab.txt"));
        assert!(m(">>>.txt", "abc.txt"));
        assert!(m(">>>.txt", ".txt"));
        assert!(!m(">>>.txt", "abcd.txt"));
        assert!(m(">", "a"));
        assert!(!m(">", "ab"));
        assert!(!m(">", "."));
        // Win32 "????????.???"
        assert!(m(">>>>>>>>\">>>", "readme.txt"));
        assert!(m(">>>>>>>>\">>>", "readme"));
        assert!(!m(">>>>>>>>\">>>", "readme.text"));
    }

    #[test]
    fn dos_dot() {
        assert!(m("\"", "."));
        assert!(!m("\"", "a"));
        assert!(m("a\"", "a"));
        assert!(m("a\"", "a."));
        assert!(!m("a\"", "ab"));
        assert!(m("a\"b", "a.b"));
        assert!(!m("a\"b", "ab"));
        assert!(m("a\"\"", "a"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcards("a*"));
        assert!(has_wildcards("a<"));
        assert!(has_wildcards("\""));
        assert!(!has_wildcards("abc.txt"));
    }

    #[test]
    fn hostile_patterns_terminate() {
        let p = "*a".repeat(5000) + "b";
        let n = "a".repeat(255);
        assert!(!m(&p, &n));
        let p = "<".repeat(10000);
        assert!(m(&p, &n));
    }

    /// Cross-check `*`/`?`-only patterns against a naive recursive matcher.
    #[test]
    fn agrees_with_naive_for_simple_wildcards() {
        fn naive(p: &[char], n: &[char]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some(('*', rest)) => (0..=n.len()).any(|k| naive(rest, &n[k..])),
                Some(('?', rest)) => !n.is_empty() && naive(rest, &n[1..]),
                Some((c, rest)) => n.first() == Some(c) && naive(rest, &n[1..]),
            }
        }
        let alphabet = ['a', 'b', '.', '*', '?'];
        let names = ["a", "b", "ab", "a.b", "ba.", ".a", "aab", "a.a.b"];
        let mut pats = vec![String::new()];
        for _ in 0..4 {
            let mut more = Vec::new();
            for p in &pats {
                for c in alphabet {
                    more.push(format!("{p}{c}"));
                }
            }
            pats.extend(more);
        }
        for p in pats.iter().filter(|p| !p.is_empty()) {
            if p == "*" || p == "*.*" {
                continue;
            }
            let pc: Vec<char> = p.chars().collect();
            for n in names {
                let nc: Vec<char> = n.chars().collect();
                assert_eq!(m(p, n), naive(&pc, &nc), "{p:?} vs {n:?}");
            }
        }
    }
}
