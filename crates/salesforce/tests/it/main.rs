//! Integration tests: the client against the in-process Salesforce emulator on 127.0.0.1:0.
//!
//! One test binary (link time matters on small machines); one module per API area. Each test
//! starts its own emulator so tests never share org state or fault settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bulk;
mod collections;
mod composite;
mod describe;
mod faults;
mod limits;
mod mock;
mod query;
mod sobjects;
mod support;
mod wire;
