//! `bench publish`: N concurrent RTMP publishers looping one FLV clip in real time
//! with continuous timestamps. Each publisher is one task with one socket and one
//! timer; a tick sends every tag whose time has come, and the only per-tag cost is a
//! `Bytes` clone and the chunk encoding into the session's reused output buffer.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrocast_media::amf0::{self, Amf0Value};
use ferrocast_media::flv::{self, AudioTag, FlvTag, VideoTag};
use ferrocast_media::rtmp::{ClientEvent, ClientSession, Limits};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Deadline from TCP connect to NetStream.Publish.Start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Outgoing chunk size: big chunks, few chunk headers.
const CHUNK_SIZE: u32 = 60_000;
/// Error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;

/// `ferrocast bench publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Base RTMP URL; stream keys are appended, e.g. rtmp://127.0.0.1:1935/live.
    #[arg(long, default_value = "rtmp://127.0.0.1:1935/live")]
    pub url: String,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Stream keys are `{prefix}-{i}`.
    #[arg(long, default_value = "bench")]
    pub key_prefix: String,
    /// FLV file to loop (H.264/H.265 + AAC); default: the built-in demo clip.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Seconds to publish.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The result of a `publish` run.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The base URL.
    pub url: String,
    /// Publishers asked for.
    pub streams: usize,
    /// Publishers the server accepted (NetStream.Publish.Start).
    pub connected: usize,
    /// Publishers that could not connect, were refused, or failed while publishing.
    pub failed: usize,
    /// Bytes written to the server, all publishers.
    pub bytes_sent: u64,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// Average sent bitrate per connected publisher, bits/s.
    pub bitrate_per_stream_bps: f64,
    /// Length of one loop of the clip, ms.
    pub clip_loop_ms: u64,
    /// Unix ms at which the first publisher sent its first frame (timestamp 0): what
    /// `bench view --clock pts --published-at-ms` wants.
    pub first_frame_unix_ms: Option<i64>,
    /// A few failure messages.
    pub error_samples: Vec<String>,
}

/// The clip, prepared once and shared by every publisher.
#[derive(Debug)]
struct Clip {
    /// `onMetaData` values, sent once.
    metadata: Option<Vec<Amf0Value>>,
    /// Sequence headers, sent once at time 0.
    configs: Vec<FlvTag>,
    /// Media tags with timestamps relative to the clip's first one, in file order.
    media: Vec<FlvTag>,
    /// One loop's length: the end of its last audio or video frame.
    loop_ms: u64,
}

impl Clip {
    fn new(data: &Bytes) -> anyhow::Result<Clip> {
        let tags = flv::read_file(data)?;
        let mut metadata = None;
        let mut configs = Vec::new();
        let mut media = Vec::new();
        for tag in tags {
            match tag.tag_type {
                18 if metadata.is_none() => metadata = amf0::decode_all(&tag.body).ok(),
                8 => match flv::parse_audio(&tag.body) {
                    Ok(AudioTag::AacSequenceHeader(_)) => configs.push(tag),
                    Ok(_) => media.push(tag),
                    Err(_) => {}
                },
                9 => match flv::parse_video(&tag.body) {
                    Ok(VideoTag::SequenceHeader { .. }) => configs.push(tag),
                    Ok(_) => media.push(tag),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        anyhow::ensure!(!media.is_empty(), "the clip has no audio or video frames");
        let first = media.iter().map(|t| t.timestamp_ms).min().unwrap_or(0);
        for t in &mut media {
            t.timestamp_ms -= first;
        }
        let loop_ms = clip_end_ms(&media);
        Ok(Clip {
            metadata,
            configs,
            media,
            loop_ms,
        })
    }
}

/// The end of the clip: for audio and video separately, the last tag's timestamp plus
/// that track's last frame interval (its frame duration); the later of the two. Looping
/// with this period keeps both tracks' timestamps continuous.
fn clip_end_ms(media: &[FlvTag]) -> u64 {
    let track_end = |tag_type: u8| {
        let mut ts = media
            .iter()
            .filter(|t| t.tag_type == tag_type)
            .map(|t| u64::from(t.timestamp_ms))
            .rev();
        let last = ts.next()?;
        let frame = ts.next().map_or(0, |prev| last.saturating_sub(prev));
        Some(last + frame)
    };
    let end = [track_end(8), track_end(9)].into_iter().flatten().max();
    end.unwrap_or(0).max(1)
}

/// Shared counters.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicUsize,
    live: AtomicUsize,
    failed: AtomicUsize,
    bytes: AtomicU64,
    /// Unix ms of the earliest first frame; 0 until one is sent.
    first_frame_ms: AtomicI64,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, key: &str, msg: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() < MAX_ERROR_SAMPLES {
            e.push(format!("{key}: {msg}"));
        }
    }
}

/// Where to publish: `rtmp://host[:port]/app`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    app: String,
    tc_url: String,
}

