//! A run's lease in the store: who holds it (this process), how long it lasts, and the
//! heartbeat that renews it while the run's body executes. A claim taken through
//! [`crate::store::RunStore::claim_run`] makes a run the only live one of its workflow across
//! every process sharing the store; if the process dies, the lease lapses and the next claim
//! (or the daemon's sweep) marks the run abandoned instead of leaving it running forever.
//! The same lease (duration, heartbeat, holder identity) covers a worker's claim on a batch of
//! webhook inbox events (`nps::drain_once`): a worker that dies mid-batch loses it when the
//! lease lapses, and any other worker takes the events over.

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

/// Renews a lease in the background until stopped or dropped (a run or batch aborted by the
/// daemon's shutdown drops it, and its lease then lapses like a dead worker's). One mechanism
/// for every lease the engine holds: a scheduled run's per-workflow lease and a worker's claim
/// on a batch of inbox events both renew through it, at the same period and with the same
/// meaning of a lost lease.
pub(crate) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

/// One renewal: Ok(false) when the lease is gone (taken over or closed by someone else).
pub(crate) type Renewal =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, crate::store::StoreError>> + Send>>;

impl Heartbeat {
    /// Renews run `run`'s lease, held by `holder`.
    pub fn start(
        store: Arc<dyn Store>,
        clock: crate::clock::Clock,
        run: RunId,
        holder: String,
        lease: RunLease,
    ) -> Heartbeat {
        let what = format!("run {run}");
        Heartbeat::renewing(lease, what, move || {
            let (store, holder) = (Arc::clone(&store), holder.clone());
            Box::pin(async move { store.renew_run_lease(run, &holder, lease.duration, clock.now()).await })
        })
    }

    /// Renews the claims `claimer` holds on inbox events.
    pub fn claims(store: Arc<dyn Store>, clock: crate::clock::Clock, claimer: String, lease: RunLease) -> Heartbeat {
        let what = format!("inbox claim {claimer}");
        Heartbeat::renewing(lease, what, move || {
            let (store, claimer) = (Arc::clone(&store), claimer.clone());
            Box::pin(async move { Ok(store.renew_event_claims(&claimer, lease.duration, clock.now()).await? > 0) })
        })
    }

    /// Calls `renew` every `lease.heartbeat` (the first time one period after the claim, which
    /// has just set the lease).
    pub fn renewing(lease: RunLease, what: String, renew: impl Fn() -> Renewal + Send + 'static) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Someone took the lease over (or closed it): renewing again would not
                        // bring it back, so stop and let the holder's finish say so.
                        flag.store(true, Ordering::SeqCst);
                        tracing::warn!(lease = %what, "The lease was lost: another worker took it over");
                        return;
                    }
                    // A later renewal may still succeed within the lease; only an expiry
                    // costs the lease.
                    Err(e) => tracing::warn!(lease = %what, error = %e, "Failed to renew the lease"),
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

    // Paused time: the heartbeat's period is a tokio interval, which the runtime jumps to when
    // nothing else is ready, so a minute of renewals takes no wall time and no load can make a
    // renewal late or early.
    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_renews_each_period_survives_an_error_and_stops_once_the_lease_is_lost() {
        use std::sync::atomic::AtomicUsize;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let lease = RunLease::lasting(Duration::from_secs(60));
        let heartbeat = Heartbeat::renewing(lease, "test".into(), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                match n {
                    2 => Err(crate::store::StoreError::Invalid { what: "test", detail: "store unreachable".into() }),
                    3 => Ok(false),
                    _ => Ok(true),
                }
            })
        });
        let start = tokio::time::Instant::now();
        let seen = Arc::clone(&calls);
        let renewals_at = move |secs: u64| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
                seen.load(Ordering::SeqCst)
            }
        };
        assert_eq!(renewals_at(14).await, 0, "the claim has just set the lease: no renewal before one period");
        assert_eq!(renewals_at(16).await, 1, "one renewal after 15 s");
        assert_eq!(renewals_at(31).await, 2, "a failed renewal is retried at the next period");
        assert_eq!(renewals_at(46).await, 3);
        assert_eq!(renewals_at(120).await, 3, "a lost lease is not renewed again");
        assert!(heartbeat.stop(), "the holder learns the lease was lost");
    }
}
