//! One module per command.

mod bench;
mod demo;
mod emulate;

use anyhow::Result;

use crate::cli::{BenchTarget, Cli, Command};

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Emulate(args) => emulate::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench { target: BenchTarget::Emulator { upserts, collection_records, concurrency } } => {
            bench::emulator(upserts, collection_records, concurrency).await
        }
        Command::Bench { target: BenchTarget::Pendo { accounts, days, runs, seed } } => {
            bench::pendo(seed, accounts, days, runs).await
        }
        Command::Bench { target: BenchTarget::Bulk { records, salesforce_url } } => {
            bench::bulk(records, salesforce_url).await
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
