//! The binary's integration tests, one test binary (one link on a 2-core machine, not eleven):
//! each module drives the real `usagesync` binary, and the emulators it serves, on 127.0.0.1
//! ports the OS picks. `support` holds what every module starts from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod chaos;
mod cli;
mod console;
mod daemon;
mod lease;
mod metrics;
mod nps;
mod operator;
mod preflight;
mod two_way_cli;
mod workers;
