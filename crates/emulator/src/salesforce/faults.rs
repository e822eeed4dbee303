//! Fault injection, deterministic from a seed: a configurable share of data-API requests fail
//! with lock contention (`UNABLE_TO_LOCK_ROW`), 503 `SERVER_UNAVAILABLE`, a dropped connection,
//! or arrive late. The same seed and the same sequence of requests give the same faults, so a
//! test that found a retry bug can be replayed exactly.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

/// `PUT /__emulator/faults`. Shares are probabilities in 0..=1, drawn independently per request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub seed: u64,
    /// Writes fail with 400 `UNABLE_TO_LOCK_ROW` (per record inside Collections).
    #[serde(default)]
    pub unable_to_lock_row: f64,
    /// Requests fail with 503 `SERVER_UNAVAILABLE` before doing anything.
    #[serde(default)]
    pub server_unavailable: f64,
    /// The connection closes without a response, before the request is processed.
    #[serde(default)]
    pub drop_connection: f64,
    /// Added latency, in milliseconds, for the share `latency_share` of requests.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub latency_share: f64,
    /// Bulk ingest jobs that fail as a whole (after their first internal batch) with an
    /// `InternalServerError` errorMessage.
    #[serde(default)]
    pub bulk_job_failure: f64,
    /// Bulk ingest rows that fail with `UNABLE_TO_LOCK_ROW` in failedResults.
    #[serde(default)]
    pub bulk_unable_to_lock_row: f64,
    /// Delay, in milliseconds, before each internal batch of a Bulk ingest job.
    #[serde(default)]
    pub bulk_processing_delay_ms: u64,
}

impl FaultConfig {
    /// # Errors
    /// When a share is not a probability.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("unableToLockRow", self.unable_to_lock_row),
            ("serverUnavailable", self.server_unavailable),
            ("dropConnection", self.drop_connection),
            ("latencyShare", self.latency_share),
            ("bulkJobFailure", self.bulk_job_failure),
            ("bulkUnableToLockRow", self.bulk_unable_to_lock_row),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.latency_ms > 60_000 {
            return Err("latencyMs must be at most 60000".into());
        }
        if self.bulk_processing_delay_ms > 600_000 {
            return Err("bulkProcessingDelayMs must be at most 600000".into());
        }
        Ok(())
    }
}

/// What to do to one request, decided up front.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Decision {
    pub drop_connection: bool,
    pub server_unavailable: bool,
    pub latency_ms: u64,
}

#[derive(Debug)]
pub struct Faults {
    pub config: FaultConfig,
    rng: StdRng,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { config: FaultConfig::default(), rng: StdRng::seed_from_u64(0) }
    }
}

impl Faults {
    pub fn set(&mut self, config: FaultConfig) {
        self.rng = StdRng::seed_from_u64(config.seed);
        self.config = config;
    }

    fn draw(&mut self, share: f64) -> bool {
        share > 0.0 && self.rng.random::<f64>() < share
    }

    /// Decides the request-level faults for one request.
    pub fn decide(&mut self) -> Decision {
        let c = self.config.clone();
        Decision {
            drop_connection: self.draw(c.drop_connection),
            server_unavailable: self.draw(c.server_unavailable),
            latency_ms: if self.draw(c.latency_share) { c.latency_ms } else { 0 },
        }
    }

    /// Whether a Bulk ingest job fails as a whole; drawn once per job.
    pub fn bulk_job_fails(&mut self) -> bool {
        let share = self.config.bulk_job_failure;
        self.draw(share)
    }

    /// Whether one Bulk ingest row hits lock contention.
    pub fn bulk_lock_row(&mut self) -> bool {
        let share = self.config.bulk_unable_to_lock_row;
        self.draw(share)
    }

    /// Whether one write (a request, or one record of a Collections request) hits lock contention.
    pub fn lock_row(&mut self) -> bool {
        let share = self.config.unable_to_lock_row;
        self.draw(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let cfg = FaultConfig { seed: 7, unable_to_lock_row: 0.3, server_unavailable: 0.2, ..Default::default() };
        let run = || {
            let mut f = Faults::default();
            f.set(cfg.clone());
            (0..50).map(|_| (f.decide(), f.lock_row())).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let hits = run().iter().filter(|(_, l)| *l).count();
        assert!(hits > 5 && hits < 30, "{hits}");
    }

    #[test]
    fn shares_are_validated() {
        assert!(FaultConfig { unable_to_lock_row: 1.5, ..Default::default() }.validate().is_err());
        assert!(FaultConfig::default().validate().is_ok());
    }
}
