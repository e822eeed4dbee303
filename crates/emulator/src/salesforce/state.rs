//! The emulator's shared state and configuration: the org's data behind one lock, sessions,
//! accounting, faults, the clock and query cursors.
//!
//! One `Mutex<Db>` serialises all data access. Every operation is in-memory and short, and one
//! lock is what lets a Composite `allOrNone` request run all its subrequests and roll them back
//! atomically, as Salesforce runs them in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;

use super::accounting::Accounting;
use super::faults::Faults;
use super::store::Db;
use crate::clock::Clock;

/// The default Connected App's public key for the JWT bearer flow (test-only key pair, see
/// `testdata/jwt/README.md`).
pub const DEV_JWT_PUBLIC_KEY: &str = include_str!("../../../../testdata/jwt/emulator-dev.pub.pem");

/// How the emulated org is set up. Defaults are the documented emulator credentials.
#[derive(Debug, Clone)]
pub struct Config {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    /// PEM public key that verifies JWT bearer assertions (RS256).
    pub jwt_public_key_pem: String,
    /// Oldest and newest API versions served, e.g. 31.0 and 66.0.
    pub min_version: f64,
    pub max_version: f64,
    pub daily_api_requests: u64,
    /// Sessions expire after this long without use (Salesforce's default is 2 hours).
    pub session_ttl: Duration,
    /// Largest request body accepted by the REST API.
    pub max_body_bytes: usize,
    /// Largest Bulk API 2.0 job upload (`PUT .../batches`).
    pub max_bulk_upload_bytes: usize,
    /// Whether the username-password flow also hands out a refresh token.
    pub password_flow_refresh_token: bool,
    /// Requests running at least this long count as long-running; Salesforce refuses new
    /// requests with `ConcurrentPerOrgLongTxn Limit exceeded.` while `max_long_running` of them
    /// are in flight (25 in production orgs, 5 in Developer Edition; 20 s threshold).
    pub long_running_after: std::time::Duration,
    pub max_long_running: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client_id: "usagesync-emulator".into(),
            client_secret: "emulator-secret".into(),
            username: super::store::INTEGRATION_USERNAME.into(),
            password: "emulator-password".into(),
            jwt_public_key_pem: DEV_JWT_PUBLIC_KEY.into(),
            min_version: 31.0,
            max_version: 66.0,
            daily_api_requests: 100_000,
            session_ttl: Duration::hours(2),
            max_body_bytes: 50 * 1024 * 1024,
            max_bulk_upload_bytes: super::bulk::MAX_UPLOAD_BYTES,
            password_flow_refresh_token: true,
            long_running_after: std::time::Duration::from_secs(20),
            max_long_running: 25,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub last_used: DateTime<Utc>,
}

/// A query's remaining rows, served page by page through `nextRecordsUrl`.
#[derive(Debug)]
pub struct Cursor {
    pub rows: Arc<super::query::Rendered>,
    pub total_size: usize,
    pub batch: usize,
    pub created: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub db: Mutex<Db>,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub refresh_tokens: Mutex<HashMap<String, String>>,
    pub accounting: Mutex<Accounting>,
    pub faults: Mutex<Faults>,
    pub clock: Clock,
    pub cursors: Mutex<HashMap<String, Cursor>>,
    pub locator_ids: super::ids::IdGenerator,
    /// Bulk API 2.0 jobs. Lock order: `db` before `bulk`, never the other way.
    pub bulk: Mutex<super::bulk::Jobs>,
    /// Start times of the data-API requests in flight, for the long-running concurrency limit.
    pub in_flight: Mutex<HashMap<u64, std::time::Instant>>,
    pub next_request: std::sync::atomic::AtomicU64,
    base_url: OnceLock<String>,
}

/// Cheap to clone; handlers share one org.
#[derive(Debug, Clone)]
pub struct SfState(pub Arc<Inner>);

impl std::ops::Deref for SfState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl SfState {
    pub fn new(config: Config) -> Self {
        let daily = config.daily_api_requests;
        SfState(Arc::new(Inner {
            config,
            db: Mutex::new(Db::new()),
            sessions: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            accounting: Mutex::new(Accounting::new(daily)),
            faults: Mutex::new(Faults::default()),
            clock: Clock::default(),
            cursors: Mutex::new(HashMap::new()),
            locator_ids: super::ids::IdGenerator::new(),
            bulk: Mutex::new(super::bulk::Jobs::default()),
            in_flight: Mutex::new(HashMap::new()),
            next_request: std::sync::atomic::AtomicU64::new(0),
            base_url: OnceLock::new(),
        }))
    }

    /// Records the URL the server listens on; it becomes the `instance_url` of every token.
    pub fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url);
    }

    /// Registers a request as in flight, unless `max_long_running` requests have already run
    /// past the long-running threshold. The guard unregisters it when dropped.
    pub fn enter_request(&self) -> Option<InFlight> {
        let mut map = self.in_flight.lock();
        let long = map.values().filter(|t| t.elapsed() >= self.config.long_running_after).count();
        if long >= self.config.max_long_running {
            return None;
        }
        let id = self.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(id, std::time::Instant::now());
        Some(InFlight { state: self.clone(), id })
    }

    pub fn base_url(&self) -> &str {
        self.base_url.get().map(String::as_str).unwrap_or("http://127.0.0.1")
    }
}

/// A data-API request in flight; dropping it ends the request's count.
#[derive(Debug)]
pub struct InFlight {
    state: SfState,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.lock().remove(&self.id);
    }
}
