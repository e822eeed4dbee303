//! What an operator relies on, through the real binary: the daemon honours a changed schedule
//! after a restart, alerts a receiver (signed) and logs at the default level when a scheduled
//! run fails, and the CLI's output and exit codes say what is true.

use super::support::{Emulators, bin, emulate, text};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml")).unwrap()
}

/// A plain HTTP/1.1 GET's body ("" when anything fails).
fn get(base: &str, path: &str) -> String {
    let host = base.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// A GET with headers; the body ("" when anything fails).
fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let host = base.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return String::new() };
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

fn get_json(base: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(base, path)).unwrap_or_default()
}

/// One received request: lower-cased header names and values, and the body.
type Received = (Vec<(String, String)>, Vec<u8>);

/// An HTTP receiver on 127.0.0.1:0 answering every request with `status`; what it receives
/// comes out of the channel.
fn receiver(status: u16) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/usagesync", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (headers, body) = read_request(&mut stream);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((headers, body));
        }
    });
    (url, rx)
}

/// [`receiver`], answering 503 to the first `failures` requests and 200 after.
fn receiver_failing_first(failures: usize) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/chat", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let (headers, body) = read_request(&mut stream);
            let status = if n < failures { 503 } else { 200 };
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((headers, body));
        }
    });
    (url, rx)
}

fn read_request(stream: &mut std::net::TcpStream) -> Received {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
    let mut body = vec![0; length.unwrap_or(0)];
    let _ = reader.read_exact(&mut body);
    (headers, body)
}

fn emulator(accounts: &str) -> Emulators {
    emulate(&["--seed-salesforce", "--days", "30", "--accounts", accounts])
}

/// A daemon and the lines it writes to stderr, as they come.
struct Daemon {
    child: std::process::Child,
    logs: mpsc::Receiver<String>,
    seen: String,
}

impl Daemon {
    /// Waits (30 s at most) for a log line containing `needle`.
    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(_) => panic!("no log line with {needle:?}:\n{}", self.seen),
            }
        }
    }
}

/// Starts the daemon; returns it and its base URL.
fn daemon(cfg: &std::path::Path, now: &str) -> (Daemon, String) {
    daemon_with(cfg, now, &[])
}

/// [`daemon`] with more (or other) environment variables.
fn daemon_with(cfg: &std::path::Path, now: &str, env: &[(&str, &str)]) -> (Daemon, String) {
    let mut command = bin();
    command
        .arg("--config")
        .arg(cfg)
        .args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "10"])
        .env("USAGESYNC_NOW", now)
        // A wrong secret: every run fails at the token request, quickly.
        .env("SF_CLIENT_SECRET", "not-the-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .env("ALERT_SECRET", "alert-key")
        .env("CONSOLE_TOKEN", "console-token")
        .env("SMTP_PASSWORD", "smtp-pass-word")
        // Sweeps (and the alert checks with them) every half second instead of every 15 s.
        .env("USAGESYNC_TEST_RUN_LEASE_MS", "2000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut daemon = command.spawn().unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let (tx, logs) = mpsc::channel();
    let stderr = daemon.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Daemon { child: daemon, logs, seen: String::new() }, url)
}

fn signal(daemon: &Daemon, name: &str) {
    assert!(
        Command::new("kill").args([&format!("-{name}"), &daemon.child.id().to_string()]).status().unwrap().success()
    );
}

/// SIGTERM, then everything it logged.
fn stop(mut daemon: Daemon) -> String {
    signal(&daemon, "TERM");
    daemon.child.wait().unwrap();
    let mut all = daemon.seen;
    for line in daemon.logs.iter() {
        all.push_str(&line);
        all.push('\n');
    }
    all
}

