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
//!
//! Stall points ([`stall_point`]) hold a task where a test asked, until the test lets it go:
//! the way to show what another worker may do meanwhile (take over a batch whose worker
//! stalled) without sleeping on the wall clock. Only code in the process arms one
//! ([`stall_at`]), never the environment, so they are in every build: the engine's own
//! integration tests run without the feature. Unarmed, a point costs one atomic load.

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

/// Stalls armed by tests and not yet reached.
static STALLS: std::sync::Mutex<Vec<Armed>> = std::sync::Mutex::new(Vec::new());
/// Whether any stall is armed: the fast path of an unarmed point.
static ANY_STALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Armed {
    point: String,
    subject: String,
    reached: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

/// A stall a test armed with [`stall_at`]: [`Stall::reached`] waits for a task to be held at
/// the point; the task goes on when this is released or dropped.
pub struct Stall {
    reached: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl Stall {
    /// Waits until a task is held at the point.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held task (or the one still to come) go on.
    pub fn release(self) {}
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.release.notify_one();
    }
}

/// Arms point `point` to hold the first task that passes it for `subject` (one of the subjects
/// it names: a test stalls only its own work while others run beside it in the process).
pub fn stall_at(point: &str, subject: &str) -> Stall {
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let armed = Armed {
        point: point.to_owned(),
        subject: subject.to_owned(),
        reached: std::sync::Arc::clone(&reached),
        release: std::sync::Arc::clone(&release),
    };
    let mut stalls = STALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    stalls.push(armed);
    ANY_STALL.store(true, std::sync::atomic::Ordering::SeqCst);
    Stall { reached, release }
}

/// Holds the task here if a test armed `point` for one of `subjects` (once: the stall is used
/// up), until the test releases it. Returns at once otherwise.
pub async fn stall_point(point: &str, subjects: &[String]) {
    if !ANY_STALL.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let armed = {
        let mut stalls = STALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = stalls.iter().position(|a| a.point == point && subjects.contains(&a.subject));
        at.map(|i| stalls.swap_remove(i))
    };
    if let Some(armed) = armed {
        armed.reached.notify_one();
        armed.release.notified().await;
    }
}
