//! The web console's access rules, through the real daemon: nothing without the token, a login
//! that sets a strict session cookie, actions refused without the session's CSRF token or from
//! another origin, secrets never on a page, and a listener of its own when asked. (The pages
//! themselves, on a real run, are driven in a browser by tests/browser.)

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "console-test-token-7f3a";

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One plain HTTP/1.1 request.
fn request(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_owned(), body: body.to_owned() }
}

/// Starts the daemon with `console` appended to the example config (no run fires: 06:00 daily,
/// and the first sight of a schedule only schedules it, so the connections are never called).
/// Returns the daemon, its URL and its stderr reader.
fn daemon(dir: &std::path::Path, console: &str) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let cfg = dir.join("usagesync.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display()))
        + console;
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_usagesync"))
        .env_remove("USAGESYNC_CONFIG")
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "sf-secret-value-91")
        .env("PENDO_INTEGRATION_KEY", "pendo-key-value-37")
        .env("CONSOLE_TOKEN", TOKEN)
        .env("USAGESYNC_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    (child, url, stderr)
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[test]
fn the_console_needs_the_token_and_its_actions_need_the_session_csrf_token_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, mut stderr) = daemon(dir.path(), "console:\n  token: { env: CONSOLE_TOKEN }\n");
    let origin = url.clone();
    let bearer = format!("Bearer {TOKEN}");

    for path in ["/console/", "/console/failures", "/console/matching", "/console/budget", "/console/config"] {
        let r = request(&url, "GET", path, &[], "");
        assert_eq!(r.status, 401, "{path} without the token");
        assert!(r.body.contains("name=\"token\""), "the 401 page offers the login form");
        assert_eq!(request(&url, "GET", path, &[("Authorization", "Bearer wrong")], "").status, 401);
        let ok = request(&url, "GET", path, &[("Authorization", &bearer)], "");
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
        assert!(ok.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
        assert_eq!(ok.header("cache-control"), Some("no-store"));
        for secret in [TOKEN, "sf-secret-value-91", "pendo-key-value-37"] {
            assert!(!ok.body.contains(secret), "{path} shows a secret");
        }
    }
    let config = request(&url, "GET", "/console/config", &[("Authorization", &bearer)], "").body;
    assert!(config.contains("CONSOLE_TOKEN") && config.contains("SF_CLIENT_SECRET"), "{config}");
    // The daemon's own endpoints stay as they were.
    assert_eq!(request(&url, "GET", "/healthz", &[], "").status, 200);
    assert_eq!(request(&url, "GET", "/metrics", &[], "").status, 200);

    // Login: the wrong token, a cross-site form, then the right one.
    let login = |token: &str, from: &str| {
        request(&url, "POST", "/console/login", &[("Origin", from)], &format!("token={token}"))
    };
    assert_eq!(login("nope", &origin).status, 401);
    assert_eq!(login(TOKEN, "http://evil.example").status, 403);
    let ok = login(TOKEN, &origin);
    assert_eq!(ok.status, 303, "{}", ok.head);
    let set = ok.header("set-cookie").unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(part), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = request(&url, "GET", "/console/matching", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);

    // A state-changing action: refused without the CSRF token, with another session's, from
    // another origin, with no origin at all, and as a GET; accepted with all of them right.
    let pin = |headers: &[(&str, &str)], token: &str| {
        let body = format!("csrf={token}&workflow=engagement&pendo_id=acme&salesforce_id=001Dn0000000003");
        request(&url, "POST", "/console/matching/pin", headers, &body)
    };
    assert_eq!(pin(&[("Cookie", &cookie), ("Origin", &origin)], "").status, 403);
    assert_eq!(pin(&[("Cookie", &cookie), ("Origin", &origin)], &"0".repeat(64)).status, 403);
    assert_eq!(pin(&[("Cookie", &cookie), ("Origin", "http://evil.example")], &csrf).status, 403);
    assert_eq!(pin(&[("Cookie", &cookie)], &csrf).status, 403);
    assert_eq!(pin(&[("Origin", &origin)], &csrf).status, 401, "no session, no token");
    assert_eq!(request(&url, "GET", "/console/matching/pin", &[("Cookie", &cookie)], "").status, 405);
    let matching = request(&url, "GET", "/console/matching", &[("Cookie", &cookie)], "").body;
    assert!(matching.contains("Pinned by a person (0)"), "nothing was pinned by a refused request");
    let done = pin(&[("Cookie", &cookie), ("Origin", &origin)], &csrf);
    assert_eq!(done.status, 303, "{}", done.body);
    let matching = request(&url, "GET", "/console/matching", &[("Cookie", &cookie)], "").body;
    assert!(matching.contains("Pinned by a person (1)") && matching.contains("001Dn0000000003IAA"), "{matching}");
    // A Bearer request carries no ambient credential: no CSRF token or Origin needed (a script).
    let unpin = request(
        &url,
        "POST",
        "/console/matching/pin",
        &[("Authorization", &bearer)],
        "workflow=engagement&pendo_id=acme&unpin=1",
    );
    assert_eq!(unpin.status, 303);

    // Logging out ends the session.
    let out =
        request(&url, "POST", "/console/logout", &[("Cookie", &cookie), ("Origin", &origin)], &format!("csrf={csrf}"));
    assert_eq!(out.status, 303);
    assert_eq!(request(&url, "GET", "/console/", &[("Cookie", &cookie)], "").status, 401);

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut logs = String::new();
    let _ = stderr.read_to_string(&mut logs);
    assert!(child.wait().unwrap().success(), "{logs}");
    assert!(logs.contains("a login with a wrong token was refused") && logs.contains("match pinned"), "{logs}");
    for secret in [TOKEN, "sf-secret-value-91", "pendo-key-value-37"] {
        assert!(!logs.contains(secret), "the log shows a secret");
    }
}

