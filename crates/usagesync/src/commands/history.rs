//! `usagesync runs`, `failures` and `replay`: the run history and the records Salesforce or
//! Pendo refused, read from the state store, dismissing them, and trying those records again.

use anyhow::{Result, bail};
use engine::store::{FailureFilter, FailureSelector, FailureStatus, OutcomeFilter, Run};

use super::context;
use super::table::{self, thousands};

pub async fn runs(
    config_path: &std::path::Path,
    id: Option<&str>,
    workflow: Option<&str>,
    limit: u32,
    search: Option<String>,
    json: bool,
) -> Result<u8> {
    let config = context::load_config(config_path)?;
    if let Some(name) = workflow {
        context::known_workflow(&config, name)?;
    }
    let store = context::open_store(&config, &context::env_var).await?;
    let Some(id) = id else {
        let runs = store.list_runs(workflow, limit).await?;
        if json {
            outln!("{}", serde_json::to_string_pretty(&runs)?);
            return Ok(0);
        }
        // Ids shortened to the prefix that tells them apart (`runs ID` takes a prefix), so the
        // table fits a terminal.
        let short = |id: &str| -> String {
            let len = (8..id.len())
                .find(|&n| runs.iter().filter(|r| r.id.to_string().starts_with(&id[..n])).count() == 1)
                .unwrap_or(id.len());
            id[..len].to_owned()
        };
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                let mut row = run_row(r);
                row[0] = short(&row[0]);
                row
            })
            .collect();
        table::print(&["run", "workflow", "trigger", "state", "started", "written", "failed", "API calls"], &rows);
        if runs.is_empty() {
            say!("No runs yet.");
        }
        return Ok(0);
    };
    let candidates: Vec<Run> =
        store.list_runs(workflow, 10_000).await?.into_iter().filter(|r| r.id.to_string().starts_with(id)).collect();
    let run = match candidates.as_slice() {
        [one] => one.clone(),
        [] => bail!("no run id starts with {id:?}"),
        more => bail!("{} runs start with {id:?}: give more of the id", more.len()),
    };
    let searched = search.is_some();
    let outcomes = store.run_outcomes(run.id, &OutcomeFilter { search, action: None, limit, offset: 0 }).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({"run": run, "records": outcomes}))?);
        return Ok(0);
    }
    // One fact per line: a one-row table of eight columns is wider than a terminal.
    let row = run_row(&run);
    for (label, value) in ["run", "workflow", "trigger", "state", "started", "written", "failed", "API calls"]
        .iter()
        .zip(&row)
        .filter(|(_, v)| !v.is_empty())
    {
        say!("{:<10} {value}", format!("{label}:"));
    }
    if let Some(holder) = &run.holder {
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        say!("worker: {holder} (last heartbeat {}, lease until {})", at(run.heartbeat_at), at(run.lease_until));
    }
    if let Some(e) = &run.error {
        say!("error: {e}");
    }
    outln!();
    // One block per record: its key, Id and action, then one line per field (a table with the
    // field changes in one cell is several screens wide, or unreadably narrow).
    for o in &outcomes {
        let id = o.salesforce_id.as_deref().map(|id| format!(" → {id}")).unwrap_or_default();
        say!("{}{id} ({})", o.key, o.action.as_str());
        if let (Some(code), Some(m)) = (&o.error_code, &o.message) {
            say!("    {code}: {m}");
        } else if let Some(m) = &o.message {
            say!("    {m}");
        }
        for c in &o.changes {
            match &c.before {
                Some(b) => say!("    {}: {b} → {}", c.field, c.after),
                None => say!("    {} = {}", c.field, c.after),
            }
        }
    }
    if outcomes.is_empty() {
        say!("{}", if searched { "No records of this run match the search." } else { "No records touched." });
    }
    Ok(0)
}

