//! Edge viewer HTTP: the origin's URLs and LL-HLS semantics (blocking reload, preload
//! hints, delta updates, multivariant playlist, init, segments, parts), the player page,
//! the probes and `/api/streams` (streams anyone may watch), all answered from the edge's
//! own state and cache; and the admin port ([`admin`]: `/metrics`, the probes, every
//! stream on `/api/streams`). Every status code decision is made here, in one place, and
//! mirrors `origin/src/serve.rs` (same headers, same 400/404/503 rules).
//!
//! What a stream needing a credential (a token, or the admission webhook's yes) sends
//! is `Cache-Control: private`: a shared cache that ignores the query must not hand it
//! to someone else.

use crate::metrics::EdgeMetrics;
use crate::state::{
    locate_part, locate_segment, Closed, EdgeSnapshot, PartPlace, SegmentPlace, StreamState,
    Streams,
};
use crate::upstream::UpstreamError;
use bytes::Bytes;
use ferrocast_media::hls::names::valid_stream_key;
use ferrocast_media::hls::{self, names::Object, BlockDecision, SkipRequest};
use ferrocast_runtime::http::{Request, Response};
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::respond::{self, error, media, media_chunks};
use http::{Method, StatusCode, Uri};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct HttpState {
    /// The streams held.
    pub streams: Arc<Streams>,
    /// Counters.
    pub metrics: Arc<EdgeMetrics>,
    /// The registry rendered on /metrics.
    pub registry: Arc<Metrics>,
    /// False once shutdown begins (or before start-up completes).
    pub ready: AtomicBool,
    /// The controller link, when the edge is in a cluster (for `/play`).
    pub cluster: std::sync::OnceLock<ferrocast_agent::Agent>,
    /// Playback tokens and policies (see [`crate::access`]).
    pub access: Arc<crate::access::EdgeAccess>,
    /// The admission webhook and its viewers' decisions, when configured.
    pub admission: Option<crate::admission::EdgeAdmission>,
}

impl HttpState {
    /// Joins the cluster behind `agent` (set once).
    pub fn set_cluster(&self, agent: ferrocast_agent::Agent) {
        let _ = self.cluster.set(agent);
    }
}

/// Handles one request from the server loop.
pub async fn handle(state: Arc<HttpState>, req: Request) -> Response {
    if let Some(stream) = req.uri().path().strip_prefix("/play/") {
        let resp = play(&state, stream, &req).await;
        state.metrics.request("play", resp.status().as_u16());
        return resp;
    }
    let peer = req
        .extensions()
        .get::<ferrocast_runtime::http::PeerAddr>()
        .map(|p| p.0.ip());
    // The webhook is told the viewer's address: the trusted balancer's header when one
    // is configured.
    let client = match &state.admission {
        Some(a) => a.client_ip(req.headers(), peer),
        None => peer,
    };
    respond_for(&state, req.method(), req.uri(), client).await
}

/// `GET /play/{stream}`: 302 to the edge the controller places this viewer on (this
/// one when it has no controller, or when the controller cannot be asked: a viewer is
/// better served here than refused).
async fn play(state: &HttpState, stream: &str, req: &Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    if !valid_stream_key(stream) {
        return error(StatusCode::BAD_REQUEST, "invalid stream key");
    }
    let here = format!("/live/{stream}/index.m3u8");
    let location = match state.cluster.get() {
        None => here,
        Some(agent) => {
            let client = req
                .extensions()
                .get::<ferrocast_runtime::http::PeerAddr>()
                .map(|p| p.0.ip());
            match agent.place(stream, client, None).await {
                Ok(r) if !r.url.is_empty() => r.url,
                Ok(_) => here,
                Err(e) => {
                    tracing::debug!(error = %e, "placement unavailable; serving the viewer here");
                    here
                }
            }
        }
    };
    let location = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("{location}?{q}"),
        _ => location,
    };
    http::Response::builder()
        .status(StatusCode::FOUND)
        .header(http::header::LOCATION, location)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Default::default())
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "bad location"))
}

