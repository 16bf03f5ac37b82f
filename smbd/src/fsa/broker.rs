//! The open-file broker: the one place that decides conflicts between opens of
//! the same file (share modes, delete-pending, byte-range locks).
//!
//! Every call is a self-contained request with a plain-data answer, so the
//! broker can move behind a socket (one broker for all workers) without
//! changing its callers. Today it is an in-process object.

use super::types::{access, share};
use crate::wire::NtStatus;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Identifies a file independent of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// Bits of the access mask that take part in share-mode checks (MS-FSA 2.1.5.1.2).
const DATA_ACCESS: u32 = access::FILE_READ_DATA
    | access::FILE_WRITE_DATA
    | access::FILE_APPEND_DATA
    | access::FILE_EXECUTE
    | access::DELETE;

#[derive(Debug, Clone)]
struct OpenRec {
    open_id: u64,
    access: u32,
    share: u32,
    delete_on_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteLock {
    open_id: u64,
    offset: u64,
    length: u64,
    exclusive: bool,
}

impl ByteLock {
    fn overlaps(&self, offset: u64, length: u64) -> bool {
        if self.length == 0 || length == 0 {
            return false;
        }
        let a_end = self.offset.saturating_add(self.length);
        let b_end = offset.saturating_add(length);
        self.offset < b_end && offset < a_end
    }
}

#[derive(Debug, Default)]
struct FileState {
    /// Share-relative path, kept current across renames.
    path: PathBuf,
    opens: Vec<OpenRec>,
    delete_pending: bool,
    locks: Vec<ByteLock>,
    /// Woken whenever locks of this file are released, so that blocked
    /// (pending) lock requests retry.
    unlocked: Arc<Notify>,
}

/// What the last close of an open means for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseOutcome {
    /// The file must be deleted now, at this path.
    pub delete: Option<PathBuf>,
    /// No open is left.
    pub last: bool,
}

#[derive(Debug, Default)]
pub struct Broker {
    files: Mutex<HashMap<FileKey, FileState>>,
}

/// True if a new open (access, share) conflicts with an existing one (MS-FSA share check).
pub fn share_conflict(
    existing_access: u32,
    existing_share: u32,
    new_access: u32,
    new_share: u32,
) -> bool {
    let (ea, na) = (existing_access & DATA_ACCESS, new_access & DATA_ACCESS);
    if ea == 0 || na == 0 {
        return false;
    }
    let reads = |a: u32| a & (access::FILE_READ_DATA | access::FILE_EXECUTE) != 0;
    let writes = |a: u32| a & (access::FILE_WRITE_DATA | access::FILE_APPEND_DATA) != 0;
    let deletes = |a: u32| a & access::DELETE != 0;
    (reads(na) && existing_share & share::READ == 0)
        || (writes(na) && existing_share & share::WRITE == 0)
        || (deletes(na) && existing_share & share::DELETE == 0)
        || (reads(ea) && new_share & share::READ == 0)
        || (writes(ea) && new_share & share::WRITE == 0)
        || (deletes(ea) && new_share & share::DELETE == 0)
}

