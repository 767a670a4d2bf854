//! Leadership as this replica sees it: [`Leader`] holds the fence to write with while it
//! leads (what the services, load sharing and compaction consult), and [`lead`] is the
//! election loop that publishes it. Only the leader writes, with that fence, so a
//! replica that lost its lease cannot overwrite its successor's work.

use crate::election::{Election, Leadership};
use crate::store::Fence;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Who leads, as the election loop publishes it.
#[derive(Debug, Default)]
pub struct Leader {
    fence: Mutex<Option<Fence>>,
}

impl Leader {
    /// Publishes this replica's leadership (`Some`) or its loss (`None`).
    pub fn set(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// The fence to write with, if this replica leads.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A lone controller (no etcd) leads at once: it wins before serving, so no call sees
/// a follower. The leadership goes on to [`lead`] as its first.
pub async fn win_alone(
    election: &dyn Election,
    leader: &Leader,
    cancel: &CancellationToken,
) -> Option<Leadership> {
    let won = election.campaign(cancel.clone()).await.ok()?;
    leader.set(Some(won.fence().clone()));
    Some(won)
}

/// The election loop: campaign (unless `first` is already won), publish the fence, hold
/// until lost or cancelled, repeat.
pub async fn lead(
    first: Option<Leadership>,
    election: Arc<dyn Election>,
    leader: Arc<Leader>,
    gauge: Gauge,
    cancel: CancellationToken,
) {
    let mut first = first;
    loop {
        let campaign = match first.take() {
            Some(l) => Ok(l),
            None => election.campaign(cancel.clone()).await,
        };
        let leadership = match campaign {
            Ok(l) => l,
            Err(error) => {
                if !cancel.is_cancelled() {
                    tracing::warn!(%error, "campaign ended");
                }
                return;
            }
        };
        leader.set(Some(leadership.fence().clone()));
        gauge.set(1);
        let lost = leadership.lost();
        tokio::select! {
            _ = cancel.cancelled() => {
                leader.set(None);
                gauge.set(0);
                leadership.resign().await;
                return;
            }
            _ = lost.cancelled() => {
                leader.set(None);
                gauge.set(0);
                tracing::warn!("leadership lost; campaigning again");
            }
        }
    }
}
