//! The client against the emulator on loopback: every source, operator and error path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aggregation;
mod entities;
mod metadata;
mod retry;
mod webhook;

use std::time::Duration;

use emulator::pendo::{GenConfig, PendoConfig, Running};
use pendo::{Client, ClientConfig, RetryPolicy};

pub const KEY: &str = "emulator-integration-key";

pub fn gen_config() -> GenConfig {
    GenConfig { seed: 11, accounts: 30, days: 21, ..GenConfig::default() }
}

pub async fn emulator() -> Running {
    emulator_with(PendoConfig::default()).await
}

pub async fn emulator_with(cfg: PendoConfig) -> Running {
    emulator::pendo::start_for_tests(cfg, &gen_config()).await.unwrap()
}

pub fn client_for(e: &Running, key: &str) -> Client {
    let mut c = ClientConfig::new(&e.base_url, key).unwrap();
    c.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        jitter: false,
        max_throttled_wait: Duration::from_secs(2),
    };
    c.timeout = Duration::from_secs(30);
    Client::new(c).unwrap()
}

pub fn client(e: &Running) -> Client {
    client_for(e, KEY)
}
