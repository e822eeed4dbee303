//! Reads the Accounts matching needs (Id, ParentId, the external-ID field, the website and the
//! `child_field` rule's field) by the cheaper
//! route: REST query pages of up to 2,000 rows cost one call each, a Bulk query costs about
//! four calls whatever the size. The first REST page says how many rows there are, so a small
//! org is read in one call and a large one switches to Bulk after that first call.
//!
//! The first page is also what prices the run when nothing else has: its answer carries the
//! org's usage (`Sforce-Limit-Info`), so the budget costs no `/limits` call. What the ledger
//! already knows (usagesync's share spent today) refuses before that page; otherwise the page
//! takes the place of the `/limits` read and spends the one call that read would have.

use std::collections::HashMap;

use futures_util::{StreamExt, TryStreamExt};
use salesforce::{BulkQueryOptions, QueryOptions};
use serde_json::{Map, Value};

use crate::budget::Budget;
use crate::matching::AccountRow;
use crate::workflow::{Context, RunError};

/// REST pages worth reading before Bulk is cheaper (Bulk: create, ~2 polls, 1 result page).
const BULK_QUERY_CALLS: u64 = 4;
const PAGE: u64 = 2_000;

/// The Account fields the rule chain compares, besides Id and ParentId.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fields<'a> {
    pub external: Option<&'a str>,
    pub website: Option<&'a str>,
    pub child: Option<&'a str>,
}

const PARENT: &str = "ParentId";

pub(crate) async fn read(ctx: &Context, wanted: Fields<'_>, budget: &Budget) -> Result<Vec<AccountRow>, RunError> {
    let client = &ctx.salesforce;
    let sf = |source| RunError::Salesforce { what: "Accounts", source };
    if budget.known_free(ctx).await?.is_some_and(|known| known.available == 0) {
        return Err(RunError::OverBudget { needed: 1, left: 0 });
    }
    let Fields { external: external_field, website: website_field, child: child_field } = wanted;
    let mut fields = vec!["Id", PARENT];
    for f in [external_field, website_field, child_field].into_iter().flatten() {
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    let soql = salesforce::SoqlQuery::select(fields.iter().copied(), "Account")
        .build()
        .map_err(|e| sf(salesforce::Error::InvalidInput(e.to_string())))?;
    let options = QueryOptions { batch_size: Some(PAGE as u16), include_deleted: false };
    let mut pages = Box::pin(client.query_pages::<Map<String, Value>>(soql.clone(), options));
    let Some(first) = pages.next().await.transpose().map_err(sf)? else { return Ok(Vec::new()) };
    // Fresh from the page's answer: no call; the page stands for the `/limits` read.
    let max_calls = budget.get_priced_by(ctx, 1).await?.available;
    if max_calls == 0 {
        return Err(RunError::OverBudget { needed: 1, left: 0 });
    }
    let row = |m: &Map<String, Value>| -> AccountRow {
        let text = |f: Option<&str>| f.and_then(|f| m.get(f)).and_then(Value::as_str).map(str::to_owned);
        AccountRow {
            id: text(Some("Id")).unwrap_or_default(),
            external_id: text(external_field),
            website: text(website_field),
            parent_id: text(Some(PARENT)),
            child_key: text(child_field),
        }
    };
    let remaining_pages = if first.done { 0 } else { first.total_size.div_ceil(PAGE).saturating_sub(1) };
    let needed = remaining_pages.min(BULK_QUERY_CALLS);
    if needed > max_calls - 1 {
        return Err(RunError::OverBudget { needed: needed + 1, left: max_calls });
    }
    if remaining_pages <= BULK_QUERY_CALLS {
        let mut rows: Vec<AccountRow> = first.records.iter().map(row).collect();
        while let Some(page) = pages.next().await.transpose().map_err(sf)? {
            rows.extend(page.records.iter().map(row));
        }
        return Ok(rows);
    }
    drop(pages);
    let options = BulkQueryOptions { max_records_per_page: Some(500_000), ..Default::default() };
    client
        .bulk_query::<HashMap<String, String>>(soql, options)
        .map_ok(|m| {
            let text = |f: Option<&str>| f.and_then(|f| m.get(f)).filter(|v| !v.is_empty()).cloned();
            AccountRow {
                id: text(Some("Id")).unwrap_or_default(),
                external_id: text(external_field),
                website: text(website_field),
                parent_id: text(Some(PARENT)),
                child_key: text(child_field),
            }
        })
        .try_collect()
        .await
        .map_err(sf)
}
