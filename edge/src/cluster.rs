//! The edge in a cluster: which origin holds each stream comes from the controller's
//! assignments ([`ControllerOrigins`], an [`OriginResolver`]), and the edge's load
//! (viewers per stream, egress) goes to the controller with every heartbeat
//! ([`EdgeHooks`]) for viewer placement.

use crate::upstream::quic::{OriginChoice, OriginResolver};
use ferrocast_agent::{pb, AssignmentTable, NodeHooks};
use ferrocast_serve::http::HttpState;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Origins as the controller assigns them: a live assignment names the origin's relay
/// address and epoch; an orphaned (holder's lease expired) or released one names none.
#[derive(Debug, Clone)]
pub struct ControllerOrigins(pub Arc<AssignmentTable>);

impl OriginResolver for ControllerOrigins {
    fn resolve(&self, stream: &str) -> Option<OriginChoice> {
        let a = self.0.get(stream)?;
        if a.state() != pb::AssignmentState::Live {
            return None;
        }
        let addr: SocketAddr = a.origin_relay.parse().ok()?;
        Some(OriginChoice {
            addr,
            epoch: a.epoch,
        })
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.0.changes())
    }

    /// Only once a watch delivered the assignments (and while it is open) is a stream
    /// without one known to be absent.
    fn ready(&self) -> bool {
        self.0.is_live()
    }

    fn streams(&self) -> Vec<String> {
        self.0.live_streams()
    }
}

/// The edge's load for the controller.
#[derive(Debug)]
pub struct EdgeHooks {
    state: Weak<HttpState>,
    /// Response bytes and when, at the previous report (for the egress rate).
    last: Mutex<(u64, Instant)>,
}

impl EdgeHooks {
    /// Reports the load of the edge serving from `state`.
    pub fn new(state: &Arc<HttpState>) -> Arc<Self> {
        Arc::new(EdgeHooks {
            state: Arc::downgrade(state),
            last: Mutex::new((state.metrics.http_response_bytes.get(), Instant::now())),
        })
    }
}

impl NodeHooks for EdgeHooks {
    fn load(&self) -> pb::LoadReport {
        let Some(state) = self.state.upgrade() else {
            return pb::LoadReport::default();
        };
        let mut report = pb::LoadReport::default();
        for st in state.streams.list() {
            let snap = st.snapshot();
            let window = snap
                .playlist
                .as_ref()
                .map_or(1, |p| u64::from(p.playlist.target_duration));
            let viewers =
                u32::try_from(st.viewers().estimate(st.now_s(), window).max(0)).unwrap_or(u32::MAX);
            let bitrate = snap.playlist.as_ref().map_or(0, |p| p.bandwidth);
            report.viewers = report.viewers.saturating_add(viewers);
            report.streams.push(pb::StreamLoad {
                stream: st.name().to_string(),
                viewers,
                bitrate_bps: bitrate,
                ..Default::default()
            });
        }
        let bytes = state.metrics.http_response_bytes.get();
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let secs = now.duration_since(last.1).as_secs_f64();
        if secs > 0.0 {
            report.egress_bps = (bytes.saturating_sub(last.0) as f64 * 8.0 / secs) as u64;
        }
        *last = (bytes, now);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::assignment_event::Kind;

    #[test]
    fn only_live_assignments_name_an_origin() {
        let table = Arc::new(AssignmentTable::default());
        let r = ControllerOrigins(table.clone());
        let mut changes = r.changes().unwrap();
        assert!(!r.ready(), "nothing is known before the first snapshot");
        let a = |stream: &str, relay: &str, epoch, state: pb::AssignmentState| pb::Assignment {
            stream: stream.into(),
            origin_id: "o1".into(),
            origin_relay: relay.into(),
            epoch,
            continuity: None,
            state: state.into(),
        };
        table.apply(pb::AssignmentEvent {
            kind: Some(Kind::Snapshot(pb::AssignmentSnapshot {
                assignments: vec![
                    a("live", "127.0.0.1:4433", 2, pb::AssignmentState::Live),
                    a("orphan", "127.0.0.1:4433", 1, pb::AssignmentState::Orphaned),
                    a("bad", "not an address", 1, pb::AssignmentState::Live),
                ],
            })),
        });
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(
            r.resolve("live"),
            Some(OriginChoice {
                addr: "127.0.0.1:4433".parse().unwrap(),
                epoch: 2
            })
        );
        assert_eq!(r.resolve("orphan"), None);
        assert_eq!(r.resolve("bad"), None);
        assert_eq!(r.resolve("unknown"), None);
        assert!(r.ready(), "a snapshot makes the table authoritative");
        table.apply(pb::AssignmentEvent {
            kind: Some(Kind::Upsert(a(
                "orphan",
                "127.0.0.2:4433",
                2,
                pb::AssignmentState::Live,
            ))),
        });
        assert!(changes.has_changed().unwrap());
        assert_eq!(r.resolve("orphan").unwrap().epoch, 2);
    }
}
