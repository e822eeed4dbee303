//! emulator
pub mod pendo;
