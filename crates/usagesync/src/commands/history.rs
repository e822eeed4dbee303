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
    let store = context::open_store(&config, &context::env_var).await?;
    let Some(id) = id else {
        let runs = store.list_runs(workflow, limit).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&runs)?);
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
        table::print(&["run", "workflow", "trigger", "state", "started", "written", "failed", "API calls"], &rows);
        return Ok(0);
    };
    let candidates: Vec<Run> =
        store.list_runs(workflow, 10_000).await?.into_iter().filter(|r| r.id.to_string().starts_with(id)).collect();
    let run = match candidates.as_slice() {
        [one] => one.clone(),
        [] => bail!("no run id starts with {id:?}"),
        more => bail!("{} runs start with {id:?}: give more of the id", more.len()),
    };
    let outcomes = store.run_outcomes(run.id, &OutcomeFilter { search, action: None, limit, offset: 0 }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"run": run, "records": outcomes}))?);
        return Ok(0);
    }
    table::print(
        &["run", "workflow", "trigger", "state", "started", "written", "failed", "API calls"],
        &[run_row(&run)],
    );
    if let Some(holder) = &run.holder {
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        println!("worker: {holder} (last heartbeat {}, lease until {})", at(run.heartbeat_at), at(run.lease_until));
    }
    if let Some(e) = &run.error {
        println!("error: {e}");
    }
    println!();
    let mut rows = Vec::new();
    for o in &outcomes {
        let changes: Vec<String> = o
            .changes
            .iter()
            .map(|c| match &c.before {
                Some(b) => format!("{}: {b} → {}", c.field, c.after),
                None => format!("{} = {}", c.field, c.after),
            })
            .collect();
        let detail = match (&o.error_code, &o.message) {
            // Drift rows carry both: why, and each field as sent → as now.
            (Some(code), Some(m)) if !changes.is_empty() => format!("{code}: {m}; {}", changes.join("; ")),
            (Some(code), Some(m)) => format!("{code}: {m}"),
            (None, Some(m)) => m.clone(),
            _ => changes.join("; "),
        };
        rows.push(vec![
            o.key.clone(),
            o.salesforce_id.clone().unwrap_or_default(),
            o.action.as_str().to_owned(),
            detail,
        ]);
    }
    table::print(&["Pendo account", "Salesforce Id", "action", "fields / reason"], &rows);
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
    let store = context::open_store(&config, &context::env_var).await?;
    let list = store
        .list_failures(&FailureFilter { workflow: workflow.clone(), status: Some(status), error_code: code, limit })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if status != FailureStatus::Open {
        if list.is_empty() {
            println!("No {status} failures.");
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
        println!("No open failures.");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(code, message, n)| vec![code.clone(), thousands(*n), message.clone(), hint(code).to_owned()])
        .collect();
    table::print(&["error code", "records", "Salesforce or Pendo said", "what to do"], &rows);
    println!();
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
    println!(
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
        println!("{}", serde_json::json!({ "dismissed": dismissed }));
    } else {
        println!("Dismissed {} failure{}.", dismissed.len(), if dismissed.len() == 1 { "" } else { "s" });
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
    let ctx = context::build(config, &context::env_var).await?;
    let report = engine::workflow::replay::replay(&ctx, &selector, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Replayed {} failures: {} written, {} failed again ({} Salesforce calls).",
            report.claimed, report.resolved, report.failed_again, report.api_calls
        );
        for (workflow, note) in &report.notes {
            let run = report.runs.get(workflow).map(|r| format!(" (run {r})")).unwrap_or_default();
            println!("  {workflow}{run}: {note}");
        }
    }
    Ok(if report.failed_again > 0 { super::sync::EXIT_FAILURES } else { 0 })
}

pub async fn pin(
    config_path: &std::path::Path,
    workflow: &str,
    pendo_account: &str,
    salesforce_id: Option<&str>,
    unpin: bool,
) -> Result<u8> {
    let config = context::load_config(config_path)?;
    if !config.workflows.contains_key(workflow) {
        bail!("workflow {workflow:?} is not in the config");
    }
    let store = context::open_store(&config, &context::env_var).await?;
    if unpin {
        store.unpin_match(workflow, pendo_account).await?;
        println!("{pendo_account} is matched by the rules again from the next run on.");
        return Ok(0);
    }
    let Some(id) = salesforce_id else { bail!("give the Salesforce Account Id to pin, or --unpin") };
    let id = salesforce::SalesforceId::parse(id).map_err(|e| anyhow::anyhow!("{id:?} is not a Salesforce Id: {e}"))?;
    if id.key_prefix() != "001" {
        bail!("{id} is not an Account Id (Accounts start with 001)");
    }
    store.pin_match(workflow, pendo_account, id.as_str()).await?;
    println!("{pendo_account} is pinned to Account {id}; the next run writes it there.");
    Ok(0)
}
