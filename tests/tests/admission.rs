//! The admission webhook with real parts: a webhook server written here (hyper on a free
//! loopback port) that allows some streams and viewers and denies others, counts its
//! calls, checks each request's signature, and can be slowed down or stopped; real
//! `ferrocast` processes asking it; ffmpeg publishing and playing. Over HTTPS too: the
//! same server behind tokio-rustls with a certificate of a test CA, counting handshakes.

use ferrocast_tests::{assert_plays, ffmpeg_publish_live, http_get, Launch, Node, Proc};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "hook-secret-1";

/// What the webhook saw and how it behaves.
#[derive(Debug, Default)]
struct HookState {
    /// Every request body (parsed), in order.
    calls: Vec<serde_json::Value>,
    /// Requests whose signature did not verify.
    bad_signatures: usize,
    /// Wait this long before answering.
    delay: Duration,
    /// HTTPS: TLS handshakes completed (one per connection).
    handshakes: usize,
    /// HTTPS: handshakes the client broke off (it did not trust the certificate).
    refused_handshakes: usize,
}

/// The webhook server: allows everything except streams named `deny-…` (publish) and
/// viewers whose query names `mallory` (play).
struct Webhook {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<HookState>>,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Webhook {
    fn start() -> Self {
        Self::serve(None)
    }

    /// The same webhook over HTTPS with `dir`'s `node.pem` and `node-key.pem` (from
    /// `ferrocast certs`: valid for `localhost`), reached as `https://localhost:PORT`.
    fn start_tls(dir: &Path) -> Self {
        let tls = ferrocast_tls::public_server_config(
            &dir.join("node.pem"),
            &dir.join("node-key.pem"),
            &[b"http/1.1"],
        )
        .expect("server certificate");
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(tls)))
    }

    fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let https = tls.is_some();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(HookState::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let st = state.clone();
        runtime.spawn(async move {
            let mut accept_stop = stopped.clone();
            loop {
                let sock = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = accept_stop.wait_for(|s| *s) => return,
                };
                let (st, conn_stop, tls) = (st.clone(), stopped.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some(tls) = tls else {
                        return serve_connection(sock, st, conn_stop).await;
                    };
                    // Bounded: a client that stalls mid-handshake does not hold a task.
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(sock)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            st.lock().unwrap().handshakes += 1;
                            serve_connection(stream, st, conn_stop).await;
                        }
                        _ => st.lock().unwrap().refused_handshakes += 1,
                    }
                });
            }
        });
        Webhook {
            addr,
            https,
            state,
            stop,
            runtime: Some(runtime),
        }
    }

    fn url(&self) -> String {
        if self.https {
            // By name: the certificate's name is checked, and sent as SNI.
            format!("https://localhost:{}/admit", self.addr.port())
        } else {
            format!("http://{}/admit", self.addr)
        }
    }

    fn handshakes(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.handshakes, st.refused_handshakes)
    }

    fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Calls so far matching `action` and, when given, whose query contains `needle`.
    fn calls(&self, action: &str, needle: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c["action"] == action && c["query"].as_str().unwrap_or("").contains(needle))
            .count()
    }

    fn last(&self, action: &str) -> serde_json::Value {
        let st = self.state.lock().unwrap();
        st.calls
            .iter()
            .rev()
            .find(|c| c["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} call"))
    }

    /// Stops answering: the listener closes and open connections drop.
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection with [`answer`] until it closes or the webhook stops.
async fn serve_connection<I>(
    io: I,
    st: Arc<Mutex<HookState>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| answer(st.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    // Stopping drops every connection, pooled keep-alive ones included.
    tokio::select! {
        _ = conn => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn answer(
    st: Arc<Mutex<HookState>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (ts, sig) = (
        header("x-ferrocast-timestamp"),
        header("x-ferrocast-signature"),
    );
    let body = req.into_body().collect().await?.to_bytes();
    // The operator's side of the signature, from the documented recipe.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = ts
        .parse::<u64>()
        .map(|t| t.abs_diff(unix_now()) <= 60)
        .unwrap_or(false);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let delay = {
        let mut s = st.lock().unwrap();
        if sig != format!("sha256={want}") || !fresh {
            s.bad_signatures += 1;
        }
        s.calls.push(v.clone());
        s.delay
    };
    tokio::time::sleep(delay).await;
    let deny = match v["action"].as_str() {
        Some("publish") => v["stream"].as_str().unwrap_or("").starts_with("deny-"),
        Some("play") => v["query"].as_str().unwrap_or("").contains("mallory"),
        _ => true,
    };
    let resp = if deny {
        hyper::Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"reason":"not on the list"}"#,
            )))
    } else {
        hyper::Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()))
    };
    Ok(resp.expect("response"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a publisher that must be refused: ffmpeg exits with an error within 15 s.
fn assert_refused(url: &str, node: &Node, tag: &str) {
    let mut p = ffmpeg_publish_live(url, 30, &node.dir.0, tag);
    let status = p
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{tag}: ffmpeg was not refused"));
    assert!(!status.success(), "{tag}: ffmpeg succeeded");
}

fn status(node: &Node, path: &str) -> u16 {
    http_get(node.http, path, Duration::from_secs(10))
        .map(|r| r.status)
        .unwrap_or(0)
}

fn origin(hook: &Webhook, name: &str, extra: &[&str]) -> Node {
    hooked("origin", name, name, &hook.url(), extra)
}

/// A `role` node named `name` (its log and directory) with id `node_id`, asking the
/// webhook at `url` with the shared secret.
fn hooked(role: &str, name: &str, node_id: &str, url: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        "--node-id",
        node_id,
        "--admission-url",
        url,
        "--admission-secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    Node::launch(Launch {
        name: Some(name.to_owned()),
        ..Launch::new(role, &args)
    })
}

