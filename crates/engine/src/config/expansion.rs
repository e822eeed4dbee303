//! The expansion-opportunity template's settings: the adoption milestones, the Opportunity (and
//! Task) created when an account crosses one, and the rule that finds open expansion
//! Opportunities already there, people's included.
//!
//! Accounts are matched with the same keys engagement-scores uses (`matching`…); this template's
//! own keys live under `expansion:`.

use serde::{Deserialize, Serialize};

use super::alert::DEFAULT_KEY_FIELD;
use super::validate::{Errors, account_side, salesforce_field};
use super::{EngagementConfig, wire};

pub const DEFAULT_OPPORTUNITY_NAME: &str = "{account} - expansion: {milestone}";
pub const DEFAULT_OPPORTUNITY_TYPE: &str = "Existing Customer - Upgrade";
pub const DEFAULT_STAGE: &str = "Prospecting";
pub const DEFAULT_CLOSE_IN_DAYS: u32 = 60;
pub const DEFAULT_MILESTONE_FIELD: &str = "Expansion_Milestone__c";

/// expansion-opportunity: an Opportunity and a Task per account and crossed milestone, at most
/// one open per account and milestone.
#[derive(Debug, Clone)]
pub struct ExpansionConfig {
    /// Matching (the score is unused).
    pub accounts: EngagementConfig,
    pub milestones: Vec<Milestone>,
    pub opportunity: OpportunityTemplate,
    /// A SOQL condition on Opportunity, `{milestone}` replaced by the milestone's name: an open
    /// Opportunity of the account meeting it counts as the expansion already under way.
    pub existing: String,
    pub key_field: String,
    /// Also create a Task for the owner saying why.
    pub task: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Milestone {
    /// `[a-z0-9-]+`, unique; goes into keys, names and the milestone field.
    pub name: String,
    pub kind: MilestoneKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MilestoneKind {
    /// At least `min_visitors` identified visitors used any of `features` in the window.
    FeatureVisitors { features: Vec<String>, min_visitors: u64 },
    /// At least `min_daily_events` events a day on `days` consecutive days in the window.
    SustainedUsage { min_daily_events: u64, days: u32 },
    /// Active visitors are at least `min_share` of the number in the Account's `seats_field`.
    SeatShare { seats_field: String, min_share: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpportunityTemplate {
    /// `{account}` (Account name) and `{milestone}` are replaced.
    pub name: String,
    pub opportunity_type: String,
    pub stage: String,
    pub close_in_days: u32,
    /// `base + per_active_visitor × active visitors`; no Amount when both are unset.
    pub amount_base: Option<f64>,
    pub amount_per_active_visitor: Option<f64>,
    /// Where the milestone's name is written; none when unset.
    pub milestone_field: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpansionWire {
    pub milestones: Option<Vec<MilestoneWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opportunity: Option<OpportunityWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MilestoneWire {
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_visitors: Option<FeatureVisitorsWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained_usage: Option<SustainedWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat_share: Option<SeatShareWire>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeatureVisitorsWire {
    pub features: Option<Vec<String>>,
    pub min_visitors: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SustainedWire {
    pub min_daily_events: Option<u64>,
    pub days: Option<u32>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeatShareWire {
    pub seats_field: Option<String>,
    pub min_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpportunityWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub opportunity_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_base: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_per_active_visitor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milestone_field: Option<String>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<ExpansionConfig> {
    let accounts = account_side(key, w, errors, false);
    let ek = format!("{key}.expansion");
    let e = errors.required(&w.expansion, &ek)?;
    let k = |leaf: &str| format!("{ek}.{leaf}");
    let mut ok = true;
    let mut milestones = Vec::new();
    if let Some(list) = errors.required(&e.milestones, &k("milestones")) {
        if list.is_empty() {
            ok = false;
            errors.push(&k("milestones"), "give at least one milestone");
        }
        for (i, m) in list.iter().enumerate() {
            match milestone(&format!("{ek}.milestones[{i}]"), m, errors) {
                Some(m) if milestones.iter().any(|x: &Milestone| x.name == m.name) => {
                    ok = false;
                    errors
                        .push(&format!("{ek}.milestones[{i}].name"), format!("milestone `{}` is listed twice", m.name));
                }
                Some(m) => milestones.push(m),
                None => ok = false,
            }
        }
    } else {
        ok = false;
    }
    let default_opp = OpportunityWire::default();
    let o = e.opportunity.as_ref().unwrap_or(&default_opp);
    let ok_ = |k: &str| format!("{ek}.opportunity.{k}");
    let text = |v: &Option<String>, default: &str, key: &str, errors: &mut Errors| -> Option<String> {
        let v = v.clone().unwrap_or_else(|| default.to_owned());
        if v.trim().is_empty() {
            errors.push(key, "must not be empty");
            None
        } else {
            Some(v)
        }
    };
    let name = text(&o.name, DEFAULT_OPPORTUNITY_NAME, &ok_("name"), errors);
    let opportunity_type = text(&o.opportunity_type, DEFAULT_OPPORTUNITY_TYPE, &ok_("type"), errors);
    let stage = text(&o.stage, DEFAULT_STAGE, &ok_("stage"), errors);
    let close_in_days = o.close_in_days.unwrap_or(DEFAULT_CLOSE_IN_DAYS);
    if !(1..=730).contains(&close_in_days) {
        ok = false;
        errors.push(&ok_("close_in_days"), format!("must be between 1 and 730 (got {close_in_days})"));
    }
    for (leaf, v) in [("amount_base", o.amount_base), ("amount_per_active_visitor", o.amount_per_active_visitor)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            ok = false;
            errors.push(&ok_(leaf), format!("must be 0 or more (got {v})"));
        }
    }
    let milestone_field = match &o.milestone_field {
        Some(f) if f.is_empty() => None,
        Some(f) => Some(salesforce_field(f, &ok_("milestone_field"), errors)?),
        None => Some(DEFAULT_MILESTONE_FIELD.to_owned()),
    };
    let existing = match (&e.existing, &milestone_field) {
        (Some(x), _) if !x.trim().is_empty() => Some(x.clone()),
        (Some(_), _) => {
            errors.push(&k("existing"), "must not be empty");
            None
        }
        (None, Some(f)) => Some(format!("{f} = '{{milestone}}'")),
        (None, None) => {
            errors.push(
                &k("existing"),
                "required when `opportunity.milestone_field` is empty: say how to find open expansion Opportunities",
            );
            None
        }
    };
    let key_field = match &e.key_field {
        Some(f) => salesforce_field(f, &k("key_field"), errors)?,
        None => DEFAULT_KEY_FIELD.to_owned(),
    };
    Some(ExpansionConfig {
        accounts: accounts?,
        milestones,
        opportunity: OpportunityTemplate {
            name: name?,
            opportunity_type: opportunity_type?,
            stage: stage?,
            close_in_days,
            amount_base: o.amount_base,
            amount_per_active_visitor: o.amount_per_active_visitor,
            milestone_field,
        },
        existing: existing?,
        key_field,
        task: e.task.unwrap_or(true),
    })
    .filter(|_| ok)
}

fn milestone(key: &str, m: &MilestoneWire, errors: &mut Errors) -> Option<Milestone> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let name = errors.required(&m.name, &k("name")).and_then(|n| {
        let ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            errors.push(&k("name"), format!("milestone name `{n}` must use only a-z, 0-9 and -"));
        }
        ok.then(|| n.clone())
    });
    let given = [m.feature_visitors.is_some(), m.sustained_usage.is_some(), m.seat_share.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        errors.push(key, "give exactly one of `feature_visitors`, `sustained_usage`, `seat_share`");
        return None;
    }
    let kind = if let Some(f) = &m.feature_visitors {
        let fk = k("feature_visitors");
        let features = errors.required(&f.features, &format!("{fk}.features")).cloned();
        let min_visitors = errors.required(&f.min_visitors, &format!("{fk}.min_visitors")).copied();
        let (features, min_visitors) = (features?, min_visitors?);
        if features.is_empty() || features.iter().any(|f| f.trim().is_empty()) {
            errors.push(&format!("{fk}.features"), "give at least one Pendo feature id, none empty");
            return None;
        }
        if min_visitors == 0 {
            errors.push(&format!("{fk}.min_visitors"), "must be at least 1");
            return None;
        }
        MilestoneKind::FeatureVisitors { features, min_visitors }
    } else if let Some(s) = &m.sustained_usage {
        let sk = k("sustained_usage");
        let min_daily_events = errors.required(&s.min_daily_events, &format!("{sk}.min_daily_events")).copied();
        let days = errors.required(&s.days, &format!("{sk}.days")).copied();
        let (min_daily_events, days) = (min_daily_events?, days?);
        if days == 0 || days > 180 {
            errors.push(&format!("{sk}.days"), format!("must be between 1 and 180 (got {days})"));
            return None;
        }
        MilestoneKind::SustainedUsage { min_daily_events, days }
    } else {
        let s = m.seat_share.as_ref()?;
        let sk = k("seat_share");
        let seats_field = errors
            .required(&s.seats_field, &format!("{sk}.seats_field"))
            .and_then(|f| salesforce_field(f, &format!("{sk}.seats_field"), errors));
        let min_share = errors.required(&s.min_share, &format!("{sk}.min_share")).copied();
        let (seats_field, min_share) = (seats_field?, min_share?);
        if !(min_share > 0.0 && min_share.is_finite()) {
            errors.push(&format!("{sk}.min_share"), format!("must be more than 0 (got {min_share})"));
            return None;
        }
        MilestoneKind::SeatShare { seats_field, min_share }
    };
    Some(Milestone { name: name?, kind })
}

pub(crate) fn to_wire(c: &ExpansionConfig) -> ExpansionWire {
    let milestones = c
        .milestones
        .iter()
        .map(|m| {
            let mut w = MilestoneWire { name: Some(m.name.clone()), ..MilestoneWire::default() };
            match &m.kind {
                MilestoneKind::FeatureVisitors { features, min_visitors } => {
                    w.feature_visitors = Some(FeatureVisitorsWire {
                        features: Some(features.clone()),
                        min_visitors: Some(*min_visitors),
                    });
                }
                MilestoneKind::SustainedUsage { min_daily_events, days } => {
                    w.sustained_usage =
                        Some(SustainedWire { min_daily_events: Some(*min_daily_events), days: Some(*days) });
                }
                MilestoneKind::SeatShare { seats_field, min_share } => {
                    w.seat_share =
                        Some(SeatShareWire { seats_field: Some(seats_field.clone()), min_share: Some(*min_share) });
                }
            }
            w
        })
        .collect();
    let o = &c.opportunity;
    ExpansionWire {
        milestones: Some(milestones),
        opportunity: Some(OpportunityWire {
            name: Some(o.name.clone()),
            opportunity_type: Some(o.opportunity_type.clone()),
            stage: Some(o.stage.clone()),
            close_in_days: Some(o.close_in_days),
            amount_base: o.amount_base,
            amount_per_active_visitor: o.amount_per_active_visitor,
            milestone_field: Some(o.milestone_field.clone().unwrap_or_default()),
        }),
        existing: Some(c.existing.clone()),
        key_field: Some(c.key_field.clone()),
        task: Some(c.task),
    }
}
