//! Signals: a condition over an account's or a person's usage, written by the user in CEL (the
//! Common Expression Language of Kubernetes validation rules and Envoy: typed, side-effect free,
//! not Turing-complete), so a team can alert on its own product's risk without a new template.
//! A person's condition names [`PERSON_VARIABLES`] instead.
//!
//! A condition sees the account's figures for the current window and, under `previous.`, for
//! the window before it: `score`, `active_visitors`, `active_days`, `events`, `minutes`,
//! `core_features_used`, `core_features_total`, `feature_adoption` (0–1), `guides_seen`,
//! `guides_completed`, `guide_completion` (0–1) and `days_since_last_active` (-1 when Pendo has
//! never seen the account), every one a decimal number. E.g. stalled adoption: `feature_adoption <= previous.feature_adoption
//! && feature_adoption < 0.5`.
//!
//! A condition is compiled and checked when the config loads: a syntax error, a name that is
//! not one of the above (with a "did you mean"), or a result that is not true/false is a config
//! error naming the file, line and key. Evaluating it costs no API call.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::extract::AccountUsage;

/// The figures a condition may name, each also under `previous.`.
pub const VARIABLES: &[&str] = &[
    "score",
    "active_visitors",
    "active_days",
    "events",
    "minutes",
    "core_features_used",
    "core_features_total",
    "feature_adoption",
    "guides_seen",
    "guides_completed",
    "guide_completion",
    "days_since_last_active",
];

/// The figures a condition over one person (a Pendo visitor) may name, each also under
/// `previous.`: their usage in the window, and `days_since_last_active` (whole days since the
/// last day with an event in this window or the one before; -1 when neither has one).
pub const PERSON_VARIABLES: &[&str] =
    &["active_days", "events", "minutes", "features_used", "guides_completed", "days_since_last_active"];

/// A compiled condition and the text it came from.
#[derive(Debug, Clone)]
pub struct Condition {
    text: String,
    program: Arc<cel::Program>,
    /// The figure the condition names first: what an alert's `{metric}` shows.
    metric: &'static str,
}

/// Why a condition could not be evaluated for one account.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("the condition `{condition}` failed: {message}")]
    Failed { condition: String, message: String },
    #[error("the condition `{condition}` gave {value}, not true or false")]
    NotABool { condition: String, value: String },
}

/// One window's figures for one account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub score: f64,
    pub usage: AccountUsage,
}

