//! Compaction of the store's history by the leader: etcd keeps every revision until
//! compacted, and continuity and load writes come every second, so without this the
//! database grows until it hits its quota. Only the leader compacts (one writer), through
//! the [`Store`] API ([`Store::revision`], [`Store::compact`]).

use crate::leader::Leader;
use crate::store::{Revision, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Compacts the store's history every `every` while this replica leads, up to the
/// revision of the previous tick: one period of history stays (for anyone watching), the
/// rest goes, so the database does not grow with every continuity or load write.
pub async fn compact_history(
    store: Arc<dyn Store>,
    leader: Arc<Leader>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Revision> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if leader.fence().is_none() {
            previous = None;
            continue;
        }
        let now = match store.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the store revision");
                continue;
            }
        };
        if let Some(rev) = previous.filter(|r| *r < now) {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "store history compacted"),
                // E.g. already compacted further by etcd's own auto-compaction.
                Err(e) => tracing::debug!(revision = rev, error = %e, "compacting the store"),
            }
        }
        previous = Some(now);
    }
}
