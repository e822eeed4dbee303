//! `usagesync run`: the daemon. It runs every enabled workflow on its cron schedule (in the
//! workflow's time zone), at most one run per workflow at a time and one worker per fire time
//! across processes sharing a store (the scheduler claims through the store), and serves
//! `/healthz`, `/metrics`, the Pendo webhook receiver (`POST /webhooks/pendo`) and, with a
//! `console:` section, the web console (`/console/`, see `crate::console`); a stored
//! webhook wakes the nps-realtime inbox consumer (`engine::workflow::nps::consume`), which runs
//! beside the schedules; a stored `visitorFirstSeen` or `accountFirstSeen` webhook starts the
//! new-users workflows within seconds ([`first_seen_runs`]). On SIGINT or SIGTERM it stops starting runs, lets the runs in flight finish within
//! the grace period, and exits; a run still going after that is abandoned safely: nothing it had
//! not recorded counts as written, so the next run sends it again. On SIGHUP, or when the
//! config file changes, it re-reads the config and, if it loads, schedules from it (see
//! [`reload`]). Every hour it prunes history older than `retention.history_days`
//! ([`prune_history`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use engine::scheduler::{self, Claim};
use engine::store::{RunFinish, RunState};
use engine::workflow::{Context, RunError, RunOptions};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinSet;

use super::alerts::{Notifier, RunAlert};
use super::context;

