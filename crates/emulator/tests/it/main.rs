//! The emulator's tests, as one test binary (one link step, not one per area). Most are
//! wire-level tests of the Salesforce emulator over real HTTP on 127.0.0.1: status codes, headers
//! and body shapes exactly as clients see them. These use plain reqwest, not usagesync's client,
//! so they check the emulator against the documented API directly. `aggregation_plans` and
//! `extraction_perf` check the Pendo emulator's query engine in process.

// Test helpers panic on purpose: a panic is the failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin_tools;
mod aggregation_plans;
mod bulk;
mod collections;
mod composite;
mod extraction_perf;
mod oauth;
mod query;
mod rest;
