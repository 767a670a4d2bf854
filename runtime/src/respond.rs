//! HTTP responses every node builds the same way: headers (CORS, Content-Type,
//! Cache-Control, Content-Length), the admin endpoints (`/healthz`, `/readyz`,
//! `/metrics`) and the player page (`/`, `/watch/{stream}`, hls.js). Origins and edges
//! serve the same URLs with the same headers because both build responses here.

use crate::body::ChunksBody;
use crate::http::Response;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

/// HLS playlists.
pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Init segments, segments and parts.
pub const MP4_TYPE: &str = "video/mp4";
/// Media objects never change under a name: cache them for a day.
pub const CACHE_IMMUTABLE: &str = "public, max-age=86400, immutable";
/// Playlists change with every part.
pub const CACHE_PLAYLIST: &str = "no-cache";

const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");
const WATCH_HTML: &[u8] = include_bytes!("../assets/watch.html");
const HLS_JS: &[u8] = include_bytes!("../assets/hls.min.js");
const HLS_JS_LICENSE: &[u8] = include_bytes!("../assets/hls.js.LICENSE");

/// The headers every response carries, built without parsing or copying: names are
/// the standard constants and values are static, so only the map itself allocates.
fn head(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    len: u64,
) -> (StatusCode, HeaderMap) {
    let mut h = HeaderMap::with_capacity(8);
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Content-Length, Age, Date",
        ),
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    (status, h)
}

fn build(
    status: StatusCode,
    body: ChunksBody,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let (status, headers) = head(status, content_type, cache, body.len());
    with_head(status, headers, body)
}

fn with_head(status: StatusCode, headers: HeaderMap, body: ChunksBody) -> Response {
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A 200 response built once and answered many times (a playlist version that every
/// viewer of a stream asks for): each answer clones the header map and shares the body.
#[derive(Debug, Clone)]
pub struct Prepared {
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// A playlist.
    pub fn playlist(body: Bytes) -> Self {
        let (_, headers) = head(
            StatusCode::OK,
            PLAYLIST_TYPE,
            CACHE_PLAYLIST,
            body.len() as u64,
        );
        Self { headers, body }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// A response with these headers and body.
    pub fn response(&self) -> Response {
        with_head(
            StatusCode::OK,
            self.headers.clone(),
            ChunksBody::full(self.body.clone()),
        )
    }
}

/// 200 with a body of the given type and caching.
pub fn ok(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    build(StatusCode::OK, ChunksBody::full(body), content_type, cache)
}

/// A playlist.
pub fn playlist(body: Bytes) -> Response {
    ok(body, PLAYLIST_TYPE, CACHE_PLAYLIST)
}

/// A media object.
pub fn media(b: Bytes) -> Response {
    ok(b, MP4_TYPE, CACHE_IMMUTABLE)
}

/// A media object sent as several buffers back to back (a segment as its parts).
pub fn media_chunks(parts: Vec<Bytes>) -> Response {
    build(
        StatusCode::OK,
        ChunksBody::from_chunks(parts),
        MP4_TYPE,
        CACHE_IMMUTABLE,
    )
}

/// JSON for APIs.
pub fn json(body: String) -> Response {
    ok(Bytes::from(body), "application/json", "no-cache")
}

/// A short plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    build(
        status,
        ChunksBody::from(body),
        "text/plain; charset=utf-8",
        "no-store",
    )
}

/// An error with a one-line reason (never cached for long).
pub fn error(status: StatusCode, message: &str) -> Response {
    build(
        status,
        ChunksBody::from(format!("{message}\n")),
        "text/plain; charset=utf-8",
        "no-cache",
    )
}

fn static_asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    build(
        StatusCode::OK,
        ChunksBody::full(Bytes::from_static(bytes)),
        content_type,
        "public, max-age=300",
    )
}