impl Figures {
    /// Every figure by name, as a double: one type for all, so `previous.score - score` and
    /// `events < previous.events / 2.0` need no conversions. (CEL compares ints with doubles,
    /// but its arithmetic does not mix them: `events / 2` is an error, `events / 2.0` is not.)
    pub fn values(&self, now: DateTime<Utc>) -> HashMap<String, f64> {
        let u = &self.usage;
        let idle = u.last_active.map_or(-1.0, |t| (now - t).num_days().max(0) as f64);
        [
            ("score", self.score),
            ("active_visitors", u.active_visitors as f64),
            ("active_days", u.active_days as f64),
            ("events", u.events as f64),
            ("minutes", u.minutes as f64),
            ("core_features_used", f64::from(u.core_features_used)),
            ("core_features_total", f64::from(u.core_features_total)),
            ("feature_adoption", u.feature_adoption()),
            ("guides_seen", u.guides_seen as f64),
            ("guides_completed", u.guides_completed as f64),
            ("guide_completion", u.guide_completion()),
            ("days_since_last_active", idle),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Condition {
    /// Compiles `text` and checks it against the figures a condition may name.
    ///
    /// # Errors
    /// A message for the config's error list: the syntax error, an unknown name (with the
    /// closest known one), or a result that is not true/false.
    pub fn compile(text: &str) -> Result<Condition, String> {
        let zero = Figures::default().values(DateTime::<Utc>::UNIX_EPOCH);
        Condition::compile_over(text, VARIABLES, &zero)
    }

    /// Compiles a condition over one person's figures ([`PERSON_VARIABLES`]).
    ///
    /// # Errors
    /// As [`Condition::compile`].
    pub fn compile_for_person(text: &str) -> Result<Condition, String> {
        let zero = PERSON_VARIABLES.iter().map(|v| ((*v).to_owned(), 0.0)).collect();
        Condition::compile_over(text, PERSON_VARIABLES, &zero)
    }

    fn compile_over(
        text: &str,
        variables: &'static [&'static str],
        zero: &HashMap<String, f64>,
    ) -> Result<Condition, String> {
        let program = cel::Program::compile(text).map_err(|e| {
            // The parser's message starts with its own "ERROR: <input>:" prefix and draws the
            // text again: the config error already names where it is.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default().trim_start_matches("ERROR: <input>:").to_owned();
            format!("is not a valid CEL expression: {first}")
        })?;
        let refs = program.references();
        for name in refs.variables() {
            if name != "previous" && !variables.contains(&name) {
                let hint = crate::preflight::closest(name, variables.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "names `{name}`, which is not a figure a condition can use{hint}; it can use {}, each also as previous.<name>",
                    variables.join(", ")
                ));
            }
        }
        let metric = first_figure(text, variables).unwrap_or(variables[0]);
        let condition = Condition { text: text.to_owned(), program: Arc::new(program), metric };
        // Every figure is a number, so a check with zeros finds a result of the wrong type (and
        // a `previous.` name that does not exist) before any run does.
        condition.holds_values(zero, zero).map_err(|e| match e {
            SignalError::NotABool { value, .. } => format!("must be true or false, but gives {value}"),
            SignalError::Failed { message, .. } if message.contains("Unsupported binary operator") => {
                format!("cannot be evaluated: {message} (figures are decimal numbers: write 1.0, not 1, in arithmetic)")
            }
            SignalError::Failed { message, .. } => format!("cannot be evaluated: {message}"),
        })?;
        Ok(condition)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The figure the condition names first (`score` when it names none).
    pub fn metric(&self) -> &'static str {
        self.metric
    }

    /// Whether the condition holds for an account's `current` and `previous` windows.
    ///
    /// # Errors
    /// A failure of the expression itself (e.g. a name under `previous.` that does not exist).
    pub fn holds(&self, current: &Figures, previous: &Figures, now: DateTime<Utc>) -> Result<bool, SignalError> {
        self.holds_values(&current.values(now), &previous.values(now))
    }

    /// Whether the condition holds for figures given by name, now and in the previous window.
    ///
    /// # Errors
    /// As [`Condition::holds`].
    pub fn holds_values(
        &self,
        current: &HashMap<String, f64>,
        previous: &HashMap<String, f64>,
    ) -> Result<bool, SignalError> {
        let failed = |message: String| SignalError::Failed { condition: self.text.clone(), message };
        let mut ctx = cel::Context::default();
        for (name, value) in current {
            ctx.add_variable(name.clone(), *value).map_err(|e| failed(e.to_string()))?;
        }
        ctx.add_variable("previous", previous.clone()).map_err(|e| failed(e.to_string()))?;
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(SignalError::NotABool { condition: self.text.clone(), value: format!("{other:?}") }),
            Err(e) => Err(failed(e.to_string())),
        }
    }
}

/// The figure named earliest in `text`, as a whole word (`events` is not found in
/// `events_total`, and `previous.events` counts as `events`).
fn first_figure(text: &str, variables: &'static [&'static str]) -> Option<&'static str> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    variables
        .iter()
        .filter_map(|v| {
            text.match_indices(v)
                .find(|(i, _)| {
                    let before = text[..*i].chars().next_back();
                    let after = text[i + v.len()..].chars().next();
                    !before.is_some_and(word) && !after.is_some_and(word)
                })
                .map(|(i, _)| (i, *v))
        })
        .min()
        .map(|(_, v)| v)
}

