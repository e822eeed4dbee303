//! Reads the Accounts matching needs (Id, ParentId, the external-ID field, the website and the
//! `child_field` rule's field) by the cheaper route ([`crate::sf_read`]): REST pages for a small
//! org, one Bulk query after the first page for a large one.
//!
//! The first page is also what prices the run when nothing else has: its answer carries the
//! org's usage (`Sforce-Limit-Info`), so the budget costs no `/limits` call. What the ledger
//! already knows (usagesync's share spent today) refuses before that page; otherwise the page
//! takes the place of the `/limits` read and spends the one call that read would have.

use crate::budget::Budget;
use crate::matching::{AccountRow, Accounts, Building};
use crate::sf_read::PricedRead;
use crate::workflow::{Context, RunError};

/// The Account fields the rule chain compares, besides Id and ParentId.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fields<'a> {
    pub external: Option<&'a str>,
    pub website: Option<&'a str>,
    pub child: Option<&'a str>,
}

const PARENT: &str = "ParentId";

pub(crate) async fn read(ctx: &Context, wanted: Fields<'_>, budget: &Budget) -> Result<Accounts, RunError> {
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
    let Some(read) = PricedRead::start(ctx, soql, "Account", false, "Accounts").await? else {
        return Ok(Accounts::default());
    };
    // Fresh from the page's answer: no call; the page stands for the `/limits` read.
    let max_calls = budget.get_priced_by(ctx, 1).await?.available;
    if max_calls == 0 {
        return Err(RunError::OverBudget { needed: 1, left: 0 });
    }
    let needed = read.calls_left();
    if needed > max_calls - 1 {
        return Err(RunError::OverBudget { needed: needed + 1, left: max_calls });
    }
    let mut building = Building::default();
    read.each(|r| {
        let text = |f: Option<&str>| f.and_then(|f| r.get(f)).map(str::to_owned);
        building.push(AccountRow {
            id: text(Some("Id")).unwrap_or_default(),
            external_id: text(external_field),
            website: text(website_field),
            parent_id: text(Some(PARENT)),
            child_key: text(child_field),
        });
    })
    .await?;
    Ok(building.finish())
}
