//! The Contacts a contact-engagement workflow links people to, kept in the store: each Contact's
//! Id and the field that links it (the visitor id field, or `Email`), so that a re-run asks
//! Salesforce only which Contacts changed since the last one instead of reading them all.
//!
//! The mirror is current at a point: the newest `SystemModstamp` accounted for. A run with a
//! mirror reads, in one `queryAll` (so deleted Contacts show), the Contacts stamped since then,
//! less an overlap: `SystemModstamp` is stamped when a transaction starts, so one that commits
//! late may carry an older stamp than one already read. Applying a change twice is harmless, so
//! nothing is remembered of the overlap. The Contacts this workflow itself updated come back too
//! (their stamp moved), so the run after a large write reads that many Contacts again; a run
//! after a quiet day makes one call.
//!
//! The whole set is read again when there is no mirror, when it was built for another field, or
//! when it is older than [`REREAD_AFTER`], so that what a query by stamp cannot see (a restore
//! from backup, a change of the integration user's visibility) is caught within a week.
//!
//! The mirror is kept deflated under a cursor of the workflow (cursor [`CURSOR`]); a dry run
//! reads it and leaves it as it was.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use salesforce::rest::describe::sf_datetime;
use salesforce::{Condition, SoqlQuery};
use serde::{Deserialize, Serialize};

use super::{Context, RunError};
use crate::sf_read::{PricedRead, Row};

/// The cursor's name.
pub const CURSOR: &str = "contact_links";
/// How old a mirror may get before the Contacts are read whole again.
pub const REREAD_AFTER: chrono::Duration = chrono::Duration::days(7);
/// How far before the mirror's stamp the change query starts (see the module's doc).
const OVERLAP: chrono::Duration = chrono::Duration::minutes(10);
const OBJECT: &str = "Contact";
const WHAT: &str = "Contacts to match people to";

/// What the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// The linking field the mirror holds.
    pub field: String,
    /// The newest `SystemModstamp` accounted for.
    pub at: Option<DateTime<Utc>>,
    /// When the Contacts were last read whole.
    pub read_at: DateTime<Utc>,
    /// Contact Id → the linking field's value, for every Contact where it is set.
    pub links: BTreeMap<String, String>,
}

impl Mirror {
    /// Applies one Contact as a query returned it: gone (deleted, or the field cleared) or
    /// linked by its current value. Returns whether the mirror changed.
    fn apply(&mut self, row: &Row<'_>) -> bool {
        let Some(id) = row.get("Id") else { return false };
        let linked = match row.get(&self.field).filter(|_| row.get("IsDeleted") != Some("true")) {
            Some(key) => self.links.insert(id.to_owned(), key.to_owned()).as_deref() != Some(key),
            None => self.links.remove(id).is_some(),
        };
        let at = row.get("SystemModstamp").and_then(|s| sf_datetime::parse(s).ok());
        let newer = at > self.at;
        self.at = self.at.max(at);
        linked || newer
    }

    fn encode(&self) -> Option<String> {
        let json = serde_json::to_vec(self).ok()?;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&json).ok()?;
        Some(base64::engine::general_purpose::STANDARD.encode(z.finish().ok()?))
    }

    /// An unreadable cursor is as good as none: the Contacts are read whole again.
    fn decode(text: &str) -> Option<Mirror> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(bytes.as_slice()).read_to_end(&mut json).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// Every Contact with `field` set, by Id: from the stored mirror and the Contacts changed since
