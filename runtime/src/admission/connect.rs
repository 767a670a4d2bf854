//! The webhook's connections: TCP through hyper-util's `HttpConnector` (name resolution,
//! the connect timeout, no Nagle), then, for an `https://` URL, a rustls handshake that
//! names the URL's host (SNI and the certificate's name check) and offers ALPN
//! `http/1.1`. The legacy client pools what this returns per scheme and authority, so a
//! handshake is paid once per pooled connection, not once per call.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// ALPN id offered to an HTTPS webhook: the client speaks HTTP/1.1 only.
pub(super) const HTTP1_ALPN: &[u8] = b"http/1.1";

/// Why a TLS session with the webhook could not be set up; the reason is rustls' (an
/// unknown issuer, a name the certificate is not valid for, an expired certificate) or
/// the transport's.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {host} failed: {reason}")]
pub(super) struct TlsHandshakeError {
    host: String,
    reason: String,
}

/// Plain TCP for `http://`, TLS over it for `https://`.
#[derive(Clone)]
pub(super) struct WebhookConnector {
    tcp: HttpConnector,
    /// `None`: no TLS configuration, so `https://` URLs fail (never after validation).
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for WebhookConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConnector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookConnector {
    /// `tcp` (its settings kept; it is told to accept `https://` URIs) and, for
    /// `https://`, the client configuration `tls`.
    pub(super) fn new(
        mut tcp: HttpConnector,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        tcp.enforce_http(false);
        Self {
            tcp,
            tls: tls.map(tokio_rustls::TlsConnector::from),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for WebhookConnector {
    type Response = WebhookStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<WebhookStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tcp = self.tcp.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
                return Ok(WebhookStream::Plain(tcp));
            }
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let fail = |reason: String| TlsHandshakeError {
                host: host.clone(),
                reason,
            };
            let tls = tls.ok_or_else(|| fail("no TLS client configuration".into()))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("not a server name: {e}")))?;
            // The error's text is rustls' own (`invalid peer certificate: UnknownIssuer`).
            let stream = tls
                .connect(name, tcp.into_inner())
                .await
                .map_err(|e| fail(e.to_string()))?;
            Ok(WebhookStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to the webhook.
#[derive(Debug)]
pub(super) enum WebhookStream {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://` (boxed: a TLS session is a kilobyte of buffers and state).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for WebhookStream {
    fn connected(&self) -> Connected {
        // HTTP/1.1 either way (the only ALPN id offered).
        match self {
            WebhookStream::Plain(s) => s.connected(),
            WebhookStream::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

impl Read for WebhookStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WebhookStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            WebhookStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for WebhookStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WebhookStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            WebhookStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WebhookStream::Plain(s) => Pin::new(s).poll_flush(cx),
            WebhookStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WebhookStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WebhookStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WebhookStream::Plain(s) => s.is_write_vectored(),
            WebhookStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WebhookStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WebhookStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}
