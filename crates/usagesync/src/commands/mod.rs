//! One module per command.

pub(crate) mod alerts;
mod bench;
mod bench_chaos;
mod bench_creates;
mod bench_engagement;
mod bench_nps;
mod context;
mod daemon;
mod demo;
mod emulate;
pub(crate) mod history;
mod metrics;
mod progress;
pub(crate) mod prune;
mod setup;
mod sf_package;
mod sync;
mod table;

use anyhow::Result;

use crate::cli::{BenchTarget, Cli, Command};

pub use alerts::SentLog;
pub use context::{ConfigInvalid, EXIT_CONFIG, run_lease};
pub use table::say;

/// Runs a command; the number is the process exit code (see the README's table).
pub async fn run(cli: Cli) -> Result<u8> {
    let config = cli.config.as_path();
    let json = cli.json;
    let ok = |r: Result<()>| r.map(|()| 0);
    match cli.command {
        Command::Emulate(args) => ok(emulate::run(args, json).await),
        Command::Demo(args) => demo::run(args, json).await,
        Command::Init { path, force } => setup::init(path.as_deref().unwrap_or(config), force, json),
        Command::Validate { secrets, remote } => setup::validate(config, secrets || remote, remote, json).await,
        Command::Run { listen, grace_seconds } => {
            daemon::run(config, listen, std::time::Duration::from_secs(grace_seconds)).await
        }
        Command::Sync { workflow, dry_run } => sync::run(config, &workflow, dry_run, json).await,
        Command::Runs { id, workflow, limit, search } => {
            history::runs(config, id.as_deref(), workflow.as_deref(), limit, search, json).await
        }
        Command::Failures { action: Some(crate::cli::FailuresAction::Dismiss { ids, code, reason }), .. } => {
            history::dismiss(config, ids, code, &reason, json).await
        }
        Command::Failures { action: None, workflow, code, status, limit } => {
            history::failures(config, workflow, code, status, limit, json).await
        }
        Command::Pin { workflow, pendo_account, salesforce_id, unpin, force } => {
            history::pin(config, &workflow, &pendo_account, salesforce_id.as_deref(), unpin, force, json).await
        }
        Command::Replay { all, code, ids, workflow, limit } => {
            history::replay(config, all, code, ids, workflow, limit, json).await
        }
        Command::Prune { dry_run, vacuum } => prune::run(config, dry_run, vacuum, json).await,
        Command::ConsolePassword => setup::console_password(),
        Command::Setup { target: crate::cli::SetupTarget::Pendo { apply } } => setup::pendo(config, apply, json).await,
        Command::Setup { target: crate::cli::SetupTarget::Salesforce { out, force, remote } } => {
            setup::salesforce(config, out.as_deref(), force, remote, json).await
        }
        Command::Bench { target: BenchTarget::Emulator { upserts, collection_records, concurrency } } => {
            ok(bench::emulator(upserts, collection_records, concurrency).await)
        }
        Command::Bench { target: BenchTarget::Pendo { accounts, days, runs, seed } } => {
            ok(bench::pendo(seed, accounts, days, runs).await)
        }
        Command::Bench { target: BenchTarget::Engagement { accounts, days, only } } => {
            ok(bench_engagement::engagement(&accounts, days, &only).await)
        }
        Command::Bench { target: BenchTarget::Nps { rate, seconds, window_ms, workers, postgres } } => {
            ok(bench_nps::nps(&rate, seconds, window_ms, &workers, postgres.as_deref()).await)
        }
        Command::Bench { target: BenchTarget::Chaos { accounts, kills, workflows, postgres, workers } } => {
            let workers = usize::try_from(workers).unwrap_or(2);
            bench_chaos::chaos(accounts, kills, &workflows, postgres.as_deref(), workers, json).await
        }
        Command::Bench { target: BenchTarget::Creates { accounts, days, only } } => {
            ok(bench_creates::creates(&accounts, days, &only).await)
        }
        Command::Bench { target: BenchTarget::Bulk { records, salesforce_url } } => {
            ok(bench::bulk(records, salesforce_url).await)
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
