//! Origin HTTP: playlists (with LL-HLS blocking reload and delta updates), init
//! segments, segments and parts, the player page, `/api/streams`, and the admin
//! endpoints. Every status code decision is made here, in one place.

use crate::metrics::{OriginMetrics, RequestLabels};
use crate::package::{PartLookup, Snapshot};
use crate::stream::{Stream, Streams};
use bytes::Bytes;
use ferrocast_media::hls::{self, names::Object, BlockDecision, RenderOptions, SkipRequest};
use ferrocast_runtime::body::ChunksBody;
use ferrocast_runtime::http::{Request, Response};
use ferrocast_runtime::metrics::Metrics;
use http::{header, HeaderValue, Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");
const WATCH_HTML: &[u8] = include_bytes!("../assets/watch.html");
const HLS_JS: &[u8] = include_bytes!("../assets/hls.min.js");
const HLS_JS_LICENSE: &[u8] = include_bytes!("../assets/hls.js.LICENSE");

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const MP4_TYPE: &str = "video/mp4";
const CACHE_IMMUTABLE: &str = "public, max-age=86400, immutable";
const CACHE_PLAYLIST: &str = "no-cache";

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct HttpState {
    /// The streams served.
    pub streams: Arc<Streams>,
    /// Counters.
    pub metrics: Arc<OriginMetrics>,
    /// The registry rendered on /metrics.
    pub registry: Arc<Metrics>,
    /// False once shutdown begins (or before start-up completes).
    pub ready: AtomicBool,
}

/// Handles one request.
pub async fn handle(state: Arc<HttpState>, req: Request) -> Response {
    let (kind, resp) = route(&state, &req).await;
    let status = resp.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels { kind, status })
        .inc();
    if req.method() != Method::HEAD {
        state.metrics.http_response_bytes.inc_by(resp.body().len());
    }
    resp
}

async fn route(state: &HttpState, req: &Request) -> (&'static str, Response) {
    let path = req.uri().path();
    if req.method() == Method::OPTIONS {
        return ("other", cors_preflight());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            "other",
            error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD"),
        );
    }
    match path {
        "/healthz" => ("admin", text(StatusCode::OK, "ok\n")),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                ("admin", text(StatusCode::OK, "ready\n"))
            } else {
                (
                    "admin",
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                )
            }
        }
        "/metrics" => {
            let body = state.registry.render();
            (
                "admin",
                with_type(
                    Bytes::from(body),
                    ferrocast_runtime::metrics::CONTENT_TYPE,
                    "no-store",
                ),
            )
        }
        "/" | "/index.html" => ("page", static_asset(INDEX_HTML, "text/html; charset=utf-8")),
        "/assets/hls.min.js" => (
            "page",
            static_asset(HLS_JS, "text/javascript; charset=utf-8"),
        ),
        "/assets/hls.js.LICENSE" => (
            "page",
            static_asset(HLS_JS_LICENSE, "text/plain; charset=utf-8"),
        ),
        "/api/streams" => ("api", api_streams(&state.streams)),
        _ => {
            if let Some(name) = path.strip_prefix("/watch/") {
                if crate::stream::valid_key(name) {
                    return ("page", static_asset(WATCH_HTML, "text/html; charset=utf-8"));
                }
                return ("page", error(StatusCode::NOT_FOUND, "no such stream"));
            }
            if let Some(rest) = path.strip_prefix("/live/") {
                return serve_live(state, rest, req.uri().query().unwrap_or("")).await;
            }
            ("other", error(StatusCode::NOT_FOUND, "not found"))
        }
    }
}

/// How long a blocking request may be held: about three target durations
/// (draft-pantos-hls-rfc8216bis §6.2.5.2 suggests 503 after that).
fn block_timeout(snap: &Snapshot) -> Duration {
    Duration::from_secs_f64(3.0 * f64::from(snap.playlist.target_duration.max(1)))
}

