//! Matching facts: the requested account metadata fields and, per account, how many visitors have
//! an e-mail at each domain. Visitor rows are folded into per-account domain counts page by page;
//! nothing per visitor outlives its page.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use pendo::aggregation::expr::valid_path;
use pendo::{Apps, Expr, Pipeline, Source};
use serde_json::Value;

use super::{AccountFacts, ExtractError, Extractor, Result, bad_row, maybe_filter, text};
use crate::matching::domain::email_domain;

#[derive(Default)]
struct Acc {
    /// Sorted by name (see [`AccountFacts::metadata`]).
    metadata: Vec<(String, String)>,
    /// Few per account (usually one company domain plus free-mail ones): a vector beats a map.
    domains: Vec<(Box<str>, u32)>,
    with_email: u32,
}

/// A metadata value as text: strings as they are, numbers and booleans as JSON writes them,
/// nothing for null; lists and objects as compact JSON.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// The accounts a visitor row belongs to: `accountIds`, else `accountId`, without repeats.
fn accounts_of(row: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = row
        .get("accountIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if ids.is_empty()
        && let Some(id) = text(row, "accountId").filter(|s| !s.is_empty())
    {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn entry<'m>(accs: &'m mut BTreeMap<String, Acc>, id: &str) -> &'m mut Acc {
    if !accs.contains_key(id) {
        accs.insert(id.to_string(), Acc::default());
    }
    accs.entry(id.to_string()).or_default()
}

impl Extractor<'_> {
    /// Matching facts for every Pendo account; see [`super::account_facts`].
    ///
    /// # Errors
    /// As [`super::account_facts`].
    pub async fn account_facts(&self, metadata_fields: &[(String, String)]) -> Result<Vec<AccountFacts>> {
        let mut selected: Vec<(String, String, String)> = Vec::with_capacity(metadata_fields.len());
        for (i, (group, field)) in metadata_fields.iter().enumerate() {
            let path = format!("metadata.{group}.{field}");
            // A dot inside a name would silently address a different field.
            if group.contains('.') || field.contains('.') || !valid_path(&path) {
                return Err(ExtractError::InvalidField { group: group.clone(), field: field.clone() });
            }
            selected.push((format!("m{i}"), path, format!("{group}.{field}")));
        }
        // Both queries fold into one map, possibly side by side (see `with_parallel_queries`);
        // the lock is taken per row and never held across a request.
        let accs: Mutex<BTreeMap<String, Acc>> = Mutex::new(BTreeMap::new());
        let lock = || accs.lock().unwrap_or_else(PoisonError::into_inner);

        const ACCOUNTS: &str = "account metadata";
        let accounts = self.paged(
            ACCOUNTS,
            &["accountId"],
            false,
            |cond| {
                let mut fields = vec![("accountId", Expr::field("accountId"))];
                fields.extend(selected.iter().map(|(out, path, _)| (out.as_str(), Expr::field(path))));
                maybe_filter(Pipeline::from_source(Source::Accounts { apps: Apps::Default }), cond).select(fields)
            },
            |row| {
                let id = text(row, "accountId").ok_or_else(|| bad_row(ACCOUNTS, "accountId", row))?;
                let mut map = lock();
                let acc = entry(&mut map, id);
                for (out, _, name) in &selected {
                    if let Some(v) = row.get(out.as_str()).and_then(as_text) {
                        match acc.metadata.binary_search_by(|(k, _)| k.cmp(name)) {
                            Ok(i) => acc.metadata[i].1 = v,
                            Err(i) => acc.metadata.insert(i, (name.clone(), v)),
                        }
                    }
                }
                Ok(())
            },
        );

        const VISITORS: &str = "visitor e-mails";
        let visitors = self.paged(
            VISITORS,
            &["visitorId"],
            false,
            |cond| {
                maybe_filter(Pipeline::from_source(Source::Visitors { identified: Some(true) }), cond).select(vec![
                    ("visitorId", Expr::field("visitorId")),
                    ("accountId", Expr::field("metadata.auto.accountid")),
                    ("accountIds", Expr::field("metadata.auto.accountids")),
                    ("email", Expr::field("metadata.agent.email")),
                ])
            },
            |row| {
                let Some(domain) = text(row, "email").and_then(email_domain) else {
                    return Ok(());
                };
                let mut map = lock();
                for id in accounts_of(row) {
                    let acc = entry(&mut map, id);
                    acc.with_email = acc.with_email.saturating_add(1);
                    match acc.domains.iter_mut().find(|(d, _)| **d == *domain) {
                        Some((_, n)) => *n = n.saturating_add(1),
                        None => acc.domains.push((domain.as_str().into(), 1)),
                    }
                }
                Ok(())
            },
        );
        if self.parallel {
            tokio::try_join!(accounts, visitors)?;
        } else {
            accounts.await?;
            visitors.await?;
        }

        Ok(accs
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .map(|(account_id, a)| {
                let mut email_domains: Vec<(String, u32)> =
                    a.domains.into_iter().map(|(d, n)| (d.into_string(), n)).collect();
                email_domains.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
                AccountFacts { account_id, metadata: a.metadata, email_domains, visitors_with_email: a.with_email }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn visitor_accounts_prefer_the_list_and_dedupe() {
        assert_eq!(accounts_of(&json!({"accountIds": ["b", "a", "b", ""], "accountId": "z"})), vec!["a", "b"]);
        assert_eq!(accounts_of(&json!({"accountIds": [], "accountId": "z"})), vec!["z"]);
        assert_eq!(accounts_of(&json!({"accountIds": null, "accountId": null})), Vec::<&str>::new());
        assert_eq!(accounts_of(&json!({"accountIds": "x"})), Vec::<&str>::new());
    }

    #[test]
    fn metadata_values_as_text() {
        assert_eq!(as_text(&json!("001Dn")), Some("001Dn".into()));
        assert_eq!(as_text(&json!(12.5)), Some("12.5".into()));
        assert_eq!(as_text(&json!(true)), Some("true".into()));
        assert_eq!(as_text(&json!(null)), None);
        assert_eq!(as_text(&json!(["a"])), Some("[\"a\"]".into()));
    }
}
