//! New visitors: identified visitors whose first visit is at or after a point in time, with what
//! new-users-to-contacts needs of each (account, e-mail, name, first and last visit). Paged by
//! visitor id like every other query.

use chrono::{DateTime, Utc};
use pendo::{Expr, Pipeline, Source};
use serde_json::Value;

use super::{Extractor, Result, bad_row, maybe_filter, text};

/// One identified visitor, as Pendo knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewVisitor {
    pub visitor_id: String,
    /// The visitor's (first) account, if any.
    pub account_id: Option<String>,
    /// As Pendo holds it; normalised by the workflow.
    pub email: Option<String>,
    pub full_name: Option<String>,
    /// Epoch milliseconds (Pendo's own unit), kept exact for the cursor.
    pub first_visit_ms: i64,
    pub last_visit_ms: Option<i64>,
}

impl NewVisitor {
    pub fn first_visit(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.first_visit_ms)
    }

    pub fn last_visit(&self) -> Option<DateTime<Utc>> {
        self.last_visit_ms.and_then(DateTime::from_timestamp_millis)
    }
}

fn millis(row: &Value, field: &str) -> Option<i64> {
    match row.get(field)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

fn non_empty(row: &Value, field: &str) -> Option<String> {
    text(row, field).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Extractor<'_> {
    /// Identified visitors whose first visit is at or after `since_ms`, in visitor id order.
    ///
    /// # Errors
    /// [`super::ExtractError::Pendo`] when a page fails; [`super::ExtractError::BadRow`] for a
    /// row without a visitor id.
    pub async fn new_visitors(&self, since_ms: i64) -> Result<Vec<NewVisitor>> {
        const QUERY: &str = "new visitors";
        let mut out = Vec::new();
        self.paged(
            QUERY,
            &["visitorId"],
            false,
            |cond| {
                let p = Pipeline::from_source(Source::Visitors { identified: Some(true) })
                    .filter(Expr::field("metadata.auto.firstvisit").ge(since_ms));
                maybe_filter(p, cond).select(vec![
                    ("visitorId", Expr::field("visitorId")),
                    ("accountId", Expr::field("metadata.auto.accountid")),
                    ("email", Expr::field("metadata.agent.email")),
                    ("fullName", Expr::field("metadata.agent.full_name")),
                    ("firstVisit", Expr::field("metadata.auto.firstvisit")),
                    ("lastVisit", Expr::field("metadata.auto.lastvisit")),
                ])
            },
            |row| {
                let visitor_id = text(row, "visitorId").ok_or_else(|| bad_row(QUERY, "visitorId", row))?;
                // The filter already required it; a row without one is not new.
                let Some(first_visit_ms) = millis(row, "firstVisit") else { return Ok(()) };
                out.push(NewVisitor {
                    visitor_id: visitor_id.to_owned(),
                    account_id: non_empty(row, "accountId"),
                    email: non_empty(row, "email"),
                    full_name: non_empty(row, "fullName"),
                    first_visit_ms,
                    last_visit_ms: millis(row, "lastVisit"),
                });
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}
