//! Observability of real `ferrocast` processes: every node's `/metrics` passes
//! `promtool check metrics`, every metric the Grafana dashboard and the alert rules name
//! is exported, logs come out as JSON on `--log-format json`, and spans from a real
//! publish, a real edge fetch and real controller calls reach an OTLP/HTTP receiver —
//! delivered by the flush on shutdown.

use ferrocast_proto::controller::v1 as pb;
use ferrocast_tests::{ffmpeg_publish_live, free_addr, http_get, Launch, Node, TempDir};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A controller on free loopback ports with the in-memory store.
fn controller(env: &[(&str, &str)]) -> (Node, SocketAddr) {
    let grpc = free_addr();
    let node = Node::launch(Launch {
        args: vec![
            "--grpc-listen".into(),
            grpc.to_string(),
            "--publish-auth".into(),
            "open".into(),
        ],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Launch::new("controller", &[])
    });
    (node, grpc)
}

/// The media URIs a playlist names (segments and parts), newest last.
fn media_uris(playlist: &str) -> Vec<String> {
    let mut uris = Vec::new();
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            if let Some(u) = rest
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                uris.push(u.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            uris.push(line.trim().to_owned());
        }
    }
    uris
}

/// Fetches every object the edge's playlist of `key` names: old segments are cache
/// misses (upstream fetches), recent parts are hits.
fn watch(node: &Node, key: &str) -> usize {
    let playlist = node.wait_live(key, T);
    let uris = media_uris(&playlist);
    assert!(!uris.is_empty(), "playlist names no media:\n{playlist}");
    for uri in &uris {
        let r = node.get(&format!("/live/{key}/{uri}"));
        assert_eq!(r.status, 200, "GET {uri}: {}", r.text());
    }
    uris.len()
}

/// Runs `promtool check metrics` on `text`; its complaints, if any.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let deadline = Instant::now() + T;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("promtool did not finish within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// Sample names a Prometheus text exposition declares (histograms give `_bucket`,
/// `_sum`, `_count`), whether or not a sample was written yet.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
    {
        names.insert(name.to_owned());
        if kind.trim() == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

/// Every `ferrocast_*` metric name in a file.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ferrocast_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn metrics_pass_promtool_and_cover_the_dashboard_and_alerts() {
    let node = Node::launch(Launch::new(
        "standalone",
        &["--demo", "--log-format", "json"],
    ));
    let (ctl, _) = controller(&[]);
    let objects = watch(&node, "demo");

    let mut all = String::new();
    for (what, n) in [("standalone", &node), ("controller", &ctl)] {
        // As operators run it: `curl -s host/metrics | promtool check metrics` (no
        // Accept header: the Prometheus text format).
        let r = n.admin_get("/metrics");
        assert_eq!(r.status, 200, "{what} /metrics");
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{what}"
        );
        let text = r.text();
        assert!(text.contains("# HELP ferrocast_"), "{what}: {text}");
        assert!(!text.contains("# EOF"), "{what}: {text}");
        // What a Prometheus server asks for: OpenMetrics, the same samples.
        let accept =
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3";
        let om = n.admin_get_with("/metrics", &[("Accept", accept)]);
        assert_eq!(om.status, 200, "{what} /metrics as OpenMetrics");
        assert!(
            om.header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
            "{what}: {:?}",
            om.header("content-type")
        );
        assert!(
            om.text().ends_with("# EOF\n"),
            "{what}: OpenMetrics ends with # EOF"
        );
        if let Err(complaints) = promtool_check(&text) {
            panic!("promtool check metrics on the {what}'s /metrics:\n{complaints}\n---\n{text}");
        }
        all.push_str(&text);
    }
    // The edge really counted what it served.
    let lookups: f64 = all
        .lines()
        .filter(|l| l.starts_with("ferrocast_edge_cache_lookups_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        lookups >= objects as f64,
        "{lookups} cache lookups for {objects} objects"
    );

    let exported = exported_names(&all);
    for file in [
        "deploy/grafana/ferrocast.json",
        "deploy/prometheus/alerts.yaml",
    ] {
        let text = std::fs::read_to_string(repo_file(file)).expect(file);
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} names no ferrocast metric");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which no node exports; exported: {exported:#?}"
            );
        }
    }

    // --log-format json: every line the node wrote is a JSON object with a level.
    let log = node.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "no level: {line}");
    }
}

