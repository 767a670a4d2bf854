//! Playback access at the edge: the rule itself lives once, in
//! [`ferrocast_agent::access`], for every node that serves viewers (origins check the
//! same tokens on their HTTP port). The edge feeds it the controller's `WatchAccess`
//! snapshots (see the `ferrocast` binary), is not ready until the first one arrives
//! (see [`crate::Edge::run`]), and passes every viewer request through [`gate`] before
//! routing.

use ferrocast_runtime::http::Response;
use http::Uri;
use std::borrow::Cow;

pub use ferrocast_agent::access::{forbidden, PlaybackAccess, RulesSource};

/// The edge's playback rules (closed until the controller's first snapshot, open when
/// the edge has no controller).
pub type EdgeAccess = PlaybackAccess;

/// Checks a viewer request: `Ok` with the path to route (any `/t/{token}` prefix
/// removed), or the 403 (or 404) to answer.
pub fn gate<'a>(access: &EdgeAccess, uri: &'a Uri) -> Result<Cow<'a, str>, Box<Response>> {
    access.gate(uri).map(|a| a.path)
}

#[cfg(test)]
mod tests {
    use crate::http::respond;
    use crate::{Edge, EdgeConfig};
    use bytes::Bytes;
    use ferrocast_agent::pb;
    use ferrocast_media::hls::names::Object;
    use ferrocast_runtime::metrics::Metrics;
    use ferrocast_serve::testing::{part_bytes, playlist, MemoryUpstream};
    use http::{Method, StatusCode, Uri};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    const T: Duration = Duration::from_secs(20);

    async fn status(state: &crate::http::HttpState, path: &str) -> StatusCode {
        let uri: Uri = path.parse().expect("uri");
        tokio::time::timeout(T, respond(state, &Method::GET, &uri))
            .await
            .expect("answered in time")
            .status()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edge_with_a_controller_is_not_ready_and_refuses_every_stream_until_its_first_snapshot(
    ) {
        let up = MemoryUpstream::new();
        up.add_stream("s");
        up.push_object("s", Object::Init(0), Bytes::from_static(b"init;"), 0);
        for i in 0..4 {
            up.push_object("s", Object::Part(0, i), part_bytes(0, i), 0);
        }
        up.push_playlist("s", playlist(0, 1, 4, 0));
        let cfg = EdgeConfig {
            http_listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(cfg.playback_rules, super::RulesSource::Controller);
        let registry = Arc::new(Metrics::new());
        let edge = Edge::bind(cfg, registry.clone(), up.clone())
            .await
            .expect("bind");
        let state = edge.state();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(edge.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            status(&state, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A stream with no policy is still unknown: closed, and nothing asked upstream.
        assert_eq!(
            status(&state, "/live/s/index.m3u8").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(up.subscribe_calls("s"), 0);
        assert!(registry
            .render()
            .contains("ferrocast_playback_refused_total{role=\"edge\",reason=\"not_loaded\"} 1"));

        state.access.apply(pb::AccessSnapshot {
            revision: 3,
            ..Default::default()
        });
        let deadline = tokio::time::Instant::now() + T;
        while status(&state, "/readyz").await != StatusCode::OK {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(&state, "/live/s/index.m3u8").await, StatusCode::OK);
        let metrics = registry.render();
        assert!(metrics.contains("ferrocast_playback_rules_loaded{role=\"edge\"} 1"));
        assert!(metrics.contains("ferrocast_playback_rules_revision{role=\"edge\"} 3"));
        shutdown.cancel();
        tokio::time::timeout(T, run).await.unwrap().unwrap();
    }
}