/// What `/healthz` says of each workflow.
#[derive(Debug, Clone, Default, Serialize)]
struct WorkflowStatus {
    schedule: String,
    timezone: String,
    running: bool,
    /// When this worker started the run in flight: runs it abandons at shutdown are the ones
    /// of this workflow still `running` in the store that began since.
    running_since: Option<DateTime<Utc>>,
    next_run: Option<DateTime<Utc>>,
    last_run: Option<String>,
    last_state: Option<String>,
    last_finished: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

type Status = Arc<Mutex<BTreeMap<String, WorkflowStatus>>>;

pub async fn run(config_path: &std::path::Path, listen: SocketAddr, grace: Duration) -> Result<u8> {
    let config = context::load_config(config_path)?;
    let ctx = context::build(config, &context::env_var).await?;
    let status: Status = Arc::new(Mutex::new(
        ctx.config
            .workflows
            .iter()
            .filter(|(_, w)| w.enabled)
            .map(|(name, w)| {
                let s = WorkflowStatus {
                    schedule: w.schedule.pattern.to_string(),
                    timezone: w.timezone.name().to_owned(),
                    ..Default::default()
                };
                (name.clone(), s)
            })
            .collect(),
    ));
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("Failed to listen on {listen}"))?;
    let addr = listener.local_addr().context("Failed to read the bound address")?;
    let secret = match &ctx.config.webhooks.secret {
        Some(s) => Some(Arc::new(
            s.resolve(&context::env_var)
                .map_err(|e| anyhow::anyhow!("webhooks.secret: {}", e.message))?
                .expose()
                .as_bytes()
                .to_vec(),
        )),
        None => None,
    };
    let sent: super::alerts::SentLog = Arc::default();
    let mut alerts = super::alerts::Notifier::new(ctx.config.alerts.as_ref(), &context::env_var, &sent)?;
    let limit = usize::try_from(ctx.config.webhooks.max_body_bytes).unwrap_or(usize::MAX);
    let mut console = crate::console::mount(&ctx, &context::env_var, &sent).await?;
    // nps-realtime writes the inbox continuously; a stored webhook wakes it.
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_consumer, consumer_stop) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(engine::workflow::nps::consume(
        ctx.clone(),
        context::run_lease(),
        Arc::clone(&wake),
        consumer_stop,
    ));
    // Webhooks are stored in groups, one transaction per group (see engine::store::group_commit).
    let (inbox, inbox_task) = engine::store::group_commit::InboxWriter::spawn(Arc::clone(&ctx.store), MAX_QUEUED);
    let first_seen = Arc::new(tokio::sync::Notify::new());
    let first_seen_task = tokio::spawn(first_seen_runs(
        ctx.clone(),
        Arc::clone(&first_seen),
        FIRST_SEEN_SETTLE,
        stop_consumer.subscribe(),
    ));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/webhooks/pendo", post(webhook).layer(DefaultBodyLimit::max(limit)))
        .with_state(AppState {
            status: Arc::clone(&status),
            ctx: ctx.clone(),
            secret,
            wake: Arc::clone(&wake),
            first_seen,
            pressure: Arc::new(Pressure::new(ctx.config.webhooks.max_pending)),
            inbox,
        })
        .merge(console.router());
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The peer's address lets the console throttle wrong tokens per client.
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = server_stopped.await;
            })
            .await
    });
    println!("usagesync daemon listening on http://{addr} ({} workflows)", status.lock().len());

    let mut runs: JoinSet<()> = JoinSet::new();
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Runs of dead workers are marked abandoned by the next claim anyway; sweeping here too
    // keeps history and the console honest while no run starts for a while.
    let mut sweep = tokio::time::interval(context::run_lease().heartbeat);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The config is re-read on SIGHUP and when the file changes (checked every 2 s); the
    // schedules below always use the latest config that loaded.
    let mut ctx = ctx;
    let mut hangup = Hangup::new();
    let mut watch = tokio::time::interval(CONFIG_CHECK);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = modified(config_path);
    let (prune_first, prune_every) = prune_schedule();
    let mut prune = tokio::time::interval_at(tokio::time::Instant::now() + prune_first, prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                schedule_due(&ctx, &status, alerts.as_ref(), &mut runs).await;
                while runs.try_join_next().is_some() {}
            }
            _ = sweep.tick() => {
                sweep_abandoned(&ctx).await;
                if let Some(alerts) = &alerts {
                    alerts.check(&ctx).await;
                }
            }
            _ = prune.tick() => {
                // In the background: a first prune of a large store takes a while, and must not
                // hold up schedules. One at a time; workers sharing a store may overlap, which
                // only means one of them finds less to delete.
                if pruning.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                    pruning = Some(tokio::spawn(prune_history(ctx.clone())));
                }
            }
            () = hangup.recv() => {
                seen = modified(config_path);
                reload(config_path, "SIGHUP", &mut ctx, &status, &mut alerts, &sent);
            }
            _ = watch.tick() => {
                let now = modified(config_path);
                if now != seen {
                    seen = now;
                    reload(config_path, "the file changed", &mut ctx, &status, &mut alerts, &sent);
                }
            }
        }
    }
    let _ = stop_consumer.send(true);
    let in_flight = runs.len();
    if in_flight > 0 {
        eprintln!("Stopping: waiting up to {}s for {in_flight} run(s) in flight.", grace.as_secs());
    }
    let finished = tokio::time::timeout(grace, async {
        while runs.join_next().await.is_some() {}
        let _ = consumer.await;
        let _ = first_seen_task.await;
    })
    .await;
    let code = if finished.is_err() {
        eprintln!(
            "Stopping: {} run(s) abandoned after the grace period; their unrecorded writes go again next run.",
            runs.len()
        );
        runs.abort_all();
        cancel_abandoned(&ctx, &status).await;
        1
    } else {
        0
    };
    let _ = stop_server.send(());
    let _ = server.await;
    // The server (and with it every handle on the writer) is gone: what was queued is stored.
    let _ = tokio::time::timeout(Duration::from_secs(5), inbox_task).await;
    console.stop().await;
    eprintln!("Stopped.");
    Ok(code)
}

