//! engine
pub mod store;
