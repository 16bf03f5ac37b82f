//! Process model: a supervisor that listens and N worker processes that
//! serve connections (docs/architecture.md section 6.1).
//!
//! Connections reach workers as fds over a SOCK_SEQPACKET link (the
//! worker's stdin). All connections of one ClientGUID are served by one
//! worker, so session binding, reconnect and a client's opens stay in one
//! process; a worker that receives another worker's client passes the socket
//! on before reading anything past the transport's peek.
//! A connection whose SESSION_SETUP names a session of another worker
//! (binding, PreviousSessionId) moves there with its negotiated state.

pub mod broker_link;
pub mod broker_proto;
pub mod broker_service;
pub mod channel;
pub mod proto;
pub mod supervisor;
pub mod worker;

pub use broker_link::BrokerHandle;
pub use supervisor::{Supervisor, WorkerCommand};
pub use worker::WorkerLink;
