//! When each workflow runs next, decided through the store so that several workers sharing one
//! store fire each schedule once: the next fire time lives in the workflow's `schedule` cursor,
//! and a worker that finds it due claims the run by moving the cursor on with a compare-and-set.
//! The loser of that race sees the cursor already moved and does nothing.
//!
//! Missed fire times (the daemon was down) collapse into one catch-up run: a sync brings
//! everything current, so running it once per missed slot would only spend API calls.
//!
//! The cursor is keyed to the schedule it was computed for (`<next fire time> <time zone>
//! <cron>`): when the config's `schedule:` or `timezone:` changes, the stored time belongs to a
//! schedule that no longer exists, so it is dropped and the next fire time is computed from the
//! new cron, without a catch-up run. A cursor written before the key existed (a bare time) is
//! kept only while it agrees with the current schedule.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::store::{Store, StoreError};

/// The cursor holding a workflow's next fire time (RFC 3339).
pub const CURSOR: &str = "schedule";

/// The first fire time strictly after `after`, computed in the workflow's time zone so that
/// "06:00" stays 06:00 local across daylight-saving changes.
pub fn next_after(cron: &croner::Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&tz);
    cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
}

/// The cursor marking a workflow's schedule paused (`paused` when it is; anything else, or
/// none, when it is not). Kept in the store, so every worker sharing it honours a pause.
pub const PAUSED: &str = "paused";

/// Whether a person paused the workflow's schedule.
///
/// # Errors
/// The store's.
pub async fn is_paused(store: &dyn Store, workflow: &str) -> Result<bool, StoreError> {
    Ok(store.cursor(workflow, PAUSED).await?.as_deref() == Some("paused"))
}

/// Pauses or resumes the workflow's schedule. While paused its fire times pass without a run
/// (no catch-up on resume); `sync` and replays still run it when asked.
///
/// # Errors
/// The store's.
pub async fn set_paused(store: &dyn Store, workflow: &str, paused: bool) -> Result<(), StoreError> {
    let stored = store.cursor(workflow, PAUSED).await?;
    let new = if paused { "paused" } else { "running" };
    if stored.as_deref() != Some(new) {
        store.advance_cursor(workflow, PAUSED, stored, new.to_owned()).await?;
    }
    Ok(())
}

/// The schedule a cursor was made for: time zone and cron pattern.
fn schedule_key(cron: &croner::Cron, tz: Tz) -> String {
    format!("{} {}", tz.name(), cron.as_str())
}

fn encode(next: DateTime<Utc>, cron: &croner::Cron, tz: Tz) -> String {
    format!("{} {}", next.to_rfc3339(), schedule_key(cron, tz))
}

/// The next fire time a stored cursor holds, if it was made for this schedule (or is a bare
/// time from before the key existed that agrees with it). `None`: recompute from `now`.
pub fn stored_next(stored: &str, cron: &croner::Cron, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (time, key) = match stored.split_once(' ') {
        Some((time, key)) => (time, Some(key)),
        None => (stored, None),
    };
    let next = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    match key {
        Some(key) if key == schedule_key(cron, tz) => Some(next),
        Some(_) => None,
        // A bare time: the schedule it came from is unknown. A missed slot still runs once;
        // a future one must be the current schedule's first fire time after now.
        None if next <= now || next_after(cron, tz, now) == Some(next) => Some(next),
        None => None,
    }
}

/// What [`claim`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This worker runs the workflow now (for the fire time given).
    Run { due: DateTime<Utc>, next: Option<DateTime<Utc>> },
    /// Not due yet (or another worker took it); check again at `next`.
    Wait { next: Option<DateTime<Utc>> },
}

