//! The binary's integration tests in one test binary (one link on a 2-core machine, not nine):
//! each module drives the real `usagesync` binary, and the emulators it serves, on 127.0.0.1
//! ports the OS picks. `support` holds what every module starts from. The chaos harness and the
//! several-workers tests are binaries of their own (tests/chaos.rs, tests/workers.rs): they load
//! the machine, and tests sharing a binary run side by side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod cli;
mod console;
mod daemon;
mod lease;
mod metrics;
mod nps;
mod operator;
mod preflight;
mod two_way_cli;