fn parse_rtmp_url(url: &str) -> Option<Target> {
    let rest = url.strip_prefix("rtmp://")?;
    let (authority, app) = rest.split_once('/')?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 1935),
    };
    let app = app.trim_end_matches('/');
    if host.is_empty() || app.is_empty() {
        return None;
    }
    Some(Target {
        host: host.to_owned(),
        port,
        app: app.to_owned(),
        tc_url: format!("rtmp://{authority}/{app}"),
    })
}

/// Runs the publishers until `--duration`; prints a progress line to stderr every
/// second and the summary to stdout (JSON with `--json`).
pub async fn publish(args: PublishArgs, default_clip: Bytes) -> anyhow::Result<PublishReport> {
    let target = parse_rtmp_url(&args.url)
        .ok_or_else(|| anyhow::anyhow!("--url must be rtmp://host[:port]/app, got {}", args.url))?;
    anyhow::ensure!(args.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be positive"
    );
    let data = match &args.file {
        Some(path) => Bytes::from(
            tokio::fs::read(path)
                .await
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        ),
        None => default_clip,
    };
    let clip = Arc::new(Clip::new(&data)?);
    let counters = Arc::new(Counters::default());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let key = format!("{}-{i}", args.key_prefix);
        let (target, clip, counters, cancel) = (
            target.clone(),
            clip.clone(),
            counters.clone(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            let result = publisher(&target, &key, &clip, &counters, &cancel, i).await;
            if let Err(e) = result {
                counters.fail(&key, e);
            }
        });
    }
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_bytes = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => {
                let bytes = counters.bytes.load(Ordering::Relaxed);
                let live = counters.live.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>4.0}s] publishers {live} live, {} failed | {:.1} Mbit/s total, {:.2} Mbit/s per stream",
                    started.elapsed().as_secs_f64(),
                    counters.failed.load(Ordering::Relaxed),
                    (bytes - last_bytes) as f64 * 8.0 / 1e6,
                    (bytes - last_bytes) as f64 * 8.0 / 1e6 / live.max(1) as f64,
                );
                last_bytes = bytes;
            }
        }
    }
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let took = started.elapsed().as_secs_f64();
    let connected = counters.connected.load(Ordering::Relaxed);
    let bytes_sent = counters.bytes.load(Ordering::Relaxed);
    let report = PublishReport {
        url: args.url.clone(),
        streams: args.streams,
        connected,
        failed: counters.failed.load(Ordering::Relaxed),
        bytes_sent,
        duration_secs: took,
        bitrate_per_stream_bps: bytes_sent as f64 * 8.0 / took / connected.max(1) as f64,
        clip_loop_ms: clip.loop_ms,
        first_frame_unix_ms: Some(counters.first_frame_ms.load(Ordering::Relaxed))
            .filter(|&ms| ms > 0),
        error_samples: counters
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} publishers for {:.1}s: {} connected, {} failed, {:.1} MB sent ({:.2} Mbit/s per stream)",
            report.streams,
            report.duration_secs,
            report.connected,
            report.failed,
            report.bytes_sent as f64 / 1e6,
            report.bitrate_per_stream_bps / 1e6
        );
        for e in &report.error_samples {
            println!("  error: {e}");
        }
    }
    Ok(report)
}

/// Writes everything the session has queued.
async fn flush(
    sock: &mut (impl AsyncWriteExt + Unpin),
    session: &mut ClientSession,
    counters: &Counters,
) -> std::io::Result<()> {
    while let Some(out) = session.take_output() {
        sock.write_all(&out).await?;
        counters
            .bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Handles what the server sent; Err when it ends the publish.
fn server_events(session: &mut ClientSession) -> Result<bool, String> {
    let mut started = false;
    while let Some(ev) = session.poll_event() {
        match ev {
            ClientEvent::PublishStarted { .. } => started = true,
            ClientEvent::Closed => return Err("server closed the session".into()),
            ClientEvent::Status { level, code, .. } if level == "error" => return Err(code),
            _ => {}
        }
    }
    Ok(started)
}

async fn publisher(
    target: &Target,
    key: &str,
    clip: &Clip,
    counters: &Counters,
    cancel: &CancellationToken,
    seed: usize,
) -> Result<(), String> {
    let mut sock = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((target.host.as_str(), target.port))) => {
            r.map_err(|_| "connect timed out".to_owned())?.map_err(|e| format!("connect: {e}"))?
        }
    };
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    // C1 need not be random for our server or nginx; vary it per publisher anyway.
    let random: Vec<u8> = (0..1528u32)
        .map(|i| ((i as usize).wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut session = ClientSession::new(Limits::default(), &random, 0);
    session.publish(&target.app, &target.tc_url, key);
    let (mut rd, mut wr) = sock.split();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    // Handshake and publish commands.
    loop {
        flush(&mut wr, &mut session, counters)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => return Err("timed out waiting for NetStream.Publish.Start".into()),
            r = rd.read(&mut buf) => r.map_err(|e| format!("read: {e}"))?,
        };
        if n == 0 {
            return Err("server closed the connection before publishing started".into());
        }
        session.feed(&buf[..n]).map_err(|e| e.to_string())?;
        if server_events(&mut session)? {
            break;
        }
    }
    counters.connected.fetch_add(1, Ordering::Relaxed);
    counters.live.fetch_add(1, Ordering::Relaxed);
    let result = stream(
        &mut rd,
        &mut wr,
        &mut session,
        (key, clip),
        counters,
        cancel,
        &mut buf,
    )
    .await;
    counters.live.fetch_sub(1, Ordering::Relaxed);
    if result.is_ok() {
        session.unpublish();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            flush(&mut wr, &mut session, counters),
        )
        .await;
    }
    result
}

