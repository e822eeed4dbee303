//! The engagement queries: the account list, event totals by day, active visitors, core feature
//! use and guide completion, each grouped by Pendo to one or two rows per account and folded into
//! one small record per account.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use pendo::{Agg, Apps, Expr, Pipeline, Source, Span, Time, TimeSeries};
use serde_json::Value;

use super::kept::{self, Accounts, DaySum, Facts, Seen, UsageState};
use super::{
    AccountUsage, CoreFeatures, ExtractError, Extractor, Result, WindowLength, bad_row, count, maybe_filter, text,
};

const MAX_WINDOW_DAYS: u32 = 3650;

/// Per-account figures while pages arrive; the id is the map key.
#[derive(Default)]
struct Acc {
    visitors: u64,
    days: u64,
    events: u64,
    minutes: u64,
    core: u32,
    seen: u64,
    completed: u64,
    last_visit: Option<i64>,
}

pub(super) fn time_series(window: &super::Window) -> Result<TimeSeries> {
    let (n, period_ms, make): (u32, i64, fn(Time, Span) -> TimeSeries) = match window.length {
        WindowLength::Days(n) if (1..=MAX_WINDOW_DAYS).contains(&n) => (n, 86_400_000, TimeSeries::days),
        WindowLength::Hours(n) if (1..=MAX_WINDOW_DAYS * 24).contains(&n) => (n, 3_600_000, TimeSeries::hours),
        other => return Err(ExtractError::InvalidWindow(other)),
    };
    let end = window.end.timestamp_millis();
    Ok(if window.include_current {
        // `first` rounds down to its period's start in the subscription timezone and a positive
        // count runs forward from there: the `n` periods ending with the one containing `end`.
        make(Time::Millis(end - i64::from(n - 1) * period_ms), Span::Count(i64::from(n)))
    } else {
        // A negative count takes the periods before `first`'s: exactly "whole periods before the
        // one containing `end`".
        make(Time::Millis(end), Span::Count(-i64::from(n)))
    })
}

/// The column an event row of `window`'s period carries its period start in.
pub(super) fn period_column(window: &super::Window) -> &'static str {
    match window.length {
        WindowLength::Days(_) => "day",
        WindowLength::Hours(_) => "hour",
    }
}

/// `field == a || field == b || ...`; `None` for an empty set.
pub(super) fn any_of<'a>(field: &str, values: impl IntoIterator<Item = &'a str>) -> Option<Expr> {
    values.into_iter().map(|v| Expr::field(field).eq(v)).reduce(Expr::or)
}

/// The account a grouped row belongs to. Events Pendo could not attribute to an account come
/// back grouped under a null or empty id; they belong to no CRM record, so they are skipped
/// rather than failing the run.
fn entry<'m>(accs: &'m mut BTreeMap<String, Acc>, row: &Value) -> Option<&'m mut Acc> {
    let id = text(row, "accountId").filter(|id| !id.is_empty())?;
    // Avoids allocating the key for accounts already present (nearly all after the first query).
    if !accs.contains_key(id) {
        accs.insert(id.to_string(), Acc::default());
    }
    accs.get_mut(id)
}