impl Broker {
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, FileState>> {
        // A panic while holding the lock cannot leave the map half-updated in
        // a way that matters more than refusing service would.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks share modes and delete-pending, and records the open if allowed.
    pub fn open(
        &self,
        key: FileKey,
        path: PathBuf,
        open_id: u64,
        access: u32,
        share: u32,
        delete_on_close: bool,
    ) -> Result<(), NtStatus> {
        let mut files = self.files();
        let st = files.entry(key).or_default();
        if st.opens.is_empty() {
            st.path = path;
            st.delete_pending = false;
        }
        if st.delete_pending {
            return Err(NtStatus::DELETE_PENDING);
        }
        if st
            .opens
            .iter()
            .any(|o| share_conflict(o.access, o.share, access, share))
        {
            if st.opens.is_empty() {
                files.remove(&key);
            }
            return Err(NtStatus::SHARING_VIOLATION);
        }
        st.opens.push(OpenRec {
            open_id,
            access,
            share,
            delete_on_close,
        });
        Ok(())
    }

    /// Would an open with these masks conflict? (No record is made.)
    pub fn would_conflict(&self, key: FileKey, access: u32, share: u32) -> Option<NtStatus> {
        let files = self.files();
        let st = files.get(&key)?;
        if st.delete_pending {
            return Some(NtStatus::DELETE_PENDING);
        }
        st.opens
            .iter()
            .any(|o| share_conflict(o.access, o.share, access, share))
            .then_some(NtStatus::SHARING_VIOLATION)
    }

    /// Number of opens of the file.
    pub fn open_count(&self, key: FileKey) -> usize {
        self.files().get(&key).map_or(0, |s| s.opens.len())
    }

    /// Removes an open; says whether the file must now be deleted.
    pub fn close(&self, key: FileKey, open_id: u64) -> CloseOutcome {
        let mut files = self.files();
        let Some(st) = files.get_mut(&key) else {
            return CloseOutcome {
                delete: None,
                last: true,
            };
        };
        if let Some(pos) = st.opens.iter().position(|o| o.open_id == open_id) {
            let rec = st.opens.remove(pos);
            if rec.delete_on_close {
                st.delete_pending = true;
            }
        }
        let before = st.locks.len();
        st.locks.retain(|l| l.open_id != open_id);
        if st.locks.len() != before {
            st.unlocked.notify_waiters();
        }
        if st.opens.is_empty() {
            let delete = st.delete_pending.then(|| st.path.clone());
            files.remove(&key);
            CloseOutcome { delete, last: true }
        } else {
            CloseOutcome {
                delete: None,
                last: false,
            }
        }
    }

    /// Sets or clears the file's delete-pending flag (FileDispositionInformation).
    pub fn set_delete_pending(&self, key: FileKey, pending: bool) {
        if let Some(st) = self.files().get_mut(&key) {
            st.delete_pending = pending;
        }
    }

    /// Marks one open delete-on-close (the flag takes effect when it closes).
    pub fn set_delete_on_close(&self, key: FileKey, open_id: u64, on: bool) {
        if let Some(st) = self.files().get_mut(&key) {
            if let Some(o) = st.opens.iter_mut().find(|o| o.open_id == open_id) {
                o.delete_on_close = on;
            }
        }
    }

    pub fn delete_pending(&self, key: FileKey) -> bool {
        self.files().get(&key).is_some_and(|s| s.delete_pending)
    }

    /// Records a rename so that later deletes use the new name.
    pub fn renamed(&self, key: FileKey, new_path: PathBuf) {
        if let Some(st) = self.files().get_mut(&key) {
            st.path = new_path;
        }
    }

    /// Current share-relative path of an open file.
    pub fn path(&self, key: FileKey) -> Option<PathBuf> {
        self.files().get(&key).map(|s| s.path.clone())
    }

    /// Opens of other files whose path lies below `dir` (used to refuse renaming
    /// a directory with open files inside).
    pub fn has_open_below(&self, dir: &std::path::Path) -> bool {
        self.files()
            .values()
            .any(|s| !s.opens.is_empty() && s.path.starts_with(dir) && s.path != dir)
    }

    /// Takes a byte-range lock (MS-FSA 2.1.5.13 conflict rules).
    pub fn lock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        exclusive: bool,
    ) -> Result<(), NtStatus> {
        if length != 0 && offset.checked_add(length - 1).is_none() {
            return Err(NtStatus::INVALID_LOCK_RANGE);
        }
        let mut files = self.files();
        let st = files.get_mut(&key).ok_or(NtStatus::INVALID_HANDLE)?;
        // An exclusive request conflicts with any overlapping lock; a shared
        // one only with another open's exclusive lock.
        let conflict = st.locks.iter().any(|l| {
            l.overlaps(offset, length) && (exclusive || (l.exclusive && l.open_id != open_id))
        });
        if conflict {
            return Err(NtStatus::LOCK_NOT_GRANTED);
        }
        st.locks.push(ByteLock {
            open_id,
            offset,
            length,
            exclusive,
        });
        Ok(())
    }

    /// Releases exactly one lock of this open with this range.
    pub fn unlock(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
    ) -> Result<(), NtStatus> {
        let mut files = self.files();
        let st = files.get_mut(&key).ok_or(NtStatus::RANGE_NOT_LOCKED)?;
        let pos = st
            .locks
            .iter()
            .position(|l| l.open_id == open_id && l.offset == offset && l.length == length)
            .ok_or(NtStatus::RANGE_NOT_LOCKED)?;
        st.locks.remove(pos);
        st.unlocked.notify_waiters();
        Ok(())
    }

    /// Notified when locks of an open file are released; None if the file
    /// has no opens. A waiter must register (`Notified::enable`) before
    /// retrying its lock, so that no release is missed in between.
    pub fn unlock_notify(&self, key: FileKey) -> Option<Arc<Notify>> {
        self.files().get(&key).map(|s| s.unlocked.clone())
    }

