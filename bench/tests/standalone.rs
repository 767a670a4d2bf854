//! `view` and `publish` against a real `ferrocast standalone --demo` on free ports:
//! 20 low-latency viewers of the demo stream for 8 s while 3 publishers push the
//! demo clip for 5 s. No errors, no stalls, and the viewers stay close to live. And
//! the media clock (`--clock pts`) against the PROGRAM-DATE-TIME clock on one stream.

use bytes::Bytes;
use ferrocast_bench::playlist::MediaPlaylist;
use ferrocast_bench::{publish, view, Clock, Mode, PublishArgs, ViewArgs};
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
        clock: Clock::Pdt,
        published_at_ms: None,
        first_ts_ms: 0,
        threads: 0,
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
        clock: Clock::Pdt,
        published_at_ms: None,
        first_ts_ms: 0,
        threads: 2,
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

/// `--clock pts` on Ferrocast's fMP4: one stream published by `bench publish`, watched
/// with both clocks at once, LL and classic. Ferrocast's PROGRAM-DATE-TIME is the wall
/// clock at the stream's first sample, so dated from it the two clocks must agree to
/// a few ms; and the publisher's own record of its first frame must be just before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_clock_agrees_with_program_date_time() {
    let node = tokio::task::spawn_blocking(|| Arc::new(Node::start("standalone", &[])))
        .await
        .expect("starting ferrocast standalone");
    let publisher = tokio::spawn(publish(
        PublishArgs {
            url: format!("rtmp://{}/live", node.rtmp),
            streams: 1,
            key_prefix: "clock".into(),
            file: None,
            duration: 14.0,
            json: false,
        },
        Bytes::from_static(CLIP),
    ));
    // The wall clock of the stream's first sample: the PDT of media sequence 0.
    let anchor = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            let text = node.wait_live("clock-0", Duration::from_secs(20));
            let pl = MediaPlaylist::parse(&text).expect("playlist");
            assert_eq!(pl.media_sequence, 0, "{text}");
            let first = pl.parts().next().and_then(|p| p.start_ms);
            first.expect("a dated part")
        })
        .await
        .expect("stream went live")
    };
    let args = |mode, clock| ViewArgs {
        url: node.playlist_url("clock-0"),
        viewers: 5,
        mode,
        duration: 7.0,
        ramp: 0.5,
        json: false,
        http2: false,
        clock,
        published_at_ms: Some(anchor),
        first_ts_ms: 0,
        threads: 1,
    };
    let (ll_pdt, ll_pts, cl_pdt, cl_pts) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            view(args(Mode::Ll, Clock::Pdt)),
            view(args(Mode::Ll, Clock::Pts)),
            view(args(Mode::Classic, Clock::Pdt)),
            view(args(Mode::Classic, Clock::Pts)),
        )
    })
    .await
    .expect("bench runs stop themselves at --duration");
    for (pdt, pts) in [(ll_pdt, ll_pts), (cl_pdt, cl_pts)] {
        let (pdt, pts) = (pdt.expect("view"), pts.expect("view"));
        assert_eq!((pdt.errors, pts.errors), (0, 0), "{pdt:#?} {pts:#?}");
        let (a, b) = (
            pdt.latency_behind_live.expect("pdt samples"),
            pts.latency_behind_live.expect("pts samples"),
        );
        // Same stream, same moments (up to the scheduling of two viewer sets).
        assert!(
            b.count > 0 && (a.p50_ms - b.p50_ms).abs() < 100.0,
            "{a:?} vs {b:?}"
        );
        assert!(b.p50_ms < 4000.0, "{b:?}");
    }
    let p = tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .expect("publisher stops at --duration")
        .expect("publisher task")
        .expect("publish");
    let t0 = p.first_frame_unix_ms.expect("first frame recorded");
    // The origin dates the first sample when it arrives: after the publisher sent it.
    assert!(
        (0..250).contains(&(anchor - t0)),
        "anchor {anchor}, first frame {t0}"
    );
}
