//! Faithful local emulators of the Salesforce and Pendo APIs.
//!
//! They speak the real wire protocols closely enough that third-party clients (simple-salesforce,
//! jsforce, tap-pendo) work against them unchanged, so that usagesync's tests, demo and benchmarks
//! never need a real org. The emulators share no code with usagesync's own clients: each side is
//! written from the documented API and checks the other.
//!
//! # Layout
//! - [`salesforce`]: the org model, REST, OAuth, SOQL, accounting, faults, admin.
//! - [`server`]: the accept loop (plain or TLS) shared by both emulators.
//! - [`clock`]: the controllable clock.
//! - [`world`]: one generated world served by both emulators.

// Handlers return early with a ready HTTP response as their error; those paths are cold and
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod pendo;
pub mod salesforce;
pub mod server;
pub mod world;
