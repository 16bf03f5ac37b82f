//! POSIX backend: maps MS-FSA operations onto a Linux file system, as the authenticated user.

pub mod dir;
pub mod dos;
pub mod errors;
pub mod io;
pub mod locks;
pub mod open;
pub mod ops;
pub mod share;
pub mod streams;

pub use dir::{entry_meta, read_dir, DirEntry};
pub use dos::{set_attributes, set_times, stat, DosInfo, DOS_XATTR};
pub use errors::errno_to_status;
pub use io::{allocate, check_access, fsync, read_at, reopen, reopen_nowait, set_size, write_at};
pub use open::{open, CreateMode, DirMode, OpenRequest, Opened};
pub use ops::{fchmod_mode, fchown, fs_stats, may_delete, rename, resolve_case, unlink, FsStats};
pub use share::{run_as, ShareRoot};

#[cfg(test)]
mod tests;