async fn stream(
    rd: &mut (impl AsyncReadExt + Unpin),
    wr: &mut (impl AsyncWriteExt + Unpin),
    session: &mut ClientSession,
    (key, clip): (&str, &Clip),
    counters: &Counters,
    cancel: &CancellationToken,
    buf: &mut [u8],
) -> Result<(), String> {
    session.set_chunk_size(CHUNK_SIZE);
    if let Some(meta) = &clip.metadata {
        session.send_metadata(meta);
    }
    for tag in &clip.configs {
        send(session, tag, 0);
    }
    flush(wr, session, counters)
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The clip's timestamps start at 0 and the first tags are due at once: this is the
    // wall-clock time of media timestamp 0, for viewers measuring behind-live from the
    // media (`bench view --clock pts`).
    let start = Instant::now();
    let start_unix_ms = unix_ms();
    let _ = counters.first_frame_ms.compare_exchange(
        0,
        start_unix_ms,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    eprintln!("{key}: first frame (timestamp 0) sent at unix ms {start_unix_ms}");
    let mut round = 0u64;
    let mut idx = 0usize;
    let due =
        |round: u64, idx: usize| round * clip.loop_ms + u64::from(clip.media[idx].timestamp_ms);
    let timer = tokio::time::sleep_until(start);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            r = rd.read(buf) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("server closed the connection".into());
                }
                session.feed(&buf[..n]).map_err(|e| e.to_string())?;
                server_events(session)?;
            }
            _ = &mut timer => {
                let now_ms = start.elapsed().as_millis() as u64;
                while due(round, idx) <= now_ms {
                    let ts = due(round, idx);
                    send(session, &clip.media[idx], ts);
                    idx += 1;
                    if idx == clip.media.len() {
                        idx = 0;
                        round += 1;
                    }
                }
                timer.as_mut().reset(start + Duration::from_millis(due(round, idx)));
            }
        }
        flush(wr, session, counters)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn send(session: &mut ClientSession, tag: &FlvTag, ts: u64) {
    // RTMP timestamps are 32-bit and wrap; servers unwrap them.
    let ts = ts as u32;
    match tag.tag_type {
        8 => session.send_audio(ts, tag.body.clone()),
        9 => session.send_video(ts, tag.body.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag_type: u8, ts: u32) -> FlvTag {
        FlvTag {
            tag_type,
            timestamp_ms: ts,
            body: Bytes::new(),
        }
    }

    #[test]
    fn loop_length_is_the_later_track_end() {
        // Video at 30 fps ends at 1000 + 33; AAC (~23 ms frames) ends at 1020 + 23.
        let media = vec![tag(9, 967), tag(8, 997), tag(9, 1000), tag(8, 1020)];
        assert_eq!(clip_end_ms(&media), 1043);
        assert_eq!(clip_end_ms(&[tag(9, 0)]), 1);
        assert_eq!(clip_end_ms(&[]), 1);
    }

    #[test]
    fn rtmp_urls() {
        let t = parse_rtmp_url("rtmp://127.0.0.1:1936/live").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.app.as_str()),
            ("127.0.0.1", 1936, "live")
        );
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:1936/live");
        let t = parse_rtmp_url("rtmp://example/live/").unwrap();
        assert_eq!((t.port, t.app.as_str()), (1935, "live"));
        assert!(parse_rtmp_url("rtmp://example").is_none());
        assert!(parse_rtmp_url("http://example/live").is_none());
    }

    #[test]
    fn the_demo_clip_loops_continuously() {
        let data = Bytes::from_static(include_bytes!("../../cli/assets/demo.flv"));
        let clip = Clip::new(&data).unwrap();
        assert!(!clip.configs.is_empty());
        assert_eq!(clip.media[0].timestamp_ms, 0);
        let last = clip
            .media
            .iter()
            .map(|t| u64::from(t.timestamp_ms))
            .max()
            .unwrap();
        assert!(
            clip.loop_ms > last && clip.loop_ms < last + 100,
            "{} vs {last}",
            clip.loop_ms
        );
    }
}
