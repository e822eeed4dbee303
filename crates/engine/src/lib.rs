//! The engine: workflows that read Pendo, match records, detect changes, plan the cheapest
//! write path within the API budget, deliver to Salesforce and remember what they did.
//!
//! # Layout
//! - [`budget`]: today's API allowance: the configured share, less what every worker spent.
//! - [`clock`]: time as an input: the one place the engine reads the wall clock.
//! - [`config`]: the YAML config, typed and validated, every error with file, line and key.
//! - [`connect`]: the Salesforce and Pendo clients a config describes.
//! - [`extract`]: per-account engagement and matching facts from Pendo aggregations.
//! - [`matching`]: the rule chain from a Pendo account to a Salesforce Account, and the matching
//!   stage (the ID-map cache, reading Accounts).
//! - [`metrics`]: engagement figures as field values, and the score.
//! - [`change`]: fingerprints of written values; only changed fields are sent.
//! - [`preflight`]: the config's Salesforce objects and fields checked against the org's
//!   describe; fields with a problem are quarantined (never sent) rather than failing the run.
//! - [`plan`]: the cost model and write-path choice within the budget.
//! - [`deliver`]: sending the changes, record-level retries, failures and deferrals.
//! - [`verify`]: what a run wrote, read back: drift a trigger, a rule or a person made since.
//! - [`scheduler`]: when each workflow runs next, claimed through the store (one worker per slot).
//! - [`store`]: the state store (SQLite or PostgreSQL): runs, matches, fingerprints, failures, budget.
//! - [`testhook`]: named points where tests make the process die (the chaos tests).
//! - [`text`]: templated subjects, descriptions and values; feature lists by name.
//! - [`workflow`]: runs, step by step, and replay.

pub mod budget;
pub mod change;
pub mod clock;
pub mod config;
pub mod connect;
pub mod deliver;
pub mod extract;
pub mod figures;
pub mod matching;
pub mod observe;
pub mod pendo_fields;
pub mod plan;
pub mod preflight;
pub mod scheduler;
mod sf_read;
pub mod signal;
pub mod store;
pub mod testhook;
pub mod text;
pub mod verify;
pub mod workflow;
