//! Loading what every engine command needs: the config (with every error reported), the state
//! store and the two clients. Secrets are read from the process environment here and nowhere
//! else in the binary.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use engine::config::{Config, StoreKind};
use engine::workflow::Context;

/// Exit code for a config that does not load.
pub const EXIT_CONFIG: u8 = 2;

/// A config that did not load: its errors, already formatted for a person.
#[derive(Debug)]
pub struct ConfigInvalid(pub String);

impl std::fmt::Display for ConfigInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigInvalid {}

pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Shortens run leases in the binary's own tests, which kill a run and must not wait a minute
/// for its lease to lapse. Read in debug builds only, so a release binary cannot be tripped by it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const TEST_RUN_LEASE_ENV: &str = "USAGESYNC_TEST_RUN_LEASE_MS";

/// The lease a run holds in the store: [`engine::workflow::RunLease::DEFAULT`], except in a
/// debug build with [`TEST_RUN_LEASE_ENV`] set.
pub fn run_lease() -> engine::workflow::RunLease {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(TEST_RUN_LEASE_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|ms| *ms > 0) {
        return engine::workflow::RunLease::lasting(std::time::Duration::from_millis(ms));
    }
    engine::workflow::RunLease::DEFAULT
}

pub fn load_config(path: &Path) -> Result<Config> {
    if !path.exists() {
        return Err(anyhow::Error::new(ConfigInvalid(format!(
            "error: no config at {}: write a starter one with `usagesync init`, or name yours with \
             --config PATH (or USAGESYNC_CONFIG)",
            path.display()
        ))));
    }
    engine::config::load(path).map_err(|errors| anyhow::Error::new(ConfigInvalid(errors.to_string())))
}

/// Checks, before anything is opened, that every secret a run needs (the connections' and the
/// store's) can be read, and names every one that cannot, not just the first.
pub fn check_run_secrets(config: &Config, env: engine::connect::Env<'_>) -> Result<()> {
    let Err(errors) = config.check_secrets(env) else { return Ok(()) };
    let missing: Vec<String> = errors
        .errors
        .iter()
        .filter(|e| e.key.starts_with("connections.") || e.key.starts_with("store."))
        .map(|e| format!("{}: {}: {}", config.origin(), e.key, e.message))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(anyhow::Error::new(ConfigInvalid(format!(
        "{}\nerror: {} secret(s) missing; set them (or fix the config), then try again.",
        missing.join("\n"),
        missing.len()
    ))))
}

/// The store location with its password (kept apart in the config so the URL can be shown).
pub fn store_location(config: &Config, env: engine::connect::Env<'_>) -> Result<String> {
    let store = &config.store;
    let Some(password) = &store.password else { return Ok(store.url.clone()) };
    let password = password.resolve(env).map_err(|e| anyhow::anyhow!("store.password: {}", e.message))?;
    if store.kind != StoreKind::Postgres {
        return Ok(store.url.clone());
    }
    let mut url = url::Url::parse(&store.url).context("store.url is not a URL")?;
    url.set_password(Some(password.expose())).map_err(|()| anyhow::anyhow!("store.url cannot take a password"))?;
    Ok(url.to_string())
}

pub async fn open_store(config: &Config, env: engine::connect::Env<'_>) -> Result<Arc<dyn engine::store::Store>> {
    let location = store_location(config, env)?;
    engine::store::open(&location).await.with_context(|| format!("Failed to open the state store {}", config.store.url))
}

pub async fn build(config: Config, env: engine::connect::Env<'_>) -> Result<Context> {
    // Before the store is opened, so a bad value changes nothing.
    let clock = engine::clock::Clock::from_env()?;
    check_run_secrets(&config, env)?;
    let store = open_store(&config, env).await?;
    let salesforce = engine::connect::salesforce_client(&config, env)?;
    let pendo = engine::connect::pendo_client(&config, env)?;
    Ok(Context { config: Arc::new(config), salesforce, pendo, store, clock })
}

/// Refuses a workflow name the config does not have, listing those it has and the nearest.
pub fn known_workflow(config: &Config, name: &str) -> Result<()> {
    if config.workflows.contains_key(name) {
        return Ok(());
    }
    let names: Vec<&str> = config.workflows.keys().map(String::as_str).collect();
    let near = engine::preflight::closest(name, names.iter().copied())
        .map(|n| format!("; did you mean {n:?}?"))
        .unwrap_or_else(|| ".".into());
    anyhow::bail!("no workflow {name:?} in {}{near} The config has: {}.", config.origin(), names.join(", "))
}
