//! Time as an input. Every "now" a run decides with (its windows, episodes, leases, cursors,
//! budget day) comes from the [`Clock`] in its context: the system clock, or one running at an
//! offset from it. `USAGESYNC_NOW` (RFC 3339) sets that offset for a process, so a run can be
//! rehearsed as of another day against emulators whose clock was moved the same way
//! (`PUT /__emulator/clock`), and tests set it without sleeping. Reading the wall clock anywhere
//! else in the engine is refused by clippy (`crates/engine/clippy.toml`).

use chrono::{DateTime, Duration, Utc};

/// The environment variable that starts the process's clock at another time.
pub const NOW_ENV: &str = "USAGESYNC_NOW";

/// What time it is for the engine: the wall clock plus a fixed offset (zero for the system
/// clock), so time still passes at the wall clock's pace for leases and timings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{NOW_ENV}={value:?} is not an RFC 3339 time such as 2026-12-04T06:00:00Z")]
pub struct ClockError {
    value: String,
    #[source]
    source: chrono::ParseError,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `start` now and runs on from there.
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock { offset: start - wall() }
    }

    /// The system clock, or one starting at `USAGESYNC_NOW` when it is set.
    ///
    /// # Errors
    /// The variable is set but is not an RFC 3339 time.
    pub fn from_env() -> Result<Clock, ClockError> {
        match std::env::var(NOW_ENV) {
            Ok(value) if !value.trim().is_empty() => {
                let start = DateTime::parse_from_rfc3339(value.trim())
                    .map_err(|source| ClockError { value: value.clone(), source })?;
                Ok(Clock::starting_at(start.with_timezone(&Utc)))
            }
            _ => Ok(Clock::system()),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        wall() + self.offset
    }

    /// Moves the clock on (a test's day passing).
    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }
}

/// The one read of the wall clock the engine makes.
#[allow(clippy::disallowed_methods)]
fn wall() -> DateTime<Utc> {
    Utc::now()
}

/// When a row of the state store was written: bookkeeping shown to people, never an input to
/// a decision, so it is the wall time even when a run's clock is moved.
pub(crate) fn written_at() -> DateTime<Utc> {
    wall()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_started_elsewhere_runs_on_from_there() {
        let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let mut clock = Clock::starting_at(start);
        let now = clock.now();
        assert!(now >= start && now - start < Duration::seconds(5), "{now}");
        clock.advance(Duration::days(7));
        assert!(clock.now() - start >= Duration::days(7));
        let system = Clock::system().now();
        assert!((system - wall()).num_seconds().abs() < 5);
    }
}
