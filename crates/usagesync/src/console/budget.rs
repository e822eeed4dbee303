//! API budget: today's Salesforce calls per hour (UTC, every workflow and worker, from the
//! store's ledger) against usagesync's configured share of the org's daily allocation, drawn as
//! an inline SVG, and a forecast for the day: spent so far plus, for each enabled workflow, its
//! remaining fire times today times the calls its recent runs took.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, Timelike, Utc};
use engine::store::{RunState, StoreError};

use super::{ConsoleState, html};

/// Recent runs averaged for a workflow's calls per run.
const SAMPLE_RUNS: u32 = 5;
/// Fire times counted at most per workflow (a per-second cron has 86,400 a day).
const MAX_FIRES: usize = 100_000;

pub(crate) async fn page(State(st): State<ConsoleState>, headers: HeaderMap) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match render(&st, Utc::now()).await {
        Ok(body) => Html(html::layout("API budget", "budget", access.csrf.as_deref(), &body)).into_response(),
        Err(e) => super::unavailable("Reading the budget ledger", &e),
    }
}

/// What a workflow is expected to spend for the rest of the UTC day.
struct Forecast {
    workflow: String,
    fires_left: usize,
    per_run: f64,
}

async fn forecast(st: &ConsoleState, now: DateTime<Utc>) -> Result<Vec<Forecast>, StoreError> {
    let end = (now.date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let mut out = Vec::new();
    for (name, w) in st.ctx.config.workflows.iter().filter(|(_, w)| w.enabled) {
        let mut fires_left = 0;
        let mut t = now;
        while fires_left < MAX_FIRES {
            match engine::scheduler::next_after(&w.schedule, w.timezone, t) {
                Some(next) if end.is_some_and(|e| next < e) => {
                    fires_left += 1;
                    t = next;
                }
                _ => break,
            }
        }
        let runs: Vec<u64> = st
            .ctx
            .store
            .list_runs(Some(name), SAMPLE_RUNS * 4)
            .await?
            .iter()
            .filter(|r| !r.dry_run && r.trigger != "replay" && r.state != RunState::Running)
            .take(SAMPLE_RUNS as usize)
            .map(super::overview::api_calls)
            .collect();
        let per_run = if runs.is_empty() { 0.0 } else { runs.iter().sum::<u64>() as f64 / runs.len() as f64 };
        out.push(Forecast { workflow: name.clone(), fires_left, per_run });
    }
    Ok(out)
}

async fn render(st: &ConsoleState, now: DateTime<Utc>) -> Result<String, StoreError> {
    let day = now.date_naive();
    let ledger = st.ctx.store.budget_day(day).await?;
    let hours = st.ctx.store.spent_per_hour(day).await?;
    let share = st.ctx.config.budget.daily_share;
    // Truncation is the conservative direction for a cap, as the engine computes it.
    let cap = ledger.org_max.map(|max| (max as f64 * share).floor() as u64);
    let forecasts = forecast(st, now).await?;
    let expected: f64 = forecasts.iter().map(|f| f.fires_left as f64 * f.per_run).sum();
    let forecast_total = ledger.spent as f64 + expected;

    let mut body = String::from("<div class=\"cards\">");
    let cards = [
        ("spent today", html::num(ledger.spent)),
        ("reserved now", html::num(ledger.reserved)),
        (
            "usagesync's share",
            cap.map_or_else(|| "not known yet".into(), |c| format!("{} ({:.0}%)", html::num(c), share * 100.0)),
        ),
        ("left", cap.map_or_else(|| "—".into(), |c| html::num(c.saturating_sub(ledger.spent + ledger.reserved)))),
        ("forecast for today", html::num(forecast_total.round() as u64)),
    ];
    for (label, v) in cards {
        let _ = write!(body, "<div class=\"card\" data-test=\"{}\"><b>{v}</b>{label}</div>", label.replace(' ', "-"));
    }
    body.push_str("</div>");
    if let Some(c) = cap
        && forecast_total > c as f64
    {
        let _ = write!(
            body,
            "<p class=\"error\">At this pace today's runs need about {} calls, more than the share of {}: \
             later runs will defer records to tomorrow.</p>",
            html::num(forecast_total.round() as u64),
            html::num(c)
        );
    }
    body.push_str("<h2>Calls per hour (UTC) against the daily share</h2>");
    body.push_str(&chart(&hours, cap, now.hour(), forecast_total));
    let _ = write!(
        body,
        "<p class=\"muted\">Bars: calls made in each hour. Line: running total. Dashed: usagesync's share of the \
         org's {} daily calls{}. Dotted: the forecast to midnight UTC.</p>",
        ledger.org_max.map_or_else(|| "(not read yet)".to_owned(), html::num),
        ledger
            .observed_at
            .map(|t| format!(
                ", as read from /limits at {} (org-wide use then: {})",
                html::time(&t),
                html::num(ledger.org_used.unwrap_or(0))
            ))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = forecasts
        .iter()
        .map(|f| {
            vec![
                html::esc(&f.workflow),
                html::num(ledger.by_workflow.get(&f.workflow).copied().unwrap_or(0)),
                html::num(f.fires_left as u64),
                format!("{:.1}", f.per_run),
                html::num((f.fires_left as f64 * f.per_run).round() as u64),
            ]
        })
        .collect();
    body.push_str("<h2>By workflow</h2>");
    body.push_str(&html::table(
        &["workflow", "spent today", "runs left today", "calls per run (recent)", "expected for the rest of today"],
        &rows,
        "by-workflow",
    ));
    Ok(body)
}

/// The inline SVG: 24 hourly bars, the running total, the cap and the forecast.
fn chart(hours: &[(u32, u64)], cap: Option<u64>, hour_now: u32, forecast: f64) -> String {
    let (w, h, left, bottom, top) = (760.0_f64, 260.0_f64, 56.0_f64, 28.0_f64, 12.0_f64);
    let plot_w = w - left - 12.0;
    let plot_h = h - bottom - top;
    let mut per_hour = [0u64; 24];
    for (hour, n) in hours {
        if let Some(slot) = per_hour.get_mut(*hour as usize) {
            *slot += n;
        }
    }
    let total: u64 = per_hour.iter().sum();
    let data_max = [total as f64, forecast, 1.0].into_iter().fold(0.0, f64::max);
    // A share far above the day's use would flatten every bar: it is then named, not drawn.
    let cap_drawn = cap.filter(|c| *c as f64 <= data_max * 5.0);
    let max = [cap_drawn.unwrap_or(0) as f64, data_max].into_iter().fold(0.0, f64::max) * 1.08;
    let x = |hour: f64| left + plot_w * hour / 24.0;
    let y = |v: f64| top + plot_h - plot_h * v / max;
    let mut svg = format!(
        "<svg data-test=\"budget-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"Salesforce API calls per hour today\" style=\"background:#fff;border:1px solid #dde2e8\">"
    );
    for i in 0..=4 {
        let v = max / 1.08 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eef1f5\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#667085\">{}</text>",
            w - 12.0,
            left - 6.0,
            y(v) + 4.0,
            html::num(v.round() as u64),
            y = y(v)
        );
    }
    for hour in (0..24).step_by(3) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#667085\">{hour:02}:00</text>",
            x(f64::from(hour)),
            h - 8.0
        );
    }
    let bar_w = plot_w / 24.0 - 3.0;
    let mut running = 0u64;
    let mut line = format!("{:.1},{:.1}", x(0.0), y(0.0));
    for (hour, n) in per_hour.iter().enumerate() {
        let hf = hour as f64;
        if *n > 0 {
            let _ = write!(
                svg,
                "<rect data-test=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"#7aa7e0\"><title>{hour:02}:00 UTC: {} calls</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#1d2430\">{}</text>",
                x(hf) + 1.5,
                y(*n as f64).min(y(0.0) - 1.0),
                (y(0.0) - y(*n as f64)).max(1.0),
                n,
                x(hf) + 1.5 + bar_w / 2.0,
                y(*n as f64).min(y(0.0) - 1.0) - 3.0,
                html::num(*n)
            );
        }
        if hour as u32 <= hour_now {
            running += n;
            let _ = write!(line, " {:.1},{:.1}", x(hf + 1.0), y(running as f64));
        }
    }
    let _ = write!(svg, "<polyline points=\"{line}\" fill=\"none\" stroke=\"#1d2430\" stroke-width=\"2\"/>");
    let _ = write!(
        svg,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#667085\" stroke-width=\"2\" stroke-dasharray=\"2 4\"/>",
        x(f64::from(hour_now) + 1.0),
        y(running as f64),
        x(24.0),
        y(forecast)
    );
    if let (Some(c), None) = (cap, cap_drawn) {
        let _ = write!(
            svg,
            "<text data-test=\"cap\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#b42318\">\
             ↑ share: {} (above the chart; {:.1}% used)</text>",
            w - 14.0,
            top + 10.0,
            html::num(c),
            total as f64 * 100.0 / c.max(1) as f64
        );
    }
    if let Some(c) = cap_drawn {
        let _ = write!(
            svg,
            "<line data-test=\"cap\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{yc:.1}\" y2=\"{yc:.1}\" stroke=\"#b42318\" stroke-width=\"1.5\" stroke-dasharray=\"8 5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#b42318\">share: {}</text>",
            w - 12.0,
            w - 14.0,
            y(c as f64) - 4.0,
            html::num(c),
            yc = y(c as f64)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    #[test]
    fn chart_draws_one_bar_per_busy_hour_and_the_cap() {
        let svg = super::chart(&[(3, 40), (7, 5)], Some(1_000), 9, 120.0);
        assert_eq!(svg.matches("data-test=\"bar\"").count(), 2);
        assert!(svg.contains("share: 1,000") && svg.contains("above the chart"), "{svg}");
        let near = super::chart(&[(3, 40)], Some(100), 9, 60.0);
        assert!(near.contains("<line data-test=\"cap\"") && near.contains("share: 100"), "{near}");
        assert!(svg.contains("03:00 UTC: 40 calls"));
    }
}
