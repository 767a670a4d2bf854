//! Minimal HTTP clients for the viewers: GET only, bounded header and body sizes and a
//! deadline on every request. [`Conn`] is our own HTTP/1.1 client, one request at a
//! time on a keep-alive connection, `Content-Length` or chunked bodies. [`H2Conn`] is
//! one HTTP/2 connection (h2c, prior knowledge; hyper's client) that carries a viewer's
//! concurrent requests, as a browser multiplexes a player's requests over HTTP/2.
//! Enough to behave like a player; nothing else (no TLS, no redirects, no pipelining).

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head we accept.
const MAX_HEAD: usize = 16 * 1024;
/// Room read into when nothing bigger is expected: a response head with a playlist.
const READ_SIZE: usize = 8 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request did not complete before its deadline.
    #[error("timed out")]
    Timeout,
    /// Connecting, reading or writing failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The server closed the connection before answering.
    #[error("connection closed before the response")]
    Closed,
    /// The server answered with a non-2xx status.
    #[error("status {0}")]
    Status(u16),
    /// The response was not HTTP/1.x as we understand it.
    #[error("bad response: {0}")]
    Protocol(&'static str),
    /// The body or head was larger than allowed.
    #[error("response too large")]
    TooLarge,
}

impl HttpError {
    /// A short label for grouping errors in reports.
    pub fn label(&self) -> String {
        match self {
            HttpError::Timeout => "timeout".into(),
            HttpError::Io(_) => "io".into(),
            HttpError::Closed => "closed".into(),
            HttpError::Status(s) => format!("status_{s}"),
            HttpError::Protocol(_) => "protocol".into(),
            HttpError::TooLarge => "too_large".into(),
        }
    }
}

