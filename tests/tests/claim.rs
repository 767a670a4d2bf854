//! A held stream is never continued without the credential that won it, with real
//! parts: origin processes, ffmpeg publishers, the RTMP test client reading the
//! publish result, and a controller that is either a real process (stopped with
//! SIGKILL mid-grace) or a scripted in-process tonic `NodeService` answering claims
//! with error statuses (as linkerd tests its proxy against a scripted controller).
//! Also the caps on stream names and publish queries, at an origin's RTMP port and at
//! a real controller's `ClaimStream`.

use ferrocast_proto::controller::v1 as pb;
use ferrocast_tests::cluster::parse_playlist;
use ferrocast_tests::rtmp_client::Publisher;
use ferrocast_tests::{
    ferrocast_bin, ffmpeg_publish_live, run_with_timeout, start_controller, Node, Proc,
};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream;
use tonic::{Code, Request, Response, Status};

const ADMIN: &str = "admin-secret-claim";
/// Long enough for every attempt below (each waits out the origin's 3 s call deadline
/// while the controller is down), so the stream is still held when the real encoder
/// comes back.
const GRACE_S: &str = "90";

fn ctl_ok(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new(ferrocast_bin())
            .args(["ctl", "--json", "--controller", &format!("http://{grpc}")])
            .args(["--token", ADMIN])
            .args(args),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

/// How many times `needle` is in the node's log.
fn count_log(node: &Node, needle: &str) -> usize {
    node.log().matches(needle).count()
}

/// The RTMP test client publishing `name` (with its query) must be refused with
/// `NetStream.Publish.BadName`.
fn assert_bad_name(origin: &Node, name: &str, what: &str) {
    match Publisher::connect(origin.rtmp, name, Duration::from_secs(20)) {
        Ok(_) => panic!("{what}: publish started; log:\n{}", origin.log()),
        Err(code) => assert_eq!(code, "NetStream.Publish.BadName", "{what}"),
    }
}

/// The highest segment number the origin's playlist of `key` lists (0 when none).
fn last_msn(origin: &Node, key: &str) -> u64 {
    let r = origin.get(&format!("/live/{key}/index.m3u8"));
    assert_eq!(r.status, 200, "playlist of {key}");
    parse_playlist(&r.text())
        .1
        .last()
        .map_or(0, |(msn, _)| *msn)
}

/// Waits until the playlist of `key` lists a segment past `msn` after a discontinuity:
/// the stream went on (same numbering, not restarted) with the publisher that came back.
fn wait_goes_on(origin: &Node, key: &str, msn: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let r = origin.get(&format!("/live/{key}/index.m3u8"));
        let (_, segs) = parse_playlist(&r.text());
        let resumed = segs.iter().any(|(m, disc)| *m > msn && *disc);
        if r.status == 200 && resumed && segs.last().is_some_and(|(m, _)| *m > msn + 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "playlist of {key} never went on past {msn}: {}\nlog:\n{}",
            r.text(),
            origin.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real encoder without a key (ffmpeg) tries the held stream `cam` and gives up.
fn keyless_ffmpeg_is_refused(origin: &Node) {
    let mut intruder = ffmpeg_publish_live(
        &origin.rtmp_url("cam"),
        30,
        &origin.dir.0,
        "ffmpeg-intruder",
    );
    let status = intruder
        .wait_timeout(Duration::from_secs(20))
        .expect("the keyless ffmpeg was not refused");
    assert!(!status.success());
}

/// Kills the encoder publishing `key` and waits until the origin holds the stream for
/// its return.
fn encoder_drops(origin: &Node, encoder: &mut Proc) {
    let before = count_log(origin, "publisher gone; waiting for it to come back");
    encoder.signal("KILL");
    assert!(
        encoder.wait_timeout(Duration::from_secs(10)).is_some(),
        "ffmpeg did not die"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while count_log(origin, "publisher gone; waiting for it to come back") == before {
        assert!(
            Instant::now() < deadline,
            "the origin never saw the publisher go; log:\n{}",
            origin.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The real encoder comes back with its key: the RTMP client first (it reads
/// `NetStream.Publish.Start`), then ffmpeg, and the playlist goes on.
fn real_encoder_continues(origin: &Node, key: &str, query: &str, msn: u64) -> Proc {
    let p = Publisher::connect(
        origin.rtmp,
        &format!("{key}?{query}"),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("the real key was refused: {e}; log:\n{}", origin.log()));
    drop(p);
    // Its drop starts another grace period; ffmpeg takes the stream back within it.
    std::thread::sleep(Duration::from_millis(500));
    let mut ffmpeg = ffmpeg_publish_live(
        &format!("{}?{query}", origin.rtmp_url(key)),
        120,
        &origin.dir.0,
        "ffmpeg-back",
    );
    wait_goes_on(origin, key, msn, Duration::from_secs(40));
    assert!(
        ffmpeg.wait_timeout(Duration::from_millis(10)).is_none(),
        "the real encoder keeps publishing"
    );
    ffmpeg
}

#[test]
fn with_the_controller_stopped_only_the_winning_credential_continues_a_held_stream() {
    let (mut controller, grpc) = start_controller(&["--operator-token", ADMIN]);
    let origin = Node::start_with(
        "origin",
        &[
            "--node-id",
            "o1",
            "--controller",
            &format!("http://{grpc}"),
            "--reconnect-grace",
            GRACE_S,
        ],
    );
    controller.wait_log("node registered", Duration::from_secs(20));
    let cam = ctl_ok(grpc, &["keys", "create", "cam"]);
    let secret = cam["secret"].as_str().expect("a secret").to_owned();
    let other = ctl_ok(grpc, &["keys", "create", "other"]);
    let other_secret = other["secret"].as_str().expect("a secret").to_owned();

    // The caps hold at the RTMP layer, before the claim: an oversized query or name is
    // refused with a reason and a log line.
    assert_bad_name(
        &origin,
        &format!("cam?key={}", "k".repeat(5000)),
        "oversized query",
    );
    origin.wait_log("publish query of", Duration::from_secs(5));
    assert_bad_name(&origin, &"n".repeat(65), "oversized name");
    origin.wait_log("stream name of 65 bytes", Duration::from_secs(5));

    let query = format!("key={secret}");
    let mut real = ffmpeg_publish_live(
        &format!("{}?{query}", origin.rtmp_url("cam")),
        120,
        &origin.dir.0,
        "ffmpeg-real",
    );
    origin.wait_live("cam", Duration::from_secs(30));
    // A couple of segments, so "goes on" is visible in the numbering.
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_msn(&origin, "cam") < 1 {
        assert!(Instant::now() < deadline, "no second segment");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The controller dies (SIGKILL, no goodbye), then the encoder drops.
    controller.proc.signal("KILL");
    assert!(
        controller
            .proc
            .wait_timeout(Duration::from_secs(10))
            .is_some(),
        "the controller did not die"
    );
    encoder_drops(&origin, &mut real);
    let msn = last_msn(&origin, "cam");

    // Whoever reconnects first without the winning credential is refused: no key, the
    // key of another stream, a wrong secret; ffmpeg without a key exits with an error.
    assert_bad_name(&origin, "cam", "no key");
    assert_bad_name(
        &origin,
        &format!("cam?key={other_secret}"),
        "another stream's key",
    );
    let (id, _) = secret.split_once('.').expect("ID.SECRET");
    assert_bad_name(&origin, &format!("cam?key={id}.wrong"), "a wrong secret");
    keyless_ffmpeg_is_refused(&origin);
    assert!(
        count_log(&origin, "not the credential that won the stream") >= 4,
        "{}",
        origin.log()
    );
    assert!(
        !origin.log().contains(&secret),
        "the secret is never logged"
    );

    // The real encoder, same key, takes its stream back and the playlist goes on.
    let _back = real_encoder_continues(&origin, "cam", &query, msn);
    assert!(origin
        .log()
        .contains("the credential that won the stream continues it"));
}

/// What the scripted controller answers claims with now.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Grants a claim presenting [`Scripted::KEY`], refuses others as unauthorized.
    Grant,
    /// Answers every claim with this status code.
    Fail(Code),
}

/// A controller that registers nodes, acknowledges heartbeats and answers claims as
/// [`Mode`] says.
#[derive(Debug, Clone)]
struct Scripted {
    mode: Arc<Mutex<Mode>>,
}

impl Scripted {
    const KEY: &'static str = "key=k1.the-real-secret";

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Replies<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Scripted {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        Ok(Response::new(pb::RegisterReply {
            heartbeat_interval_ms: 500,
            lease_ttl_ms: 5000,
            incarnation: 1,
        }))
    }

    type HeartbeatStream = Replies<pb::HeartbeatReply>;

    async fn heartbeat(
        &self,
        request: Request<tonic::Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut beats = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(_)) = beats.message().await {
                let reply = pb::HeartbeatReply {
                    state: pb::NodeState::Up.into(),
                    kick_streams: Vec::new(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn claim_stream(
        &self,
        request: Request<pb::ClaimStreamRequest>,
    ) -> Result<Response<pb::ClaimStreamReply>, Status> {
        let r = request.into_inner();
        match self.mode() {
            Mode::Fail(code) => Err(Status::new(code, "scripted failure")),
            Mode::Grant if r.credential == Self::KEY => Ok(Response::new(pb::ClaimStreamReply {
                outcome: pb::ClaimOutcome::Granted.into(),
                assignment: Some(pb::Assignment {
                    stream: r.stream,
                    origin_id: r.node_id,
                    epoch: 1,
                    ..Default::default()
                }),
                reason: "granted".into(),
            })),
            Mode::Grant => Ok(Response::new(pb::ClaimStreamReply {
                outcome: pb::ClaimOutcome::RefusedUnauthorized.into(),
                assignment: None,
                reason: "no publish credential".into(),
            })),
        }
    }

    async fn release_stream(
        &self,
        _: Request<pb::ReleaseStreamRequest>,
    ) -> Result<Response<pb::ReleaseStreamReply>, Status> {
        Ok(Response::new(pb::ReleaseStreamReply {}))
    }

    type WatchAssignmentsStream = Replies<pb::AssignmentEvent>;

    async fn watch_assignments(
        &self,
        _: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }

    async fn place(
        &self,
        _: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveReply>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type WatchAccessStream = Replies<pb::AccessSnapshot>;

    async fn watch_access(
        &self,
        _: Request<pb::WatchAccessRequest>,
    ) -> Result<Response<Self::WatchAccessStream>, Status> {
        // One snapshot with no rules (every stream open), so the origin's viewer port
        // serves the playlists the test reads; then nothing changes.
        use tokio_stream::StreamExt as _;
        let first = tokio_stream::once(Ok(pb::AccessSnapshot::default()));
        Ok(Response::new(Box::pin(
            first.chain(tokio_stream::pending()),
        )))
    }
}

#[test]
fn with_the_controller_answering_errors_no_publisher_continues_a_held_stream_and_a_leaderless_replica_is_an_outage(
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let scripted = Scripted {
        mode: Arc::new(Mutex::new(Mode::Grant)),
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(pb::node_service_server::NodeServiceServer::new(
                scripted.clone(),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let origin = Node::start_with(
        "origin",
        &[
            "--node-id",
            "o1",
            "--controller",
            &format!("http://{addr}"),
            "--reconnect-grace",
            GRACE_S,
        ],
    );
    origin.wait_log("registered with the controller", Duration::from_secs(20));
    let mut real = ffmpeg_publish_live(
        &format!("{}?{}", origin.rtmp_url("cam"), Scripted::KEY),
        120,
        &origin.dir.0,
        "ffmpeg-real",
    );
    origin.wait_live("cam", Duration::from_secs(30));
    encoder_drops(&origin, &mut real);
    let msn = last_msn(&origin, "cam");

    // The controller is up and answers every claim with an error status: each answer
    // is final. Nobody continues the held stream on it, not even the winning key (the
    // controller said no).
    for code in [
        Code::Internal,
        Code::InvalidArgument,
        Code::OutOfRange,
        Code::Unknown,
        Code::Cancelled,
    ] {
        scripted.set(Mode::Fail(code));
        assert_bad_name(&origin, "cam", &format!("{code:?}, no key"));
        assert_bad_name(
            &origin,
            "cam?key=k2.another-streams-key",
            &format!("{code:?}, another key"),
        );
        assert_bad_name(
            &origin,
            &format!("cam?{}", Scripted::KEY),
            &format!("{code:?}, the winning key"),
        );
    }
    let log = origin.log();
    assert!(
        log.matches("publisher refused: the controller answered with an error")
            .count()
            >= 15,
        "{log}"
    );
    assert!(
        !log.contains("controller unreachable"),
        "an answer is never an outage: {log}"
    );
    keyless_ffmpeg_is_refused(&origin);

    // A replica that answers UNAVAILABLE naming no leader ("no leader elected yet", its
    // store down) has decided nothing about this publisher: as in an outage, the held
    // stream goes on only for the credential that won it.
    scripted.set(Mode::Fail(Code::Unavailable));
    assert_bad_name(&origin, "cam", "not serving, no key");
    assert_bad_name(
        &origin,
        "cam?key=k2.another-streams-key",
        "not serving, another key",
    );
    let mut during_election = real_encoder_continues(&origin, "cam", Scripted::KEY, msn);
    encoder_drops(&origin, &mut during_election);
    let msn = last_msn(&origin, "cam");

    // The controller grants again: the real encoder continues, an intruder does not.
    scripted.set(Mode::Grant);
    assert_bad_name(&origin, "cam", "granting, no key");
    let _back = real_encoder_continues(&origin, "cam", Scripted::KEY, msn);
}

#[test]
fn a_real_controller_refuses_claims_with_oversized_names_or_credentials() {
    let (_controller, grpc) = start_controller(&["--operator-token", ADMIN]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ch = tokio::time::timeout(
            Duration::from_secs(10),
            tonic::transport::Channel::from_shared(format!("http://{grpc}"))
                .expect("uri")
                .timeout(Duration::from_secs(10))
                .connect(),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
        for (stream, credential, what) in [
            ("x".repeat(65), String::new(), "stream"),
            ("a/b".to_owned(), String::new(), "stream"),
            (
                "cam".to_owned(),
                format!("key={}", "k".repeat(4096)),
                "credential",
            ),
        ] {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                nodes.claim_stream(pb::ClaimStreamRequest {
                    node_id: "o1".into(),
                    stream,
                    credential,
                    client_ip: String::new(),
                }),
            )
            .await
            .expect("claim in time");
            let s = r.expect_err("refused");
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
            assert!(s.message().contains(what), "{s:?}");
        }
        // At the caps, the claim is judged on its merits (this node is not registered).
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            nodes.claim_stream(pb::ClaimStreamRequest {
                node_id: "o1".into(),
                stream: "x".repeat(64),
                credential: format!("key={}", "k".repeat(4092)),
                client_ip: String::new(),
            }),
        )
        .await
        .expect("claim in time");
        if let Err(s) = r {
            assert_ne!(s.code(), Code::InvalidArgument, "{s:?}");
        }
    });
}