fn run_row(r: &Run) -> Vec<String> {
    let stat = |k: &str| r.stats.get(k).and_then(serde_json::Value::as_u64).map(thousands).unwrap_or_default();
    let calls = r
        .stats
        .get("api_calls")
        .and_then(|v| v.as_object())
        .map(|m| thousands(m.values().filter_map(serde_json::Value::as_u64).sum()))
        .unwrap_or_default();
    vec![
        r.id.to_string(),
        r.workflow.clone(),
        r.trigger.clone(),
        r.state.as_str().to_owned(),
        r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        stat("written"),
        stat("failed"),
        calls,
    ]
}

pub async fn failures(
    config_path: &std::path::Path,
    workflow: Option<String>,
    code: Option<String>,
    status: FailureStatus,
    limit: u32,
    json: bool,
) -> Result<u8> {
    let config = context::load_config(config_path)?;
    if let Some(name) = &workflow {
        context::known_workflow(&config, name)?;
    }
    let store = context::open_store(&config, &context::env_var).await?;
    let list = store
        .list_failures(&FailureFilter { workflow: workflow.clone(), status: Some(status), error_code: code, limit })
        .await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if status != FailureStatus::Open {
        if list.is_empty() {
            say!("No {status} failures.");
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|f| {
                vec![
                    f.id.to_string(),
                    f.workflow.clone(),
                    f.object.clone(),
                    f.key.clone(),
                    f.error_code.clone(),
                    f.attempts.to_string(),
                    f.reason.clone().unwrap_or_else(|| f.message.clone()),
                ]
            })
            .collect();
        let last = if status == FailureStatus::Dismissed { "reason" } else { "message" };
        table::print(&["id", "workflow", "object", "key", "error code", "attempts", last], &rows);
        return Ok(0);
    }
    let groups = store.failure_groups(workflow.as_deref()).await?;
    if groups.is_empty() {
        say!("No open failures.");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(code, message, n)| vec![code.clone(), thousands(*n), message.clone(), hint(code).to_owned()])
        .collect();
    table::print(&["error code", "records", "Salesforce or Pendo said", "what to do"], &rows);
    outln!();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|f| {
            vec![
                f.id.to_string(),
                f.workflow.clone(),
                f.object.clone(),
                f.key.clone(),
                f.salesforce_id.clone().unwrap_or_default(),
                f.error_code.clone(),
                f.fields.join(", "),
                f.attempts.to_string(),
            ]
        })
        .collect();
    table::print(&["id", "workflow", "object", "key", "Salesforce Id", "error code", "fields", "attempts"], &rows);
    say!(
        "Once the cause is fixed, try again with `usagesync replay --all`, `--code CODE` or by id; \
         close one that needs nothing with `usagesync failures dismiss ID --reason TEXT`."
    );
    Ok(0)
}

/// `usagesync failures dismiss`: closes open failures with a reason kept in the store.
pub async fn dismiss(
    config_path: &std::path::Path,
    ids: Vec<i64>,
    code: Option<String>,
    reason: &str,
    json: bool,
) -> Result<u8> {
    if reason.trim().is_empty() {
        bail!("say why with --reason: it is kept with each dismissed failure");
    }
    let selector = match code {
        Some(code) => FailureSelector::Code(code),
        None => FailureSelector::Ids(ids.clone()),
    };
    let config = context::load_config(config_path)?;
    let store = context::open_store(&config, &context::env_var).await?;
    let dismissed = store.dismiss_failures(&selector, reason.trim(), chrono::Utc::now()).await?;
    if json {
        outln!("{}", serde_json::json!({ "dismissed": dismissed }));
    } else {
        say!("Dismissed {} failure{}.", dismissed.len(), if dismissed.len() == 1 { "" } else { "s" });
    }
    // Ids named that were not open (unknown, being replayed, or closed already) are the
    // operator's mistake to see, not a silent success.
    let missed: Vec<i64> = ids.iter().copied().filter(|id| !dismissed.contains(id)).collect();
    if !missed.is_empty() {
        let list = missed.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        bail!("not open (unknown, being replayed, or closed already): {list}");
    }
    Ok(0)
}

