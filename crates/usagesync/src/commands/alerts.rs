//! Alerts from the daemon: when a scheduled run ends in a state the config's `alerts.on` names
//! (failed, partial, deferred by default), when an enabled workflow has had no success for
//! `alerts.no_success_for`, or has more open failures than `alerts.open_failures_over` (checked
//! periodically by [`Notifier::check`]), a JSON message is POSTed to each `alerts.webhooks`
//! receiver, signed with HMAC-SHA256 when a secret is given, and an e-mail goes out through each
//! `alerts.email` SMTP server (STARTTLS as configured). Sending happens on a task of its
//! own with a few retries, so a slow or dead receiver never holds a run or the scheduler; the
//! same workflow ending in the same state again within `alerts.quiet_for` sends nothing more.
//! Messages carry facts about the run (names, counts, the error text), never a secret.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use engine::config::{AlertEmail, AlertFormat, Alerts, StartTls};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use parking_lot::Mutex;
use serde::Serialize;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when a receiver has a secret.
pub const SIGNATURE_HEADER: &str = "X-Usagesync-Signature";
/// Attempts per receiver and message (the first and the retries).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Alerts kept for the console, newest last.
const SENT_KEPT: usize = 50;

/// What happened to one alert, for the console.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: DateTime<Utc>,
    pub workflow: String,
    pub state: String,
    pub text: String,
    /// Per receiver (a webhook by host, an e-mail by server): "delivered" or why not.
    pub outcome: Vec<(String, String)>,
}

/// The alerts this daemon sent or tried, shared with the console; survives config reloads.
pub type SentLog = Arc<Mutex<VecDeque<Sent>>>;

fn log_sent(log: &SentLog, sent: Sent) {
    let mut log = log.lock();
    if log.len() >= SENT_KEPT {
        log.pop_front();
    }
    log.push_back(sent);
}

/// What one alert says.
#[derive(Debug, Clone, Serialize)]
pub struct RunAlert {
    pub workflow: String,
    pub state: String,
    pub run_id: Option<String>,
    pub trigger: String,
    pub written: usize,
    pub failed: usize,
    pub deferred: usize,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl RunAlert {
    /// One line for a person (also the Slack text).
    pub fn text(&self) -> String {
        let run = self.run_id.as_deref().map(|id| format!(" (run {id})")).unwrap_or_default();
        let what = match self.state.as_str() {
            "failed" => format!("failed: {}", self.error.as_deref().unwrap_or("no error recorded")),
            "partial" => format!(
                "ended partial: {} written, {} refused by Salesforce or Pendo (see `usagesync failures`)",
                self.written, self.failed
            ),
            "deferred" => format!(
                "was deferred: {} records wait for API budget (the next run sends them){}",
                self.deferred,
                self.error.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
            ),
            "no_success" | "open_failures" => self.error.clone().unwrap_or_default(),
            other => format!("ended {other}{}", self.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()),
        };
        if matches!(self.state.as_str(), "no_success" | "open_failures") {
            return what;
        }
        format!("usagesync: workflow {} {what}{run}", self.workflow)
    }
}

/// Sends alerts; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: Alerts,
    /// Each receiver's HMAC key, resolved once at start.
    keys: Vec<Option<Vec<u8>>>,
    client: reqwest::Client,
    /// One per `alerts.email` receiver, built (password read) at start.
    mailers: Vec<Mailer>,
    /// (workflow, state) → when an alert for it was last sent.
    last_sent: Mutex<HashMap<(String, String), Instant>>,
    host: String,
    sent: SentLog,
}

