//! `usagesync emulate`: serves the emulators on one generated world ([`emulator::world`]) on
//! local addresses and prints one line per emulator, `<name> <base URL>`, once it listens, so
//! scripts can read the URL from stdout; and [`in_child`], the same command started by a
//! benchmark in a child process and read back.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use emulator::salesforce::{self, Config};
use emulator::server::Tls;
use emulator::world::World;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

use crate::cli::EmulateArgs;

pub async fn run(args: EmulateArgs, json: bool) -> Result<()> {
    if args.exit_with_stdin {
        // A thread, not a task: generating a large world blocks for a minute or more, and a
        // parent gone meanwhile must not leave gigabytes behind. Nothing here needs shutting
        // down cleanly (the emulators keep no state beyond the process).
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    let listener = TcpListener::bind(args.salesforce_addr)
        .await
        .with_context(|| format!("Failed to bind the Salesforce emulator to {}", args.salesforce_addr))?;
    let addr = listener.local_addr().context("Failed to read the bound address")?;
    let tls =
        if args.tls { Some(Tls::self_signed().context("Failed to make a self-signed certificate")?) } else { None };
    if let (Some(tls), Some(path)) = (&tls, &args.cert_out) {
        std::fs::write(path, &tls.cert_pem)
            .with_context(|| format!("Failed to write the certificate to {}", path.display()))?;
    }
    let gen_config = emulator::pendo::GenConfig {
        seed: args.seed,
        accounts: usize::try_from(args.accounts).context("--accounts is too large")?,
        days: args.days,
        hierarchies: args.hierarchies,
        ..emulator::pendo::GenConfig::default()
    };
    let pendo_listener = TcpListener::bind(args.pendo_addr)
        .await
        .with_context(|| format!("Failed to bind the Pendo emulator to {}", args.pendo_addr))?;
    let pendo_addr = pendo_listener.local_addr().context("Failed to read the bound Pendo address")?;
    // Served here rather than by `World::serve`: on the addresses asked for, perhaps over TLS,
    // until a shutdown signal, and with an empty org unless `--seed-salesforce`.
    let world = World::generate_blocking(gen_config).await.context("Failed to generate the Pendo data")?;
    let config = Config { daily_api_requests: args.daily_api_requests, ..Config::default() };
    let state = salesforce::SfState::new(config);
    if args.seed_salesforce {
        world.seed_salesforce(&state).context("Failed to seed the Salesforce org")?;
    }
    let pendo_state = world.pendo;
    let url = salesforce::base_url(addr, tls.is_some());
    {
        let mut out = std::io::stdout().lock();
        if json {
            let line = serde_json::json!({"salesforce": url.to_string(), "pendo": format!("http://{pendo_addr}")});
            writeln!(out, "{line}").context("Failed to write to stdout")?;
        } else {
            writeln!(out, "salesforce {url}").context("Failed to write to stdout")?;
            writeln!(out, "pendo http://{pendo_addr}").context("Failed to write to stdout")?;
        }
        out.flush().context("Failed to flush stdout")?;
    }
    let (stop_pendo, stopped) = tokio::sync::oneshot::channel::<()>();
    let pendo = tokio::spawn(emulator::pendo::serve(pendo_listener, pendo_state, async move {
        let _ = stopped.await;
    }));
    salesforce::serve(listener, state, tls, super::shutdown_signal()).await;
    let _ = stop_pendo.send(());
    pendo.await.context("The Pendo emulator task failed")?.context("The Pendo emulator failed")?;
    Ok(())
}

/// The emulators in a child process, killed when this is dropped, and gone by themselves when
/// this process ends some other way (its end of their stdin closes with it).
pub(super) struct Child {
    pub process: tokio::process::Child,
    pub salesforce: String,
    pub pendo: String,
}

/// `usagesync emulate` on a generated world of `accounts` × `days` with a seeded org and an
/// allocation no benchmark spends, in a child process (so that a benchmark's memory and CPU
/// figures are usagesync's alone), read until it has printed both addresses.
pub(super) async fn in_child(accounts: usize, days: u32) -> Result<Child> {
    in_child_with(accounts, days, &[]).await
}

/// [`in_child`] with more `usagesync emulate` arguments (e.g. `--hierarchies`).
pub(super) async fn in_child_with(accounts: usize, days: u32, extra: &[&str]) -> Result<Child> {
    let exe = std::env::current_exe().context("Failed to find this executable")?;
    let mut process = tokio::process::Command::new(exe)
        .args(["emulate", "--seed-salesforce", "--daily-api-requests", "10000000"])
        .args(["--accounts", &accounts.to_string(), "--days", &days.to_string()])
        .args(extra)
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start `usagesync emulate`")?;
    let stdout = process.stdout.take().context("no stdout from the emulator process")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut salesforce, mut pendo) = (None, None);
    while salesforce.is_none() || pendo.is_none() {
        let Some(line) = lines.next_line().await.context("Failed to read the emulator's addresses")? else {
            bail!("the emulator process exited before printing its addresses");
        };
        if let Some(url) = line.strip_prefix("salesforce ") {
            salesforce = Some(url.to_owned());
        } else if let Some(url) = line.strip_prefix("pendo ") {
            pendo = Some(url.to_owned());
        }
    }
    Ok(Child { process, salesforce: salesforce.unwrap_or_default(), pendo: pendo.unwrap_or_default() })
}