/// A remediation hint per Salesforce error code: what a person would do about it.
pub fn hint(code: &str) -> &'static str {
    match code {
        "FIELD_CUSTOM_VALIDATION_EXCEPTION" => "a validation rule refused the value: adjust the rule or the mapping",
        "INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE" => {
            "the field is missing or read-only for the integration user: check field-level security"
        }
        "INSUFFICIENT_ACCESS_OR_READONLY" | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY" => {
            "the integration user cannot edit this record: check sharing and profile"
        }
        "ENTITY_IS_DELETED" | "NOT_FOUND" | "INVALID_CROSS_REFERENCE_KEY" | "INVALID_ID" => {
            "the Account is gone: re-match it (its cached match is re-checked on the next run)"
        }
        "UNABLE_TO_LOCK_ROW" | "UNPROCESSED" => "lock contention or an interrupted job: replay",
        "STRING_TOO_LONG" | "NUMBER_OUTSIDE_VALID_RANGE" => "the value does not fit the field: widen the field",
        "REQUEST_LIMIT_EXCEEDED" => "the org's daily API allocation was spent: replay after it frees up",
        "PENDO_REFUSED" => "Pendo refused the values: check the metadata field exists in Pendo with that type",
        "PENDO_ACCOUNT_MISSING" => "Pendo has no such account: fix the Account's Pendo id, or dismiss",
        "OUTCOME_UNKNOWN" => "the create may or may not have landed: replay (it looks the key up first)",
        _ => "read Salesforce's message, fix the cause, then replay",
    }
}

pub async fn replay(
    config_path: &std::path::Path,
    all: bool,
    code: Option<String>,
    ids: Vec<i64>,
    workflow: Option<String>,
    limit: u32,
    json: bool,
) -> Result<u8> {
    let selector = match (all, code, ids.is_empty()) {
        (_, Some(code), _) => FailureSelector::Code(code),
        (_, None, false) => FailureSelector::Ids(ids),
        (true, None, true) => FailureSelector::All { workflow },
        (false, None, true) => bail!("say what to replay: --all, --code CODE, or failure ids"),
    };
    let config = context::load_config(config_path)?;
    if let FailureSelector::All { workflow: Some(name) } = &selector {
        context::known_workflow(&config, name)?;
    }
    let ctx = context::build(config, &context::env_var).await?;
    let report = match engine::workflow::replay::replay(&ctx, &selector, limit).await {
        Ok(report) => report,
        // A spent allocation: the failures stay open for the next replay; nothing is lost.
        Err(e) if e.is_deferral() => {
            if json {
                outln!("{}", serde_json::json!({"state": "deferred", "error": e.to_string()}));
            } else {
                eprintln!("deferred: {e}");
            }
            return Ok(super::sync::EXIT_DEFERRED);
        }
        Err(e) => return Err(e.into()),
    };
    // Asked for something and found nothing open: say so, rather than succeed silently.
    if report.claimed == 0 {
        let what = match &selector {
            FailureSelector::Ids(ids) => {
                format!("failure(s) {}", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
            }
            FailureSelector::Code(code) => format!("failures with code {code}"),
            FailureSelector::All { workflow: Some(w) } => format!("failures of workflow {w}"),
            FailureSelector::All { workflow: None } => "failures".to_owned(),
        };
        if matches!(selector, FailureSelector::All { .. }) {
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                say!("No open {what} to replay.");
            }
            return Ok(0);
        }
        bail!(
            "no open {what} to replay (unknown ids, or already resolved, dismissed or being replayed): see `usagesync failures`"
        );
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say!(
            "Replayed {} failures: {} written, {} failed again ({} Salesforce calls).",
            report.claimed,
            report.resolved,
            report.failed_again,
            report.api_calls
        );
        for (workflow, note) in &report.notes {
            let run = report.runs.get(workflow).map(|r| format!(" (run {r})")).unwrap_or_default();
            say!("  {workflow}{run}: {note}");
        }
    }
    Ok(if report.failed_again > 0 { super::sync::EXIT_FAILURES } else { 0 })
}

