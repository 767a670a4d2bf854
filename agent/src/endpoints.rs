//! The controller replicas a node knows, which one it talks to now, and calls that
//! follow the leader. `https://` replicas are reached over TLS with the node's cluster
//! certificate; a leader learned from a redirect (`host:port`) gets the scheme of the
//! configured replicas.

use crate::AgentError;
use ferrocast_proto::controller::v1::node_service_client::NodeServiceClient;
use ferrocast_tls::grpc::TlsConnector;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

/// Response metadata key carrying the leader's gRPC address on a follower's refusal
/// (the controller sets it; the value is `host:port`).
pub const LEADER_METADATA: &str = "ferrocast-leader";

/// Largest reply accepted (a snapshot of many assignments).
const MAX_REPLY_BYTES: usize = 16 << 20;
/// Leaders learned from redirects beyond the configured replicas, at most.
const MAX_LEARNED: usize = 8;

#[derive(Debug)]
struct Entry {
    /// `host:port`, to match the leader metadata.
    authority: String,
    channel: Channel,
}

#[derive(Debug)]
struct State {
    list: Vec<Entry>,
    current: usize,
    learned: usize,
}

/// Controller replicas, each with a lazily connected channel.
#[derive(Debug)]
pub(crate) struct Endpoints {
    state: Mutex<State>,
    connect_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Scheme for URLs without one (leaders learned from redirects): `https` when every
    /// configured replica is.
    default_scheme: &'static str,
}

fn entry(
    url: &str,
    connect_timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
    default_scheme: &str,
) -> Result<Entry, AgentError> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("{default_scheme}://{url}")
    };
    let invalid =
        |e: &dyn std::fmt::Display| AgentError::InvalidEndpoint(url.clone(), e.to_string());
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(&e))?;
    let authority = endpoint
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| invalid(&"no host"))?;
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    let channel = match (endpoint.uri().scheme_str(), tls) {
        (Some("https"), Some(tls)) => {
            endpoint.connect_with_connector_lazy(TlsConnector::new(tls.clone()))
        }
        (Some("https"), None) => {
            return Err(invalid(&"https needs the cluster certificates (--tls-dir)"))
        }
        (Some("http"), _) => endpoint.connect_lazy(),
        (other, _) => return Err(invalid(&format!("unknown scheme {other:?}"))),
    };
    Ok(Entry { authority, channel })
}

fn client(channel: Channel) -> NodeServiceClient<Channel> {
    NodeServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES)
}

impl Endpoints {
    pub(crate) fn new(
        urls: &[String],
        connect_timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, AgentError> {
        let urls: Vec<&str> = urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        let default_scheme = if !urls.is_empty() && urls.iter().all(|u| u.starts_with("https://")) {
            "https"
        } else {
            "http"
        };
        let list = urls
            .iter()
            .map(|u| entry(u, connect_timeout, tls.as_ref(), default_scheme))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(AgentError::NoController);
        }
        Ok(Endpoints {
            state: Mutex::new(State {
                list,
                current: 0,
                learned: 0,
            }),
            connect_timeout,
            tls,
            default_scheme,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replica believed to lead, and a client for it.
    pub(crate) fn current(&self) -> (usize, NodeServiceClient<Channel>) {
        let s = self.lock();
        (s.current, client(s.list[s.current].channel.clone()))
    }

    /// Moves on from replica `idx` (unless someone already did).
    pub(crate) fn advance(&self, idx: usize) {
        let mut s = self.lock();
        if s.current == idx {
            s.current = (idx + 1) % s.list.len();
        }
    }

    /// Points at the leader named in `status`, or moves on when it names none.
    pub(crate) fn failed(&self, idx: usize, status: &Status) {
        let leader = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match leader {
            Some(l) if status.code() == Code::Unavailable => self.point_at(&l, idx),
            _ if matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
            ) =>
            {
                self.advance(idx)
            }
            _ => {}
        }
    }

    fn point_at(&self, leader: &str, idx: usize) {
        let mut s = self.lock();
        if let Some(i) = s.list.iter().position(|e| e.authority == leader) {
            s.current = i;
            return;
        }
        if s.learned < MAX_LEARNED {
            if let Ok(e) = entry(
                leader,
                self.connect_timeout,
                self.tls.as_ref(),
                self.default_scheme,
            ) {
                s.list.push(e);
                s.learned += 1;
                s.current = s.list.len() - 1;
                return;
            }
        }
        if s.current == idx {
            s.current = (idx + 1) % s.list.len();
        }
    }

    /// Calls `f` on the leader until it answers, within `deadline`: a follower's
    /// redirect, a replica that cannot serve now (`UNAVAILABLE`) or an unreachable one
    /// moves to the next candidate after a short pause. Any other answer is final and
    /// returned at once; what the call ends with is judged by
    /// [`AgentError::from_status`].
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, AgentError>
    where
        F: Fn(NodeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let until = Instant::now() + deadline;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (idx, c) = self.current();
            let status = match timeout_at(until, f(c)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) => s,
                // Nothing came back in time: no controller was reached, an outage.
                Err(_) => {
                    return Err(AgentError::Unavailable(
                        "no controller answered in time".into(),
                    ))
                }
            };
            // Only an unreachable replica, or one that says it cannot serve the call now,
            // is worth another try; an UNKNOWN or CANCELLED the server sent is an answer.
            let retry = status.code() == Code::Unavailable || crate::unreachable(&status);
            if !retry {
                return Err(AgentError::from_status(status));
            }
            self.failed(idx, &status);
            // Right after a redirect, go at once; when every replica failed, wait a little
            // (an election may be under way).
            let n = self.lock().list.len() as u32;
            let wait = if attempt.is_multiple_of(n) {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            };
            if Instant::now() + wait >= until {
                return Err(AgentError::from_status(status));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
