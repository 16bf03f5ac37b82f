//! Holdfast handle keeper: holds the open file descriptions of durable and
//! persistent SMB opens so they survive smbd worker crashes and restarts.
//!
//! `proto` is the wire format (docs/keeper-protocol.md), `client` what smbd
//! and holdfastctl call, `keeper`/`server`/`store`/`sysd` the daemon itself.

#![forbid(unsafe_code)]

pub mod client;
pub mod keeper;
pub mod kinfo;
pub mod proto;
pub mod server;
pub mod store;
pub mod sysd;

pub use client::{Client, ClientError, DEFAULT_SOCKET};
pub use proto::{DurableKind, Entry, ErrorCode, FetchRequest, HandleState, Record};
