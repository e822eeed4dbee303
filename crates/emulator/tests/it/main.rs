//! Wire-level tests of the Salesforce emulator over real HTTP on 127.0.0.1: status codes,
//! headers and body shapes exactly as clients see them. These use plain reqwest, not
//! usagesync's client, so they check the emulator against the documented API directly.

// Test helpers panic on purpose: a panic is the failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin_tools;
mod bulk;
mod collections;
mod composite;
mod oauth;
mod query;
mod rest;
