//! Creating Salesforce records exactly once: the machinery every record-creating workflow
//! (drop alerts, expansion opportunities) goes through.
//!
//! Every record carries a deterministic key (workflow, account, episode or milestone) in a
//! configured external-ID field such as `Usagesync_Key__c`. A create is:
//!
//! 1. `begin_create(key)` in the state store: a key already committed is done, no call;
//! 2. an upsert by that external ID (`PATCH /sobjects/{object}/{field}/{key}`), which Salesforce
//!    itself makes idempotent: a repeated request finds the record the first one made;
//! 3. `commit_create(key, id)`.
//!
//! A crash between 2 and 3 leaves the key Pending. The next run does not trust the pending
//! create to have failed or succeeded: it looks the key up (`GET …/{field}/{key}`) and commits
//! the record it finds, or creates it when there is none. The look-up, not a blind upsert, is
//! used there so that a record a person has since edited (a Task marked done) is not overwritten.
//!
//! For tests, `USAGESYNC_TEST_CRASH_AFTER_CREATE=N` aborts the process right after the Nth
//! create call of the process returned, before the local commit: the window this module exists
//! to close.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::RunError;
use crate::store::{CreateState, Store};

/// Environment variable naming the create call after which the process aborts (tests only).
pub const CRASH_AFTER_CREATE_ENV: &str = "USAGESYNC_TEST_CRASH_AFTER_CREATE";

static CREATES_SENT: AtomicU64 = AtomicU64::new(0);

/// One record to create.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub object: String,
    /// The deterministic key, written into `key_field`.
    pub key: String,
    pub key_field: String,
    pub fields: Map<String, Value>,
}

/// What happened to one create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Made by this call.
    New { id: String },
    /// Already there: committed earlier, or found by its key after an interrupted create.
    Existing { id: String },
    /// Salesforce refused it; nothing was created.
    Refused { code: String, message: String },
    /// The outcome is unknown (the request may have reached Salesforce); the key stays pending
    /// and the next run settles it by looking the key up.
    Unknown { message: String },
}

impl Created {
    pub fn id(&self) -> Option<&str> {
        match self {
            Created::New { id } | Created::Existing { id } => Some(id),
            _ => None,
        }
    }
}

/// Creates `record` unless its key was created before (see the module docs).
///
/// # Errors
/// Only store failures; Salesforce refusals come back as [`Created::Refused`].
pub async fn create_once(
    client: &salesforce::Client,
    store: &dyn Store,
    workflow: &str,
    record: &NewRecord,
    now: DateTime<Utc>,
) -> Result<Created, RunError> {
    match store.begin_create(&record.key, workflow, now).await? {
        CreateState::Committed { salesforce_id } => return Ok(Created::Existing { id: salesforce_id }),
        CreateState::Pending { .. } => match find(client, record).await {
            Ok(Some(id)) => {
                store.commit_create(&record.key, &id, now).await?;
                return Ok(Created::Existing { id });
            }
            Ok(None) => {}
            Err(e) => return Ok(Created::Unknown { message: format!("looking up a pending create: {e}") }),
        },
        CreateState::New => {}
    }
    let mut body = record.fields.clone();
    body.remove(&record.key_field);
    let result = client.upsert(&record.object, &record.key_field, &record.key, &body).await;
    crash_point();
    match result {
        Ok(outcome) => match outcome.id {
            Some(id) => {
                let id = id.to_string();
                store.commit_create(&record.key, &id, now).await?;
                Ok(if outcome.created { Created::New { id } } else { Created::Existing { id } })
            }
            // An update answered without a body (API v45 and older): the record exists, and
            // the next run's look-up finds its id.
            None => Ok(Created::Unknown { message: "the upsert answered without an id".into() }),
        },
        Err(e) if e.may_have_committed() => Ok(Created::Unknown { message: e.to_string() }),
        Err(e) => {
            store.abandon_create(&record.key).await?;
            let (code, message) = match e.as_api() {
                Some(api) => (api.error_code.as_str().to_owned(), api.message.clone()),
                None => ("REQUEST_FAILED".to_owned(), e.to_string()),
            };
            Ok(Created::Refused { code, message })
        }
    }
}

/// Records per Collections upsert call (the documented maximum).
const BATCH: usize = 200;