impl Extractor<'_> {
    /// Per-account engagement over `window`; see [`super::engagement`].
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn engagement(&self, window: &super::Window, core: &CoreFeatures) -> Result<Vec<AccountUsage>> {
        time_series(window)?;
        // The catalogues first (one small call each): the feature and guide queries need them.
        let core_ids = self.core_feature_ids(core).await?;
        let last_steps = self.last_guide_steps().await?;
        self.totals(window, &core_ids, &last_steps).await
    }

    /// Per-account totals over the whole window, each query grouped by Pendo to one or two rows
    /// per account.
    async fn totals(
        &self,
        window: &super::Window,
        core_ids: &BTreeSet<String>,
        last_steps: &[String],
    ) -> Result<Vec<AccountUsage>> {
        let ts = time_series(window)?;
        let period = period_column(window);
        // The five queries are independent, so they may run side by side (see
        // `with_parallel_queries`); folding is synchronous and short, so the one lock around the
        // map is never held across a request.
        let accs: Mutex<BTreeMap<String, Acc>> = Mutex::new(BTreeMap::new());
        let with = |row: &Value, f: &dyn Fn(&mut Acc)| {
            let mut map = accs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(acc) = entry(&mut map, row) {
                f(acc);
            }
            Ok(())
        };

        const ACCOUNTS: &str = "accounts";
        let accounts = self.paged(ACCOUNTS, &["accountId"], false, account_list, |row| {
            let last = last_visit(row);
            with(row, &|acc| acc.last_visit = last)
        });

        const DAYS: &str = "event totals by day";
        let days = self.paged(
            DAYS,
            &["accountId"],
            false,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond)
                    .group(
                        &["accountId", period],
                        &[("events", Agg::Sum("numEvents".into())), ("minutes", Agg::Sum("numMinutes".into()))],
                    )
                    // The period is unique within each account's rows here, so distinct and
                    // non-null counting agree.
                    .group(
                        &["accountId"],
                        &[
                            ("days", Agg::Count(Some(period.into()))),
                            ("events", Agg::Sum("events".into())),
                            ("minutes", Agg::Sum("minutes".into())),
                        ],
                    )
            },
            |row| {
                // In an hourly window the distinct count is of hours, which is not a day count:
                // active days stay 0 there (the config refuses them in such windows).
                let d = if period == "day" { count(row, "days") } else { 0 };
                let (e, m) = (count(row, "events"), count(row, "minutes"));
                with(row, &|acc| (acc.days, acc.events, acc.minutes) = (d, e, m))
            },
        );

        const VISITORS: &str = "active visitors";
        let visitors = self.paged(
            VISITORS,
            &["accountId"],
            false,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond)
                    .identified("visitorId")
                    .group(&["accountId", "visitorId"], &[])
                    .group(&["accountId"], &[("visitors", Agg::Count(Some("visitorId".into())))])
            },
            |row| {
                let n = count(row, "visitors");
                with(row, &|acc| acc.visitors = n)
            },
        );

        const FEATURES: &str = "core features used";
        let is_core = any_of("featureId", core_ids.iter().map(String::as_str));
        let features = async {
            // No core features: nothing to ask Pendo.
            let Some(is_core) = &is_core else { return Ok(()) };
            self.paged(
                FEATURES,
                &["accountId"],
                false,
                |cond| {
                    maybe_filter(
                        Pipeline::events(Source::FeatureEvents { feature_id: None, apps: Apps::All }, ts.clone()),
                        cond,
                    )
                    .filter(is_core.clone())
                    .group(&["accountId", "featureId"], &[])
                    .group(&["accountId"], &[("features", Agg::Count(Some("featureId".into())))])
                },
                |row| {
                    let used = u32::try_from(count(row, "features")).unwrap_or(u32::MAX);
                    with(row, &|acc| acc.core = used)
                },
            )
            .await
        };

        const GUIDES: &str = "guides seen and completed";
        let relevant = seen_or_completed(last_steps);
        let guides = self.paged(
            GUIDES,
            &["accountId", "type"],
            // Two rows per account (seen, completed): a page may end between them.
            true,
            |cond| {
                maybe_filter(
                    Pipeline::events(Source::GuideEvents { guide_id: None, apps: Apps::All }, ts.clone()),
                    cond,
                )
                .identified("visitorId")
                .filter(relevant.clone())
                .group(&["accountId", "visitorId", "guideId", "type"], &[])
                // Rows are distinct (visitor, guide) pairs now; summing ones counts them
                // whatever Pendo's `count` means.
                .eval(vec![("one", Expr::lit(1i64))])
                .group(&["accountId", "type"], &[("pairs", Agg::Sum("one".into()))])
            },
            |row| {
                let pairs = count(row, "pairs");
                match text(row, "type") {
                    Some("guideSeen") => with(row, &|acc| acc.seen = pairs),
                    Some("guideAdvanced") => with(row, &|acc| acc.completed = pairs),
                    _ => Ok(()),
                }
            },
        );

        if self.parallel {
            tokio::try_join!(accounts, days, visitors, features, guides)?;
        } else {
            accounts.await?;
            days.await?;
            visitors.await?;
            features.await?;
            guides.await?;
        }

        let total = u32::try_from(core_ids.len()).unwrap_or(u32::MAX);
        Ok(accs
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .map(|(account_id, a)| AccountUsage {
                account_id,
                active_visitors: a.visitors,
                active_days: a.days,
                events: a.events,
                minutes: a.minutes,
                core_features_used: a.core.min(total),
                core_features_total: total,
                guides_seen: a.seen,
                guides_completed: a.completed,
                last_active: a.last_visit.and_then(DateTime::<Utc>::from_timestamp_millis),
            })
            .collect())
    }

    /// Per-account engagement over `window` from the state kept since the last run (see
    /// [`super::kept`]): Pendo is asked about the days since then, or the whole window when the
    /// state cannot be brought up to date. Returns the figures and the state to keep (`None`
    /// where none can be kept: hourly windows, or a window with a day no one used).
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn engagement_kept(
        &self,
        window: &super::Window,
        core: &CoreFeatures,
        kept: Option<UsageState>,
    ) -> Result<(Vec<AccountUsage>, Option<UsageState>)> {
        let WindowLength::Days(n) = window.length else {
            return Ok((self.engagement(window, core).await?, None));
        };
        time_series(window)?;
        let core_ids = self.core_feature_ids(core).await?;
        let mut last_steps = self.last_guide_steps().await?;
        last_steps.sort_unstable();
        let basis = {
            let n = n.to_string();
            let current = if window.include_current { "current" } else { "before" };
            let mut parts: Vec<&str> = vec![&n, current, "core"];
            parts.extend(core_ids.iter().map(String::as_str));
            parts.push("steps");
            parts.extend(last_steps.iter().map(String::as_str));
            kept::key_of(&parts)
        };
        let end = window.end.timestamp_millis();
        let total = u32::try_from(core_ids.len()).unwrap_or(u32::MAX);
        let q = PairQueries { core_ids: &core_ids, last_steps: &last_steps };

        if let Some((mut state, k)) = kept.and_then(|s| s.days_to_read(basis, end, n).map(|k| (s, k))) {
            let accounts = state.take_accounts();
            let part = super::Window { length: WindowLength::Days(k), ..window.clone() };
            // An increment is read whatever the subscription's size: its days are few.
            let read = self.read_days(&part, &q, accounts, None).await?;
            let merged =
                read.and_then(|(accounts, facts, last)| Some((state.merge(accounts, facts, k, n, end)?, last)));
            if let Some((state, last_visit)) = merged {
                let usage = with_last_visit(state.usage(total), &last_visit);
                return Ok((usage, Some(state)));
            }
            tracing::info!(days = k, "the kept engagement did not fit the days read; reading the whole window");
        }
        // The whole window as per-day and per-thing rows, while they fit in a few pages: each page
        // is a scan of the whole window for Pendo, so beyond that the per-account totals are read
        // instead and nothing is kept.
        let most = kept::WHOLE_READ_PAGES.saturating_mul(self.page_rows);
        match self.read_days(window, &q, Accounts::default(), Some(most)).await? {
            Some((accounts, facts, last_visit)) => {
                let (state, complete) = UsageState::whole(basis, end, n, accounts, facts);
                let usage = with_last_visit(state.usage(total), &last_visit);
                Ok((usage, complete.then_some(state)))
            }
            None => Ok((self.totals(window, &core_ids, &last_steps).await?, None)),
        }
    }

    /// The per-day and per-thing rows of `window`'s days, and every account's last visit; `None`
    /// when Pendo lists so many accounts that the day sums could pass `max_rows` (accounts ×
    /// days, an upper bound), asked before any query of the days.
    async fn read_days(
        &self,
        window: &super::Window,
        q: &PairQueries<'_>,
        accounts: Accounts,
        max_rows: Option<u64>,
    ) -> Result<Option<(Accounts, Facts, HashMap<u32, Option<i64>>)>> {
        let ts = time_series(window)?;
        struct Shared {
            accounts: Accounts,
            facts: Facts,
            last_visit: HashMap<u32, Option<i64>>,
        }
        let shared = Mutex::new(Shared { accounts, facts: Facts::default(), last_visit: HashMap::new() });
        let with = |row: &Value, f: &mut dyn FnMut(&mut Shared, u32)| {
            let Some(id) = text(row, "accountId").filter(|id| !id.is_empty()) else { return Ok(()) };
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let acc = s.accounts.number(id);
            f(&mut s, acc);
            Ok(())
        };
        let day = |row: &Value| row.get("day").and_then(Value::as_i64).and_then(kept::secs);

        let accounts = self.paged("accounts", &["accountId"], false, account_list, |row| {
            let last = last_visit(row);
            with(row, &mut |s, acc| {
                s.last_visit.insert(acc, last);
            })
        });
        let sums = self.paged(
            "event totals by account and day",
            &["accountId", "day"],
            false,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond).group(
                    &["accountId", "day"],
                    &[("events", Agg::Sum("numEvents".into())), ("minutes", Agg::Sum("numMinutes".into()))],
                )
            },
            |row| {
                let Some(d) = day(row) else { return Ok(()) };
                let narrow = |field: &'static str| {
                    u32::try_from(count(row, field))
                        .map_err(|_| super::bad_row("event totals by account and day", field, row))
                };
                let (events, minutes) = (narrow("events")?, narrow("minutes")?);
                with(row, &mut |s, acc| s.facts.sums.push(DaySum { acc, day: d, events, minutes }))
            },
        );
        let visitors = self.paged(
            "active visitors by day last seen",
            &["accountId", "visitorId"],
            false,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond)
                    .identified("visitorId")
                    .group(&["accountId", "visitorId"], &[("day", Agg::Max("day".into()))])
            },
            |row| {
                let (Some(v), Some(d)) = (text(row, "visitorId"), day(row)) else { return Ok(()) };
                let key = kept::key_of(&[v]);
                with(row, &mut |s, acc| s.facts.seen[kept::VISITORS].push(Seen { acc, key, at: d }))
            },
        );
        let is_core = any_of("featureId", q.core_ids.iter().map(String::as_str));
        let features = async {
            let Some(is_core) = &is_core else { return Ok(()) };
            self.paged(
                "core features by day last used",
                &["accountId", "featureId"],
                false,
                |cond| {
                    maybe_filter(
                        Pipeline::events(Source::FeatureEvents { feature_id: None, apps: Apps::All }, ts.clone()),
                        cond,
                    )
                    .filter(is_core.clone())
                    .group(&["accountId", "featureId"], &[("day", Agg::Max("day".into()))])
                },
                |row| {
                    let (Some(f), Some(d)) = (text(row, "featureId"), day(row)) else { return Ok(()) };
                    let key = kept::key_of(&[f]);
                    with(row, &mut |s, acc| s.facts.seen[kept::FEATURES].push(Seen { acc, key, at: d }))
                },
            )
            .await
        };
        let relevant = seen_or_completed(q.last_steps);
        let guides = self.paged(
            "guides by time last seen and completed",
            &["accountId", "visitorId", "guideId", "type"],
            false,
            |cond| {
                maybe_filter(
                    Pipeline::events(Source::GuideEvents { guide_id: None, apps: Apps::All }, ts.clone()),
                    cond,
                )
                .identified("visitorId")
                .filter(relevant.clone())
                .group(&["accountId", "visitorId", "guideId", "type"], &[("at", Agg::Max("browserTime".into()))])
            },
            |row| {
                let kind = match text(row, "type") {
                    Some("guideSeen") => kept::GUIDES_SEEN,
                    Some("guideAdvanced") => kept::GUIDES_COMPLETED,
                    _ => return Ok(()),
                };
                let (Some(v), Some(g), Some(at)) = (
                    text(row, "visitorId"),
                    text(row, "guideId"),
                    row.get("at").and_then(Value::as_i64).and_then(kept::secs),
                ) else {
                    return Ok(());
                };
                let key = kept::key_of(&[v, g]);
                with(row, &mut |s, acc| s.facts.seen[kind].push(Seen { acc, key, at }))
            },
        );
        // The account list first: its length decides whether the days are read at all.
        accounts.await?;
        let listed = shared.lock().unwrap_or_else(PoisonError::into_inner).last_visit.len() as u64;
        if max_rows.is_some_and(|most| listed.saturating_mul(u64::from(window.length.covering_days())) > most) {
            tracing::info!(accounts = listed, "too many accounts to keep engagement between runs; reading totals");
            return Ok(None);
        }
        if self.parallel {
            tokio::try_join!(sums, visitors, features, guides)?;
        } else {
            sums.await?;
            visitors.await?;
            features.await?;
            guides.await?;
        }
        let s = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
        Ok(Some((s.accounts, s.facts, s.last_visit)))
    }

    /// The core feature ids, deduplicated.
    async fn core_feature_ids(&self, core: &CoreFeatures) -> Result<BTreeSet<String>> {
        match core {
            CoreFeatures::Ids(ids) => Ok(ids.iter().cloned().collect()),
            CoreFeatures::MarkedCore => {
                const QUERY: &str = "core feature catalogue";
                let p = Pipeline::from_source(Source::Features { apps: Apps::All })
                    .filter(Expr::field("isCoreEvent").eq(true))
                    .select(vec![("id", Expr::field("id"))]);
                let rows = self.once(QUERY, &p).await?;
                rows.iter().map(|r| text(r, "id").map(str::to_owned).ok_or_else(|| bad_row(QUERY, "id", r))).collect()
            }
        }
    }

    /// Each guide's last step id (the highest `rank`; the last listed on a tie or without ranks).
    pub(super) async fn last_guide_steps(&self) -> Result<Vec<String>> {
        const QUERY: &str = "guide catalogue";
        let p = Pipeline::from_source(Source::Guides { apps: Apps::All })
            .select(vec![("id", Expr::field("id")), ("steps", Expr::field("steps"))]);
        let rows = self.once(QUERY, &p).await?;
        Ok(rows
            .iter()
            .filter_map(|g| {
                let steps = g.get("steps")?.as_array()?;
                let rank = |s: &Value| s.get("rank").and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY);
                steps
                    .iter()
                    .enumerate()
                    .max_by(|(i, a), (j, b)| rank(a).total_cmp(&rank(b)).then(i.cmp(j)))
                    .and_then(|(_, s)| text(s, "id"))
                    .map(str::to_owned)
            })
            .collect())
    }
}

