//! The HTTP server loop shared by nodes: HTTP/1.1 and HTTP/2 (h2c by prior knowledge) on
//! one port, a bound on concurrent connections, and a graceful drain on cancellation.

use crate::body::ChunksBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Request and response types every handler uses.
pub type Request = http::Request<Incoming>;
/// Response with a zero-copy body.
pub type Response = http::Response<ChunksBody>;

/// The remote address of the connection a request came on, in the request's extensions
/// (`req.extensions().get::<PeerAddr>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Limits of the HTTP server loop.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_grace: Duration,
    /// A connection that sends no complete request header for this long is closed.
    pub header_read_timeout: Duration,
    /// Serve HTTPS with this configuration (ALPN picks h2 or http/1.1); plaintext
    /// HTTP/1.1 and h2c when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve connections on this many threads of their own, each with its own event
    /// loop and timers, the way nginx runs one worker process per core; `None`: on the
    /// caller's runtime. A multi-thread tokio runtime has a single I/O driver that one
    /// worker polls at a time, so on a busy machine its workers end up taking turns
    /// rather than serving side by side. Handlers then run on those threads: what they
    /// spawn belongs there, and ends when the server stops.
    pub io_threads: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            drain_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            tls: None,
            io_threads: None,
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets open connections finish their requests for up to `limits.drain_grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // While a request is in flight, do not read ahead to detect the client going
        // away: that read needs a fresh read buffer (the old one is still shared with
        // the request being answered), i.e. 8 KiB more per held request, and an edge
        // holds a blocking reload and a preload hint per LL-HLS viewer all the time.
        // A client that left is noticed when its answer is written instead, which
        // for a held request is within one part (or the block timeout).
        .half_close(true);
    builder.http2().max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let acceptor = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut shards = match IoThreads::start(limits.io_threads.unwrap_or(0)) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot start the HTTP I/O threads; serving on the runtime");
            IoThreads::default()
        }
    };

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        // A child token per connection: the connection task polls its token on every
        // wake-up, and polling takes the token node's lock; one shared node would be a
        // lock every connection of every worker thread contends on.
        let shutdown = shutdown.child_token();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_read_timeout;
        let shard = shards.next();
        // On an I/O thread, the socket must be registered with that thread's driver.
        let stream = match shard {
            None => Ok(Accepted::Here(stream)),
            Some(_) => stream.into_std().map(Accepted::HandedOver),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection over");
                continue;
            }
        };
        let connection = async move {
            let _permit = permit;
            let stream = match stream.register() {
                Ok(s) => s,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot register the connection");
                    return;
                }
            };
            match acceptor {
                None => serve_connection(stream, peer, &builder, handler, &shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, &builder, handler, &shutdown).await
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        };
        match shard {
            None => tracker.spawn(connection),
            Some(handle) => tracker.spawn_on(connection, &handle),
        };
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("http drain grace elapsed with connections still open");
    }
    drop(shards);
}

/// Serves one accepted connection (plain or TLS) until it ends or shutdown drains it.
async fn serve_connection<I, H, F>(
    io: I,
    peer: std::net::SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    handler: H,
    shutdown: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let svc = service_fn(move |mut req: Request| {
        req.extensions_mut().insert(PeerAddr(peer));
        // Called here, not inside the future: no clone of the handler per request.
        let response = handler(req);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(error) = res {
                tracing::debug!(%peer, %error, "http connection ended with error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The server's own I/O threads: one current-thread runtime each, fed connections
/// round-robin; they stop when this is dropped (dropping what still runs on them).
#[derive(Debug, Default)]
struct IoThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: usize,
    stop: CancellationToken,
}

impl IoThreads {
    fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = IoThreads::default();
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let stop = threads.stop.clone();
            std::thread::Builder::new()
                .name(format!("http-io-{i}"))
                .spawn(move || rt.block_on(stop.cancelled()))?;
            threads.handles.push(handle);
        }
        Ok(threads)
    }

    /// The thread for the next connection; `None` without threads.
    fn next(&mut self) -> Option<tokio::runtime::Handle> {
        let h = self
            .handles
            .get(self.next % self.handles.len().max(1))?
            .clone();
        self.next = self.next.wrapping_add(1);
        Some(h)
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection accepted on the caller's runtime, or handed over as a std socket to be
/// registered with the driver of the I/O thread that serves it.
enum Accepted {
    Here(tokio::net::TcpStream),
    HandedOver(std::net::TcpStream),
}

impl Accepted {
    fn register(self) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Accepted::Here(s) => Ok(s),
            Accepted::HandedOver(s) => tokio::net::TcpStream::from_std(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Requests on I/O threads are answered there, keep-alive works, and cancelling
    /// drains and stops the server.
    #[tokio::test]
    async fn io_threads_serve_and_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let limits = ServerLimits {
            io_threads: Some(2),
            ..ServerLimits::default()
        };
        let handler = |_req: Request| async {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            crate::respond::text(
                http::StatusCode::OK,
                if thread.starts_with("http-io-") {
                    "io\n"
                } else {
                    "runtime\n"
                },
            )
        };
        let server = tokio::spawn(serve(listener, handler, limits, shutdown.clone()));
        let deadline = Duration::from_secs(10);
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            for _ in 0..2 {
                c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("write");
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.ends_with(b"io\n") && !got.ends_with(b"runtime\n") {
                    let n = tokio::time::timeout(deadline, c.read(&mut buf))
                        .await
                        .expect("answered in time")
                        .expect("read");
                    assert!(n > 0, "closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                assert!(text.ends_with("\r\n\r\nio\n"), "{text}");
            }
        }
        shutdown.cancel();
        tokio::time::timeout(deadline, server)
            .await
            .expect("stopped in time")
            .expect("server task");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
