//! Starting an emulator, talking to it, and waiting on a condition with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use emulator::salesforce::{self, Config, Running};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

pub struct Org {
    pub emu: Running,
    pub http: Client,
    pub token: String,
}

pub const V: &str = "v60.0";

impl Org {
    pub async fn start() -> Org {
        Self::with(Config::default()).await
    }

    pub async fn with(config: Config) -> Org {
        let emu = salesforce::spawn(config, false).await.expect("emulator starts");
        // A deadlocked emulator must fail a test quickly, not hang the suite until CI gives up.
        let http = Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client");
        let token = password_token(&http, &emu.base_url).await;
        Org { emu, http, token }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/services/data/{V}/{path}", self.emu.base_url)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request is answered")
    }

    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let resp = self.call(method, path, body).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}/__emulator/{path}", self.emu.base_url))
            .json(&body)
            .send()
            .await
            .expect("admin answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn usage(&self) -> Value {
        let resp = self.http.get(format!("{}/__emulator/usage", self.emu.base_url)).send().await.expect("usage");
        resp.json().await.expect("usage json")
    }

    pub async fn create(&self, object: &str, body: Value) -> String {
        let (status, v) = self.json(Method::POST, &format!("sobjects/{object}"), Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }
}

pub async fn password_token(http: &Client, base: &str) -> String {
    let resp = http
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "usagesync-emulator"),
            ("client_secret", "emulator-secret"),
            ("username", "integration@usagesync.test"),
            ("password", "emulator-password"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.expect("token json");
    v["access_token"].as_str().expect("access_token").to_string()
}

/// The first error's code in a REST error array.
pub fn code(v: &Value) -> &str {
    v[0]["errorCode"].as_str().unwrap_or("")
}

pub fn account(name: &str) -> Value {
    json!({"Name": name})
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
