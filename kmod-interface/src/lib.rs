//! The only crate that makes raw kernel calls.
