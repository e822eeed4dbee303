//! The engine end to end against both emulators on 127.0.0.1, as one test binary (one link step,
//! not one per area): each module is an area of the engine, and `support` builds the world they
//! all run in.

// Set-up panics on purpose: a broken fixture should fail the test loudly. Tests lay out their
// worlds on the wall clock; only the engine must read time through its Clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

mod create_workflows;
mod deliver;
mod engagement;
mod extract;
mod hierarchy;
mod nps_batches;
mod nps_replay;
mod people;
mod two_way;
mod upgrade;
