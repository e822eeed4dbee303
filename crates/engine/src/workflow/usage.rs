//! The gather stage of every template that reads per-account engagement: the figures over the
//! workflow's window, from the engagement kept in the store since the last run (see
//! [`crate::extract::UsageState`]), so a re-run asks Pendo about the new days only.
//!
//! The state is Pendo's data, not a record of what was written, so keeping it does not depend
//! on the run's delivery: a run that fails after gathering keeps a state as true as the one it
//! read. A dry run reads the state and leaves it as it was.

use crate::extract::{AccountUsage, CoreFeatures, Extractor, UsageState, Window};

use super::{Context, RunError};

/// The workflow cursor the state is kept under.
const CURSOR: &str = "engagement";

/// Per-account engagement over `window`, bringing the workflow's kept state up to date.
pub(crate) async fn gather(
    ctx: &Context,
    workflow: &str,
    extractor: &Extractor<'_>,
    window: &Window,
    core: &CoreFeatures,
    dry_run: bool,
) -> Result<Vec<AccountUsage>, RunError> {
    let stored = ctx.store.cursor(workflow, CURSOR).await?;
    let kept = stored.as_deref().and_then(UsageState::decode);
    let (usage, state) = extractor.engagement_kept(window, core, kept).await?;
    let sizes = state.as_ref().map(UsageState::sizes);
    if let (false, Some(text)) = (dry_run, state.and_then(|s| s.encode())) {
        tracing::info!(workflow, bytes = text.len(), entries = ?sizes, "keeping the engagement read");
        // A stale writer (another worker ran the workflow meanwhile) keeps nothing: the state
        // stored is as good, and the next run starts from it.
        ctx.store.advance_cursor(workflow, CURSOR, stored, text).await?;
    }
    Ok(usage)
}
