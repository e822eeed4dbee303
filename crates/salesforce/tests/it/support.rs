//! Harness: start an emulator, build clients for each OAuth flow, and drive the admin API.

use std::time::Duration;

use emulator::salesforce::{Config, Running, spawn};
use salesforce::{ApiVersion, Client, ClientAuth, ClientConfig, Error, OAuth, RetryPolicy, TokenSource};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "usagesync-emulator";
pub const CLIENT_SECRET: &str = "emulator-secret";
pub const USERNAME: &str = "integration@usagesync.test";
pub const PASSWORD: &str = "emulator-password";

/// Our own test key pair; the emulator is configured to trust its public half.
pub const JWT_PRIVATE_KEY: &[u8] = include_bytes!("../fixtures/jwt_test_key.pem");
pub const JWT_PUBLIC_KEY: &str = include_str!("../fixtures/jwt_test_key.pub.pem");

/// Retries that finish instantly: tests assert behaviour, never wall-clock time.
pub fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        multiplier: 2.0,
        jitter: true,
    }
}

pub struct Org {
    pub emu: Running,
    admin: reqwest::Client,
}

impl Org {
    pub async fn start() -> Self {
        let config = Config { jwt_public_key_pem: JWT_PUBLIC_KEY.to_owned(), ..Config::default() };
        let emu = spawn(config, false).await.expect("emulator starts");
        Self { emu, admin: reqwest::Client::new() }
    }

    pub fn url(&self) -> &str {
        &self.emu.base_url
    }

    pub fn password_flow(&self) -> OAuth {
        OAuth::password(self.url(), CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD).unwrap()
    }

    pub fn config(&self, version: ApiVersion, max_attempts: u32) -> ClientConfig {
        ClientConfig { api_version: version, retry: fast_retries(max_attempts), ..ClientConfig::default() }
    }

    /// A client on the default version with password auth and 3 fast attempts.
    pub fn client(&self) -> Client {
        self.client_with(ApiVersion::DEFAULT, 3)
    }

    pub fn client_with(&self, version: ApiVersion, max_attempts: u32) -> Client {
        Client::new(self.config(version, max_attempts), self.password_flow()).unwrap()
    }

    pub fn client_from(&self, source: impl TokenSource + 'static) -> Client {
        Client::new(self.config(ApiVersion::DEFAULT, 3), source).unwrap()
    }

    pub fn client_credentials(&self, auth: ClientAuth) -> OAuth {
        OAuth::client_credentials(self.url(), CLIENT_ID, CLIENT_SECRET, auth).unwrap()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.admin.request(method, format!("{}/__emulator/{path}", self.url()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("admin call");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "admin {path} failed: {status} {body}");
        body
    }

    /// Seeds records straight into the org (not counted as API calls); returns their IDs.
    pub async fn seed(&self, object: &str, records: Value) -> Vec<String> {
        let body = self.admin(reqwest::Method::POST, &format!("records/{object}"), Some(records)).await;
        serde_json::from_value(body["ids"].clone()).unwrap()
    }

    pub async fn dump(&self, object: &str) -> Vec<Value> {
        let body = self.admin(reqwest::Method::GET, &format!("records/{object}"), None).await;
        serde_json::from_value(body).unwrap()
    }

    pub async fn add_field(&self, object: &str, spec: Value) {
        self.admin(reqwest::Method::POST, &format!("fields/{object}"), Some(spec)).await;
    }

    pub async fn set_faults(&self, faults: Value) {
        self.admin(reqwest::Method::PUT, "faults", Some(faults)).await;
    }

    pub async fn clear_faults(&self) {
        self.set_faults(json!({})).await;
    }

    pub async fn set_limits(&self, limits: Value) {
        self.admin(reqwest::Method::PUT, "limits", Some(limits)).await;
    }

    /// Moves the emulator's clock forward (it stays live).
    pub async fn advance_clock(&self, seconds: i64) {
        self.admin(reqwest::Method::PUT, "clock", Some(json!({"advanceSeconds": seconds}))).await;
    }

    pub async fn expire_sessions(&self) {
        self.admin(reqwest::Method::POST, "sessions/expire", None).await;
    }

    /// Total counted API calls so far.
    pub async fn api_calls(&self) -> u64 {
        let usage = self.admin(reqwest::Method::GET, "usage", None).await;
        usage["total"].as_u64().expect("usage.total")
    }

    /// For a fault seed, whether each of the next `n` data requests gets through (`true`) or
    /// is dropped / refused. Probed with raw HTTP so the client under test is not involved;
    /// the faults are then re-armed with the same seed, replaying the same sequence.
    pub async fn probe_faults(&self, faults: &Value, n: usize) -> Vec<bool> {
        self.set_faults(faults.clone()).await;
        let token = self.raw_token().await;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let resp =
                self.admin.get(format!("{}/services/data/v62.0/limits", self.url())).bearer_auth(&token).send().await;
            out.push(matches!(resp, Ok(r) if r.status().is_success()));
        }
        self.set_faults(faults.clone()).await;
        out
    }

    async fn raw_token(&self) -> String {
        let resp: Value = self
            .admin
            .post(format!("{}/services/oauth2/token", self.url()))
            .form(&[
                ("grant_type", "password"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("username", USERNAME),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["access_token"].as_str().unwrap().to_owned()
    }

    /// Finds a seed whose first data requests follow `pattern` (true = gets through).
    pub async fn seed_with_pattern(&self, mut faults: Value, pattern: &[bool]) -> Value {
        for seed in 0..500u64 {
            faults["seed"] = json!(seed);
            if self.probe_faults(&faults, pattern.len()).await == pattern {
                return faults;
            }
        }
        panic!("no seed gives {pattern:?}");
    }
}

/// The API error, or a panic naming what came instead.
pub fn api(e: &Error) -> &salesforce::ApiError {
    e.as_api().unwrap_or_else(|| panic!("expected an API error, got {e:?}"))
}