impl Notifier {
    /// `None` without an `alerts:` section. Secrets are read here, so a missing one stops the
    /// daemon at start rather than at the first failure.
    pub fn new(config: Option<&Alerts>, env: engine::connect::Env<'_>, sent: &SentLog) -> Result<Option<Notifier>> {
        let Some(config) = config else { return Ok(None) };
        let mut keys = Vec::new();
        for (i, hook) in config.webhooks.iter().enumerate() {
            keys.push(match &hook.secret {
                Some(s) => Some(
                    s.resolve(env)
                        .map_err(|e| anyhow::anyhow!("alerts.webhooks[{i}].secret: {}", e.message))?
                        .expose()
                        .as_bytes()
                        .to_vec(),
                ),
                None => None,
            });
        }
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let mailers = config.email.iter().enumerate().map(|(i, e)| Mailer::new(i, e, env)).collect::<Result<_>>()?;
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "-".into());
        Ok(Some(Notifier {
            inner: Arc::new(Inner {
                config: config.clone(),
                keys,
                client,
                mailers,
                last_sent: Mutex::new(HashMap::new()),
                host,
                sent: Arc::clone(sent),
            }),
        }))
    }

    /// Sends `alert` to every receiver in the background, unless its state does not alert or
    /// the same alert went out within `quiet_for`. Never waits for the receivers.
    pub fn send(&self, alert: RunAlert) {
        if !self.inner.config.on.contains(&alert.state) {
            return;
        }
        self.send_now(alert);
    }

    /// The periodic checks: each enabled, unpaused workflow without a successful run for
    /// `no_success_for` (counted from its oldest recorded run when it never succeeded, so a
    /// workflow that never ran says nothing), and each with more open failures than
    /// `open_failures_over`. Rate-limited like run alerts.
    pub async fn check(&self, ctx: &engine::workflow::Context) {
        let config = &self.inner.config;
        if config.no_success_for.is_none() && config.open_failures_over.is_none() && config.budget_used_over.is_none() {
            return;
        }
        let now = ctx.clock.now();
        if let Some(threshold) = config.budget_used_over {
            match ctx.store.budget_day(now.date_naive()).await {
                Ok(ledger) => {
                    if let Some(text) = budget_alert(&ledger, ctx.config.budget.daily_share, threshold) {
                        self.send_now(RunAlert {
                            workflow: "(all workflows)".into(),
                            state: "budget".into(),
                            run_id: None,
                            trigger: "check".into(),
                            written: 0,
                            failed: 0,
                            deferred: 0,
                            error: Some(text),
                            at: now,
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Alerts: could not read today's API budget"),
            }
        }
        for (name, _) in ctx.config.workflows.iter().filter(|(_, w)| w.enabled) {
            if engine::scheduler::is_paused(ctx.store.as_ref(), name).await.unwrap_or(false) {
                continue;
            }
            let alert = |state: &str, error: String| RunAlert {
                workflow: name.clone(),
                state: state.to_owned(),
                run_id: None,
                trigger: "check".into(),
                written: 0,
                failed: 0,
                deferred: 0,
                error: Some(error),
                at: now,
            };
            if let Some(limit) = config.no_success_for.and_then(|d| chrono::Duration::from_std(d).ok()) {
                match ctx.store.list_runs(Some(name), 500).await {
                    Ok(runs) => {
                        let real: Vec<&engine::store::Run> = runs.iter().filter(|r| !r.dry_run).collect();
                        let success = real
                            .iter()
                            .find(|r| r.state == engine::store::RunState::Succeeded)
                            .map(|r| r.finished_at.unwrap_or(r.started_at));
                        let since = success.or_else(|| real.last().map(|r| r.started_at));
                        if let Some(since) = since.filter(|s| now - *s > limit) {
                            let what = match success {
                                Some(_) => format!("has not succeeded since {}", since.format("%Y-%m-%d %H:%M UTC")),
                                None => {
                                    format!("has never succeeded (first run {})", since.format("%Y-%m-%d %H:%M UTC"))
                                }
                            };
                            self.send_now(alert(
                                "no_success",
                                format!(
                                    "usagesync: workflow {name} {what}, longer than alerts.no_success_for ({})",
                                    span(limit)
                                ),
                            ));
                        }
                    }
                    Err(e) => tracing::warn!(workflow = %name, error = %e, "Alerts: could not read the runs"),
                }
            }
            if let Some(max) = config.open_failures_over {
                match ctx.store.failure_groups(Some(name)).await {
                    Ok(groups) => {
                        let open: u64 = groups.iter().map(|(_, _, n)| n).sum();
                        if open > max {
                            self.send_now(alert(
                                "open_failures",
                                format!(
                                    "usagesync: workflow {name} has {open} open failures, over alerts.open_failures_over ({max}); see `usagesync failures`"
                                ),
                            ));
                        }
                    }
                    Err(e) => tracing::warn!(workflow = %name, error = %e, "Alerts: could not read the failures"),
                }
            }
        }
    }

    /// Sends whatever the state, subject to `quiet_for`.
    fn send_now(&self, alert: RunAlert) {
        let inner = &self.inner;
        {
            let mut sent = inner.last_sent.lock();
            let key = (alert.workflow.clone(), alert.state.clone());
            if sent.get(&key).is_some_and(|at| at.elapsed() < inner.config.quiet_for) {
                tracing::info!(workflow = %alert.workflow, state = %alert.state,
                    "Alert not sent: the same one went out less than alerts.quiet_for ago");
                return;
            }
            sent.insert(key, Instant::now());
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut outcome = Vec::new();
            for (i, hook) in inner.config.webhooks.iter().enumerate() {
                let body = match hook.format {
                    AlertFormat::Json => serde_json::json!({
                        "source": "usagesync",
                        "kind": "run",
                        "text": alert.text(),
                        "host": inner.host,
                        "run": alert,
                    }),
                    AlertFormat::Slack => serde_json::json!({"text": alert.text()}),
                };
                let body = body.to_string();
                let key = inner.keys.get(i).and_then(Option::as_ref);
                outcome.push(deliver(&inner.client, hook.url.as_str(), key.map(Vec::as_slice), body, &alert).await);
            }
            for mailer in &inner.mailers {
                outcome.push(mailer.deliver(&alert, &inner.host).await);
            }
            let sent = Sent {
                at: alert.at,
                workflow: alert.workflow.clone(),
                state: alert.state.clone(),
                text: alert.text(),
                outcome,
            };
            log_sent(&inner.sent, sent);
        });
    }
}

/// POSTs one body with retries; logs the outcome (the URL only by host: its path may be a
/// token, as in Slack's incoming webhooks).
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    key: Option<&[u8]>,
    body: String,
    alert: &RunAlert,
) -> (String, String) {
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let mut request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        if let Some(key) = key {
            request =
                request.header(SIGNATURE_HEADER, format!("sha256={}", pendo::webhook::sign(key, body.as_bytes())));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(workflow = %alert.workflow, state = %alert.state, receiver = %host, "Alert sent");
                let tries = if attempt == 1 { String::new() } else { format!(" (attempt {attempt})") };
                return (host, format!("delivered{tries}"));
            }
            Ok(r) => last_error = format!("HTTP {}", r.status()),
            Err(e) => last_error = e.without_url().to_string(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::warn!(workflow = %alert.workflow, state = %alert.state, receiver = %host, error = %last_error,
        "Alert not delivered after {ATTEMPTS} attempts");
    (host, format!("not delivered after {ATTEMPTS} attempts: {last_error}"))
}

/// One e-mail receiver, ready to send.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// How the console and the logs name this receiver: `e-mail via <server>:<port>`.
    label: String,
}

impl Mailer {
    fn new(i: usize, e: &AlertEmail, env: engine::connect::Env<'_>) -> Result<Mailer> {
        let key = |leaf: &str| format!("alerts.email[{i}].{leaf}");
        let mailbox = |text: &str, key: String| {
            text.parse::<Mailbox>()
                .map_err(|error| anyhow::anyhow!("{key}: `{text}` is not an e-mail address: {error}"))
        };
        let from = mailbox(&e.from, key("from"))?;
        let to =
            e.to.iter()
                .enumerate()
                .map(|(j, t)| mailbox(t, format!("alerts.email[{i}].to[{j}]")))
                .collect::<Result<Vec<_>>>()?;
        let tls = |required: bool| -> Result<Tls> {
            let params = TlsParameters::new(e.server.clone())
                .map_err(|error| anyhow::anyhow!("{}: TLS for {}: {error}", key("starttls"), e.server))?;
            Ok(if required { Tls::Required(params) } else { Tls::Opportunistic(params) })
        };
        let tls = match e.starttls {
            StartTls::Required => tls(true)?,
            StartTls::Optional => tls(false)?,
            StartTls::None => Tls::None,
        };
        // `builder_dangerous` only means "no TLS chosen for me": the line above chooses it.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.server)
            .port(e.port)
            .tls(tls)
            .timeout(Some(TIMEOUT));
        if let (Some(user), Some(password)) = (&e.username, &e.password) {
            let password =
                password.resolve(env).map_err(|error| anyhow::anyhow!("{}: {}", key("password"), error.message))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Mailer { transport: builder.build(), from, to, label: format!("e-mail via {}:{}", e.server, e.port) })
    }

    /// Sends one alert with retries, like [`deliver`]; the outcome for the console.
    async fn deliver(&self, alert: &RunAlert, host: &str) -> (String, String) {
        let message = match self.message(alert, host) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(workflow = %alert.workflow, state = %alert.state, receiver = %self.label,
                    error = %error, "Alert e-mail not built");
                return (self.label.clone(), format!("not sent: {error}"));
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(workflow = %alert.workflow, state = %alert.state, receiver = %self.label, "Alert sent");
                    let tries = if attempt == 1 { String::new() } else { format!(" (attempt {attempt})") };
                    return (self.label.clone(), format!("delivered{tries}"));
                }
                // A refusal that will not change (bad login, unknown recipient) is not retried.
                Err(error) if error.is_permanent() => {
                    last_error = error.to_string();
                    break;
                }
                Err(error) => last_error = error.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::warn!(workflow = %alert.workflow, state = %alert.state, receiver = %self.label, error = %last_error,
            "Alert e-mail not delivered");
        (self.label.clone(), format!("not delivered: {last_error}"))
    }

    /// Subject `usagesync: <workflow> <state>`; a plain-text body with the one-line summary
    /// and the run's facts (the same ones the JSON webhook carries).
    fn message(&self, alert: &RunAlert, host: &str) -> Result<lettre::Message> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!("usagesync: {} {}", alert.workflow, alert.state.replace('_', " ")))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mut body = format!("{}\n\n", alert.text());
        let mut fact = |name: &str, value: &dyn std::fmt::Display| body.push_str(&format!("{name:<10} {value}\n"));
        fact("workflow", &alert.workflow);
        fact("state", &alert.state);
        if let Some(run) = &alert.run_id {
            fact("run", run);
        }
        fact("trigger", &alert.trigger);
        if alert.trigger != "check" {
            fact("written", &alert.written);
            fact("failed", &alert.failed);
            fact("deferred", &alert.deferred);
        }
        fact("at", &alert.at.format("%Y-%m-%d %H:%M:%S UTC"));
        fact("host", &host);
        Ok(builder.body(body)?)
    }
}