/// Polls /healthz until `check` holds for the engagement workflow (30 s at most).
fn wait_for(url: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let body = get_json(url, "/healthz");
        let w = &body["workflows"]["engagement"];
        if check(w) {
            return w.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_changed_schedule_is_honoured_after_restart_and_a_failed_run_alerts() {
    let emu = emulator("10");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let (hook, received) = receiver(200);
    // A Slack-compatible receiver that fails at first: the alert is retried until it lands.
    let (chat, chat_received) = receiver_failing_first(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let text = example()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        + &format!(
            "alerts:\n  webhooks:\n    - url: {hook}\n      secret: {{ env: ALERT_SECRET }}\n    - url: {chat}\n      format: slack\n  no_success_for: 1s\nconsole:\n  token: {{ env: CONSOLE_TOKEN }}\n"
        );
    std::fs::write(&cfg, &text).unwrap();

    // Daily at 06:00: the first daemon schedules tomorrow morning.
    let (first, url) = daemon(&cfg, "2027-01-04T10:00:40Z");
    wait_for(&url, "the daily schedule", |w| w["next_run"] == "2027-01-05T06:00:00Z");
    stop(first);

    // Every minute now; restarted on the same store: the next run is the coming minute, and it fires.
    std::fs::write(&cfg, text.replace("schedule: \"0 6 * * *\"", "schedule: \"* * * * *\"")).unwrap();
    let (second, url) = daemon(&cfg, "2027-01-04T10:00:57Z");
    let w = wait_for(&url, "the new schedule", |w| w["next_run"].is_string());
    assert!(
        ["2027-01-04T10:01:00Z", "2027-01-04T10:02:00Z"].contains(&w["next_run"].as_str().unwrap()),
        "the next run comes from the new cron, not the old one: {w}"
    );
    let w = wait_for(&url, "a scheduled run to end", |w| w["last_state"].is_string());
    assert_eq!(w["last_state"], "failed", "{w}");

    // The alerts: signed JSON naming the workflow and what went wrong, and (no_success_for: 1s)
    // that it has not succeeded since its first run, in either order.
    let mut two: Vec<Received> =
        (0..2).map(|_| received.recv_timeout(Duration::from_secs(30)).expect("an alert")).collect();
    let state =
        |(_, body): &Received| serde_json::from_slice::<serde_json::Value>(body).unwrap()["run"]["state"].clone();
    two.sort_by_key(|r| state(r).as_str().unwrap_or_default().to_owned());
    assert_eq!(state(&two[1]), "no_success");
    let stale: serde_json::Value = serde_json::from_slice(&two[1].1).unwrap();
    assert!(stale["text"].as_str().unwrap().contains("has never succeeded"), "{stale}");
    let (headers, body) = two.remove(0);
    let signature = headers.iter().find(|(k, _)| k == "x-usagesync-signature").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(signature, format!("sha256={}", pendo::webhook::sign(b"alert-key", &body)));
    let alert: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["run"]["workflow"], "engagement", "{alert}");
    assert_eq!(alert["run"]["state"], "failed", "{alert}");
    assert!(alert["text"].as_str().unwrap().starts_with("usagesync: workflow engagement failed"), "{alert}");
    assert!(!String::from_utf8_lossy(&body).contains("not-the-secret"), "no secret in an alert");
    // The chat receiver: both alerts as {"text": …}, unsigned; the one its 503 refused, again.
    let chat: Vec<Received> =
        (0..3).map(|_| chat_received.recv_timeout(Duration::from_secs(30)).expect("a chat alert")).collect();
    let texts: Vec<String> = chat
        .iter()
        .map(|(headers, body)| {
            assert!(headers.iter().all(|(k, _)| k != "x-usagesync-signature"), "no secret, no signature");
            let slack: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(slack.as_object().unwrap().len(), 1, "{slack}");
            slack["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(texts[1..].contains(&texts[0]), "the refused alert was retried: {texts:?}");
    assert!(texts.iter().any(|t| t.starts_with("usagesync: workflow engagement failed")), "{texts:?}");

    // The console's overview lists what was sent and what each receiver answered.
    let started = Instant::now();
    loop {
        let page = get_with(&url, "/console/", &[("Authorization", "Bearer console-token")]);
        if page.contains("data-test=\"alerts\"")
            && page.contains("delivered (attempt 2)")
            && page.contains("usagesync: workflow engagement failed")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no alerts on the overview: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Live config: a file that does not load changes nothing and says why; a good one is
    // taken on SIGHUP and its schedule recomputed at once.
    let mut second = second;
    std::fs::write(&cfg, text.replace("schedule: \"0 6 * * *\"", "schedule: \"every morning\"")).unwrap();
    signal(&second, "HUP");
    second.wait_log("Config not reloaded");
    assert!(second.seen.contains("workflows.engagement.schedule"), "the reason names the key: {}", second.seen);
    std::fs::write(&cfg, &text).unwrap();
    signal(&second, "HUP");
    second.wait_log("Config reloaded (SIGHUP)");
    wait_for(&url, "the daily schedule again", |w| w["next_run"] == "2027-01-05T06:00:00Z");
    // And without a signal, when the file changes.
    std::fs::write(&cfg, text.replace("schedule: \"0 6 * * *\"", "schedule: \"0 7 * * *\"")).unwrap();
    second.wait_log("Config reloaded (the file changed)");
    wait_for(&url, "the 07:00 schedule", |w| w["next_run"] == "2027-01-05T07:00:00Z");

    // At the default log level the failure is on stderr, without terminal colours (not a TTY).
    let logs = stop(second);
    assert!(logs.contains("usagesync: workflow engagement failed"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no ANSI escapes when stderr is not a terminal: {logs}");
    assert!(!logs.contains("not-the-secret") && !logs.contains("alert-key"));
}

/// What an SMTP sink received on one connection.
#[derive(Debug, Default)]
struct Mail {
    /// The AUTH command line, when the client logged in.
    auth: Option<String>,
    from: String,
    to: Vec<String>,
    /// The DATA (headers and body), dot-unstuffed.
    data: String,
}

/// A small SMTP server on 127.0.0.1:0 (220, EHLO/HELO offering AUTH PLAIN and no STARTTLS,
/// AUTH, MAIL FROM, RCPT TO, DATA, QUIT); each connection's mail comes out of the channel when
/// the client quits or hangs up.
fn smtp_sink() -> (u16, mpsc::Receiver<Mail>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut mail = Mail::default();
                let _ = stream.write_all(b"220 sink.test ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let command = line.trim_end().to_owned();
                    let verb = command.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
                        "AUTH" => {
                            mail.auth = Some(command);
                            b"235 2.7.0 Authentication successful\r\n"
                        }
                        "MAIL" => {
                            mail.from = command;
                            b"250 2.1.0 OK\r\n"
                        }
                        "RCPT" => {
                            mail.to.push(command);
                            b"250 2.1.5 OK\r\n"
                        }
                        "DATA" => {
                            let _ = stream.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                                    break;
                                }
                                mail.data.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                            b"250 2.0.0 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = stream.write_all(b"221 2.0.0 Bye\r\n");
                            break;
                        }
                        "HELO" | "RSET" | "NOOP" => b"250 OK\r\n",
                        _ => b"502 5.5.2 Command not recognized\r\n",
                    };
                    let _ = stream.write_all(reply);
                }
                let _ = tx.send(mail);
            });
        }
    });
    (port, rx)
}

/// The example config on the emulators, the store in `dir`, every minute, plus `extra`.
fn every_minute(dir: &std::path::Path, sf: &str, pendo: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("usagesync.yaml");
    let text = example()
        .replace("http://127.0.0.1:8443", sf)
        .replace("http://127.0.0.1:8444", pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display()))
        .replace("schedule: \"0 6 * * *\"", "schedule: \"* * * * *\"")
        + extra;
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Polls the console's overview until it contains every needle (30 s at most).
fn wait_console(url: &str, needles: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let page = get_with(url, "/console/", &[("Authorization", "Bearer console-token")]);
        if needles.iter().all(|n| page.contains(n)) {
            return page;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not all of {needles:?} on the overview: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failed_run_alerts_by_email_and_starttls_required_refuses_a_server_without_it() {
    let emu = emulator("10");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let (port, mails) = smtp_sink();
    // A second server that does not offer STARTTLS either, where the config requires it.
    let (strict_port, strict_mails) = smtp_sink();
    let dir = tempfile::tempdir().unwrap();
    let cfg = every_minute(
        dir.path(),
        &sf,
        &pendo,
        &format!(
            "alerts:\n  email:\n    - server: 127.0.0.1\n      port: {port}\n      from: usagesync <usagesync@example.com>\n      to: [ops@example.com, cs@example.com]\n      username: alerts\n      password: {{ env: SMTP_PASSWORD }}\n      starttls: optional\n    - server: 127.0.0.1\n      port: {strict_port}\n      from: usagesync@example.com\n      to: [ops@example.com]\n      username: alerts\n      password: {{ env: SMTP_PASSWORD }}\nconsole:\n  token: {{ env: CONSOLE_TOKEN }}\n"
        ),
    );
    // Every run fails at the token request (a wrong Salesforce secret).
    let (daemon, url) = daemon(&cfg, "2027-01-04T10:00:57Z");
    let w = wait_for(&url, "a scheduled run to end", |w| w["last_state"].is_string());
    assert_eq!(w["last_state"], "failed", "{w}");

    let mail = mails.recv_timeout(Duration::from_secs(30)).expect("an alert e-mail");
    assert!(mail.from.contains("<usagesync@example.com>"), "{mail:?}");
    assert_eq!(mail.to.len(), 2, "{mail:?}");
    assert!(mail.to.iter().any(|t| t.contains("<cs@example.com>")), "{mail:?}");
    // It logged in with the password from the environment, and the message does not carry it.
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0alerts\0smtp-pass-word");
    assert_eq!(mail.auth.as_deref(), Some(format!("AUTH PLAIN {plain}").as_str()), "{mail:?}");
    assert!(mail.data.contains("Subject: usagesync: engagement failed\r\n"), "{}", mail.data);
    assert!(mail.data.contains("To: ops@example.com, cs@example.com\r\n"), "{}", mail.data);
    let body = mail.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    assert!(body.starts_with("usagesync: workflow engagement failed"), "{body}");
    assert!(body.contains("workflow   engagement") && body.contains("trigger    schedule"), "{body}");
    for secret in ["smtp-pass-word", &plain, "not-the-secret", "console-token"] {
        assert!(!mail.data.contains(secret), "no secret in an alert e-mail: {}", mail.data);
    }

    // The strict receiver: no STARTTLS offered, so no login and no message, and the console says so.
    let page = wait_console(
        &url,
        &[
            &format!("e-mail via 127.0.0.1:{port}: delivered"),
            &format!("e-mail via 127.0.0.1:{strict_port}: not delivered"),
        ],
    );
    assert!(page.contains("STARTTLS") || page.contains("TLS"), "the reason names TLS: {page}");
    while let Ok(m) = strict_mails.try_recv() {
        assert!(m.auth.is_none() && m.from.is_empty() && m.data.is_empty(), "sent without TLS: {m:?}");
    }
    let logs = stop(daemon);
    assert!(!logs.contains("smtp-pass-word") && !logs.contains(&plain), "{logs}");
}

#[test]
fn a_run_that_spends_its_share_of_a_small_daily_cap_alerts_once() {
    let emu = emulator("10");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let (hook, received) = receiver(200);
    let dir = tempfile::tempdir().unwrap();
    let cfg = every_minute(
        dir.path(),
        &sf,
        &pendo,
        &format!("alerts:\n  webhooks:\n    - url: {hook}\n  budget_used_over: 0.03\n"),
    );
    // 0.1% of the emulated org's 100,000 calls a day: a cap of 100, so 3 calls cross the line
    // (a first engagement run makes 4: the Account read, which also prices the run, the
    // describe, one Collections call and the read-back).
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("daily_share: 0.25"), "the example's budget changed: {text}");
    std::fs::write(&cfg, text.replace("daily_share: 0.25", "daily_share: 0.001")).unwrap();
    let (daemon, url) = daemon_with(&cfg, "2027-01-04T10:00:57Z", &[("SF_CLIENT_SECRET", "emulator-secret")]);
    let w = wait_for(&url, "a scheduled run to end", |w| w["last_state"].is_string());
    assert_ne!(w["last_state"], "failed", "the run reached Salesforce: {w}");

    // Run alerts may come too (a deferred run); the budget one names the cap and the threshold.
    let deadline = Instant::now() + Duration::from_secs(30);
    let budget = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, body) = received.recv_timeout(left).expect("a budget alert");
        let alert: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if alert["run"]["state"] == "budget" {
            break alert;
        }
    };
    assert_eq!(budget["run"]["workflow"], "(all workflows)", "{budget}");
    let text = budget["text"].as_str().unwrap();
    assert!(text.contains("of today's 100 API calls used or reserved"), "{text}");
    assert!(text.contains("over alerts.budget_used_over (3%)"), "{text}");
    // Checked every sweep, but sent once within quiet_for (1h by default).
    let later = Instant::now() + Duration::from_secs(3);
    while let Some(left) = later.checked_duration_since(Instant::now()) {
        if let Ok((_, body)) = received.recv_timeout(left) {
            let again: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_ne!(again["run"]["state"], "budget", "sent twice within quiet_for: {again}");
        }
    }
    stop(daemon);
}

