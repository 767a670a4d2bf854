//! Both ends of the relay over real QUIC on loopback with real certificates, serving a
//! source made by hand: what the protocol promises, independent of any packager (the
//! origin's own streams through the relay are tested in `origin/tests/relay.rs`).

use bytes::Bytes;
use ferrocast_agent::origins::{OriginChoice, OriginResolver, StaticOrigin};
use ferrocast_media::hls::names::Object;
use ferrocast_media::hls::{MediaPlaylist, PartInfo, SegmentInfo};
use ferrocast_relay::client::QuicUpstream;
use ferrocast_relay::server::metrics::{RelayMetrics, ResultLabels};
use ferrocast_relay::server::source::{self, Lookup, PartRef, Source, SourceStream};
use ferrocast_relay::server::{self, RelayConfig};
use ferrocast_relay::wire::VariantInfo;
use ferrocast_serve::upstream::{Subscription, Upstream, UpstreamError, UpstreamEvent};
use ferrocast_tls::{generate_dev, ClusterTls};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);
const PARTS: u32 = 3;

/// A stream at one moment: complete segments `first..building` of [`PARTS`] parts each,
/// and `pending` parts of segment `building`. Part `m.i` holds the bytes `"m.i"`.
#[derive(Debug)]
struct Snap {
    version: u64,
    playlist: MediaPlaylist,
    first: u64,
    building: u64,
    pending: u32,
    init: Bytes,
    parts: HashMap<(u64, u32), Bytes>,
}

fn part_bytes(msn: u64, i: u32) -> Bytes {
    Bytes::from(format!("{msn}.{i}"))
}

fn snap(version: u64, first: u64, building: u64, pending: u32) -> Snap {
    let info = PartInfo {
        duration: 0.2,
        independent: true,
    };
    let playlist = MediaPlaylist {
        target_duration: 1,
        part_target: 0.2,
        media_sequence: first,
        discontinuity_sequence: 0,
        segments: (first..building)
            .map(|msn| SegmentInfo {
                msn,
                duration: 0.6,
                program_date_time_ms: 0,
                discontinuity: false,
                init_id: 0,
                parts: vec![info.clone(); PARTS as usize],
            })
            .collect(),
        next_msn: building,
        next_init_id: 0,
        next_discontinuity: false,
        next_program_date_time_ms: None,
        pending_parts: vec![info; pending as usize],
        ended: false,
    };
    let mut parts = HashMap::new();
    for msn in first..building {
        for i in 0..PARTS {
            parts.insert((msn, i), part_bytes(msn, i));
        }
    }
    for i in 0..pending {
        parts.insert((building, i), part_bytes(building, i));
    }
    Snap {
        version,
        playlist,
        first,
        building,
        pending,
        init: Bytes::from_static(b"init-0"),
        parts,
    }
}

impl source::Snapshot for Snap {
    fn version(&self) -> u64 {
        self.version
    }
    fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }
    fn variant(&self) -> VariantInfo {
        VariantInfo {
            codecs: "avc1.64001f".into(),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
            bandwidth: 1_000_000,
        }
    }
    fn live_msn(&self) -> u64 {
        self.building
    }
    fn inits(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        std::iter::once((0, &self.init))
    }
    fn parts_from(&self, msn: u64) -> impl Iterator<Item = PartRef<'_>> + '_ {
        let count = move |m: u64| {
            if m < self.building {
                PARTS
            } else {
                self.pending
            }
        };
        (msn.max(self.first)..=self.building).flat_map(move |m| {
            (0..count(m)).map(move |i| PartRef {
                msn: m,
                index: i,
                bytes: &self.parts[&(m, i)],
                made_at_ms: 1,
            })
        })
    }
    fn lookup(&self, object: Object) -> Lookup {
        match object {
            Object::Init(0) => Lookup::Found(vec![self.init.clone()]),
            Object::Part(m, i) => match self.parts.get(&(m, i)) {
                Some(b) => Lookup::Found(vec![b.clone()]),
                None if m == self.building && i == self.pending => Lookup::Soon,
                None => Lookup::Never,
            },
            Object::Segment(m) if (self.first..self.building).contains(&m) => {
                Lookup::Found((0..PARTS).map(|i| self.parts[&(m, i)].clone()).collect())
            }
            _ => Lookup::Never,
        }
    }
}

