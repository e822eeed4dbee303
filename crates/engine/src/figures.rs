//! Engagement figures as Salesforce field values: rounding, units and the configurable score.
//!
//! Values are rounded here, once, so that the same usage always gives the same JSON (and so
//! the same fingerprint): Percent fields take 0–100 with one decimal, counts are integers,
//! times are UTC ISO-8601 with milliseconds, as Salesforce writes them back.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::change::FieldName;
use crate::config::{FieldMap, Metric, ScoreConfig};
use crate::extract::AccountUsage;

/// The engagement score, 0–100: each configured term contributes
/// `weight × min(metric / target, 1)`, normalised by the sum of the weights.
pub fn score(config: &ScoreConfig, usage: &AccountUsage) -> f64 {
    let (mut sum, mut weights) = (0.0, 0.0);
    for (metric, term) in config.terms() {
        let value = match metric {
            Metric::ActiveVisitors => usage.active_visitors as f64,
            Metric::ActiveDays => usage.active_days as f64,
            Metric::Events => usage.events as f64,
            Metric::Minutes => usage.minutes as f64,
            Metric::FeatureAdoption => usage.feature_adoption(),
            Metric::GuideCompletion => usage.guide_completion(),
            Metric::LastActive | Metric::Score | Metric::UpdatedAt => continue,
        };
        if term.target > 0.0 && term.weight > 0.0 {
            sum += term.weight * (value / term.target).clamp(0.0, 1.0);
            weights += term.weight;
        }
    }
    if weights > 0.0 { round1(100.0 * sum / weights) } else { 0.0 }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn timestamp(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The mapped fields' values for one account, except the `updated_at` stamp, which only rides
/// along with a change (see [`crate::change::diff`]).
pub fn field_values(fields: &FieldMap, score_config: &ScoreConfig, usage: &AccountUsage) -> Vec<(FieldName, Value)> {
    fields
        .shared()
        .filter_map(|(metric, field)| {
            let value = match metric {
                Metric::ActiveVisitors => json!(usage.active_visitors),
                Metric::ActiveDays => json!(usage.active_days),
                Metric::Events => json!(usage.events),
                Metric::Minutes => json!(usage.minutes),
                Metric::FeatureAdoption => json!(round1(100.0 * usage.feature_adoption())),
                Metric::GuideCompletion => json!(round1(100.0 * usage.guide_completion())),
                Metric::LastActive => usage.last_active.map_or(Value::Null, timestamp),
                Metric::Score => json!(score(score_config, usage)),
                Metric::UpdatedAt => return None,
            };
            Some((field.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{STARTER, Template, load_str};

    #[test]
    fn every_record_names_its_fields_with_the_configs_names() {
        let config = load_str(STARTER, "usagesync.yaml").unwrap_or_else(|e| panic!("{e}"));
        let Template::EngagementScores(e) = &config.workflows["engagement"].template else { panic!("engagement") };
        let usage = |events| AccountUsage { events, ..Default::default() };
        let (a, b) = (field_values(&e.fields, &e.score, &usage(1)), field_values(&e.fields, &e.score, &usage(2)));
        assert_eq!(a.len(), 8, "every mapped field but the stamp");
        // Shared, not copied: a first run holds a change per matched record, each naming these.
        for ((fa, _), (fb, _)) in a.iter().zip(&b) {
            assert!(std::sync::Arc::ptr_eq(fa, fb), "{fa} is a copy");
        }
    }
}
