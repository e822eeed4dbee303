//! The engine: workflows that read Pendo, match records, detect changes, plan the cheapest
//! write path within the API budget, deliver to Salesforce and remember what they did.
//!
//! # Layout
//! - [`matching`]: the rule chain from a Pendo account to a Salesforce Account.
//! - [`change`]: fingerprints of written values; only changed fields are sent.
//! - [`plan`]: the cost model and write-path choice within the budget.
//! - [`deliver`]: sending the changes, record-level retries, failures and deferrals.

pub mod change;
pub mod deliver;
pub mod matching;
pub mod plan;
