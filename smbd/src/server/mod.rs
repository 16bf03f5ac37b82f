//! The SMB server layer: connections, sessions, tree connects, opens, credits,
//! signing. It speaks MS-SMB2 above and MS-FSA (crate::fsa) below.

pub mod auth;
pub mod channel;
pub mod conn;
pub mod credits;
pub mod crypto;
pub mod durable;
pub mod files;
pub mod ipc;
pub mod keeper;
pub mod kernel_oplock;
pub mod limits;
pub mod listen;
pub mod negotiate;
pub mod notify;
pub mod oplock;
pub mod pending;
pub mod query;
pub mod session;
pub mod state;
pub mod streams;
pub mod tree;
pub mod workers;

pub use state::{ServerState, Share};
