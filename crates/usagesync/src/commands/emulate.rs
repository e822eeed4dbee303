//! `usagesync emulate`: serves the emulators on local addresses and prints one line per
//! emulator, `<name> <base URL>`, once it listens, so scripts can read the URL from stdout.

use std::io::Write;

use anyhow::{Context, Result};
use emulator::salesforce::{self, Config};
use emulator::server::Tls;
use tokio::net::TcpListener;

use crate::cli::EmulateArgs;

pub async fn run(args: EmulateArgs, json: bool) -> Result<()> {
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
        ..emulator::pendo::GenConfig::default()
    };
    let pendo_listener = TcpListener::bind(args.pendo_addr)
        .await
        .with_context(|| format!("Failed to bind the Pendo emulator to {}", args.pendo_addr))?;
    let pendo_addr = pendo_listener.local_addr().context("Failed to read the bound Pendo address")?;
    let pendo_state = tokio::task::spawn_blocking(move || {
        emulator::pendo::PendoState::generated(emulator::pendo::PendoConfig::default(), &gen_config)
    })
    .await
    .context("Failed to generate the Pendo data")?;
    let config = Config { daily_api_requests: args.daily_api_requests, ..Config::default() };
    let state = salesforce::SfState::new(config);
    if args.seed_salesforce {
        seed_matching_org(&state, &pendo_state)?;
    }
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

/// Loads the Salesforce records that match the generated Pendo data (same seed: Accounts whose
/// websites match the visitors' e-mail domains, Contacts, owners, open trial Opportunities), so
/// both emulators describe one world. All or nothing, parents before children.
pub(crate) fn seed_matching_org(sf: &salesforce::SfState, pendo: &emulator::pendo::PendoState) -> Result<()> {
    emulator::seed_matching_org(sf, pendo).map(|_| ()).map_err(|e| anyhow::anyhow!(e))
}
