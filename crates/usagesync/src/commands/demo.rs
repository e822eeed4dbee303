//! `usagesync demo`: the main jobs end to end on embedded defaults. It starts both emulators on
//! 127.0.0.1 with one generated world (Pendo usage and the matching Salesforce org), runs the
//! engagement workflow with a config like the shipped example, shows what it wrote and what it
//! cost, then runs it again to show that nothing is rewritten; then the same for one risk signal
//! turned into Tasks (stalled adoption) and for each person's usage on their Contact.

use anyhow::{Context as _, Result, bail};
use emulator::pendo::GenConfig;
use emulator::salesforce::{self as sf_emulator, Config as SfConfig};
use engine::workflow::{Context, RunOptions, RunReport};

use super::table::{self, thousands};
use super::{progress, sync};
use crate::cli::DemoArgs;

pub(super) const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// The demo's secrets: the emulators' well-known credentials, never the process environment.
fn demo_env(name: &str) -> Option<String> {
    match name {
        "DEMO_SF_CLIENT_SECRET" => Some("emulator-secret".into()),
        "DEMO_PENDO_INTEGRATION_KEY" => Some("emulator-integration-key".into()),
        _ => None,
    }
}

/// A context for `text`, a config like the demo's named `name`, with its `{salesforce_url}`,
/// `{pendo_url}` and `{store_url}` filled in from `urls` in that order, on the demo's secrets:
/// the set-up the demo and the benchmarks share.
pub(super) async fn context(text: &str, name: &str, urls: [&str; 3]) -> Result<Context> {
    let [salesforce, pendo, store] = urls;
    let text = text.replace("{salesforce_url}", salesforce).replace("{pendo_url}", pendo).replace("{store_url}", store);
    let config = engine::config::load_str(&text, name).map_err(|e| anyhow::anyhow!("{e}"))?;
    super::context::build(config, &demo_env).await
}

