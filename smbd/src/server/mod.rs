//! The SMB server layer: connections, sessions, tree connects, opens, credits, signing.
pub mod auth;
pub mod crypto;