/// How often the daemon looks at the config file's modification time.
const CONFIG_CHECK: Duration = Duration::from_secs(2);

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// SIGHUP, where the platform has it.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Re-reads the config. A file that does not load, or whose secrets for alerts cannot be
/// read, changes nothing: the running config stays and the log says why. Connections, the
/// store, the webhook receiver and the console are set up once at start, so a change to them
/// is refused with the same rule (restart to apply it). Otherwise the new workflows,
/// schedules (each recomputed from its new cron by the scheduler), budget, verify and alerts
/// apply to every run started from now on; runs in flight finish with the config they began with.
fn reload(
    path: &std::path::Path,
    why: &str,
    ctx: &mut Context,
    status: &Status,
    alerts: &mut Option<Notifier>,
    sent: &super::alerts::SentLog,
) {
    let config = match context::load_config(path) {
        Ok(config) => config,
        Err(e) => {
            // One line, so a log shipper keeps the reasons with the event.
            let reasons = e.to_string().trim().replace('\n', "; ");
            tracing::error!("Config not reloaded ({why}); the running config stays: {reasons}");
            return;
        }
    };
    let fixed =
        |c: &engine::config::Config| format!("{:?} {:?} {:?} {:?}", c.connections, c.store, c.webhooks, c.console);
    if fixed(&config) != fixed(&ctx.config) {
        tracing::error!(
            "Config not reloaded ({why}): connections, store, webhooks or console changed, and those \
             are set up at start; restart the daemon to apply them. The running config stays."
        );
        return;
    }
    let notifier = match super::alerts::Notifier::new(config.alerts.as_ref(), &context::env_var, sent) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("Config not reloaded ({why}); the running config stays: {e:#}");
            return;
        }
    };
    {
        let mut all = status.lock();
        let old = std::mem::take(&mut *all);
        for (name, w) in config.workflows.iter().filter(|(_, w)| w.enabled) {
            let mut s = old.get(name).cloned().unwrap_or_default();
            let schedule = w.schedule.pattern.to_string();
            let timezone = w.timezone.name().to_owned();
            if s.schedule != schedule || s.timezone != timezone {
                // Computed again by the scheduler from the new cron at its next tick.
                s.next_run = None;
            }
            s.schedule = schedule;
            s.timezone = timezone;
            all.insert(name.clone(), s);
        }
    }
    *alerts = notifier;
    let enabled = config.workflows.values().filter(|w| w.enabled).count();
    *ctx = Context { config: Arc::new(config), ..ctx.clone() };
    tracing::info!(enabled, "Config reloaded");
    eprintln!("Config reloaded ({why}): {enabled} workflow(s) enabled; runs started from now on use it.");
}

/// Marks the runs aborted after the grace period `cancelled` in the store, so history and the
/// console do not show them running forever. What they had not recorded was never counted as
/// written, so the next run sends it again.
async fn cancel_abandoned(ctx: &Context, status: &Status) {
    let in_flight: Vec<(String, DateTime<Utc>)> = status
        .lock()
        .iter()
        .filter_map(|(name, s)| s.running_since.filter(|_| s.running).map(|since| (name.clone(), since)))
        .collect();
    for (name, since) in in_flight {
        let runs = match ctx.store.list_runs(Some(&name), 20).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!(workflow = %name, error = %e, "Failed to read runs to cancel");
                continue;
            }
        };
        for run in runs.into_iter().filter(|r| r.state == RunState::Running && r.started_at >= since) {
            let finish = RunFinish {
                state: RunState::Cancelled,
                finished_at: ctx.clock.now(),
                stats: run.stats.clone(),
                error: Some("abandoned at shutdown after the grace period; unrecorded writes go again next run".into()),
            };
            match ctx.store.finish_run(run.id, &finish).await {
                Ok(()) => tracing::warn!(workflow = %name, run = %run.id, "Run cancelled at shutdown"),
                Err(e) => tracing::error!(workflow = %name, run = %run.id, error = %e, "Failed to cancel a run"),
            }
        }
    }
}

/// How often the daemon prunes history, and the first time after start (not at once: a
/// restart loop must not prune in a loop, and startup stays quick).
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
const PRUNE_FIRST: Duration = Duration::from_secs(60);

/// Shortens the prune interval (both delays, in ms) in the binary's own tests; read in debug
/// builds only.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const TEST_PRUNE_EVERY_ENV: &str = "USAGESYNC_TEST_PRUNE_EVERY_MS";

fn prune_schedule() -> (Duration, Duration) {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(TEST_PRUNE_EVERY_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|ms| *ms > 0)
    {
        return (Duration::from_millis(ms), Duration::from_millis(ms));
    }
    (PRUNE_FIRST, PRUNE_EVERY)
}

/// Deletes history past `retention.history_days` and logs what went.
async fn prune_history(ctx: Context) {
    match super::prune::prune(ctx.store.as_ref(), ctx.config.retention, ctx.clock.now(), false, false).await {
        Ok(report) => tracing::info!(
            runs = report.pruned.runs,
            outcomes = report.pruned.outcomes,
            failures = report.pruned.failures,
            inbox_events = report.pruned.inbox_events,
            budget_rows = report.pruned.budget_rows,
            released_bytes = report.released_bytes,
            cutoff = %report.cutoff,
            "Pruned history"
        ),
        Err(e) => tracing::error!(error = %e, "Failed to prune history"),
    }
}