fn publish(node: &Node, key: &str, tag: &str) -> Proc {
    ffmpeg_publish_live(&node.rtmp_url(key), 120, &node.dir.0, tag)
}

#[test]
fn publishers_are_admitted_or_refused_by_the_webhook_and_its_silence_follows_the_fail_mode() {
    let hook = Webhook::start();
    let o1 = origin(&hook, "o1", &[]);

    // Allowed: the webhook saw the documented JSON, signed.
    let _cam = ffmpeg_publish_live(
        &format!("{}?user=ann&key=k1.SECRETPART", o1.rtmp_url("cam")),
        120,
        &o1.dir.0,
        "ffmpeg-cam",
    );
    o1.wait_live("cam", Duration::from_secs(30));
    let call = hook.last("publish");
    assert_eq!(
        call,
        serde_json::json!({"action": "publish", "stream": "cam", "app": "live",
            "client_ip": "127.0.0.1", "query": "user=ann&key=k1", "node": "o1"}),
        "the publish key's secret never reaches the webhook"
    );
    assert_eq!(hook.state.lock().unwrap().bad_signatures, 0);

    // Denied: an RTMP error, a log line with the webhook's reason, the others go on.
    assert_refused(&o1.rtmp_url("deny-cam"), &o1, "ffmpeg-denied");
    o1.wait_log("publisher refused: admission", Duration::from_secs(5));
    assert!(o1.log().contains("not on the list"), "the reason is logged");
    assert_eq!(status(&o1, "/live/deny-cam/index.m3u8"), 404);
    assert_eq!(status(&o1, "/live/cam/index.m3u8"), 200);
    assert_eq!(
        o1.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "publish"), ("result", "deny")]
        ),
        1.0
    );

    // A slow webhook: past the timeout, failing closed refuses, failing open accepts.
    let o2 = origin(
        &hook,
        "o2",
        &["--admission-timeout", "0.5", "--admission-fail", "open"],
    );
    let o3 = origin(&hook, "o3", &["--admission-timeout", "0.5"]);
    hook.set_delay(Duration::from_secs(3));
    assert_refused(&o3.rtmp_url("slow"), &o3, "ffmpeg-slow-closed");
    o3.wait_log("admission webhook unavailable", Duration::from_secs(5));
    let _slow = publish(&o2, "slow", "ffmpeg-slow-open");
    o2.wait_live("slow", Duration::from_secs(30));
    assert!(o2.log().contains("admission webhook error"));
    assert!(
        o2.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "publish"), ("result", "error")]
        ) >= 1.0
    );
    assert!(
        o2.metric("ferrocast_admission_request_duration_seconds_count") >= 1.0,
        "latency is measured"
    );
    // The live stream on o1 never noticed.
    assert_eq!(status(&o1, "/live/cam/index.m3u8"), 200);
}

