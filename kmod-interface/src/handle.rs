//! File handles (name_to_handle_at / open_by_handle_at): a stable way to
//! reopen a file later, e.g. for durable handles, independent of its path.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::cvt;

const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// An opaque kernel file handle plus the id of the mount it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
    pub mount_id: i32,
}

/// Gets the handle of the file `fd` refers to (any fd, `O_PATH` included).
pub fn handle_of(fd: BorrowedFd<'_>) -> io::Result<FileHandle> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a file_handle whose handle_bytes matches its buffer size,
    // the path is an empty NUL-terminated string, `mount_id` is writable.
    cvt(unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            (&mut raw as *mut RawHandle).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(FileHandle {
        handle_type: raw.handle_type,
        bytes: raw.f_handle[..n].to_vec(),
        mount_id,
    })
}

/// Opens the file behind `h`; `mount_fd` is any fd on the same mount.
/// Needs CAP_DAC_READ_SEARCH. `O_CLOEXEC` is always added.
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, h: &FileHandle, flags: i32) -> io::Result<OwnedFd> {
    if h.bytes.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut raw = RawHandle {
        handle_bytes: h.bytes.len() as u32,
        handle_type: h.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    // SAFETY: `raw` is a valid file_handle; the kernel only reads it.
    let fd = cvt(unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&mut raw as *mut RawHandle).cast(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"handle").unwrap();
        let f = std::fs::File::open(dir.path().join("f")).unwrap();
        let h = handle_of(f.as_fd()).unwrap();
        assert!(!h.bytes.is_empty());
        let d = std::fs::File::open(dir.path()).unwrap();
        match open_by_handle(d.as_fd(), &h, libc::O_RDONLY) {
            Ok(fd) => {
                let s = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
                assert_eq!(s, "handle");
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: no CAP_DAC_READ_SEARCH")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