#[test]
fn metrics_count_the_pendo_calls_of_this_process_by_kind() {
    let emu = emulator("10");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = every_minute(dir.path(), &sf, &pendo, "");
    let (daemon, url) = daemon_with(&cfg, "2027-01-04T10:00:57Z", &[("SF_CLIENT_SECRET", "emulator-secret")]);
    let series = |text: &str| -> std::collections::HashMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
            .collect()
    };
    // Before any run: every kind listed, at 0.
    let before = series(&get(&url, "/metrics"));
    assert_eq!(before.get("usagesync_pendo_calls_total{kind=\"aggregation\"}"), Some(&0.0), "{before:?}");
    let w = wait_for(&url, "a scheduled run to end", |w| w["last_state"].is_string());
    assert_ne!(w["last_state"], "failed", "the run reached Pendo: {w}");
    let text = get(&url, "/metrics");
    assert!(text.contains("# TYPE usagesync_pendo_calls_total counter"), "{text}");
    let m = series(&text);
    let kinds: Vec<&String> = m.keys().filter(|k| k.starts_with("usagesync_pendo_calls_total{")).collect();
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    // engagement-scores reads usage through aggregations and writes nothing to Pendo.
    assert!(m["usagesync_pendo_calls_total{kind=\"aggregation\"}"] > 0.0, "{text}");
    assert_eq!(m["usagesync_pendo_calls_total{kind=\"metadata_write\"}"], 0.0, "{text}");
    // The lag histogram is there, in the text format's shape (no webhook came: all zero).
    assert!(text.contains("# TYPE usagesync_webhook_processing_lag_seconds histogram"), "{text}");
    assert_eq!(m.get("usagesync_webhook_processing_lag_seconds_bucket{le=\"+Inf\"}"), Some(&0.0), "{text}");
    assert_eq!(m.get("usagesync_webhook_processing_lag_seconds_count"), Some(&0.0), "{text}");
    stop(daemon);
}

