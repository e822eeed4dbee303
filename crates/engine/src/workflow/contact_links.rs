//! The Contacts a contact-engagement workflow links people to: each Contact's Id and the field
//! that links it (the visitor id field, or `Email`), kept in the store as a [`super::mirror`]
//! (cursor [`CURSOR`]), so that a re-run asks Salesforce only which Contacts changed since the
//! last one instead of reading them all. The Contacts this workflow itself updated come back
//! once (their stamp moved), so the run after a large write reads that many Contacts again; a
//! run after a quiet day makes one call.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::mirror::{self, Membership, Spec};
use super::{Context, RunError};

/// The cursor's name.
pub const CURSOR: &str = "contact_links";
const WHAT: &str = "Contacts to match people to";

/// Every Contact with `field` set, by Id: from the stored mirror and the Contacts changed since
/// it, or read whole (see [`super::mirror`]). Stores the result unless `dry_run`.
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
    let spec = Spec {
        cursor: CURSOR,
        object: "Contact",
        what: WHAT,
        fields: vec![field.to_owned()],
        membership: Membership::Field(field.to_owned()),
        out_when: None,
        follows_own: false,
    };
    let held = mirror::gather(ctx, workflow, spec, now).await?;
    held.store(workflow, dry_run).await?;
    Ok(held.mirror.members.into_iter().map(|(id, m)| (id, m.values.into_iter().next().unwrap_or_default())).collect())
}
