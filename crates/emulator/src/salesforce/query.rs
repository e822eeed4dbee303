//! SOQL over REST: `/query` and `/queryAll` (with or without a trailing slash), paging through
//! `nextRecordsUrl` locators (`01g…-2000`) that both `/query/` and `/queryAll/` serve, and the
//! `Sforce-Query-Options: batchSize=N` header (200 to 2,000, default 2,000); with
//! `columns=true`, the query's column metadata instead of its rows.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::soql;
use super::state::{Cursor, SfState};
use super::store::Db;

const DEFAULT_BATCH: usize = 2000;
const MIN_BATCH: usize = 200;
/// Locators outlive their query by this long, like Salesforce's 15-minute inactivity rule.
const CURSOR_TTL_MINUTES: i64 = 15;
/// Open cursors kept at most; the oldest go first.
const MAX_CURSORS: usize = 1000;

fn batch_size(req: &DataRequest<'_>) -> usize {
    req.headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split([',', ';']).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("batchSize").then(|| v.trim().parse::<usize>().ok()).flatten()
            })
        })
        .map_or(DEFAULT_BATCH, |n| n.clamp(MIN_BATCH, DEFAULT_BATCH))
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, all: bool, rest: &[&str]) -> Resp {
    if req.method != Method::GET {
        return Resp::method_not_allowed(&req.method, "GET,HEAD");
    }
    match rest {
        [] => run(st, ctx, db, req, all),
        [locator] => next_page(st, ctx, locator),
        _ => Resp::not_found(),
    }
}

fn run(st: &SfState, ctx: &CallCtx, db: &Db, req: &DataRequest<'_>, all: bool) -> Resp {
    let Some(q) = req.param("q") else {
        return Resp::error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "A query string has to be specified");
    };
    let parsed = match soql::parse(q) {
        Ok(p) => p,
        Err(e) => return Resp::error(StatusCode::BAD_REQUEST, e.code, e.message),
    };
    if req.param("columns").is_some_and(|c| c.eq_ignore_ascii_case("true")) {
        // The columns the query would return, not its rows (the Salesforce CLI lays out tables
        // from this).
        return match soql::column_metadata(&parsed, db, &ctx.version, ctx.now.date_naive()) {
            Ok(v) => Resp::ok(v),
            Err(e) => Resp::error(StatusCode::BAD_REQUEST, e.code, e.message),
        };
    }
    // Each row is written as JSON as the query renders it: a cursor over every Account of a
    // million-account org held as JSON values took over a gigabyte for its lifetime.
    let mut rows = Rendered::default();
    let total = match soql::execute_each(&parsed, db, all, &ctx.version, ctx.now.date_naive(), |r| rows.push(&r)) {
        Ok(n) => n,
        Err(e) => return Resp::error(StatusCode::BAD_REQUEST, e.code, e.message),
    };
    rows.bytes.shrink_to_fit();
    rows.ends.shrink_to_fit();
    page(st, ctx, Arc::new(rows), total, 0, batch_size(req), None)
}

/// A query's rows as JSON text in one buffer, and where each ends.
#[derive(Debug, Default)]
pub struct Rendered {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Rendered {
    fn push(&mut self, row: &Value) {
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut self.bytes, row);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Rows `from..to` (within the rows) as values again: the same values, as serde_json's
    /// `float_roundtrip` reads back every float it wrote.
    fn values(&self, from: usize, to: usize) -> Vec<Value> {
        (from..to)
            .map(|i| {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                serde_json::from_slice(&self.bytes[start..self.ends[i]]).unwrap_or(Value::Null)
            })
            .collect()
    }
}

fn page(
    st: &SfState,
    ctx: &CallCtx,
    rows: Arc<Rendered>,
    total: usize,
    offset: usize,
    batch: usize,
    cursor_id: Option<&str>,
) -> Resp {
    let end = (offset + batch).min(rows.len());
    let records = rows.values(offset.min(end), end);
    if end >= rows.len() {
        return Resp::ok(json!({"totalSize": total, "done": true, "records": records}));
    }
    // A cursor stays valid until it expires, so a client may re-read a page after a failure.
    let id = match cursor_id {
        Some(id) => id.to_string(),
        None => {
            // Not the org's generator: that one sits behind the data lock this call runs under.
            let id = st.locator_ids.next_id("01g");
            remember(st, ctx, &id, Arc::clone(&rows), total, batch);
            id
        }
    };
    Resp::ok(json!({
        "totalSize": total,
        "done": false,
        "nextRecordsUrl": format!("/services/data/v{}/query/{id}-{end}", ctx.version),
        "records": records,
    }))
}

fn remember(st: &SfState, ctx: &CallCtx, id: &str, rows: Arc<Rendered>, total: usize, batch: usize) {
    let mut cursors = st.cursors.lock();
    cursors.retain(|_, c| ctx.now - c.created < chrono::Duration::minutes(CURSOR_TTL_MINUTES));
    if cursors.len() >= MAX_CURSORS
        && let Some(oldest) = cursors.iter().min_by_key(|(_, c)| c.created).map(|(k, _)| k.clone())
    {
        cursors.remove(&oldest);
    }
    cursors.insert(id.to_string(), Cursor { rows, total_size: total, batch, created: ctx.now });
}

fn next_page(st: &SfState, ctx: &CallCtx, locator: &str) -> Resp {
    let invalid = || Resp::error(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator");
    let Some((id, offset)) = locator.rsplit_once('-') else { return invalid() };
    let Ok(offset) = offset.parse::<usize>() else { return invalid() };
    let cursor = {
        let cursors = st.cursors.lock();
        cursors.get(id).map(|c| (Arc::clone(&c.rows), c.total_size, c.batch))
    };
    let Some((rows, total, batch)) = cursor else { return invalid() };
    if offset > rows.len() {
        return invalid();
    }
    page(st, ctx, rows, total, offset, batch, Some(id))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Rendered;

    #[test]
    fn rendered_rows_read_back_as_the_values_written() {
        let rows = vec![
            json!({"attributes": {"type": "Account", "url": "/x/001"}, "Id": "001", "Score__c": 0.30000000000000004}),
            json!({"Id": "002", "AnnualRevenue": 1.7976931348623157e308, "Tiny": 5e-324, "Name": "Åsa \"Q\"", "N": null}),
            json!({"Id": "003", "Big": -9007199254740993i64, "Nested": {"records": [{"Id": "003a"}]}}),
        ];
        let mut r = Rendered::default();
        for row in &rows {
            r.push(row);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.values(0, 3), rows);
        assert_eq!(r.values(1, 2), rows[1..2].to_vec());
        assert!(r.values(2, 2).is_empty());
    }
}