/// A daemon serving the console, with nothing scheduled to run during the test.
fn console_daemon(dir: &std::path::Path) -> (std::process::Child, String) {
    let cfg = dir.join("usagesync.yaml");
    let text = example().replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display()))
        + "console:\n  token: { env: CONSOLE_TOKEN }\n";
    std::fs::write(&cfg, text).unwrap();
    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "x")
        .env("PENDO_INTEGRATION_KEY", "x")
        .env("CONSOLE_TOKEN", "the-right-console-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (daemon, url)
}

/// A client whose connections come from `ip` (any 127.x.y.z reaches the daemon on Linux).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_console_tokens_are_throttled_per_address_and_never_lock_out_another() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, url) = console_daemon(dir.path());
    let guesser = client_from([127, 0, 0, 2]);
    let operator = client_from([127, 0, 0, 3]);
    let page = format!("{url}/console/");
    let status = |r: reqwest::Response| r.status().as_u16();

    // 200 wrong Bearer tokens as fast as one client can send them: after the first few, each
    // is refused without being checked.
    let started = Instant::now();
    let mut checked = 0;
    let mut throttled = 0;
    for i in 0..200 {
        let r = guesser.get(&page).bearer_auth(format!("guess-{i}")).send().await.unwrap();
        match status(r) {
            401 => checked += 1,
            429 => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let took = started.elapsed();
    assert!(checked <= 8, "only the first wrong tokens are checked: {checked} of 200 in {took:?}");
    assert_eq!(throttled, 200 - checked);
    eprintln!("200 wrong Bearer tokens from one address: {checked} checked, {throttled} refused with 429, in {took:?}");

    // The operator, from another address, is never locked out: Bearer and login both work.
    let r = operator.get(&page).bearer_auth("the-right-console-token").send().await.unwrap();
    assert_eq!(status(r), 200);
    let login = |c: &reqwest::Client, token: &str| {
        c.post(format!("{url}/console/login")).header("Origin", url.as_str()).form(&[("token", token)]).send()
    };
    assert_eq!(status(login(&operator, "the-right-console-token").await.unwrap()), 303);

    // The guesser's logins wait too, and a waiting guesser learns nothing, even with the
    // right token: it is refused unchecked, with Retry-After.
    let r = login(&guesser, "another-guess").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(status(login(&guesser, "the-right-console-token").await.unwrap()), 429);

    // A few wrong logins from the operator's address do not stop its right one.
    for _ in 0..3 {
        assert_eq!(status(login(&operator, "typo").await.unwrap()), 401);
    }
    assert_eq!(status(login(&operator, "the-right-console-token").await.unwrap()), 303);
    let mut daemon = daemon;
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    daemon.wait().unwrap();
}

/// A starter config (every workflow off) with its store in `dir`.
fn starter(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("usagesync.yaml");
    let o = bin().arg("init").arg(&cfg).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let reply: serde_json::Value = serde_json::from_slice(&o.stdout).expect("init --json prints JSON");
    assert_eq!(reply["workflows_enabled"], 0);
    let body = std::fs::read_to_string(&cfg).unwrap();
    assert!(!body.lines().any(|l| l.trim_start().starts_with("enabled: true")), "init enables no writing workflow");
    let templates = body.lines().filter(|l| l.trim_start().starts_with("template:")).count();
    assert!(templates >= 8, "{body}");
    assert_eq!(body.lines().filter(|l| l.trim_start().starts_with("enabled: false")).count(), templates, "{body}");
    std::fs::write(
        &cfg,
        body.replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display())),
    )
    .unwrap();
    cfg
}