/// Answers `method uri` (the request body is never read): the entry point tests use.
pub async fn respond(state: &HttpState, method: &Method, uri: &Uri) -> Response {
    respond_for(state, method, uri, None).await
}

/// [`respond`] for a viewer at `client` (what the admission webhook is told).
pub async fn respond_for(
    state: &HttpState,
    method: &Method,
    uri: &Uri,
    client: Option<std::net::IpAddr>,
) -> Response {
    let (kind, mut resp) = route(state, method, uri, client).await;
    if kind == "denied" {
        // Refusals of one viewer's credential are that viewer's business only.
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
    }
    state.metrics.request(kind, resp.status().as_u16());
    if method != Method::HEAD {
        state.metrics.http_response_bytes.inc_by(resp.body().len());
    }
    resp
}

async fn route(
    state: &HttpState,
    method: &Method,
    uri: &Uri,
    client: Option<std::net::IpAddr>,
) -> (&'static str, Response) {
    let query = uri.query().unwrap_or("");
    // One credential per request, read once by the gate: the token check and the
    // webhook below then see the same one.
    let (path, token) = match state.access.gate(uri) {
        Ok(admitted) => (admitted.path, admitted.token),
        Err(denied) => return ("denied", *denied),
    };
    let path = path.as_ref();
    // After the local token check (no webhook call for a request refused anyway).
    if let Some(admission) = &state.admission {
        let stream = path
            .strip_prefix("/live/")
            .and_then(|r| r.split_once('/'))
            .map(|(s, _)| s)
            .filter(|s| valid_stream_key(s));
        if let Some(stream) = stream {
            // Boxed: the webhook call's future is ~2.8 KB, and every request future
            // (held ones included: a blocking reload and a preload hint per LL viewer)
            // would otherwise carry it for its whole life, ~4 KB instead of ~0.6 KB.
            if let Err(denied) = Box::pin(admission.admit(stream, client, token, query)).await {
                return ("denied", *denied);
            }
        }
    }
    let ready = state.ready.load(Ordering::Relaxed);
    if let Some(handled) = respond::viewer(method, path, ready, valid_stream_key) {
        return handled;
    }
    if path == "/api/streams" {
        return ("api", api_streams(state, Listing::Viewers));
    }
    match path.strip_prefix("/live/") {
        Some(rest) => {
            let (kind, mut resp) = serve_live(state, rest, query).await;
            // Only a request with a credential can have reached a protected stream's
            // objects (the gate refused the others), so open streams without one pay
            // nothing here.
            let stream = rest.split('/').next().unwrap_or("");
            if state.admission.is_some() || (token.is_some() && !open_to_anyone(state, stream)) {
                respond::make_private(&mut resp);
            }
            (kind, resp)
        }
        None => ("other", error(StatusCode::NOT_FOUND, "not found")),
    }
}

/// Whether anyone may watch `stream` here, with no credential at all: the token gate
/// lets a request without a token through, and no admission webhook is asked.
fn open_to_anyone(state: &HttpState, stream: &str) -> bool {
    if state.admission.is_some() || !valid_stream_key(stream) {
        return false;
    }
    match Uri::try_from(format!("/live/{stream}/index.m3u8")) {
        Ok(uri) => crate::access::gate(&state.access, &uri).is_ok(),
        Err(_) => false,
    }
}

/// Serves the admin port (`--admin-listen`): `/metrics`, `/healthz`, `/readyz`, and
/// `/api/streams` with every stream held (protected ones included, marked), for
/// operators and their monitoring; nothing a viewer needs.
pub async fn admin(state: Arc<HttpState>, req: Request) -> Response {
    let accept = req.headers().get(http::header::ACCEPT);
    respond_admin(&state, req.method(), req.uri().path(), accept)
}

