//! What the kernel reports about a kept fd: its kernel lease and the
//! byte-range locks and leases on its inode, as /proc/locks shows them.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd};

use kmod_interface::lease::{get_lease, LeaseKind};

use crate::proto::{LockLine, MAX_LOCK_LINES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdInfo {
    pub dev: u64,
    pub ino: u64,
    pub kernel_lease: String,
    pub locks: Vec<LockLine>,
    pub locks_omitted: u32,
}

/// "MAJOR:MINOR:INODE" as /proc/locks prints it (`%02x:%02x:%lu`).
pub fn proc_locks_key(dev: u64, ino: u64) -> String {
    format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        ino
    )
}

/// A lock line without its leading ordinal, whitespace collapsed.
fn normalize(line: &str) -> String {
    let mut toks = line.split_whitespace().peekable();
    if toks.peek().is_some_and(|t| t.ends_with(':')) {
        toks.next();
    }
    toks.collect::<Vec<_>>().join(" ")
}

/// Lines of `proc_locks` (the text of /proc/locks) on `key`'s inode; `own`
/// holds the normalized lines of the kept fd's own fdinfo.
pub fn match_locks(proc_locks: &str, key: &str, own: &HashSet<String>) -> (Vec<LockLine>, u32) {
    let mut out = Vec::new();
    let mut omitted = 0u32;
    for line in proc_locks.lines() {
        if !line.split_whitespace().any(|t| t == key) {
            continue;
        }
        if out.len() == MAX_LOCK_LINES {
            omitted = omitted.saturating_add(1);
            continue;
        }
        let text = normalize(line);
        out.push(LockLine {
            own: own.contains(&text),
            text,
        });
    }
    (out, omitted)
}

/// The "lock:" lines of /proc/self/fdinfo/N: locks held through that very
/// open file description.
pub fn own_locks(fdinfo: &str) -> HashSet<String> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .map(normalize)
        .collect()
}

/// Whether the lease held through `fd`'s open file description is being
/// broken (its fdinfo lists it as BREAKING).
pub fn lease_breaking(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .any(|l| l.contains("LEASE") && l.contains("BREAKING"))
}

/// The text of /proc/locks (empty if unreadable).
pub fn read_proc_locks() -> String {
    std::fs::read_to_string("/proc/locks").unwrap_or_default()
}

pub fn inspect(fd: BorrowedFd<'_>) -> FdInfo {
    inspect_with(fd, &read_proc_locks())
}

/// Like `inspect` with /proc/locks already read (once per List).
pub fn inspect_with(fd: BorrowedFd<'_>, proc_locks: &str) -> FdInfo {
    let (dev, ino) = match nix::sys::stat::fstat(fd.as_raw_fd()) {
        Ok(st) => (st.st_dev, st.st_ino),
        Err(_) => (0, 0),
    };
    let kernel_lease = match get_lease(fd) {
        Ok(LeaseKind::Read) => "read",
        Ok(LeaseKind::Write) => "write",
        Ok(LeaseKind::None) => "none",
        Err(_) => "unknown",
    }
    .to_string();
    let own = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map(|s| own_locks(&s))
        .unwrap_or_default();
    let (locks, locks_omitted) = match_locks(proc_locks, &proc_locks_key(dev, ino), &own);
    FdInfo {
        dev,
        ino,
        kernel_lease,
        locks,
        locks_omitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn parses_proc_locks_text() {
        let text = "1: OFDLCK ADVISORY  WRITE -1 fe:00:77 0 9\n\
                    2: POSIX  ADVISORY  READ 5975 fe:00:770 128 128\n\
                    3: LEASE  ACTIVE    READ 12 fe:00:77 0 EOF\n\
                    3: -> OFDLCK ADVISORY  READ -1 fe:00:77 0 0\n";
        let own: HashSet<String> = ["OFDLCK ADVISORY WRITE -1 fe:00:77 0 9".to_string()].into();
        let (locks, omitted) = match_locks(text, "fe:00:77", &own);
        assert_eq!(omitted, 0);
        let texts: Vec<&str> = locks.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "OFDLCK ADVISORY WRITE -1 fe:00:77 0 9",
                "LEASE ACTIVE READ 12 fe:00:77 0 EOF",
                "-> OFDLCK ADVISORY READ -1 fe:00:77 0 0"
            ]
        );
        assert_eq!(
            locks.iter().map(|l| l.own).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert_eq!(
            own_locks("pos:\t0\nlock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:77 0 9\n"),
            own
        );
    }

    #[test]
    fn sees_a_real_ofd_lock_and_lease() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        kmod_interface::ofd::ofd_lock(f.as_fd(), 2, 3, true, false).unwrap();
        let other = std::fs::File::open(&p).unwrap();
        kmod_interface::ofd::ofd_lock(other.as_fd(), 8, 1, false, false).unwrap();
        let info = inspect(f.as_fd());
        assert_eq!(info.kernel_lease, "none");
        let key = proc_locks_key(info.dev, info.ino);
        let mine = format!("OFDLCK ADVISORY WRITE -1 {key} 2 4");
        let theirs = format!("OFDLCK ADVISORY READ -1 {key} 8 8");
        assert!(
            info.locks.iter().any(|l| l.text == mine && l.own),
            "{:?}",
            info.locks
        );
        assert!(
            info.locks.iter().any(|l| l.text == theirs && !l.own),
            "{:?}",
            info.locks
        );
        drop(other);
        let r = std::fs::File::open(&p).unwrap();
        drop(f);
        kmod_interface::lease::set_lease(r.as_fd(), LeaseKind::Read).unwrap();
        let info = inspect(r.as_fd());
        assert_eq!(info.kernel_lease, "read");
        assert!(info
            .locks
            .iter()
            .any(|l| l.text.starts_with("LEASE") && l.own));
    }
}