async fn serve_live(state: &HttpState, rest: &str, query: &str) -> (&'static str, Response) {
    let Some((name, object)) = rest.split_once('/') else {
        return ("other", error(StatusCode::NOT_FOUND, "not found"));
    };
    let Some(object) = hls::names::parse(object) else {
        return ("other", error(StatusCode::NOT_FOUND, "no such object"));
    };
    let Some(stream) = state.streams.get(name) else {
        let kind = kind_of(&object);
        return (kind, error(StatusCode::NOT_FOUND, "no such stream"));
    };
    match object {
        Object::MediaPlaylist => ("playlist", media_playlist(&stream, query).await),
        Object::Multivariant => ("playlist", multivariant(&stream).await),
        Object::Init(id) => {
            let resp = match wait_until(&stream, |s| s.init(id), None).await {
                Some(b) => media(b),
                None => error(StatusCode::NOT_FOUND, "no such init segment"),
            };
            ("init", resp)
        }
        Object::Segment(msn) => {
            let resp = wait_until(
                &stream,
                |s| {
                    s.segment(msn).map(|seg| {
                        seg.parts
                            .iter()
                            .map(|p| p.bytes.clone())
                            .collect::<Vec<_>>()
                    })
                },
                // Only the segment being built is worth waiting for.
                Some(&|s: &Snapshot| s.building_msn == Some(msn) && !s.playlist.ended),
            )
            .await;
            let resp = match resp {
                Some(parts) => media_chunks(parts),
                None => error(StatusCode::NOT_FOUND, "no such segment"),
            };
            ("segment", resp)
        }
        Object::Part(msn, i) => ("part", part(&stream, msn, i).await),
    }
}

fn kind_of(o: &Object) -> &'static str {
    match o {
        Object::MediaPlaylist | Object::Multivariant => "playlist",
        Object::Init(_) => "init",
        Object::Segment(_) => "segment",
        Object::Part(..) => "part",
    }
}

/// Waits (bounded) until `find` returns something; `worth_waiting` says whether to keep
/// waiting when it does not (None: only wait while the stream has no media yet).
async fn wait_until<T>(
    stream: &Stream,
    find: impl Fn(&Snapshot) -> Option<T>,
    worth_waiting: Option<&(dyn Fn(&Snapshot) -> bool + Sync)>,
) -> Option<T> {
    let mut rx = stream.subscribe();
    let first = rx.borrow_and_update().clone();
    let deadline = tokio::time::Instant::now() + block_timeout(&first);
    let mut snap = first;
    loop {
        if let Some(v) = find(&snap) {
            return Some(v);
        }
        let wait = match worth_waiting {
            Some(f) => f(&snap),
            None => !snap.live && !snap.playlist.ended,
        };
        if !wait {
            return None;
        }
        snap = next_snapshot(&mut rx, deadline).await?;
    }
}

async fn next_snapshot(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    deadline: tokio::time::Instant,
) -> Option<Arc<Snapshot>> {
    match tokio::time::timeout_at(deadline, rx.changed()).await {
        Ok(Ok(())) => Some(rx.borrow_and_update().clone()),
        _ => None,
    }
}

async fn media_playlist(stream: &Stream, query: &str) -> Response {
    let q = match hls::parse_query(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad playlist query: {e}")),
    };
    let mut rx = stream.subscribe();
    let mut snap = rx.borrow_and_update().clone();
    let deadline = tokio::time::Instant::now() + block_timeout(&snap);
    loop {
        let decision = if !snap.live && !snap.playlist.ended {
            BlockDecision::Wait
        } else if q.msn.is_some() {
            hls::blocking_decision(&snap.playlist, &q)
        } else {
            BlockDecision::Ready
        };
        match decision {
            BlockDecision::Ready => break,
            BlockDecision::BadRequest => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "_HLS_msn is more than two segments beyond the playlist",
                )
            }
            _ => match next_snapshot(&mut rx, deadline).await {
                Some(s) => snap = s,
                None if !snap.live => {
                    return error(StatusCode::NOT_FOUND, "stream has no media yet")
                }
                None => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the requested part did not appear in time",
                    )
                }
            },
        }
    }
    let skip = !matches!(q.skip, SkipRequest::No);
    let cell = if skip {
        &snap.rendered_skip
    } else {
        &snap.rendered
    };
    let body = cell
        .get_or_init(|| Bytes::from(hls::render_media(&snap.playlist, &RenderOptions { skip })))
        .clone();
    with_type(body, PLAYLIST_TYPE, CACHE_PLAYLIST)
}