/// Answers `method path` on the admin port (the entry point tests use).
pub fn respond_admin(
    state: &HttpState,
    method: &Method,
    path: &str,
    accept: Option<&http::HeaderValue>,
) -> Response {
    let ready = state.ready.load(Ordering::Relaxed);
    let (kind, resp) = match respond::admin(method, path, accept, ready, &state.registry) {
        Some(handled) => handled,
        None if path == "/api/streams" => ("api", api_streams(state, Listing::Operators)),
        None => ("other", error(StatusCode::NOT_FOUND, "not found")),
    };
    state.metrics.request(kind, resp.status().as_u16());
    respond::admin_only(resp)
}

async fn serve_live(state: &HttpState, rest: &str, query: &str) -> (&'static str, Response) {
    let Some((name, object)) = rest.split_once('/') else {
        return ("other", error(StatusCode::NOT_FOUND, "not found"));
    };
    let Some(object) = hls::names::parse(object) else {
        return ("other", error(StatusCode::NOT_FOUND, "no such object"));
    };
    let kind = kind_of(&object);
    if !valid_stream_key(name) {
        return (kind, error(StatusCode::NOT_FOUND, "no such stream"));
    }
    let stream = match state.streams.get_or_subscribe(name).await {
        Ok(s) => s,
        Err(e) => return (kind, upstream_error(&e, "no such stream")),
    };
    let _in_flight = stream.enter();
    let resp = match object {
        Object::MediaPlaylist => media_playlist(&stream, query).await,
        Object::Multivariant => multivariant(&stream).await,
        Object::Init(id) => init(state, &stream, id).await,
        Object::Segment(msn) => segment(state, &stream, msn).await,
        Object::Part(msn, i) => part(state, &stream, msn, i).await,
    };
    (kind, resp)
}

fn kind_of(o: &Object) -> &'static str {
    match o {
        Object::MediaPlaylist | Object::Multivariant => "playlist",
        Object::Init(_) => "init",
        Object::Segment(_) => "segment",
        Object::Part(..) => "part",
    }
}

/// The one place an upstream error becomes a status: unknown stream or object → 404,
/// anything retryable → 503.
fn upstream_error(e: &UpstreamError, not_found: &str) -> Response {
    match e {
        UpstreamError::NotFound | UpstreamError::NoSuchObject => {
            error(StatusCode::NOT_FOUND, not_found)
        }
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable"),
    }
}

fn closed_response(why: Closed) -> Response {
    match why {
        Closed::Gone => error(StatusCode::NOT_FOUND, "no such stream"),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream subscription lost",
        ),
    }
}

/// What a waiting handler decides on one snapshot.
enum Step<T> {
    /// Done waiting.
    Done(T),
    /// Hold the request until the snapshot changes.
    Wait,
}

/// How a wait ended.
enum Waited<T> {
    /// `decide` was done.
    Done(T),
    /// The stream's state ended.
    Closed(Closed),
    /// The block timeout passed; the last snapshot seen.
    TimedOut(Arc<EdgeSnapshot>),
}

/// Runs `decide` on each snapshot until it is done, the state closes, or the block
/// timeout (taken from the first snapshot, as on the origin) passes.
async fn wait_for<T>(
    stream: &StreamState,
    mut decide: impl FnMut(&EdgeSnapshot) -> Step<T>,
) -> Waited<T> {
    // Most requests are decided on the current snapshot: no receiver, no clock, no timer.
    let snap = stream.snapshot();
    if let Some(why) = snap.closed {
        return Waited::Closed(why);
    }
    if let Step::Done(v) = decide(&snap) {
        return Waited::Done(v);
    }
    drop(snap);
    // Then subscribe and decide again on what is current now, so that no change between
    // the two looks is missed.
    let mut rx = stream.subscribe();
    let mut snap = rx.borrow_and_update().clone();
    let deadline = tokio::time::Instant::now() + snap.block_timeout();
    loop {
        if let Some(why) = snap.closed {
            return Waited::Closed(why);
        }
        match decide(&snap) {
            Step::Done(v) => return Waited::Done(v),
            Step::Wait => match next_snapshot(&mut rx, deadline).await {
                Some(s) => snap = s,
                None => return Waited::TimedOut(snap),
            },
        }
    }
}