/// `usagesync pin`: settles a match by hand. The Pendo account must exist (asked of Pendo),
/// and an Account the rules or a person already matched to another Pendo account is pinned
/// only with `--force`: two Pendo accounts on one Account make it ambiguous, and the next run
/// would stop writing it.
pub async fn pin(
    config_path: &std::path::Path,
    workflow: &str,
    pendo_account: &str,
    salesforce_id: Option<&str>,
    unpin: bool,
    force: bool,
    json: bool,
) -> Result<u8> {
    let config = context::load_config(config_path)?;
    context::known_workflow(&config, workflow)?;
    if unpin {
        let store = context::open_store(&config, &context::env_var).await?;
        let pinned = store.id_map(workflow).await?.into_iter().any(|e| e.pendo_id == pendo_account && e.pinned);
        if !pinned {
            bail!("{pendo_account:?} is not pinned in workflow {workflow:?}: nothing to unpin");
        }
        store.unpin_match(workflow, pendo_account).await?;
        if json {
            outln!("{}", serde_json::json!({"workflow": workflow, "pendo_account": pendo_account, "unpinned": true}));
        } else {
            say!("{pendo_account} is matched by the rules again from the next run on.");
        }
        return Ok(0);
    }
    let Some(id) = salesforce_id else { bail!("give the Salesforce Account Id to pin, or --unpin") };
    let id = salesforce::SalesforceId::parse(id).map_err(|e| anyhow::anyhow!("{id:?} is not a Salesforce Id: {e}"))?;
    if id.key_prefix() != "001" {
        bail!("{id} is not an Account Id (Accounts start with 001)");
    }
    context::check_run_secrets(&config, &context::env_var)?;
    // The Pendo account must exist: a typo would be pinned silently and never match anything.
    let pendo = engine::connect::pendo_client(&config, &context::env_var)?;
    match pendo.account(pendo_account).await {
        Ok(_) => {}
        Err(pendo::Error::NotFound { .. }) => {
            bail!("Pendo has no account {pendo_account:?}: check the id (as Pendo shows it); nothing was pinned")
        }
        Err(e) => bail!("could not check that Pendo has account {pendo_account:?}: {e}; nothing was pinned"),
    }
    let store = context::open_store(&config, &context::env_var).await?;
    let others: Vec<engine::store::IdMapEntry> = store
        .id_map(workflow)
        .await?
        .into_iter()
        .filter(|e| e.pendo_id != pendo_account && e.status == engine::store::MatchStatus::Matched)
        .filter(|e| {
            e.salesforce_id.as_deref().and_then(|s| salesforce::SalesforceId::parse(s).ok()).is_some_and(|s| s == id)
        })
        .collect();
    let describe = |e: &engine::store::IdMapEntry| {
        let how = if e.pinned {
            "pinned by a person".to_owned()
        } else {
            format!("rule {}", e.rule.as_deref().unwrap_or("?"))
        };
        format!("{} ({how})", e.pendo_id)
    };
    if !others.is_empty() {
        let list = others.iter().map(describe).collect::<Vec<_>>().join(", ");
        if !force {
            bail!(
                "Account {id} is already matched to Pendo account {list}. Pinning {pendo_account} there too \
                 would make two Pendo accounts claim one Account, and neither would be written. Pin the \
                 other elsewhere (or unpin it) first, or pass --force to pin anyway; nothing was pinned"
            );
        }
        eprintln!("warning: Account {id} is also matched to Pendo account {list}; pinned anyway (--force).");
    }
    store.pin_match(workflow, pendo_account, id.as_str()).await?;
    if json {
        let also: Vec<&str> = others.iter().map(|e| e.pendo_id.as_str()).collect();
        outln!(
            "{}",
            serde_json::json!({"workflow": workflow, "pendo_account": pendo_account, "pinned": id.as_str(), "also_matched": also})
        );
    } else {
        say!("{pendo_account} is pinned to Account {id}; the next run writes it there.");
    }
    Ok(0)
}