#[test]
fn the_demo_fits_80_columns_says_what_it_shows_and_ends_with_a_next_step() {
    let o = bin().args(["demo", "--accounts", "700"]).output().unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let widest = out.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 80, "a line of {widest} columns:\n{out}");
    assert!(out.contains("Showing 10 of "), "{out}");
    // One signal -> action: the CEL condition shown, and Tasks read back from Salesforce.
    assert!(out.contains("=== Signal → action: stalled-adoption ==="), "{out}");
    assert!(out.contains("feature_adoption <= previous.feature_adoption"), "{out}");
    assert!(out.contains("Adoption stalled: "), "{out}");
    // Contact engagement, with Contacts read back.
    assert!(out.contains("=== Contact engagement: people ==="), "{out}");
    assert!(out.contains("active days") && out.contains("features used"), "{out}");
    // The summary has both runs of each workflow; the second writes nothing.
    for workflow in ["engagement", "stalled-adoption", "people"] {
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cells| cells.len() == 6 && cells[0] == workflow)
            .collect();
        assert_eq!(rows.len(), 2, "{workflow}: {out}");
        assert_ne!(rows[0][2], "0", "{workflow} run 1 writes: {out}");
        assert_eq!((rows[1][1], rows[1][2], rows[1][3]), ("2", "0", "0"), "{workflow} run 2 writes nothing: {out}");
    }
    assert!(out.trim_end().lines().rev().take(5).any(|l| l.starts_with("Next: `usagesync init`")), "{out}");
    assert!(!out.contains("Next: `usagesync runs"), "no next step into the demo's own store, gone when it ends");
}