/// Every account Pendo lists, with its last visit.
fn account_list(cond: Option<Expr>) -> Pipeline {
    maybe_filter(Pipeline::from_source(Source::Accounts { apps: Apps::Default }), cond)
        .select(vec![("accountId", Expr::field("accountId")), ("lastvisit", Expr::field("metadata.auto.lastvisit"))])
}

/// An account list row's last visit, if Pendo knows one.
fn last_visit(row: &Value) -> Option<i64> {
    row.get("lastvisit").and_then(Value::as_i64).filter(|t| *t > 0)
}

/// Guide events that count: any `guideSeen`, and a `guideAdvanced` on a guide's last step.
fn seen_or_completed(last_steps: &[String]) -> Expr {
    let seen = Expr::field("type").eq("guideSeen");
    match any_of("guideStepId", last_steps.iter().map(String::as_str)) {
        Some(last) => seen.or(Expr::field("type").eq("guideAdvanced").and(last)),
        None => seen,
    }
}

/// What the per-thing queries filter on.
struct PairQueries<'a> {
    core_ids: &'a BTreeSet<String>,
    last_steps: &'a [String],
}

/// Pendo's last visit onto figures numbered as the state numbers accounts, keeping the accounts
/// Pendo lists now and those with anything in the window (an account deleted from Pendo stays in
/// the state's numbering until the next whole read, but not in the figures).
fn with_last_visit(usage: Vec<AccountUsage>, listed: &HashMap<u32, Option<i64>>) -> Vec<AccountUsage> {
    let mut out: Vec<AccountUsage> = usage
        .into_iter()
        .enumerate()
        .filter_map(|(acc, mut u)| {
            match u32::try_from(acc).ok().and_then(|a| listed.get(&a)) {
                Some(last) => u.last_active = last.and_then(DateTime::<Utc>::from_timestamp_millis),
                None if idle(&u) => return None,
                None => {}
            }
            Some(u)
        })
        .collect();
    out.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
    out
}

