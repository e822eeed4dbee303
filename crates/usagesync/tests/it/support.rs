//! What every module of the binary's integration tests starts from.

use std::process::{Command, Output};

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
