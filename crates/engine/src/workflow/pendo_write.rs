//! The Pendo metadata write stage, for every template that writes Pendo metadata: changed values
//! onto Pendo accounts in bulk calls (the client batches them, each id answered on its own),
//! what Pendo took fingerprinted in the workflow's scope so the next run sends nothing again,
//! and what it refused (or whose account it does not have) kept in the failure ledger with its
//! reason, unfingerprinted, so the next run or a replay derives and sends it again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ledger::{Ledger, Refusal};
use super::{Context, FailureSample, RunError, RunReport};
use crate::change::Change;
use crate::store::{Action, FieldChange, FingerprintPut, RecordOutcome, RunId};

/// Where one template's Pendo writes go and how they are kept.
pub(crate) struct Target<'a> {
    pub kind: pendo::Kind,
    /// The metadata group: `custom` or `agent`.
    pub group: &'a str,
    /// The fingerprint scope of the values written, keyed by the Pendo id.
    pub scope: &'a str,
    /// The object history rows and the failure ledger name (`Account` for attributes, whose
    /// record is the Salesforce Account; `Pendo account` where the Salesforce side is written
    /// too, so one side's success never settles the other's failure).
    pub object: &'a str,
}

/// What the stage did beyond the report's counts.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// The Pendo ids whose values were refused.
    pub refused: Vec<String>,
    /// Refused ids a person dismissed that refusal of (see [`Ledger::settle`]).
    pub dismissed: HashSet<(String, String)>,
}

/// Sends `changes` (each change's `key` is the Pendo id, beside the Salesforce record it came
/// from or belongs to, for history) and records what happened: history rows, fingerprints of
/// what Pendo took, the ledger, and the report's written, failed and Pendo call counts.
///
/// # Errors
/// Pendo refusing the call itself (after the client's retries), and store failures.
pub(crate) async fn write(
    ctx: &Context,
    workflow: &str,
    run: RunId,
    target: &Target<'_>,
    changes: &[(Change, String)],
    report: &mut RunReport,
    now: DateTime<Utc>,
) -> Result<Written, RunError> {
    let mut out = Written::default();
    let updates: Vec<pendo::metadata::MetadataUpdate> = changes
        .iter()
        .map(|(c, _)| pendo::metadata::MetadataUpdate { id: c.key.clone(), values: c.object() })
        .collect();
    let bulk = if updates.is_empty() {
        pendo::metadata::BulkReport::default()
    } else {
        ctx.pendo.set_metadata(target.kind, target.group, &updates, false).await.map_err(|source| {
            let query = match target.kind {
                pendo::Kind::Account => "account metadata write",
                pendo::Kind::Visitor => "visitor metadata write",
            };
            RunError::Pendo(crate::extract::ExtractError::Pendo { query, source })
        })?
    };
    report.pendo_calls += u64::from(bulk.requests);
    // Passed with nothing to send too, as every run's record step is.
    crate::testhook::crash_point("record");
    let outcome_of: HashMap<&str, pendo::metadata::Outcome> =
        bulk.outcomes.iter().map(|(id, o)| (id.as_str(), *o)).collect();
    let mut prints = Vec::new();
    let mut outcomes = Vec::new();
    let mut ledger = Ledger::default();
    for (c, sf_id) in changes {
        let changes_of = || {
            c.fields.iter().map(|(f, v)| FieldChange { field: f.to_string(), before: None, after: v.clone() }).collect()
        };
        let outcome = |action, code: Option<&str>, message: Option<String>| RecordOutcome {
            object: target.object.into(),
            key: c.key.clone(),
            salesforce_id: Some(sf_id.clone()),
            action,
            changes: changes_of(),
            error_code: code.map(str::to_owned),
            message,
        };
        if outcome_of.get(c.key.as_str()) == Some(&pendo::metadata::Outcome::Updated) {
            report.written += 1;
            ledger.written(target.object, &c.key);
            prints.extend(c.printed().map(|(field, p, value)| FingerprintPut {
                scope: target.scope.to_owned(),
                key: c.key.clone(),
                field: field.to_owned(),
                fingerprint: p,
                written_at: now,
                value: Some(value.clone()),
            }));
            outcomes.push(outcome(Action::Updated, None, None));
            continue;
        }
        report.failed += 1;
        let (code, message) = match outcome_of.get(c.key.as_str()) {
            Some(pendo::metadata::Outcome::Missing) => {
                ("PENDO_ACCOUNT_MISSING", format!("Pendo has no {} {:?}", target.kind.as_str(), c.key))
            }
            _ => (
                "PENDO_REFUSED",
                format!(
                    "Pendo refused the values for {} {:?} (unknown field or wrong type)",
                    target.kind.as_str(),
                    c.key
                ),
            ),
        };
        if report.failures.len() < 10 {
            report.failures.push(FailureSample {
                salesforce_id: sf_id.clone(),
                code: code.into(),
                message: message.clone(),
            });
        }
        out.refused.push(c.key.clone());
        ledger.refused(Refusal {
            object: target.object.into(),
            key: c.key.clone(),
            salesforce_id: Some(sf_id.clone()),
            payload: Value::Object(c.object()),
            code: code.into(),
            message: message.clone(),
            fields: c.names(),
        });
        outcomes.push(outcome(Action::Failed, Some(code), Some(message)));
    }
    if !prints.is_empty() {
        ctx.store.record_outcomes(run, &[], &prints).await?;
    }
    for chunk in outcomes.chunks(5_000) {
        ctx.store.record_outcomes(run, chunk, &[]).await?;
    }
    out.dismissed = ledger.settle(ctx, workflow, run, now).await?;
    Ok(out)
}
