//! Reading many Salesforce rows by the cheaper route: REST query pages of up to 2,000 rows cost
//! one call each, a Bulk query about four whatever its size. The first REST page says how many
//! rows there are, so a small set is read in one call and a large one switches to Bulk after
//! that first call. Matching's Account read and contact-engagement's Contact read go through
//! here.

use std::collections::HashMap;
use std::pin::Pin;

use futures_util::{Stream, StreamExt, TryStreamExt};
use salesforce::{BulkQueryOptions, QueryOptions, QueryPage};
use serde_json::{Map, Value};

use crate::workflow::{Context, RunError};

/// REST pages worth reading before Bulk is cheaper (Bulk: create, ~2 polls, 1 result page).
pub(crate) const BULK_QUERY_CALLS: u64 = 4;
const PAGE: u64 = 2_000;

type Pages = Pin<Box<dyn Stream<Item = salesforce::Result<QueryPage<Map<String, Value>>>> + Send>>;

/// One row, from a REST page (JSON) or a Bulk result (CSV), read field by field as text.
pub(crate) enum Row<'a> {
    Json(&'a Map<String, Value>),
    Csv(&'a HashMap<String, String>),
}

impl<'a> Row<'a> {
    /// The field's text; `None` when null or empty. A boolean reads as `true` or `false`, as
    /// in a Bulk result.
    pub fn get(&self, field: &str) -> Option<&'a str> {
        match self {
            Row::Json(m) => match m.get(field)? {
                Value::String(s) => Some(s.as_str()),
                Value::Bool(true) => Some("true"),
                Value::Bool(false) => Some("false"),
                _ => None,
            },
            Row::Csv(m) => m.get(field).map(String::as_str),
        }
        .filter(|s| !s.is_empty())
    }
}

/// A read whose first REST page is in: what the rest will cost is known before it is spent.
pub(crate) struct PricedRead {
    ctx: Context,
    soql: String,
    include_deleted: bool,
    what: &'static str,
    first: QueryPage<Map<String, Value>>,
    pages: Pages,
}

impl PricedRead {
    /// Reads the first page of `soql`, a query of `object` (one call). Within a run that has
    /// not yet described `object`, the page comes with its describe in one Composite call, so
    /// the preflight that checks the object's fields before anything is written costs no call
    /// of its own.
    ///
    /// # Errors
    /// Salesforce failures.
    pub async fn start(
        ctx: &Context,
        soql: String,
        object: &str,
        include_deleted: bool,
        what: &'static str,
    ) -> Result<Option<PricedRead>, RunError> {
        let sf = |source| RunError::Salesforce { what, source };
        let options = QueryOptions { batch_size: Some(PAGE as u16), include_deleted };
        let describe_too = crate::workflow::run_started()
            .is_some_and(|started| ctx.salesforce.describe_fetched_since(object, started).is_none());
        let (first, pages): (_, Pages) = if describe_too {
            let first = ctx.salesforce.query_first_page_describing(&soql, options, object).await.map_err(sf)?;
            let pages = Box::pin(ctx.salesforce.query_pages_after(&first));
            (Some(first), pages)
        } else {
            let mut pages: Pages = Box::pin(ctx.salesforce.query_pages::<Map<String, Value>>(soql.clone(), options));
            (pages.next().await.transpose().map_err(sf)?, pages)
        };
        Ok(first.map(|first| PricedRead { ctx: ctx.clone(), soql, include_deleted, what, first, pages }))
    }

    /// REST pages left after the first.
    fn remaining_pages(&self) -> u64 {
        if self.first.done { 0 } else { self.first.total_size.div_ceil(PAGE).saturating_sub(1) }
    }

    /// Calls the rest of the read costs by the cheaper route.
    pub fn calls_left(&self) -> u64 {
        self.remaining_pages().min(BULK_QUERY_CALLS)
    }

    /// Hands every row to `each`: the first page's, then the other REST pages' or one Bulk
    /// query's (which reads the first page's rows again, and hands each row once).
    ///
    /// # Errors
    /// Salesforce failures.
    pub async fn each(self, mut each: impl FnMut(Row<'_>)) -> Result<(), RunError> {
        let what = self.what;
        let sf = |source| RunError::Salesforce { what, source };
        if self.remaining_pages() <= BULK_QUERY_CALLS {
            let mut pages = self.pages;
            self.first.records.iter().for_each(|r| each(Row::Json(r)));
            while let Some(page) = pages.next().await.transpose().map_err(sf)? {
                page.records.iter().for_each(|r| each(Row::Json(r)));
            }
            return Ok(());
        }
        drop(self.pages);
        let options = BulkQueryOptions {
            include_deleted: self.include_deleted,
            max_records_per_page: Some(500_000),
            ..Default::default()
        };
        let rows = self.ctx.salesforce.bulk_query::<HashMap<String, String>>(self.soql, options);
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(sf)? {
            each(Row::Csv(&row));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_and_csv_rows_read_alike() {
        let json = json!({"Id": "003A", "IsDeleted": true, "Email": "", "N": 1, "Gone": null});
        let Value::Object(json) = json else { unreachable!() };
        let csv: HashMap<String, String> =
            [("Id", "003A"), ("IsDeleted", "true"), ("Email", "")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        for row in [Row::Json(&json), Row::Csv(&csv)] {
            assert_eq!((row.get("Id"), row.get("IsDeleted")), (Some("003A"), Some("true")));
            assert_eq!((row.get("Email"), row.get("Gone"), row.get("Missing")), (None, None, None));
        }
    }
}
