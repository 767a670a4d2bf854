//! `bench view`: N concurrent viewers of one media playlist. In `ll` mode each viewer
//! behaves like hls.js in low-latency mode (blocking playlist reloads for the next
//! part, part downloads, the preload-hinted part fetched concurrently); in `classic`
//! mode like a plain HLS player (reload every half target duration, fetch new
//! segments). Reports requests, errors, bytes, stalls, latency behind live and
//! request-latency percentiles, with a progress line every second.
//!
//! Behind live is the time a part (or segment) is received minus the wall-clock time
//! of its first frame: from EXT-X-PROGRAM-DATE-TIME by default (`--clock pdt`), or from
//! the media timestamps and the moment the publisher sent its first frame (`--clock
//! pts --published-at-ms T0`), for servers that write no PROGRAM-DATE-TIME.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{Conn, H2Conn, HttpError, Url};
use crate::mediaclock::MediaClock;
use crate::playlist::{MediaPlaylist, Part};
use crate::stats::{Percentiles, Samples};

/// Deadline of a plain (non-blocking) request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest playlist accepted.
const MAX_PLAYLIST: usize = 1 << 20;
/// Largest segment, part or init segment accepted.
const MAX_MEDIA: usize = 64 << 20;
/// More new parts than this at once and the viewer rejoins at the live edge.
const MAX_CATCH_UP_PARTS: usize = 24;
/// Error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;

/// How the viewers play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// hls.js in low-latency mode: blocking reloads, parts, preload hints.
    Ll,
    /// A classic HLS player: periodic reloads, whole segments.
    Classic,
}

/// Where the wall-clock time of a part's or segment's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// EXT-X-PROGRAM-DATE-TIME of the segment, plus the durations of the parts before.
    Pdt,
    /// The publisher's first frame (`--published-at-ms`) plus the media's first video
    /// timestamp past the stream's first one (`--first-ts-ms`): MPEG-TS PES DTS/PTS,
    /// fMP4 `tfdt` over the init segment's timescale.
    Pts,
}

/// `ferrocast bench view`.
#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// Media playlist to watch, e.g. http://127.0.0.1:8081/live/demo/index.m3u8.
    #[arg(long)]
    pub url: String,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Player behaviour.
    #[arg(long, value_enum, default_value_t = Mode::Ll)]
    pub mode: Mode,
    /// Seconds to run (ramp included).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds over which viewers join, evenly spread.
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// One HTTP/2 connection per viewer (h2c, prior knowledge) carrying all its
    /// requests, as browsers multiplex a player's requests over HTTP/2; without it each
    /// viewer keeps two HTTP/1.1 connections (playlists, media), so that a blocking
    /// reload and a preload-hint request can be in flight at once.
    #[arg(long)]
    pub http2: bool,
    /// Where behind-live comes from: `pdt` (EXT-X-PROGRAM-DATE-TIME) or `pts` (media
    /// timestamps; needs --published-at-ms).
    #[arg(long, value_enum, default_value_t = Clock::Pdt)]
    pub clock: Clock,
    /// With `--clock pts`: unix ms at which the publisher sent its first frame (`bench
    /// publish` prints it).
    #[arg(long, required_if_eq("clock", "pts"))]
    pub published_at_ms: Option<i64>,
    /// With `--clock pts`: that first frame's timestamp in the server's output, ms (0
    /// when the server keeps the publisher's timestamps; nginx-rtmp's HLS adds 700).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub first_ts_ms: i64,
    /// Threads the viewers run on, each with its own event loop (viewers spread
    /// round-robin), as wrk runs a loop per thread; 0: one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// How one viewer dates what it receives.
#[derive(Debug, Clone)]
enum Dating {
    /// From the playlist's PROGRAM-DATE-TIME.
    Listed,
    /// From the media timestamps.
    Media(MediaClock),
}

impl Dating {
    fn new(args: &ViewArgs) -> Dating {
        match (args.clock, args.published_at_ms) {
            (Clock::Pts, Some(t0)) => Dating::Media(MediaClock::new(t0, args.first_ts_ms)),
            _ => Dating::Listed,
        }
    }

