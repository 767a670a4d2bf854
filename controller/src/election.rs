//! Leader election behind the [`Election`] trait: [`EtcdElection`] (etcd lease + the
//! Election service's campaign, through `etcd-client`) for replicated controllers,
//! [`LocalElection`] for a lone one.
//!
//! A [`Leadership`] holds a [`Fence`] that the store checks with every write, and a `lost`
//! token. The etcd lease is renewed every third of its TTL; the token fires as soon as the
//! lease can no longer be known to hold, i.e. one TTL after the send time of the last
//! renewal etcd confirmed, which is no later than etcd itself can expire it. So a leader cut
//! off from etcd stops writing before any successor can be elected, and the fence rejects
//! anything that slips through.

use crate::etcd::EtcdClient;
use crate::store::{BoxFuture, Fence, StoreError};
use std::fmt::Debug;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Why a campaign ended without leadership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// The caller cancelled the campaign.
    #[error("campaign cancelled")]
    Cancelled,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Campaigns for leadership among the controller replicas.
pub trait Election: Send + Sync + Debug {
    /// Waits until this candidate leads (retrying through etcd failures) or `cancel` fires.
    fn campaign(
        &self,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Leadership, ElectionError>>;

    /// The current leader's value (its candidate id), if there is one.
    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, ElectionError>>;
}

/// Being the leader. Dropping it stops renewing the lease (leadership then ends when the
/// lease expires, as if the process had died); [`Leadership::resign`] ends it at once.
#[derive(Debug)]
pub struct Leadership {
    fence: Fence,
    ttl: Duration,
    lost: CancellationToken,
    resign: CancellationToken,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// The proof of leadership that writes carry.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The lease TTL granted by etcd (zero for a lone controller).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether this is still the leader; check before deciding anything to write.
    pub fn is_leader(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Fires when leadership is lost; the leader's loops select on it.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Gives leadership up now (the lease is revoked, so a successor is elected at once).
    pub async fn resign(mut self) {
        self.resign.cancel();
        if let Some(task) = self.task.take() {
            // The task revokes under the client's deadline; bound the wait anyway.
            let _ = tokio::time::timeout(self.ttl.max(Duration::from_secs(1)), task).await;
        }
        self.lost.cancel();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop.cancel();
        self.lost.cancel();
    }
}

/// A lone controller's election: it always leads.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalElection;

impl Election for LocalElection {
    fn campaign(
        &self,
        _cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Leadership, ElectionError>> {
        Box::pin(std::future::ready(Ok(Leadership {
            fence: Fence::standalone(),
            ttl: Duration::ZERO,
            lost: CancellationToken::new(),
            resign: CancellationToken::new(),
            stop: CancellationToken::new(),
            task: None,
        })))
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, ElectionError>> {
        Box::pin(std::future::ready(Ok(Some("local".to_owned()))))
    }
}

/// Election through etcd's Election service under the key prefix `name`.
#[derive(Debug, Clone)]
pub struct EtcdElection {
    client: EtcdClient,
    name: String,
    value: String,
    ttl: Duration,
}

impl EtcdElection {
    /// A candidate `value` (its id, e.g. the address followers redirect to) in election
    /// `name`, with leases of `ttl` (etcd rounds up to its minimum, about 2 s by default).
    pub fn new(
        client: EtcdClient,
        name: impl Into<String>,
        value: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        EtcdElection {
            client,
            name: name.into(),
            value: value.into(),
            ttl,
        }
    }

    /// Waits `delay` unless cancelled first.
    async fn pause(delay: Duration, cancel: &CancellationToken) -> Result<(), ElectionError> {
        tokio::select! {
            _ = cancel.cancelled() => Err(ElectionError::Cancelled),
            _ = sleep(delay) => Ok(()),
        }
    }
}

/// Renews `lease` until stopped, resigned or lost; fires `lost` when it ends.
async fn keep_lease(
    client: EtcdClient,
    lease: i64,
    ttl: Duration,
    mut valid_until: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
    resign: CancellationToken,
) {
    let interval = ttl / 3;
    // After a failed renewal, try again soon: the lease is running out.
    let mut delay = interval;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = resign.cancelled() => {
                lost.cancel();
                if let Err(e) = client.revoke(lease).await {
                    tracing::warn!(lease, error = %e, "revoking the leader lease failed; it will expire");
                }
                break;
            }
            _ = sleep_until(valid_until) => {
                tracing::warn!(lease, "leader lease not renewed in time: leadership lost");
                break;
            }
            _ = sleep(delay) => {}
        }
        let sent = Instant::now();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = resign.cancelled() => continue, // handled at the top of the loop
            _ = sleep_until(valid_until) => {
                tracing::warn!(lease, "leader lease not renewed in time: leadership lost");
                break;
            }
            r = client.keep_alive_once(lease) => match r {
                // A renewal restores the TTL the lease was granted.
                Ok(()) => {
                    valid_until = sent + ttl;
                    delay = interval;
                }
                Err(StoreError::LeaseExpired(_)) => {
                    tracing::warn!(lease, "leader lease expired: leadership lost");
                    break;
                }
                Err(e) => {
                    tracing::warn!(lease, error = %e, "renewing the leader lease failed");
                    delay = ttl / 10;
                }
            }
        }
    }
    lost.cancel();
}

impl Election for EtcdElection {
    fn campaign(
        &self,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Leadership, ElectionError>> {
        Box::pin(async move {
            let retry = (self.ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
            loop {
                if cancel.is_cancelled() {
                    return Err(ElectionError::Cancelled);
                }
                let sent = Instant::now();
                let (lease, ttl) = match self.client.grant(self.ttl).await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "leader lease grant failed");
                        Self::pause(retry, &cancel).await?;
                        continue;
                    }
                };
                let lost = CancellationToken::new();
                let stop = CancellationToken::new();
                let resign = CancellationToken::new();
                let task = tokio::spawn(keep_lease(
                    self.client.clone(),
                    lease,
                    ttl,
                    sent + ttl,
                    lost.clone(),
                    stop.clone(),
                    resign.clone(),
                ));
                let mut leadership = Leadership {
                    fence: Fence::standalone(),
                    ttl,
                    lost: lost.clone(),
                    resign,
                    stop,
                    task: Some(task),
                };
                // No deadline: a campaign waits as long as another replica leads.
                let campaign = self.client.unbounded(|c| {
                    let mut election = c.election();
                    let (name, value) = (self.name.clone(), self.value.clone());
                    async move { election.campaign(name, value, lease).await }
                });
                let r = tokio::select! {
                    _ = cancel.cancelled() => {
                        leadership.resign().await;
                        return Err(ElectionError::Cancelled);
                    }
                    _ = lost.cancelled() => continue,
                    r = campaign => r,
                };
                match r.map(|mut r| r.take_leader()) {
                    Ok(Some(key)) if !lost.is_cancelled() => {
                        leadership.fence = Fence {
                            key: String::from_utf8_lossy(key.key()).into_owned(),
                            revision: key.rev(),
                        };
                        tracing::info!(candidate = %self.value, lease, "elected leader");
                        return Ok(leadership);
                    }
                    Ok(_) => leadership.resign().await,
                    Err(s) => {
                        tracing::warn!(error = %s, "campaign failed");
                        leadership.resign().await;
                        Self::pause(retry, &cancel).await?;
                    }
                }
            }
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, ElectionError>> {
        Box::pin(async move {
            let r = self
                .client
                .call(|c| {
                    let mut election = c.election();
                    let name = self.name.clone();
                    async move { election.leader(name).await }
                })
                .await;
            match r {
                Ok(r) => Ok(r
                    .kv()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
                // etcd answers "election: no leader" as an error.
                Err(StoreError::Unavailable(m)) if m.contains("no leader") => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lone_controller_always_leads() {
        let l = LocalElection
            .campaign(CancellationToken::new())
            .await
            .unwrap();
        assert!(l.is_leader());
        assert_eq!(l.fence(), &Fence::standalone());
        let lost = l.lost();
        l.resign().await;
        assert!(lost.is_cancelled());
    }
}
