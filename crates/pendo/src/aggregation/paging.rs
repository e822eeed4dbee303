//! Keyset paging over aggregations (sort + filter + limit), the only paging Pendo has. The key
//! must identify rows uniquely — add a tie-breaker field when the primary key repeats (e.g.
//! `metadata.auto.lastupdated` then `accountId`) — so no row is skipped or repeated at page edges.

use serde_json::Value;

use super::expr::{Expr, Lit};
use super::pipeline::{Pipeline, SortKey};
use crate::Client;
use crate::error::{Error, Result};

/// Walks a pipeline page by page.
pub struct Pager<'a> {
    client: &'a Client,
    base: Pipeline,
    keys: Vec<String>,
    page_size: u64,
    last: Option<Vec<Value>>,
    done: bool,
    /// Requests made so far.
    pub requests: u32,
}

fn lit_of(v: &Value) -> Option<Lit> {
    match v {
        Value::String(s) => Some(Lit::Str(s.clone())),
        Value::Number(n) => n.as_i64().map(Lit::Int).or_else(|| n.as_f64().map(Lit::Float)),
        Value::Bool(b) => Some(Lit::Bool(*b)),
        _ => None,
    }
}

fn lookup<'v>(row: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(row, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// `(k1 > a) || (k1 == a && k2 > b) || ...`: strictly after the last row in key order.
fn after(keys: &[String], last: &[Value]) -> Result<Expr> {
    let mut disj: Option<Expr> = None;
    for i in 0..keys.len() {
        let mut conj: Option<Expr> = None;
        for j in 0..i {
            let l = lit_of(&last[j])
                .ok_or_else(|| Error::Pipeline(format!("page key {} is null or not a scalar", keys[j])))?;
            let e = Expr::field(&keys[j]).eq(Expr::from(l));
            conj = Some(match conj {
                Some(c) => c.and(e),
                None => e,
            });
        }
        let l =
            lit_of(&last[i]).ok_or_else(|| Error::Pipeline(format!("page key {} is null or not a scalar", keys[i])))?;
        let gt = Expr::field(&keys[i]).gt(Expr::from(l));
        let term = match conj {
            Some(c) => c.and(gt),
            None => gt,
        };
        disj = Some(match disj {
            Some(d) => d.or(term),
            None => term,
        });
    }
    disj.ok_or_else(|| Error::Pipeline("keyset paging needs at least one key".into()))
}

impl<'a> Pager<'a> {
    pub(crate) fn new(client: &'a Client, base: Pipeline, keys: &[&str], page_size: u64) -> Self {
        Pager {
            client,
            base,
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
            page_size: page_size.max(1),
            last: None,
            done: false,
            requests: 0,
        }
    }

    /// The next page, or `None` when the rows are exhausted.
    ///
    /// # Errors
    /// Any request error, or a page key that is missing on a row.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>> {
        if self.done {
            return Ok(None);
        }
        let sort: Vec<SortKey> = self.keys.iter().map(|k| SortKey::asc(k)).collect();
        let mut p = self.base.clone().sort(&sort);
        if let Some(last) = &self.last {
            p = p.filter(after(&self.keys, last)?);
        }
        let p = p.limit(self.page_size);
        self.requests += 1;
        let rows = self.client.aggregate(&p).await?.results;
        if (rows.len() as u64) < self.page_size {
            self.done = true;
        }
        if let Some(row) = rows.last() {
            self.last = Some(self.keys.iter().map(|k| lookup(row, k).clone()).collect());
        } else {
            self.done = true;
        }
        Ok(if rows.is_empty() { None } else { Some(rows) })
    }

    /// Every remaining row.
    ///
    /// # Errors
    /// As [`Pager::next_page`].
    pub async fn collect_all(mut self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        while let Some(mut page) = self.next_page().await? {
            out.append(&mut page);
        }
        Ok(out)
    }
}
