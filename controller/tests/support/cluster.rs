//! A controller in this process on `127.0.0.1:0`, nodes fabricated over its gRPC API
//! (registrations and heartbeats carrying load), and a small HTTP client. Every wait is
//! bounded.

// Not every test binary that includes this module uses all of it.
#![allow(dead_code)]

use ferrocast_controller::{Controller, ControllerConfig};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_runtime::metrics::Metrics;
use pb::node_service_client::NodeServiceClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Bound on every await of a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A controller running in this process.
#[derive(Debug)]
pub struct Running {
    /// gRPC address.
    pub addr: SocketAddr,
    /// Admin HTTP address.
    pub http: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Binds `cfg` on loopback ports chosen by the kernel and runs it.
    pub async fn start(mut cfg: ControllerConfig) -> Running {
        cfg.grpc_listen = "127.0.0.1:0".parse().unwrap();
        cfg.http_listen = "127.0.0.1:0".parse().unwrap();
        let c = Controller::bind(cfg, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let (addr, http) = (c.grpc_addr(), c.http_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(c.run(stop.clone()));
        Running {
            addr,
            http,
            stop,
            task,
        }
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        let ep = format!("http://{}", self.addr);
        timeout(
            WAIT,
            Channel::from_shared(ep)
                .unwrap()
                .timeout(Duration::from_secs(5))
                .connect(),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    /// Stops it and waits (bounded) for the end.
    pub async fn stop(self) {
        self.stop.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("stops in time")
            .unwrap();
    }
}

/// A registration of `id` in `region`; edges at `http://{id}.example`.
pub fn node(id: &str, role: pb::NodeRole, region: &str, max_viewers: u32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        node_id: id.into(),
        role: role.into(),
        addresses: Some(pb::NodeAddresses {
            relay: format!("{id}:4433"),
            http: format!("http://{id}.example"),
            rtmp: String::new(),
        }),
        region: region.into(),
        capacity: Some(pb::Capacity {
            max_viewers,
            ..Default::default()
        }),
    }
}

/// Registers, retrying while the replica does not lead yet (up to [`WAIT`]); returns the
/// incarnation.
pub async fn register(c: &mut NodeServiceClient<Channel>, r: pb::RegisterRequest) -> u64 {
    let start = Instant::now();
    loop {
        match timeout(WAIT, c.register(r.clone())).await.expect("in time") {
            Ok(reply) => return reply.into_inner().incarnation,
            Err(s) if s.code() == tonic::Code::Unavailable && start.elapsed() < WAIT => {
                sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("register {}: {s:?}", r.node_id),
        }
    }
}

/// One heartbeat on a new stream: its reply or the stream's error.
pub async fn beat(
    c: &mut NodeServiceClient<Channel>,
    id: &str,
    incarnation: u64,
    load: pb::LoadReport,
) -> Result<pb::HeartbeatReply, tonic::Status> {
    let req = pb::HeartbeatRequest {
        node_id: id.into(),
        incarnation,
        load: Some(load),
    };
    let fut = async {
        let mut replies = c
            .heartbeat(tokio_stream::iter(vec![req]))
            .await?
            .into_inner();
        match replies.message().await? {
            Some(r) => Ok(r),
            None => Err(tonic::Status::internal("no reply")),
        }
    };
    timeout(WAIT, fut).await.expect("heartbeat in time")
}

/// A load report: `viewers` in total, spread as given over streams.
pub fn load(viewers: u32, streams: &[(&str, u32)]) -> pb::LoadReport {
    pb::LoadReport {
        viewers,
        streams: streams
            .iter()
            .map(|(s, v)| pb::StreamLoad {
                stream: (*s).into(),
                viewers: *v,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A node heartbeating in the background until dropped.
#[derive(Debug)]
pub struct Beating {
    stop: CancellationToken,
}

impl Beating {
    /// Beats every `every` with `report` (errors are ignored: the next beat retries).
    pub fn start(
        mut c: NodeServiceClient<Channel>,
        id: &str,
        incarnation: u64,
        report: pb::LoadReport,
        every: Duration,
    ) -> Beating {
        let stop = CancellationToken::new();
        let (token, id) = (stop.clone(), id.to_owned());
        tokio::spawn(async move {
            while !token.is_cancelled() {
                let _ = beat(&mut c, &id, incarnation, report.clone()).await;
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = sleep(every) => {}
                }
            }
        });
        Beating { stop }
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: String,
}

/// `GET path` with `headers`, through the end-to-end tests' one HTTP client
/// ([`ferrocast_tests::http_get_with`]) on a blocking thread.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let path = path.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ferrocast_tests::http_get_with(addr, &path, &h, WAIT)
    })
    .await
    .expect("http task")
    .expect("http in time");
    HttpResponse {
        status: r.status,
        body: r.text(),
        headers: r.headers.into_iter().collect(),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() >= within {
            return None;
        }
        sleep(Duration::from_millis(100)).await;
    }
}