/// Claims the workflow's run if it is due at `now`. A workflow seen for the first time is
/// scheduled from now on, without a run.
///
/// # Errors
/// The store's.
pub async fn claim(
    store: &dyn Store,
    workflow: &str,
    cron: &croner::Cron,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<Claim, StoreError> {
    let stored = store.cursor(workflow, CURSOR).await?;
    let parsed = stored.as_deref().and_then(|s| stored_next(s, cron, tz, now));
    let Some(due) = parsed else {
        // First sight, a cursor made for another schedule (the config changed), or one nobody
        // can read: start the schedule from now.
        let next = next_after(cron, tz, now);
        let new = next.map_or_else(String::new, |n| encode(n, cron, tz));
        if stored.as_deref() != Some(new.as_str()) {
            store.advance_cursor(workflow, CURSOR, stored, new).await?;
        }
        return Ok(Claim::Wait { next });
    };
    if due > now {
        return Ok(Claim::Wait { next: Some(due) });
    }
    let next = next_after(cron, tz, now);
    let new = next.map_or_else(String::new, |n| encode(n, cron, tz));
    // A paused schedule lets its slot pass: moved on, not run (checked only when a slot is due).
    let paused = is_paused(store, workflow).await?;
    if store.advance_cursor(workflow, CURSOR, stored, new).await? && !paused {
        Ok(Claim::Run { due, next })
    } else if paused {
        Ok(Claim::Wait { next })
    } else {
        let moved = store.cursor(workflow, CURSOR).await?;
        Ok(Claim::Wait { next: moved.as_deref().and_then(|s| stored_next(s, cron, tz, now)) })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    fn cron(s: &str) -> croner::Cron {
        croner::Cron::from_str(s).unwrap()
    }

    #[test]
    fn local_time_survives_daylight_saving() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // The night clocks go forward (2026-03-29): 06:00 local is 04:00 UTC after, 05:00 before.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 6, 0, 0).unwrap();
        let n = next_after(&cron("0 6 * * *"), berlin, before).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 3, 29, 4, 0, 0).unwrap());
    }

    #[tokio::test]
    async fn a_due_schedule_is_claimed_once_and_missed_slots_collapse() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let every_minute = cron("* * * * *");
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 30).unwrap();
        let first = claim(store.as_ref(), "w", &every_minute, Tz::UTC, t0).await.unwrap();
        let next = Utc.with_ymd_and_hms(2026, 11, 27, 10, 1, 0).unwrap();
        assert_eq!(first, Claim::Wait { next: Some(next) }, "first sight schedules, never runs");
        // Down for an hour: one run, then the next slot after now.
        let later = Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 10).unwrap();
        let run = claim(store.as_ref(), "w", &every_minute, Tz::UTC, later).await.unwrap();
        assert_eq!(run, Claim::Run { due: next, next: Some(Utc.with_ymd_and_hms(2026, 11, 27, 11, 1, 0).unwrap()) });
        // A second worker at the same moment loses the race.
        let again = claim(store.as_ref(), "w", &every_minute, Tz::UTC, later).await.unwrap();
        assert!(matches!(again, Claim::Wait { .. }), "{again:?}");
    }

    #[tokio::test]
    async fn concurrent_workers_fire_each_slot_once() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let c = cron("* * * * *");
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 30).unwrap();
        claim(store.as_ref(), "w", &c, Tz::UTC, t0).await.unwrap();
        let due = Utc.with_ymd_and_hms(2026, 11, 27, 10, 1, 5).unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                let c = c.clone();
                tokio::spawn(async move { claim(store.as_ref(), "w", &c, Tz::UTC, due).await.unwrap() })
            })
            .collect();
        let mut runs = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Claim::Run { .. }) {
                runs += 1;
            }
        }
        assert_eq!(runs, 1);
    }

    #[tokio::test]
    async fn a_changed_schedule_is_recomputed_from_the_new_cron() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let daily = cron("0 6 * * *");
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 30).unwrap();
        let tomorrow = Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 0).unwrap();
        assert_eq!(
            claim(store.as_ref(), "w", &daily, Tz::UTC, t0).await.unwrap(),
            Claim::Wait { next: Some(tomorrow) }
        );
        // The config now says every minute: the next run is the next minute, not tomorrow 06:00.
        let every_minute = cron("* * * * *");
        let t1 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 5, 10).unwrap();
        let minute = Utc.with_ymd_and_hms(2026, 11, 27, 10, 6, 0).unwrap();
        assert_eq!(
            claim(store.as_ref(), "w", &every_minute, Tz::UTC, t1).await.unwrap(),
            Claim::Wait { next: Some(minute) }
        );
        let t2 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 6, 1).unwrap();
        assert!(
            matches!(claim(store.as_ref(), "w", &every_minute, Tz::UTC, t2).await.unwrap(), Claim::Run { due, .. } if due == minute)
        );
        // Back to daily, in another time zone: recomputed again, no catch-up run.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t3 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 8, 0).unwrap();
        assert_eq!(
            claim(store.as_ref(), "w", &daily, berlin, t3).await.unwrap(),
            Claim::Wait { next: Some(Utc.with_ymd_and_hms(2026, 11, 28, 5, 0, 0).unwrap()) }
        );
    }

    #[tokio::test]
    async fn a_paused_schedule_lets_its_slots_pass_and_resumes_without_a_catch_up() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let c = cron("* * * * *");
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 30).unwrap();
        claim(store.as_ref(), "w", &c, Tz::UTC, t0).await.unwrap();
        set_paused(store.as_ref(), "w", true).await.unwrap();
        assert!(is_paused(store.as_ref(), "w").await.unwrap());
        let t1 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 5, 5).unwrap();
        let next = Utc.with_ymd_and_hms(2026, 11, 27, 10, 6, 0).unwrap();
        assert_eq!(claim(store.as_ref(), "w", &c, Tz::UTC, t1).await.unwrap(), Claim::Wait { next: Some(next) });
        set_paused(store.as_ref(), "w", false).await.unwrap();
        assert_eq!(
            claim(store.as_ref(), "w", &c, Tz::UTC, t1).await.unwrap(),
            Claim::Wait { next: Some(next) },
            "no catch-up for the slots passed while paused"
        );
        let t2 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 6, 1).unwrap();
        assert!(matches!(claim(store.as_ref(), "w", &c, Tz::UTC, t2).await.unwrap(), Claim::Run { .. }));
    }

    #[test]
    fn a_bare_cursor_from_before_the_key_is_kept_only_while_it_agrees() {
        let every_minute = cron("* * * * *");
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 10, 5, 10).unwrap();
        assert_eq!(stored_next("2026-11-28T06:00:00+00:00", &every_minute, Tz::UTC, now), None);
        let minute = Utc.with_ymd_and_hms(2026, 11, 27, 10, 6, 0).unwrap();
        assert_eq!(stored_next("2026-11-27T10:06:00+00:00", &every_minute, Tz::UTC, now), Some(minute));
        // A missed slot still runs once.
        let missed = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
        assert_eq!(stored_next("2026-11-27T09:00:00+00:00", &every_minute, Tz::UTC, now), Some(missed));
        assert_eq!(stored_next("garbage", &every_minute, Tz::UTC, now), None);
    }
}
