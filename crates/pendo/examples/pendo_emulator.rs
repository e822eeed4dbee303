//! Runs the Pendo emulator or its benchmarks from the command line, for the conformance harness
//! and for measurements, without depending on the `usagesync` binary.
//!
//! ```text
//! cargo run -p pendo --example pendo_emulator -- serve [--addr 127.0.0.1:0] [--accounts N] [--seed S] [--days D]
//! cargo run --release -p pendo --example pendo_emulator -- bench [--accounts N] [--days D] [--runs R] [--seed S] [--org false]
//! ```
#![allow(clippy::print_stdout)]

use std::collections::HashMap;

use emulator::pendo::{GenConfig, PendoConfig, PendoState};

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| "serve".into());
    let mut flags = HashMap::new();
    while let Some(k) = it.next() {
        if let Some(name) = k.strip_prefix("--") {
            flags.insert(name.to_string(), it.next().unwrap_or_default());
        }
    }
    (cmd, flags)
}

fn num<T: std::str::FromStr>(flags: &HashMap<String, String>, k: &str, default: T) -> T {
    flags.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident set size from /proc (Linux); 0 elsewhere.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (cmd, flags) = args();
    let seed = num(&flags, "seed", 1u64);
    match cmd.as_str() {
        "bench" => {
            let accounts = num(&flags, "accounts", 6_000usize);
            let days = num(&flags, "days", 30u32);
            let runs = num(&flags, "runs", 5usize);
            let with_org = num(&flags, "org", true);
            let report =
                tokio::task::spawn_blocking(move || emulator::pendo::bench::run(seed, accounts, days, runs, with_org))
                    .await??;
            let mut v = serde_json::to_value(&report)?;
            v["peakRssBytes"] = serde_json::json!(peak_rss_bytes());
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        _ => {
            let addr = flags.get("addr").cloned().unwrap_or_else(|| "127.0.0.1:0".into());
            let gc = GenConfig {
                seed,
                accounts: num(&flags, "accounts", 50usize),
                days: num(&flags, "days", 60u32),
                ..GenConfig::default()
            };
            let state = PendoState::generated(PendoConfig::default(), &gc);
            let running = emulator::pendo::start(&addr, state).await?;
            println!("pendo {}", running.base_url);
            tokio::signal::ctrl_c().await?;
            running.shutdown().await;
        }
    }
    Ok(())
}
