//! The emulator's clock. Every timestamp an emulator writes (CreatedDate, token expiry, the
//! rolling 24-hour API window) comes from here, so tests can freeze or move time through the
//! admin API instead of sleeping.

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use serde::Deserialize;

#[derive(Debug, Default)]
pub struct Clock {
    mode: Mutex<Mode>,
}

#[derive(Debug, Clone, Copy, Default)]
enum Mode {
    /// Wall-clock time plus an offset (zero by default).
    #[default]
    Live,
    Offset(Duration),
    Frozen(DateTime<Utc>),
}

/// The body of `PUT /__emulator/clock`: freeze at an instant, move by an amount, or go live.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClockChange {
    /// Freeze the clock at this instant (RFC 3339).
    #[serde(default)]
    pub now: Option<DateTime<Utc>>,
    /// Move the clock forward (or back, when negative) by this many seconds; keeps it frozen
    /// when frozen, live when live.
    #[serde(default)]
    pub advance_seconds: Option<i64>,
    /// Return to wall-clock time.
    #[serde(default)]
    pub live: bool,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match *self.mode.lock() {
            Mode::Live => Utc::now(),
            Mode::Offset(d) => Utc::now() + d,
            Mode::Frozen(t) => t,
        }
    }

    /// Applies an admin change.
    ///
    /// # Errors
    /// When the body asks for nothing, or for two contradictory things at once.
    pub fn apply(&self, change: &ClockChange) -> Result<DateTime<Utc>, String> {
        let asked = usize::from(change.now.is_some()) + usize::from(change.live);
        if asked > 1 {
            return Err("give either `now` or `live`, not both".into());
        }
        if asked == 0 && change.advance_seconds.is_none() {
            return Err("nothing to change: give `now`, `advanceSeconds` or `live`".into());
        }
        let mut mode = self.mode.lock();
        if change.live {
            *mode = Mode::Live;
        }
        if let Some(t) = change.now {
            *mode = Mode::Frozen(t);
        }
        if let Some(secs) = change.advance_seconds {
            let d = Duration::try_seconds(secs).ok_or("advanceSeconds is out of range")?;
            *mode = match *mode {
                Mode::Live => Mode::Offset(d),
                Mode::Offset(o) => Mode::Offset(o + d),
                Mode::Frozen(t) => Mode::Frozen(t + d),
            };
        }
        drop(mode);
        Ok(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_and_advance() {
        let c = Clock::default();
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        c.apply(&ClockChange { now: Some(t), advance_seconds: None, live: false }).unwrap();
        assert_eq!(c.now(), t);
        c.apply(&ClockChange { now: None, advance_seconds: Some(3600), live: false }).unwrap();
        assert_eq!(c.now(), t + Duration::hours(1));
        assert!(c.apply(&ClockChange { now: None, advance_seconds: None, live: false }).is_err());
        assert!(c.apply(&ClockChange { now: Some(t), advance_seconds: None, live: true }).is_err());
    }
}