/// it, or read whole (see the module's doc). Stores the result unless `dry_run`.
///
/// # Errors
/// Salesforce and store failures; a field that is not a SOQL identifier.
pub(crate) async fn gather(
    ctx: &Context,
    workflow: &str,
    field: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<BTreeMap<String, String>, RunError> {
    let field = salesforce::soql::field(field)
        .map_err(|e| RunError::Salesforce { what: WHAT, source: salesforce::Error::Soql(e) })?;
    let stored = ctx.store.cursor(workflow, CURSOR).await?;
    let current = stored
        .as_deref()
        .and_then(Mirror::decode)
        .filter(|m| m.field == field && now - m.read_at < REREAD_AFTER)
        .and_then(|m| Some((m.at?, m)));
    let mirror = match current {
        Some((at, mut mirror)) => {
            let query = SoqlQuery::select(["Id", field, "IsDeleted", "SystemModstamp"], OBJECT)
                .filter(Condition::ge("SystemModstamp", at - OVERLAP));
            // Stored again only when a link or the stamp moved (no copy of the mirror to compare).
            let mut changed = false;
            read(ctx, query, true, |row| changed |= mirror.apply(&row)).await?;
            if !changed {
                return Ok(mirror.links);
            }
            mirror
        }
        None => {
            let query = SoqlQuery::select(["Id", field, "SystemModstamp"], OBJECT)
                .filter(Condition::ne(field, salesforce::soql::Literal::Null));
            let mut mirror = Mirror { field: field.to_owned(), at: None, read_at: now, links: BTreeMap::new() };
            read(ctx, query, false, |row| {
                mirror.apply(&row);
            })
            .await?;
            mirror
        }
    };
    if !dry_run && let Some(text) = mirror.encode() {
        // A run holding the workflow's lease is the only writer; a lost race only means the next
        // run reads a little more.
        ctx.store.advance_cursor(workflow, CURSOR, stored.as_deref(), &text).await?;
    }
    Ok(mirror.links)
}

/// Every row of `query`, REST pages or one Bulk query, whichever costs fewer calls.
async fn read(
    ctx: &Context,
    query: SoqlQuery,
    include_deleted: bool,
    each: impl FnMut(Row<'_>),
) -> Result<(), RunError> {
    let soql = query
        .build()
        .map_err(|e| RunError::Salesforce { what: WHAT, source: salesforce::Error::InvalidInput(e.to_string()) })?;
    match PricedRead::start(ctx, soql, include_deleted, WHAT).await? {
        Some(read) => read.each(each).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changes_apply_idempotently_and_the_mirror_round_trips() {
        let t = |s: &str| sf_datetime::parse(s).ok();
        let mut m = Mirror { field: "Email".into(), ..Mirror::default() };
        let rows = [
            json!({"Id": "003A", "Email": "a@x.test", "SystemModstamp": "2026-12-01T10:00:00.000+0000"}),
            json!({"Id": "003B", "Email": "b@x.test", "SystemModstamp": "2026-12-01T11:00:00.000+0000"}),
            json!({"Id": "003B", "Email": "b@x.test", "IsDeleted": true, "SystemModstamp": "2026-12-01T12:00:00.000+0000"}),
            json!({"Id": "003A", "Email": null, "SystemModstamp": "2026-12-01T09:00:00.000+0000"}),
            json!({"Id": "003C", "Email": "c@x.test", "SystemModstamp": "2026-12-01T08:00:00.000+0000"}),
        ];
        let mut changed = Vec::new();
        for r in rows.iter().chain(rows.iter()) {
            let serde_json::Value::Object(r) = r else { unreachable!() };
            changed.push(m.apply(&Row::Json(r)));
        }
        assert!(changed[..5].iter().all(|c| *c), "{changed:?}");
        // A row already applied, with no newer stamp, changes nothing.
        let serde_json::Value::Object(c) = &rows[4] else { unreachable!() };
        assert!(!m.apply(&Row::Json(c)));
        assert_eq!(m.links, BTreeMap::from([("003C".to_owned(), "c@x.test".to_owned())]));
        assert_eq!(m.at, t("2026-12-01T12:00:00.000+0000"), "the newest stamp, whatever the order");
        let text = m.encode().unwrap();
        assert_eq!(Mirror::decode(&text), Some(m));
        assert_eq!(Mirror::decode("not a mirror"), None);
    }
}