async fn next_snapshot(
    rx: &mut watch::Receiver<Arc<EdgeSnapshot>>,
    deadline: tokio::time::Instant,
) -> Option<Arc<EdgeSnapshot>> {
    match tokio::time::timeout_at(deadline, rx.changed()).await {
        Ok(Ok(())) => Some(rx.borrow_and_update().clone()),
        _ => None,
    }
}

async fn media_playlist(stream: &Arc<StreamState>, query: &str) -> Response {
    let q = match hls::parse_query(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad playlist query: {e}")),
    };
    // An LL-HLS player keeps one blocking request in flight; a classic one reloads.
    let meter = stream.viewers();
    let _blocking = if q.msn.is_some() {
        Some(meter.blocking())
    } else {
        meter.reload(stream.now_s());
        None
    };
    let waited = wait_for(stream, |snap| match &snap.playlist {
        Some(p) if snap.live() || p.playlist.ended => match q.msn {
            Some(_) => match hls::blocking_decision(&p.playlist, &q) {
                BlockDecision::Wait => Step::Wait,
                d => Step::Done(d),
            },
            None => Step::Done(BlockDecision::Ready),
        },
        _ => Step::Wait,
    })
    .await;
    match waited {
        Waited::Done(BlockDecision::Ready) => {}
        Waited::Done(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "_HLS_msn is more than two segments beyond the playlist",
            )
        }
        Waited::Closed(why) => return closed_response(why),
        Waited::TimedOut(snap) if snap.live() => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not appear in time",
            )
        }
        Waited::TimedOut(_) => return error(StatusCode::NOT_FOUND, "stream has no media yet"),
    }
    // Rendered from the snapshot current now: never older than the one that was ready.
    let snap = stream.snapshot();
    let skip = !matches!(q.skip, SkipRequest::No);
    match snap.prepared(skip) {
        Some(prepared) => prepared.response(),
        None => error(StatusCode::NOT_FOUND, "stream has no media yet"),
    }
}