/// One person's figures by name, for [`Condition::holds_values`]: `usage` in the window, and
/// the days since `last_active_day` (epoch milliseconds; -1 when unknown).
pub fn person_values(
    usage: &crate::extract::VisitorUsage,
    last_active_day: Option<i64>,
    now: DateTime<Utc>,
) -> HashMap<String, f64> {
    let idle = last_active_day
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(-1.0, |t| (now - t).num_days().max(0) as f64);
    [
        ("active_days", usage.active_days as f64),
        ("events", usage.events as f64),
        ("minutes", usage.minutes as f64),
        ("features_used", usage.features_used as f64),
        ("guides_completed", usage.guides_completed as f64),
        ("days_since_last_active", idle),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Each figure's value by name (and `previous.<name>`) as alert text shows it.
pub fn placeholder_values(current: &Figures, previous: &Figures, now: DateTime<Utc>) -> HashMap<String, f64> {
    let mut out = current.values(now);
    out.extend(previous.values(now).into_iter().map(|(k, v)| (format!("previous.{k}"), v)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(score: f64, used: u32, total: u32) -> Figures {
        Figures {
            score,
            usage: AccountUsage { core_features_used: used, core_features_total: total, ..Default::default() },
        }
    }

    #[test]
    fn stalled_adoption_holds_only_while_adoption_does_not_rise() {
        let c = Condition::compile("feature_adoption <= previous.feature_adoption && feature_adoption < 0.5").unwrap();
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(c.holds(&figures(50.0, 2, 10), &figures(50.0, 2, 10), now).unwrap());
        assert!(!c.holds(&figures(50.0, 3, 10), &figures(50.0, 2, 10), now).unwrap(), "adoption rose");
        assert!(!c.holds(&figures(50.0, 6, 10), &figures(50.0, 7, 10), now).unwrap(), "above half");
    }

    #[test]
    fn arithmetic_mixes_whole_and_fractional_figures() {
        let c = Condition::compile("previous.score - score >= 20 && events / 2.0 < previous.events").unwrap();
        let mut cur = figures(30.0, 0, 0);
        cur.usage.events = 10;
        let mut prev = figures(55.5, 0, 0);
        prev.usage.events = 6;
        assert!(c.holds(&cur, &prev, DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()).unwrap());
    }

    #[test]
    fn days_since_last_active_counts_whole_days_and_is_negative_when_never_seen() {
        let c = Condition::compile("days_since_last_active >= 14").unwrap();
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let mut f = figures(0.0, 0, 0);
        assert!(!c.holds(&f, &f, now).unwrap(), "never seen is -1");
        f.usage.last_active = Some(now - chrono::Duration::days(15));
        assert!(c.holds(&f, &f, now).unwrap());
    }

    #[test]
    fn the_metric_is_the_figure_named_first() {
        let c = Condition::compile("previous.feature_adoption > feature_adoption && events > 0.0").unwrap();
        assert_eq!(c.metric(), "feature_adoption");
        assert_eq!(Condition::compile("true").unwrap().metric(), "score");
    }

    #[test]
    fn a_persons_condition_names_person_figures_only() {
        let c = Condition::compile_for_person("days_since_last_active >= 14.0 && previous.active_days > 0.0").unwrap();
        assert_eq!(c.metric(), "days_since_last_active");
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let usage = crate::extract::VisitorUsage { active_days: 2, ..Default::default() };
        let old = (now - chrono::Duration::days(20)).timestamp_millis();
        let (cur, prev) = (person_values(&usage, Some(old), now), person_values(&usage, None, now));
        assert_eq!(cur["days_since_last_active"], 20.0);
        assert_eq!(prev["days_since_last_active"], -1.0);
        assert!(c.holds_values(&cur, &prev).unwrap());
        let e = Condition::compile_for_person("score < 30.0").unwrap_err();
        assert!(e.contains("`score`") && e.contains("days_since_last_active"), "{e}");
        assert!(Condition::compile("features_used > 1.0").is_err(), "an account figure list of its own");
    }

    #[test]
    fn bad_conditions_are_refused_with_what_to_write_instead() {
        let e = Condition::compile("score <").unwrap_err();
        assert!(e.starts_with("is not a valid CEL expression"), "{e}");
        let e = Condition::compile("scor < 30").unwrap_err();
        assert!(e.contains("`scor`") && e.contains("did you mean `score`"), "{e}");
        let e = Condition::compile("score + 1.0").unwrap_err();
        assert!(e.contains("must be true or false"), "{e}");
        let e = Condition::compile("events / 2 < 3").unwrap_err();
        assert!(e.contains("write 1.0, not 1"), "{e}");
        let e = Condition::compile("previous.scroe < 30").unwrap_err();
        assert!(e.contains("cannot be evaluated"), "{e}");
    }
}
