//! errno -> NTSTATUS, plus the few errors errno cannot express precisely.

use nix::libc;
use std::io;

use crate::wire::NtStatus;

/// Backend conditions an errno would make ambiguous (ENOTDIR also means "a
/// path component is not a directory", which is OBJECT_PATH_NOT_FOUND).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The final component exists but is not a directory.
    #[error("not a directory")]
    NotADirectory,
}

impl From<BackendError> for io::Error {
    fn from(e: BackendError) -> io::Error {
        io::Error::other(e)
    }
}

/// Maps an error from this backend to the status MS-FSA/MS-SMB2 expect.
pub fn errno_to_status(e: &io::Error) -> NtStatus {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BackendError>()) {
        return match b {
            BackendError::NotADirectory => NtStatus::NOT_A_DIRECTORY,
        };
    }
    let Some(errno) = e.raw_os_error() else {
        return NtStatus::UNSUCCESSFUL;
    };
    match errno {
        libc::ENOENT => NtStatus::OBJECT_NAME_NOT_FOUND,
        libc::ENOTDIR => NtStatus::OBJECT_PATH_NOT_FOUND,
        libc::EEXIST => NtStatus::OBJECT_NAME_COLLISION,
        libc::EACCES | libc::EPERM => NtStatus::ACCESS_DENIED,
        // openat2 RESOLVE_BENEATH refused to leave the share.
        libc::EXDEV | libc::ELOOP => NtStatus::ACCESS_DENIED,
        libc::ENOTEMPTY => NtStatus::DIRECTORY_NOT_EMPTY,
        libc::EISDIR => NtStatus::FILE_IS_A_DIRECTORY,
        libc::ENOSPC => NtStatus::DISK_FULL,
        libc::EDQUOT => NtStatus::DISK_QUOTA_EXCEEDED,
        libc::ENAMETOOLONG => NtStatus::OBJECT_NAME_INVALID,
        libc::EROFS => NtStatus::MEDIA_WRITE_PROTECTED,
        libc::EBADF => NtStatus::INVALID_HANDLE,
        libc::EINVAL => NtStatus::INVALID_PARAMETER,
        libc::EMFILE | libc::ENFILE => NtStatus::TOO_MANY_OPENED_FILES,
        libc::EAGAIN => NtStatus::FILE_LOCK_CONFLICT,
        libc::ENOMEM => NtStatus::NO_MEMORY,
        libc::EBUSY => NtStatus::SHARING_VIOLATION,
        libc::ENOTSUP => NtStatus::NOT_SUPPORTED,
        libc::EFBIG => NtStatus::DISK_FULL,
        _ => NtStatus::UNSUCCESSFUL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let s = |n| errno_to_status(&io::Error::from_raw_os_error(n));
        assert_eq!(s(libc::ENOENT), NtStatus::OBJECT_NAME_NOT_FOUND);
        assert_eq!(s(libc::EXDEV), NtStatus::ACCESS_DENIED);
        assert_eq!(s(libc::ENOTEMPTY), NtStatus::DIRECTORY_NOT_EMPTY);
        assert_eq!(s(9999), NtStatus::UNSUCCESSFUL);
        assert_eq!(
            errno_to_status(&BackendError::NotADirectory.into()),
            NtStatus::NOT_A_DIRECTORY
        );
    }
}
