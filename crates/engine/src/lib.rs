//! engine

pub mod extract;
