//! engine
pub mod config;