/// Marks the runs whose lease lapsed (their worker died) abandoned.
async fn sweep_abandoned(ctx: &Context) {
    match ctx.store.sweep_expired_runs(ctx.clock.now()).await {
        Ok(runs) => {
            for run in runs {
                tracing::warn!(workflow = %run.workflow, run = %run.id, holder = run.holder.as_deref().unwrap_or("-"),
                    "Marked a run abandoned: its lease expired");
            }
        }
        Err(e) => tracing::error!(error = %e, "Failed to sweep runs with expired leases"),
    }
}

/// Starts a run of every workflow whose schedule this worker claims now.
async fn schedule_due(ctx: &Context, status: &Status, alerts: Option<&Notifier>, runs: &mut JoinSet<()>) {
    // The engine's clock, so a daemon started with USAGESYNC_NOW fires its schedules then.
    let now = ctx.clock.now();
    for (name, workflow) in ctx.config.workflows.iter().filter(|(_, w)| w.enabled) {
        if status.lock().get(name).is_some_and(|s| s.running) {
            continue;
        }
        let claim = scheduler::claim(ctx.store.as_ref(), name, &workflow.schedule, workflow.timezone, now).await;
        let (due, next) = match claim {
            Ok(Claim::Run { due, next }) => (Some(due), next),
            Ok(Claim::Wait { next }) => (None, next),
            Err(e) => {
                tracing::error!(workflow = %name, error = %e, "Failed to read the schedule");
                continue;
            }
        };
        {
            let mut s = status.lock();
            if let Some(s) = s.get_mut(name) {
                s.next_run = next;
                s.running = due.is_some();
                s.running_since = due.map(|_| now);
            }
        }
        let Some(due) = due else { continue };
        tracing::info!(workflow = %name, due = %due, "Starting a scheduled run");
        let ctx = ctx.clone();
        let status = Arc::clone(status);
        let name = name.clone();
        let alerts = alerts.cloned();
        runs.spawn(async move {
            let options =
                RunOptions { dry_run: false, trigger: "schedule".into(), progress: None, lease: context::run_lease() };
            let result = engine::workflow::run(&ctx, &name, &options).await;
            let alert = |state: &str, error: Option<String>, report: Option<&engine::workflow::RunReport>| RunAlert {
                workflow: name.clone(),
                state: state.to_owned(),
                run_id: report.and_then(|r| r.run_id).map(|id| id.to_string()),
                trigger: "schedule".into(),
                written: report.map_or(0, |r| r.written),
                failed: report.map_or(0, |r| r.failed),
                deferred: report.map_or(0, |r| r.deferred),
                error,
                at: ctx.clock.now(),
            };
            // Every scheduled run that did not succeed is logged at warn (seen at the default
            // level) and, with `alerts:`, sent on; a busy slot is neither.
            let outcome = match &result {
                Ok(report) if report.state == "succeeded" => None,
                Ok(report) => Some(alert(&report.state, None, Some(report))),
                Err(RunError::Busy { .. }) => None,
                Err(e) if e.is_deferral() => Some(alert("deferred", Some(e.to_string()), None)),
                Err(e) => Some(alert("failed", Some(e.to_string()), None)),
            };
            if let Some(a) = outcome {
                tracing::warn!(workflow = %a.workflow, state = %a.state, run = a.run_id.as_deref().unwrap_or("-"),
                    written = a.written, failed = a.failed, deferred = a.deferred, "{}", a.text());
                if let Some(alerts) = &alerts {
                    alerts.send(a);
                }
            }
            let mut all = status.lock();
            let Some(s) = all.get_mut(&name) else { return };
            s.running = false;
            s.running_since = None;
            s.last_finished = Some(Utc::now());
            match result {
                Ok(report) => {
                    tracing::info!(workflow = %name, state = %report.state, written = report.written,
                        failed = report.failed, api_calls = report.total_api_calls(), "Run finished");
                    s.last_run = report.run_id.map(|id| id.to_string());
                    s.last_state = Some(report.state);
                    s.last_error = None;
                }
                // Another worker sharing the store runs this workflow: this slot is its, not
                // a failure, and the last run's state stays what it was.
                Err(RunError::Busy { run_id, holder, .. }) => {
                    tracing::info!(workflow = %name, run = %run_id, holder = %holder,
                        "Skipped a scheduled run: another worker is running this workflow");
                }
                Err(e) => {
                    s.last_state = Some(if e.is_deferral() { "deferred" } else { "failed" }.into());
                    s.last_error = Some(e.to_string());
                }
            }
        });
    }
}

