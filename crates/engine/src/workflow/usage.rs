//! The gather stage of every template that reads per-account engagement: the figures over the
//! workflow's window, from the engagement kept in the store since the last run (see
//! [`crate::extract::UsageState`]), so a re-run asks Pendo about the new days only.
//!
//! The state is Pendo's data, not a record of what was written, so keeping it does not depend
//! on the run's delivery: a run that fails after gathering keeps a state as true as the one it
//! read. A dry run reads the state and leaves it as it was.

use crate::extract::{AccountUsage, CoreFeatures, Extractor, UsageState, Window};

use super::{Context, RunError};

/// The name the state is kept under, per workflow.
const KEPT: &str = "engagement";

/// Usage by Pendo account id: the list sorted once and searched by bisection. A hash map beside
/// a million accounts' usage was about 70 MB (two million buckets) at the diff, where a first
/// run at that size peaks.
pub(crate) struct ById<'a>(&'a [AccountUsage]);

impl<'a> ById<'a> {
    /// Sorts `usage` by account id (stable: of two entries for one id the later is found, as a
    /// map's insert would keep).
    pub(crate) fn new(usage: &'a mut [AccountUsage]) -> Self {
        usage.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        ById(usage)
    }

    pub(crate) fn get(&self, account_id: &str) -> Option<&'a AccountUsage> {
        let end = self.0.partition_point(|u| u.account_id.as_str() <= account_id);
        self.0[..end].last().filter(|u| u.account_id == account_id)
    }
}

/// Per-account engagement over `window`, bringing the workflow's kept state up to date; with
/// `hold`, the state too when one is kept (a template that needs the day sums reads them from it
/// rather than asking Pendo again). Without, the state goes once encoded, before the save copies
/// its bytes again.
pub(crate) async fn gather(
    ctx: &Context,
    workflow: &str,
    extractor: &Extractor<'_>,
    window: &Window,
    core: &CoreFeatures,
    dry_run: bool,
    hold: bool,
) -> Result<(Vec<AccountUsage>, Option<UsageState>), RunError> {
    // Each part's seconds go in the log: the state's load and save are a re-run's fixed cost,
    // beside Pendo's answers to the new days.
    let start = std::time::Instant::now();
    let secs = || start.elapsed().as_secs_f64();
    let stored = ctx.store.kept_state(workflow, KEPT).await?;
    let version = stored.as_ref().map(|(version, _)| *version);
    let loaded = secs();
    // The stored bytes go as soon as they are decoded: the merge below is the run's peak.
    let kept = stored.and_then(|(_, bytes)| UsageState::decode(&bytes));
    let decoded = secs();
    let (usage, state) = extractor.engagement_kept(window, core, kept).await?;
    let read = secs();
    let sizes = state.as_ref().map(UsageState::sizes);
    let encoded_state = if dry_run { None } else { state.as_ref().and_then(UsageState::encode) };
    // Once encoded, a state no one needs goes before the save, which copies the bytes again:
    // at 100,000 accounts the state is over 100 MB, the save the re-run's peak.
    let state = state.filter(|_| hold);
    if let Some(bytes) = encoded_state {
        let len = bytes.len();
        let encoded = secs();
        // A stale writer (another worker ran the workflow meanwhile) keeps nothing: the state
        // stored is as good, and the next run starts from it.
        let kept = ctx.store.keep_state(workflow, KEPT, version, bytes).await?;
        let saved = secs();
        tracing::info!(workflow, bytes = len, entries = ?sizes, load_s = loaded, decode_s = decoded - loaded,
            read_s = read - decoded, encode_s = encoded - read, save_s = saved - encoded, "keeping the engagement read");
        if !kept {
            tracing::info!(workflow, bytes = len, "another run kept its engagement read first; this one is dropped");
        }
    }
    Ok((usage, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found_by_id_whatever_its_order_and_the_later_of_two_wins() {
        let of = |id: &str, events: u64| AccountUsage { account_id: id.into(), events, ..Default::default() };
        let mut list = vec![of("c", 1), of("a", 2), of("b", 3), of("a", 4)];
        let by_id = ById::new(&mut list);
        assert_eq!(by_id.get("a").map(|u| u.events), Some(4));
        assert_eq!(by_id.get("b").map(|u| u.events), Some(3));
        assert_eq!(by_id.get("c").map(|u| u.events), Some(1));
        assert!(by_id.get("0").is_none() && by_id.get("ab").is_none() && by_id.get("d").is_none());
    }
}
