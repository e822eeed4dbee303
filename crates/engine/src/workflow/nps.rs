//! The nps-realtime template: NPS responses from the webhook inbox onto Contacts within the
//! batching window, the Account health score recomputed, detractors routed to a follow-up Task
//! or Case; and reconciliation, which polls Pendo `pollEvents` since a cursor and feeds the
//! responses whose webhook never arrived into the same inbox.
//!
//! Exactly-once comes from three keys, not from luck: an inbox event is marked processed only
//! after Salesforce accepted its writes (or its failure is kept in the failure store); every
//! response has a key `nps:<seconds>:<visitor>` shared by its webhook and its poll rows, kept in
//! the idempotency ledger once handled so reconciliation skips what the webhook delivered; and the
//! follow-up goes through the create stage ([`super::create::make`]) under a key of its own, so
//! processing a response twice (after a crash between the Salesforce write and the inbox update)
//! makes one record, and a follow-up someone has worked since (Completed, reassigned) is adopted
//! as it is, never written again. A Contact whose date field already holds the response's time
//! (or a later one) is not written again.
//!
//! Every worker sharing a store consumes its inbox: a batch is the events one worker claimed
//! (`InboxStore::claim_events`) under a lease its heartbeat renews, so workers never write the
//! same event twice at once, and the events of a worker killed mid-batch are taken over by
//! another once its lease lapses. While one worker holds any event of a visitor or a Pendo
//! account, no other worker claims that visitor's or account's events: the Contact's date is
//! read and then written by one worker at a time, so an older answer never overwrites a newer
//! one (the batch that writes second sees the newer date and skips), and an Account's health
//! score is recomputed by one worker at a time. Within a process, the consumer and a scheduled
//! or CLI run take turns on a lock (one batch in flight per process). A worker alive but
//! starved past its lease may have its batch taken over: both may write (harmlessly), but the
//! record stage records, commits and marks only the events its claimer still holds, in the one
//! transaction that finds which those are ([`crate::store::InboxStore::record_held`]), so each
//! answer is recorded by exactly one of them, and a crash records a batch whole or not at all.

use crate::config::template;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use super::{Context, FailureSample, Meter, RunError, RunOptions, RunReport, Sample};
use crate::config::{ContactMatch, FollowUpObject, NpsConfig, OwnerSource, Template, Workflow};
use crate::preflight::Quarantine;
use crate::store::{
    Action, CreateState, FieldChange, HeldRecord, InboxEvent, NewRun, RecordOutcome, RunFinish, RunId, RunState,
};

/// Events taken from the inbox per batch at most. A batch's queries go in `IN` lists of
/// [`IN_CHUNK`] and its writes in Collections calls of 200, so the cap bounds a batch's
/// duration, not a request's size; under a backlog it lets one worker write ~1,000 answers/s.
pub const MAX_BATCH: u32 = 1_000;
/// How often the consumer looks at the inbox without being woken (events stored by another
/// process, or left pending by a failed batch).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Reconciliation re-reads this much before its cursor: poll rows can land late.
const RECONCILE_OVERLAP_MS: i64 = 10 * 60 * 1000;
/// Without a cursor, reconciliation starts this far back.
const RECONCILE_FIRST_LOOKBACK_MS: i64 = 60 * 60 * 1000;
const CURSOR: &str = "poll_events";
/// Pendo visitor look-ups in flight at once.
const PENDO_CONCURRENCY: usize = 16;
const EVENT: &str = "npsSubmitted";

/// Serializes inbox processing within the process (the consumer and a scheduled or CLI run).
static PROCESSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One NPS answer, from a webhook or from poll rows.
#[derive(Debug, Clone)]
struct Response {
    key: String,
    inbox_ids: Vec<String>,
    visitor_id: String,
    rating: i64,
    comment: String,
    time: DateTime<Utc>,
}

/// What one batch did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BatchReport {
    pub events: usize,
    pub responses: usize,
    pub contacts_updated: usize,
    pub unchanged: usize,
    pub unmatched: usize,
    pub ambiguous: usize,
    pub accounts_updated: usize,
    pub follow_ups: usize,
    pub failed: usize,
    pub ignored: usize,
    pub api_calls: BTreeMap<String, u64>,
    #[serde(skip)]
    samples: Vec<Sample>,
    #[serde(skip)]
    failures: Vec<FailureSample>,
    /// Responses a transient refusal (lock contention past the delivery stage's retries) kept
    /// from being written: their events stay pending and a later batch writes them.
    #[serde(skip)]
    retry_later: HashSet<String>,
    /// Answers left for a later batch that way.
    pub waiting: usize,
    /// Answers whose events another worker took over before this batch recorded them (its
    /// claim lapsed): written to Salesforce here perhaps, but recorded by the taker.
    pub taken_over: usize,
    /// The answers (response keys) of each Account this batch recomputes: an Account's outcome
    /// is this batch's to record while it holds any of them.
    #[serde(skip)]
    answers_of_account: HashMap<String, Vec<String>>,
    /// Seconds per step of this batch (the Pendo look-ups, each Salesforce step, recording in
    /// the store): where an answer's time goes, in the run's stats and the log.
    pub timings: Vec<(String, f64)>,
}

impl BatchReport {
    fn add(&mut self, other: BatchReport) {
        self.events += other.events;
        self.responses += other.responses;
        self.contacts_updated += other.contacts_updated;
        self.unchanged += other.unchanged;
        self.unmatched += other.unmatched;
        self.ambiguous += other.ambiguous;
        self.accounts_updated += other.accounts_updated;
        self.follow_ups += other.follow_ups;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.waiting += other.waiting;
        self.taken_over += other.taken_over;
        for (k, v) in other.api_calls {
            *self.api_calls.entry(k).or_default() += v;
        }
        self.samples.extend(other.samples.into_iter().take(10usize.saturating_sub(self.samples.len())));
        self.failures.extend(other.failures.into_iter().take(10usize.saturating_sub(self.failures.len())));
    }
}