    /// Wall-clock start of a part or segment: as listed, or read from its bytes.
    fn start_ms(&self, listed: Option<i64>, media: &[u8]) -> Option<i64> {
        match self {
            Dating::Listed => listed,
            Dating::Media(clock) => clock.start_ms(media),
        }
    }

    fn init(&mut self, init: &[u8]) {
        if let Dating::Media(clock) = self {
            clock.set_init(init);
        }
    }
}

/// A viewer's connection for one purpose: its own HTTP/1.1 connection, or a share of
/// the viewer's one HTTP/2 connection.
#[derive(Debug)]
enum Client {
    H1(Conn),
    H2(H2Conn),
}

impl Client {
    async fn get(
        &mut self,
        path: &str,
        timeout: Duration,
    ) -> Result<crate::http::Response, HttpError> {
        match self {
            Client::H1(c) => c.get(path, timeout).await,
            Client::H2(c) => c.get(path, timeout).await,
        }
    }
}

/// The kinds of request a viewer makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Playlist,
    BlockingPlaylist,
    Init,
    Part,
    PreloadHint,
    Segment,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Playlist,
        Kind::BlockingPlaylist,
        Kind::Init,
        Kind::Part,
        Kind::PreloadHint,
        Kind::Segment,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::BlockingPlaylist => "blocking_playlist",
            Kind::Init => "init",
            Kind::Part => "part",
            Kind::PreloadHint => "preload_hint",
            Kind::Segment => "segment",
        }
    }

    /// Requests the server holds on purpose: their latency is not service time.
    fn is_held(self) -> bool {
        matches!(self, Kind::BlockingPlaylist | Kind::PreloadHint)
    }
}

/// Per-kind figures.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Requests completed (successes and errors).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Preload-hint requests answered 404 because the hinted part never came (the
    /// segment ended first); hls.js ignores these, so they are not errors.
    pub misses: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Time to the complete response; for held kinds this includes the hold.
    pub latency: Option<Percentiles>,
}

/// The result of a `view` run.
#[derive(Debug, Clone, Serialize)]
pub struct ViewReport {
    /// The playlist watched.
    pub url: String,
    /// Player behaviour.
    pub mode: Mode,
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers that received any media.
    pub viewers_with_media: usize,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// All requests.
    pub requests: u64,
    /// All failed requests.
    pub errors: u64,
    /// Failures by cause (timeout, status_404, io, ...).
    pub errors_by_cause: BTreeMap<String, u64>,
    /// A few error messages, for diagnosis.
    pub error_samples: Vec<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// Gaps without new media longer than the stall threshold (1 s in `ll` mode,
    /// target duration + 1 s in `classic` mode), counted per viewer.
    pub stalls: u64,
    /// Times a viewer fell so far behind that it rejoined at the live edge.
    pub rejoins: u64,
    /// Where the wall-clock starts behind live is measured from came from.
    pub clock: Clock,
    /// Now − wall-clock start (PROGRAM-DATE-TIME + offset, or publisher start + media
    /// timestamp with `--clock pts`) of each part (or segment, in classic mode) when it
    /// was received.
    pub latency_behind_live: Option<Percentiles>,
    /// Request latency of the requests the server answers at once (playlists without
    /// blocking, init, parts, segments).
    pub request_latency: Option<Percentiles>,
    /// Per request kind.
    pub by_kind: BTreeMap<String, KindReport>,
}

#[derive(Debug, Default)]
struct KindStats {
    requests: u64,
    errors: u64,
    misses: u64,
    bytes: u64,
    latency: Samples,
}

#[derive(Debug, Default)]
struct Inner {
    kinds: [KindStats; 6],
    errors_by_cause: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    behind_live: Samples,
    /// Behind-live samples since the last progress line.
    recent_behind_live: Samples,
    stalls: u64,
    rejoins: u64,
    with_media: usize,
    active: usize,
}

