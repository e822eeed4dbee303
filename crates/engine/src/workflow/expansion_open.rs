//! Which open Opportunities meet an expansion workflow's `existing` rule, per crossed (account,
//! milestone): kept in the store beside the creation counts, so a re-run learns what exists from
//! state and asks Salesforce only what state cannot know.
//!
//! What the store knows for a crossing (field `open` under the count's key in scope
//! `{workflow}:expansions`) is current at a cursor: the newest Opportunity `SystemModstamp` the
//! workflow has accounted for (cursor `opportunity_modstamp`). A run with current knowledge reads
//! once what changed since (a `queryAll`, so deletions show, re-reading an overlap because
//! `SystemModstamp` is stamped when a transaction starts; the cursor lists the changes within it
//! already handled), and checks again, with the `existing` rule, only the accounts where an
//! Opportunity was created, edited, closed, moved or deleted.
//! An Opportunity this workflow made and nobody modified since (`LastModifiedDate` still its
//! `CreatedDate`) is no change. Knowledge is thrown away, and the account checked again, when it
//! is older than the cursor (the crossing was not judged by the run that moved it), was for
//! another Account, or for another rule or key field.
//!
//! Not seen as a change: a rule that reads other records (`Account.Type = ...`) whose fields
//! changed while the Opportunity did not.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use salesforce::rest::describe::sf_datetime;
use salesforce::{Condition, Order, SoqlQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Context, RunError};
use crate::config::ExpansionConfig;
use crate::store::FingerprintPut;

/// The cursor's name (see [`Cursor`]).
pub const CURSOR: &str = "opportunity_modstamp";
/// The field, under a crossing's count key, holding what is known of its open Opportunities.
pub const FIELD: &str = "open";

/// What the store keeps for one crossing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    /// The Salesforce Account the Opportunities were looked for on.
    account: String,
    /// [`rule_hash`] of the milestone's rule when they were.
    rule: u64,
    /// The cursor the knowledge is current at.
    cursor: String,
    /// (Opportunity id, its key) of the open ones meeting the rule.
    open: Vec<(String, String)>,
}

/// One crossed (account, milestone), as the template found it.
pub(crate) struct Crossed<'a> {
    /// The count's key, `{pendo account}:{milestone}`.
    pub key: String,
    pub account: &'a str,
    pub milestone: &'a str,
}

/// The open Opportunities per crossing, and what to store once the run has made its records.
pub(crate) struct OpenOpportunities {
    /// By (Account id, milestone): (Opportunity id, key).
    pub open: HashMap<(String, String), Vec<(String, String)>>,
    /// Per count key, the knowledge to store (its account, milestone and rule settled).
    known: HashMap<String, (Known, bool)>,
    /// The cursor as stored before the run.
    before: Option<String>,
    /// The new cursor's stamp, and the cursor as it is to be stored.
    after: Option<(String, String)>,
}

/// The cursor: the newest Opportunity `SystemModstamp` accounted for, and the changes within
/// the overlap before it that were (`{Id}@{SystemModstamp}`), so reading them again costs no
/// check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    at: String,
    seen: Vec<String>,
}

/// Changes kept in the cursor at most; more within one overlap (a bulk load) are checked again
/// once.
const SEEN_MAX: usize = 20_000;

/// Ties stored knowledge to the rule and key field it was gathered with.
fn rule_hash(config: &ExpansionConfig, milestone: &str) -> u64 {
    crate::change::fingerprint(&json!([milestone_rule(config, milestone), config.key_field]))
}

fn milestone_rule(config: &ExpansionConfig, milestone: &str) -> String {
    config.existing.replace("{milestone}", &salesforce::soql::escape_str(milestone))
}

fn sf(what: &'static str) -> impl Fn(salesforce::Error) -> RunError {
    move |source| RunError::Salesforce { what, source }
}

fn stamp(row: &Value, field: &str) -> Option<DateTime<Utc>> {
    row.get(field).and_then(Value::as_str).and_then(|s| sf_datetime::parse(s).ok())
}

