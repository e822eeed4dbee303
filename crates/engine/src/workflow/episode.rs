//! Episodes, for every template that alerts: one alert per subject (a Pendo account, a person)
//! per episode, re-armed only once the subject recovers. The state lives in the store, in the
//! fingerprint table under the scope `{workflow}:episodes` (key: the subject, field `episode`,
//! value: [`Episode`] as JSON), so it commits in the same transaction as the run's outcomes.
//!
//! An episode opens only once its records exist (the create stage under keys built from the
//! episode number, so a crash re-runs with the same keys and finds what was made); while it is
//! open nothing new is created; it closes by the template's re-arm rule. Also here: the owner
//! an alert's `owner` rule names, looked up once and kept in the store.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Context, RunError};
use crate::config::alert::Owner;
use crate::signal::{Condition, SignalError};
use crate::store::FingerprintPut;

/// One subject's alert state, kept in the store between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Episodes opened so far; the open one, if any, is this number.
    pub count: u64,
    pub open: bool,
    /// The score the account must reach again to close the open episode (score rules only).
    pub rearm_at: f64,
    pub opened_at: Option<DateTime<Utc>>,
    /// The records the open episode created.
    pub records: Vec<String>,
    /// The Account field values the episode set (while open) or reset (once closed), as
    /// rendered then: the next runs want the same values, so they write nothing unless
    /// Salesforce lacks them, and a person's later edit is left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, Value)>,
    /// The same for the Pendo account's metadata (`set_pendo_fields`, `reset_pendo_fields`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pendo_fields: Vec<(String, Value)>,
}

/// What the figures say about one subject this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Healthy and not in an episode: nothing to do or record.
    Quiet,
    /// Open episode `number` and alert, for `reason`.
    Alert { number: u64, reason: String, rearm_at: f64 },
    /// Still in the open episode: no new alert.
    StillOpen { number: u64 },
    /// Recovered: the episode closes.
    Recovered { number: u64 },
}

/// The decision of a `when:` condition: a subject alerts when it holds, and the open episode
/// closes once `rearm_when` holds (without one, once `when` no longer holds).
pub fn decide_signal(episode: &Episode, holds: bool, rearms: bool, condition: &str) -> Decision {
    if episode.open {
        return if rearms {
            Decision::Recovered { number: episode.count }
        } else {
            Decision::StillOpen { number: episode.count }
        };
    }
    if !holds {
        return Decision::Quiet;
    }
    Decision::Alert { number: episode.count + 1, reason: format!("the signal `{condition}` holds"), rearm_at: 0.0 }
}

/// Whether `when` holds for a subject's figures, and whether it re-arms (`rearm_when` holds, or
/// without one, `when` does not).
///
/// # Errors
/// The expression failed for these figures: the subject neither alerts nor re-arms.
pub fn signal(
    when: &Condition,
    rearm_when: Option<&Condition>,
    current: &HashMap<String, f64>,
    previous: &HashMap<String, f64>,
) -> Result<(bool, bool), SignalError> {
    let holds = when.holds_values(current, previous)?;
    let rearms = match rearm_when {
        Some(r) => r.holds_values(current, previous)?,
        None => !holds,
    };
    Ok((holds, rearms))
}

/// How an open episode of a `when` condition re-arms, for history rows.
pub fn rearm_rule(when: &Condition, rearm_when: Option<&Condition>) -> String {
    match rearm_when {
        Some(r) => format!("re-arms when `{}` holds", r.text()),
        None => format!("re-arms when `{}` no longer holds", when.text()),
    }
}

/// The fingerprint scope holding the episodes of `workflow`.
pub fn scope(workflow: &str) -> String {
    format!("{workflow}:episodes")
}

/// The stored episodes of `keys` (a key without one has none yet).
pub(crate) async fn load(ctx: &Context, workflow: &str, keys: &[String]) -> Result<HashMap<String, Episode>, RunError> {
    let stored = ctx.store.written_values(&scope(workflow), keys).await?;
    Ok(stored
        .into_iter()
        .filter_map(|(k, fields)| {
            let v = fields.into_iter().find(|(f, _)| f == "episode")?.1;
            Some((k, serde_json::from_value(v).ok()?))
        })
        .collect())
}

/// The store write keeping `key`'s episode `e`.
pub(crate) fn put(workflow: &str, key: &str, e: &Episode, now: DateTime<Utc>) -> FingerprintPut {
    let value = serde_json::to_value(e).unwrap_or(Value::Null);
    FingerprintPut {
        scope: scope(workflow),
        key: key.to_owned(),
        field: "episode".into(),
        fingerprint: crate::change::fingerprint(&value),
        written_at: now,
        value: Some(value),
    }
}

/// The owner `owner` names, when it names one: a username is looked up once and then kept in
/// the store (scope `{workflow}:owners`), with the run's other state (`puts`).
pub(crate) async fn owner_by_rule(
    ctx: &Context,
    workflow: &str,
    owner: &Owner,
    now: DateTime<Utc>,
    puts: &mut Vec<FingerprintPut>,
) -> Result<Option<String>, RunError> {
    let username = match owner {
        Owner::Account => return Ok(None),
        Owner::User(id) | Owner::Queue(id) => return Ok(Some(id.clone())),
        Owner::Username(u) => u,
    };
    let scope = format!("{workflow}:owners");
    let key = username.to_ascii_lowercase();
    let cached = ctx.store.written_values(&scope, std::slice::from_ref(&key)).await?;
    if let Some(id) = cached.get(&key).and_then(|f| f.iter().find(|(n, _)| n == "user")).and_then(|(_, v)| v.as_str()) {
        return Ok(Some(id.to_owned()));
    }
    let soql =
        format!("SELECT Id FROM User WHERE Username = {} AND IsActive = true", salesforce::soql::quote(username));
    let rows: Vec<Value> = ctx
        .salesforce
        .query_collect(soql)
        .await
        .map_err(|source| RunError::Salesforce { what: "the alert owner's User", source })?;
    let Some(id) = rows.first().and_then(|r| r.get("Id")).and_then(Value::as_str) else {
        return Err(RunError::UnknownOwner { workflow: workflow.to_owned(), username: username.clone() });
    };
    let value = json!(id);
    puts.push(FingerprintPut {
        scope,
        key,
        field: "user".into(),
        fingerprint: crate::change::fingerprint(&value),
        written_at: now,
        value: Some(value),
    });
    Ok(Some(id.to_owned()))
}

/// A reason as the start of a sentence.
pub(crate) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