/// What all viewers report into; the lock is held for a few field updates only.
#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, kind: Kind, url: &Url, result: &Result<Bytes, HttpError>, took: Duration) {
        let mut g = self.lock();
        let k = &mut g.kinds[kind as usize];
        k.requests += 1;
        k.latency.record_us(took.as_micros() as u64);
        match result {
            Ok(body) => k.bytes += body.len() as u64,
            Err(HttpError::Status(404)) if kind == Kind::PreloadHint => k.misses += 1,
            Err(e) => {
                k.errors += 1;
                *g.errors_by_cause.entry(e.label()).or_default() += 1;
                if g.error_samples.len() < MAX_ERROR_SAMPLES {
                    let msg = format!("{} {}: {e}", kind.name(), url.path);
                    g.error_samples.push(msg);
                }
            }
        }
    }

    fn behind_live(&self, received_ms: i64, start_ms: Option<i64>) {
        if let Some(start) = start_ms {
            let us = (received_ms - start).max(0) as u64 * 1000;
            let mut g = self.lock();
            g.behind_live.record_us(us);
            g.recent_behind_live.record_us(us);
        }
    }
}

/// Tracks one viewer's media arrivals for stall counting.
#[derive(Debug)]
struct Arrivals {
    last: Option<Instant>,
    threshold: Duration,
    stalls: u64,
}

impl Arrivals {
    fn media(&mut self, shared: &Shared) {
        let now = Instant::now();
        let first = self.last.is_none();
        self.check(now);
        self.last = Some(now);
        if first {
            shared.lock().with_media += 1;
        }
    }

    fn check(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if now.duration_since(last) > self.threshold {
                self.stalls += 1;
            }
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the viewers until `--duration`; prints a progress line to stderr every second
/// and the summary to stdout (JSON with `--json`).
pub async fn view(args: ViewArgs) -> anyhow::Result<ViewReport> {
    let url = Url::parse(&args.url).ok_or_else(|| {
        anyhow::anyhow!("--url must be http://host[:port]/path, got {}", args.url)
    })?;
    anyhow::ensure!(args.viewers > 0, "--viewers must be at least 1");
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be positive"
    );
    anyhow::ensure!(
        args.ramp.is_finite() && args.ramp >= 0.0 && args.ramp <= args.duration,
        "--ramp must be between 0 and --duration"
    );
    anyhow::ensure!(
        args.clock == Clock::Pdt || args.published_at_ms.is_some(),
        "--clock pts needs --published-at-ms"
    );
    let dating = Dating::new(&args);
    let shared = Arc::new(Shared::default());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(args.viewers);
    let mut loops = Vec::with_capacity(threads);
    for t in 0..threads {
        let viewers: Vec<Viewer> = (t..args.viewers)
            .step_by(threads)
            .map(|i| Viewer {
                url: url.clone(),
                mode: args.mode,
                http2: args.http2,
                delay: Duration::from_secs_f64(args.ramp * i as f64 / args.viewers as f64),
                dating: dating.clone(),
            })
            .collect();
        let (shared, cancel) = (shared.clone(), cancel.clone());
        let (done, stalls) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("viewers-{t}"))
            .spawn(move || {
                let n = rt.block_on(run_viewers(viewers, started, shared, cancel));
                let _ = done.send(n);
            })?;
        loops.push(stalls);
    }
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => last = progress(&shared, started, last),
        }
    }
    cancel.cancel();
    let mut stalls = 0;
    // Each loop stops its viewers within a bound of its own.
    for done in loops {
        stalls += tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
    }
    shared.lock().stalls = stalls;
    let report = summarise(&args, &shared, started.elapsed());
    print_report(&report, args.json)?;
    Ok(report)
}

/// One viewer to start.
struct Viewer {
    url: Url,
    mode: Mode,
    http2: bool,
    /// After the start of the run.
    delay: Duration,
    dating: Dating,
}