#[test]
fn viewers_are_admitted_at_the_edge_once_per_ttl_and_the_webhook_going_down_fails_open() {
    let mut hook = Webhook::start();
    let url = hook.url();
    let node = hooked(
        "standalone",
        "standalone",
        "s1",
        &url,
        &[
            "--admission-fail",
            "open",
            "--admission-timeout",
            "1",
            "--admission-cache-ttl",
            "60",
        ],
    );
    let _pub = publish(&node, "cam", "ffmpeg");
    node.wait_live("cam", Duration::from_secs(30));

    // An allowed viewer (credential in the path, so players keep it on every request):
    // the playlist, blocking reloads, a segment and a part, then ffmpeg playing.
    let within = |what: &str, limit: Duration, mut f: Box<dyn FnMut() -> bool + '_>| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}: not within {limit:?}");
    };
    let playlist = |cred: &str| {
        http_get(
            node.http,
            &format!("/t/{cred}/live/cam/index.m3u8"),
            Duration::from_secs(5),
        )
        .expect("playlist")
    };
    within(
        "a whole segment",
        Duration::from_secs(20),
        Box::new(|| {
            playlist("ann")
                .text()
                .lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        }),
    );
    let text = playlist("ann").text();
    assert_eq!(playlist("ann").status, 200);
    let segment = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a segment")
        .to_owned();
    let part = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .next_back()
        .expect("a part")
        .to_owned();
    for path in [
        format!("/t/ann/live/cam/{segment}"),
        format!("/t/ann/live/cam/{part}"),
        "/t/ann/live/cam/index.m3u8?_HLS_skip=YES".to_owned(),
    ] {
        assert_eq!(status(&node, &path), 200, "{path}");
    }
    let play = format!("http://{}/t/ann/live/cam/index.m3u8", node.http);
    assert_plays(&play, 3);
    assert_eq!(
        hook.calls("play", "token=ann"),
        1,
        "one webhook call for every request of this viewer within the TTL"
    );
    let call = hook.last("play");
    assert_eq!(call["stream"], "cam");
    assert_eq!(call["node"], "s1");
    assert_eq!(call["client_ip"], "127.0.0.1");

    // A denied viewer: 403 on the playlist, the segment and the part, asked once.
    for _ in 0..3 {
        for path in [
            "/t/mallory/live/cam/index.m3u8".to_owned(),
            format!("/t/mallory/live/cam/{segment}"),
            format!("/t/mallory/live/cam/{part}"),
            format!("/live/cam/{segment}?user=mallory"),
        ] {
            let r = http_get(node.http, &path, Duration::from_secs(5)).expect("answer");
            assert_eq!(r.status, 403, "{path}");
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
    assert!(playlist("mallory").text().contains("not on the list"));
    assert_eq!(hook.calls("play", "token=mallory"), 1);
    assert_eq!(hook.calls("play", "user=mallory"), 1);
    // Concurrent first requests of one viewer share one call.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = node.http;
            std::thread::spawn(move || {
                http_get(
                    addr,
                    "/t/carol/live/cam/index.m3u8",
                    Duration::from_secs(10),
                )
                .map(|r| r.status)
                .unwrap_or(0)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 200);
    }
    assert_eq!(hook.calls("play", "token=carol"), 1, "coalesced");
    assert_eq!(hook.state.lock().unwrap().bad_signatures, 0);

    // The webhook goes down: cached viewers are unaffected (ann plays, mallory stays
    // out), a new viewer is let in (fail open) within the timeout.
    hook.stop();
    let start = Instant::now();
    assert_eq!(playlist("bob").status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
    assert_eq!(status(&node, &format!("/t/ann/live/cam/{segment}")), 200);
    assert_eq!(playlist("ann").status, 200);
    assert_eq!(playlist("mallory").status, 403);
    assert!(
        node.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "play"), ("result", "error")]
        ) >= 1.0
    );
    assert!(
        node.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "play"), ("result", "deny")]
        ) >= 2.0
    );
    // One object cache for everyone: the admitted viewers' segment is the same bytes.
    let a = http_get(
        node.http,
        &format!("/t/ann/live/cam/{segment}"),
        Duration::from_secs(5),
    )
    .expect("segment");
    let b = http_get(
        node.http,
        &format!("/t/bob/live/cam/{segment}"),
        Duration::from_secs(5),
    )
    .expect("segment");
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
}

