//! Alerts from the daemon: when a scheduled run ends in a state the config's `alerts.on` names
//! (failed, partial, deferred by default), a JSON message is POSTed to each `alerts.webhooks`
//! receiver, signed with HMAC-SHA256 when a secret is given. Sending happens on a task of its
//! own with a few retries, so a slow or dead receiver never holds a run or the scheduler; the
//! same workflow ending in the same state again within `alerts.quiet_for` sends nothing more.
//! Messages carry facts about the run (names, counts, the error text), never a secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use engine::config::{AlertFormat, Alerts};
use parking_lot::Mutex;
use serde::Serialize;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when a receiver has a secret.
pub const SIGNATURE_HEADER: &str = "X-Usagesync-Signature";
/// Attempts per receiver and message (the first and the retries).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(10);

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
            other => format!("ended {other}{}", self.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()),
        };
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
    /// (workflow, state) → when an alert for it was last sent.
    last_sent: Mutex<HashMap<(String, String), Instant>>,
    host: String,
}

impl Notifier {
    /// `None` without an `alerts:` section. Secrets are read here, so a missing one stops the
    /// daemon at start rather than at the first failure.
    pub fn new(config: Option<&Alerts>, env: engine::connect::Env<'_>) -> Result<Option<Notifier>> {
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
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "-".into());
        Ok(Some(Notifier {
            inner: Arc::new(Inner {
                config: config.clone(),
                keys,
                client,
                last_sent: Mutex::new(HashMap::new()),
                host,
            }),
        }))
    }

    /// Sends `alert` to every receiver in the background, unless its state does not alert or
    /// the same alert went out within `quiet_for`. Never waits for the receivers.
    pub fn send(&self, alert: RunAlert) {
        let inner = &self.inner;
        if !inner.config.on.contains(&alert.state) {
            return;
        }
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
                deliver(&inner.client, hook.url.as_str(), key.map(Vec::as_slice), body, &alert).await;
            }
        });
    }
}

/// POSTs one body with retries; logs the outcome (the URL only by host: its path may be a
/// token, as in Slack's incoming webhooks).
async fn deliver(client: &reqwest::Client, url: &str, key: Option<&[u8]>, body: String, alert: &RunAlert) {
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
                return;
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
}