/// The response key: the same for a webhook and the poll rows of one answer.
fn response_key(visitor: &str, time_secs: i64) -> String {
    let key = format!("nps:{time_secs}:{visitor}");
    if key.len() <= 200 {
        return key;
    }
    let digest = Sha256::digest(visitor.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("nps:{time_secs}:sha256:{hex}")
}

fn parse_event(event: &InboxEvent) -> Option<Response> {
    let parsed: pendo::webhook::WebhookEvent = serde_json::from_value(event.body.clone()).ok()?;
    let nps = parsed.properties.nps.as_ref()?;
    let visitor_id = parsed.visitor_id.clone().filter(|v| !v.trim().is_empty())?;
    if !(0..=10).contains(&nps.rating) {
        return None;
    }
    let time = DateTime::from_timestamp(parsed.timestamp, 0)?;
    Some(Response {
        key: response_key(&visitor_id, parsed.timestamp),
        inbox_ids: vec![event.unique_id.clone()],
        visitor_id,
        rating: nps.rating,
        comment: nps.reason.clone(),
        time,
    })
}

/// The enabled nps-realtime workflow, if the config has one (the first wins).
pub fn inbox_workflow(ctx: &Context) -> Option<(&Workflow, &NpsConfig)> {
    ctx.config.workflows.values().filter(|w| w.enabled).find_map(|w| match &w.template {
        Template::NpsRealtime(c) => Some((w, c)),
        _ => None,
    })
}

/// What a consumer keeps between batches: visitor e-mails as read from Pendo (lower-cased; a
/// visitor answering again costs no Pendo call), and the workflow's preflight against the org,
/// described once per [`PREFLIGHT_TTL`] rather than once per batch.
#[derive(Default)]
pub struct BatchCache {
    emails: std::sync::Mutex<HashMap<String, Option<String>>>,
    preflight: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Quarantine>)>>,
    /// usagesync's daily cap, from the org's `/limits`: read once per [`PREFLIGHT_TTL`], not
    /// once per batch (the allocation changes with the org's licences, not by the minute).
    cap: tokio::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// How long a preflight is trusted: a field an admin adds or fixes is picked up within this.
const PREFLIGHT_TTL: Duration = Duration::from_secs(10 * 60);

impl BatchCache {
    fn get(&self, visitor: &str) -> Option<Option<String>> {
        self.emails.lock().ok().and_then(|m| m.get(visitor).cloned())
    }

    fn put(&self, visitor: String, email: Option<String>) {
        if let Ok(mut m) = self.emails.lock() {
            // Bounded: a cache, not a copy of Pendo.
            if m.len() > 50_000 {
                m.clear();
            }
            m.insert(visitor, email);
        }
    }

    /// The workflow's preflight, described again once it is older than [`PREFLIGHT_TTL`].
    async fn quarantine(&self, ctx: &Context, workflow: &Workflow) -> Result<Arc<Quarantine>, RunError> {
        let mut cached = self.preflight.lock().await;
        if let Some((at, q)) = cached.as_ref()
            && at.elapsed() < PREFLIGHT_TTL
        {
            return Ok(Arc::clone(q));
        }
        let q = Arc::new(crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?);
        for p in q.problems() {
            tracing::warn!(workflow = %workflow.name, problem = %p, "Preflight: a follow-up field is left out or held");
        }
        *cached = Some((std::time::Instant::now(), Arc::clone(&q)));
        Ok(q)
    }

    /// usagesync's share of the org's daily allocation (see [`crate::budget`]).
    async fn cap(&self, ctx: &Context) -> Result<u64, RunError> {
        let mut cached = self.cap.lock().await;
        if let Some((at, cap)) = cached.as_ref()
            && at.elapsed() < PREFLIGHT_TTL
        {
            return Ok(*cap);
        }
        let cap = crate::budget::today(ctx, ctx.clock.now()).await?.cap;
        *cached = Some((std::time::Instant::now(), cap));
        Ok(cap)
    }
}

/// Salesforce calls a batch reserves before it writes (settled to what it spent): reading and
/// writing Contacts, reading and writing health scores, describing the follow-up's object and
/// its fields when the preflight is stale, and making follow-ups (one look-up on a duplicate).
const BATCH_RESERVE: u64 = 2 + 2 + 3 + 2;

/// Runs until `stop` turns true: waits for `wake` (a stored webhook) or the idle poll, lets the
/// batching window fill, then writes what is pending. A batch that fails leaves its events
/// pending for the next attempt. Returns at once when no nps-realtime workflow is enabled.
pub async fn consume(ctx: Context, lease: super::lease::RunLease, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let Some((workflow, config)) = inbox_workflow(&ctx) else { return };
    let (workflow, config) = (workflow.clone(), config.clone());
    let emails = BatchCache::default();
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(IDLE_POLL + backoff) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        loop {
            // A stop ends the batch in flight: nothing of it is marked processed, its claims are
            // released, and writing it again at the next start is harmless (module notes).
            let result = drain_once(&ctx, &workflow, &config, &emails, "webhook", None, lease, Some(&mut stop)).await;
            if *stop.borrow() {
                return;
            }
            match result {
                Ok(Some(report)) => {
                    backoff = Duration::ZERO;
                    tracing::info!(workflow = %workflow.name, events = report.events, contacts = report.contacts_updated,
                        follow_ups = report.follow_ups, failed = report.failed, timings = ?report.timings,
                        "NPS batch written");
                    if report.events < MAX_BATCH as usize || *stop.borrow() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    if e.is_deferral() {
                        tracing::warn!(workflow = %workflow.name, error = %e, retry_in = ?backoff,
                            "NPS batch deferred: the API allocation is spent; its events stay pending");
                    } else {
                        tracing::error!(workflow = %workflow.name, error = %e, retry_in = ?backoff,
                            "NPS batch failed; its events stay pending");
                    }
                    break;
                }
            }
        }
    }
}

/// Claims one batch of pending events and processes it, renewing the claim meanwhile. With
/// `stop` (the consumer), first lets the batching window fill; a stop during the window or the
/// batch leaves the events pending (released) for the next start. `None` when nothing was
/// claimable (or it stopped).
#[allow(clippy::too_many_arguments)]
async fn drain_once(
    ctx: &Context,
    workflow: &Workflow,
    config: &NpsConfig,
    emails: &BatchCache,
    trigger: &str,
    run: Option<RunId>,
    lease: super::lease::RunLease,
    stop: Option<&mut watch::Receiver<bool>>,
) -> Result<Option<BatchReport>, RunError> {
    let _guard = PROCESSING.lock().await;
    // A killed process of this host (a CLI run, a daemon) cannot renew its claims: give its
    // events back now rather than a lease later, as a dead run's workflow lease is. Before the
    // window: with every pending event held by the dead, nothing would look claimable.
    for held_by in ctx.store.event_claimers(ctx.clock.now()).await? {
        if held_by.rsplit_once(':').is_some_and(|(holder, _)| super::lease::holder_is_dead(holder)) {
            ctx.store.release_event_claims(&held_by).await?;
        }
    }
    let mut stop = stop;
    if let Some(stop) = stop.as_deref_mut() {
        // The window runs from the oldest event no worker holds, and closes before anything
        // is claimed: workers woken by the same burst all wait it out, then the first to claim
        // takes the whole batch, so spreading webhooks over workers does not shrink batches
        // (and multiply Salesforce calls).
        let Some(oldest) = ctx.store.oldest_claimable_event(ctx.clock.now()).await? else { return Ok(None) };
        let age = (ctx.clock.now() - oldest).to_std().unwrap_or(Duration::ZERO);
        if let Some(left) = config.batch_window.checked_sub(age)
            && !left.is_zero()
        {
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                _ = stop.changed() => return Ok(None),
            }
        }
    }
    let claiming = std::time::Instant::now();
    // One claimer per batch: its claims are renewed, released or processed together.
    let claimer = format!("{}:{}", super::lease::holder(), uuid::Uuid::now_v7().simple());
    let events = ctx.store.claim_events(&claimer, lease.duration, ctx.clock.now(), MAX_BATCH).await?;
    if events.is_empty() {
        return Ok(None);
    }
    let claimed = claiming.elapsed().as_secs_f64();
    let beat = super::lease::Heartbeat::claims(Arc::clone(&ctx.store), ctx.clock, claimer.clone(), lease);
    let batch = Claimed { claimer: claimer.clone(), events };
    let work = process(ctx, workflow, config, emails, batch, trigger, run);
    let result = match stop {
        Some(stop) => {
            tokio::select! {
                r = work => Some(r),
                _ = stop.changed() => None,
            }
        }
        None => Some(work.await),
    };
    let lost = beat.stop();
    if lost {
        // Writing twice is harmless (the Contact's date tells a newer answer); recording twice
        // is not, and the record stage left what was taken over to its taker.
        tracing::warn!(workflow = %workflow.name, claimer = %claimer,
            "An NPS batch outlived its claim; another worker may have written its events too and records them");
    }
    match result {
        Some(Ok(mut report)) => {
            report.timings.insert(0, ("claim".into(), claimed));
            Ok(Some(report))
        }
        // Stopped or failed: nothing of the batch was marked processed; give its events back
        // at once rather than after the lease, so any worker (this one on restart) takes them.
        other => {
            if let Err(e) = ctx.store.release_event_claims(&claimer).await {
                tracing::warn!(workflow = %workflow.name, error = %e, "Failed to release an NPS batch's claims; they lapse with the lease");
            }
            match other {
                Some(Err(e)) => Err(e),
                _ => Ok(None),
            }
        }
    }
}

/// Inbox events one worker claimed ([`crate::store::InboxStore::claim_events`]) as one batch.
pub struct Claimed {
    pub claimer: String,
    pub events: Vec<InboxEvent>,
}