async fn multivariant(stream: &Stream) -> Response {
    let info = wait_until(stream, |s| s.live.then(|| s.info.clone()), None).await;
    let Some(info) = info else {
        return error(StatusCode::NOT_FOUND, "stream has no media yet");
    };
    let variant = hls::Variant {
        uri: "index.m3u8".to_owned(),
        // Until a full segment exists, estimate generously rather than under-declare.
        bandwidth: if info.bandwidth > 0 {
            info.bandwidth
        } else {
            5_000_000
        },
        codecs: info.codecs.clone(),
        resolution: info.resolution,
        frame_rate: info.frame_rate,
    };
    with_type(
        Bytes::from(hls::render_multivariant(&[variant])),
        PLAYLIST_TYPE,
        CACHE_PLAYLIST,
    )
}

async fn part(stream: &Stream, msn: u64, i: u32) -> Response {
    let mut rx = stream.subscribe();
    let mut snap = rx.borrow_and_update().clone();
    let deadline = tokio::time::Instant::now() + block_timeout(&snap);
    loop {
        match snap.part(msn, i) {
            PartLookup::Found(b) => return media(b),
            PartLookup::Never => return error(StatusCode::NOT_FOUND, "no such part"),
            PartLookup::Soon => match next_snapshot(&mut rx, deadline).await {
                Some(s) => snap = s,
                None => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the part did not appear in time",
                    )
                }
            },
        }
    }
}

fn api_streams(streams: &Streams) -> Response {
    let list: Vec<serde_json::Value> = streams
        .list()
        .iter()
        .map(|s| {
            let snap = s.snapshot();
            serde_json::json!({
                "name": s.name(),
                "live": s.has_publisher() && snap.live,
                "ended": snap.playlist.ended,
                "codecs": snap.info.codecs,
                "width": snap.info.resolution.map(|r| r.0),
                "height": snap.info.resolution.map(|r| r.1),
                "bandwidth": snap.info.bandwidth,
                "media_sequence": snap.playlist.media_sequence,
            })
        })
        .collect();
    let body = serde_json::json!({ "streams": list }).to_string();
    with_type(Bytes::from(body), "application/json", "no-cache")
}

fn base(status: StatusCode) -> http::response::Builder {
    http::Response::builder()
        .status(status)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Content-Length, Age, Date",
        )
}

fn with_type(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    respond(
        base(StatusCode::OK),
        ChunksBody::full(body),
        content_type,
        cache,
    )
}

fn respond(
    b: http::response::Builder,
    body: ChunksBody,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    b.header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .header(header::CACHE_CONTROL, HeaderValue::from_static(cache))
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| http::Response::new(ChunksBody::empty()))
}

fn media(b: Bytes) -> Response {
    with_type(b, MP4_TYPE, CACHE_IMMUTABLE)
}

fn media_chunks(parts: Vec<Bytes>) -> Response {
    respond(
        base(StatusCode::OK),
        ChunksBody::from_chunks(parts),
        MP4_TYPE,
        CACHE_IMMUTABLE,
    )
}

fn static_asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    respond(
        base(StatusCode::OK),
        ChunksBody::full(Bytes::from_static(bytes)),
        content_type,
        "public, max-age=300",
    )
}

fn text(status: StatusCode, body: &'static str) -> Response {
    respond(
        base(status),
        ChunksBody::from(body),
        "text/plain; charset=utf-8",
        "no-store",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    respond(
        base(status),
        ChunksBody::from(format!("{message}\n")),
        "text/plain; charset=utf-8",
        "no-cache",
    )
}

fn cors_preflight() -> Response {
    let b = base(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
        .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "*")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400");
    respond(
        b,
        ChunksBody::empty(),
        "text/plain; charset=utf-8",
        "no-store",
    )
}
