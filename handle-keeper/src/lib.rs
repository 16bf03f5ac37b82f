//! Holdfast handle keeper: holds the open file descriptions of durable and
//! persistent SMB opens so they survive smbd worker crashes and restarts.
//!
//! `proto` (the wire format, docs/keeper-protocol.md) and `client` (what smbd
//! and holdfastctl call) live in the `holdfast-keeper-proto` crate and are
//! re-exported here; `keeper`/`server`/`store`/`sysd` are the daemon itself.

#![forbid(unsafe_code)]

pub mod keeper;
pub mod kinfo;
pub mod server;
pub mod store;
pub mod sysd;

pub use holdfast_keeper_proto::{client, proto};
pub use holdfast_keeper_proto::{
    BreakAction, Client, ClientError, DurableKind, Entry, ErrorCode, FetchRequest, HandleState,
    Notice, Record, DEFAULT_SOCKET,
};
