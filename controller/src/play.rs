//! `GET /play/{stream}`: where a viewer goes, as pure functions an edge can reuse
//! ([`client_region`], [`decide`], [`play_location`]) and the HTTP answer
//! ([`respond`]): `302 Found` to `<edge>/live/{stream}/index.m3u8` keeping the request's
//! query string, `503` with `Retry-After` when no edge can take the viewer, `400` for a
//! key that cannot be a stream.

use crate::region::RegionTable;
use crate::scheduler::{place_viewer, Placement, PlacementError, PlacementPolicy, Snapshot};
use ferrocast_runtime::body::ChunksBody;
use ferrocast_runtime::http::Response;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use std::net::IpAddr;

/// Seconds a viewer refused for lack of an edge waits before trying again.
pub const RETRY_AFTER_SECS: u32 = 2;

/// The viewer's region: the trusted header set by the load balancer (when configured and
/// present), else the CIDR table's region of the client's address.
pub fn client_region<'a>(
    headers: &'a HeaderMap,
    trusted_header: Option<&str>,
    table: &'a RegionTable,
    peer: Option<IpAddr>,
) -> Option<&'a str> {
    let from_header = trusted_header
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    from_header.or_else(|| peer.and_then(|ip| table.lookup(ip)))
}

/// The URL a viewer of `stream` is sent to on the edge at `edge_base` (its `http_url`),
/// with the request's `query` (without `?`) kept.
pub fn play_location(edge_base: &str, stream: &str, query: Option<&str>) -> String {
    let base = edge_base.trim_end_matches('/');
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{base}/live/{stream}/index.m3u8?{q}"),
        None => format!("{base}/live/{stream}/index.m3u8"),
    }
}

/// A viewer's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayDecision {
    /// Where the edge was chosen and why.
    pub placement: Placement,
    /// The redirect target.
    pub location: String,
}

/// Why a viewer could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlayError {
    /// The key cannot be a stream.
    #[error("invalid stream key")]
    BadKey,
    /// No edge can take the viewer.
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// Places a viewer of `stream` from `region` over `snapshot`.
pub fn decide(
    snapshot: &Snapshot,
    stream: &str,
    region: Option<&str>,
    policy: &PlacementPolicy,
    query: Option<&str>,
) -> Result<PlayDecision, PlayError> {
    if !ferrocast_names::valid_stream_key(stream) {
        return Err(PlayError::BadKey);
    }
    let placement = place_viewer(snapshot, stream, region, policy)?;
    let base = snapshot
        .nodes
        .get(&placement.edge)
        .map(|s| s.node.http_url.as_str())
        .unwrap_or("");
    Ok(PlayDecision {
        location: play_location(base, stream, query),
        placement,
    })
}

fn answer(status: StatusCode) -> http::response::Builder {
    http::Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
}

