//! The failure ledger, one for every write kind: what a run's writes did to the store's
//! failures. Records Salesforce or Pendo refused (or whose outcome is unknown) are kept with
//! their error code, record and fields, for `usagesync failures` and `replay`; a record written
//! now settles the failure still open for it from an earlier run. Every template settles
//! through [`Ledger::settle`], so the ledger reads the same whichever workflow wrote.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Context, RunError};
use crate::change::Change;
use crate::deliver::Delivery;
use crate::store::{FailureFilter, FailureStatus, NewFailure, RunId};

/// One refused record.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub object: String,
    /// The template's key for the record: the Pendo account or visitor, or a create's key.
    pub key: String,
    /// The Salesforce record (or for a create, its Account) or the Pendo id written to.
    pub salesforce_id: Option<String>,
    /// What was to be sent, shown to a person; `replay` re-derives it rather than send this.
    pub payload: Value,
    pub code: String,
    pub message: String,
    /// The fields the error names, else every field sent.
    pub fields: Vec<String>,
}

/// A run's writes, as the ledger needs them.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    written: HashSet<(String, String)>,
    refused: Vec<Refusal>,
}

impl Ledger {
    pub fn written(&mut self, object: &str, key: &str) {
        self.written.insert((object.to_owned(), key.to_owned()));
    }

    pub fn refused(&mut self, refusal: Refusal) {
        self.refused.push(refusal);
    }

    /// The written and refused records of an update delivery of `object`, each known by
    /// `key_of` its change (the Pendo account, or the record's Id where an account has several).
    pub fn delivery(&mut self, object: &str, delivery: &Delivery, key_of: impl Fn(&Change) -> &str) {
        for c in &delivery.written {
            self.written(object, key_of(c));
        }
        for f in &delivery.failed {
            self.refused(Refusal {
                object: object.to_owned(),
                key: key_of(&f.change).to_owned(),
                salesforce_id: Some(f.change.salesforce_id.clone()),
                payload: Value::Object(f.change.object()),
                code: f.code.clone(),
                message: f.message.clone(),
                fields: if f.fields.is_empty() { f.change.names() } else { f.fields.clone() },
            });
        }
    }

    /// Resolves the open (or replaying) failures of records written, then keeps the refusals
    /// (a record with an open failure has it updated, not duplicated), in one transaction.
    /// Returns the refused records a person dismissed that refusal of: a template holding its
    /// cursor at refused records lets those pass.
    pub async fn settle(
        self,
        ctx: &Context,
        workflow: &str,
        run: RunId,
        now: DateTime<Utc>,
    ) -> Result<HashSet<(String, String)>, RunError> {
        let (written, failures) = self.into_store(workflow, run);
        if written.is_empty() && failures.is_empty() {
            return Ok(HashSet::new());
        }
        ctx.store.settle_failures(workflow, &written, &failures, now).await?;
        if failures.is_empty() {
            return Ok(HashSet::new());
        }
        let mut refused: HashSet<(String, String)> = failures.into_iter().map(|f| (f.object, f.key)).collect();
        // A refusal that opened no failure was absorbed by a dismissal of the same code.
        for f in live(ctx, workflow).await? {
            refused.remove(&(f.object, f.key));
        }
        Ok(refused)
    }

    /// What [`crate::store::FailureStore::settle_failures`] takes: the records written and the
    /// refusals of `run`, for a template that settles inside a transaction of its own (the
    /// inbox's record stage, [`crate::store::InboxStore::record_held`]).
    pub fn into_store(self, workflow: &str, run: RunId) -> (Vec<(String, String)>, Vec<NewFailure>) {
        let written = self.written.into_iter().collect();
        let failures = self
            .refused
            .into_iter()
            .map(|r| NewFailure {
                workflow: workflow.to_owned(),
                run,
                object: r.object,
                key: r.key,
                salesforce_id: r.salesforce_id,
                payload: r.payload,
                error_code: r.code,
                message: r.message,
                fields: r.fields,
            })
            .collect();
        (written, failures)
    }
}

/// The workflow's failures still to be dealt with: open, or being replayed.
async fn live(ctx: &Context, workflow: &str) -> Result<Vec<crate::store::Failure>, RunError> {
    let mut all = Vec::new();
    for status in [FailureStatus::Open, FailureStatus::Replaying] {
        let filter =
            FailureFilter { workflow: Some(workflow.to_owned()), status: Some(status), error_code: None, limit: 0 };
        all.extend(ctx.store.list_failures(&filter).await?);
    }
    Ok(all)
}
