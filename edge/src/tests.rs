//! In-process edge tests against the in-memory upstream ([`ferrocast_serve::testing`]):
//! coalescing, negative caching, blocking reload, idle unsubscribe, cache bounds,
//! playlist parity with the origin's renderer, and drain over a real socket.

use crate::cache::ObjectCache;
use crate::http::{respond, HttpState};
use crate::metrics::EdgeMetrics;
use crate::upstream::UpstreamError;
use crate::{Edge, EdgeConfig};
use bytes::Bytes;
use ferrocast_media::hls::{self, names::Object, RenderOptions};
use ferrocast_runtime::metrics::Metrics;
use ferrocast_serve::testing::{part_bytes, playlist, MemoryUpstream};
use http::{Method, StatusCode, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

/// The edges under test have no controller, so no playback rules: every stream open
/// (an edge with a controller refuses every stream until its first access snapshot, see
/// `access::tests`).
fn edge_state(cfg: &EdgeConfig, up: &Arc<MemoryUpstream>) -> Arc<HttpState> {
    let cfg = EdgeConfig {
        playback_rules: crate::access::RulesSource::None,
        ..cfg.clone()
    };
    cfg.build_state(Arc::new(Metrics::new()), up.clone())
}

async fn get(state: &HttpState, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let uri: Uri = path.parse().expect("uri");
    let resp = tokio::time::timeout(T, respond(state, &Method::GET, &uri))
        .await
        .expect("response in time");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("infallible").to_bytes();
    (parts.status, parts.headers, body)
}

/// A stream with segments 0..complete of 4 parts, `pending` parts of the next one,
/// every init and part stored and pushed.
fn live_stream(up: &MemoryUpstream, name: &str, complete: u64, pending: u32) {
    up.add_stream(name);
    up.push_object(name, Object::Init(0), Bytes::from_static(b"init;"), 0);
    for msn in 0..complete {
        for i in 0..4 {
            up.push_object(name, Object::Part(msn, i), part_bytes(msn, i), 0);
        }
    }
    for i in 0..pending {
        up.push_object(name, Object::Part(complete, i), part_bytes(complete, i), 0);
    }
    up.push_playlist(name, playlist(0, complete, 4, pending as usize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_viewers_of_the_hinted_part_cost_no_fetch_and_one_subscription() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let state = edge_state(&EdgeConfig::default(), &up);
    // The preload hint names part-2.1.m4s; 500 viewers ask for it before it exists.
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { get(&state, "/live/s/part-2.1.m4s").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.push_object("s", Object::Part(2, 1), part_bytes(2, 1), 0);
    up.push_playlist("s", playlist(0, 2, 4, 2));
    for t in tasks {
        let (status, headers, body) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, part_bytes(2, 1));
        assert_eq!(headers["content-type"], "video/mp4");
        assert_eq!(headers["cache-control"], "public, max-age=86400, immutable");
    }
    assert_eq!(up.subscribe_calls("s"), 1, "one subscription per stream");
    assert_eq!(up.fetch_calls(), 0, "the part arrived by push");
    let metrics = state.registry.render();
    assert!(metrics.contains("ferrocast_edge_cache_lookups_total{result=\"hit\"} 500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_misses_of_one_object_cause_one_fetch() {
    let up = MemoryUpstream::new();
    up.add_stream("s");
    up.push_playlist("s", playlist(0, 3, 4, 0));
    let state = edge_state(&EdgeConfig::default(), &up);
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    // Listed but never pushed (as if evicted): only fetchable.
    up.store("s", Object::Part(1, 2), part_bytes(1, 2));
    up.set_fetch_delay(Duration::from_millis(200));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { get(&state, "/live/s/part-1.2.m4s").await })
        })
        .collect();
    for t in tasks {
        let (status, _, body) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, part_bytes(1, 2));
    }
    assert_eq!(up.fetch_calls(), 1);
    // A missing object is a 404, not cached: asking again asks upstream again.
    up.set_fetch_delay(Duration::ZERO);
    let (status, _, _) = get(&state, "/live/s/part-1.3.m4s").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&state, "/live/s/part-1.3.m4s").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(up.fetch_calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_their_cached_parts_back_to_back_or_one_fetch() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 3, 1);
    let state = edge_state(&EdgeConfig::default(), &up);
    let (status, headers, body) = get(&state, "/live/s/seg-1.m4s").await;
    assert_eq!(status, StatusCode::OK);
    let expected: Vec<u8> = (0..4).flat_map(|i| part_bytes(1, i).to_vec()).collect();
    assert_eq!(&body[..], &expected[..]);
    assert_eq!(headers["content-length"], expected.len().to_string());
    assert_eq!(up.fetch_calls(), 0);
    let (status, _, body) = get(&state, "/live/s/init-0.mp4").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"init;"[..]));
    assert_eq!(up.fetch_calls(), 0);
    // A segment that slid out of the window is fetched upstream (once).
    up.store("s", Object::Segment(0), Bytes::from_static(b"old segment"));
    up.push_playlist("s", playlist(1, 2, 4, 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let (status, _, body) = get(&state, "/live/s/seg-0.m4s").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"old segment"[..]));
    }
    assert_eq!(up.fetch_calls(), 1);
    // Far beyond the playlist: 404 without asking.
    let (status, _, _) = get(&state, "/live/s/seg-9.m4s").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&state, "/live/s/init-5.mp4").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(up.fetch_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_unknown_streams_asks_upstream_once_per_key_per_ttl() {
    let up = MemoryUpstream::new();
    up.set_subscribe_delay(Duration::from_millis(20));
    let cfg = EdgeConfig {
        negative_ttl: Duration::from_millis(500),
        ..Default::default()
    };
    let state = edge_state(&cfg, &up);
    let burst = |state: &Arc<HttpState>| {
        (0..1000)
            .map(|n| {
                let state = state.clone();
                tokio::spawn(async move {
                    get(&state, &format!("/live/nope{}/index.m3u8", n % 10)).await
                })
            })
            .collect::<Vec<_>>()
    };
    for t in burst(&state) {
        let (status, _, _) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for t in burst(&state) {
        let (status, _, _) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for k in 0..10 {
        assert_eq!(up.subscribe_calls(&format!("nope{k}")), 1, "key nope{k}");
    }
    // After the TTL the upstream is asked again, once per key.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for t in burst(&state) {
        let (status, _, _) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(up.total_subscribe_calls(), 20);
    // Keys that cannot exist never reach the upstream.
    let (status, _, _) = get(&state, "/live/bad.key/index.m3u8").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(up.total_subscribe_calls(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_is_asked_again_as_soon_as_the_assignments_change() {
    let up = MemoryUpstream::with_changes();
    let cfg = EdgeConfig {
        negative_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let state = edge_state(&cfg, &up);
    for _ in 0..3 {
        let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(up.subscribe_calls("s"), 1, "negatively cached");
    // The stream is assigned a moment later: the next viewer gets it, not a 404 for the
    // rest of the TTL.
    live_stream(&up, "s", 2, 1);
    up.assignments_changed();
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.subscribe_calls("s"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_is_answered_when_the_playlist_lands() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let state = edge_state(&EdgeConfig::default(), &up);
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    let s2 = state.clone();
    let waiter =
        tokio::spawn(async move { get(&s2, "/live/s/index.m3u8?_HLS_msn=2&_HLS_part=1").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "held until part 2.1 is listed");
    let next = playlist(0, 2, 4, 2);
    up.push_object("s", Object::Part(2, 1), part_bytes(2, 1), 0);
    let landed = std::time::Instant::now();
    up.push_playlist("s", next.clone());
    let (status, headers, body) = tokio::time::timeout(T, waiter).await.unwrap().unwrap();
    assert!(landed.elapsed() < Duration::from_millis(200));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let expected = hls::render_media(&next.playlist, &RenderOptions::default());
    assert_eq!(body, Bytes::from(expected));
    // Too far ahead: 400 at once, as on the origin.
    let (status, _, _) = get(&state, "/live/s/index.m3u8?_HLS_msn=9").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&state, "/live/s/index.m3u8?_HLS_msn=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_playlists_are_byte_identical_to_render_media() {
    let up = MemoryUpstream::new();
    up.add_stream("s");
    // Long enough that a delta update skips segments.
    let p = playlist(100, 20, 4, 2);
    up.push_playlist("s", p.clone());
    let state = edge_state(&EdgeConfig::default(), &up);
    for (q, skip) in [
        ("", false),
        ("?_HLS_skip=YES", true),
        ("?_HLS_skip=v2", true),
    ] {
        let (status, _, body) = get(&state, &format!("/live/s/index.m3u8{q}")).await;
        assert_eq!(status, StatusCode::OK);
        let expected = hls::render_media(&p.playlist, &RenderOptions { skip });
        assert_eq!(body, Bytes::from(expected), "query {q:?}");
    }
    assert!(p.playlist.skip_count() > 0);
    let (status, _, body) = get(&state, "/live/s/master.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    let variant = hls::Variant {
        uri: "index.m3u8".into(),
        bandwidth: p.bandwidth,
        codecs: p.codecs.clone(),
        resolution: p.resolution,
        frame_rate: p.frame_rate,
    };
    assert_eq!(body, Bytes::from(hls::render_multivariant(&[variant])));
    let (status, _, body) = get(&state, "/api/streams").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["streams"][0]["name"], "s");
    assert_eq!(v["streams"][0]["media_sequence"], 100);
    assert_eq!(v["streams"][0]["live"], true);
}

#[tokio::test(start_paused = true)]
async fn idle_streams_are_unsubscribed_and_come_back_on_demand() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let cfg = EdgeConfig::default(); // 30 s idle
    let state = edge_state(&cfg, &up);
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.active_subscriptions("s"), 1);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (status, _, _) = get(&state, "/live/s/part-1.0.m4s").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(up.active_subscriptions("s"), 1, "a viewer came 25 s ago");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(up.active_subscriptions("s"), 0, "idle for 32 s");
    assert!(state.streams.list().is_empty());
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.subscribe_calls("s"), 2);
    assert_eq!(up.active_subscriptions("s"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_subscription_is_renewed_and_a_gone_stream_is_dropped() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let state = edge_state(&EdgeConfig::default(), &up);
    assert_eq!(get(&state, "/live/s/index.m3u8").await.0, StatusCode::OK);
    up.drop_subscriptions("s");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(get(&state, "/live/s/index.m3u8").await.0, StatusCode::OK);
    assert_eq!(up.subscribe_calls("s"), 2);
    up.remove_stream("s");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(state.streams.list().is_empty());
    assert_eq!(
        get(&state, "/live/s/index.m3u8").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_cache_stays_within_its_capacity() {
    let cap = 1024 * 1024;
    let cache = ObjectCache::new(cap, Duration::from_secs(60), Arc::new(EdgeMetrics::new()));
    let s: Arc<str> = Arc::from("s");
    for i in 0..100 {
        cache
            .insert(&s, Object::Part(i, 0), Bytes::from(vec![0u8; 64 * 1024]))
            .await;
    }
    cache.run_pending_tasks().await;
    assert!(cache.weighted_size() <= cap, "{}", cache.weighted_size());
    assert!(cache.weighted_size() > cap / 2);
    // Recency wins on a live edge: the newest part is held.
    assert!(cache.peek(&s, Object::Part(99, 0)).await.is_some());
    assert!(cache.peek(&s, Object::Part(0, 0)).await.is_none());
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_turns_readiness_off_while_in_flight_requests_finish() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let cfg = EdgeConfig {
        http_listen: "127.0.0.1:0".parse().unwrap(),
        drain_delay: Duration::from_millis(500),
        playback_rules: crate::access::RulesSource::None,
        ..Default::default()
    };
    let edge = Edge::bind(cfg, Arc::new(Metrics::new()), up.clone())
        .await
        .expect("bind");
    let addr = edge.http_addr();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(edge.run(shutdown.clone()));
    let ready = tokio::time::timeout(T, raw_get(addr, "/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.0, 200);
    let blocking = tokio::spawn(raw_get(addr, "/live/s/index.m3u8?_HLS_msn=2&_HLS_part=1"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = tokio::time::timeout(T, raw_get(addr, "/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.0, 503, "not ready once draining");
    assert!(!blocking.is_finished());
    up.push_object("s", Object::Part(2, 1), part_bytes(2, 1), 0);
    up.push_playlist("s", playlist(0, 2, 4, 2));
    let (status, body) = tokio::time::timeout(T, blocking).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("part-2.1.m4s"));
    tokio::time::timeout(T, run).await.unwrap().unwrap();
    assert_eq!(
        up.active_subscriptions("s"),
        0,
        "subscriptions end after the drain"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_503_and_is_not_cached() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    up.set_subscribe_error(Some(UpstreamError::Unavailable("down".into())));
    let state = edge_state(&EdgeConfig::default(), &up);
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    up.set_subscribe_error(None);
    let (status, _, _) = get(&state, "/live/s/index.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.subscribe_calls("s"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_admin_and_metrics_are_served() {
    let up = MemoryUpstream::new();
    live_stream(&up, "s", 2, 1);
    let state = edge_state(&EdgeConfig::default(), &up);
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/watch/s", "text/html; charset=utf-8"),
        ("/assets/hls.min.js", "text/javascript; charset=utf-8"),
        ("/assets/hls.js.LICENSE", "text/plain; charset=utf-8"),
        ("/healthz", "text/plain; charset=utf-8"),
    ] {
        let (status, headers, body) = get(&state, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], ty, "{path}");
        assert!(!body.is_empty());
    }
    assert_eq!(get(&state, "/watch/a.b").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&state, "/live/s/nothing").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&state, "/live/s/index.m3u8").await.0, StatusCode::OK);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    up.push_object("s", Object::Part(2, 1), part_bytes(2, 1), now_ms - 3);
    let uri: Uri = "/live/s/index.m3u8".parse().unwrap();
    let resp = respond(&state, &Method::OPTIONS, &uri).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["access-control-allow-methods"],
        "GET, HEAD, OPTIONS"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Metrics are the admin port's, not the viewers'.
    assert_eq!(get(&state, "/metrics").await.0, StatusCode::NOT_FOUND);
    let resp = crate::http::respond_admin(&state, &Method::GET, "/metrics", None);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    for needle in [
        "ferrocast_edge_http_requests_total{kind=\"playlist\",status=\"200\"} 1",
        "ferrocast_edge_upstream_subscribes_total{result=\"ok\"} 1",
        "ferrocast_edge_objects_received_total",
        "ferrocast_edge_propagation_delay_seconds_count 1",
        "ferrocast_edge_cache_size_bytes",
        "ferrocast_edge_streams 1",
        "ferrocast_edge_viewers{stream=\"s\"} 1",
        "ferrocast_edge_http_response_bytes_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn config_is_validated_by_field() {
    assert!(EdgeConfig::default().validate().is_ok());
    let bad = |cfg: EdgeConfig| match cfg.validate() {
        Err(crate::ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected invalid, got {other:?}"),
    };
    let d = EdgeConfig::default;
    assert_eq!(
        bad(EdgeConfig {
            cache_capacity: 10,
            ..d()
        }),
        "cache-capacity"
    );
    assert_eq!(
        bad(EdgeConfig {
            negative_ttl: Duration::ZERO,
            ..d()
        }),
        "negative-ttl"
    );
    assert_eq!(
        bad(EdgeConfig {
            idle_unsubscribe: Duration::from_millis(10),
            ..d()
        }),
        "idle-unsubscribe"
    );
    assert_eq!(
        bad(EdgeConfig {
            max_streams: 0,
            ..d()
        }),
        "max-streams"
    );
}