async fn multivariant(stream: &StreamState) -> Response {
    let waited = wait_for(stream, |snap| match &snap.playlist {
        Some(p) if snap.live() => Step::Done(p.clone()),
        _ => Step::Wait,
    })
    .await;
    let info = match waited {
        Waited::Done(i) => i,
        Waited::Closed(why) => return closed_response(why),
        Waited::TimedOut(_) => return error(StatusCode::NOT_FOUND, "stream has no media yet"),
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

async fn init(state: &HttpState, stream: &StreamState, id: u64) -> Response {
    const NONE: &str = "no such init segment";
    // As on the origin: wait only while the stream has no media yet.
    let waited = wait_for(stream, |snap| match &snap.playlist {
        Some(p) if snap.live() || p.playlist.ended => Step::Done(id <= p.playlist.next_init_id),
        _ => Step::Wait,
    })
    .await;
    match waited {
        Waited::Done(true) => fetch(state, stream, Object::Init(id), NONE).await,
        Waited::Done(false) | Waited::TimedOut(_) => error(StatusCode::NOT_FOUND, NONE),
        Waited::Closed(why) => closed_response(why),
    }
}

async fn segment(state: &HttpState, stream: &StreamState, msn: u64) -> Response {
    const NONE: &str = "no such segment";
    let place = wait_for(stream, |snap| match &snap.playlist {
        None => Step::Wait,
        Some(p) => match locate_segment(&p.playlist, msn) {
            // Only the segment being built is worth waiting for.
            SegmentPlace::Soon => Step::Wait,
            place => Step::Done(place),
        },
    })
    .await;
    match place {
        Waited::Done(SegmentPlace::Parts(n)) => {
            // Its parts back to back, zero-copy, when all are still in memory.
            if let Some(parts) = Box::pin(cached_parts(state, stream, msn, n)).await {
                state.metrics.cache("hit");
                return media_chunks(parts);
            }
            fetch(state, stream, Object::Segment(msn), NONE).await
        }
        Waited::Done(SegmentPlace::Fetch) => fetch(state, stream, Object::Segment(msn), NONE).await,
        Waited::Done(_) | Waited::TimedOut(_) => error(StatusCode::NOT_FOUND, NONE),
        Waited::Closed(why) => closed_response(why),
    }
}

/// Every part of segment `msn` if all `n` are in memory.
async fn cached_parts(
    state: &HttpState,
    stream: &StreamState,
    msn: u64,
    n: usize,
) -> Option<Vec<Bytes>> {
    let cache = state.streams.cache();
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        let i = u32::try_from(i).ok()?;
        parts.push(cache.peek(stream.name(), Object::Part(msn, i)).await?);
    }
    Some(parts)
}

async fn part(state: &HttpState, stream: &StreamState, msn: u64, i: u32) -> Response {
    const NONE: &str = "no such part";
    // A preload-hinted part is held until the playlist names it: the upstream pushes
    // the part before the playlist that lists it, so it is then in the cache.
    let place = wait_for(stream, |snap| match &snap.playlist {
        None => Step::Wait,
        Some(p) => match locate_part(&p.playlist, msn, i) {
            PartPlace::Soon => Step::Wait,
            place => Step::Done(place),
        },
    })
    .await;
    match place {
        Waited::Done(PartPlace::Listed | PartPlace::Fetch) => {
            fetch(state, stream, Object::Part(msn, i), NONE).await
        }
        Waited::Done(_) => error(StatusCode::NOT_FOUND, NONE),
        Waited::TimedOut(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the part did not appear in time",
        ),
        Waited::Closed(why) => closed_response(why),
    }
}

/// From the cache, or fetched upstream once for every viewer asking at this moment.
async fn fetch(state: &HttpState, stream: &StreamState, object: Object, none: &str) -> Response {
    let streams = &state.streams;
    // Boxed, as every moka future here: see `Streams::get_or_subscribe`.
    match Box::pin(
        streams
            .cache()
            .get_or_fetch(stream.name(), object, streams.upstream()),
    )
    .await
    {
        Ok((b, _)) => media(b),
        Err(e) => upstream_error(&e, none),
    }
}

/// Who `/api/streams` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// The viewer port (the player page): only streams anyone may watch, since the names
    /// of the others are not every viewer's business; no CORS, so no other site's page
    /// reads it.
    Viewers,
    /// The admin port: every stream, with whether it needs a credential.
    Operators,
}

fn api_streams(state: &HttpState, listing: Listing) -> Response {
    let mut list: Vec<serde_json::Value> = state
        .streams
        .list()
        .iter()
        .filter_map(|s| {
            let open = open_to_anyone(state, s.name());
            if listing == Listing::Viewers && !open {
                return None;
            }
            let snap = s.snapshot();
            let p = snap.playlist.as_deref();
            let mut v = serde_json::json!({
                "name": &**s.name(),
                "live": snap.live() && !p.is_some_and(|p| p.playlist.ended),
                "ended": p.is_some_and(|p| p.playlist.ended),
                "codecs": p.map(|p| p.codecs.as_str()).unwrap_or(""),
                "width": p.and_then(|p| p.resolution).map(|r| r.0),
                "height": p.and_then(|p| p.resolution).map(|r| r.1),
                "bandwidth": p.map_or(0, |p| p.bandwidth),
                "media_sequence": p.map_or(0, |p| p.playlist.media_sequence),
            });
            if listing == Listing::Operators {
                v["protected"] = (!open).into();
            }
            Some(v)
        })
        .collect();
    // Streams the cluster has that nobody here watches yet: listed from the controller's
    // assignments (live at an origin), so the player page offers them from the start.
    let held: std::collections::HashSet<String> = state
        .streams
        .list()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    for name in state.streams.upstream().streams() {
        if held.contains(&name) {
            continue;
        }
        let open = open_to_anyone(state, &name);
        if listing == Listing::Viewers && !open {
            continue;
        }
        let mut v = serde_json::json!({ "name": name, "live": true, "ended": false });
        if listing == Listing::Operators {
            v["protected"] = (!open).into();
        }
        list.push(v);
    }
    let body = serde_json::json!({ "streams": list }).to_string();
    respond::admin_only(respond::json(body))
}