#[test]
fn a_failure_is_dismissed_from_the_console_with_a_reason_and_only_with_the_csrf_token() {
    use engine::store::{FailureFilter, FailureStatus, NewFailure, RunId};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, _stderr) = daemon(dir.path(), "console:\n  token: { env: CONSOLE_TOKEN }\n");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let location = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = runtime.block_on(engine::store::open(&location)).unwrap();
    let refused = NewFailure {
        workflow: "engagement".into(),
        run: RunId::new(),
        object: "Account".into(),
        key: "acme".into(),
        salesforce_id: Some("001Dn0000000003IAA".into()),
        payload: serde_json::json!({"Pendo_Events__c": 5}),
        error_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
        message: "Events are read-only".into(),
        fields: vec!["Pendo_Events__c".into()],
    };
    runtime.block_on(store.add_failures(&[refused])).unwrap();
    let list = |status| {
        let filter = FailureFilter { status: Some(status), ..Default::default() };
        runtime.block_on(store.list_failures(&filter)).unwrap()
    };
    let id = list(FailureStatus::Open)[0].id.to_string();

    let origin = url.clone();
    let ok = request(&url, "POST", "/console/login", &[("Origin", &origin)], &format!("token={TOKEN}"));
    let cookie = ok.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let page = request(&url, "GET", "/console/failures", &[("Cookie", &cookie)], "");
    assert!(page.body.contains(&format!("data-test=\"dismiss-{id}\"")), "{}", page.body);
    let csrf = csrf_of(&page.body);
    let dismiss = |token: &str, reason: &str| {
        let body = format!("csrf={token}&scope=id&id={id}&reason={reason}");
        request(&url, "POST", "/console/failures/dismiss", &[("Cookie", &cookie), ("Origin", &origin)], &body)
    };
    assert_eq!(dismiss("", "known").status, 403, "no CSRF token");
    assert_eq!(dismiss(&"0".repeat(64), "known").status, 403, "another session's token");
    assert_eq!(dismiss(&csrf, "").status, 303);
    assert_eq!(list(FailureStatus::Open).len(), 1, "refused: no reason given, and no token before");

    let done = dismiss(&csrf, "account+being+merged");
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.header("location").is_some_and(|l| l.contains("Dismissed")), "{}", done.head);
    assert!(list(FailureStatus::Open).is_empty());
    let dismissed = list(FailureStatus::Dismissed);
    assert_eq!(dismissed[0].reason.as_deref(), Some("account being merged"));
    let page = request(&url, "GET", "/console/failures", &[("Cookie", &cookie)], "");
    assert!(page.body.contains("No open failures."), "{}", page.body);

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn with_a_listen_address_the_console_has_a_listener_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, mut stderr) =
        daemon(dir.path(), "console:\n  token: { env: CONSOLE_TOKEN }\n  listen: 127.0.0.1:0\n");
    let mut line = String::new();
    let console = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the daemon never named the console's address");
        if let Some(rest) = line.trim().strip_prefix("usagesync console on ") {
            break rest.trim_end_matches("/console/").to_owned();
        }
    };
    assert_ne!(console, url);
    assert_eq!(request(&url, "GET", "/console/", &[("Authorization", &format!("Bearer {TOKEN}"))], "").status, 404);
    assert_eq!(request(&console, "GET", "/console/", &[], "").status, 401);
    assert_eq!(request(&console, "GET", "/console/", &[("Authorization", &format!("Bearer {TOKEN}"))], "").status, 200);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(!line.contains(TOKEN) && !rest.contains(TOKEN));
}