/// Runs `viewers` on the current thread's event loop until `cancel`; the stalls seen.
async fn run_viewers(
    viewers: Vec<Viewer>,
    started: Instant,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for mut v in viewers {
        let (shared, cancel) = (shared.clone(), cancel.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return 0,
                _ = tokio::time::sleep_until(started + v.delay) => {}
            }
            shared.lock().active += 1;
            let mut arrivals = Arrivals {
                last: None,
                threshold: Duration::from_secs(1),
                stalls: 0,
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = viewer(&v.url, v.mode, v.http2, &shared, &mut arrivals, &mut v.dating) => {}
            }
            // A viewer starved at the end of the run stalled too.
            arrivals.check(Instant::now());
            shared.lock().active -= 1;
            arrivals.stalls
        });
    }
    cancel.cancelled().await;
    let mut stalls = 0;
    // Viewers stop at their next await; bounded anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(r) = tasks.join_next().await {
            stalls += r.unwrap_or(0);
        }
    })
    .await;
    tasks.abort_all();
    stalls
}

fn progress(shared: &Shared, started: Instant, last: (u64, u64)) -> (u64, u64) {
    let mut g = shared.lock();
    let requests: u64 = g.kinds.iter().map(|k| k.requests).sum();
    let errors: u64 = g.kinds.iter().map(|k| k.errors).sum();
    let bytes: u64 = g.kinds.iter().map(|k| k.bytes).sum();
    let recent = g.recent_behind_live.take().summary();
    let latency = recent.map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "p50 {:.2}s p99 {:.2}s",
                p.p50_ms / 1000.0,
                p.p99_ms / 1000.0
            )
        },
    );
    eprintln!(
        "[{:>4.0}s] viewers {} active, {} with media | {} req/s, {} errors | {:.1} Mbit/s | behind live {latency}",
        started.elapsed().as_secs_f64(),
        g.active,
        g.with_media,
        requests - last.0,
        errors,
        (bytes - last.1) as f64 * 8.0 / 1e6,
    );
    (requests, bytes)
}

fn summarise(args: &ViewArgs, shared: &Shared, took: Duration) -> ViewReport {
    let g = shared.lock();
    let mut service = Samples::default();
    let mut by_kind = BTreeMap::new();
    for kind in Kind::ALL {
        let k = &g.kinds[kind as usize];
        if !kind.is_held() {
            service.extend(&k.latency);
        }
        if k.requests > 0 {
            by_kind.insert(
                kind.name().to_owned(),
                KindReport {
                    requests: k.requests,
                    errors: k.errors,
                    misses: k.misses,
                    bytes: k.bytes,
                    latency: k.latency.summary(),
                },
            );
        }
    }
    ViewReport {
        url: args.url.clone(),
        mode: args.mode,
        viewers: args.viewers,
        viewers_with_media: g.with_media,
        duration_secs: took.as_secs_f64(),
        requests: g.kinds.iter().map(|k| k.requests).sum(),
        errors: g.kinds.iter().map(|k| k.errors).sum(),
        errors_by_cause: g.errors_by_cause.clone(),
        error_samples: g.error_samples.clone(),
        bytes: g.kinds.iter().map(|k| k.bytes).sum(),
        stalls: g.stalls,
        rejoins: g.rejoins,
        clock: args.clock,
        latency_behind_live: g.behind_live.summary(),
        request_latency: service.summary(),
        by_kind,
    }
}

fn print_report(r: &ViewReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let pct = |p: &Option<Percentiles>| {
        p.map_or_else(
            || "-".to_owned(),
            |p| {
                format!(
                    "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
                    p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
                )
            },
        )
    };
    println!(
        "{} viewers ({:?}) for {:.1}s: {} with media, {} requests, {} errors, {:.1} MB, {} stalls, {} rejoins",
        r.viewers,
        r.mode,
        r.duration_secs,
        r.viewers_with_media,
        r.requests,
        r.errors,
        r.bytes as f64 / 1e6,
        r.stalls,
        r.rejoins
    );
    println!("behind live:     {}", pct(&r.latency_behind_live));
    println!("request latency: {}", pct(&r.request_latency));
    for (name, k) in &r.by_kind {
        println!(
            "  {name:<18} {:>7} req {:>4} err {:>4} miss {:>10} B  {}",
            k.requests,
            k.errors,
            k.misses,
            k.bytes,
            pct(&k.latency)
        );
    }
    for e in &r.error_samples {
        println!("  error: {e}");
    }
    Ok(())
}

