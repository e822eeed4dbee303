//! A run's lease in the store: who holds it (this process), how long it lasts, and the
//! heartbeat that renews it while the run's body executes. A claim taken through
//! [`crate::store::RunStore::claim_run`] makes a run the only live one of its workflow across
//! every process sharing the store; if the process dies, the lease lapses and the next claim
//! (or the daemon's sweep) marks the run abandoned instead of leaving it running forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::{RunId, Store};

/// How long a run's lease lasts unless renewed, and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLease {
    pub duration: Duration,
    pub heartbeat: Duration,
}

impl RunLease {
    /// A minute, renewed every 15 s: three renewals may fail (a slow or briefly unreachable
    /// store) before the run is given up for dead, and a dead worker blocks its workflow for a
    /// minute at most.
    pub const DEFAULT: RunLease = RunLease { duration: Duration::from_secs(60), heartbeat: Duration::from_secs(15) };

    /// A lease of `duration`, renewed four times per lease like the default.
    pub fn lasting(duration: Duration) -> RunLease {
        RunLease { duration, heartbeat: duration / 4 }
    }
}

impl Default for RunLease {
    fn default() -> Self {
        RunLease::DEFAULT
    }
}

/// This process as a lease holder: `host:pid`, so a person can tell which worker holds a run.
pub fn holder() -> String {
    format!("{}:{}", host(), std::process::id())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Whether `holder` is a process of this host that no longer exists. Only then is it certainly
/// dead: a holder elsewhere, or a pid reused since, is given its whole lease.
pub(crate) fn holder_is_dead(holder: &str) -> bool {
    let Some((host_part, pid)) = holder.rsplit_once(':') else { return false };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    host_part == host() && pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Ends the lease of `run` now if its holder is a dead process of this host (a killed CLI run,
/// a crashed daemon), so the next claim marks it abandoned at once instead of a lease later.
/// The end is written by compare-and-set on the holder, so a live holder is never touched.
pub(crate) async fn expire_if_dead(
    store: &dyn Store,
    run: &crate::store::Run,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, crate::store::StoreError> {
    let Some(holder) = run.holder.as_deref() else { return Ok(false) };
    if !holder_is_dead(holder) {
        return Ok(false);
    }
    // Before the claim's `now`, so the claim's sweep sees it expired.
    let past = now - chrono::Duration::milliseconds(1);
    store.renew_run_lease(run.id, holder, Duration::ZERO, past).await
}

/// Renews a run's lease in the background until stopped or dropped (a run aborted by the
/// daemon's shutdown drops it, and its lease then lapses like a dead worker's).
pub(crate) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Heartbeat {
    pub fn start(
        store: Arc<dyn Store>,
        clock: crate::clock::Clock,
        run: RunId,
        holder: String,
        lease: RunLease,
    ) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the claim has just set the lease.
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_run_lease(run, &holder, lease.duration, clock.now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Someone marked the run abandoned (or closed it): renewing again
                        // would not bring the lease back, so stop and let the finish say so.
                        flag.store(true, Ordering::SeqCst);
                        tracing::warn!(run = %run, "The run's lease was lost: another worker marked it abandoned");
                        return;
                    }
                    // A later renewal may still succeed within the lease; only an expiry
                    // costs the run its lease.
                    Err(e) => tracing::warn!(run = %run, error = %e, "Failed to renew the run's lease"),
                }
            }
        });
        Heartbeat { task, lost }
    }

    /// Stops renewing; true when the lease had been lost.
    pub fn stop(self) -> bool {
        self.task.abort();
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vanished_process_of_this_host_is_dead() {
        let me = holder();
        assert!(!holder_is_dead(&me), "this process is alive");
        // pid_max on Linux is at most 2^22, so this pid cannot exist.
        assert!(holder_is_dead(&format!("{}:{}", host(), 4_194_304 + 17)));
        assert!(!holder_is_dead(&format!("another-host-{}:{}", host(), 4_194_304 + 17)), "elsewhere: unknown");
        assert!(!holder_is_dead("no pid here"));
    }
}