/// `ferrocast certs` material for the webhook (`node.pem` is valid for `localhost`) and
/// another CA that did not sign it (`operator-ca.pem`).
fn webhook_pki(node: &ferrocast_tests::TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = node.join("hook-pki");
    ferrocast_tls::generate_dev(Some(&dir), &[]).expect("webhook certificates");
    ferrocast_tls::generate_operator_dev(&dir, &[]).expect("another CA");
    (dir.join("ca.pem"), dir.join("operator-ca.pem"))
}

#[test]
fn an_https_webhook_admits_publishers_and_viewers_over_reused_tls_connections() {
    let scratch = ferrocast_tests::TempDir::new("https-hook");
    let (ca, _) = webhook_pki(&scratch);
    let hook = Webhook::start_tls(&scratch.join("hook-pki"));
    let url = hook.url();
    let ca = ca.to_str().expect("utf-8");
    let node = hooked(
        "standalone",
        "standalone-https",
        "s1",
        &url,
        &[
            "--admission-ca",
            ca,
            "--admission-cache-ttl",
            "60",
            "--admission-client-ip-header",
            "x-forwarded-for",
        ],
    );
    // A publisher admitted over HTTPS (the origin's client).
    let _pub = publish(&node, "cam", "ffmpeg");
    node.wait_live("cam", Duration::from_secs(30));
    assert_eq!(hook.calls("publish", ""), 1);
    // Viewers, one after the other (the edge's client): admitted, and one denied with
    // the webhook's reason, which only an answer that came through TLS can carry.
    let viewers = [
        "ann", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    ];
    for cred in viewers {
        let path = format!("/t/{cred}/live/cam/index.m3u8");
        assert_eq!(status(&node, &path), 200, "{path}");
    }
    let denied = http_get(
        node.http,
        "/t/mallory/live/cam/index.m3u8",
        Duration::from_secs(10),
    )
    .expect("answer");
    assert_eq!(denied.status, 403);
    assert!(
        denied.text().contains("not on the list"),
        "{}",
        denied.text()
    );
    // Behind a load balancer: the viewer's address from its header, first address.
    let mut sock = std::net::TcpStream::connect(node.http).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut sock,
        b"GET /t/zed/live/cam/index.m3u8 HTTP/1.1\r\nhost: edge\r\n\
          x-forwarded-for: 203.0.113.9, 10.1.2.3\r\nconnection: close\r\n\r\n",
    )
    .expect("request");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut sock, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let zed = hook.last("play");
    assert_eq!(
        (zed["query"].as_str(), zed["client_ip"].as_str()),
        (Some("token=zed"), Some("203.0.113.9"))
    );
    assert_eq!(hook.calls("play", "token="), viewers.len() + 2);
    // All calls, wait_live's own playlist polls (a viewer without credential) included.
    let calls = hook.state.lock().unwrap().calls.len();
    assert_eq!(hook.state.lock().unwrap().bad_signatures, 0);
    // Connections are pooled: the origin's and the edge's clients hold one each, plus
    // now and then one more when a call starts a moment before the previous one's
    // connection is back in the pool.
    let (handshakes, refused) = hook.handshakes();
    assert_eq!(refused, 0);
    assert!(
        handshakes >= 1 && handshakes * 2 <= calls,
        "{handshakes} TLS handshakes for {calls} calls"
    );
    assert!(
        node.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "play"), ("result", "allow")]
        ) >= viewers.len() as f64
    );
}

