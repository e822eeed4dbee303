//! The queries behind expansion milestones and trial drop-off: visitors per account who used
//! given (premium) features, events per account per day (for "usage above a threshold for D
//! days"), and the onboarding-guide step where an account's visitors most often gave up.

use std::collections::BTreeMap;

use pendo::{Agg, Apps, Pipeline, Source};
use serde_json::Value;

use super::engagement::{any_of, time_series};
use super::{Extractor, Result, count, maybe_filter, text};

impl Extractor<'_> {
    /// Account → distinct identified visitors who used any of `features` in `window`. Empty when
    /// `features` is.
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn feature_visitors(&self, window: &super::Window, features: &[String]) -> Result<BTreeMap<String, u64>> {
        let ts = time_series(window)?;
        let mut out = BTreeMap::new();
        let Some(used) = any_of("featureId", features.iter().map(String::as_str)) else { return Ok(out) };
        self.paged(
            "visitors using the milestone features",
            &["accountId"],
            false,
            |cond| {
                maybe_filter(
                    Pipeline::events(Source::FeatureEvents { feature_id: None, apps: Apps::All }, ts.clone()),
                    cond,
                )
                .filter(used.clone())
                .identified("visitorId")
                .group(&["accountId", "visitorId"], &[])
                .group(&["accountId"], &[("visitors", Agg::Count(Some("visitorId".into())))])
            },
            |row: &Value| {
                if let Some(id) = text(row, "accountId").filter(|id| !id.is_empty()) {
                    out.insert(id.to_owned(), count(row, "visitors"));
                }
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }

    /// Account → (day start in epoch ms → events that day), days without events absent.
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn daily_events(&self, window: &super::Window) -> Result<BTreeMap<String, BTreeMap<i64, u64>>> {
        let ts = time_series(window)?;
        let mut out: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
        self.paged(
            "events by account and day",
            &["accountId"],
            // Up to `days` rows per account: a page may end between them.
            true,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond)
                    .group(&["accountId", "day"], &[("events", Agg::Sum("numEvents".into()))])
            },
            |row: &Value| {
                let day = row.get("day").and_then(Value::as_i64);
                if let (Some(id), Some(day)) = (text(row, "accountId").filter(|id| !id.is_empty()), day) {
                    out.entry(id.to_owned()).or_default().insert(day, count(row, "events"));
                }
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}

impl Extractor<'_> {
    /// Account → the step of `guide` its visitors dismissed most often in `window`, as
    /// "step K of N" (K by the step's rank), ties to the earlier step. Accounts nobody
    /// dismissed the guide on are absent.
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn drop_off_steps(&self, window: &super::Window, guide: &str) -> Result<BTreeMap<String, String>> {
        let ts = time_series(window)?;
        let catalogue = self
            .once(
                "onboarding guide steps",
                &Pipeline::from_source(Source::Guides { apps: Apps::All })
                    .filter(pendo::Expr::field("id").eq(guide))
                    .select(vec![("steps", pendo::Expr::field("steps"))]),
            )
            .await?;
        let mut steps: Vec<(f64, String)> = catalogue
            .iter()
            .filter_map(|g| g.get("steps")?.as_array().cloned())
            .flatten()
            .filter_map(|s| {
                let rank = s.get("rank").and_then(Value::as_f64).unwrap_or(f64::MAX);
                Some((rank, text(&s, "id")?.to_owned()))
            })
            .collect();
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let position: BTreeMap<&str, usize> = steps.iter().enumerate().map(|(i, (_, id))| (id.as_str(), i)).collect();
        let mut counts: BTreeMap<String, BTreeMap<usize, u64>> = BTreeMap::new();
        let dismissed = pendo::Expr::field("guideId").eq(guide).and(pendo::Expr::field("type").eq("guideDismissed"));
        self.paged(
            "onboarding guide dismissals",
            &["accountId"],
            // Several steps per account: a page may end between them.
            true,
            |cond| {
                maybe_filter(
                    Pipeline::events(Source::GuideEvents { guide_id: None, apps: Apps::All }, ts.clone()),
                    cond,
                )
                .filter(dismissed.clone())
                .eval(vec![("one", pendo::Expr::lit(1i64))])
                .group(&["accountId", "guideStepId"], &[("n", Agg::Sum("one".into()))])
            },
            |row: &Value| {
                let account = text(row, "accountId").filter(|id| !id.is_empty());
                let step = text(row, "guideStepId").and_then(|s| position.get(s));
                if let (Some(account), Some(step)) = (account, step) {
                    counts.entry(account.to_owned()).or_default().insert(*step, count(row, "n"));
                }
                Ok(())
            },
        )
        .await?;
        let n = steps.len();
        Ok(counts
            .into_iter()
            .filter_map(|(account, by_step)| {
                let (step, _) = by_step.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
                Some((account, format!("step {} of {n}", step + 1)))
            })
            .collect())
    }
}

/// The longest run of consecutive days with at least `min_events` events. Days are a calendar
/// day apart (23 to 25 hours, for daylight-saving changes in the subscription's timezone).
pub fn longest_run(days: &BTreeMap<i64, u64>, min_events: u64) -> u32 {
    const HOUR: i64 = 3_600_000;
    let (mut best, mut run, mut last) = (0u32, 0u32, None::<i64>);
    for (&day, &events) in days {
        if events < min_events {
            run = 0;
            last = None;
            continue;
        }
        run = match last {
            Some(prev) if (23 * HOUR..=25 * HOUR).contains(&(day - prev)) => run + 1,
            _ => 1,
        };
        last = Some(day);
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_need_consecutive_days_over_the_threshold() {
        let d = 24 * 3_600_000;
        let days: BTreeMap<i64, u64> =
            [(0, 60), (d, 70), (2 * d, 10), (3 * d, 80), (4 * d, 90), (5 * d, 99), (7 * d, 100)].into_iter().collect();
        assert_eq!(longest_run(&days, 50), 3);
        assert_eq!(longest_run(&days, 5), 6);
        assert_eq!(longest_run(&BTreeMap::new(), 1), 0);
    }
}