/// Writes one batch of inbox events to Salesforce, records the outcome (a run of its own
/// unless `run` is given) and marks the events processed: those the batch's claimer still
/// holds when it records, since a worker that took some over once the claim lapsed records
/// those itself.
///
/// # Errors
/// A request-level failure (Salesforce or Pendo unreachable, the store): nothing is marked
/// processed, so the whole batch goes again; what Salesforce already took is written again
/// harmlessly.
pub async fn process(
    ctx: &Context,
    workflow: &Workflow,
    config: &NpsConfig,
    emails: &BatchCache,
    batch: Claimed,
    trigger: &str,
    run: Option<RunId>,
) -> Result<BatchReport, RunError> {
    let Claimed { claimer, events } = batch;
    let now = ctx.clock.now();
    let mut report = BatchReport { events: events.len(), ..BatchReport::default() };
    let mut done: Vec<String> = Vec::new();
    let mut by_key: BTreeMap<String, Response> = BTreeMap::new();
    let mut outcomes: Vec<RecordOutcome> = Vec::new();
    let mut failures: Vec<(String, String, Value, String, String)> = Vec::new();
    for event in &events {
        if event.kind != EVENT {
            // Only nps-realtime reads the inbox; other events have no consumer to wait for.
            report.ignored += 1;
            done.push(event.unique_id.clone());
            continue;
        }
        match parse_event(event) {
            Some(r) => match by_key.get_mut(&r.key) {
                Some(existing) => {
                    existing.inbox_ids.extend(r.inbox_ids);
                }
                None => {
                    by_key.insert(r.key.clone(), r);
                }
            },
            None => {
                report.failed += 1;
                failures.push((
                    "Contact".into(),
                    event.unique_id.clone(),
                    event.body.clone(),
                    "INVALID_EVENT".into(),
                    "an npsSubmitted event without a visitorId, a timestamp or a rating 0..10".into(),
                ));
                done.push(event.unique_id.clone());
            }
        }
    }
    let responses: Vec<Response> = by_key.into_values().collect();
    report.responses = responses.len();
    let mut meter = Meter::new(&ctx.salesforce);
    // A batch of its own is recorded as a run once it is written, not claimed as the
    // workflow's run before: the events' claims already keep every other worker off them, and
    // a workflow-wide lease would let one worker write at a time. A batch killed mid-way
    // leaves no run behind, only events whose claim lapses and which another worker takes.
    let own_run = run.is_none();
    let new_run = NewRun {
        workflow: workflow.name.clone(),
        template: "nps-realtime".into(),
        dry_run: false,
        started_at: now,
        trigger: trigger.to_owned(),
    };

    // The batch reserves its calls in the shared ledger first, as every run does: with
    // usagesync's daily cap spent, its answers stay pending (deferred, never failed) until the
    // allocation allows them.
    let day = now.date_naive();
    let reserve = if responses.is_empty() { 0 } else { BATCH_RESERVE };
    let before = ctx.salesforce.requests_sent();
    let result = match reserve {
        0 => Ok(()),
        _ => match emails.cap(ctx).await {
            Ok(cap) if ctx.store.reserve_budget(day, &workflow.name, reserve, cap, now).await? => {
                meter.step("reserve", None);
                let written = write(
                    ctx,
                    workflow,
                    config,
                    emails,
                    &responses,
                    &mut report,
                    &mut outcomes,
                    &mut failures,
                    &mut meter,
                )
                .await;
                let spent = ctx.salesforce.requests_sent().saturating_sub(before);
                ctx.store.settle_budget(day, &workflow.name, reserve, spent, ctx.clock.now()).await?;
                written
            }
            Ok(_) => Err(RunError::OverBudget { needed: reserve, left: 0 }),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        if own_run {
            let id = ctx.store.start_run(&new_run).await?;
            let finish = RunFinish {
                state: if e.is_deferral() { RunState::Deferred } else { RunState::Failed },
                finished_at: ctx.clock.now(),
                stats: Value::Null,
                error: Some(e.to_string()),
            };
            ctx.store.finish_run(id, &finish).await?;
        }
        return Err(e);
    }
    // Salesforce has the batch; the store knows nothing of it yet.
    crate::testhook::crash_point("record");
    let recording = std::time::Instant::now();
    report.api_calls = meter.calls.clone();
    report.timings = std::mem::take(&mut meter.timings);
    // The record stage records only what this claimer still holds, in the transaction that
    // checks it: a claim that lapsed (a worker stalled past its lease) may have been taken
    // over, and the taker writes and records those answers itself. Checking first and
    // recording after would leave a window (a stall between the two) in which both record.
    let answer_events: Vec<Vec<String>> = responses.iter().map(|r| r.inbox_ids.clone()).collect();
    let all_ids: Vec<String> = events.iter().map(|e| e.unique_id.clone()).collect();
    let to_record = ToRecord {
        workflow: workflow.name.clone(),
        all_ids: all_ids.clone(),
        responses,
        outcomes,
        failures,
        done,
        answers_of_account: std::mem::take(&mut report.answers_of_account),
        retry_later: report.retry_later.clone(),
        run: match run {
            Some(id) => RunTarget::Given(id),
            None => RunTarget::Own(RunId::new(), new_run),
        },
    };
    let recorded = ctx
        .store
        .record_held(&claimer, &workflow.name, &all_ids, ctx.clock.now(), Box::new(move |held| to_record.covered(held)))
        .await?;
    report.taken_over = answer_events.iter().filter(|ids| !ids.iter().all(|id| recorded.held.contains(id))).count();
    let done = recorded.record.processed;
    let run_id = recorded.record.run;
    report.timings.push(("record".into(), recording.elapsed().as_secs_f64()));
    // Lag from a webhook's receipt to its processing (reconciled poll rows are not webhooks).
    let done_ids: HashSet<&str> = done.iter().map(String::as_str).collect();
    crate::observe::webhook_events_processed(
        events
            .iter()
            .filter(|e| e.source != "pendo-poll" && done_ids.contains(e.unique_id.as_str()))
            .map(|e| e.received_at),
        ctx.clock.now(),
    );
    if let (Some(id), true) = (run_id, own_run) {
        let state = if report.failed == 0 { RunState::Succeeded } else { RunState::Partial };
        let stats = serde_json::to_value(&report).unwrap_or(Value::Null);
        ctx.store.finish_run(id, &RunFinish { state, finished_at: ctx.clock.now(), stats, error: None }).await?;
    }
    Ok(report)
}

/// The run a batch's outcomes go under: the caller's, or one of its own, started with them.
enum RunTarget {
    Given(RunId),
    Own(RunId, NewRun),
}

/// Everything a batch would record, before it knows which of its events its claimer still
/// holds: [`ToRecord::covered`] keeps what the held events cover, inside the store's record
/// transaction.
struct ToRecord {
    workflow: String,
    all_ids: Vec<String>,
    responses: Vec<Response>,
    outcomes: Vec<RecordOutcome>,
    failures: Vec<(String, String, Value, String, String)>,
    /// Events settled without an answer to write (ignored kinds, invalid events).
    done: Vec<String>,
    answers_of_account: HashMap<String, Vec<String>>,
    retry_later: HashSet<String>,
    run: RunTarget,
}

impl ToRecord {
    /// What the claimer records while it holds `held`: an answer only if it holds all of its
    /// events, the rest is the taker's.
    fn covered(self, held: &HashSet<String>) -> HeldRecord {
        let ToRecord {
            workflow,
            all_ids,
            responses,
            mut outcomes,
            mut failures,
            mut done,
            answers_of_account,
            retry_later,
            run,
        } = self;
        let holds = |r: &Response| r.inbox_ids.iter().all(|id| held.contains(id));
        if held.len() < all_ids.len() {
            // Answers by response key, and invalid events (their failure's key) by event id.
            let lost: HashSet<&str> = responses
                .iter()
                .filter(|r| !holds(r))
                .map(|r| r.key.as_str())
                .chain(all_ids.iter().filter(|id| !held.contains(*id)).map(String::as_str))
                .collect();
            // An Account's outcome stays this batch's while it holds any answer of the Account:
            // a taker finds the score it wrote current and records nothing for the Account.
            let kept_key = |object: &str, key: &str| match object {
                "Account" => answers_of_account
                    .get(key)
                    .is_some_and(|answers| answers.iter().any(|k| !lost.contains(k.as_str()))),
                _ => !lost.contains(key),
            };
            outcomes.retain(|o| kept_key(&o.object, &o.key));
            failures.retain(|(object, key, ..)| kept_key(object, key));
            done.retain(|id| held.contains(id));
        }
        let handled: Vec<&Response> = responses.iter().filter(|r| holds(r) && !retry_later.contains(&r.key)).collect();
        done.extend(handled.iter().flat_map(|r| r.inbox_ids.iter().cloned()));
        let anything = responses.iter().any(holds) || !failures.is_empty();
        let (run, start) = match run {
            RunTarget::Given(id) => (Some(id), None),
            RunTarget::Own(id, new_run) if anything => (Some(id), Some(new_run)),
            RunTarget::Own(..) => (None, None),
        };
        let mut ledger = super::ledger::Ledger::default();
        for o in outcomes.iter().filter(|o| matches!(o.action, Action::Created | Action::Updated)) {
            ledger.written(&o.object, &o.key);
        }
        for (object, key, payload, code, message) in failures {
            ledger.refused(super::ledger::Refusal {
                fields: payload
                    .get("sent")
                    .and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default(),
                object,
                key,
                salesforce_id: None,
                payload,
                code,
                message,
            });
        }
        let (written, failures) = match run {
            Some(id) => ledger.into_store(&workflow, id),
            None => (Vec::new(), Vec::new()),
        };
        // Handled responses go into the idempotency ledger with their events marked processed,
        // so reconciliation never feeds back what the webhook already delivered.
        let committed = handled.iter().map(|r| (r.key.clone(), "handled".to_owned())).collect();
        // Without a run nothing is held that has an outcome (each is an answer's or an
        // Account's of a held answer): none is dropped here.
        HeldRecord {
            run,
            start,
            outcomes: if run.is_some() { outcomes } else { Vec::new() },
            written,
            failures,
            committed,
            processed: done,
        }
    }
}

/// Sends `updates` through the delivery stage (Collections, record-level retries of lock
/// contention). A spent allocation defers the batch as a whole: nothing of it is marked
/// processed, and a later batch writes it.
async fn update_stage(
    ctx: &Context,
    object: &str,
    updates: &[(salesforce::SalesforceId, Value)],
) -> Result<crate::deliver::Delivery, RunError> {
    let changes = updates
        .iter()
        .map(|(id, fields)| crate::change::Change {
            key: id.to_string(),
            salesforce_id: id.to_string(),
            fields: fields
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.as_str().into(), v.clone())).collect())
                .unwrap_or_default(),
            prints: Vec::new(),
        })
        .collect();
    let retry = crate::deliver::RecordRetry::default();
    let delivery =
        crate::deliver::deliver(&ctx.salesforce, object, crate::plan::WritePath::Collections, changes, &retry, &|_| {})
            .await;
    if !delivery.deferred.is_empty() {
        let needed = u64::try_from(delivery.deferred.len()).unwrap_or(u64::MAX);
        return Err(RunError::OverBudget { needed, left: 0 });
    }
    Ok(delivery)
}

