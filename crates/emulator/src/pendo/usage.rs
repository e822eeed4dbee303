//! API-call accounting: every request to the Pendo API surface is counted by endpoint and status,
//! so tests and benchmarks can assert how many calls a sync made (`GET /__emulator/usage`).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Default)]
pub struct Usage {
    inner: Mutex<UsageReport>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub total: u64,
    /// Keyed by `METHOD /route/template`.
    pub by_endpoint: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub throttled: u64,
    pub aggregation_rows_scanned: u64,
    pub webhook_deliveries: u64,
    pub webhook_failures: u64,
}

impl Usage {
    pub fn record(&self, endpoint: &str, status: u16) {
        let mut u = self.inner.lock();
        u.total += 1;
        *u.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
        *u.by_status.entry(status).or_default() += 1;
        if status == 429 {
            u.throttled += 1;
        }
    }

    pub fn add_rows_scanned(&self, n: u64) {
        self.inner.lock().aggregation_rows_scanned += n;
    }

    pub fn webhook(&self, ok: bool) {
        let mut u = self.inner.lock();
        if ok {
            u.webhook_deliveries += 1;
        } else {
            u.webhook_failures += 1;
        }
    }

    pub fn report(&self) -> UsageReport {
        self.inner.lock().clone()
    }

    pub fn reset(&self) {
        *self.inner.lock() = UsageReport::default();
    }
}