/// The HTTP answer to a `/play` decision.
pub fn respond(decision: Result<PlayDecision, PlayError>) -> Response {
    let text = |status: StatusCode, msg: String| {
        answer(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(ChunksBody::from(format!("{msg}\n")))
    };
    let r = match decision {
        Ok(d) => match HeaderValue::from_str(&d.location) {
            Ok(loc) => answer(StatusCode::FOUND)
                .header(header::LOCATION, loc)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(ChunksBody::from(format!("{}\n", d.location))),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("edge {} has an unusable URL", d.placement.edge),
            ),
        },
        Err(PlayError::BadKey) => text(
            StatusCode::BAD_REQUEST,
            "invalid stream key: 1 to 64 of A-Z a-z 0-9 _ -".into(),
        ),
        Err(PlayError::Placement(e)) => {
            let why = match e {
                PlacementError::NoEdge => "no live edge: try again shortly",
                PlacementError::Full => "every edge is at capacity: try again shortly",
            };
            answer(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, RETRY_AFTER_SECS)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(ChunksBody::from(format!("{why}\n")))
        }
    };
    r.unwrap_or_else(|_| {
        let mut r = http::Response::new(ChunksBody::from("internal error\n"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, Load, Node, Role, StreamLoad};
    use crate::region::RegionCidr;
    use crate::scheduler::{NodeStatus, PlacementReason};
    use std::time::Instant;

    fn edge(id: &str, region: &str, viewers: u32, streams: &[&str]) -> NodeStatus {
        NodeStatus {
            node: Node {
                id: id.into(),
                role: Role::Edge,
                region: region.into(),
                relay_addr: String::new(),
                http_url: format!("http://{id}.example:8080/"),
                rtmp_addr: String::new(),
                capacity: Capacity {
                    max_viewers: 10_000,
                    ..Capacity::default()
                },
            },
            draining: false,
            load: Load {
                viewers,
                streams: streams
                    .iter()
                    .map(|s| {
                        let l = StreamLoad {
                            viewers: 1,
                            bitrate_bps: 0,
                        };
                        (s.to_string(), l)
                    })
                    .collect(),
                ..Load::default()
            },
        }
    }

    fn snapshot(nodes: impl IntoIterator<Item = NodeStatus>) -> Snapshot {
        Snapshot {
            nodes: nodes.into_iter().map(|n| (n.node.id.clone(), n)).collect(),
        }
    }

    #[test]
    fn location_keeps_the_query() {
        assert_eq!(
            play_location("http://e1:8080/", "s", None),
            "http://e1:8080/live/s/index.m3u8"
        );
        assert_eq!(
            play_location("http://e1:8080", "s", Some("token=abc&x=1")),
            "http://e1:8080/live/s/index.m3u8?token=abc&x=1"
        );
        assert_eq!(
            play_location("http://e1", "s", Some("")),
            "http://e1/live/s/index.m3u8"
        );
    }

    #[test]
    fn region_from_the_trusted_header_then_the_cidr_table() {
        let table = RegionTable::new(["10.0.0.0/8=eu".parse::<RegionCidr>().unwrap()]);
        let mut h = HeaderMap::new();
        let peer = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            client_region(&h, Some("x-client-region"), &table, peer),
            Some("eu")
        );
        h.insert("x-client-region", HeaderValue::from_static("us"));
        assert_eq!(
            client_region(&h, Some("x-client-region"), &table, peer),
            Some("us")
        );
        // An untrusted header is ignored.
        assert_eq!(client_region(&h, None, &table, peer), Some("eu"));
        assert_eq!(client_region(&h, None, &table, None), None);
    }

    #[test]
    fn answers() {
        let snap = snapshot([edge("e1", "eu", 0, &[])]);
        let p = PlacementPolicy::default();
        let r = respond(decide(&snap, "s", Some("eu"), &p, Some("t=1")));
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(
            r.headers()[header::LOCATION],
            "http://e1.example:8080/live/s/index.m3u8?t=1"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let r = respond(decide(&snap, "../x", None, &p, None));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = respond(decide(&Snapshot::default(), "s", None, &p, None));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    /// `/play` decisions per second on one core: 50 edges in 5 regions, each serving 1000
    /// of 5000 streams. Run with
    /// `cargo test -p ferrocast-controller --lib play::tests::decisions_per_second -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn decisions_per_second() {
        let streams: Vec<String> = (0..5000).map(|i| format!("stream{i}")).collect();
        let snap = snapshot((0..50).map(|e| {
            let served: Vec<&str> = (0..1000)
                .map(|k| streams[(e * 100 + k) % streams.len()].as_str())
                .collect();
            edge(
                &format!("edge{e:02}"),
                &format!("r{}", e % 5),
                (e * 37 % 5000) as u32,
                &served,
            )
        }));
        let p = PlacementPolicy::default();
        let n = 200_000;
        let start = Instant::now();
        let mut found = 0usize;
        for i in 0..n {
            let region = format!("r{}", i % 5);
            let d = decide(&snap, &streams[i % streams.len()], Some(&region), &p, None).unwrap();
            found += usize::from(d.placement.reason == PlacementReason::AlreadyServing);
        }
        let took = start.elapsed();
        let rate = n as f64 / took.as_secs_f64();
        println!("{n} decisions in {took:?}: {rate:.0}/s ({found} to an edge already serving)");
        assert!(found > 0);
    }
}
