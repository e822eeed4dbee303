//! The emulator's controllable clock: real time by default, or frozen / shifted through
//! `PUT /__emulator/clock`, so that tests can make "now()" and data freshness deterministic.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct Clock {
    inner: Mutex<ClockState>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClockState {
    /// When set, time stands still at this epoch-ms instant.
    pub frozen_at: Option<i64>,
    /// Added to the wall clock when not frozen.
    pub offset_ms: i64,
}

/// Body of `PUT /__emulator/clock`: any combination; `now` freezes, `advanceMs` moves a frozen or
/// shifted clock forward, `real` returns to the wall clock.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClockUpdate {
    pub now: Option<i64>,
    pub offset_ms: Option<i64>,
    pub advance_ms: Option<i64>,
    #[serde(default)]
    pub real: bool,
}

impl Clock {
    pub fn wall_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    pub fn now_ms(&self) -> i64 {
        let s = *self.inner.lock();
        s.frozen_at.unwrap_or_else(|| Self::wall_ms() + s.offset_ms)
    }

    pub fn state(&self) -> ClockState {
        *self.inner.lock()
    }

    pub fn update(&self, u: &ClockUpdate) -> ClockState {
        let mut s = self.inner.lock();
        if u.real {
            *s = ClockState::default();
        }
        if let Some(off) = u.offset_ms {
            s.offset_ms = off;
            s.frozen_at = None;
        }
        if let Some(now) = u.now {
            s.frozen_at = Some(now);
        }
        if let Some(adv) = u.advance_ms {
            match &mut s.frozen_at {
                Some(t) => *t = t.saturating_add(adv),
                None => s.offset_ms = s.offset_ms.saturating_add(adv),
            }
        }
        *s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_and_advance() {
        let c = Clock::default();
        c.update(&ClockUpdate { now: Some(1_000), ..Default::default() });
        assert_eq!(c.now_ms(), 1_000);
        c.update(&ClockUpdate { advance_ms: Some(500), ..Default::default() });
        assert_eq!(c.now_ms(), 1_500);
        c.update(&ClockUpdate { real: true, ..Default::default() });
        assert!(c.now_ms() > 1_000_000);
    }
}