#[derive(Clone)]
struct AppState {
    status: Status,
    ctx: Context,
    /// The webhook HMAC key, resolved once at start; never logged.
    secret: Option<Arc<Vec<u8>>>,
    wake: Arc<tokio::sync::Notify>,
    /// Wakes [`first_seen_runs`].
    first_seen: Arc<tokio::sync::Notify>,
    pressure: Arc<Pressure>,
    inbox: engine::store::group_commit::InboxWriter,
}

/// How long a first-seen webhook waits before its run starts, so a burst of new people (a
/// customer rolling out to a team) costs one run, not one per person.
const FIRST_SEEN_SETTLE: Duration = Duration::from_secs(2);

/// New users in seconds: each wake (a stored `visitorFirstSeen` or `accountFirstSeen` webhook)
/// starts every enabled new-users-to-contacts workflow after `settle`. It is the same run the
/// schedule makes (lease, cursor, exactly-once creates, budget), so nothing is guaranteed twice
/// and the scheduled poll stays as reconciliation for webhooks that never came. Wakes during a
/// run coalesce into one more run after it; a run another worker holds is waited out, since it
/// may have read Pendo before this person existed.
async fn first_seen_runs(
    ctx: Context,
    wake: Arc<tokio::sync::Notify>,
    settle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let workflows: Vec<String> = ctx
        .config
        .workflows
        .values()
        .filter(|w| w.enabled && matches!(w.template, engine::config::Template::NewUsersToContacts(_)))
        .map(|w| w.name.clone())
        .collect();
    if workflows.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            () = wake.notified() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(settle) => {}
            _ = stop.changed() => return,
        }
        for name in &workflows {
            // Busy: wait for the run in flight (bounded by its lease), then run after it.
            for _ in 0..120 {
                if *stop.borrow() {
                    return;
                }
                let options = RunOptions {
                    dry_run: false,
                    trigger: "webhook".into(),
                    progress: None,
                    lease: context::run_lease(),
                };
                match engine::workflow::run(&ctx, name, &options).await {
                    Ok(report) => {
                        tracing::info!(workflow = %name, state = %report.state, written = report.written,
                            failed = report.failed, "New users run after a first-seen webhook");
                        break;
                    }
                    Err(RunError::Busy { .. }) => {
                        tokio::select! {
                            () = tokio::time::sleep(settle) => {}
                            _ = stop.changed() => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workflow = %name, error = %e,
                            "New users run after a first-seen webhook failed; the scheduled poll catches up");
                        break;
                    }
                }
            }
        }
    }
}

/// Deliveries waiting for their group's commit, at most: past it the receiver answers 503 at
/// once rather than hold more bodies in memory (the store has stalled; a commit takes
/// milliseconds). Two seconds of deliveries at 1,000/s.
const MAX_QUEUED: usize = 2_048;
/// How long a read of the inbox depth stands for the back-pressure check, so a burst of
/// webhooks costs one count query per interval, not one per delivery.
const DEPTH_FRESH_FOR: Duration = Duration::from_millis(250);

/// The receiver's back-pressure: the inbox depth (all workers' pending events, read from the
/// store at most every [`DEPTH_FRESH_FOR`], plus what this process stored since) against
/// `webhooks.max_pending`. (Deliveries waiting for their commit are bounded by [`MAX_QUEUED`].)
struct Pressure {
    max_pending: u64,
    /// (when read, depth then, stored by this process since)
    depth: Mutex<(Option<std::time::Instant>, u64, u64)>,
    refused: std::sync::atomic::AtomicU64,
}

impl Pressure {
    fn new(max_pending: u64) -> Pressure {
        Pressure { max_pending, depth: Mutex::new((None, 0, 0)), refused: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether the inbox is full. A store that cannot be read counts as not full: storing the
    /// event then fails (503) or succeeds on its own terms.
    async fn full(&self, ctx: &Context) -> bool {
        let stale = {
            let d = self.depth.lock();
            d.0.is_none_or(|at| at.elapsed() > DEPTH_FRESH_FOR)
        };
        if stale {
            let cap = u32::try_from(self.max_pending).unwrap_or(u32::MAX);
            match ctx.store.pending_depth(cap).await {
                Ok(n) => *self.depth.lock() = (Some(std::time::Instant::now()), n, 0),
                Err(e) => tracing::warn!(error = %e, "Failed to read the inbox depth"),
            }
        }
        let d = self.depth.lock();
        d.1 + d.2 >= self.max_pending
    }

    fn stored(&self) {
        self.depth.lock().2 += 1;
    }

    fn refuse(&self, retry_after_secs: u64, reason: &str) -> Response {
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, reason);
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
        r
    }
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({"error": reason.into()}))).into_response()
}

