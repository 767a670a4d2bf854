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
/// `valid_stream` says whether `/watch/{name}` names a possible stream.
pub fn common(
    method: &Method,
    path: &str,
    ready: bool,
    registry: &Metrics,
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
        "/healthz" => Some(("admin", text(StatusCode::OK, "ok\n"))),
        "/readyz" if ready => Some(("admin", text(StatusCode::OK, "ready\n"))),
        "/readyz" => Some((
            "admin",
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        )),
        "/metrics" => Some((
            "admin",
            ok(
                Bytes::from(registry.render()),
                crate::metrics::CONTENT_TYPE,
                "no-store",
            ),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_routes_and_headers() {
        let reg = Metrics::new();
        let any = |_: &str| true;
        let (kind, r) = common(&Method::GET, "/healthz", true, &reg, any).expect("handled");
        assert_eq!((kind, r.status()), ("admin", StatusCode::OK));
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let (_, r) = common(&Method::GET, "/readyz", false, &reg, any).expect("handled");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let (kind, r) = common(&Method::GET, "/watch/demo", true, &reg, any).expect("handled");
        assert_eq!((kind, r.status()), ("page", StatusCode::OK));
        let (_, r) = common(&Method::GET, "/watch/x", true, &reg, |_| false).expect("handled");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (_, r) = common(&Method::POST, "/live/x/index.m3u8", true, &reg, any).expect("handled");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let (_, r) =
            common(&Method::OPTIONS, "/live/x/index.m3u8", true, &reg, any).expect("handled");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(common(&Method::GET, "/live/x/index.m3u8", true, &reg, any).is_none());
        let r = media_chunks(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(r.headers()[header::CACHE_CONTROL], CACHE_IMMUTABLE);
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