/// `26h`, `90m`, `45s`: the largest unit that divides the span exactly.
fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    match secs {
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The budget alert's text when usagesync has used (or reserved) `threshold` of its share of
/// today's allocation; `None` below it, or before any run has read the org's allocation.
fn budget_alert(ledger: &engine::store::BudgetDay, share: f64, threshold: f64) -> Option<String> {
    // Truncated, as the engine computes its cap.
    let cap = (ledger.org_max? as f64 * share).floor();
    let used = (ledger.spent + ledger.reserved) as f64;
    (cap > 0.0 && used >= cap * threshold).then(|| {
        format!(
            "usagesync: {used:.0} of today's {cap:.0} API calls used or reserved ({:.0}%), over alerts.budget_used_over ({:.0}%); later runs defer what does not fit",
            used / cap * 100.0,
            threshold * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::budget_alert;

    #[test]
    fn the_budget_alert_fires_at_its_share_of_the_cap_and_not_before_the_allocation_is_known() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap_or_default();
        let ledger = |spent, reserved, org_max| engine::store::BudgetDay {
            day,
            reserved,
            spent,
            by_workflow: Default::default(),
            org_used: None,
            org_max,
            observed_at: None,
        };
        // A quarter of 100,000 is 25,000; 90% of it is 22,500.
        assert!(budget_alert(&ledger(22_000, 0, Some(100_000)), 0.25, 0.9).is_none());
        let text = budget_alert(&ledger(22_000, 500, Some(100_000)), 0.25, 0.9).unwrap_or_default();
        assert!(text.contains("22500 of today's 25000") && text.contains("(90%)"), "{text}");
        assert!(budget_alert(&ledger(90_000, 0, None), 0.25, 0.9).is_none());
    }
}
