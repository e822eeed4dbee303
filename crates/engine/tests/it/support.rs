//! The world every engine test runs in: a generated Pendo world served by the Pendo emulator, a
//! Salesforce emulator whose org is seeded to match it, a state store in a temporary directory,
//! and an engine `Context` over all three; plus waiting on a condition with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emulator::pendo::GenConfig;
use engine::store::Store;
use engine::workflow::{Context, RunOptions, RunReport};
use serde_json::Value;

/// The top of every test config: both emulators, by the secrets `env` holds.
const CONNECTIONS: &str = r#"
connections:
  salesforce:
    login_url: "{sf}"
    auth: { flow: client_credentials, client_id: usagesync-emulator, client_secret: { env: SF_SECRET } }
  pendo:
    base_url: "{pendo}"
    integration_key: { env: PENDO_KEY }
"#;

/// A whole config: `rest` (what follows `connections:`) under the connections to `sf` and
/// `pendo`, with `{store}` filled in as `store`.
pub fn config_text(rest: &str, sf: &str, pendo: &str, store: &str) -> String {
    format!("{CONNECTIONS}{rest}").replace("{sf}", sf).replace("{pendo}", pendo).replace("{store}", store)
}

/// The secrets a test config names, as the emulators expect them.
pub fn env(name: &str) -> Option<String> {
    match name {
        "SF_SECRET" => Some("emulator-secret".into()),
        "PENDO_KEY" => Some("emulator-integration-key".into()),
        _ => None,
    }
}

/// A context for the filled-in config `text` over `store`, with clients of its own.
pub fn context(text: &str, store: Arc<dyn Store>) -> Context {
    let config = engine::config::load_str(text, "test.yaml").unwrap();
    Context {
        salesforce: engine::connect::salesforce_client(&config, &env).unwrap(),
        pendo: engine::connect::pendo_client(&config, &env).unwrap(),
        store,
        config: Arc::new(config),
        clock: engine::clock::Clock::system(),
    }
}

/// Both emulators running on one generated world, before there is a config: some configs name
/// what only the running Pendo emulator can say (a feature's or a guide's id).
pub struct Emulators {
    pub gc: GenConfig,
    pub sf: emulator::salesforce::Running,
    pub pendo: emulator::pendo::Running,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Emulators {
    pub async fn start(seed: u64, accounts: usize, days: u32) -> Emulators {
        Emulators::start_with(GenConfig { seed, accounts, days, ..GenConfig::default() }).await
    }

    /// The world `gc` generates (for the options `start` leaves at their defaults).
    pub async fn start_with(gc: GenConfig) -> Emulators {
        let running = emulator::world::start(gc, emulator::salesforce::Config::default()).await.unwrap();
        let emulator::world::Running { gen_config: gc, salesforce: sf, pendo } = running;
        Emulators { gc, sf, pendo, http: reqwest::Client::new(), dir: tempfile::tempdir().unwrap() }
    }

    /// The SQLite state store's URL, in this world's temporary directory.
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("state.db").display())
    }

    pub async fn open_store(&self) -> Arc<dyn Store> {
        engine::store::open(&self.store_url()).await.unwrap()
    }

    /// The whole config for `rest` in this world (see [`config_text`]).
    pub fn fill(&self, rest: &str) -> String {
        config_text(rest, &self.sf.base_url, &self.pendo.base_url, &self.store_url())
    }

    /// What the Pendo API lists under `/api/v1/{what}` (`feature`, `guide`, …).
    pub async fn pendo_list(&self, what: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/api/v1/{what}", self.pendo.base_url))
            .header("x-pendo-integration-key", "emulator-integration-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The world under the config `text` (filled in by [`Emulators::fill`]), on a fresh SQLite store.
    pub async fn world(self, text: &str) -> World {
        self.world_on(text, None).await
    }

    /// The world under the config `text`, on `store` (an opened store) or a fresh SQLite file.
    pub async fn world_on(self, text: &str, store: Option<Arc<dyn Store>>) -> World {
        let store = match store {
            Some(s) => s,
            None => self.open_store().await,
        };
        let ctx = context(&self.fill(text), store);
        let Emulators { gc, sf, pendo, http, dir } = self;
        World { gc, sf, pendo, ctx, http, _dir: dir }
    }
}

pub struct World {
    /// What the Pendo world was generated from, to recompute what it holds.
    pub gc: GenConfig,
    pub sf: emulator::salesforce::Running,
    pub pendo: emulator::pendo::Running,
    pub ctx: Context,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn run(&self, workflow: &str) -> RunReport {
        self.run_with(workflow, false).await
    }

    pub async fn dry_run(&self, workflow: &str) -> RunReport {
        self.run_with(workflow, true).await
    }

    async fn run_with(&self, workflow: &str, dry_run: bool) -> RunReport {
        let options = RunOptions { dry_run, trigger: "test".into(), ..Default::default() };
        engine::workflow::run(&self.ctx, workflow, &options).await.unwrap()
    }

    /// A new process's context on this world: a client that has seen no Salesforce answer yet
    /// (no fresh `Sforce-Limit-Info`), so its calls, the budget's included, are all counted.
    pub fn fresh(&self) -> Context {
        let salesforce = engine::connect::salesforce_client(&self.ctx.config, &env).unwrap();
        Context { salesforce, ..self.ctx.clone() }
    }

    /// Runs `workflow` in a new process's context: its outcome and the Salesforce calls it made.
    pub async fn run_fresh(&self, workflow: &str) -> (Result<RunReport, engine::workflow::RunError>, u64) {
        let ctx = self.fresh();
        let options = RunOptions { trigger: "test".into(), ..Default::default() };
        let result = engine::workflow::run(&ctx, workflow, &options).await;
        (result, ctx.salesforce.requests_sent())
    }

    /// Every record of `object` the Salesforce emulator holds, deleted ones too.
    pub async fn records(&self, object: &str) -> Vec<Value> {
        let url = format!("{}/__emulator/records/{object}", self.sf.base_url);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// The records of `object` a query would see: the deleted ones left out.
    pub async fn live_records(&self, object: &str) -> Vec<Value> {
        let rows = self.records(object).await;
        rows.into_iter().filter(|r| r["IsDeleted"] != serde_json::json!(true)).collect()
    }

    /// Moves Salesforce's clock on by a few seconds, so that what the test's "person" does next
    /// is stamped past the second of the run's last write. A person's edit is, and is another
    /// user's besides; here the person acts through the integration user, whose own changes
    /// within the mirror's last second the change query leaves out (see `workflow::mirror`).
    pub async fn later(&self) {
        self.sf_admin(reqwest::Method::PUT, "clock", serde_json::json!({ "advanceSeconds": 2 })).await;
    }

    pub async fn sf_admin(&self, method: reqwest::Method, path: &str, body: Value) {
        let url = format!("{}/__emulator/{path}", self.sf.base_url);
        let r = self.http.request(method, url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }

    pub async fn pendo_seed(&self, body: Value) {
        let url = format!("{}/__emulator/seed", self.pendo.base_url);
        let r = self.http.post(url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "seed: {}", r.text().await.unwrap());
    }
}

/// Calls `attempt` every few milliseconds until it gives a value, failing with `what` once
/// `deadline` has passed: a wait that ends as soon as the condition holds, and under load fails
/// slow rather than flaky.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < until, "waited {deadline:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
