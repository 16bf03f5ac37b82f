//! File-system semantics (MS-FSA): what an open means, independent of SMB and of POSIX.

pub mod broker;
pub mod types;