#[test]
fn a_webhook_certificate_from_another_ca_is_an_error_that_follows_the_fail_mode() {
    let scratch = ferrocast_tests::TempDir::new("https-hook-other-ca");
    let (_, other_ca) = webhook_pki(&scratch);
    let hook = Webhook::start_tls(&scratch.join("hook-pki"));
    let other_ca = other_ca.to_str().expect("utf-8");
    let tls_args = ["--admission-ca", other_ca];

    // Failing closed: the publisher is refused, the log names the TLS reason.
    let closed = origin(&hook, "o-closed", &tls_args);
    assert_refused(&closed.rtmp_url("cam"), &closed, "ffmpeg-closed");
    closed.wait_log(
        "TLS handshake with localhost failed: invalid peer certificate: UnknownIssuer",
        Duration::from_secs(5),
    );
    assert_eq!(status(&closed, "/live/cam/index.m3u8"), 404);

    // Failing open: publisher and viewer let in.
    let url = hook.url();
    let open = Node::launch(Launch {
        name: Some("standalone-open".into()),
        ..Launch::new(
            "standalone",
            &[
                "--admission-url",
                &url,
                "--admission-ca",
                other_ca,
                "--admission-fail",
                "open",
            ],
        )
    });
    let _pub = publish(&open, "cam", "ffmpeg-open");
    open.wait_live("cam", Duration::from_secs(30));
    assert_eq!(status(&open, "/t/ann/live/cam/index.m3u8"), 200);
    open.wait_log("admission webhook error", Duration::from_secs(5));
    assert!(
        open.log().contains("UnknownIssuer"),
        "the TLS reason is logged"
    );
    for action in ["publish", "play"] {
        assert!(
            open.metric_with(
                "ferrocast_admission_requests_total",
                &[("action", action), ("result", "error")]
            ) >= 1.0,
            "{action}"
        );
    }

    // Nothing reached a webhook the nodes could not trust.
    assert_eq!(hook.state.lock().unwrap().calls.len(), 0);
    let (handshakes, refused) = hook.handshakes();
    assert_eq!(handshakes, 0);
    assert!(refused >= 2, "{refused} refused handshakes");
}