/// `POST /webhooks/pendo`: verify, parse, store, then answer. Only a stored event gets a 2xx,
/// so Pendo's retries cover every failure before that; a repeat of a stored `uniqueId` is a
/// 200 no-op. Bodies over `webhooks.max_body_bytes` get 413 before they are read whole. Events
/// are stored in groups (one commit for every delivery waiting), and each is answered once its
/// group is committed. Under overload (the inbox at `webhooks.max_pending`, or [`MAX_QUEUED`]
/// deliveries waiting for a commit) it answers 503 with `Retry-After` and stores nothing: the
/// sender keeps the event. 503, not 429: the sender did nothing wrong, this receiver is busy,
/// and every webhook sender retries a 5xx after a while.
async fn webhook(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &app.ctx.config.webhooks;
    if let Some(secret) = &app.secret {
        let Some(signature) = headers.get(config.signature_header.as_str()).and_then(|v| v.to_str().ok()) else {
            return refuse(StatusCode::UNAUTHORIZED, format!("missing {} header", config.signature_header));
        };
        if !pendo::webhook::verify_signature(secret, &body, signature) {
            return refuse(StatusCode::UNAUTHORIZED, format!("{} does not match the body", config.signature_header));
        }
    }
    let event = match pendo::webhook::WebhookEvent::parse(&body) {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not a Pendo webhook event: {e}")),
    };
    if event.unique_id.trim().is_empty() || event.unique_id.len() > 200 {
        return refuse(StatusCode::BAD_REQUEST, "uniqueId must be present and at most 200 characters");
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    if app.pressure.full(&app.ctx).await {
        return app.pressure.refuse(5, "the inbox is full (webhooks.max_pending); send it again later");
    }
    let stored = engine::store::InboxEvent {
        unique_id: event.unique_id.clone(),
        source: "pendo".into(),
        kind: event.event.clone(),
        received_at: Utc::now(),
        body: json,
    };
    match app.inbox.put(stored).await {
        Ok(true) => {
            app.pressure.stored();
            app.wake.notify_one();
            if matches!(
                event.kind(),
                pendo::webhook::EventKind::VisitorFirstSeen | pendo::webhook::EventKind::AccountFirstSeen
            ) {
                app.first_seen.notify_one();
            }
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"stored": event.unique_id}))).into_response()
        }
        Ok(false) => (StatusCode::OK, axum::Json(serde_json::json!({"duplicate": event.unique_id}))).into_response(),
        Err(engine::store::group_commit::PutError::Full(_)) => {
            app.pressure.refuse(1, "too many deliveries are waiting to be stored; send it again")
        }
        Err(e) => {
            tracing::error!(error = %e, "Failed to store a webhook event");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "the event could not be stored; send it again")
        }
    }
}

async fn healthz(State(app): State<AppState>) -> axum::Json<serde_json::Value> {
    let workflows = app.status.lock().clone();
    axum::Json(serde_json::json!({"status": "ok", "workflows": workflows}))
}

async fn metrics(State(app): State<AppState>) -> Response {
    let running: Vec<String> = app.status.lock().iter().filter(|(_, s)| s.running).map(|(n, _)| n.clone()).collect();
    match super::metrics::render(&app.ctx, &running).await {
        Ok(mut text) => {
            use std::fmt::Write as _;
            // This process's own count: refusals store nothing, so the store cannot sum them.
            let _ = writeln!(
                text,
                "# HELP usagesync_webhook_refused_total Deliveries this process answered 503 because the inbox was full \
                 or too many were being stored.\n# TYPE usagesync_webhook_refused_total counter\n\
                 usagesync_webhook_refused_total {}",
                app.pressure.refused.load(std::sync::atomic::Ordering::Relaxed)
            );
            let _ = writeln!(
                text,
                "# HELP usagesync_webhook_max_pending The inbox depth at which deliveries are refused.\n\
                 # TYPE usagesync_webhook_max_pending gauge\nusagesync_webhook_max_pending {}",
                app.pressure.max_pending
            );
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("state store unavailable: {e}\n")).into_response(),
    }
}