#[test]
fn names_exit_codes_and_closed_pipes_are_handled_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = starter(dir.path());
    let run = |args: &[&str]| {
        bin()
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("SF_CLIENT_SECRET", "x")
            .env("PENDO_INTEGRATION_KEY", "x")
            .output()
            .unwrap()
    };

    // Every missing secret is named, and nothing is opened (exit 2).
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "engagement"])
        .env_remove("SF_CLIENT_SECRET")
        .env_remove("PENDO_INTEGRATION_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("SF_CLIENT_SECRET") && text(&o).contains("PENDO_INTEGRATION_KEY"), "{}", text(&o));
    assert!(!dir.path().join("state.db").exists(), "no store was made");

    // A misspelt workflow: the list, and the nearest name.
    let o = run(&["sync", "engagment"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("did you mean \"engagement\"?") && text(&o).contains("new-users"), "{}", text(&o));
    let o = run(&["runs", "--workflow", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no workflow \"nope\""), "{}", text(&o));
    let o = run(&["failures", "--workflow", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run(&["replay", "99999"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no open failure(s) 99999"), "{}", text(&o));

    // No config: a hint to write one (exit 2, the config does not load).
    let o = bin().arg("--config").arg(dir.path().join("absent.yaml")).args(["sync", "engagement"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("usagesync init"), "{}", text(&o));

    // stdout closed before anything is written (as `usagesync failures | head -0` would): no
    // panic, the command's own exit code.
    let mut child =
        bin().arg("--config").arg(&cfg).arg("failures").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Help describes every option.
    for sub in [&["failures"][..], &["replay"], &["pin"], &["runs"], &["run"]] {
        let o = bin().args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let options: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with('<'))
            .filter(|l| !l.contains("--help") && !l.contains("--version"))
            .collect();
        for line in options {
            // clap prints "  --flag <VALUE>  Description" on one line, or the description
            // on the next line when the flag is long: a bare flag line must be followed by text.
            let described = line.trim().split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                || help.lines().skip_while(|l| *l != line).nth(1).is_some_and(|n| n.starts_with("          "));
            assert!(described, "{sub:?}: {line:?} has no description:\n{help}");
        }
    }
}

/// An admin PUT to the emulator: its status.
fn put(base: &str, path: &str, body: &str) -> u16 {
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn pin_checks_the_pendo_account_and_an_account_matched_elsewhere_and_a_spent_budget_exits_4() {
    let emu = emulator("40");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let yaml = example()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()));
    std::fs::write(&cfg, yaml).unwrap();
    let run = |args: &[&str]| {
        bin()
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
            .output()
            .unwrap()
    };
    let o = run(&["sync", "engagement", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = report["run_id"].as_str().unwrap().to_owned();
    let o = run(&["runs", &id, "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // `runs ID` fits the output's width: 80 columns by default (not a terminal), or COLUMNS.
    for (columns, width) in [(None, 80), (Some("60"), 60)] {
        let mut c = bin();
        c.arg("--config").arg(&cfg).args(["runs", &id]);
        if let Some(columns) = columns {
            c.env("COLUMNS", columns);
        }
        let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
        assert!(out.lines().count() > 10, "{out}");
        let widest = out.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= width, "a line of {widest} columns in:\n{out}");
    }

    // /metrics: when the workflow last succeeded (what people alert on), and the build.
    let finished = chrono::DateTime::parse_from_rfc3339(records["run"]["finished_at"].as_str().unwrap()).unwrap();
    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let metrics = get(&url, "/metrics");
    let line = format!(
        "usagesync_workflow_last_success_timestamp_seconds{{workflow=\"engagement\"}} {}",
        finished.timestamp()
    );
    assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    assert!(metrics.contains(&format!("usagesync_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    daemon.wait().unwrap();
    let written: Vec<(String, String)> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["key"].as_str()?.to_owned(), r["salesforce_id"].as_str()?.to_owned())))
        .collect();
    assert!(written.len() >= 2, "{records}");
    let ((a, _), (b, b_account)) = (&written[0], &written[1]);

    // An unknown Pendo account is refused (Pendo is asked), and nothing is pinned.
    let o = run(&["pin", "engagement", "no-such-pendo-account", b_account]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("Pendo has no account \"no-such-pendo-account\""), "{}", text(&o));

    // An Account already matched to another Pendo account: refused, naming it, unless --force.
    let o = run(&["pin", "engagement", a, b_account]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(b.as_str()) && text(&o).contains("--force"), "{}", text(&o));
    let o = run(&["pin", "engagement", a, b_account, "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pinned: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pinned["pinned"], b_account.as_str());
    assert_eq!(pinned["also_matched"], serde_json::json!([b]));
    let o = run(&["pin", "engagement", a, "--unpin", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["pin", "engagement", a, "--unpin"]);
    assert_eq!(o.status.code(), Some(1), "unpinning what is not pinned says so: {}", text(&o));

    // The day's allocation spent by others before the run reads anything: deferred, exit 4.
    assert_eq!(put(&sf, "/__emulator/limits", r#"{"DailyApiRequests":{"Max":15000,"Remaining":0}}"#), 200);
    let o = run(&["sync", "engagement"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("deferred"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pauses_resumes_and_runs_a_workflow_now() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, url) = console_daemon(dir.path());
    let client = client_from([127, 0, 0, 1]);
    let post = |path: &str, form: &[(&str, &str)]| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth("the-right-console-token")
            .form(&form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
            .send()
    };
    let overview = || async {
        client
            .get(format!("{url}/console/"))
            .bearer_auth("the-right-console-token")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = overview().await;
    assert!(before.contains("data-test=\"pause-engagement\"") && before.contains("At 06:00"), "{before}");

    let r = post("/console/workflows/pause", &[("workflow", "engagement"), ("paused", "true")]).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let page = overview().await;
    assert!(page.contains("data-test=\"resume-engagement\"") && page.contains("— (paused)"), "{page}");
    let r = post("/console/workflows/pause", &[("workflow", "engagement"), ("paused", "false")]).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(overview().await.contains("data-test=\"pause-engagement\""));
    let r = post("/console/workflows/pause", &[("workflow", "nope"), ("paused", "true")]).await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().contains("No%20such%20workflow"), "{:?}", r.headers());

    // Run now: a run with trigger `console` is recorded in the store.
    let r = post("/console/workflows/run", &[("workflow", "engagement")]).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cfg = dir.path().join("usagesync.yaml");
    let started = Instant::now();
    loop {
        let o = bin().arg("--config").arg(&cfg).args(["runs", "--json"]).output().unwrap();
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if runs.iter().any(|r| r["trigger"] == "console" && r["workflow"] == "engagement") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no console run: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    daemon.wait().unwrap();
}

/// `usagesync console-password` with `password` on stdin: the hash it prints.
fn console_hash(password: &str) -> String {
    let mut child = bin().arg("console-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_users_log_in_with_their_own_password_and_a_viewer_cannot_act() {
    let ada = console_hash("ada's long password");
    assert!(ada.starts_with("$argon2id$"), "{ada}");
    let bo = console_hash("bo's long password!");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let text = example()
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        + "console:\n  token: { env: CONSOLE_TOKEN }\n  users:\n    - name: ada\n      password_hash: { env: ADA_HASH }\n      role: operator\n    - name: bo\n      password_hash: { env: BO_HASH }\n      role: viewer\n";
    std::fs::write(&cfg, text).unwrap();
    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "x")
        .env("PENDO_INTEGRATION_KEY", "x")
        .env("CONSOLE_TOKEN", "the-right-console-token")
        .env("ADA_HASH", &ada)
        .env("BO_HASH", &bo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let client = client_from([127, 0, 0, 4]);
    let login = |user: &str, password: &str| {
        client
            .post(format!("{url}/console/login"))
            .header("Origin", url.as_str())
            .form(&[("user", user), ("token", password)])
            .send()
    };
    assert_eq!(login("bo", "not bo's password").await.unwrap().status().as_u16(), 401);
    assert_eq!(login("nobody", "bo's long password!").await.unwrap().status().as_u16(), 401);
    let session = |r: reqwest::Response| {
        assert_eq!(r.status().as_u16(), 303, "{:?}", r.headers());
        r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let viewer = session(login("bo", "bo's long password!").await.unwrap());
    let operator = session(login("ada", "ada's long password").await.unwrap());
    // The config page shows where the hashes come from, never the hashes.
    let page = client.get(format!("{url}/console/config")).header("Cookie", &viewer).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("ADA_HASH") && !page.contains("$argon2id$"), "{page}");
    let pause = |cookie: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let overview = client.get(format!("{url}/console/")).header("Cookie", &cookie).send().await.unwrap();
            let html = overview.text().await.unwrap();
            let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
            client
                .post(format!("{url}/console/workflows/pause"))
                .header("Cookie", &cookie)
                .header("Origin", url.as_str())
                .form(&[("csrf", csrf.as_str()), ("workflow", "engagement"), ("paused", "true")])
                .send()
                .await
                .unwrap()
        }
    };
    let refused = pause(viewer).await;
    assert_eq!(refused.status().as_u16(), 403);
    assert!(refused.text().await.unwrap().contains("viewer"));
    assert_eq!(pause(operator).await.status().as_u16(), 303);
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    daemon.wait().unwrap();
}

/// Reads a written metadata package back with python3's XML parser (no XML crate is in the
/// lockfile): every file must be well-formed, and what it holds comes back as JSON.
fn read_package(dir: &std::path::Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, os, sys, xml.etree.ElementTree as ET
NS = "{http://soap.sforce.com/2006/04/metadata}"
d = sys.argv[1]
pkg = ET.parse(os.path.join(d, "package.xml")).getroot()
out = {"root": pkg.tag, "types": [], "version": pkg.find(NS + "version").text, "objects": {}}
for t in pkg.findall(NS + "types"):
    out["types"].append({"name": t.find(NS + "name").text, "members": [m.text for m in t.findall(NS + "members")]})
for name in sorted(os.listdir(os.path.join(d, "objects"))):
    root = ET.parse(os.path.join(d, "objects", name)).getroot()
    fields = [{c.tag[len(NS):]: c.text for c in f} for f in root.findall(NS + "fields")]
    out["objects"][name] = {"root": root.tag, "fields": fields}
ps = ET.parse(os.path.join(d, "permissionsets", "Usagesync_Integration.permissionset")).getroot()
out["permission_set"] = {"root": ps.tag, "label": ps.find(NS + "label").text,
    "fields": [{c.tag[len(NS):]: c.text for c in f} for f in ps.findall(NS + "fieldPermissions")]}
print(json.dumps(out))
"#;
    let o = Command::new("python3").arg("-c").arg(SCRIPT).arg(dir).output().expect("python3 runs");
    assert!(o.status.success(), "the package does not parse as XML: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn setup_salesforce_writes_a_package_with_each_custom_field_the_preflight_names_exactly_once() {
    use engine::preflight::{Expect, Use};
    let dir = tempfile::tempdir().unwrap();
    let cfg = starter(dir.path());
    // What preflight says the workflows write or key on, every workflow counted (all are off).
    let config = engine::config::load(&cfg).unwrap();
    let (mut expected, mut keys) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for w in config.workflows.values() {
        for r in engine::preflight::requirements(w) {
            if r.usage == Use::Read || !r.field.ends_with("__c") {
                continue;
            }
            assert_ne!(r.expect, Expect::Reference, "the example writes no lookup: {r:?}");
            let object = if r.object == "Task" || r.object == "Event" { "Activity" } else { r.object.as_str() };
            expected.insert(format!("{object}.{}", r.field));
            if r.usage == Use::Key {
                keys.insert(format!("{object}.{}", r.field));
            }
        }
    }
    assert!(expected.len() >= 20 && keys.len() >= 3, "{expected:?} {keys:?}");
    let setup =
        |args: &[&str]| bin().arg("--config").arg(&cfg).args(["setup", "salesforce"]).args(args).output().unwrap();

    // Shown first, nothing written.
    let o = setup(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Nothing was written"), "{}", text(&o));
    assert!(text(&o).lines().all(|l| l.chars().count() <= 80), "{}", text(&o));
    let o = setup(&["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let members: Vec<String> = listed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}.{}", f["object"].as_str().unwrap(), f["name"].as_str().unwrap()))
        .collect();
    assert_eq!(members.len(), expected.len(), "{members:?}");
    assert_eq!(members.iter().cloned().collect::<std::collections::BTreeSet<_>>(), expected);
    assert!(listed["skipped"].as_array().unwrap().iter().any(|s| s["field"] == "StageName"), "{listed}");
    assert_eq!(listed["written"], serde_json::json!([]));

    // Written with --out: package.xml lists each field once, each object file defines it once.
    let out = dir.path().join("pkg");
    let o = setup(&["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\n  sf project deploy start --metadata-dir"), "{}", text(&o));
    assert!(text(&o).contains("\n  sf org assign permset --name Usagesync_Integration\n"), "{}", text(&o));
    let package = read_package(&out);
    assert_eq!(package["root"], "{http://soap.sforce.com/2006/04/metadata}Package");
    assert_eq!(package["version"], "62.0");
    let types = package["types"].as_array().unwrap();
    assert_eq!(types.len(), 2, "{package}");
    assert_eq!(types[0]["name"], "CustomField");
    assert_eq!(
        (&types[1]["name"], &types[1]["members"]),
        (&"PermissionSet".into(), &serde_json::json!(["Usagesync_Integration"]))
    );
    // The permission set opens every field of the package to read and edit, each once.
    let permission_set = &package["permission_set"];
    assert_eq!(permission_set["root"], "{http://soap.sforce.com/2006/04/metadata}PermissionSet");
    let opened: Vec<String> = permission_set["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!((&f["readable"], &f["editable"]), (&"true".into(), &"true".into()), "{f}");
            f["field"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(opened, expected.iter().cloned().collect::<Vec<_>>(), "each field once, sorted");
    let listed: Vec<String> =
        types[0]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().into()).collect();
    assert_eq!(listed, expected.iter().cloned().collect::<Vec<_>>(), "each member once, sorted");
    let mut defined = Vec::new();
    for (file, object) in package["objects"].as_object().unwrap() {
        assert_eq!(object["root"], "{http://soap.sforce.com/2006/04/metadata}CustomObject");
        for f in object["fields"].as_array().unwrap() {
            let member = format!("{}.{}", file.trim_end_matches(".object"), f["fullName"].as_str().unwrap());
            let is_key = keys.contains(&member);
            assert_eq!(f["externalId"], if is_key { "true" } else { "false" }, "{member}: {f}");
            if is_key {
                assert_eq!(
                    (&f["type"], &f["unique"], &f["caseSensitive"]),
                    (&"Text".into(), &"true".into(), &"false".into())
                );
            }
            assert!(f["label"].as_str().is_some_and(|l| !l.is_empty() && l.len() <= 40), "{member}: {f}");
            defined.push(member);
        }
    }
    defined.sort();
    assert_eq!(defined, listed, "each field defined exactly once");
    // The renewal-risk alert's Account flags: a checkbox and a text field.
    let account = &package["objects"]["Account.object"]["fields"];
    let field = |name: &str| account.as_array().unwrap().iter().find(|f| f["fullName"] == name).cloned();
    assert_eq!(field("At_Risk__c").map(|f| f["type"].clone()), Some("Checkbox".into()), "{account}");
    assert_eq!(field("Risk_Reason__c").map(|f| f["type"].clone()), Some("Text".into()), "{account}");

    // A package already there is kept unless --force.
    let o = setup(&["--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert!(setup(&["--out", out.to_str().unwrap(), "--force"]).status.success());

    // --remote leaves out what the org has: the emulated org has the Account engagement fields,
    // not the people workflow's Contact ones.
    let emu = emulator("20");
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let body = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, body.replace("http://127.0.0.1:8443", &sf).replace("http://127.0.0.1:8444", &pendo)).unwrap();
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "setup", "salesforce", "--remote"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .output()
        .unwrap();
    drop(emu);
    assert!(o.status.success(), "{}", text(&o));
    let remote: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{}.{}", f["object"].as_str().unwrap(), f["name"].as_str().unwrap()))
            .collect()
    };
    let in_org: Vec<&str> = remote["in_org"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(in_org.contains(&"Account.Pendo_Active_Visitors__c"), "{remote}");
    assert!(names(&remote["fields"]).contains(&"Contact.Pendo_Features_Used__c".to_owned()), "{remote}");
    assert_eq!(names(&remote["fields"]).len() + in_org.len(), expected.len(), "{remote}");
    assert!(remote["describe_calls"].as_u64().unwrap() >= 1, "{remote}");
}
