//! Named points where a test can make the process die, to prove that a run interrupted there
//! loses, duplicates and clobbers nothing (the chaos tests kill the real binary this way).
//!
//! `USAGESYNC_TEST_CRASH_AT=NAME` aborts the process the first time it passes point `NAME`;
//! `NAME:N` on the Nth time. Points: `gather` (Pendo and Salesforce read, nothing decided),
//! `plan` (decided and budgeted, nothing sent), `create` (a create call answered, its keys not
//! yet committed in the store), `deliver` (an update call or Bulk job answered, nothing of it
//! recorded), `bulk` (a Bulk job ran and its results are being read: Salesforce has the
//! values, the run knows none of the outcomes), `group` (the first records of each group made,
//! the rest not),
//! `record` (everything sent, the run's outcomes not yet recorded). The variable is read once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the point (and pass) at which to abort.
pub const CRASH_AT_ENV: &str = "USAGESYNC_TEST_CRASH_AT";

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<&'static (String, u64)> {
    TARGET
        .get_or_init(|| {
            let text = std::env::var(CRASH_AT_ENV).ok()?;
            let (name, n) = match text.split_once(':') {
                Some((name, n)) => (name, n.trim().parse().ok()?),
                None => (text.as_str(), 1),
            };
            Some((name.trim().to_owned(), n))
        })
        .as_ref()
}

/// Aborts the process here if the test asked for this point and pass.
pub fn crash_point(name: &str) {
    let Some((at, n)) = target() else { return };
    if at != name {
        return;
    }
    let pass = PASSES.fetch_add(1, Ordering::SeqCst) + 1;
    if pass == *n {
        eprintln!("{CRASH_AT_ENV}={at}:{n}: aborting at point {name}, pass {pass}");
        std::process::abort();
    }
}
