//! `usagesync demo`: the main job end to end on embedded defaults. It starts both emulators on
//! 127.0.0.1 with one generated world (Pendo usage and the matching Salesforce org), runs the
//! engagement workflow with a config like the shipped example, shows what it wrote and what it
//! cost, then runs it again to show that nothing is rewritten.

use anyhow::{Context as _, Result, bail};
use emulator::pendo::{GenConfig, PendoConfig, PendoState};
use emulator::salesforce::{self as sf_emulator, Config as SfConfig};
use engine::workflow::{Context, RunOptions, RunReport};

use super::table::{self, thousands};
use super::{progress, sync};
use crate::cli::DemoArgs;

pub(super) const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// The demo's secrets: the emulators' well-known credentials, never the process environment.
pub(super) fn demo_env(name: &str) -> Option<String> {
    match name {
        "DEMO_SF_CLIENT_SECRET" => Some("emulator-secret".into()),
        "DEMO_PENDO_INTEGRATION_KEY" => Some("emulator-integration-key".into()),
        _ => None,
    }
}

pub async fn run(args: DemoArgs, json: bool) -> Result<u8> {
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let gen_config = GenConfig { seed: 1, accounts: args.accounts, days: 30, ..GenConfig::default() };
    let pendo_state = tokio::task::spawn_blocking(move || PendoState::generated(PendoConfig::default(), &gen_config))
        .await
        .context("Failed to generate the demo world")?;
    let sf = sf_emulator::spawn(SfConfig::default(), false).await.context("Failed to start the Salesforce emulator")?;
    super::emulate::seed_matching_org(&sf.state, &pendo_state)?;
    let pendo_emu =
        emulator::pendo::start("127.0.0.1:0", pendo_state).await.context("Failed to start the Pendo emulator")?;
    let dir = tempfile::tempdir().context("Failed to make a directory for the demo's state store")?;
    let store_url = format!("sqlite://{}", dir.path().join("usagesync-demo.db").display());
    let text = DEMO_CONFIG
        .replace("{salesforce_url}", &sf.base_url)
        .replace("{pendo_url}", &pendo_emu.base_url)
        .replace("{store_url}", &store_url);
    let config = engine::config::load_str(&text, "demo.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx: Context = super::context::build(config, &demo_env).await?;
    if !json {
        say!("Salesforce emulator: {}", sf.base_url);
        say!("Pendo emulator:      {}", pendo_emu.base_url);
        say!("Generated {} Pendo accounts with 30 days of usage, and the matching Salesforce org.", args.accounts);
    }

    let mut reports: Vec<RunReport> = Vec::new();
    for run in 1..=2 {
        let options = RunOptions {
            dry_run: false,
            trigger: "demo".into(),
            progress: progress::Bars::for_terminal(json),
            ..Default::default()
        };
        let report = engine::workflow::run(&ctx, "engagement", &options).await?;
        if !json {
            outln!();
            say!("=== Run {run} ===");
            sync::print_report(&report);
            if run == 1 {
                print_samples(&ctx, &report).await?;
            }
        }
        reports.push(report);
    }
    let (first, second) = (&reports[0], &reports[1]);
    if json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({"runs": reports}))?);
    } else {
        outln!();
        table::print(
            &["run", "written", "failed", "SF API calls", "one call per account"],
            &reports
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    vec![
                        (i + 1).to_string(),
                        thousands(r.written as u64),
                        thousands(r.failed as u64),
                        thousands(r.total_api_calls()),
                        thousands(r.matched as u64),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        outln!();
        say!(
            "Run 2 sent no writes: all {} matched Accounts already carried their current engagement.",
            thousands(second.matched as u64)
        );
        outln!();
        say!(
            "Next: `usagesync init` writes a starter config (every writing workflow off); point it at your \
             org, check it with `usagesync validate --remote`, see what a run would do with \
             `usagesync sync engagement --dry-run`, then enable the workflow and start `usagesync run`."
        );
    }
    pendo_emu.shutdown().await;
    if first.written == 0 || first.failed > 0 {
        bail!(
            "run 1 wrote {} Accounts with {} failures; the demo expects every match written",
            first.written,
            first.failed
        );
    }
    if second.written > 0 || second.write_calls() > 0 {
        bail!("run 2 rewrote {} unchanged Accounts", second.written);
    }
    Ok(0)
}

/// Reads a few written Accounts back from Salesforce, to show the values landed.
async fn print_samples(ctx: &Context, report: &RunReport) -> Result<()> {
    let ids: Vec<String> = report.samples.iter().take(5).map(|s| s.salesforce_id.clone()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let soql = salesforce::SoqlQuery::select(
        [
            "Id",
            "Name",
            "Pendo_Active_Visitors__c",
            "Pendo_Active_Days__c",
            "Pendo_Feature_Adoption__c",
            "Pendo_Engagement_Score__c",
        ],
        "Account",
    )
    .filter(salesforce::Condition::in_list("Id", ids.iter().map(String::as_str)))
    .build()?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        ctx.salesforce.query_collect(soql).await.context("Failed to read the written Accounts back")?;
    let cell = |m: &serde_json::Map<String, serde_json::Value>, f: &str| match m.get(f) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    outln!();
    say!("A few Accounts as Salesforce now holds them:");
    table::print(
        &["Account", "Name", "active visitors", "active days", "feature adoption %", "score"],
        &rows
            .iter()
            .map(|m| {
                vec![
                    cell(m, "Id"),
                    cell(m, "Name"),
                    cell(m, "Pendo_Active_Visitors__c"),
                    cell(m, "Pendo_Active_Days__c"),
                    cell(m, "Pendo_Feature_Adoption__c"),
                    cell(m, "Pendo_Engagement_Score__c"),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}
