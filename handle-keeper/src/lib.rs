//! Handle keeper.