pub async fn run(args: DemoArgs, json: bool) -> Result<u8> {
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let gen_config = GenConfig { seed: 1, accounts: args.accounts, days: 30, ..GenConfig::default() };
    let world =
        emulator::world::start(gen_config, SfConfig::default()).await.context("Failed to start the demo world")?;
    let (sf, pendo_emu) = (world.salesforce, world.pendo);
    add_contact_fields(&sf.state)?;
    let dir = tempfile::tempdir().context("Failed to make a directory for the demo's state store")?;
    let store_url = format!("sqlite://{}", dir.path().join("usagesync-demo.db").display());
    let ctx = context(DEMO_CONFIG, "demo.yaml", [&sf.base_url, &pendo_emu.base_url, &store_url]).await?;
    if !json {
        say!("Salesforce emulator: {}", sf.base_url);
        say!("Pendo emulator:      {}", pendo_emu.base_url);
        say!("Generated {} Pendo accounts with 30 days of usage, and the matching Salesforce org.", args.accounts);
    }

    let options = || RunOptions {
        dry_run: false,
        trigger: "demo".into(),
        progress: progress::Bars::for_terminal(json),
        ..Default::default()
    };
    let mut reports: Vec<RunReport> = Vec::new();
    for run in 1..=2 {
        let report = engine::workflow::run(&ctx, "engagement", &options()).await?;
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

    let mut signal: Vec<RunReport> = Vec::new();
    for _ in 1..=2 {
        signal.push(engine::workflow::run(&ctx, SIGNAL, &options()).await?);
    }
    if !json {
        outln!();
        say!("=== Signal → action: {SIGNAL} ===");
        say!("A Task for the CSM (or the Account owner) when this condition (CEL, alert.when) holds:");
        say!("  {}", condition(DEMO_CONFIG));
        print_tasks(&ctx).await?;
    }
    let mut people: Vec<RunReport> = Vec::new();
    for _ in 1..=2 {
        people.push(engine::workflow::run(&ctx, PEOPLE, &options()).await?);
    }
    if !json {
        outln!();
        say!("=== Contact engagement: {PEOPLE} ===");
        say!("Each person's usage onto their Contact, matched by e-mail:");
        print_contacts(&ctx, &people[0]).await?;
    }

    let (first, second) = (&reports[0], &reports[1]);
    if json {
        let all = serde_json::json!({"runs": reports, "signal_runs": signal, "people_runs": people});
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        outln!();
        let runs = [("engagement", &reports), (SIGNAL, &signal), (PEOPLE, &people)];
        table::print(
            &["workflow", "run", "written", "failed", "SF API calls", "matched"],
            &runs
                .iter()
                .flat_map(|(name, reports)| {
                    reports.iter().enumerate().map(move |(i, r)| {
                        vec![
                            (*name).to_owned(),
                            (i + 1).to_string(),
                            thousands(r.written as u64),
                            thousands(r.failed as u64),
                            thousands(r.total_api_calls()),
                            thousands(r.matched as u64),
                        ]
                    })
                })
                .collect::<Vec<_>>(),
        );
        outln!();
        say!(
            "Run 2 sent no writes: all {} matched Accounts already carried their current engagement, \
             each stalled account's Task was made once (its episode stays open until adoption \
             recovers), and all {} matched Contacts carried their current usage.",
            thousands(second.matched as u64),
            thousands(people[1].matched as u64)
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
    if signal.iter().any(|r| r.failed > 0) || signal[1].written > 0 {
        bail!(
            "{SIGNAL} failed {} Task(s) and run 2 made {} again; the demo expects one Task per episode",
            signal[0].failed + signal[1].failed,
            signal[1].written
        );
    }
    if people[0].written == 0 || people.iter().any(|r| r.failed > 0) || people[1].written > 0 {
        bail!(
            "{PEOPLE} wrote {} then {} Contacts with {} failures; the demo expects them written once",
            people[0].written,
            people[1].written,
            people[0].failed + people[1].failed
        );
    }
    Ok(0)
}

/// The demo's signal → action and Contact engagement workflows (names in demo.yaml).
const SIGNAL: &str = "stalled-adoption";
const PEOPLE: &str = "people";

/// The Contact fields the people workflow writes that the generated org lacks, added as an
/// admin would before turning the workflow on (`usagesync setup salesforce` writes them).
const CONTACT_FIELDS: [&str; 5] = [
    "Pendo_Active_Days__c",
    "Pendo_Events__c",
    "Pendo_Minutes__c",
    "Pendo_Features_Used__c",
    "Pendo_Guides_Completed__c",
];

fn add_contact_fields(sf: &sf_emulator::SfState) -> Result<()> {
    let mut db = sf.db.lock();
    for name in CONTACT_FIELDS {
        let spec = serde_json::from_value(serde_json::json!({"name": name, "type": "double"}))
            .with_context(|| format!("Failed to describe Contact.{name} for the emulator"))?;
        db.schema
            .add_custom_field("Contact", spec)
            .map_err(|e| anyhow::anyhow!("Failed to add Contact.{name} to the emulated org: {e}"))?;
    }
    Ok(())
}

/// The signal workflow's `alert.when`, as demo.yaml has it, to show what made the Tasks.
fn condition(config: &str) -> String {
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("when: "))
        .map(|c| c.trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn cell(m: &serde_json::Map<String, serde_json::Value>, f: &str) -> String {
    match m.get(f) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Reads a few of the Tasks the signal made back from Salesforce.
async fn print_tasks(ctx: &Context) -> Result<()> {
    let soql = salesforce::SoqlQuery::select(["Subject", "Priority", "ActivityDate"], "Task")
        .filter(salesforce::Condition::starts_with("Usagesync_Key__c", &format!("usagesync:{SIGNAL}:")))
        .limit(3)
        .build()?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        ctx.salesforce.query_collect(soql).await.context("Failed to read the Tasks back")?;
    if rows.is_empty() {
        say!("No account met it in this world, so no Task was made.");
        return Ok(());
    }
    say!("A few of the Tasks as Salesforce now holds them:");
    table::print(
        &["Task subject", "priority", "due"],
        &rows
            .iter()
            .map(|m| vec![cell(m, "Subject"), cell(m, "Priority"), cell(m, "ActivityDate")])
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// Reads a few of the Contacts the people workflow wrote back from Salesforce.
async fn print_contacts(ctx: &Context, report: &RunReport) -> Result<()> {
    let ids: Vec<String> = report.samples.iter().map(|s| s.salesforce_id.clone()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let soql = salesforce::SoqlQuery::select(
        ["Name", "Pendo_Active_Days__c", "Pendo_Events__c", "Pendo_Features_Used__c", "Pendo_Last_Active__c"],
        "Contact",
    )
    .filter(salesforce::Condition::in_list("Id", ids.iter().map(String::as_str)))
    .build()?;
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> =
        ctx.salesforce.query_collect(soql).await.context("Failed to read the written Contacts back")?;
    // The generated world reuses names across accounts; three different people read better.
    let mut names = std::collections::HashSet::new();
    rows.retain(|m| names.insert(cell(m, "Name")));
    rows.truncate(3);
    table::print(
        &["Contact", "active days", "events", "features used", "last active"],
        &rows
            .iter()
            .map(|m| {
                vec![
                    cell(m, "Name"),
                    cell(m, "Pendo_Active_Days__c"),
                    cell(m, "Pendo_Events__c"),
                    cell(m, "Pendo_Features_Used__c"),
                    cell(m, "Pendo_Last_Active__c"),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
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