fn cors_preflight() -> Response {
    let mut r = build(
        StatusCode::NO_CONTENT,
        ChunksBody::empty(),
        "text/plain; charset=utf-8",
        "no-store",
    );
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
        (header::ACCESS_CONTROL_MAX_AGE, "86400"),
    ] {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

/// Answers what every node answers alike: CORS preflight, methods other than GET/HEAD,
/// admin endpoints and the player page. Returns the request kind (for metrics) and the
/// response, or `None` for paths the node serves itself (`/live/…`, `/api/…`).
/// `valid_stream` says whether `/watch/{name}` names a possible stream. For a port
/// that only operators reach (the controller's HTTP port); viewer ports use [`viewer`].
pub fn common(
    method: &Method,
    path: &str,
    accept: Option<&HeaderValue>,
    ready: bool,
    registry: &Metrics,
    valid_stream: impl Fn(&str) -> bool,
) -> Option<(&'static str, Response)> {
    if path == "/metrics" && (method == Method::GET || method == Method::HEAD) {
        return Some(("admin", metrics(registry, accept)));
    }
    viewer(method, path, ready, valid_stream)
}

/// [`common`] for a viewer port: the probes (`/healthz`, `/readyz`) and the player page,
/// but not `/metrics`, whose stream names and counters are for operators (it is served on
/// the admin port, [`admin`]).
pub fn viewer(
    method: &Method,
    path: &str,
    ready: bool,
    valid_stream: impl Fn(&str) -> bool,
) -> Option<(&'static str, Response)> {
    if method == Method::OPTIONS {
        return Some(("other", cors_preflight()));
    }
    if method != Method::GET && method != Method::HEAD {
        return Some((
            "other",
            error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD"),
        ));
    }
    let page = |bytes, ty| Some(("page", static_asset(bytes, ty)));
    match path {
        "/healthz" | "/readyz" => probe(path, ready),
        "/" | "/index.html" => page(INDEX_HTML, "text/html; charset=utf-8"),
        "/assets/hls.min.js" => page(HLS_JS, "text/javascript; charset=utf-8"),
        "/assets/hls.js.LICENSE" => page(HLS_JS_LICENSE, "text/plain; charset=utf-8"),
        _ => match path.strip_prefix("/watch/") {
            Some(name) if valid_stream(name) => page(WATCH_HTML, "text/html; charset=utf-8"),
            Some(_) => Some(("page", error(StatusCode::NOT_FOUND, "no such stream"))),
            None => None,
        },
    }
}

fn probe(path: &str, ready: bool) -> Option<(&'static str, Response)> {
    match path {
        "/healthz" => Some(("admin", text(StatusCode::OK, "ok\n"))),
        "/readyz" if ready => Some(("admin", text(StatusCode::OK, "ready\n"))),
        "/readyz" => Some((
            "admin",
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        )),
        _ => None,
    }
}

fn metrics(registry: &Metrics, accept: Option<&HeaderValue>) -> Response {
    let format = crate::metrics::Format::negotiate(accept.and_then(|a| a.to_str().ok()));
    let mut resp = ok(
        Bytes::from(registry.render_as(format)),
        format.content_type(),
        "no-store",
    );
    // The answer depends on `Accept`: a cache in between must not mix the two formats.
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    resp
}

/// The admin port's common routes (`--admin-listen`): `/metrics`, `/healthz`,
/// `/readyz`, and 405 for methods other than GET/HEAD; `None` for the node's own admin
/// paths (`/api/streams`). Its responses carry no CORS headers: no web page of any
/// origin is meant to read them ([`admin_only`]).
pub fn admin(
    method: &Method,
    path: &str,
    accept: Option<&HeaderValue>,
    ready: bool,
    registry: &Metrics,
) -> Option<(&'static str, Response)> {
    if method != Method::GET && method != Method::HEAD {
        let r = error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        return Some(("admin", admin_only(r)));
    }
    let r = match path {
        "/metrics" => Some(("admin", metrics(registry, accept))),
        _ => probe(path, ready),
    };
    r.map(|(k, r)| (k, admin_only(r)))
}

/// The admin port's server limits, from the viewer port's: the same timeouts, few
/// connections (operators and scrapers, not viewers), plain HTTP (the viewer
/// certificate is for viewers' names), on the node's runtime (no I/O threads of its own).
pub fn admin_limits(viewer: &crate::http::ServerLimits) -> crate::http::ServerLimits {
    crate::http::ServerLimits {
        max_connections: 64,
        tls: None,
        io_threads: None,
        // Its own `listener` label: the open-connections gauge and the cap are per port.
        name: match viewer.name {
            "edge" => "edge_admin",
            "origin" => "origin_admin",
            _ => "admin",
        },
        ..viewer.clone()
    }
}

/// `resp` without its CORS headers (admin answers, and viewer-port answers no other
/// site's page should read, such as `/api/streams`).
pub fn admin_only(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    h.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    resp
}

/// `Cache-Control` of an answer that only its requester may keep: objects of a stream
/// that needs a token (or an admission webhook's yes) must not be kept by a shared cache,
/// which might ignore the query (`?token=`) and serve them to anyone.
pub const CACHE_PRIVATE: &str = "private, max-age=86400, immutable";
/// A protected stream's playlists ([`make_private`]).
pub const CACHE_PLAYLIST_PRIVATE: &str = "private, no-cache";

/// Turns a shareable `Cache-Control` of `resp` into one for the viewer's own cache only:
/// `public, …` becomes `private, …` (the same lifetime), a playlist's `no-cache` becomes
/// `private, no-cache` (a shared cache may otherwise store it and revalidate it for
/// anyone); `no-store` is kept as it is.
pub fn make_private(resp: &mut Response) {
    let h = resp.headers_mut();
    let private = match h.get(header::CACHE_CONTROL).map(HeaderValue::as_bytes) {
        Some(v) if v == CACHE_IMMUTABLE.as_bytes() => HeaderValue::from_static(CACHE_PRIVATE),
        Some(v) if v == CACHE_PLAYLIST.as_bytes() => {
            HeaderValue::from_static(CACHE_PLAYLIST_PRIVATE)
        }
        Some(v) if v.starts_with(b"public") => {
            let rest = String::from_utf8_lossy(&v[b"public".len()..]).into_owned();
            match HeaderValue::try_from(format!("private{rest}")) {
                Ok(v) => v,
                Err(_) => HeaderValue::from_static("private"),
            }
        }
        _ => return,
    };
    h.insert(header::CACHE_CONTROL, private);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_routes_and_headers() {
        let reg = Metrics::new();
        let any = |_: &str| true;
        let (kind, r) = common(&Method::GET, "/healthz", None, true, &reg, any).expect("handled");
        assert_eq!((kind, r.status()), ("admin", StatusCode::OK));
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let (_, r) = common(&Method::GET, "/readyz", None, false, &reg, any).expect("handled");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let (kind, r) =
            common(&Method::GET, "/watch/demo", None, true, &reg, any).expect("handled");
        assert_eq!((kind, r.status()), ("page", StatusCode::OK));
        let (_, r) =
            common(&Method::GET, "/watch/x", None, true, &reg, |_| false).expect("handled");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (_, r) =
            common(&Method::POST, "/live/x/index.m3u8", None, true, &reg, any).expect("handled");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let (_, r) = common(
            &Method::OPTIONS,
            "/live/x/index.m3u8",
            None,
            true,
            &reg,
            any,
        )
        .expect("handled");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(common(&Method::GET, "/live/x/index.m3u8", None, true, &reg, any).is_none());
        let r = media_chunks(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_IMMUTABLE);
    }

    #[test]
    fn metrics_are_served_on_the_admin_port_only() {
        let reg = Metrics::new();
        let any = |_: &str| true;
        assert!(viewer(&Method::GET, "/metrics", true, any).is_none());
        let (_, r) = viewer(&Method::GET, "/healthz", true, any).expect("probe");
        assert_eq!(r.status(), StatusCode::OK);
        let (_, r) = admin(&Method::GET, "/metrics", None, true, &reg).expect("metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(r.headers()[header::VARY], "accept");
        let om =
            HeaderValue::from_static("application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1");
        let (_, r) = admin(&Method::GET, "/metrics", Some(&om), true, &reg).expect("metrics");
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        assert!(r
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
        let (_, r) = admin(&Method::GET, "/readyz", None, false, &reg).expect("probe");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let (_, r) = admin(&Method::POST, "/metrics", None, true, &reg).expect("405");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(admin(&Method::GET, "/api/streams", None, true, &reg).is_none());
        assert!(admin(&Method::GET, "/", None, true, &reg).is_none());
        // The controller's operator-only port keeps /metrics.
        let (_, r) = common(&Method::GET, "/metrics", None, true, &reg, any).expect("metrics");
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn private_objects_keep_their_lifetime_for_the_viewer_only() {
        let mut r = media(Bytes::from_static(b"x"));
        make_private(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_PRIVATE);
        let mut r = static_asset(b"x", "text/plain");
        make_private(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "private, max-age=300");
        let mut r = playlist(Bytes::from_static(b"#EXTM3U\n"));
        make_private(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_PLAYLIST_PRIVATE);
        let mut r = text(StatusCode::OK, "ok");
        make_private(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn a_prepared_playlist_is_the_same_response_every_time() {
        let body = Bytes::from_static(b"#EXTM3U\n");
        let plain = playlist(body.clone());
        let prepared = Prepared::playlist(body.clone());
        for _ in 0..2 {
            let r = prepared.response();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers(), plain.headers());
            assert_eq!(r.headers()[header::CONTENT_LENGTH], "8");
            assert_eq!(r.headers()[header::CONTENT_TYPE], PLAYLIST_TYPE);
            assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_PLAYLIST);
            assert_eq!(r.body().len(), 8);
        }
        assert_eq!(
            prepared.body().as_ptr(),
            body.as_ptr(),
            "shared, not copied"
        );
    }
}
