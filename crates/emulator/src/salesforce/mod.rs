//! The Salesforce emulator: an org (schema + records) served over Salesforce's REST wire
//! protocol, with OAuth, API-call accounting, limits, fault injection and admin endpoints.

pub mod ids;
pub mod schema;
pub mod soql;
pub mod store;
