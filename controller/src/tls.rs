//! TLS on the gRPC port: the accept loop that runs handshakes off the accept path and
//! hands tonic finished TLS streams ([`incoming`]), the connection's peer as the
//! handshake established it ([`GrpcPeer`], a request extension), and the check that
//! only cluster nodes call `NodeService` ([`NodeAuth`]), each as the node its
//! certificate names ([`crate::identity`]).
//!
//! Why not tonic's own `tls-*` features: they build a fixed rustls configuration from
//! one identity, so the certificate could not be reloaded from disk, and they verify a
//! single client CA, while nodes (cluster CA) and operators (operator CA) must be told
//! apart. tokio-rustls and rustls are already in the tree for the relay and HTTPS, so
//! doing the handshake here adds no dependency and no second crypto backend.

use crate::identity::NodeCaller;
use ferrocast_tls::grpc::{Peer, PeerClassifier};
use ferrocast_tls::identity::{self, NodeIdentity};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tonic::{Request, Status};

/// A handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes under way at once; further connections are closed at once.
pub const MAX_HANDSHAKES: usize = 256;

/// Who is at the other end of a TLS gRPC connection (a request extension).
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// What its certificate made of it.
    pub peer: Arc<Peer>,
    /// The node identities a cluster certificate names (`ferrocast://ROLE/ID`; empty
    /// for other peers, and for a cluster certificate that names none).
    pub identities: Arc<[NodeIdentity]>,
}

/// The client's address of a request, over TLS or plain TCP.
pub fn remote_addr<T>(req: &Request<T>) -> Option<SocketAddr> {
    req.remote_addr()
        .or_else(|| req.extensions().get::<GrpcPeer>().map(|p| p.addr))
}

/// A TLS connection whose handshake is done.
#[derive(Debug)]
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    info: GrpcPeer,
}

impl Connected for TlsConn {
    type ConnectInfo = GrpcPeer;

    fn connect_info(&self) -> GrpcPeer {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts on `listener` until `cancel`, runs each handshake in its own task (bounded
/// in number and time) and yields the finished connections. A failed handshake closes
/// only that connection, with a log line: a certificate from an unknown CA at `warn`
/// (a misconfigured node), anything else (port scans, probes) at `debug`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    classifier: PeerClassifier,
    cancel: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let classifier = Arc::new(classifier);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let tracker = TaskTracker::new();
        loop {
            let (sock, addr) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "gRPC connection refused: too many TLS handshakes under way");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let (acceptor, classifier, tx) = (acceptor.clone(), classifier.clone(), tx.clone());
            tracker.spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        let cert_problem = error
                            .get_ref()
                            .and_then(|e| e.downcast_ref::<rustls::Error>())
                            .is_some_and(|e| {
                                matches!(
                                    e,
                                    rustls::Error::InvalidCertificate(_)
                                        | rustls::Error::NoCertificatesPresented
                                )
                            });
                        if cert_problem {
                            tracing::warn!(%addr, %error, "gRPC TLS handshake refused: client certificate");
                        } else {
                            tracing::debug!(%addr, %error, "gRPC TLS handshake failed");
                        }
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "gRPC TLS handshake timed out");
                        return;
                    }
                };
                let chain = tls.get_ref().1.peer_certificates();
                let peer = classifier.classify(chain);
                if let Peer::Unrecognized(cn) = &peer {
                    tracing::warn!(%addr, cn = %cn, "client certificate names no operator (admin:NAME or read:NAME); its calls are refused");
                }
                let identities: Arc<[NodeIdentity]> = match (&peer, chain.and_then(|c| c.first())) {
                    (Peer::Node, Some(leaf)) => identity::identities(leaf).into(),
                    _ => Arc::new([]),
                };
                let info = GrpcPeer {
                    addr,
                    peer: Arc::new(peer),
                    identities,
                };
                let _ = tx.send(Ok(TlsConn { io: tls, info })).await;
            });
        }
        tracker.close();
        tracker.wait().await;
    });
    ReceiverStream::new(rx)
}

/// `NodeService` over TLS: only peers with a cluster certificate that names a node
/// (`ferrocast://ROLE/ID`) may call it, and each call carries that identity
/// ([`NodeCaller`], checked by the calls). Without TLS (`required: false`) every call
/// passes as [`NodeCaller::Unverified`].
#[derive(Debug, Clone, Copy)]
pub struct NodeAuth {
    /// Whether calls need a cluster certificate.
    pub required: bool,
}

impl tonic::service::Interceptor for NodeAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            req.extensions_mut().insert(NodeCaller::Unverified);
            return Ok(req);
        }
        let caller = match req.extensions().get::<GrpcPeer>() {
            Some(p) if *p.peer == Peer::Node && !p.identities.is_empty() => NodeCaller::Verified {
                addr: p.addr,
                identities: p.identities.clone(),
            },
            Some(p) if *p.peer == Peer::Node => {
                tracing::warn!(peer = %p.addr,
                    "node call refused: the cluster certificate names no node (no ferrocast://ROLE/ID URI; issue it with ferrocast certs --node ROLE:ID)");
                return Err(crate::api::ApiError::Forbidden(
                    "the client certificate names no node (ferrocast://ROLE/ID)".into(),
                )
                .into());
            }
            p => {
                tracing::warn!(peer = ?p.map(|p| p.addr), "node call refused: no cluster certificate");
                return Err(Status::unauthenticated(
                    "node calls need a client certificate from the cluster CA",
                ));
            }
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}
