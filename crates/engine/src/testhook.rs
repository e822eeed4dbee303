//! Named points where a test can make the process die, to prove that a run interrupted there
//! loses, duplicates and clobbers nothing (the chaos tests kill the real binary this way).
//!
//! `USAGESYNC_TEST_CRASH_AT=NAME` aborts the process the first time it passes point `NAME`;
//! `NAME:N` on the Nth time. Points: `gather` (Pendo and Salesforce read, nothing decided),
//! `plan` (decided and budgeted, nothing sent), `create` (a create call answered, its keys not
//! yet committed in the store), `deliver` (an update call or Bulk job answered, nothing of it
//! recorded), `bulk` (a Bulk job ran and its results are being read: Salesforce has the
//! values, the run knows none of the outcomes), `group` (the first records of each group made,
//! the rest not), `record` (everything sent, the run's outcomes not yet recorded). The variable
//! is read once.
//!
//! The points exist only in builds with the `test-hooks` feature: every test build (the
//! binary's tests enable it), and the binary built with `--features chaos` for `bench chaos`.
//! Elsewhere they compile to nothing and the variable does nothing.

#[cfg(feature = "test-hooks")]
use std::sync::OnceLock;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the point (and pass) at which to abort.
pub const CRASH_AT_ENV: &str = "USAGESYNC_TEST_CRASH_AT";

#[cfg(feature = "test-hooks")]
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
#[cfg(feature = "test-hooks")]
static PASSES: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "test-hooks")]
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

/// Whether this build contains the crash points (the `test-hooks` feature).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// Aborts the process here if the test asked for this point and pass. A no-op in builds
/// without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Aborts the process here if the test asked for this point and pass.
#[cfg(feature = "test-hooks")]
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
