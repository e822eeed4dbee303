//! What every module of the binary's integration tests starts from: the binary, `usagesync
//! emulate` in a child process, a bare HTTP request, and waiting on a condition with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test, with none of its own variables inherited from the environment that
/// runs the tests (a config path, a log level, a clock, a crash point): a test sets what it means.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_usagesync"));
    for var in ["USAGESYNC_CONFIG", "USAGESYNC_LOG", "USAGESYNC_NOW", "USAGESYNC_TEST_CRASH_AT"] {
        c.env_remove(var);
    }
    c
}

/// A finished command's stdout and stderr, for assertions and their messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `usagesync emulate` in a child process, killed when this is dropped (a failing test leaves
/// no emulator behind).
pub struct Emulators {
    child: Child,
    /// The Salesforce emulator's base URL.
    pub salesforce: String,
    /// The Pendo emulator's base URL.
    pub pendo: String,
}

impl Drop for Emulators {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `usagesync emulate` with `args`, started and read until it has printed both addresses. The
/// rest of its output is drained, so it never blocks on a full pipe.
pub fn emulate(args: &[&str]) -> Emulators {
    let mut child = bin().arg("emulate").args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut address = |prefix: &str| lines.next().unwrap().unwrap().strip_prefix(prefix).unwrap().to_owned();
    let (salesforce, pendo) = (address("salesforce "), address("pendo "));
    std::thread::spawn(move || lines.for_each(drop));
    Emulators { child, salesforce, pendo }
}

/// One HTTP/1.1 request to `base` (`http://host:port`) on a fresh connection: the status (0 when
/// nothing listens) and the JSON body (Null when there is none).
pub fn request(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return (0, Value::Null) };
    let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    // Chunked bodies: take the JSON between the first and the last brace or bracket.
    let json = body
        .find(['{', '['])
        .and_then(|start| body.rfind(['}', ']']).map(|end| &body[start..=end]))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Calls `check` every 100 ms until it says `None` (done), failing with `what` and the state it
/// last described once `deadline` has passed: a wait that ends as soon as the condition holds,
/// and under load fails slow rather than flaky.
pub fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<String>) {
    let started = Instant::now();
    loop {
        match check() {
            None => return,
            Some(state) if started.elapsed() > deadline => panic!("{what}: {state}"),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
