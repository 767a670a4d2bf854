//! The origin's streams through the relay over real QUIC on loopback with real
//! certificates: the relay server (`ferrocast_relay::server`) serving the origin's
//! `Streams` fed by a real packager, and the relay client an edge pulls with
//! (`ferrocast_relay::client::QuicUpstream`).

use bytes::{Bytes, BytesMut};
use ferrocast_agent::origins::{OriginChoice, OriginResolver, StaticOrigin};
use ferrocast_media::flv::{self, FlvTag};
use ferrocast_media::hls::names::Object;
use ferrocast_origin::metrics::OriginMetrics;
use ferrocast_origin::package::{PackagerConfig, PartLookup};
use ferrocast_origin::stream::{StreamConfig, Streams};
use ferrocast_relay::client::{QuicConfig, QuicUpstream};
use ferrocast_relay::server::metrics::{KindLabels, ReasonLabels};
use ferrocast_relay::server::{self as relay, RelayConfig};
use ferrocast_serve::upstream::{Subscription, Upstream, UpstreamError, UpstreamEvent};
use ferrocast_tls::{generate_dev, ClusterTls, TlsFiles};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn demo_tags() -> Vec<FlvTag> {
    let data = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../cli/assets/demo.flv"
        ))
        .unwrap(),
    );
    flv::read_file(&data).unwrap()
}

fn streams(grace: Duration) -> (Arc<Streams>, Arc<OriginMetrics>) {
    let metrics = Arc::new(OriginMetrics::new());
    let cfg = StreamConfig {
        packager: PackagerConfig {
            segment_target: 1.0,
            part_target: 0.2,
            ..Default::default()
        },
        reconnect_grace: grace,
        linger: grace,
        ..Default::default()
    };
    (Streams::new(cfg, metrics.clone()), metrics)
}

/// Publishes the demo clip on `name` in a loop at `speed` × real time (0: as fast as
/// possible, once) until `stop`.
fn publish(
    streams: &Arc<Streams>,
    name: &str,
    speed: f64,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let mut publisher = streams.claim(name).unwrap();
    let tags = demo_tags();
    let clip_ms = tags.iter().map(|t| t.timestamp_ms).max().unwrap() + 33;
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for round in 0u32.. {
            for t in &tags {
                let ts = t.timestamp_ms + round * clip_ms;
                if speed > 0.0 {
                    let at = start + Duration::from_secs_f64(f64::from(ts) / 1000.0 / speed);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                match t.tag_type {
                    8 => publisher.audio(ts, &t.body).unwrap(),
                    9 => publisher.video(ts, &t.body).unwrap(),
                    _ => {}
                }
            }
            if speed == 0.0 {
                break;
            }
        }
        // Keep the stream live (no grace period) until told to stop.
        stop.cancelled().await;
        drop(publisher);
    })
}

struct Relay {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn start_relay(
    addr: SocketAddr,
    tls: &ClusterTls,
    streams: &Arc<Streams>,
    metrics: &Arc<OriginMetrics>,
    cfg: RelayConfig,
) -> Relay {
    let endpoint = relay::server_endpoint_with(addr, tls, &cfg).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::serve_with(
        endpoint,
        streams.clone(),
        metrics.relay.clone(),
        cfg,
        stop.clone(),
    ));
    Relay { addr, stop, task }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn upstream(addr: SocketAddr, tls: &ClusterTls) -> QuicUpstream {
    QuicUpstream::new(Arc::new(StaticOrigin(addr)), tls).unwrap()
}

async fn next(sub: &mut Subscription) -> UpstreamEvent {
    tokio::time::timeout(T, sub.events.recv())
        .await
        .expect("event in time")
        .expect("subscription open")
}

/// What a consumer saw, checked as it goes: every part and init a playlist newly names
/// arrived as an Object event before it, nothing arrived twice, numbering never went
/// backwards.
#[derive(Default)]
struct Consumer {
    objects: HashMap<Object, Bytes>,
    arrived_at: HashMap<Object, Instant>,
    playlists: Vec<Arc<ferrocast_serve::upstream::EdgePlaylist>>,
    made_lag_ms: Vec<i64>,
}

impl Consumer {
    fn take(&mut self, ev: UpstreamEvent) {
        match ev {
            UpstreamEvent::Object {
                object,
                bytes,
                made_at_ms,
            } => {
                assert!(
                    self.objects.insert(object, bytes).is_none(),
                    "{object:?} delivered twice"
                );
                self.arrived_at.insert(object, Instant::now());
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                self.made_lag_ms.push(now - made_at_ms);
            }
            UpstreamEvent::Playlist(p) => {
                let pl = &p.playlist;
                if let Some(prev) = self.playlists.last() {
                    assert!(pl.next_msn >= prev.playlist.next_msn, "numbering went back");
                    assert!(pl.media_sequence >= prev.playlist.media_sequence);
                    // Parts new since the previous playlist arrived first.
                    let prev_end = (prev.playlist.next_msn, prev.playlist.pending_parts.len());
                    for s in &pl.segments {
                        for i in 0..s.parts.len() {
                            if (s.msn, i) >= prev_end {
                                assert!(
                                    self.objects.contains_key(&Object::Part(s.msn, i as u32)),
                                    "playlist names part {}.{i} before it arrived",
                                    s.msn
                                );
                            }
                        }
                    }
                }
                if !pl.pending_parts.is_empty() {
                    assert!(self.objects.contains_key(&Object::Init(pl.next_init_id)));
                }
                for i in 0..pl.pending_parts.len() {
                    assert!(
                        self.objects
                            .contains_key(&Object::Part(pl.next_msn, i as u32)),
                        "playlist names pending part {}.{i} before it arrived",
                        pl.next_msn
                    );
                }
                for s in &pl.segments {
                    if !s.parts.is_empty() {
                        assert!(self.objects.contains_key(&Object::Init(s.init_id)));
                    }
                }
                self.playlists.push(p);
            }
            UpstreamEvent::Gone => panic!("unexpected Gone"),
        }
    }

