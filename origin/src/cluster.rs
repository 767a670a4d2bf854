//! The origin in a cluster: every publisher is claimed from the controller first (a
//! duplicate is refused, a takeover continues the previous holder's numbering), the
//! streams this origin holds are reported with every heartbeat (epoch and continuity),
//! ended streams are released, and a stream the controller gave to another origin is
//! fenced here at once. Only a controller that cannot be reached is an outage: any
//! error it answers a claim with refuses the publisher.

use crate::package::Continuity;
use crate::stream::{Authority, BoxFuture, ClaimError, Credential, Grant, Streams};
use ferrocast_agent::{pb, Agent, Claim, NodeHooks};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a release is retried while the controller is unreachable.
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Segments that may have begun on a dead holder after its last report, beyond which a
/// successor numbers: its heartbeats (a third of the lease) cover at most this many
/// segments of `segment_target`, plus one being built and one for safety.
fn msn_margin(heartbeat: Duration, segment_target: f64) -> u64 {
    (heartbeat.as_secs_f64() / segment_target.max(0.1)).ceil() as u64 + 2
}

/// The origin's controller link.
#[derive(Debug)]
pub struct Cluster {
    agent: Agent,
    streams: Weak<Streams>,
    releases: mpsc::UnboundedSender<(String, u64, Continuity)>,
}

impl Cluster {
    /// Puts `agent` in charge of `streams` and starts the heartbeats and releases; both
    /// stop with `shutdown`.
    pub fn start(agent: Agent, streams: &Arc<Streams>, shutdown: CancellationToken) -> Arc<Self> {
        // Unbounded, but one entry per ended stream, drained as fast as the controller
        // answers (and dropped after RELEASE_RETRY_FOR).
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            agent: agent.clone(),
            streams: Arc::downgrade(streams),
            releases: tx,
        });
        streams.set_authority(cluster.clone());
        let hooks: Arc<dyn NodeHooks> = cluster.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { agent.run(hooks, token).await });
        tokio::spawn(release_loop(cluster.agent.clone(), rx, shutdown));
        cluster
    }

    /// The agent (for health).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }
}

async fn release_loop(
    agent: Agent,
    mut rx: mpsc::UnboundedReceiver<(String, u64, Continuity)>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, epoch, c) = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.cancelled() => return,
        };
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            match agent.release(&stream, epoch, to_pb(c)).await {
                Ok(()) => {
                    tracing::info!(%stream, epoch, "stream released to the controller");
                    break;
                }
                // Unreachable, or a replica that cannot take it now (no leader yet).
                Err(
                    ferrocast_agent::AgentError::Unavailable(why)
                    | ferrocast_agent::AgentError::NotServing(why),
                ) if started.elapsed() < RELEASE_RETRY_FOR => {
                    tracing::debug!(%stream, reason = %why, "release not acknowledged; retrying");
                }
                Err(error) => {
                    // A stale epoch: someone else holds it already; nothing to hand back.
                    tracing::info!(%stream, epoch, %error, "release not recorded");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// A claim call that failed: only a controller that could not decide is an outage
/// ([`ClaimError::Unreachable`], under which a held stream may go on for the credential
/// that won it): one that could not be reached, or a replica that said it cannot serve
/// now (no leader elected yet, its store down) — it decided nothing about this
/// publisher, and a leader election must not cut off the encoder that holds the stream
/// (the failover contract). Any other error the controller answered with refuses the
/// publisher.
fn claim_failed(stream: &str, e: ferrocast_agent::AgentError) -> ClaimError {
    if e.is_outage() || matches!(e, ferrocast_agent::AgentError::NotServing(_)) {
        ClaimError::Unreachable(stream.to_owned(), e.to_string())
    } else {
        tracing::warn!(stream, error = %e, "the controller answered the claim with an error");
        ClaimError::Refused(stream.to_owned(), e.to_string())
    }
}

fn to_pb(c: Continuity) -> pb::Continuity {
    pb::Continuity {
        next_msn: c.next_msn,
        discontinuity: c.discontinuity,
        timeline_end_ms: c.timeline_end_ms.max(0) as u64,
    }
}

impl Authority for Cluster {
    fn claim<'a>(
        &'a self,
        stream: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<Grant, ClaimError>> {
        Box::pin(async move {
            let claim = self
                .agent
                .claim_with(stream, &credential.query, credential.client_ip)
                .await
                .map_err(|e| claim_failed(stream, e))?;
            match claim {
                Claim::Granted {
                    epoch,
                    continuity,
                    taken_over,
                } => {
                    let segment_target = self
                        .streams
                        .upgrade()
                        .map_or(2.0, |s| s.config().packager.segment_target);
                    let continuity = continuity.map(|c| {
                        // A takeover continues past anything the dead holder may have
                        // used since its last report; a release reported its final state.
                        let (msns, ms) = if taken_over {
                            let hb = self.agent.heartbeat_interval();
                            (msn_margin(hb, segment_target), hb.as_millis() as i64)
                        } else {
                            (0, 0)
                        };
                        Continuity {
                            next_msn: c.next_msn + msns,
                            discontinuity: c.discontinuity,
                            timeline_end_ms: c.timeline_end_ms as i64 + ms,
                        }
                    });
                    tracing::info!(
                        stream,
                        epoch,
                        taken_over,
                        "the controller granted the stream"
                    );
                    Ok(Grant { epoch, continuity })
                }
                Claim::Duplicate { reason } => {
                    Err(ClaimError::Duplicate(stream.to_owned(), reason))
                }
                Claim::Unavailable { reason } => {
                    Err(ClaimError::Unavailable(stream.to_owned(), reason))
                }
                Claim::Unauthorized { reason } => {
                    Err(ClaimError::Unauthorized(stream.to_owned(), reason))
                }
            }
        })
    }

    fn released(&self, stream: &str, epoch: u64, continuity: Continuity) {
        let _ = self.releases.send((stream.to_owned(), epoch, continuity));
    }
}

impl NodeHooks for Cluster {
    fn load(&self) -> pb::LoadReport {
        let Some(streams) = self.streams.upgrade() else {
            return pb::LoadReport::default();
        };
        let mut report = pb::LoadReport::default();
        for s in streams.list().into_iter().filter(|s| s.held()) {
            let bitrate = s.snapshot().info.bandwidth;
            report.ingress_bps += bitrate;
            report.streams.push(pb::StreamLoad {
                stream: s.name().to_owned(),
                viewers: 0,
                bitrate_bps: bitrate,
                epoch: s.epoch(),
                continuity: Some(to_pb(s.continuity())),
            });
        }
        report
    }

    fn kick(&self, stream: &str) {
        let Some(streams) = self.streams.upgrade() else {
            return;
        };
        if let Some((epoch, c)) = streams.fence(stream) {
            // An operator's kick: hand the stream back so the publisher may go anywhere.
            // Fenced by a newer epoch: the release is refused, harmlessly.
            let _ = self.releases.send((stream.to_owned(), epoch, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_takeover_margin_covers_a_heartbeat_of_segments() {
        assert_eq!(msn_margin(Duration::from_millis(1667), 2.0), 3);
        assert_eq!(msn_margin(Duration::from_secs(5), 1.0), 7);
    }
}
