//! Per-person usage: each identified visitor's active days, events, minutes, last active day,
//! features used and guides completed over a window, each grouped by Pendo to one row per visitor
//! (for usage onto Contacts). Only the queries for figures someone asked for are sent.

use std::collections::BTreeMap;

use pendo::{Agg, Apps, Expr, Pipeline, Source};
use serde_json::Value;

use super::engagement::{any_of, time_series};
use super::{Extractor, Result, count, maybe_filter, text};

/// One visitor's usage over a window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisitorUsage {
    pub visitor_id: String,
    /// Distinct days with any event.
    pub active_days: u64,
    pub events: u64,
    pub minutes: u64,
    /// Distinct features with an event.
    pub features_used: u64,
    /// Distinct guides whose last step the person reached.
    pub guides_completed: u64,
    /// The start of the last day with an event, epoch milliseconds.
    pub last_active_day: Option<i64>,
}

/// Which of the costlier figures to ask Pendo for (each is one more paged query).
#[derive(Clone, Copy, Debug, Default)]
pub struct PersonFigures {
    pub features: bool,
    pub guides: bool,
}

impl Extractor<'_> {
    /// Usage per identified visitor over `window`, by visitor id: one paged query for the event
    /// totals, and one each for features and guides when `figures` asks for them.
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn visitor_usage(
        &self,
        window: &super::Window,
        figures: PersonFigures,
    ) -> Result<BTreeMap<String, VisitorUsage>> {
        let ts = time_series(window)?;
        let mut out: BTreeMap<String, VisitorUsage> = BTreeMap::new();
        let visitor = |row: &Value| text(row, "visitorId").filter(|id| !id.is_empty()).map(str::to_owned);
        self.paged(
            "usage by visitor",
            &["visitorId"],
            false,
            |cond| {
                maybe_filter(Pipeline::events(Source::Events { apps: Apps::All }, ts.clone()), cond)
                    .identified("visitorId")
                    .group(
                        &["visitorId", "day"],
                        &[("events", Agg::Sum("numEvents".into())), ("minutes", Agg::Sum("numMinutes".into()))],
                    )
                    // `day` is unique within each visitor's rows here.
                    .group(
                        &["visitorId"],
                        &[
                            ("days", Agg::Count(Some("day".into()))),
                            ("events", Agg::Sum("events".into())),
                            ("minutes", Agg::Sum("minutes".into())),
                            ("last", Agg::Max("day".into())),
                        ],
                    )
            },
            |row: &Value| {
                let Some(id) = visitor(row) else { return Ok(()) };
                let u = out.entry(id.clone()).or_insert_with(|| VisitorUsage { visitor_id: id, ..Default::default() });
                u.active_days = count(row, "days");
                u.events = count(row, "events");
                u.minutes = count(row, "minutes");
                u.last_active_day = row.get("last").and_then(Value::as_i64).filter(|t| *t > 0);
                Ok(())
            },
        )
        .await?;
        if figures.features {
            self.paged(
                "features by visitor",
                &["visitorId"],
                false,
                |cond| {
                    maybe_filter(
                        Pipeline::events(Source::FeatureEvents { feature_id: None, apps: Apps::All }, ts.clone()),
                        cond,
                    )
                    .identified("visitorId")
                    .group(&["visitorId", "featureId"], &[])
                    .group(&["visitorId"], &[("features", Agg::Count(Some("featureId".into())))])
                },
                |row: &Value| {
                    let Some(id) = visitor(row) else { return Ok(()) };
                    let u =
                        out.entry(id.clone()).or_insert_with(|| VisitorUsage { visitor_id: id, ..Default::default() });
                    u.features_used = count(row, "features");
                    Ok(())
                },
            )
            .await?;
        }
        if figures.guides {
            let last_steps = self.last_guide_steps().await?;
            // No guide has steps: nobody can have completed one.
            if let Some(last) = any_of("guideStepId", last_steps.iter().map(String::as_str)) {
                let completed = Expr::field("type").eq("guideAdvanced").and(last);
                self.paged(
                    "guides completed by visitor",
                    &["visitorId"],
                    false,
                    |cond| {
                        maybe_filter(
                            Pipeline::events(Source::GuideEvents { guide_id: None, apps: Apps::All }, ts.clone()),
                            cond,
                        )
                        .identified("visitorId")
                        .filter(completed.clone())
                        .group(&["visitorId", "guideId"], &[])
                        .group(&["visitorId"], &[("guides", Agg::Count(Some("guideId".into())))])
                    },
                    |row: &Value| {
                        let Some(id) = visitor(row) else { return Ok(()) };
                        let u = out
                            .entry(id.clone())
                            .or_insert_with(|| VisitorUsage { visitor_id: id, ..Default::default() });
                        u.guides_completed = count(row, "guides");
                        Ok(())
                    },
                )
                .await?;
            }
        }
        Ok(out)
    }

    /// Every identified visitor's e-mail as Pendo holds it (`agent.email`), by visitor id;
    /// visitors without one are left out.
    ///
    /// # Errors
    /// As [`super::engagement`].
    pub async fn visitor_emails(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        self.paged(
            "visitor e-mails",
            &["visitorId"],
            false,
            |cond| {
                maybe_filter(Pipeline::from_source(Source::Visitors { identified: Some(true) }), cond).select(vec![
                    ("visitorId", Expr::field("visitorId")),
                    ("email", Expr::field("metadata.agent.email")),
                ])
            },
            |row: &Value| {
                let (Some(id), Some(email)) = (text(row, "visitorId"), text(row, "email")) else { return Ok(()) };
                if !id.is_empty() && !email.trim().is_empty() {
                    out.insert(id.to_owned(), email.to_owned());
                }
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}