/// GETs `url` and records the outcome.
async fn fetch(
    conn: &mut Client,
    url: &Url,
    kind: Kind,
    timeout: Duration,
    shared: &Shared,
) -> Option<Bytes> {
    let t0 = Instant::now();
    let result = conn.get(&url.path, timeout).await.map(|r| r.body);
    shared.record(kind, url, &result, t0.elapsed());
    result.ok()
}

/// Fetches and parses the playlist, retrying every half second until it parses.
async fn first_playlist(conn: &mut Client, url: &Url, shared: &Shared) -> MediaPlaylist {
    loop {
        if let Some(body) = fetch(conn, url, Kind::Playlist, REQUEST_TIMEOUT, shared).await {
            if let Ok(p) = MediaPlaylist::parse_bytes(&body) {
                if !p.segments.is_empty() || !p.pending_parts.is_empty() {
                    return p;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn viewer(
    url: &Url,
    mode: Mode,
    http2: bool,
    shared: &Shared,
    arrivals: &mut Arrivals,
    dating: &mut Dating,
) {
    let (mut playlists, mut media) = if http2 {
        let c = H2Conn::new(url, MAX_MEDIA);
        (Client::H2(c.clone()), Client::H2(c))
    } else {
        (
            Client::H1(Conn::new(url, MAX_PLAYLIST)),
            Client::H1(Conn::new(url, MAX_MEDIA)),
        )
    };
    let pl = first_playlist(&mut playlists, url, shared).await;
    if let Some(map) = &pl.map_uri {
        let init = fetch(
            &mut media,
            &url.join(map),
            Kind::Init,
            REQUEST_TIMEOUT,
            shared,
        )
        .await;
        if let Some(init) = init {
            dating.init(&init);
        }
    }
    let dating = &*dating;
    if mode == Mode::Ll && pl.can_block_reload && pl.part_target.is_some() {
        low_latency(url, pl, playlists, media, shared, arrivals, dating).await;
    } else {
        arrivals.threshold = Duration::from_secs_f64(pl.target_duration.max(1.0) + 1.0);
        classic(url, pl, playlists, media, shared, arrivals, dating).await;
    }
}

/// The parts a low-latency viewer fetches next: those after `have`, or from the
/// newest independent part when joining or hopelessly behind. The flag says a rejoin.
fn parts_to_fetch(pl: &MediaPlaylist, have: Option<(u64, u32)>) -> (Vec<Part>, bool) {
    if let Some(have) = have {
        let new: Vec<Part> = pl
            .parts()
            .filter(|p| (p.msn, p.index) > have)
            .cloned()
            .collect();
        let contiguous = pl
            .parts()
            .next()
            .is_some_and(|first| (first.msn, first.index) <= have);
        if new.len() <= MAX_CATCH_UP_PARTS && contiguous {
            return (new, false);
        }
    }
    let from = pl.join_part().map(|p| (p.msn, p.index));
    let parts = pl
        .parts()
        .filter(|p| from.is_some_and(|f| (p.msn, p.index) >= f))
        .cloned()
        .collect();
    (parts, have.is_some())
}

async fn low_latency(
    url: &Url,
    mut pl: MediaPlaylist,
    mut playlists: Client,
    mut media: Client,
    shared: &Shared,
    arrivals: &mut Arrivals,
    dating: &Dating,
) {
    let mut have: Option<(u64, u32)> = None;
    loop {
        if pl.ended {
            return;
        }
        let (parts, rejoin) = parts_to_fetch(&pl, have);
        if rejoin {
            shared.lock().rejoins += 1;
        }
        for p in parts {
            if let Some(body) = fetch(
                &mut media,
                &url.join(&p.uri),
                Kind::Part,
                REQUEST_TIMEOUT,
                shared,
            )
            .await
            {
                arrivals.media(shared);
                shared.behind_live(unix_ms(), dating.start_ms(p.start_ms, &body));
            }
            have = Some((p.msn, p.index));
        }
        let (msn, part) = pl.next_part();
        // Delta updates when offered, as hls.js asks for them: only the newest segments
        // and their parts, which is all a viewer at the live edge needs.
        let skip = if pl.can_skip { "&_HLS_skip=YES" } else { "" };
        let reload = url.with_query(&format!("_HLS_msn={msn}&_HLS_part={part}{skip}"));
        // The origin answers 503 after about three target durations.
        let hold = Duration::from_secs_f64(pl.target_duration.max(1.0) * 3.0) + REQUEST_TIMEOUT;
        let hint = pl
            .preload_hint
            .as_deref()
            .filter(|_| have.is_none_or(|h| h < (msn, part)))
            .map(|h| url.join(h));
        let (body, hinted) = tokio::join!(
            fetch(
                &mut playlists,
                &reload,
                Kind::BlockingPlaylist,
                hold,
                shared
            ),
            async {
                match &hint {
                    Some(h) => fetch(&mut media, h, Kind::PreloadHint, hold, shared)
                        .await
                        .map(|body| (unix_ms(), body)),
                    None => None,
                }
            }
        );
        if hinted.is_some() {
            arrivals.media(shared);
            have = Some((msn, part));
        }
        let next = body.and_then(|b| MediaPlaylist::parse_bytes(&b).ok());
        match next {
            Some(next) => {
                if let Some((received, body)) = hinted {
                    let start = dating.start_ms(next.part_start_ms(msn, part), &body);
                    shared.behind_live(received, start);
                }
                pl = next;
            }
            None => {
                // Back off, then start over from a plain reload.
                tokio::time::sleep(Duration::from_millis(500)).await;
                pl = first_playlist(&mut playlists, url, shared).await;
            }
        }
    }
}

async fn classic(
    url: &Url,
    mut pl: MediaPlaylist,
    mut playlists: Client,
    mut media: Client,
    shared: &Shared,
    arrivals: &mut Arrivals,
    dating: &Dating,
) {
    // Start with the newest complete segment, as a live player joining at the edge.
    let mut have: Option<u64> = pl.segments.len().checked_sub(2).map(|i| pl.segments[i].msn);
    let period = Duration::from_secs_f64((pl.target_duration / 2.0).max(0.1));
    let mut next_reload = Instant::now();
    loop {
        let from = have;
        for s in pl
            .segments
            .iter()
            .filter(|s| from.is_none_or(|h| s.msn > h))
        {
            if let Some(body) = fetch(
                &mut media,
                &url.join(&s.uri),
                Kind::Segment,
                REQUEST_TIMEOUT,
                shared,
            )
            .await
            {
                arrivals.media(shared);
                shared.behind_live(unix_ms(), dating.start_ms(s.start_ms, &body));
            }
            have = Some(s.msn);
        }
        if pl.ended {
            return;
        }
        next_reload += period;
        tokio::time::sleep_until(next_reload).await;
        if let Some(b) = fetch(&mut playlists, url, Kind::Playlist, REQUEST_TIMEOUT, shared).await {
            if let Ok(p) = MediaPlaylist::parse_bytes(&b) {
                pl = p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_media::hls::{self, PartInfo, RenderOptions, SegmentInfo};

    fn rendered(segments: u64, pending: usize) -> MediaPlaylist {
        let part = |i: usize| PartInfo {
            duration: 0.25,
            independent: i == 0,
        };
        let snap = hls::MediaPlaylist {
            target_duration: 2,
            part_target: 0.25,
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: (0..segments)
                .map(|msn| SegmentInfo {
                    msn,
                    duration: 2.0,
                    program_date_time_ms: 1_000_000 + msn as i64 * 2000,
                    discontinuity: false,
                    init_id: 0,
                    parts: (0..8).map(part).collect(),
                })
                .collect(),
            next_msn: segments,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: Some(1_000_000 + segments as i64 * 2000),
            pending_parts: (0..pending).map(part).collect(),
            ended: false,
        };
        MediaPlaylist::parse(&hls::render_media(&snap, &RenderOptions::default())).unwrap()
    }

    #[test]
    fn joins_at_the_newest_independent_part() {
        let pl = rendered(3, 3);
        let (parts, rejoin) = parts_to_fetch(&pl, None);
        assert!(!rejoin);
        let pos: Vec<_> = parts.iter().map(|p| (p.msn, p.index)).collect();
        assert_eq!(pos, [(3, 0), (3, 1), (3, 2)]);
        // Right after a segment closed: join at its first part.
        let pl = rendered(3, 0);
        let (parts, _) = parts_to_fetch(&pl, None);
        assert_eq!(parts.len(), 8);
        assert_eq!((parts[0].msn, parts[0].index), (2, 0));
    }

    #[test]
    fn follows_parts_across_segment_boundaries() {
        let pl = rendered(3, 2);
        let (parts, rejoin) = parts_to_fetch(&pl, Some((2, 6)));
        assert!(!rejoin);
        let pos: Vec<_> = parts.iter().map(|p| (p.msn, p.index)).collect();
        assert_eq!(pos, [(2, 7), (3, 0), (3, 1)]);
        assert!(parts_to_fetch(&pl, Some((3, 1))).0.is_empty());
        // The blocking reload then asks for the hinted part.
        assert_eq!(pl.next_part(), (3, 2));
        assert_eq!(pl.preload_hint.as_deref(), Some("part-3.2.m4s"));
    }

    #[test]
    fn rejoins_when_too_far_behind() {
        let pl = rendered(5, 1);
        // (0, 0) is still listed but 40 parts back.
        let (parts, rejoin) = parts_to_fetch(&pl, Some((0, 0)));
        assert!(rejoin);
        assert_eq!((parts[0].msn, parts[0].index), (5, 0));
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        view: ViewArgs,
    }

    fn cli(args: &[&str]) -> Result<ViewArgs, clap::Error> {
        use clap::Parser;
        let argv = ["view", "--url", "http://127.0.0.1:1/live/k/index.m3u8"];
        Cli::try_parse_from(argv.iter().chain(args)).map(|c| c.view)
    }

    #[test]
    fn clock_options() {
        let a = cli(&[]).unwrap();
        assert_eq!(
            (a.clock, a.published_at_ms, a.first_ts_ms),
            (Clock::Pdt, None, 0)
        );
        assert!(matches!(Dating::new(&a), Dating::Listed));
        assert_eq!(Dating::new(&a).start_ms(Some(42), b"ignored"), Some(42));

        let a = cli(&["--clock", "pts", "--published-at-ms", "1780000000000"]).unwrap();
        assert_eq!(
            (a.clock, a.published_at_ms, a.first_ts_ms),
            (Clock::Pts, Some(1_780_000_000_000), 0)
        );
        let a = cli(&[
            "--clock",
            "pts",
            "--published-at-ms",
            "1780000000000",
            "--first-ts-ms",
            "-5",
        ])
        .unwrap();
        assert_eq!(a.first_ts_ms, -5);
        // The listed PDT is ignored; bytes that are neither TS nor fMP4 date nothing.
        let d = Dating::new(&a);
        assert!(matches!(d, Dating::Media(_)));
        assert_eq!(d.start_ms(Some(42), b"garbage"), None);

        let e = cli(&["--clock", "pts"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(cli(&["--clock", "wallclock"]).is_err());
    }

    #[test]
    fn stalls_are_gaps_over_the_threshold() {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let shared = Shared::default();
                let mut a = Arrivals {
                    last: None,
                    threshold: Duration::from_secs(1),
                    stalls: 0,
                };
                a.media(&shared);
                tokio::time::advance(Duration::from_millis(900)).await;
                a.media(&shared);
                tokio::time::advance(Duration::from_millis(1100)).await;
                a.media(&shared);
                assert_eq!(a.stalls, 1);
                assert_eq!(shared.lock().with_media, 1);
            });
    }
}