/// `ferrocast ctl --json ARGS` against the controller at `grpc`; its JSON output.
fn ctl_json(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = ferrocast_tests::run_with_timeout(
        std::process::Command::new(ferrocast_tests::ferrocast_bin())
            .args(["ctl", "--json", "--controller", &format!("http://{grpc}")])
            .args(args),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

#[test]
fn the_webhook_is_told_the_token_the_edge_checked_and_two_credentials_are_refused() {
    let hook = Webhook::start();
    let grpc = ferrocast_tests::free_addr();
    let grpc_flag = grpc.to_string();
    let node = hooked(
        "standalone",
        "standalone",
        "s1",
        &hook.url(),
        &["--grpc-listen", &grpc_flag],
    );
    let _pub = publish(&node, "cam", "ffmpeg");
    node.wait_live("cam", Duration::from_secs(30));
    ctl_json(grpc, &["signing-keys", "create", "--purpose", "play"]);
    ctl_json(grpc, &["playback", "cam", "--require-token"]);
    let good = ctl_json(
        grpc,
        &["token", "issue", "cam", "--purpose", "play", "--ttl", "10m"],
    )["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&node, "/live/cam/index.m3u8") != 403 {
        assert!(Instant::now() < deadline, "the policy reaches the edge");
        std::thread::sleep(Duration::from_millis(50));
    }

    let before = hook.calls("play", "");
    // A checked token in the path with another one in the query (which the webhook,
    // reading the query, would have taken for the viewer's), the parameter twice, or a
    // name that decodes to `token`: 400, and the webhook is not asked.
    for path in [
        format!("/t/{good}/live/cam/index.m3u8?token=mallory"),
        format!("/live/cam/index.m3u8?token={good}&token=mallory"),
        format!("/live/cam/index.m3u8?token=mallory&token={good}"),
        format!("/live/cam/index.m3u8?token={good}&tok%65n=mallory"),
        format!("/live/cam/index.m3u8?token={good}&Token=mallory"),
    ] {
        let r = http_get(node.http, &path, Duration::from_secs(5)).expect("answer");
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains("token"), "a clear reason: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    assert_eq!(
        hook.calls("play", ""),
        before,
        "nothing reached the webhook"
    );

    // One token, in the path: the webhook is told exactly that one (first, as
    // `token=`), with the viewer's other parameters and without LL-HLS's.
    let r = http_get(
        node.http,
        &format!("/t/{good}/live/cam/index.m3u8?user=ann&_HLS_skip=YES"),
        Duration::from_secs(5),
    )
    .expect("playlist");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        hook.last("play")["query"],
        format!("token={good}&user=ann"),
        "the webhook saw the checked token"
    );
    // The same token in the query is the same viewer: no second call.
    assert_eq!(
        status(
            &node,
            &format!("/live/cam/index.m3u8?user=ann&token={good}")
        ),
        200
    );
    assert_eq!(hook.calls("play", ""), before + 1);
    // A refused token is refused before the webhook is asked.
    assert_eq!(
        status(&node, "/t/k1.9999999999.forged/live/cam/index.m3u8"),
        403
    );
    assert_eq!(hook.calls("play", ""), before + 1);
}

#[test]
fn under_fail_open_a_flood_of_made_up_credentials_is_refused_past_its_share_never_allowed() {
    let hook = Webhook::start();
    let node = hooked(
        "standalone",
        "standalone",
        "s1",
        &hook.url(),
        &[
            "--admission-fail",
            "open",
            "--admission-timeout",
            "1.5",
            "--admission-cache-ttl",
            "60",
        ],
    );
    let _pub = publish(&node, "cam", "ffmpeg");
    node.wait_live("cam", Duration::from_secs(30));
    // A viewer admitted before the flood.
    assert_eq!(status(&node, "/t/ann/live/cam/index.m3u8"), 200);

    // The webhook hangs; one client sends 48 made-up credentials at once.
    hook.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let flood: Vec<_> = (0..48)
        .map(|i| {
            let addr = node.http;
            std::thread::spawn(move || {
                let path = format!("/t/made-up-{i}/live/cam/index.m3u8");
                let r = http_get(addr, &path, Duration::from_secs(10));
                r.map(|r| (r.status, r.header("retry-after").map(str::to_owned)))
                    .unwrap_or((0, None))
            })
        })
        .collect();
    // Meanwhile the admitted viewer is served from its cached decision.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&node, "/t/ann/live/cam/index.m3u8"), 200);
    let answers: Vec<_> = flood
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(started.elapsed() < Duration::from_secs(8), "bounded");
    let allowed = answers.iter().filter(|a| a.0 == 200).count();
    let busy = answers
        .iter()
        .filter(|a| a.0 == 503 && a.1.as_deref() == Some("1"))
        .count();
    // Rule: at most 16 webhook calls per client address at once. Those were asked and
    // timed out, an outage the fail mode decides (open); every call past the share
    // was never asked and is refused, whatever the fail mode.
    assert!(allowed <= 16, "{answers:?}");
    assert_eq!(allowed + busy, 48, "{answers:?}");
    assert!(busy >= 32, "{answers:?}");
    assert!(
        node.metric_with(
            "ferrocast_admission_requests_total",
            &[("action", "play"), ("result", "busy")]
        ) >= busy as f64
    );
    // A refusal is not remembered: once the calls are back, the next try is asked.
    hook.set_delay(Duration::ZERO);
    let refused = answers
        .iter()
        .position(|a| a.0 == 503)
        .expect("a refused one");
    assert_eq!(
        status(&node, &format!("/t/made-up-{refused}/live/cam/index.m3u8")),
        200
    );
}
