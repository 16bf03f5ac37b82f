//! Holdfast SMB2/3 server library. Layers, top to bottom, with no shortcuts:
//! [`server`] (SMB protocol state) -> [`fsa`] (MS-FSA semantics) -> [`posix`] (Linux backend).
//! [`wire`] is the pure codec the server layer uses.

pub mod config;
pub mod fsa;
pub mod posix;
pub mod server;
pub mod userdb;
pub mod wire;
