//! Process-wide observations that `/metrics` reports and the store does not keep: how long each
//! webhook event waited between being stored and the batch that processed it. The store has
//! both times, but no query for processed events, so the batch that marks events processed
//! reports them here through [`webhook_events_processed`].

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// Upper bounds of [`WEBHOOK_LAG`]'s buckets, in seconds: nps-realtime promises seconds, so
/// the low end is fine-grained; the high end shows a backlog draining.
pub const WEBHOOK_LAG_BUCKETS: [f64; 11] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A histogram over fixed buckets, safe to update from any task.
pub struct Histogram {
    /// Per bucket, not cumulative; observations over the last bound are only in `count`.
    buckets: [AtomicU64; WEBHOOK_LAG_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// What [`Histogram::snapshot`] returns: cumulative counts per bound, total count, sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; WEBHOOK_LAG_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation; a negative one (clocks of two workers apart) counts as 0.
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        if let Some(i) = WEBHOOK_LAG_BUCKETS.iter().position(|le| seconds <= *le)
            && let Some(bucket) = self.buckets.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // Whole microseconds: an atomic float sum is not to be had, and this is exact enough.
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let buckets = WEBHOOK_LAG_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .map(|(le, n)| {
                total += n.load(Ordering::Relaxed);
                (*le, total)
            })
            .collect();
        Snapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Seconds from a webhook event's storing to the batch that processed it, in this process.
pub static WEBHOOK_LAG: Histogram = Histogram::new();

/// The hook for the inbox consumer: call it with the `received_at` of each event a batch
/// marked processed, and the time it did.
pub fn webhook_events_processed(received: impl IntoIterator<Item = DateTime<Utc>>, now: DateTime<Utc>) {
    for at in received {
        WEBHOOK_LAG.observe((now - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_their_sum() {
        let h = Histogram::new();
        for s in [0.1, 0.3, 4.0, 7200.0, -2.0] {
            h.observe(s);
        }
        let snap = h.snapshot();
        assert_eq!(snap.count, 5);
        assert!((snap.sum_seconds - 7204.4).abs() < 1e-3, "{snap:?}");
        let at = |le: f64| snap.buckets.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
        assert_eq!(at(0.25), Some(2), "0.1 and the negative one: {snap:?}");
        assert_eq!(at(0.5), Some(3));
        assert_eq!(at(5.0), Some(4));
        assert_eq!(at(3600.0), Some(4), "7200 s is only in the count: {snap:?}");
    }
}