/// The open Opportunities meeting the rule for each of `crossed`: from `stored` (the values the
/// store holds under the count keys) where that is current and nothing changed on the account,
/// from Salesforce for the rest. No crossing, no call.
///
/// # Errors
/// Salesforce and store failures.
pub(crate) async fn gather(
    ctx: &Context,
    workflow: &str,
    config: &ExpansionConfig,
    crossed: &[Crossed<'_>],
    stored: &HashMap<String, Vec<(String, Value)>>,
) -> Result<OpenOpportunities, RunError> {
    let mut out = OpenOpportunities { open: HashMap::new(), known: HashMap::new(), before: None, after: None };
    if crossed.is_empty() {
        return Ok(out);
    }
    let stored_cursor = ctx.store.cursor(workflow, CURSOR).await?;
    // Unreadable is as good as none: every crossing is checked again.
    let before: Option<Cursor> = stored_cursor.as_deref().and_then(|c| serde_json::from_str(c).ok());
    let rules: HashMap<&str, u64> = crossed.iter().map(|c| (c.milestone, rule_hash(config, c.milestone))).collect();
    let mut current: HashMap<&str, Known> = HashMap::new();
    for c in crossed {
        let known = stored
            .get(&c.key)
            .and_then(|fields| fields.iter().find(|(f, _)| f == FIELD))
            .and_then(|(_, v)| serde_json::from_value::<Known>(v.clone()).ok())
            .filter(|k| k.account == c.account && k.rule == rules[c.milestone])
            .filter(|k| before.as_ref().is_some_and(|b| b.at == k.cursor));
        if let Some(k) = known {
            current.insert(c.key.as_str(), k);
        }
    }

    let key_field = salesforce::soql::field(&config.key_field)
        .map_err(|e| RunError::Salesforce { what: "changed Opportunities", source: e.into() })?;
    let overlap = chrono::Duration::from_std(crate::config::DEFAULT_ATTRIBUTES_OVERLAP).unwrap_or_default();
    // Nothing current: every crossing is checked now, and changes are followed from the newest
    // Opportunity stamp there is before the check.
    let since = before.as_ref().filter(|_| !current.is_empty()).and_then(|c| sf_datetime::parse(&c.at).ok());
    if since.is_none() {
        current.clear();
    }
    let rows = changes(ctx, key_field, since.map(|s| s - overlap), overlap).await?;
    let seen_before: HashSet<&str> = before
        .as_ref()
        .filter(|_| since.is_some())
        .map(|c| c.seen.iter().map(String::as_str).collect())
        .unwrap_or_default();
    // Seen open before: unmodified since made, each is still as it was seen.
    let known_open: HashSet<&str> = current.values().flat_map(|k| k.open.iter().map(|(id, _)| id.as_str())).collect();
    let (mut dirty_accounts, mut dirty_opps) = (HashSet::new(), HashSet::new());
    let mut newest = since;
    let mut in_window: Vec<(DateTime<Utc>, String)> = Vec::new();
    for row in &rows {
        let (Some(id), Some(at)) = (row.get("Id").and_then(Value::as_str), stamp(row, "SystemModstamp")) else {
            continue;
        };
        newest = newest.max(Some(at));
        let mark = format!("{id}@{}", sf_datetime::format(&at));
        let handled = seen_before.contains(mark.as_str());
        in_window.push((at, mark));
        let untouched = row.get("IsDeleted") != Some(&Value::Bool(true))
            && stamp(row, "CreatedDate").is_some()
            && stamp(row, "LastModifiedDate") == stamp(row, "CreatedDate");
        if handled || (known_open.contains(id) && untouched) {
            continue;
        }
        dirty_opps.insert(id.to_owned());
        if let Some(account) = row.get("AccountId").and_then(Value::as_str) {
            dirty_accounts.insert(account.to_owned());
        }
    }
    let at = newest.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    // What this run accounted for within the overlap the next run reads again.
    let mut seen: Vec<String> =
        in_window.into_iter().filter(|(t, _)| *t >= at - overlap).map(|(_, mark)| mark).collect();
    seen.sort_unstable();
    seen.truncate(SEEN_MAX);
    let after = Cursor { at: sf_datetime::format(&at), seen };
    let after_text = serde_json::to_string(&after).unwrap_or_default();

    let mut check: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in crossed {
        let known = current
            .get(c.key.as_str())
            .filter(|k| !dirty_accounts.contains(&k.account) && !k.open.iter().any(|(id, _)| dirty_opps.contains(id)));
        match known {
            Some(k) => {
                out.open.entry((c.account.to_owned(), c.milestone.to_owned())).or_default().extend(k.open.clone());
                // Stored again only when the cursor moves on.
                let moved = before.as_ref().is_none_or(|b| b.at != after.at);
                out.known.insert(c.key.clone(), (Known { cursor: String::new(), ..k.clone() }, moved));
            }
            None => {
                let list = check.entry(c.milestone).or_default();
                if !list.contains(&c.account) {
                    list.push(c.account);
                }
                let known = Known {
                    account: c.account.to_owned(),
                    rule: rules[c.milestone],
                    cursor: String::new(),
                    open: vec![],
                };
                out.known.insert(c.key.clone(), (known, true));
            }
        }
    }
    let mut checked: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
    let mut milestones: Vec<&&str> = check.keys().collect();
    milestones.sort_unstable();
    for m in milestones {
        let mut accounts = check[*m].clone();
        accounts.sort_unstable();
        for (account, opp, key) in open_opportunities(ctx, config, m, &accounts).await? {
            checked.entry((account, (*m).to_owned())).or_default().push((opp, key));
        }
    }
    for c in crossed {
        let Some((known, true)) = out.known.get_mut(&c.key) else { continue };
        if known.open.is_empty()
            && let Some(found) = checked.get(&(c.account.to_owned(), c.milestone.to_owned()))
        {
            known.open = found.clone();
            out.open.insert((c.account.to_owned(), c.milestone.to_owned()), found.clone());
        }
    }
    out.before = stored_cursor;
    out.after = Some((after.at, after_text));
    Ok(out)
}

impl OpenOpportunities {
    /// What to store, once `made` ((count key, Opportunity id, its key) of every expansion
    /// Opportunity the run made or adopted) is known: each crossing's open Opportunities, current
    /// at the new cursor. Store them, then [`OpenOpportunities::advance`].
    pub(crate) fn puts(
        &mut self,
        scope: &str,
        made: &[(String, String, String)],
        now: DateTime<Utc>,
    ) -> Vec<FingerprintPut> {
        let Some((after, _)) = self.after.clone() else { return vec![] };
        for (count_key, id, key) in made {
            if let Some((known, changed)) = self.known.get_mut(count_key)
                && !known.open.iter().any(|(o, _)| o == id)
            {
                known.open.push((id.clone(), key.clone()));
                *changed = true;
            }
        }
        let mut keys: Vec<&String> = self.known.keys().collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|k| {
                let (known, changed) = &self.known[k];
                changed.then(|| {
                    let value =
                        serde_json::to_value(Known { cursor: after.clone(), ..known.clone() }).unwrap_or(Value::Null);
                    FingerprintPut {
                        scope: scope.to_owned(),
                        key: k.clone(),
                        field: FIELD.into(),
                        fingerprint: crate::change::fingerprint(&value),
                        written_at: now,
                        value: Some(value),
                    }
                })
            })
            .collect()
    }

    /// Moves the cursor on, once what [`OpenOpportunities::puts`] gave is stored: stored first,
    /// a crash between the two leaves knowledge ahead of the cursor, which is only thrown away.
    pub(crate) async fn advance(&self, ctx: &Context, workflow: &str) -> Result<(), RunError> {
        if let Some((_, after)) = &self.after
            && Some(after) != self.before.as_ref()
            && !ctx.store.advance_cursor(workflow, CURSOR, self.before.as_deref(), after).await?
        {
            tracing::warn!(workflow, "The Opportunity cursor moved under this run; the next run checks every crossing");
        }
        Ok(())
    }
}

