//! The emulator's SOQL engine: parses a query, checks it against the org's schema and runs it
//! over the in-memory [`Db`], answering rows in Salesforce's REST shape (`attributes`, nested
//! parent relationships) and errors in Salesforce's codes and message format.
//!
//! It owns the supported subset of SOQL — field lists with parent paths (polymorphic `What`/`Who`
//! included), parent-to-child subqueries (five levels from v58.0, one before; each with its own
//! WHERE, ORDER BY and LIMIT),
//! `COUNT()`, `WHERE` with typed comparisons, `LIKE`, `IN`, relative date literals, `ORDER BY`,
//! `LIMIT` and `OFFSET` — and refuses everything else with MALFORMED_QUERY rather than answering
//! it approximately; and the column metadata of a query (`columns=true`). Paging over the rows
//! is the REST handler's job.

mod ast;
mod columns;
mod eval;
mod lexer;
mod parser;
mod plan;
#[cfg(test)]
mod tests;

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::store::Db;

/// A query parsed and syntax-checked; names are checked against the schema when it runs, since
/// an admin may add fields between the two.
#[derive(Debug, Clone)]
pub struct Query {
    src: String,
    ast: ast::Ast,
}

impl Query {
    /// The sObject named in FROM, as written.
    pub fn object(&self) -> &str {
        &self.ast.object
    }

    /// The SELECT list as written (`Name`, `Account.Name`), or `None` for `COUNT()`: the
    /// columns of a Bulk API query result, in order.
    pub fn select_paths(&self) -> Option<Vec<String>> {
        match &self.ast.select {
            ast::Select::Count => None,
            ast::Select::Fields(paths) => Some(paths.iter().map(ast::Path::text).collect()),
        }
    }

    /// Whether the SELECT list holds parent-to-child subqueries (which Bulk queries refuse).
    pub fn has_subqueries(&self) -> bool {
        !self.ast.subqueries.is_empty()
    }

    /// Whether this is a `SELECT COUNT()` query, whose answer has a size but no records.
    pub fn is_count(&self) -> bool {
        self.ast.select == ast::Select::Count
    }
}

/// Parses a SOQL query.
///
/// # Errors
/// MALFORMED_QUERY for syntax errors and for SOQL outside the supported subset.
pub fn parse(soql: &str) -> Result<Query, SoqlError> {
    let ast = parser::parse(soql)?;
    Ok(Query { src: soql.to_string(), ast })
}

/// The rows a query selects. For `COUNT()` queries `records` is empty and `total_size` is the count.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    pub total_size: usize,
    pub records: Vec<Value>,
}

/// Runs a query. `all_rows = true` is queryAll (deleted records included). `version` (like
/// "62.0") goes into each record's `attributes.url`; `today` anchors relative date literals.
///
/// # Errors
/// INVALID_TYPE for an unknown object; INVALID_FIELD for unknown fields or relationships,
/// duplicate fields and values of the wrong type; INVALID_QUERY_FILTER_OPERATOR for a malformed
/// ID literal or an operator the field type does not allow; NUMBER_OUTSIDE_VALID_RANGE for an
/// OFFSET over 2000.
pub fn execute(
    q: &Query,
    db: &Db,
    all_rows: bool,
    version: &str,
    today: NaiveDate,
    _now: DateTime<Utc>,
) -> Result<QueryOutput, SoqlError> {
    let plan = plan::build(&q.ast, &q.src, &db.schema, today, plan::max_child_levels(version_number(version)))?;
    Ok(eval::run(&plan, db, all_rows, version))
}

/// [`execute`], handing each result row to `row` as it is rendered instead of collecting them;
/// returns the number of rows.
///
/// # Errors
/// As [`execute`].
pub fn execute_each(
    q: &Query,
    db: &Db,
    all_rows: bool,
    version: &str,
    today: NaiveDate,
    row: impl FnMut(Value),
) -> Result<usize, SoqlError> {
    let plan = plan::build(&q.ast, &q.src, &db.schema, today, plan::max_child_levels(version_number(version)))?;
    Ok(eval::run_each(&plan, db, all_rows, version, row))
}

/// The query's column metadata, as `/query?q=...&columns=true` answers it.
///
/// # Errors
/// The same errors [`execute`] reports for names that do not resolve.
pub fn column_metadata(q: &Query, db: &Db, version: &str, today: NaiveDate) -> Result<Value, SoqlError> {
    plan::build(&q.ast, &q.src, &db.schema, today, plan::max_child_levels(version_number(version)))?;
    Ok(columns::metadata(&q.ast, &db.schema))
}

/// `62.0` or `v62.0` as a number; an unreadable version counts as the newest.
fn version_number(version: &str) -> f64 {
    version.trim_start_matches('v').parse().unwrap_or(f64::MAX)
}

/// A query error as the REST API reports it: `[{"message": ..., "errorCode": ...}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoqlError {
    /// MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, INVALID_QUERY_FILTER_OPERATOR or
    /// NUMBER_OUTSIDE_VALID_RANGE.
    pub code: &'static str,
    pub message: String,
}

impl SoqlError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// An error located in the query: Salesforce prefixes the reason with the offending line
    /// (a window of it for long lines), a caret under the position and `ERROR at Row:R:Column:C`.
    pub(crate) fn at(code: &'static str, src: &str, byte_pos: usize, reason: String) -> Self {
        let mut pos = byte_pos.min(src.len());
        while !src.is_char_boundary(pos) {
            pos -= 1;
        }
        let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[pos..].find('\n').map_or(src.len(), |i| pos + i);
        let row = src[..pos].matches('\n').count() + 1;
        let line: Vec<char> = src[line_start..line_end].trim_end_matches('\r').chars().collect();
        let col0 = src[line_start..pos].chars().count();
        let window_start = col0.saturating_sub(30);
        let window_end = line.len().min(col0 + 40);
        let fragment: String = line.get(window_start..window_end.max(window_start)).unwrap_or(&[]).iter().collect();
        let caret = " ".repeat(col0 - window_start);
        Self { code, message: format!("\n{fragment}\n{caret}^\nERROR at Row:{row}:Column:{}\n{reason}", col0 + 1) }
    }

    /// The REST error body entry.
    pub fn rest_json(&self) -> Value {
        serde_json::json!({"message": self.message, "errorCode": self.code})
    }
}

impl fmt::Display for SoqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for SoqlError {}