/// A refusal worth sending again later rather than keeping as a failure.
fn transient(code: &str) -> bool {
    code == salesforce::ErrorCode::UnableToLockRow.as_str()
}

fn sf_err(what: &'static str) -> impl FnOnce(salesforce::Error) -> RunError {
    move |source| RunError::Salesforce { what, source }
}

fn str_field<'a>(row: &'a Value, field: &str) -> Option<&'a str> {
    row.get(field).and_then(Value::as_str)
}

fn parse_sf_datetime(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn sf_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn in_list<'a>(values: impl IntoIterator<Item = &'a String>) -> String {
    values.into_iter().map(|v| salesforce::soql::quote(v)).collect::<Vec<_>>().join(", ")
}

/// Values per SOQL `IN` list: keeps each query's URL well under Salesforce's limit.
const IN_CHUNK: usize = 100;
/// Queries of one step in flight at once.
const QUERY_CONCURRENCY: usize = 4;

/// The Contacts whose `id_field` is one of `visitors` or whose e-mail is one of theirs in
/// `email_of`, in queries of [`IN_CHUNK`] visitors side by side.
async fn contacts_of(
    ctx: &Context,
    select: &[String],
    id_field: Option<&str>,
    visitors: &[&str],
    email_of: &HashMap<String, String>,
) -> Result<Vec<Value>, RunError> {
    let mut queries = Vec::new();
    for chunk in visitors.chunks(IN_CHUNK) {
        let mut conditions = Vec::new();
        if let Some(f) = id_field {
            let ids: Vec<String> = chunk.iter().map(|v| (*v).to_owned()).collect();
            conditions.push(format!("{f} IN ({})", in_list(&ids)));
        }
        let set: BTreeSet<&String> = chunk.iter().filter_map(|v| email_of.get(*v)).collect();
        if !set.is_empty() {
            conditions.push(format!("Email IN ({})", in_list(set)));
        }
        if !conditions.is_empty() {
            queries.push(format!("SELECT {} FROM Contact WHERE {}", select.join(", "), conditions.join(" OR ")));
        }
    }
    let pages: Vec<Result<Vec<Value>, salesforce::Error>> = futures_util::stream::iter(queries)
        .map(|soql| ctx.salesforce.query_collect(soql))
        .buffered(QUERY_CONCURRENCY)
        .collect()
        .await;
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for page in pages {
        // A Contact found by id in one chunk and by e-mail in another is one Contact.
        for row in page.map_err(sf_err("Contacts"))? {
            if str_field(&row, "Id").is_none_or(|id| seen.insert(id.to_owned())) {
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// The e-mails (lower-cased) of `visitors` that have one, from the cache or else from Pendo.
async fn visitor_emails(
    ctx: &Context,
    cache: &BatchCache,
    group: &str,
    field: &str,
    visitors: &[&str],
) -> Result<HashMap<String, String>, RunError> {
    let unknown: Vec<String> = visitors.iter().filter(|v| cache.get(v).is_none()).map(|v| (*v).to_owned()).collect();
    // Looked up side by side: one at a time, a batch of new visitors would outlast its window.
    let looked_up: Vec<(String, Result<Option<String>, pendo::Error>)> = futures_util::stream::iter(unknown)
        .map(|visitor: String| {
            let client = ctx.pendo.clone();
            async move {
                let read = match client.visitor(&visitor).await {
                    Ok(v) => Ok(pendo::entities::metadata_value(&v.metadata, group, field)
                        .and_then(Value::as_str)
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| e.contains('@'))),
                    Err(pendo::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                };
                (visitor, read)
            }
        })
        .buffer_unordered(PENDO_CONCURRENCY)
        .collect()
        .await;
    // What was fetched is kept even when another look-up failed: the batch goes again, and
    // then asks Pendo only for the visitors still unknown. (Throttling does not fail a
    // look-up: the client waits it out, see `pendo::Client`'s limiter.)
    let mut failed = None;
    for (visitor, read) in looked_up {
        match read {
            Ok(email) => cache.put(visitor, email),
            Err(source) => failed = Some(source),
        }
    }
    if let Some(source) = failed {
        return Err(RunError::Pendo(crate::extract::ExtractError::Pendo { query: "visitor", source }));
    }
    Ok(visitors
        .iter()
        .filter_map(|v| match cache.get(v) {
            Some(Some(email)) => Some(((*v).to_owned(), email)),
            _ => None,
        })
        .collect())
}

/// The Salesforce part of a batch: find Contacts, write them, recompute health, upsert
/// follow-ups. Per-record problems land in `outcomes`/`failures`; request-level ones are errors.
#[allow(clippy::too_many_arguments)]
async fn write(
    ctx: &Context,
    workflow: &Workflow,
    config: &NpsConfig,
    emails: &BatchCache,
    responses: &[Response],
    report: &mut BatchReport,
    outcomes: &mut Vec<RecordOutcome>,
    failures: &mut Vec<(String, String, Value, String, String)>,
    meter: &mut Meter<'_>,
) -> Result<(), RunError> {
    if responses.is_empty() {
        return Ok(());
    }
    let contact_cfg = &config.contact;
    let id_field = contact_cfg.match_by.iter().find_map(|m| match m {
        ContactMatch::VisitorIdField(f) => Some(f.clone()),
        ContactMatch::Email { .. } => None,
    });
    let email_rule = contact_cfg.match_by.iter().find_map(|m| match m {
        ContactMatch::Email { group, field } => Some((*group, field.clone())),
        ContactMatch::VisitorIdField(_) => None,
    });
    let email_first = matches!(contact_cfg.match_by.first(), Some(ContactMatch::Email { .. }));
    let mut select: Vec<String> =
        ["Id", "Email", "AccountId", "OwnerId", "Account.OwnerId"].iter().map(|s| (*s).to_owned()).collect();
    select.push(contact_cfg.date_field.clone());
    if let Some(f) = &id_field {
        select.push(f.clone());
    }
    let visitors: Vec<&str> = {
        let mut seen = HashSet::new();
        responses.iter().map(|r| r.visitor_id.as_str()).filter(|v| seen.insert(*v)).collect()
    };
    let no_emails = HashMap::new();
    // Contacts by visitor id first, when that rule comes first: a visitor it settles (one
    // Contact, or several) needs no e-mail, so Pendo is asked only about the others.
    let mut rows: Vec<Value> = Vec::new();
    if let (Some(f), false) = (&id_field, email_first) {
        rows = contacts_of(ctx, &select, Some(f), &visitors, &no_emails).await?;
        meter.step("read_contacts", Some("read"));
    }
    let mut email_of: HashMap<String, String> = HashMap::new();
    if let Some((group, field)) = &email_rule {
        let need: Vec<&str> = match (&id_field, email_first) {
            (Some(f), false) => {
                let settled: HashSet<&str> = rows.iter().filter_map(|row| str_field(row, f)).collect();
                visitors.iter().copied().filter(|v| !settled.contains(v)).collect()
            }
            _ => visitors.clone(),
        };
        email_of = visitor_emails(ctx, emails, group.name(), field, &need).await?;
        meter.step("pendo_visitors", None);
        // Then by e-mail (and, with the e-mail rule first, by visitor id in the same queries).
        if !email_of.is_empty() || email_first {
            let by_id = if email_first { id_field.as_deref() } else { None };
            let more = contacts_of(ctx, &select, by_id, &need, &email_of).await?;
            let known: HashSet<String> = rows.iter().filter_map(|r| str_field(r, "Id").map(str::to_owned)).collect();
            rows.extend(more.into_iter().filter(|r| str_field(r, "Id").is_none_or(|id| !known.contains(id))));
            meter.step("read_contacts", Some("read"));
        }
    }

    // Match each response: the first rule that finds exactly one Contact wins.
    let mut matched: Vec<(&Response, &Value)> = Vec::new();
    for r in responses {
        let mut found: Option<&Value> = None;
        let mut ambiguous: Vec<String> = Vec::new();
        for rule in &contact_cfg.match_by {
            let hits: Vec<&Value> = match rule {
                ContactMatch::VisitorIdField(f) => {
                    rows.iter().filter(|row| str_field(row, f) == Some(r.visitor_id.as_str())).collect()
                }
                ContactMatch::Email { .. } => match email_of.get(&r.visitor_id) {
                    Some(email) => rows
                        .iter()
                        .filter(|row| str_field(row, "Email").is_some_and(|e| e.trim().eq_ignore_ascii_case(email)))
                        .collect(),
                    None => Vec::new(),
                },
            };
            match hits.len() {
                0 => {}
                1 => {
                    found = hits.first().copied();
                    break;
                }
                _ => {
                    ambiguous = hits.iter().filter_map(|h| str_field(h, "Id").map(str::to_owned)).collect();
                    break;
                }
            }
        }
        match found {
            Some(row) => {
                if let Some(account) = str_field(row, "AccountId") {
                    report.answers_of_account.entry(account.to_owned()).or_default().push(r.key.clone());
                }
                matched.push((r, row));
            }
            None if !ambiguous.is_empty() => {
                report.ambiguous += 1;
                report.failed += 1;
                let message = format!("visitor {} matches several Contacts: {}", r.visitor_id, ambiguous.join(", "));
                failures.push(("Contact".into(), r.key.clone(), response_json(r), "AMBIGUOUS_CONTACT".into(), message));
            }
            None => {
                report.unmatched += 1;
                outcomes.push(RecordOutcome {
                    object: "Contact".into(),
                    key: r.key.clone(),
                    salesforce_id: None,
                    action: Action::Skipped,
                    changes: Vec::new(),
                    error_code: None,
                    message: Some(format!("no Contact found for visitor {}", r.visitor_id)),
                });
            }
        }
    }

    // The latest response per Contact, unless the Contact already holds it or a newer one.
    let mut latest: BTreeMap<String, (&Response, &Value)> = BTreeMap::new();
    for (r, row) in &matched {
        let Some(id) = str_field(row, "Id") else { continue };
        let newer = latest.get(id).is_none_or(|(prev, _)| prev.time < r.time);
        if newer {
            latest.insert(id.to_owned(), (r, row));
        }
    }
    let mut updates: Vec<(salesforce::SalesforceId, Value)> = Vec::new();
    let mut update_meta: Vec<(&Response, &Value)> = Vec::new();
    // Accounts whose health must be (re)computed: those of Contacts written now, and those of
    // Contacts that already hold this very response — written by a batch that died (or ran out of
    // allocation) before their Account, so the group is completed now. Unchanged scores are not sent.
    let mut written_accounts: HashSet<String> = HashSet::new();
    for (id, (r, row)) in &latest {
        let current = str_field(row, &contact_cfg.date_field).and_then(parse_sf_datetime);
        if current.is_some_and(|c| c >= r.time) {
            if current == Some(r.time)
                && let Some(a) = str_field(row, "AccountId")
            {
                written_accounts.insert(a.to_owned());
            }
            report.unchanged += 1;
            outcomes.push(RecordOutcome {
                object: "Contact".into(),
                key: r.key.clone(),
                salesforce_id: Some(id.clone()),
                action: Action::Unchanged,
                changes: Vec::new(),
                error_code: None,
                message: None,
            });
            continue;
        }
        let Ok(sfid) = salesforce::SalesforceId::parse(id) else { continue };
        let mut fields = serde_json::Map::new();
        fields.insert(contact_cfg.score_field.clone(), json!(r.rating));
        fields.insert(contact_cfg.comment_field.clone(), json!(r.comment));
        fields.insert(contact_cfg.date_field.clone(), json!(sf_datetime(r.time)));
        updates.push((sfid, Value::Object(fields)));
        update_meta.push((r, row));
    }
    let mut failed_contacts: HashSet<String> = HashSet::new();
    if !updates.is_empty() {
        let delivery = update_stage(ctx, "Contact", &updates).await?;
        // Contacts written, their Accounts and follow-ups not yet.
        crate::testhook::crash_point("deliver");
        let refused: HashMap<&str, &crate::deliver::Failed> =
            delivery.failed.iter().map(|f| (f.change.salesforce_id.as_str(), f)).collect();
        for ((sfid, fields), (r, row)) in updates.iter().zip(&update_meta) {
            let id = sfid.to_string();
            if let Some(f) = refused.get(id.as_str()) {
                failed_contacts.insert(id.clone());
                if transient(&f.code) {
                    report.retry_later.insert(r.key.clone());
                    report.waiting += 1;
                } else {
                    report.failed += 1;
                    let (code, message) = (f.code.clone(), f.message.clone());
                    record_failure(report, outcomes, failures, "Contact", r, Some(id), fields.clone(), code, message);
                }
            } else {
                report.contacts_updated += 1;
                if let Some(a) = str_field(row, "AccountId") {
                    written_accounts.insert(a.to_owned());
                }
                let changes: Vec<FieldChange> = fields
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| FieldChange {
                                field: k.clone(),
                                before: row.get(k).cloned(),
                                after: v.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if report.samples.len() < 10 {
                    report.samples.push(Sample {
                        pendo_account: r.visitor_id.clone(),
                        salesforce_id: id.clone(),
                        fields: changes.iter().map(|c| (c.field.clone(), c.after.clone())).collect(),
                    });
                }
                outcomes.push(RecordOutcome {
                    object: "Contact".into(),
                    key: r.key.clone(),
                    salesforce_id: Some(id),
                    action: Action::Updated,
                    changes,
                    error_code: None,
                    message: None,
                });
            }
        }
    }
    meter.step("write_contacts", Some("write"));

    if let Some(health) = &config.health_score
        && !written_accounts.is_empty()
    {
        // Only Contacts with an answer count, and every written Account has one (the Contact
        // just written): the others would be read for nothing.
        let accounts: Vec<&String> = written_accounts.iter().collect();
        let queries: Vec<String> = accounts
            .chunks(IN_CHUNK)
            .map(|ids| {
                format!(
                    "SELECT AccountId, {score}, Account.{field}, Account.{eng} FROM Contact \
                     WHERE AccountId IN ({ids}) AND {score} != null",
                    score = contact_cfg.score_field,
                    field = health.field,
                    eng = health.engagement_field,
                    ids = in_list(ids.iter().copied()),
                )
            })
            .collect();
        let pages: Vec<Result<Vec<Value>, salesforce::Error>> = futures_util::stream::iter(queries)
            .map(|soql| ctx.salesforce.query_collect(soql))
            .buffered(QUERY_CONCURRENCY)
            .collect()
            .await;
        let mut rows: Vec<Value> = Vec::new();
        for page in pages {
            rows.extend(page.map_err(sf_err("account NPS"))?);
        }
        meter.step("read_accounts", Some("read"));
        let mut per_account: BTreeMap<String, AccountNps> = BTreeMap::new();
        for row in &rows {
            let Some(account) = str_field(row, "AccountId") else { continue };
            let entry = per_account.entry(account.to_owned()).or_default();
            if let Some(score) = row.get(&contact_cfg.score_field).and_then(Value::as_f64) {
                entry.scores.push(score);
            }
            let parent = row.get("Account");
            entry.engagement = parent.and_then(|a| a.get(&health.engagement_field)).and_then(Value::as_f64);
            entry.current = parent.and_then(|a| a.get(&health.field)).and_then(Value::as_f64);
        }
        let mut account_updates: Vec<(salesforce::SalesforceId, Value)> = Vec::new();
        let mut account_changes: Vec<(String, Option<f64>, f64)> = Vec::new();
        for (account, AccountNps { scores, engagement, current }) in &per_account {
            let Some(score) = health_score(config, health, scores, *engagement) else { continue };
            if current.is_some_and(|c| (c - score).abs() < 0.05) {
                continue;
            }
            let Ok(id) = salesforce::SalesforceId::parse(account) else { continue };
            account_updates.push((id, json!({ health.field.clone(): score })));
            account_changes.push((account.clone(), *current, score));
        }
        if !account_updates.is_empty() {
            let delivery = update_stage(ctx, "Account", &account_updates).await?;
            let refused: HashMap<&str, &crate::deliver::Failed> =
                delivery.failed.iter().map(|f| (f.change.salesforce_id.as_str(), f)).collect();
            for (account, before, after) in &account_changes {
                let id = salesforce::SalesforceId::parse(account).map(|i| i.to_string()).unwrap_or_default();
                let refusal = refused.get(id.as_str()).copied();
                if refusal.is_some_and(|f| transient(&f.code)) {
                    // Its answers go again later: the Contacts already hold them, so the next
                    // batch recomputes this Account (see `written_accounts`).
                    for (r, row) in &matched {
                        if str_field(row, "AccountId") == Some(account.as_str()) {
                            report.retry_later.insert(r.key.clone());
                        }
                    }
                    report.waiting += 1;
                } else if refusal.is_none() {
                    report.accounts_updated += 1;
                    outcomes.push(RecordOutcome {
                        object: "Account".into(),
                        key: account.clone(),
                        salesforce_id: Some(account.clone()),
                        action: Action::Updated,
                        changes: vec![FieldChange {
                            field: health.field.clone(),
                            before: before.map(|b| json!(b)),
                            after: json!(after),
                        }],
                        error_code: None,
                        message: None,
                    });
                } else if let Some(f) = refusal {
                    let (code, message) = (f.code.clone(), f.message.clone());
                    report.failed += 1;
                    failures.push((
                        "Account".into(),
                        account.clone(),
                        json!({ health.field.clone(): after }),
                        code.clone(),
                        message.clone(),
                    ));
                    report.failures.push(FailureSample { salesforce_id: account.clone(), code, message });
                }
            }
            meter.step("write_accounts", Some("write"));
        }
    }

    if let Some(follow) = &config.follow_up {
        let now = ctx.clock.now();
        follow_ups(ctx, workflow, config, follow, emails, &matched, &failed_contacts, report, outcomes, failures, now)
            .await?;
        meter.step("write_follow_ups", Some("write"));
    }
    Ok(())
}

/// The key of `r`'s follow-up: injective and case-insensitively unique, as every key the create
/// stage makes (visitor ids `Bob` and `bob` are two people).
fn follow_up_key(workflow: &str, r: &Response) -> String {
    super::create::key(&["usagesync", workflow, "nps", &r.visitor_id, &r.time.timestamp().to_string()])
}

/// A follow-up for each detractor whose Contact was not refused, through the create stage: made
/// once, and a record that already holds its key (a person may have worked the Task since) is
/// adopted as it is, never written again.
#[allow(clippy::too_many_arguments)]
async fn follow_ups(
    ctx: &Context,
    workflow: &Workflow,
    config: &NpsConfig,
    follow: &crate::config::nps::FollowUpConfig,
    cache: &BatchCache,
    matched: &[(&Response, &Value)],
    failed_contacts: &HashSet<String>,
    report: &mut BatchReport,
    outcomes: &mut Vec<RecordOutcome>,
    failures: &mut Vec<(String, String, Value, String, String)>,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let object = follow.object.name();
    let mut records: Vec<super::create::NewRecord> = Vec::new();
    let mut meta: Vec<&Response> = Vec::new();
    for (r, row) in matched {
        let Some(contact_id) = str_field(row, "Id") else { continue };
        if !config.is_detractor(r.rating) || failed_contacts.contains(contact_id) {
            continue;
        }
        let owner = match follow.owner {
            OwnerSource::Account => row.get("Account").and_then(|a| str_field(a, "OwnerId")),
            OwnerSource::Contact => str_field(row, "OwnerId"),
        }
        .or_else(|| str_field(row, "OwnerId"));
        let account = str_field(row, "AccountId");
        let when = r.time.format("%Y-%m-%d %H:%M UTC");
        let description = if r.comment.trim().is_empty() {
            format!("NPS {} on {when}; no comment.", r.rating)
        } else {
            format!("NPS {} on {when}: {}", r.rating, r.comment)
        };
        let mut fields = serde_json::Map::new();
        fields.insert("Subject".into(), json!(format!("{} ({}/10)", follow.subject, r.rating)));
        fields.insert("Description".into(), json!(description));
        fields.insert("Priority".into(), json!(follow.priority));
        if let Some(o) = owner {
            fields.insert("OwnerId".into(), json!(o));
        }
        match follow.object {
            FollowUpObject::Task => {
                let due = r.time.date_naive() + chrono::Days::new(u64::from(follow.due_in_days));
                fields.insert("ActivityDate".into(), json!(due.format("%Y-%m-%d").to_string()));
                fields.insert("WhoId".into(), json!(contact_id));
                if let Some(a) = account {
                    fields.insert("WhatId".into(), json!(a));
                }
            }
            FollowUpObject::Case => {
                fields.insert("Origin".into(), json!("Web"));
                fields.insert("ContactId".into(), json!(contact_id));
                if let Some(a) = account {
                    fields.insert("AccountId".into(), json!(a));
                }
            }
        }
        records.push(super::create::NewRecord {
            object: object.to_owned(),
            key: follow_up_key(&workflow.name, r),
            key_field: follow.key_field.clone(),
            fields,
            link: None,
        });
        meta.push(r);
    }
    if records.is_empty() {
        return Ok(());
    }
    let quarantine = cache.quarantine(ctx, workflow).await?;
    let made = super::create::make(ctx, &workflow.name, &records, &quarantine, now).await?;
    for ((created, record), r) in made.into_iter().zip(&records).zip(&meta) {
        use super::create::Created;
        let created_new = matches!(created, Created::New { .. });
        let (code, message) = match created {
            Created::New { id } | Created::Existing { id } => {
                let how = if created_new { "made" } else { "already there, adopted unchanged" };
                report.follow_ups += 1;
                outcomes.push(RecordOutcome {
                    object: object.to_owned(),
                    key: r.key.clone(),
                    salesforce_id: Some(id),
                    action: Action::Created,
                    changes: Vec::new(),
                    error_code: None,
                    message: Some(format!("follow-up; key {} ({how})", record.key)),
                });
                continue;
            }
            // Sent again by a later batch: a spent allocation, an outcome not known (its key is
            // looked up first then), lock contention.
            Created::Deferred { .. } | Created::Unknown { .. } | Created::Waiting => {
                report.retry_later.insert(r.key.clone());
                report.waiting += 1;
                continue;
            }
            Created::Refused { code, .. } if transient(&code) => {
                report.retry_later.insert(r.key.clone());
                report.waiting += 1;
                continue;
            }
            Created::Refused { code, message } => (code, message),
            Created::Held { reason } => ("QUARANTINED".to_owned(), format!("held back by preflight: {reason}")),
        };
        report.failed += 1;
        let payload = Value::Object(record.fields.clone());
        record_failure(report, outcomes, failures, object, r, None, payload, code, message);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record_failure(
    report: &mut BatchReport,
    outcomes: &mut Vec<RecordOutcome>,
    failures: &mut Vec<(String, String, Value, String, String)>,
    object: &str,
    r: &Response,
    id: Option<String>,
    payload: Value,
    code: String,
    message: String,
) {
    outcomes.push(RecordOutcome {
        object: object.to_owned(),
        key: r.key.clone(),
        salesforce_id: id.clone(),
        action: Action::Failed,
        changes: Vec::new(),
        error_code: Some(code.clone()),
        message: Some(message.clone()),
    });
    if report.failures.len() < 10 {
        report.failures.push(FailureSample {
            salesforce_id: id.unwrap_or_default(),
            code: code.clone(),
            message: message.clone(),
        });
    }
    // The answer itself rides along: a replay queues it again and derives what to send from
    // the config of that day, since the inbox event is marked processed and never read again.
    let payload = json!({"sent": payload, "response": response_event(r)});
    failures.push((object.to_owned(), r.key.clone(), payload, code, message));
}

/// The answer `r` as the webhook event that carries it.
fn response_event(r: &Response) -> Value {
    json!({
        "event": EVENT,
        "visitorId": r.visitor_id,
        "timestamp": r.time.timestamp(),
        "uniqueId": r.key,
        "properties": {"nps": {"rating": r.rating, "reason": r.comment}},
    })
}

/// Queues again the answers of `failures` that kept one (see `record_failure`), under fresh
/// inbox ids, so the next drain writes them from the current config and data; the response
/// key is the same, so the ledger settles their failures. Returns how many were queued.
pub(crate) async fn requeue(ctx: &Context, failures: &[crate::store::Failure]) -> Result<usize, RunError> {
    let mut queued = 0;
    for f in failures {
        let Some(event) = f.payload.get("response").filter(|e| e.is_object()) else { continue };
        let mut body = event.clone();
        let unique_id = format!("{}:replay:{}:{}", f.key, f.id, f.attempts);
        body["uniqueId"] = json!(unique_id);
        let event =
            InboxEvent { unique_id, source: "replay".into(), kind: EVENT.into(), received_at: ctx.clock.now(), body };
        if ctx.store.put_event(&event).await? {
            queued += 1;
        }
    }
    Ok(queued)
}

/// An Account's Contacts' NPS answers, its engagement and its current health score.
#[derive(Default)]
struct AccountNps {
    scores: Vec<f64>,
    engagement: Option<f64>,
    current: Option<f64>,
}

fn response_json(r: &Response) -> Value {
    json!({"visitorId": r.visitor_id, "rating": r.rating, "comment": r.comment, "time": sf_datetime(r.time)})
}

/// The health score, 0..100 with one decimal, or `None` when the account has no NPS answer.
fn health_score(
    config: &NpsConfig,
    health: &crate::config::HealthScoreConfig,
    scores: &[f64],
    engagement: Option<f64>,
) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    let promoters = scores.iter().filter(|s| **s >= 9.0).count() as f64;
    let detractors = scores.iter().filter(|s| config.is_detractor(s.round() as i64)).count() as f64;
    let nps = 100.0 * (promoters - detractors) / n;
    let nps_part = (nps + 100.0) / 2.0;
    let (sum, weights) = match engagement {
        Some(e) if health.engagement_weight > 0.0 => (
            health.nps_weight * nps_part + health.engagement_weight * e.clamp(0.0, 100.0),
            health.nps_weight + health.engagement_weight,
        ),
        _ => (health.nps_weight * nps_part, health.nps_weight),
    };
    Some(((sum / weights) * 10.0).round() / 10.0)
}

/// Polls Pendo `pollEvents` for the NPS guide since the cursor and stores each response not
/// already known (by its key) in the inbox. Returns how many it added.
///
/// # Errors
/// Pendo or the store failing; the cursor then stays where it was.
pub async fn reconcile(ctx: &Context, workflow: &Workflow, config: &NpsConfig) -> Result<usize, RunError> {
    let pendo_err =
        |e: pendo::Error| RunError::Pendo(crate::extract::ExtractError::Pendo { query: "pollEvents", source: e });
    let guides = match &config.guide_id {
        Some(id) => ctx.pendo.guides(&[id.as_str()]).await.map_err(pendo_err)?,
        None => ctx.pendo.guides(&[]).await.map_err(pendo_err)?,
    };
    let guide = match &config.guide_id {
        Some(id) => guides.iter().find(|g| &g.id == id),
        None => guides.iter().find(|g| g.polls.first().and_then(pendo::entities::Poll::poll_type) == Some("NPSRating")),
    };
    let Some(guide) = guide else {
        tracing::warn!(workflow = %workflow.name, "No NPS guide found in Pendo; nothing to reconcile");
        return Ok(0);
    };
    let rating_poll = guide.polls.iter().find(|p| p.poll_type() == Some("NPSRating")).map(|p| p.id.clone());
    let reason_poll = guide.polls.iter().find(|p| p.poll_type() == Some("NPSReason")).map(|p| p.id.clone());
    let Some(rating_poll) = rating_poll else { return Ok(0) };

    let cursor = ctx.store.cursor(&workflow.name, CURSOR).await?;
    let now_ms = ctx.clock.now().timestamp_millis();
    let since = cursor
        .as_deref()
        .and_then(|c| c.parse::<i64>().ok())
        .map_or(now_ms - RECONCILE_FIRST_LOOKBACK_MS, |c| c - RECONCILE_OVERLAP_MS);
    let body = json!({
        "response": {"mimeType": "application/json"},
        "request": {"requestId": "usagesync-nps-reconcile", "pipeline": [
            {"source": {"pollEvents": {"guideId": guide.id, "appId": "expandAppIds(\"*\")"},
                        "timeSeries": {"period": "dayRange", "first": since, "last": "now()"}}},
            {"filter": format!("browserTime >= {since}")},
            {"sort": ["browserTime"]},
            {"limit": 100_000}
        ]}
    });
    let rows = ctx.pendo.aggregate_raw(&body).await.map_err(pendo_err)?.results;
    let mut max_seen = cursor.as_deref().and_then(|c| c.parse::<i64>().ok()).unwrap_or(since);
    // Reasons follow their rating within a minute; pair each with the visitor's latest rating.
    let mut ratings: Vec<(String, i64, i64, Option<String>)> = Vec::new();
    for row in &rows {
        let (Some(visitor), Some(time), Some(poll)) =
            (str_field(row, "visitorId"), row.get("browserTime").and_then(Value::as_i64), str_field(row, "pollId"))
        else {
            continue;
        };
        max_seen = max_seen.max(time);
        if poll == rating_poll {
            let Some(rating) = row.get("pollResponse").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            else {
                continue;
            };
            ratings.push((visitor.to_owned(), time, rating, None));
        } else if Some(poll) == reason_poll.as_deref() {
            let text = row.get("pollResponse").and_then(Value::as_str).unwrap_or_default().to_owned();
            if let Some(r) = ratings
                .iter_mut()
                .rev()
                .find(|(v, t, _, reason)| v == visitor && *t <= time && time - *t <= 60_000 && reason.is_none())
            {
                r.3 = Some(text);
            }
        }
    }
    let mut added = 0;
    for (visitor, time, rating, reason) in ratings {
        let secs = time.div_euclid(1000);
        let key = response_key(&visitor, secs);
        let body = json!({
            "event": EVENT,
            "visitorId": visitor,
            "timestamp": secs,
            "uniqueId": key,
            "properties": {"guideId": guide.id, "nps": {"rating": rating, "reason": reason.unwrap_or_default()}},
        });
        // The ledger knows every response already written; a begin here is only a look.
        let state = ctx.store.begin_create(&key, &workflow.name, ctx.clock.now()).await?;
        if matches!(state, CreateState::Committed { .. }) {
            continue;
        }
        let event = InboxEvent {
            unique_id: key.clone(),
            source: "pendo-poll".into(),
            kind: EVENT.into(),
            received_at: ctx.clock.now(),
            body,
        };
        let stored = ctx.store.put_event(&event).await;
        ctx.store.abandon_create(&key).await?;
        if stored? {
            added += 1;
        }
    }
    let new_cursor = max_seen.to_string();
    if cursor.as_deref() != Some(new_cursor.as_str()) {
        ctx.store.advance_cursor(&workflow.name, CURSOR, cursor, new_cursor).await?;
    }
    Ok(added)
}

/// A scheduled or CLI run: reconcile, then write everything pending, as one recorded run.
///
/// # Errors
/// As [`process`] and [`reconcile`].
pub async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &NpsConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    if options.dry_run {
        let mut report = RunReport::new(&workflow.name, true, None, super::BudgetReport::default());
        let counts = ctx.store.inbox_counts().await?;
        report.deferred = usize::try_from(counts.pending).unwrap_or(usize::MAX);
        report.state = "dry_run".into();
        return Ok(report);
    }
    super::recorded(ctx, workflow, options, |_, run_id| async move {
        let started = std::time::Instant::now();
        let mut report = RunReport::new(&workflow.name, false, run_id, super::BudgetReport::default());
        let emails = BatchCache::default();
        let added = reconcile(ctx, workflow, config).await?;
        crate::testhook::crash_point("gather");
        let reconciled_at = started.elapsed().as_secs_f64();
        let mut total = BatchReport::default();
        while let Some(batch) =
            drain_once(ctx, workflow, config, &emails, &options.trigger, run_id, options.lease, None).await?
        {
            let full = batch.events >= MAX_BATCH as usize;
            total.add(batch);
            if !full {
                break;
            }
        }
        tracing::info!(workflow = %workflow.name, reconciled = added, "NPS run: pollEvents reconciled");
        report.matched = total.contacts_updated + total.unchanged;
        report.unmatched = total.unmatched;
        report.ambiguous = total.ambiguous;
        report.unchanged = total.unchanged;
        report.changed = total.contacts_updated;
        report.written = total.contacts_updated + total.accounts_updated + total.follow_ups;
        report.failed = total.failed;
        report.api_calls = total.api_calls.clone();
        report.samples = total.samples.clone();
        report.failures = total.failures.clone();
        // Answers kept pending by lock contention go in a later batch: the run says so.
        report.deferred = total.waiting;
        report.timings = vec![
            ("reconcile".into(), reconciled_at),
            ("write".into(), started.elapsed().as_secs_f64() - reconciled_at),
        ];
        report.state = super::state_of(&report).as_str().into();
        Ok(report)
    })
    .await
}

/// The nps-realtime template, for the registry ([`crate::config::template`]).
impl template::Spec for NpsConfig {
    fn keys() -> &'static [&'static str] {
        &["batch_window_ms", "detractors", "contact", "health_score", "follow_up", "nps_guide_id"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::nps::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        crate::config::nps::to_wire(self, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use template::{FieldRef, Flows};
        let c = &self.contact;
        let mut writes = vec![
            (FieldRef::salesforce("Contact", &c.score_field), key("contact.score_field")),
            (FieldRef::salesforce("Contact", &c.comment_field), key("contact.comment_field")),
            (FieldRef::salesforce("Contact", &c.date_field), key("contact.date_field")),
        ];
        let mut reads = Vec::new();
        if let Some(h) = &self.health_score {
            writes.push((FieldRef::salesforce("Account", &h.field), key("health_score.field")));
            reads.push((FieldRef::salesforce("Account", &h.engagement_field), key("health_score.engagement_field")));
        }
        Flows::to_salesforce(reads, writes)
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use crate::config::{ContactMatch, FollowUpObject};
        use template::{Expect, Use};
        let contact = &self.contact;
        for m in &contact.match_by {
            if let ContactMatch::VisitorIdField(field) = m {
                reqs.add("Contact", field, Use::Read, Expect::Text, "contact.visitor_id_field");
            }
        }
        reqs.add("Contact", &contact.score_field, Use::Update, Expect::Number, "contact.score_field");
        reqs.add("Contact", &contact.comment_field, Use::Update, Expect::Text, "contact.comment_field");
        reqs.add("Contact", &contact.date_field, Use::Update, Expect::Date, "contact.date_field");
        if let Some(h) = &self.health_score {
            reqs.add("Account", &h.field, Use::Update, Expect::Number, "health_score.field");
            reqs.add("Account", &h.engagement_field, Use::Read, Expect::Number, "health_score.engagement_field");
        }
        if let Some(f) = &self.follow_up {
            let object = f.object.name();
            reqs.add(object, &f.key_field, Use::Key, Expect::Text, "follow_up.key_field");
            let priority = Expect::Value(f.priority.clone());
            reqs.add(object, "Priority", Use::Create, priority, "follow_up.priority");
            if f.object == FollowUpObject::Task {
                // The due date is always set on a Task follow-up.
                reqs.add("Task", "ActivityDate", Use::Create, Expect::Date, "follow_up.due_in_days");
            }
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn response_keys_agree_between_webhook_and_poll_and_stay_short() {
        assert_eq!(response_key("v1", 1_700_000_000), "nps:1700000000:v1");
        let long = "x".repeat(500);
        let key = response_key(&long, 1);
        assert!(key.len() <= 200 && key.starts_with("nps:1:sha256:"), "{key}");
        assert_eq!(key, response_key(&long, 1));
    }

    #[test]
    fn sf_datetimes_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(parse_sf_datetime(&sf_datetime(t)), Some(t));
        assert_eq!(parse_sf_datetime("2023-11-14T22:13:20.000+0000"), Some(t));
    }
}
