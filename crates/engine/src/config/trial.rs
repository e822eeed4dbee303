//! The trial-usage template's settings: which open Opportunities are trials, which Opportunity
//! fields take the trial's usage, and the milestone → stage map that advances StageName.
//!
//! Accounts are matched with the same keys engagement-scores uses (`matching`, `core_features`
//! — the features counted as explored); this template's own keys live under `trial:`.

use serde::{Deserialize, Serialize};

use super::validate::{Errors, account_side, salesforce_field};
use super::{EngagementConfig, wire};

pub const DEFAULT_SELECT: &str = "Type = 'Trial' OR Is_POC__c = true";
/// The standard Opportunity stages, in order of progress.
pub const DEFAULT_STAGE_ORDER: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
];

/// trial-usage: usage onto trial Opportunities, and StageName advanced by milestones.
#[derive(Debug, Clone)]
pub struct TrialConfig {
    /// Matching; `core_features` are the features counted as explored.
    pub accounts: EngagementConfig,
    /// SOQL condition selecting trial Opportunities among the open ones.
    pub select: String,
    pub fields: TrialFields,
    /// In the order the map is checked; the furthest reached stage wins.
    pub stages: Vec<StageRule>,
    /// Stages in order of progress; StageName only ever moves forward along it, and a stage not
    /// in it is never changed.
    pub stage_order: Vec<String>,
    /// The Pendo guide whose steps `drop_off_step` reports; required with that field.
    pub onboarding_guide: Option<String>,
}

/// Opportunity field per trial figure; each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialFields {
    pub active_users: Option<String>,
    pub features_explored: Option<String>,
    pub guides_completed: Option<String>,
    pub last_active: Option<String>,
    /// "step K of N" of `onboarding_guide` where the account's visitors most often gave up.
    pub drop_off_step: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialMetric {
    ActiveUsers,
    FeaturesExplored,
    GuidesCompleted,
}

impl TrialMetric {
    pub const ALL: &'static [TrialMetric] =
        &[TrialMetric::ActiveUsers, TrialMetric::FeaturesExplored, TrialMetric::GuidesCompleted];

    pub fn key(self) -> &'static str {
        match self {
            TrialMetric::ActiveUsers => "active_users",
            TrialMetric::FeaturesExplored => "features_explored",
            TrialMetric::GuidesCompleted => "guides_completed",
        }
    }
}

