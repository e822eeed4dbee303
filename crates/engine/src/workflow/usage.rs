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

/// Per-account engagement over `window`, bringing the workflow's kept state up to date.
pub(crate) async fn gather(
    ctx: &Context,
    workflow: &str,
    extractor: &Extractor<'_>,
    window: &Window,
    core: &CoreFeatures,
    dry_run: bool,
) -> Result<Vec<AccountUsage>, RunError> {
    let stored = ctx.store.kept_state(workflow, KEPT).await?;
    let version = stored.as_ref().map(|(version, _)| *version);
    // The stored bytes go as soon as they are decoded: the merge below is the run's peak.
    let kept = stored.and_then(|(_, bytes)| UsageState::decode(&bytes));
    let (usage, state) = extractor.engagement_kept(window, core, kept).await?;
    let sizes = state.as_ref().map(UsageState::sizes);
    if let (false, Some(bytes)) = (dry_run, state.and_then(|s| s.encode())) {
        let len = bytes.len();
        tracing::info!(workflow, bytes = len, entries = ?sizes, "keeping the engagement read");
        // A stale writer (another worker ran the workflow meanwhile) keeps nothing: the state
        // stored is as good, and the next run starts from it.
        if !ctx.store.keep_state(workflow, KEPT, version, bytes).await? {
            tracing::info!(workflow, bytes = len, "another run kept its engagement read first; this one is dropped");
        }
    }
    Ok(usage)
}
