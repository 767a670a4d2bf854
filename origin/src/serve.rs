//! Origin HTTP: playlists (with LL-HLS blocking reload and delta updates), init
//! segments, segments and parts, the player page, the probes and `/api/streams` (open
//! streams only) on the HTTP port; `/metrics`, the probes and every stream on the admin
//! port ([`admin`]). Every status code decision is made here, in one place.
//!
//! Viewers reach this port too (directly, or through anything that can reach the pod),
//! so every request first passes the same playback gate as at an edge
//! ([`ferrocast_agent::access`]): a token-protected stream is refused without a valid
//! playback token, and every stream is refused until the controller's first snapshot.
//! What a protected stream sends is `Cache-Control: private`.

use crate::metrics::{OriginMetrics, RequestLabels};
use crate::package::{PartLookup, Snapshot};
use crate::stream::{Stream, Streams};
use bytes::Bytes;
use ferrocast_media::hls::{self, names::Object, BlockDecision, RenderOptions, SkipRequest};
use ferrocast_runtime::http::{Request, Response};
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::respond::{self, error, media, media_chunks};
use http::{Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
    /// Playback tokens and policies, checked as an edge checks them.
    pub access: Arc<ferrocast_agent::access::PlaybackAccess>,
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
    let query = req.uri().query().unwrap_or("");
    let (path, token) = match state.access.gate(req.uri()) {
        Ok(admitted) => (admitted.path, admitted.token),
        Err(denied) => return ("denied", *denied),
    };
    let path = path.as_ref();
    let ready = state.ready.load(Ordering::Relaxed);
    if let Some(handled) = respond::viewer(req.method(), path, ready, crate::stream::valid_key) {
        return handled;
    }
    if path == "/api/streams" {
        // Viewers learn of the streams anyone may watch, and nothing of the others.
        let list = api_streams(&state.streams, |name| state.access.is_public(name));
        return ("api", respond::admin_only(list));
    }
    match path.strip_prefix("/live/") {
        Some(rest) => {
            let (kind, mut resp) = serve_live(state, rest, query).await;
            let stream = rest.split('/').next().unwrap_or("");
            if token.is_some() || !state.access.is_public(stream) {
                respond::make_private(&mut resp);
            }
            (kind, resp)
        }
        None => ("other", error(StatusCode::NOT_FOUND, "not found")),
    }
}

/// Serves the admin port (`--admin-listen`): `/metrics`, `/healthz`, `/readyz`, and
/// `/api/streams` with every stream, for operators and their monitoring.
pub async fn admin(state: Arc<HttpState>, req: Request) -> Response {
    let ready = state.ready.load(Ordering::Relaxed);
    let path = req.uri().path();
    let accept = req.headers().get(http::header::ACCEPT);
    let (kind, resp) = match respond::admin(req.method(), path, accept, ready, &state.registry) {
        Some(handled) => handled,
        None if path == "/api/streams" => ("api", api_streams(&state.streams, |_| true)),
        None => ("other", error(StatusCode::NOT_FOUND, "not found")),
    };
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            kind,
            status: resp.status().as_u16(),
        })
        .inc();
    respond::admin_only(resp)
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
    respond::playlist(body)
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
    respond::playlist(Bytes::from(hls::render_multivariant(&[variant])))
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

/// The streams `listed` keeps, as JSON.
fn api_streams(streams: &Streams, listed: impl Fn(&str) -> bool) -> Response {
    let list: Vec<serde_json::Value> = streams
        .list()
        .iter()
        .filter(|s| listed(s.name()))
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
    respond::json(body)
}
