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
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            drain_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            tls: None,
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
        .keep_alive(true);
    builder.http2().max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let acceptor = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);

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
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_read_timeout;
        tracker.spawn(async move {
            let _permit = permit;
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
        });
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("http drain grace elapsed with connections still open");
    }
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
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
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