/// An `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    /// Parses an absolute `http://` URL.
    pub fn parse(s: &str) -> Option<Url> {
        let rest = s.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // "[::1]:8080", "[::1]", "host:8080", "host".
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !authority.ends_with(']') => (h, p.parse().ok()?),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return None;
        }
        Some(Url {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// Resolves a URI reference found in a playlist against this URL.
    pub fn join(&self, reference: &str) -> Url {
        if reference.starts_with("http://") {
            if let Some(u) = Url::parse(reference) {
                return u;
            }
        }
        let path = if reference.starts_with('/') {
            reference.to_owned()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{reference}")
        };
        Url {
            host: self.host.clone(),
            port: self.port,
            path,
        }
    }

    /// `host:port` as a Host header or an absolute URI writes it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same resource with `query` instead of any query it had.
    pub fn with_query(&self, query: &str) -> Url {
        let base = self.path.split('?').next().unwrap_or("/");
        Url {
            path: format!("{base}?{query}"),
            ..self.clone()
        }
    }
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code (2xx).
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// One keep-alive connection to one server, opened lazily and reopened after errors.
#[derive(Debug)]
pub struct Conn {
    host: String,
    port: u16,
    /// `host:port` as the Host header writes it.
    authority: String,
    stream: Option<TcpStream>,
    buf: BytesMut,
    max_body: usize,
}

impl Conn {
    /// A connection to `url`'s host; bodies larger than `max_body` are errors.
    pub fn new(url: &Url, max_body: usize) -> Self {
        Conn {
            host: url.host.clone(),
            port: url.port,
            authority: url.authority(),
            stream: None,
            buf: BytesMut::new(),
            max_body,
        }
    }

    /// GETs `path` within `timeout` (connecting included). Non-2xx is an error. A
    /// reused connection the server had already closed is retried once on a new one.
    pub async fn get(&mut self, path: &str, timeout: Duration) -> Result<Response, HttpError> {
        let result = match tokio::time::timeout(timeout, self.get_inner(path)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout),
        };
        if result.is_err() {
            // The connection is in an unknown state mid-response: never reuse it.
            self.stream = None;
            self.buf.clear();
        }
        match result {
            Ok(r) if !(200..300).contains(&r.status) => Err(HttpError::Status(r.status)),
            other => other,
        }
    }

    async fn get_inner(&mut self, path: &str) -> Result<Response, HttpError> {
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                let s = TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(io)?;
                s.set_nodelay(true).map_err(io)?;
                self.stream = Some(s);
                self.buf.clear();
            }
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\n\
                 Accept: */*\r\n\r\n",
                self.authority
            );
            let sent = match self.stream.as_mut() {
                Some(s) => s.write_all(request.as_bytes()).await,
                None => return Err(HttpError::Closed),
            };
            let result = match sent {
                Ok(()) => self.read_response().await,
                Err(e) => Err(io(e)),
            };
            match result {
                Err(HttpError::Closed | HttpError::Io(_)) if reused && attempt == 0 => {
                    self.stream = None;
                }
                other => return other,
            }
        }
        Err(HttpError::Closed)
    }

    /// Reads more bytes into the buffer, with room for at least `want` more (a small
    /// read size by default: a body handed out shares the buffer's allocation, so
    /// whatever room is reserved past it is allocated anew for every response); Ok(0)
    /// at end of stream.
    async fn fill(&mut self, want: usize) -> Result<usize, HttpError> {
        let stream = self.stream.as_mut().ok_or(HttpError::Closed)?;
        self.buf.reserve(want.max(READ_SIZE));
        stream.read_buf(&mut self.buf).await.map_err(io)
    }

    async fn read_response(&mut self) -> Result<Response, HttpError> {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::TooLarge);
            }
            if self.fill(0).await? == 0 {
                return Err(if self.buf.is_empty() {
                    HttpError::Closed
                } else {
                    HttpError::Protocol("eof in head")
                });
            }
        };
        let head = self.buf.split_to(head_end + 4);
        let head = std::str::from_utf8(&head).map_err(|_| HttpError::Protocol("head not utf-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut sl = status_line.splitn(3, ' ');
        let version = sl.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(HttpError::Protocol("not HTTP/1.x"));
        }
        let status: u16 = sl
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(HttpError::Protocol("bad status line"))?;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = version == "HTTP/1.0";
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    v.parse()
                        .map_err(|_| HttpError::Protocol("content-length"))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
        }
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Bytes::new()
        } else if chunked {
            self.read_chunked().await?
        } else if let Some(n) = content_length {
            if n > self.max_body {
                return Err(HttpError::TooLarge);
            }
            while self.buf.len() < n {
                if self.fill(n - self.buf.len()).await? == 0 {
                    return Err(HttpError::Protocol("eof in body"));
                }
            }
            self.buf.split_to(n).freeze()
        } else {
            // Delimited by the end of the connection.
            close = true;
            while self.fill(0).await? != 0 {
                if self.buf.len() > self.max_body {
                    return Err(HttpError::TooLarge);
                }
            }
            self.buf.split().freeze()
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }

    async fn read_chunked(&mut self) -> Result<Bytes, HttpError> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.buf.len() > 1024 {
                    return Err(HttpError::Protocol("chunk size line"));
                }
                if self.fill(0).await? == 0 {
                    return Err(HttpError::Protocol("eof in chunk size"));
                }
            };
            let size_line = std::str::from_utf8(&self.buf[..line_end])
                .map_err(|_| HttpError::Protocol("chunk size"))?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| HttpError::Protocol("chunk size"))?;
            self.buf.advance(line_end + 2);
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if self.buf.len() > MAX_HEAD {
                            return Err(HttpError::TooLarge);
                        }
                        if self.fill(0).await? == 0 {
                            return Err(HttpError::Protocol("eof in trailers"));
                        }
                    };
                    self.buf.advance(end + 2);
                    if end == 0 {
                        return Ok(body.freeze());
                    }
                }
            }
            if body.len() + size > self.max_body {
                return Err(HttpError::TooLarge);
            }
            while self.buf.len() < size + 2 {
                if self.fill(0).await? == 0 {
                    return Err(HttpError::Protocol("eof in chunk"));
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(HttpError::Protocol("chunk not followed by CRLF"));
            }
            self.buf.advance(size + 2);
        }
    }
}

/// One HTTP/2 connection (h2c with prior knowledge) shared by concurrent requests,
/// opened on first use and reopened after it fails. Clones share the connection.
#[derive(Debug, Clone)]
pub struct H2Conn {
    inner: Arc<H2Inner>,
}

#[derive(Debug)]
struct H2Inner {
    host: String,
    port: u16,
    /// `host:port` as the request URIs write it.
    authority: String,
    max_body: usize,
    sender: tokio::sync::Mutex<Option<SendRequest<Empty<Bytes>>>>,
}

impl H2Conn {
    /// A connection to `url`'s host; bodies larger than `max_body` are errors.
    pub fn new(url: &Url, max_body: usize) -> Self {
        H2Conn {
            inner: Arc::new(H2Inner {
                host: url.host.clone(),
                port: url.port,
                authority: url.authority(),
                max_body,
                sender: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// GETs `path` within `timeout` (connecting included). Non-2xx is an error.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Response, HttpError> {
        let result = match tokio::time::timeout(timeout, self.get_inner(path)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout),
        };
        match result {
            Ok(r) if !(200..300).contains(&r.status) => Err(HttpError::Status(r.status)),
            other => other,
        }
    }

    async fn sender(&self) -> Result<SendRequest<Empty<Bytes>>, HttpError> {
        let mut slot = self.inner.sender.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let tcp = TcpStream::connect((self.inner.host.as_str(), self.inner.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(h2_error)?;
        // Ends when every clone of the sender is gone (the viewer stopped) or on error.
        tokio::spawn(conn);
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn get_inner(&self, path: &str) -> Result<Response, HttpError> {
        let uri = format!("http://{}{path}", self.inner.authority);
        let request = http::Request::get(uri)
            .header(http::header::USER_AGENT, "ferrocast-bench")
            .body(Empty::new())
            .map_err(|_| HttpError::Protocol("bad request path"))?;
        let mut sender = self.sender().await?;
        sender.ready().await.map_err(h2_error)?;
        let resp = sender.send_request(request).await.map_err(h2_error)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), self.inner.max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<LengthLimitError>() {
                Ok(_) => HttpError::TooLarge,
                Err(e) => HttpError::Io(e.to_string()),
            })?
            .to_bytes();
        Ok(Response { status, body })
    }
}

fn h2_error(e: hyper::Error) -> HttpError {
    if e.is_closed() || e.is_canceled() {
        HttpError::Closed
    } else {
        HttpError::Io(e.to_string())
    }
}

fn io(e: std::io::Error) -> HttpError {
    HttpError::Io(e.kind().to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8081/live/k/index.m3u8?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8081));
        assert_eq!(u.join("part-1.2.m4s").path, "/live/k/part-1.2.m4s");
        assert_eq!(u.join("/other/seg.ts").path, "/other/seg.ts");
        assert_eq!(
            u.with_query("_HLS_msn=3&_HLS_part=1").path,
            "/live/k/index.m3u8?_HLS_msn=3&_HLS_part=1"
        );
        let v6 = Url::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(u.authority(), "127.0.0.1:8081");
        assert_eq!(Url::parse("http://[::1]/x").unwrap().port, 80);
        let d = Url::parse("http://example").unwrap();
        assert_eq!((d.port, d.path.as_str()), (80, "/"));
        assert!(Url::parse("https://x/").is_none());
        assert!(Url::parse("http://:80/").is_none());
    }

    /// Serves canned responses, one per request, on one connection, then closes.
    async fn serve(responses: Vec<&'static [u8]>) -> Url {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for r in responses {
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(r).await.unwrap();
            }
        });
        Url::parse(&format!("http://{addr}/a/b.m3u8")).unwrap()
    }

    #[tokio::test]
    async fn keep_alive_length_and_chunked() {
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let mut c = Conn::new(&url, 1024);
        let t = Duration::from_secs(5);
        assert_eq!(&c.get("/a", t).await.unwrap().body[..], b"hello");
        assert_eq!(&c.get("/b", t).await.unwrap().body[..], b"abcde");
        assert_eq!(c.get("/c", t).await.unwrap_err(), HttpError::Status(404));
    }

    #[tokio::test]
    async fn bounds_and_deadlines() {
        let url = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"]).await;
        let mut c = Conn::new(&url, 1024);
        assert_eq!(
            c.get("/", Duration::from_secs(5)).await.unwrap_err(),
            HttpError::TooLarge
        );
        // A server that never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        let mut c = Conn::new(&url, 1024);
        assert_eq!(
            c.get("/", Duration::from_millis(200)).await.unwrap_err(),
            HttpError::Timeout
        );
    }
}
