//! The engagement-drop-alert template's settings: when an account's engagement score counts as
//! dropped, when it counts as recovered, and what record tells a person about it.
//!
//! The accounts and their score come from the same keys engagement-scores uses (`matching`,
//! `score`, `core_features`); this template's own keys live under `alert:`.

use serde::{Deserialize, Serialize};

use super::validate::{Errors, account_side, salesforce_field};
use super::{EngagementConfig, wire};

/// Default for [`DropAlertConfig::key_field`]: the org's external-ID field for usagesync keys.
pub const DEFAULT_KEY_FIELD: &str = "Usagesync_Key__c";
/// Default for [`DropAlertConfig::hysteresis`], in score points.
pub const DEFAULT_HYSTERESIS: f64 = 10.0;
/// Default for [`DropAlertConfig::due_in_days`].
pub const DEFAULT_DUE_IN_DAYS: u32 = 3;

/// engagement-drop-alert: a high-priority Task (and optionally a Case) when an account's score
/// falls below `below` or by `drop_share` against the previous window; one per episode.
#[derive(Debug, Clone)]
pub struct DropAlertConfig {
    /// Matching and the score (its `fields` map is empty: this template writes no Account).
    pub accounts: EngagementConfig,
    /// Alert when the score (0–100) is below this.
    pub below: Option<f64>,
    /// Alert when the score fell by at least this share of the previous window's, in (0, 1].
    pub drop_share: Option<f64>,
    /// Points above the alert level the score must climb back to before the account re-arms.
    pub hysteresis: f64,
    /// A User lookup on the Account (e.g. `CSM__c`) naming who gets the alert; the Account
    /// owner when empty or unset.
    pub owner_field: Option<String>,
    /// The external-ID field holding each alert's deterministic key.
    pub key_field: String,
    /// Also open a Case.
    pub create_case: bool,
    /// The Task's due date, days after the run.
    pub due_in_days: u32,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_case: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_in_days: Option<u32>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<DropAlertConfig> {
    let accounts = account_side(key, w, errors, false);
    let ak = format!("{key}.alert");
    let a = errors.required(&w.alert, &ak)?;
    let k = |leaf: &str| format!("{ak}.{leaf}");
    let mut ok = true;
    if let Some(b) = a.below
        && !(b.is_finite() && (0.0..=100.0).contains(&b))
    {
        ok = false;
        errors.push(&k("below"), format!("is a score from 0 to 100 (got {b})"));
    }
    if let Some(d) = a.drop_share
        && !(d > 0.0 && d <= 1.0)
    {
        ok = false;
        errors.push(&k("drop_share"), format!("must be more than 0 and at most 1 (got {d})"));
    }
    if a.below.is_none() && a.drop_share.is_none() {
        ok = false;
        errors.push(&ak, "give `below` (a score), `drop_share` (a relative drop) or both: nothing would alert");
    }
    let hysteresis = a.hysteresis.unwrap_or(DEFAULT_HYSTERESIS);
    if !(hysteresis.is_finite() && (0.0..=100.0).contains(&hysteresis)) {
        ok = false;
        errors.push(&k("hysteresis"), format!("is in score points, 0 to 100 (got {hysteresis})"));
    }
    let owner_field = match &a.owner_field {
        Some(f) => Some(salesforce_field(f, &k("owner_field"), errors)?),
        None => None,
    };
    let key_field = match &a.key_field {
        Some(f) => salesforce_field(f, &k("key_field"), errors)?,
        None => DEFAULT_KEY_FIELD.to_owned(),
    };
    let due_in_days = a.due_in_days.unwrap_or(DEFAULT_DUE_IN_DAYS);
    if due_in_days > 365 {
        ok = false;
        errors.push(&k("due_in_days"), format!("must be at most 365 (got {due_in_days})"));
    }
    Some(DropAlertConfig {
        accounts: accounts?,
        below: a.below,
        drop_share: a.drop_share,
        hysteresis,
        owner_field,
        key_field,
        create_case: a.create_case.unwrap_or(false),
        due_in_days,
    })
    .filter(|_| ok)
}

pub(crate) fn to_wire(c: &DropAlertConfig) -> AlertWire {
    AlertWire {
        below: c.below,
        drop_share: c.drop_share,
        hysteresis: Some(c.hysteresis),
        owner_field: c.owner_field.clone(),
        key_field: Some(c.key_field.clone()),
        create_case: Some(c.create_case),
        due_in_days: Some(c.due_in_days),
    }
}