    fn last_msn(&self) -> u64 {
        self.playlists.last().map_or(0, |p| p.playlist.next_msn)
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_receives_objects_before_playlists_and_fetch_serves_the_rest() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 2.0, stop.clone());
    let relay = start_relay(loopback(), &tls, &streams, &metrics, RelayConfig::default());
    let up = upstream(relay.addr, &tls);

    // Note when each part appears at the origin, to measure propagation precisely.
    let mut watch = streams.get("s").unwrap().subscribe();
    let appeared = Arc::new(std::sync::Mutex::new(HashMap::<Object, Instant>::new()));
    let watcher = {
        let appeared = appeared.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let snap = watch.borrow_and_update().clone();
                let now = Instant::now();
                let mut seen = appeared.lock().unwrap();
                if let Some(m) = snap.building_msn {
                    for i in 0..snap.pending.len() {
                        seen.entry(Object::Part(m, i as u32)).or_insert(now);
                    }
                }
                for s in &snap.segments {
                    for i in 0..s.parts.len() {
                        seen.entry(Object::Part(s.msn, i as u32)).or_insert(now);
                    }
                }
            }
        })
    };

    // Subscribe once media flows (before that the first playlist is empty).
    let stream = streams.get("s").unwrap();
    let deadline = Instant::now() + T;
    while stream.snapshot().pending.is_empty() {
        assert!(Instant::now() < deadline, "no media");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sub = up.subscribe("s").await.expect("subscribed");
    let subscribed_at = Instant::now();
    let mut c = Consumer::default();
    // First events: the init segment and the live parts (in any order: each travels
    // on its own stream), then the first playlist.
    loop {
        let ev = next(&mut sub).await;
        let playlist = matches!(ev, UpstreamEvent::Playlist(_));
        c.take(ev);
        if playlist {
            break;
        }
    }
    assert!(c.objects.keys().any(|o| matches!(o, Object::Init(_))));
    while c.last_msn() < 12 {
        c.take(next(&mut sub).await);
    }
    assert!(metrics.relay.subscriptions.get() == 1);

    // Every part received is byte-identical to the origin's.
    let snap = streams.get("s").unwrap().snapshot();
    let mut compared = 0;
    for (o, bytes) in &c.objects {
        match *o {
            Object::Part(m, i) => {
                if let PartLookup::Found(b) = snap.part(m, i) {
                    assert_eq!(&b, bytes, "part {m}.{i} differs");
                    compared += 1;
                }
            }
            Object::Init(id) => assert_eq!(snap.init(id).as_ref(), Some(bytes)),
            _ => unreachable!(),
        }
    }
    assert!(compared >= 10, "compared {compared} parts");

    // Fetch: an old segment is its parts back to back; parts and init as stored.
    let seg = snap.segments.first().unwrap();
    let mut want = BytesMut::new();
    for p in &seg.parts {
        want.extend_from_slice(&p.bytes);
    }
    let got = up.fetch("s", Object::Segment(seg.msn)).await.unwrap();
    assert_eq!(got, want.freeze());
    let got = up.fetch("s", Object::Part(seg.msn, 1)).await.unwrap();
    assert_eq!(got, seg.parts[1].bytes);
    let got = up.fetch("s", Object::Init(seg.init_id)).await.unwrap();
    assert_eq!(Some(got), snap.init(seg.init_id));

    // Unknown stream, unknown object.
    assert_eq!(
        up.subscribe("nope").await.unwrap_err(),
        UpstreamError::NotFound
    );
    assert_eq!(
        up.fetch("nope", Object::Init(0)).await.unwrap_err(),
        UpstreamError::NotFound
    );
    assert_eq!(
        up.subscribe("../etc").await.unwrap_err(),
        UpstreamError::NotFound
    );
    assert_eq!(
        up.fetch("s", Object::Segment(1_000_000)).await.unwrap_err(),
        UpstreamError::NoSuchObject
    );
    assert_eq!(
        up.fetch("s", Object::Part(0, 999)).await.unwrap_err(),
        UpstreamError::NoSuchObject
    );
    assert_eq!(
        up.fetch("s", Object::MediaPlaylist).await.unwrap_err(),
        UpstreamError::NoSuchObject
    );

    // Propagation: part appeared at the origin → Object event at the edge.
    let appeared = appeared.lock().unwrap().clone();
    let mut lat: Vec<f64> = c
        .arrived_at
        .iter()
        .filter_map(|(o, at)| {
            // Parts made while subscribed (earlier ones were pushed on subscribe).
            let a = appeared.get(o).filter(|a| **a > subscribed_at)?;
            Some(at.saturating_duration_since(*a).as_secs_f64() * 1000.0)
        })
        .collect();
    assert!(lat.len() >= 20, "{} parts measured", lat.len());
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let mut lag: Vec<f64> = c.made_lag_ms.iter().map(|v| *v as f64).collect();
    eprintln!(
        "propagation origin→edge over {} parts: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms; \
         made_at_ms lag p50 {} ms p99 {} ms",
        lat.len(),
        lat.last().unwrap(),
        percentile(&mut lag, 0.5),
        percentile(&mut lag, 0.99),
    );
    assert!(p99 < 100.0, "p99 {p99} ms");
    let parts_sent = metrics
        .relay
        .objects_sent
        .get_or_create(&KindLabels { kind: "part" })
        .get();
    assert!(parts_sent >= 10);

    // Unsubscribing is seen by the origin.
    drop(sub);
    let deadline = Instant::now() + T;
    while metrics.relay.subscriptions.get() != 0 {
        assert!(Instant::now() < deadline, "subscription not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.cancel();
    feeder.await.unwrap();
    watcher.abort();
    relay.stop.cancel();
    tokio::time::timeout(T, relay.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_a_certificate_from_another_ca_is_refused() {
    let _ = tracing_subscriber_init();
    let dir = std::env::temp_dir().join(format!("ferrocast-relay-test-{}", std::process::id()));
    let cluster = generate_dev(Some(&dir.join("cluster")), &[]).unwrap();
    let _other = generate_dev(Some(&dir.join("other")), &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 1.0, stop.clone());
    let relay = start_relay(
        loopback(),
        &cluster,
        &streams,
        &metrics,
        RelayConfig::default(),
    );

    // Trusts the cluster CA but presents a certificate another CA issued.
    let intruder = TlsFiles {
        ca: dir.join("cluster/ca.pem"),
        cert: dir.join("other/node.pem"),
        key: dir.join("other/node-key.pem"),
    }
    .load()
    .unwrap();
    let up = upstream(relay.addr, &intruder);
    let err = tokio::time::timeout(T, up.subscribe("s"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable(_)), "{err:?}");
    let err = tokio::time::timeout(T, up.fetch("s", Object::Init(0)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    // Fully foreign: trusts and presents another CA.
    let foreign = TlsFiles::in_dir(&dir.join("other")).load().unwrap();
    let up2 = upstream(relay.addr, &foreign);
    let err = tokio::time::timeout(T, up2.subscribe("s"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable(_)), "{err:?}");

    let refused = || {
        metrics
            .relay
            .refused
            .get_or_create(&ReasonLabels { reason: "tls" })
            .get()
    };
    let deadline = Instant::now() + T;
    while refused() < 2 {
        assert!(
            Instant::now() < deadline,
            "refusals not counted: {}",
            refused()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics.relay.connections.get(),
        0,
        "no connection established"
    );

    // The cluster's own certificate works against the same server.
    let ok = upstream(relay.addr, &cluster);
    ok.subscribe("s").await.expect("cluster member subscribes");

    stop.cancel();
    feeder.await.unwrap();
    relay.stop.cancel();
    relay.task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_the_relay_restarts() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 2.0, stop.clone());
    let relay = start_relay(loopback(), &tls, &streams, &metrics, RelayConfig::default());
    let addr = relay.addr;
    let cfg = QuicConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let up = QuicUpstream::with_config(Arc::new(StaticOrigin(addr)), &tls, cfg).unwrap();
    let mut sub = up.subscribe("s").await.unwrap();
    let mut c = Consumer::default();
    while c.last_msn() < 3 {
        c.take(next(&mut sub).await);
    }
    let before = c.last_msn();
    let playlists_before = c.playlists.len();

    // Stop the relay (the origin and its stream go on), then start a new one on the
    // same port.
    relay.stop.cancel();
    tokio::time::timeout(T, relay.task).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut relay2 = None;
    for _ in 0..50 {
        match relay::server_endpoint(addr, &tls) {
            Ok(ep) => {
                let stop = CancellationToken::new();
                let task = tokio::spawn(relay::serve(
                    ep,
                    streams.clone(),
                    metrics.relay.clone(),
                    stop.clone(),
                ));
                relay2 = Some((stop, task));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let (stop2, task2) = relay2.expect("rebound the relay port");

    // The same subscription goes on: no Gone, no duplicate, no part missing from a
    // playlist, numbering continues.
    while c.last_msn() < before + 4 {
        c.take(next(&mut sub).await);
    }
    let msns: HashSet<u64> = c
        .objects
        .keys()
        .filter_map(|o| match o {
            Object::Part(m, _) => Some(*m),
            _ => None,
        })
        .collect();
    // Every segment made meanwhile arrived as parts, except one whose parts had already
    // left the playlist's part window when the subscription resumed (on a slow machine
    // the reconnect can take that long): that one is listed as a whole segment, which
    // an edge fetches on demand.
    let resumed = &c.playlists[playlists_before].playlist;
    for m in before..c.last_msn() {
        let listed_whole = resumed
            .segments
            .iter()
            .any(|s| s.msn == m && s.parts.is_empty());
        assert!(
            msns.contains(&m) || listed_whole,
            "no part of segment {m}, and the first playlist after the resume lists it with parts"
        );
    }
    assert!(
        msns.contains(&(c.last_msn() - 1)),
        "the newest complete segment arrived as parts"
    );
    assert!(metrics.relay.connections.get() >= 2, "reconnected");

    stop.cancel();
    feeder.await.unwrap();
    stop2.cancel();
    task2.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_skipped_ahead_with_bounded_pushes() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let rcfg = RelayConfig {
        max_pushes_in_flight: 4,
        skip_after_parts: 4,
        ..Default::default()
    };
    let relay = start_relay(loopback(), &tls, &streams, &metrics, rcfg);
    let ucfg = QuicConfig {
        events_capacity: 4,
        objects_capacity: 2,
        max_pushes: 4,
        ..Default::default()
    };
    let up = QuicUpstream::with_config(Arc::new(StaticOrigin(relay.addr)), &tls, ucfg).unwrap();
    let stop = CancellationToken::new();
    // Claimed before subscribing; fed as fast as possible, five times over.
    let mut publisher = streams.claim("s").unwrap();
    let mut sub = up.subscribe("s").await.unwrap();
    let tags = demo_tags();
    let sampler = {
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.is_cancelled() {
                max = max.max(metrics.relay.pushes_in_flight.get());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            max
        })
    };
    let mut max_in_flight = 0;
    for round in 0..5u32 {
        for t in &tags {
            let ts = t.timestamp_ms + round * 6100;
            match t.tag_type {
                8 => publisher.audio(ts, &t.body).unwrap(),
                9 => publisher.video(ts, &t.body).unwrap(),
                _ => {}
            }
            max_in_flight = max_in_flight.max(metrics.relay.pushes_in_flight.get());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_in_flight = max_in_flight.max(metrics.relay.pushes_in_flight.get());
    }
    stop.cancel();
    max_in_flight = max_in_flight.max(sampler.await.unwrap());
    let snap = streams.get("s").unwrap().snapshot();
    let total_parts: usize =
        snap.segments.iter().map(|s| s.parts.len()).sum::<usize>() + snap.pending.len();
    let sent = metrics
        .relay
        .objects_sent
        .get_or_create(&KindLabels { kind: "part" })
        .get();
    eprintln!(
        "slow consumer: {total_parts}+ parts made, {sent} pushed, {} skipped, max in flight {max_in_flight}",
        metrics.relay.parts_skipped.get()
    );
    assert!(max_in_flight <= 4, "in flight {max_in_flight}");
    assert!(metrics.relay.parts_skipped.get() > 0, "nothing skipped");
    assert!(
        (sent as usize) < total_parts,
        "everything was pushed to a consumer that reads nothing"
    );

    // Once it reads again it catches up with the live tail.
    let want = snap.playlist.next_msn;
    let mut c = Consumer::default();
    loop {
        let ev = next(&mut sub).await;
        let done = matches!(&ev, UpstreamEvent::Playlist(p) if p.playlist.next_msn >= want);
        if let UpstreamEvent::Object { object, .. } = &ev {
            // An object re-pushed after it left the window may come again; keep the first.
            if c.objects.contains_key(object) {
                continue;
            }
        }
        // Every playlist still comes after the parts it names (fetched when skipped).
        c.take(ev);
        if done {
            break;
        }
    }
    assert!(c.playlists.len() >= 2);
    drop(publisher);
    relay.stop.cancel();
    relay.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ages_out_ends_the_subscription_with_gone() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_millis(300));
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 0.0, stop.clone());
    let relay = start_relay(loopback(), &tls, &streams, &metrics, RelayConfig::default());
    let up = upstream(relay.addr, &tls);
    let mut sub = up.subscribe("s").await.unwrap();
    stop.cancel();
    feeder.await.unwrap();
    let mut ended = false;
    loop {
        match next(&mut sub).await {
            UpstreamEvent::Playlist(p) => ended |= p.playlist.ended,
            UpstreamEvent::Object { .. } => {}
            UpstreamEvent::Gone => break,
        }
    }
    assert!(ended, "an ended playlist before Gone");
    assert!(tokio::time::timeout(T, sub.events.recv())
        .await
        .unwrap()
        .is_none());
    relay.stop.cancel();
    relay.task.await.unwrap();
}

fn tracing_subscriber_init() -> Result<(), ()> {
    // Logs only when asked (RUST_LOG), so a failing test can be rerun with them.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_the_connection_goes_on() {
    use ferrocast_relay::frame;
    use ferrocast_relay::wire::{request, Fetch, FetchReply, FetchStatus, Request, Subscribe};

    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 0.0, stop.clone());
    let relay = start_relay(loopback(), &tls, &streams, &metrics, RelayConfig::default());

    // A raw client with a valid certificate, speaking garbage.
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config().unwrap()).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            relay.addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let refused_with = |bytes: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            let _ = send.finish();
            let r = tokio::time::timeout(T, recv.read_to_end(1 << 20))
                .await
                .unwrap();
            match r {
                Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => code,
                other => panic!("expected a reset, got {other:?}"),
            }
        }
    };
    let protocol = quinn::VarInt::from_u32(1);
    // A length prefix far beyond the limit.
    assert_eq!(
        refused_with(u32::MAX.to_be_bytes().to_vec()).await,
        protocol
    );
    // Not protobuf.
    assert_eq!(
        refused_with(vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await,
        protocol
    );
    // A request of no kind.
    assert_eq!(
        refused_with(frame::encode(&Request { kind: None }).to_vec()).await,
        protocol
    );
    // A frame cut short.
    assert_eq!(refused_with(vec![0, 0, 0, 9, 1]).await, protocol);
    let refused = metrics
        .relay
        .refused
        .get_or_create(&ReasonLabels { reason: "protocol" })
        .get();
    assert_eq!(refused, 4);

    // Odd but well-formed requests get ordinary answers.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let sub = Request {
        kind: Some(request::Kind::Subscribe(Subscribe {
            stream: "../../etc".into(),
            ..Default::default()
        })),
    };
    frame::write_msg(&mut send, &sub).await.unwrap();
    let reply: ferrocast_relay::wire::SubscribeReply =
        frame::read_msg(&mut recv, 1024).await.unwrap().unwrap();
    assert!(!reply.found);
    for (name, want) in [
        ("seg-01.m4s", FetchStatus::NotFound),
        ("index.m3u8", FetchStatus::NotFound),
        ("init-0.mp4", FetchStatus::Ok),
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let req = Request {
            kind: Some(request::Kind::Fetch(Fetch {
                stream: "s".into(),
                name: name.into(),
            })),
        };
        frame::write_msg(&mut send, &req).await.unwrap();
        let reply: FetchReply = frame::read_msg(&mut recv, 1024).await.unwrap().unwrap();
        assert_eq!(reply.status(), want, "{name}");
        let body = recv.read_to_end(1 << 20).await.unwrap();
        assert_eq!(body.len() as u64, reply.len);
    }
    assert!(conn.close_reason().is_none(), "connection still up");

    stop.cancel();
    feeder.await.unwrap();
    relay.stop.cancel();
    relay.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_over_ipv6_loopback() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    let (streams, metrics) = streams(Duration::from_secs(10));
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    if std::net::UdpSocket::bind(v6).is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let stop = CancellationToken::new();
    let feeder = publish(&streams, "s", 0.0, stop.clone());
    let relay = start_relay(v6, &tls, &streams, &metrics, RelayConfig::default());
    let up = upstream(relay.addr, &tls);
    let init = tokio::time::timeout(T, up.fetch("s", Object::Init(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(init), streams.get("s").unwrap().snapshot().init(0));
    stop.cancel();
    feeder.await.unwrap();
    relay.stop.cancel();
    relay.task.await.unwrap();
}

/// A resolver the test moves by hand, as the controller's assignments would.
#[derive(Debug)]
struct Movable {
    choice: std::sync::Mutex<OriginChoice>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl OriginResolver for Movable {
    fn resolve(&self, _stream: &str) -> Option<OriginChoice> {
        Some(*self.choice.lock().unwrap())
    }
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_under_a_stale_epoch_is_ignored_and_a_move_is_followed() {
    let _ = tracing_subscriber_init();
    let tls = generate_dev(None, &[]).unwrap();
    // Two origins with the same stream; neither joined a controller (epoch 0).
    let (streams_a, metrics_a) = streams(Duration::from_secs(10));
    let (streams_b, metrics_b) = streams(Duration::from_secs(10));
    let stop = CancellationToken::new();
    let feed_a = publish(&streams_a, "s", 1.0, stop.clone());
    let feed_b = publish(&streams_b, "s", 1.0, stop.clone());
    let relay_a = start_relay(
        loopback(),
        &tls,
        &streams_a,
        &metrics_a,
        RelayConfig::default(),
    );
    let relay_b = start_relay(
        loopback(),
        &tls,
        &streams_b,
        &metrics_b,
        RelayConfig::default(),
    );

    // The assignment says epoch 2: an origin answering with an older epoch is not a source.
    let resolver = Arc::new(Movable {
        choice: std::sync::Mutex::new(OriginChoice {
            addr: relay_a.addr,
            epoch: 2,
        }),
        changes: tokio::sync::watch::channel(0).0,
    });
    let up = QuicUpstream::new(resolver.clone(), &tls).unwrap();
    assert_eq!(
        up.subscribe("s").await.err(),
        Some(UpstreamError::NotFound),
        "a fenced origin must be ignored"
    );
    // The ignored session is closed, not left open at the fenced origin.
    let deadline = Instant::now() + T;
    while metrics_a.relay.subscriptions.get() != 0 {
        assert!(
            Instant::now() < deadline,
            "the session with the fenced origin stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Epoch 0 (no controller) accepts it; then the stream moves to B and the
    // subscription follows without the consumer doing anything.
    resolver.choice.lock().unwrap().epoch = 0;
    let mut sub = up.subscribe("s").await.unwrap();
    while !matches!(next(&mut sub).await, UpstreamEvent::Playlist(_)) {}
    assert_eq!(metrics_a.relay.subscriptions.get(), 1);
    assert_eq!(metrics_b.relay.subscriptions.get(), 0);
    *resolver.choice.lock().unwrap() = OriginChoice {
        addr: relay_b.addr,
        epoch: 0,
    };
    resolver.changes.send_modify(|n| *n += 1);
    let deadline = Instant::now() + T;
    while metrics_b.relay.subscriptions.get() != 1 || metrics_a.relay.subscriptions.get() != 0 {
        assert!(Instant::now() < deadline, "the subscription did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Playlists keep coming, now from B.
    while !matches!(next(&mut sub).await, UpstreamEvent::Playlist(_)) {}
    drop(sub);
    stop.cancel();
    for r in [relay_a, relay_b] {
        r.stop.cancel();
        let _ = r.task.await;
    }
    let _ = tokio::join!(feed_a, feed_b);
}
