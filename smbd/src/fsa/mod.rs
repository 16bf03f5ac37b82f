//! File-system semantics (MS-FSA): what an open means, independent of SMB and of POSIX.

pub mod broker;
pub mod dirent;
pub mod fsinfo;
pub mod info;
pub mod lease;
pub mod names;
pub mod oplock;
pub mod security;
pub mod setinfo;
pub mod sharemode;
pub mod streams;
pub mod types;
pub mod wildcard;
pub mod writetime;