/// Whether nothing of the account's is in the window.
fn idle(u: &AccountUsage) -> bool {
    u.active_days == 0
        && u.active_visitors == 0
        && u.core_features_used == 0
        && u.guides_seen == 0
        && u.guides_completed == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_without_an_account_are_skipped() {
        let mut accs = BTreeMap::new();
        assert!(entry(&mut accs, &json!({"accountId": null, "events": 3})).is_none());
        assert!(entry(&mut accs, &json!({"accountId": "", "events": 3})).is_none());
        assert!(entry(&mut accs, &json!({"events": 3})).is_none());
        assert!(entry(&mut accs, &json!({"accountId": "a"})).is_some());
        assert_eq!(accs.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn kept_figures_leave_out_accounts_pendo_no_longer_lists_unless_active() {
        let u = |id: &str, visitors| AccountUsage {
            account_id: id.into(),
            active_visitors: visitors,
            ..Default::default()
        };
        let listed = HashMap::from([(0, Some(1_767_225_600_000)), (3, None)]);
        let got = with_last_visit(vec![u("listed", 0), u("gone", 0), u("gone-but-active", 2), u("new", 1)], &listed);
        let ids: Vec<&str> = got.iter().map(|u| u.account_id.as_str()).collect();
        assert_eq!(ids, vec!["gone-but-active", "listed", "new"]);
        assert!(got[1].last_active.is_some() && got[2].last_active.is_none());
    }

    #[test]
    fn window_bounds_and_any_of() {
        let end = DateTime::<Utc>::from_timestamp_millis(1_767_225_600_000).unwrap_or_default();
        let w = |length| super::super::Window { end, length, include_current: false };
        assert!(time_series(&w(WindowLength::Days(0))).is_err());
        assert!(time_series(&w(WindowLength::Days(3651))).is_err());
        assert!(time_series(&w(WindowLength::Days(30))).is_ok());
        assert!(time_series(&w(WindowLength::Hours(0))).is_err());
        assert!(time_series(&w(WindowLength::Hours(6))).is_ok());
        assert_eq!(any_of("f", std::iter::empty()), None);
        assert_eq!(
            any_of("f", ["a", "b\"\""]).and_then(|e| e.build().ok()).as_deref(),
            Some(r#"((f == "a") || (f == "b\"\""))"#)
        );
    }
}
