//! The edge in a cluster: its load (viewers per stream, egress) goes to the controller
//! with every heartbeat ([`EdgeHooks`]) for viewer placement. Which origin holds each
//! stream is the agent's answer (`ferrocast_agent::origins::ControllerOrigins`).

use ferrocast_agent::{pb, NodeHooks};
use ferrocast_serve::http::HttpState;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

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