/// Opportunities changed since `since` (deleted ones too), newest first; without `since`, the
/// newest and those within `overlap` before it.
async fn changes(
    ctx: &Context,
    key_field: &str,
    since: Option<DateTime<Utc>>,
    overlap: chrono::Duration,
) -> Result<Vec<Value>, RunError> {
    let fields = ["Id", "AccountId", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp", key_field];
    let mut query = SoqlQuery::select(fields, "Opportunity").order_by("SystemModstamp", Order::Desc);
    if let Some(since) = since {
        query = query.filter(Condition::ge("SystemModstamp", since));
    }
    let soql = query.build().map_err(|e| RunError::Salesforce {
        what: "changed Opportunities",
        source: salesforce::Error::InvalidInput(e.to_string()),
    })?;
    let options = salesforce::QueryOptions { include_deleted: true, ..Default::default() };
    let pages = ctx.salesforce.query_pages::<Value>(soql, options);
    futures_util::pin_mut!(pages);
    let mut rows: Vec<Value> = Vec::new();
    while let Some(page) = pages.try_next().await.map_err(sf("changed Opportunities"))? {
        rows.extend(page.records);
        let newest = rows.first().and_then(|r| stamp(r, "SystemModstamp"));
        let oldest = rows.last().and_then(|r| stamp(r, "SystemModstamp"));
        if since.is_none()
            && let (Some(newest), Some(oldest)) = (newest, oldest)
            && oldest < newest - overlap
        {
            break;
        }
    }
    Ok(rows)
}

/// (Account id, Opportunity id, its key) of the open Opportunities meeting the `existing` rule
/// for `milestone`.
async fn open_opportunities(
    ctx: &Context,
    config: &ExpansionConfig,
    milestone: &str,
    accounts: &[&str],
) -> Result<Vec<(String, String, String)>, RunError> {
    let mut out = Vec::new();
    let rule = milestone_rule(config, milestone);
    let key_field = salesforce::soql::field(&config.key_field)
        .map_err(|e| RunError::Salesforce { what: "open expansion Opportunities", source: e.into() })?;
    for chunk in accounts.chunks(300) {
        let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
        let soql = format!(
            "SELECT Id, AccountId, {key_field} FROM Opportunity WHERE IsClosed = false AND AccountId IN ({list}) AND ({rule})"
        );
        let rows: Vec<Value> = ctx.salesforce.query_collect(soql).await.map_err(sf("open expansion Opportunities"))?;
        for r in rows {
            let text = |f: &str| r.get(f).and_then(Value::as_str).map(str::to_owned);
            if let (Some(account), Some(id)) = (text("AccountId"), text("Id")) {
                out.push((account, id, text(key_field).unwrap_or_default()));
            }
        }
    }
    Ok(out)
}