#[derive(Debug)]
struct Stream {
    epoch: u64,
    tx: watch::Sender<Arc<Snap>>,
}

impl SourceStream for Stream {
    type Snapshot = Snap;
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn subscribe(&self) -> watch::Receiver<Arc<Snap>> {
        self.tx.subscribe()
    }
}

#[derive(Debug, Default)]
struct Streams(Mutex<HashMap<String, Arc<Stream>>>);

impl Source for Streams {
    type Stream = Stream;
    fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.0.lock().unwrap().get(name).cloned()
    }
}

impl Streams {
    fn publish(&self, name: &str, epoch: u64, first: Snap) {
        let (tx, _) = watch::channel(Arc::new(first));
        self.0
            .lock()
            .unwrap()
            .insert(name.into(), Arc::new(Stream { epoch, tx }));
    }

    fn update(&self, name: &str, next: Snap) {
        self.0.lock().unwrap()[name].tx.send_replace(Arc::new(next));
    }

    fn drop_stream(&self, name: &str) {
        self.0.lock().unwrap().remove(name);
    }
}

struct Relay {
    addr: SocketAddr,
    metrics: Arc<RelayMetrics>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Relay {
    fn start(tls: &ClusterTls, streams: &Arc<Streams>) -> Relay {
        let cfg = RelayConfig::default();
        let endpoint =
            server::server_endpoint_with("127.0.0.1:0".parse().unwrap(), tls, &cfg).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let metrics = Arc::new(RelayMetrics::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::serve_with(
            endpoint,
            streams.clone(),
            metrics.clone(),
            cfg,
            stop.clone(),
        ));
        Relay {
            addr,
            metrics,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(T, self.task)
            .await
            .expect("relay stopped in time")
            .unwrap();
    }
}

async fn next(sub: &mut Subscription) -> UpstreamEvent {
    tokio::time::timeout(T, sub.events.recv())
        .await
        .expect("event in time")
        .expect("subscription open")
}

/// The objects received up to and including the next playlist, and that playlist.
async fn until_playlist(
    sub: &mut Subscription,
) -> (
    HashMap<Object, Bytes>,
    Arc<ferrocast_serve::upstream::EdgePlaylist>,
) {
    let mut objects = HashMap::new();
    loop {
        match next(sub).await {
            UpstreamEvent::Object { object, bytes, .. } => {
                assert!(objects.insert(object, bytes).is_none(), "{object:?} twice");
            }
            UpstreamEvent::Playlist(p) => return (objects, p),
            UpstreamEvent::Gone => panic!("unexpected Gone"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_arrive_before_the_playlist_naming_them_and_fetches_serve_the_rest() {
    let tls = generate_dev(None, &[]).unwrap();
    let streams = Arc::new(Streams::default());
    streams.publish("s", 0, snap(1, 0, 2, 2));
    let relay = Relay::start(&tls, &streams);
    let up = Arc::new(QuicUpstream::new(Arc::new(StaticOrigin(relay.addr)), &tls).unwrap());

    let mut sub = up.subscribe("s").await.expect("subscribed");
    // A fresh subscription: the init and the live segment's parts, then the playlist.
    let (objects, playlist) = until_playlist(&mut sub).await;
    let want: HashMap<Object, Bytes> = [
        (Object::Init(0), Bytes::from_static(b"init-0")),
        (Object::Part(2, 0), part_bytes(2, 0)),
        (Object::Part(2, 1), part_bytes(2, 1)),
    ]
    .into();
    assert_eq!(objects, want);
    assert_eq!(playlist.playlist, snap(1, 0, 2, 2).playlist);
    assert_eq!(playlist.codecs, "avc1.64001f");
    assert_eq!(playlist.resolution, Some((640, 360)));
    assert_eq!(relay.metrics.subscriptions.get(), 1);

    // One more part, then the segment closes and the next begins: only what is new.
    streams.update("s", snap(2, 0, 2, 3));
    let (objects, playlist) = until_playlist(&mut sub).await;
    assert_eq!(objects.keys().collect::<Vec<_>>(), [&Object::Part(2, 2)]);
    assert_eq!(playlist.playlist.pending_parts.len(), 3);
    streams.update("s", snap(3, 1, 3, 1));
    let (objects, playlist) = until_playlist(&mut sub).await;
    assert_eq!(objects, [(Object::Part(3, 0), part_bytes(3, 0))].into());
    assert_eq!(playlist.playlist.media_sequence, 1);

    // Fetches: a segment is its parts back to back; parts and inits as held.
    assert_eq!(
        up.fetch("s", Object::Segment(1)).await.unwrap(),
        Bytes::from_static(b"1.01.11.2")
    );
    assert_eq!(
        up.fetch("s", Object::Part(2, 1)).await.unwrap(),
        part_bytes(2, 1)
    );
    assert_eq!(
        up.fetch("s", Object::Init(0)).await.unwrap(),
        Bytes::from_static(b"init-0")
    );
    assert_eq!(
        up.fetch("s", Object::Segment(0)).await,
        Err(UpstreamError::NoSuchObject),
        "slid out of the window"
    );
    assert_eq!(
        up.fetch("s", Object::MediaPlaylist).await,
        Err(UpstreamError::NoSuchObject),
        "playlists never travel"
    );
    assert_eq!(
        up.fetch("other", Object::Init(0)).await,
        Err(UpstreamError::NotFound)
    );
    assert!(matches!(
        up.subscribe("other").await,
        Err(UpstreamError::NotFound)
    ));
    let fetches = |result| {
        relay
            .metrics
            .fetches
            .get_or_create(&ResultLabels { result })
            .get()
    };
    // The subscription may have fetched a part that was slow to arrive, so "at least".
    assert!(fetches("ok") >= 3);
    assert_eq!(fetches("not_found"), 1);
    assert_eq!(fetches("no_stream"), 1);

    // A part about to exist is waited for, not refused.
    let soon = tokio::spawn({
        let up = up.clone();
        async move { up.fetch("s", Object::Part(3, 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    streams.update("s", snap(4, 1, 3, 2));
    let got = tokio::time::timeout(T, soon).await.unwrap().unwrap();
    assert_eq!(got.unwrap(), part_bytes(3, 1));

    drop(sub);
    up.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_source_drops_ends_the_subscription_with_gone() {
    let tls = generate_dev(None, &[]).unwrap();
    let streams = Arc::new(Streams::default());
    streams.publish("s", 0, snap(1, 0, 1, 1));
    let relay = Relay::start(&tls, &streams);
    let up = QuicUpstream::new(Arc::new(StaticOrigin(relay.addr)), &tls).unwrap();
    let mut sub = up.subscribe("s").await.expect("subscribed");
    until_playlist(&mut sub).await;

    streams.drop_stream("s");
    let mut last = None;
    loop {
        match next(&mut sub).await {
            UpstreamEvent::Gone => break,
            UpstreamEvent::Playlist(p) => last = Some(p),
            UpstreamEvent::Object { object, .. } => panic!("unexpected {object:?}"),
        }
    }
    assert!(
        last.is_some_and(|p| p.playlist.ended),
        "the last playlist says the stream ended"
    );
    up.close().await;
    relay.stop().await;
}

/// Names one origin under a fixed epoch.
#[derive(Debug)]
struct Fixed(OriginChoice);

impl OriginResolver for Fixed {
    fn resolve(&self, _stream: &str) -> Option<OriginChoice> {
        Some(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_holding_a_stream_under_an_older_epoch_is_not_a_source() {
    let tls = generate_dev(None, &[]).unwrap();
    let streams = Arc::new(Streams::default());
    streams.publish("fenced", 3, snap(1, 0, 1, 1));
    streams.publish("current", 4, snap(1, 0, 1, 1));
    let relay = Relay::start(&tls, &streams);
    let resolver = Fixed(OriginChoice {
        addr: relay.addr,
        epoch: 4,
    });
    let up = QuicUpstream::new(Arc::new(resolver), &tls).unwrap();
    assert!(matches!(
        up.subscribe("fenced").await,
        Err(UpstreamError::NotFound)
    ));
    let mut sub = up.subscribe("current").await.expect("subscribed");
    let (_, playlist) = until_playlist(&mut sub).await;
    assert_eq!(playlist.playlist.next_msn, 1);
    drop(sub);
    up.close().await;
    relay.stop().await;
}
