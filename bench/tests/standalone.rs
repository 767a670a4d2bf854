//! `view` and `publish` against a real `ferrocast standalone --demo` on free ports:
//! 20 low-latency viewers of the demo stream for 8 s while 3 publishers push the
//! demo clip for 5 s. No errors, no stalls, and the viewers stay close to live.

use bytes::Bytes;
use ferrocast_bench::{publish, view, Mode, PublishArgs, ViewArgs};
use ferrocast_tests::Node;
use std::sync::Arc;
use std::time::Duration;

const CLIP: &[u8] = include_bytes!("../../cli/assets/demo.flv");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_viewers_and_publishers_against_standalone() {
    let node = tokio::task::spawn_blocking(|| {
        let node = Node::start("standalone", &["--demo"]);
        node.wait_live("demo", Duration::from_secs(20));
        Arc::new(node)
    })
    .await
    .expect("starting ferrocast standalone --demo");

    let viewers = ViewArgs {
        url: node.playlist_url("demo"),
        viewers: 20,
        mode: Mode::Ll,
        duration: 8.0,
        ramp: 1.0,
        json: false,
        http2: false,
    };
    let publishers = PublishArgs {
        url: format!("rtmp://{}/live", node.rtmp),
        streams: 3,
        key_prefix: "bench".into(),
        file: None,
        duration: 5.0,
        json: false,
    };
    // The published streams must go live while they publish.
    let watcher = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..3 {
                node.wait_live(&format!("bench-{i}"), Duration::from_secs(5));
            }
        })
    };
    let (v, p) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(view(viewers), publish(publishers, Bytes::from_static(CLIP)))
    })
    .await
    .expect("bench runs stop themselves at --duration");
    let (v, p) = (v.expect("view"), p.expect("publish"));
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("watcher finished")
        .expect("published streams went live");

    assert_eq!((p.connected, p.failed), (3, 0), "{p:#?}");
    // The demo clip is a few hundred kbit/s; anything near it means real-time pacing.
    assert!(p.bytes_sent > 100_000, "{p:#?}");

    assert_eq!(v.errors, 0, "{v:#?}");
    assert_eq!(v.viewers_with_media, 20, "{v:#?}");
    assert_eq!(v.stalls, 0, "{v:#?}");
    assert_eq!(v.rejoins, 0, "{v:#?}");
    let parts = &v.by_kind["part"];
    assert!(parts.requests > 0 && parts.bytes > 0, "{v:#?}");
    let hints = &v.by_kind["preload_hint"];
    assert!(hints.requests > 20 * 8, "{v:#?}");
    let behind = v.latency_behind_live.expect("latency samples");
    assert!(behind.p50_ms < 2000.0, "{v:#?}");
    assert!(v.request_latency.is_some());
}

/// The same viewers over HTTP/2: one h2c connection per viewer carries its blocking
/// reloads, parts and preload hints at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_viewers_over_http2_against_standalone() {
    let node = tokio::task::spawn_blocking(|| {
        let node = Node::start("standalone", &["--demo"]);
        node.wait_live("demo", Duration::from_secs(20));
        node
    })
    .await
    .expect("starting ferrocast standalone --demo");
    let viewers = ViewArgs {
        url: node.playlist_url("demo"),
        viewers: 20,
        mode: Mode::Ll,
        duration: 6.0,
        ramp: 1.0,
        json: false,
        http2: true,
    };
    let v = tokio::time::timeout(Duration::from_secs(30), view(viewers))
        .await
        .expect("bench runs stop themselves at --duration")
        .expect("view");
    assert_eq!(v.errors, 0, "{v:#?}");
    assert_eq!(v.viewers_with_media, 20, "{v:#?}");
    assert_eq!(v.stalls, 0, "{v:#?}");
    let hints = &v.by_kind["preload_hint"];
    assert!(hints.requests > 20 * 6, "{v:#?}");
    let behind = v.latency_behind_live.expect("latency samples");
    assert!(behind.p50_ms < 2000.0, "{v:#?}");
}