/// When `metric` reaches `at_least`, the Opportunity belongs at least in `stage`.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRule {
    pub metric: TrialMetric,
    pub at_least: u64,
    pub stage: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrialWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<TrialFieldsWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageRuleWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_order: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboarding_guide: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrialFieldsWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_users: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_explored: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guides_completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_off_step: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageRuleWire {
    pub metric: Option<String>,
    pub at_least: Option<u64>,
    pub stage: Option<String>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<TrialConfig> {
    let accounts = account_side(key, w, errors, false);
    let tk = format!("{key}.trial");
    let t = errors.required(&w.trial, &tk)?;
    let k = |leaf: &str| format!("{tk}.{leaf}");
    let mut ok = true;
    let select = t.select.clone().unwrap_or_else(|| DEFAULT_SELECT.to_owned());
    if select.trim().is_empty() {
        ok = false;
        errors.push(&k("select"), "must not be empty");
    }
    let default_fields = TrialFieldsWire::default();
    let f = t.fields.as_ref().unwrap_or(&default_fields);
    let mut field = |v: &Option<String>, leaf: &str| -> Option<String> {
        let name = v.as_ref()?;
        let checked = salesforce_field(name, &format!("{tk}.fields.{leaf}"), errors);
        if checked.is_none() {
            ok = false;
        }
        checked
    };
    let fields = TrialFields {
        active_users: field(&f.active_users, "active_users"),
        features_explored: field(&f.features_explored, "features_explored"),
        guides_completed: field(&f.guides_completed, "guides_completed"),
        last_active: field(&f.last_active, "last_active"),
        drop_off_step: field(&f.drop_off_step, "drop_off_step"),
    };
    let onboarding_guide = match &t.onboarding_guide {
        Some(g) if g.trim().is_empty() => {
            ok = false;
            errors.push(&k("onboarding_guide"), "must not be empty");
            None
        }
        other => other.clone(),
    };
    if fields.drop_off_step.is_some() && onboarding_guide.is_none() {
        ok = false;
        errors.push(
            &k("onboarding_guide"),
            "required with `fields.drop_off_step`: the Pendo guide id whose steps it reports",
        );
    }
    let stage_order: Vec<String> =
        t.stage_order.clone().unwrap_or_else(|| DEFAULT_STAGE_ORDER.iter().map(|s| (*s).to_owned()).collect());
    if stage_order.is_empty() {
        ok = false;
        errors.push(&k("stage_order"), "give the stages in order of progress");
    }
    let mut stages = Vec::new();
    for (i, r) in t.stages.iter().flatten().enumerate() {
        let rk = |leaf: &str| format!("{tk}.stages[{i}].{leaf}");
        let metric = errors.required(&r.metric, &rk("metric")).and_then(|m| {
            let found = TrialMetric::ALL.iter().copied().find(|x| x.key() == m);
            if found.is_none() {
                errors.push(
                    &rk("metric"),
                    format!("unknown metric `{m}`; expected one of: active_users, features_explored, guides_completed"),
                );
            }
            found
        });
        let at_least = errors.required(&r.at_least, &rk("at_least")).copied();
        let stage = errors.required(&r.stage, &rk("stage")).and_then(|s| {
            if stage_order.contains(s) {
                Some(s.clone())
            } else {
                errors.push(&rk("stage"), format!("`{s}` is not in `stage_order`"));
                None
            }
        });
        match (metric, at_least, stage) {
            (Some(metric), Some(at_least), Some(stage)) => stages.push(StageRule { metric, at_least, stage }),
            _ => ok = false,
        }
    }
    if fields == TrialFields::default() && stages.is_empty() {
        ok = false;
        errors.push(
            &tk,
            "map at least one field under `fields` or one rule under `stages`: the workflow would write nothing",
        );
    }
    Some(TrialConfig { accounts: accounts?, select, fields, stages, stage_order, onboarding_guide }).filter(|_| ok)
}

pub(crate) fn to_wire(c: &TrialConfig) -> TrialWire {
    TrialWire {
        select: Some(c.select.clone()),
        fields: Some(TrialFieldsWire {
            active_users: c.fields.active_users.clone(),
            features_explored: c.fields.features_explored.clone(),
            guides_completed: c.fields.guides_completed.clone(),
            last_active: c.fields.last_active.clone(),
            drop_off_step: c.fields.drop_off_step.clone(),
        }),
        stages: Some(
            c.stages
                .iter()
                .map(|r| StageRuleWire {
                    metric: Some(r.metric.key().to_owned()),
                    at_least: Some(r.at_least),
                    stage: Some(r.stage.clone()),
                })
                .collect(),
        ),
        stage_order: Some(c.stage_order.clone()),
        onboarding_guide: c.onboarding_guide.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{STARTER, Template, load_str};

    fn errors_of(text: &str) -> Vec<(String, String)> {
        match load_str(text, "t.yaml") {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.errors.into_iter().map(|e| (e.key, e.message)).collect(),
        }
    }

    #[test]
    fn the_example_record_creating_workflows_load_with_their_defaults() {
        let config = load_str(STARTER, "example.yaml").unwrap();
        let Template::EngagementDropAlert(a) = &config.workflows["churn-alerts"].template else { panic!() };
        assert_eq!((a.below, a.drop_share, a.owner_field.as_deref()), (Some(20.0), Some(0.5), Some("CSM__c")));
        let Template::ExpansionOpportunity(x) = &config.workflows["expansion"].template else { panic!() };
        assert_eq!(x.milestones.len(), 3);
        assert_eq!(x.existing, "Expansion_Milestone__c = '{milestone}'");
        let Template::TrialUsage(t) = &config.workflows["trials"].template else { panic!() };
        assert_eq!(t.stages.len(), 2);
        assert_eq!(t.stage_order[0], "Prospecting");
        // What `config show` prints loads back to the same thing.
        let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap();
        assert_eq!(again.workflows.len(), config.workflows.len());
    }

    #[test]
    fn bad_values_are_reported_with_their_keys() {
        let text = STARTER
            .replace("drop_share: 0.5 ", "drop_share: 1.5 ")
            .replace(
                "min_visitors: 5 }",
                "min_visitors: 5 }\n          seat_share: { seats_field: X__c, min_share: 1 }",
            )
            .replace("stage: Needs Analysis }", "stage: Closed Won }");
        let errors = errors_of(&text);
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"workflows.churn-alerts.alert.drop_share"), "{errors:?}");
        assert!(keys.contains(&"workflows.expansion.expansion.milestones[0]"), "{errors:?}");
        assert!(keys.contains(&"workflows.trials.trial.stages[1].stage"), "{errors:?}");
    }

    #[test]
    fn a_key_of_another_template_is_an_error() {
        let text = STARTER.replace("    trial:\n", "    alert: { below: 10 }\n    trial:\n");
        let errors = errors_of(&text);
        assert!(errors.iter().any(|(k, m)| k == "workflows.trials.alert" && m.contains("not used")), "{errors:?}");
    }
}
