//! What every module of the binary's integration tests starts from.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

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

/// `usagesync emulate` with `args`, started and read until it has printed both addresses:
/// (the process, the Salesforce base URL, the Pendo base URL). The rest of its output is
/// drained, so it never blocks on a full pipe.
pub fn emulate(args: &[&str]) -> (Child, String, String) {
    let mut child = bin().arg("emulate").args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut address = |prefix: &str| lines.next().unwrap().unwrap().strip_prefix(prefix).unwrap().to_owned();
    let (salesforce, pendo) = (address("salesforce "), address("pendo "));
    std::thread::spawn(move || lines.for_each(drop));
    (child, salesforce, pendo)
}
