//! The client's shared pace for Pendo: one limiter per [`crate::Client`] (its clones share it,
//! so one per process), through which every request starts. Pendo publishes no rate limit and
//! answers 429 when it throttles; the limiter learns from those answers instead of guessing a
//! number. A 429 pauses every caller until its `Retry-After` (or the backoff) has passed — not
//! only the one that met it, since the others would meet it too — and halves the pace; a run
//! of successes speeds the pace up again until requests are no longer spaced at all.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spacing after the first 429 when requests were not spaced yet (50 requests/s).
const FIRST_INTERVAL: Duration = Duration::from_millis(20);
/// Slowest pace the limiter falls to (one request per 2 s, tap-pendo's own fixed pace).
const MAX_INTERVAL: Duration = Duration::from_secs(2);
/// Successes in a row before the spacing shrinks by a tenth.
const SPEED_UP_AFTER: u32 = 10;
/// Below this spacing requests are not spaced at all.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct State {
    /// Time between request starts; zero when unpaced.
    interval: Duration,
    /// The earliest start of the next request.
    next: Instant,
    successes: u32,
    /// How many times the pace was slowed: a 429 for a request scheduled before the latest
    /// slowdown was sent at the old pace and slows it no further (a burst of 429s halves the
    /// pace once, not once per answer).
    generation: u64,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            state: Mutex::new(State { interval: Duration::ZERO, next: Instant::now(), successes: 0, generation: 0 }),
        }
    }
}

impl Limiter {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did (plain assignments).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this request's turn; returns the pace's generation it was scheduled under.
    pub(crate) async fn acquire(&self) -> u64 {
        let (start, generation) = {
            let mut s = self.state();
            let start = s.next.max(Instant::now());
            s.next = start + s.interval;
            (start, s.generation)
        };
        tokio::time::sleep_until(start).await;
        generation
    }

    /// A 429 for a request scheduled under pace `generation`: nobody starts before `wait` has
    /// passed, and the pace halves unless it was already slowed since that request was sent.
    pub(crate) fn throttled(&self, wait: Duration, generation: u64) {
        let mut s = self.state();
        let now = Instant::now();
        if generation == s.generation {
            s.interval = if s.interval.is_zero() { FIRST_INTERVAL } else { (s.interval * 2).min(MAX_INTERVAL) };
            s.generation += 1;
        }
        s.successes = 0;
        let resume = now + wait;
        if s.next < resume {
            s.next = resume;
        }
    }

    /// An answer that was not a 429.
    pub(crate) fn succeeded(&self) {
        let mut s = self.state();
        if s.interval.is_zero() {
            return;
        }
        s.successes += 1;
        if s.successes >= SPEED_UP_AFTER {
            s.successes = 0;
            s.interval = s.interval.mul_f64(0.9);
            if s.interval < MIN_INTERVAL {
                s.interval = Duration::ZERO;
            }
        }
    }

    #[cfg(test)]
    fn interval(&self) -> Duration {
        self.state().interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the waits are the limiter's own tokio timers, which the runtime jumps to when
    // nothing else is ready, so the test takes no wall time and a loaded machine cannot stretch
    // the "unpaced" check; the elapsed times are exact.
    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_and_halves_the_pace_then_it_recovers() {
        let l = Limiter::default();
        let t0 = Instant::now();
        l.acquire().await;
        let sent = l.acquire().await;
        assert!(t0.elapsed() < Duration::from_millis(50), "unpaced until throttled");
        l.throttled(Duration::from_millis(200), sent);
        l.throttled(Duration::from_millis(200), sent);
        assert_eq!(l.interval(), Duration::from_millis(20), "a burst of 429s slows the pace once");
        let sent = l.acquire().await;
        assert!(t0.elapsed() >= Duration::from_millis(200), "everyone waits out the Retry-After");
        let t1 = Instant::now();
        l.acquire().await;
        assert!(t1.elapsed() >= Duration::from_millis(10), "then requests are spaced: {:?}", t1.elapsed());
        l.throttled(Duration::ZERO, sent);
        assert_eq!(l.interval(), Duration::from_millis(40), "each 429 halves the pace");
        for _ in 0..1_000 {
            l.succeeded();
        }
        assert_eq!(l.interval(), Duration::ZERO, "successes bring it back to unpaced");
    }
}