/// Creates many records of one object and key field the same way as [`create_once`], 200 per
/// Collections upsert call on the key field (itself idempotent on Salesforce's side). Pending
/// keys from an interrupted run are first looked up with one SOQL query per 200 keys. Results
/// come back in input order.
///
/// # Errors
/// Only store failures; Salesforce refusals come back per record.
pub async fn create_many(
    client: &salesforce::Client,
    store: &dyn Store,
    workflow: &str,
    records: &[NewRecord],
    now: DateTime<Utc>,
) -> Result<Vec<Created>, RunError> {
    let mut out: Vec<Option<Created>> = vec![None; records.len()];
    let mut pending = Vec::new();
    let mut send = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match store.begin_create(&r.key, workflow, now).await? {
            CreateState::Committed { salesforce_id } => out[i] = Some(Created::Existing { id: salesforce_id }),
            CreateState::Pending { .. } => pending.push(i),
            CreateState::New => send.push(i),
        }
    }
    for chunk in pending.chunks(BATCH) {
        match find_many(client, records, chunk).await {
            Ok(found) => {
                for &i in chunk {
                    match found.get(&records[i].key) {
                        Some(id) => {
                            store.commit_create(&records[i].key, id, now).await?;
                            out[i] = Some(Created::Existing { id: id.clone() });
                        }
                        None => send.push(i),
                    }
                }
            }
            Err(e) => {
                for &i in chunk {
                    out[i] = Some(Created::Unknown { message: format!("looking up a pending create: {e}") });
                }
            }
        }
    }
    send.sort_unstable();
    // One object and key field per call.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in send {
        let same = |g: &Vec<usize>| {
            g.first().is_some_and(|&j| {
                records[j].object == records[i].object && records[j].key_field == records[i].key_field
            })
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    for group in groups {
        for chunk in group.chunks(BATCH) {
            let first = &records[chunk[0]];
            let bodies: Vec<Map<String, Value>> = chunk
                .iter()
                .map(|&i| {
                    let mut body = records[i].fields.clone();
                    body.insert(records[i].key_field.clone(), Value::String(records[i].key.clone()));
                    body
                })
                .collect();
            let result = client.upsert_many(&first.object, &first.key_field, &bodies, false).await;
            crash_point();
            match result {
                Ok(results) => {
                    for (&i, r) in chunk.iter().zip(results) {
                        let key = &records[i].key;
                        out[i] = Some(match (r.success, r.id) {
                            (true, Some(id)) => {
                                let id = id.to_string();
                                store.commit_create(key, &id, now).await?;
                                if r.created == Some(false) { Created::Existing { id } } else { Created::New { id } }
                            }
                            (true, None) => Created::Unknown { message: "saved without an id".into() },
                            (false, _) => {
                                store.abandon_create(key).await?;
                                let (code, message) = r
                                    .errors
                                    .first()
                                    .map(|e| (e.status_code.as_str().to_owned(), e.message.clone()))
                                    .unwrap_or_else(|| ("UNKNOWN".into(), "refused without an error".into()));
                                Created::Refused { code, message }
                            }
                        });
                    }
                }
                Err(e) if e.may_have_committed() => {
                    for &i in chunk {
                        out[i] = Some(Created::Unknown { message: e.to_string() });
                    }
                }
                Err(e) => {
                    let (code, message) = match e.as_api() {
                        Some(api) => (api.error_code.as_str().to_owned(), api.message.clone()),
                        None => ("REQUEST_FAILED".to_owned(), e.to_string()),
                    };
                    for &i in chunk {
                        store.abandon_create(&records[i].key).await?;
                        out[i] = Some(Created::Refused { code: code.clone(), message: message.clone() });
                    }
                }
            }
        }
    }
    Ok(out.into_iter().map(|c| c.unwrap_or_else(|| Created::Unknown { message: "not attempted".into() })).collect())
}

/// Key → id of the records among `which` that exist, by one query per object.
async fn find_many(
    client: &salesforce::Client,
    records: &[NewRecord],
    which: &[usize],
) -> Result<std::collections::HashMap<String, String>, salesforce::Error> {
    let mut found = std::collections::HashMap::new();
    let mut by_object: std::collections::BTreeMap<(&str, &str), Vec<&str>> = std::collections::BTreeMap::new();
    for &i in which {
        by_object.entry((&records[i].object, &records[i].key_field)).or_default().push(&records[i].key);
    }
    for ((object, field), keys) in by_object {
        salesforce::soql::object(object)?;
        salesforce::soql::field(field)?;
        let list = keys.iter().map(|k| salesforce::soql::quote(k)).collect::<Vec<_>>().join(", ");
        let rows: Vec<Value> =
            client.query_collect(format!("SELECT Id, {field} FROM {object} WHERE {field} IN ({list})")).await?;
        for r in rows {
            if let (Some(id), Some(key)) = (r.get("Id").and_then(Value::as_str), r.get(field).and_then(Value::as_str)) {
                found.insert(key.to_owned(), id.to_owned());
            }
        }
    }
    Ok(found)
}

/// The id of the record holding `record.key`, if there is one.
async fn find(client: &salesforce::Client, record: &NewRecord) -> Result<Option<String>, salesforce::Error> {
    let found: Result<Value, _> =
        client.get_by_external_id(&record.object, &record.key_field, &record.key, Some(&["Id"])).await;
    match found {
        Ok(v) => Ok(v.get("Id").and_then(Value::as_str).map(str::to_owned)),
        Err(e) if e.error_code() == Some(&salesforce::ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn crash_point() {
    let n = CREATES_SENT.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(at) = std::env::var(CRASH_AFTER_CREATE_ENV)
        && at.trim().parse::<u64>().is_ok_and(|at| at == n)
    {
        eprintln!("{CRASH_AFTER_CREATE_ENV}={at}: aborting after create call {n}, before the local commit");
        std::process::abort();
    }
}

/// A key made of parts, each kept to characters an external-ID value and a URL segment take
/// without surprises; the whole stays under the 255 characters of a text external ID.
pub fn key(parts: &[&str]) -> String {
    let clean = |p: &str| -> String {
        p.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
    };
    let joined = parts.iter().map(|p| clean(p)).collect::<Vec<_>>().join(":");
    if joined.len() <= 255 {
        joined
    } else {
        // Long Pendo ids: keep a readable prefix and make the rest unique by a hash.
        let digest = crate::change::fingerprint(&Value::String(joined.clone()));
        format!("{}#{digest:016x}", &joined[..230])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_safe() {
        assert_eq!(key(&["drop", "acme co/1", "3"]), "drop:acme_co_1:3");
        let long = "x".repeat(400);
        let k = key(&["drop", &long]);
        assert!(k.len() <= 255);
        assert_eq!(k, key(&["drop", &long]));
        assert_ne!(k, key(&["drop", &"y".repeat(400)]));
    }
}