/// One OTLP/HTTP request as received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP receiver: answers every POST with an empty (= successful)
/// `ExportTraceServiceResponse` and keeps what it was sent.
#[derive(Debug)]
struct OtlpReceiver {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
    stop: Arc<AtomicBool>,
}

impl OtlpReceiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (posts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let p = p.clone();
                        std::thread::spawn(move || serve_otlp(conn, &p));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, posts, stop }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// HTTP/1.1 requests with a Content-Length body, one after another on a connection.
fn serve_otlp(mut conn: TcpStream, posts: &Mutex<Vec<Post>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(T));
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16384];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("the exporter sends a Content-Length");
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 16384];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        posts.lock().unwrap_or_else(|e| e.into_inner()).push(Post {
            path,
            content_type: header("content-type").unwrap_or_default(),
            body,
        });
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A span as the test looks at it.
#[derive(Debug)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: Vec<(String, String)>,
}

impl SpanSeen {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Decodes every POST as an `ExportTraceServiceRequest` (each must be one, sent to
/// `/v1/traces` as protobuf).
fn spans(posts: &[Post]) -> Vec<SpanSeen> {
    let mut out = Vec::new();
    for p in posts {
        assert_eq!(p.path, "/v1/traces", "OTLP/HTTP traces path");
        assert_eq!(
            p.content_type, "application/x-protobuf",
            "OTLP/HTTP protobuf"
        );
        let req = ExportTraceServiceRequest::decode(p.body.as_slice())
            .expect("body is an ExportTraceServiceRequest");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(text_of)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(SpanSeen {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attrs: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text_of(kv)))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// SIGTERM, then a clean exit within the drain bound.
fn stop(node: &mut Node) {
    node.proc.signal("TERM");
    let status = node
        .proc
        .wait_timeout(T)
        .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", node.proc.name));
    assert!(status.success(), "{} exited with {status}", node.proc.name);
}

#[test]
fn spans_from_real_nodes_reach_an_otlp_receiver() {
    let receiver = OtlpReceiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let otel = |service: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
            ("OTEL_SERVICE_NAME".to_owned(), service.to_owned()),
            ("OTEL_TRACES_SAMPLER".to_owned(), "always_on".to_owned()),
            // Nothing leaves on a timer during the test: what arrives was flushed at exit.
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "600000".to_owned()),
        ]
    };

    // Origin and edge: a real RTMP publish, then viewers that make the edge fetch.
    let mut node = Node::launch(Launch {
        env: otel("ferrocast-standalone-test"),
        ..Launch::new("standalone", &[])
    });
    let logs = TempDir::new("otel-ffmpeg");
    let mut ffmpeg = ffmpeg_publish_live(&node.rtmp_url("otel"), 12, &logs.0, "ffmpeg");
    // No viewer for a few segments: the edge subscribes on the first request, so the
    // segments made before it were never pushed and are fetched upstream.
    std::thread::sleep(Duration::from_secs(6));
    watch(&node, "otel");
    let done = ffmpeg.wait_timeout(T).expect("ffmpeg finishes");
    assert!(done.success(), "ffmpeg: {done}");
    assert!(
        node.metric("ferrocast_edge_upstream_fetches_total") >= 1.0,
        "the edge fetched nothing upstream"
    );

    // The controller: a placement and a claim, both refused on an empty cluster — the
    // decision is still made and traced.
    let (mut ctl, grpc) = controller(
        &otel("ferrocast-controller-test")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ch = tokio::time::timeout(
            T,
            tonic::transport::Channel::from_shared(format!("http://{grpc}"))
                .expect("uri")
                .timeout(Duration::from_secs(10))
                .connect(),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let mut op = pb::operator_service_client::OperatorServiceClient::new(ch.clone());
        let r = tokio::time::timeout(
            T,
            op.resolve(pb::ResolveRequest {
                stream: "otel".into(),
                client_ip: String::new(),
                region: String::new(),
            }),
        )
        .await
        .expect("resolve in time");
        assert!(r.is_err(), "no edge is registered, yet: {r:?}");
        let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
        let r = tokio::time::timeout(
            T,
            nodes.claim_stream(pb::ClaimStreamRequest {
                node_id: "ghost".into(),
                stream: "otel".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("claim in time")
        .expect("a refusal is an answer")
        .into_inner();
        assert_eq!(
            r.outcome(),
            pb::ClaimOutcome::RefusedUnavailable,
            "an unregistered node cannot claim: {r:?}"
        );
    });

    // A few dozen spans: far from a full batch (512), and the timer is 10 minutes away.
    assert!(
        receiver.posts().is_empty(),
        "exported before shutdown although no batch was due"
    );
    stop(&mut node);
    stop(&mut ctl);
    // Shutdown waited for the export; allow the receiver's threads a moment to record it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = spans(&receiver.posts());
    while Instant::now() < deadline
        && !["publish session", "upstream fetch", "controller decision"]
            .iter()
            .all(|n| seen.iter().any(|s| s.name == *n))
    {
        std::thread::sleep(Duration::from_millis(100));
        seen = spans(&receiver.posts());
    }
    let names: BTreeSet<&str> = seen.iter().map(|s| s.name.as_str()).collect();

    let publish: Vec<&SpanSeen> = seen
        .iter()
        .filter(|s| s.name == "publish session")
        .collect();
    assert!(
        !publish.is_empty(),
        "no publish session span; saw {names:?}"
    );
    for p in &publish {
        assert_eq!(p.service, "ferrocast-standalone-test");
        assert!(
            p.attr("peer").is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{p:?}"
        );
        // It runs inside the connection's span.
        assert!(
            seen.iter()
                .any(|s| s.name == "rtmp" && s.span_id == p.parent && s.trace_id == p.trace_id),
            "publish session without its rtmp connection parent: {p:?}"
        );
    }
    let fetches: Vec<&SpanSeen> = seen.iter().filter(|s| s.name == "upstream fetch").collect();
    assert!(!fetches.is_empty(), "no upstream fetch span; saw {names:?}");
    assert!(
        fetches
            .iter()
            .all(|f| f.service == "ferrocast-standalone-test" && f.attr("stream") == Some("otel")),
        "{fetches:?}"
    );
    let decisions: Vec<&SpanSeen> = seen
        .iter()
        .filter(|s| s.name == "controller decision")
        .collect();
    for op in ["resolve", "claim"] {
        assert!(
            decisions
                .iter()
                .any(|d| d.service == "ferrocast-controller-test"
                    && d.attr("op") == Some(op)
                    && d.attr("stream") == Some("otel")),
            "no controller decision span for {op}: {decisions:?}; saw {names:?}"
        );
    }
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_text_logs_stay_text() {
    let mut node = Node::launch(Launch::new(
        "standalone",
        &["--demo", "--log-format", "text"],
    ));
    let r = http_get(node.http, "/healthz", T).expect("healthz");
    assert_eq!(r.status, 200);
    stop(&mut node);
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && !l.starts_with('{')),
        "text log lines expected:\n{log}"
    );
    assert!(!log.contains("exporting traces"), "{log}");
    assert!(!log.contains("trace export is off"), "{log}");
}

/// `ferrocast ctl --json ARGS` against the controller at `grpc`; its JSON output.
fn ctl_json(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = ferrocast_tests::run_with_timeout(
        Command::new(ferrocast_tests::ferrocast_bin())
            .args(["ctl", "--json", "--controller", &format!("http://{grpc}")])
            .args(args),
        T,
    );
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

/// The names `/api/streams` lists.
fn listed(body: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    v["streams"].as_array().cloned().unwrap_or_default()
}

#[test]
fn metrics_and_protected_streams_are_shown_on_the_admin_port_only() {
    let grpc = free_addr();
    let node = Node::launch(Launch::new(
        "standalone",
        &["--demo", "--grpc-listen", &grpc.to_string()],
    ));
    let playlist = node.wait_live("demo", T);

    // The viewer port: probes yes, /metrics no; the admin port: all three.
    assert_eq!(node.get("/metrics").status, 404);
    assert_eq!(node.get("/healthz").status, 200);
    assert_eq!(node.get("/readyz").status, 200);
    for path in ["/metrics", "/healthz", "/readyz", "/api/streams"] {
        let r = node.admin_get(path);
        assert_eq!(r.status, 200, "admin {path}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "admin {path}"
        );
    }
    assert!(node
        .admin_get("/metrics")
        .text()
        .contains("ferrocast_edge_"));
    assert_eq!(
        node.admin_get("/live/demo/index.m3u8").status,
        404,
        "no media there"
    );

    // An open stream: listed for viewers (without CORS *), cached publicly.
    let api = node.get("/api/streams");
    assert_eq!(api.header("access-control-allow-origin"), None);
    assert_eq!(listed(&api.text())[0]["name"], "demo", "{}", api.text());
    let media = media_uris(&playlist).pop().expect("a media URI");
    let r = node.get(&format!("/live/demo/{media}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=86400, immutable")
    );
    assert_eq!(
        node.get("/live/demo/index.m3u8").header("cache-control"),
        Some("no-cache")
    );

    // The stream needs a token from now on.
    ctl_json(grpc, &["signing-keys", "create", "--purpose", "play"]);
    ctl_json(grpc, &["playback", "demo", "--require-token"]);
    let token = ctl_json(
        grpc,
        &[
            "token",
            "issue",
            "demo",
            "--purpose",
            "play",
            "--ttl",
            "10m",
        ],
    )["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.get("/live/demo/index.m3u8").status != 403 {
        assert!(Instant::now() < deadline, "the policy reaches the edge");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Viewers are no longer told it exists; operators are, marked protected.
    let api = node.get("/api/streams").text();
    assert!(listed(&api).is_empty(), "{api}");
    let admin = listed(&node.admin_get("/api/streams").text());
    assert_eq!(admin[0]["name"], "demo");
    assert_eq!(admin[0]["protected"], true);
    // What a token fetches is for that viewer's cache only.
    let with_token = node.get(&format!("/t/{token}/live/demo/index.m3u8"));
    assert_eq!(with_token.status, 200);
    assert_eq!(
        with_token.header("cache-control"),
        Some("private, no-cache")
    );
    let media = media_uris(&with_token.text()).pop().expect("a media URI");
    for path in [
        format!("/t/{token}/live/demo/{media}"),
        format!("/live/demo/{media}?token={token}"),
    ] {
        let r = node.get(&path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("private, max-age=86400, immutable"),
            "{path}"
        );
    }
}

#[test]
fn a_refused_operator_call_is_logged_with_the_callers_address_and_counted() {
    let grpc = free_addr();
    let node = Node::launch(Launch::new(
        "controller",
        &[
            "--grpc-listen",
            &grpc.to_string(),
            "--operator-token",
            "right-token-1",
        ],
    ));
    let ctl = |token: Option<&str>| {
        let mut cmd = Command::new(ferrocast_tests::ferrocast_bin());
        cmd.args(["ctl", "--controller", &format!("http://{grpc}")]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        ferrocast_tests::run_with_timeout(cmd.args(["nodes"]), T)
    };
    assert!(!ctl(Some("wrong-token")).status.success());
    assert!(!ctl(None).status.success());
    assert!(ctl(Some("right-token-1")).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = node.log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("refused: operator authentication failed"))
        {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("127.0.0.1:"), "the caller's address: {line}");
    assert!(line.contains("wrong_token"), "{line}");
    assert!(
        !line.contains("wrong-token"),
        "the token itself is never logged: {line}"
    );
    // The second failure, from the same address within the interval, is counted but
    // not logged again.
    let lines = node
        .log()
        .matches("refused: operator authentication failed")
        .count();
    assert_eq!(lines, 1, "{}", node.log());
    for reason in ["wrong_token", "no_credential"] {
        assert_eq!(
            node.metric_with(
                "ferrocast_controller_operator_auth_failures_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}"
        );
    }
}