    /// May this open read (or write) this range, given others' locks?
    pub fn check_io(
        &self,
        key: FileKey,
        open_id: u64,
        offset: u64,
        length: u64,
        write: bool,
    ) -> Result<(), NtStatus> {
        let files = self.files();
        let Some(st) = files.get(&key) else {
            return Ok(());
        };
        let conflict = st.locks.iter().any(|l| {
            l.overlaps(offset, length)
                && if write {
                    l.open_id != open_id || !l.exclusive
                } else {
                    l.exclusive && l.open_id != open_id
                }
        });
        if conflict {
            Err(NtStatus::FILE_LOCK_CONFLICT)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: FileKey = FileKey { dev: 1, ino: 2 };
    const RW: u32 = access::FILE_READ_DATA | access::FILE_WRITE_DATA;

    #[test]
    fn share_modes() {
        let b = Broker::new();
        b.open(K, "a".into(), 1, access::FILE_READ_DATA, share::READ, false)
            .unwrap();
        assert_eq!(
            b.open(K, "a".into(), 2, RW, share::ALL, false),
            Err(NtStatus::SHARING_VIOLATION)
        );
        b.open(K, "a".into(), 3, access::FILE_READ_DATA, share::READ, false)
            .unwrap();
        // attribute-only opens never conflict
        b.open(K, "a".into(), 4, access::FILE_READ_ATTRIBUTES, 0, false)
            .unwrap();
        assert!(!b.close(K, 1).last);
        assert!(!b.close(K, 3).last);
        assert!(b.close(K, 4).last);
    }

    #[test]
    fn delete_on_close_and_pending() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, access::DELETE, share::ALL, true)
            .unwrap();
        b.open(K, "f".into(), 2, access::FILE_READ_DATA, share::ALL, false)
            .unwrap();
        assert_eq!(
            b.close(K, 1),
            CloseOutcome {
                delete: None,
                last: false
            }
        );
        assert_eq!(
            b.open(K, "f".into(), 3, 0, share::ALL, false),
            Err(NtStatus::DELETE_PENDING)
        );
        b.renamed(K, "g".into());
        assert_eq!(
            b.close(K, 2),
            CloseOutcome {
                delete: Some("g".into()),
                last: true
            }
        );
        // a fresh open after the delete starts clean
        b.open(K, "h".into(), 4, RW, 0, false).unwrap();
    }

    #[test]
    fn byte_range_locks() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, RW, share::ALL, false).unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        b.lock(K, 1, 0, 10, true).unwrap();
        assert_eq!(b.lock(K, 2, 5, 10, false), Err(NtStatus::LOCK_NOT_GRANTED));
        assert_eq!(
            b.check_io(K, 2, 0, 1, false),
            Err(NtStatus::FILE_LOCK_CONFLICT)
        );
        b.check_io(K, 1, 0, 1, true).unwrap();
        b.lock(K, 2, 10, 10, false).unwrap();
        b.lock(K, 1, 12, 2, false).unwrap(); // shared stacks on shared
        assert_eq!(
            b.check_io(K, 1, 10, 1, true),
            Err(NtStatus::FILE_LOCK_CONFLICT)
        );
        assert_eq!(b.unlock(K, 2, 10, 5), Err(NtStatus::RANGE_NOT_LOCKED));
        b.unlock(K, 2, 10, 10).unwrap();
        b.close(K, 1);
        b.lock(K, 2, 0, 10, true).unwrap();
    }

    #[tokio::test]
    async fn unlock_wakes_waiters() {
        let b = Broker::new();
        b.open(K, "f".into(), 1, RW, share::ALL, false).unwrap();
        b.open(K, "f".into(), 2, RW, share::ALL, false).unwrap();
        b.lock(K, 1, 0, 10, true).unwrap();
        let n = b.unlock_notify(K).unwrap();
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        assert_eq!(b.lock(K, 2, 0, 10, true), Err(NtStatus::LOCK_NOT_GRANTED));
        b.unlock(K, 1, 0, 10).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("unlock must wake the waiter");
        b.lock(K, 2, 0, 10, true).unwrap();
        // closing an open with locks wakes waiters too
        let n = b.unlock_notify(K).unwrap();
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        b.close(K, 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("close must wake the waiter");
        assert!(b.unlock_notify(FileKey { dev: 9, ino: 9 }).is_none());
    }
}
