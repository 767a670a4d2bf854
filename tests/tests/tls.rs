//! TLS on every hop, with real processes: origins and edges joined to a controller over
//! mutual TLS with per-node certificates (a stranger's certificate is refused), every
//! node call bound to the node its certificate names (an edge is that edge and nothing
//! more), relay peers checking each other's role, ffmpeg publishing over RTMPS with
//! the certificate checked and the HLS played back by ffmpeg, hostile clients on the
//! RTMPS port closed without harm to a live stream, and certificates replaced on disk
//! while the edge's HTTPS, the RTMPS port and the controller's gRPC port keep running.

use ferrocast_proto::controller::v1 as pb;
use ferrocast_tests::tls::{first_cert, TlsClient};
use ferrocast_tests::{
    ferrocast_bin, ffmpeg_publish_live, ffmpeg_publish_live_with, framemd5_raw, free_addr,
    free_port, free_udp_addr, make_certs, parse_framemd5, run_with_timeout, start_controller,
    Launch, Node, Proc, TempDir,
};
use ferrocast_tls::grpc::TlsConnector;
use ferrocast_tls::TlsFiles;
use pb::node_service_client::NodeServiceClient;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// The node ids `ferrocast ctl --ca CA nodes` lists.
fn node_ids(grpc: SocketAddr, ca: &Path) -> Vec<String> {
    let out = run_with_timeout(
        Command::new(ferrocast_bin())
            .args(["ctl", "--json", "--controller", &grpc.to_string(), "--ca"])
            .arg(ca)
            .arg("nodes"),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ctl nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `ferrocast certs DIR --node ROLE:ID...`: the CA in DIR (created) and a `--tls-dir`
/// per node, `DIR/ROLE-ID`.
fn certs(dir: &Path, nodes: &[&str]) {
    let mut cmd = Command::new(ferrocast_bin());
    cmd.arg("certs").arg(dir);
    for n in nodes {
        cmd.args(["--node", n]);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "ferrocast certs {nodes:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in nodes {
        let node_dir = dir.join(n.replacen(':', "-", 1));
        assert!(
            node_dir.join("node.pem").is_file(),
            "{}",
            node_dir.display()
        );
        assert!(
            !node_dir.join("ca-key.pem").exists(),
            "no CA key in a node's directory"
        );
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

#[test]
fn nodes_join_a_tls_controller_with_cluster_certificates_and_strangers_are_refused() {
    let pki = TempDir::new("mtls-pki");
    certs(
        &pki.0,
        &[
            "controller:c1",
            "origin:origin-a",
            "edge:edge-a",
            "origin:origin-plaintext",
        ],
    );
    let dir = |node: &str| pki.join(node).display().to_string();
    let (controller, grpc) =
        start_controller(&["--tls-dir", &dir("controller-c1"), "--publish-auth", "open"]);
    assert!(controller
        .log()
        .contains("grpc_tls=\"mutual TLS for nodes\""));
    let url = format!("https://{grpc}");
    // No --node-id: the origin is the node its certificate names.
    let origin = Node::launch(Launch {
        name: Some("origin-a".into()),
        ..Launch::new(
            "origin",
            &[
                "--tls-dir",
                &dir("origin-origin-a"),
                "--controller",
                &url,
                "--quic-listen",
                &free_udp_addr().to_string(),
            ],
        )
    });
    let edge = Node::launch(Launch {
        name: Some("edge-a".into()),
        ..Launch::new(
            "edge",
            &[
                "--node-id",
                "edge-a",
                "--tls-dir",
                &dir("edge-edge-a"),
                "--controller",
                &url,
            ],
        )
    });
    // Both registered over TLS.
    let ca = pki.join("ca.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = node_ids(grpc, &ca);
        if ids.iter().any(|i| i == "origin-a") && ids.iter().any(|i| i == "edge-a") {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not registered: {ids:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The claim (origin → controller) and the assignment watch (controller → edge) went
    // over TLS: the edge serves the stream it learned about from the controller.
    let _publisher = ffmpeg_publish_live(&origin.rtmp_url("cam"), 60, &origin.dir.0, "ffmpeg");
    edge.wait_live("cam", Duration::from_secs(30));

    // A node that trusts the cluster CA but holds a certificate of another CA.
    let other = TempDir::new("mtls-other");
    certs(&other.0, &["origin:origin-stranger"]);
    let other = other.join("origin-origin-stranger");
    let stranger_dir = TempDir::new("mtls-stranger");
    copy(&pki.join("ca.pem"), &stranger_dir.join("ca.pem"));
    copy(&other.join("node.pem"), &stranger_dir.join("node.pem"));
    copy(
        &other.join("node-key.pem"),
        &stranger_dir.join("node-key.pem"),
    );
    let stranger = Node::launch(Launch {
        name: Some("origin-stranger".into()),
        ..Launch::new(
            "origin",
            &[
                "--node-id",
                "origin-stranger",
                "--tls-dir",
                &stranger_dir.0.display().to_string(),
                "--controller",
                &url,
                "--quic-listen",
                &free_udp_addr().to_string(),
            ],
        )
    });
    controller.wait_log(
        "gRPC TLS handshake refused: client certificate",
        Duration::from_secs(15),
    );
    // A node speaking plaintext to the TLS port gets nowhere either.
    let plaintext = Node::launch(Launch {
        name: Some("origin-plaintext".into()),
        ..Launch::new(
            "origin",
            &[
                "--node-id",
                "origin-plaintext",
                "--tls-dir",
                &dir("origin-origin-plaintext"),
                "--controller",
                &format!("http://{grpc}"),
                "--quic-listen",
                &free_udp_addr().to_string(),
            ],
        )
    });
    // Several heartbeat intervals: neither is ever listed; the members stay.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let ids = node_ids(grpc, &ca);
        assert!(
            !ids.iter()
                .any(|i| i == "origin-stranger" || i == "origin-plaintext"),
            "a node without a cluster certificate registered: {ids:?}"
        );
        assert!(ids.iter().any(|i| i == "origin-a"), "{ids:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !stranger.log().contains("registered with the controller"),
        "{}",
        stranger.log()
    );
    assert!(
        !plaintext.log().contains("registered with the controller"),
        "{}",
        plaintext.log()
    );
    // And the stream played on.
    edge.wait_live("cam", Duration::from_secs(10));
}

/// Every wait of the gRPC tests.
const T: Duration = Duration::from_secs(15);
const ADMIN: &str = "identity-admin-token";

/// A `NodeService` client of the controller at `grpc` over mutual TLS, with the
/// certificate in `tls_dir` (as a node's agent connects).
async fn node_client(grpc: SocketAddr, tls_dir: &Path) -> NodeServiceClient<Channel> {
    let tls = TlsFiles::in_dir(tls_dir)
        .load()
        .expect("the node's tls-dir");
    let config = tls.grpc_client_config().expect("client config");
    let channel = tokio::time::timeout(
        T,
        Endpoint::from_shared(format!("https://{grpc}"))
            .expect("uri")
            .timeout(T)
            .connect_with_connector(TlsConnector::new(config)),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    NodeServiceClient::new(channel)
}

#[track_caller]
fn denied<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    match r {
        Err(s) => assert_eq!(
            s.code(),
            tonic::Code::PermissionDenied,
            "{what}: {}",
            s.message()
        ),
        Ok(r) => panic!("{what} allowed: {:?}", r.into_inner()),
    }
}

fn register(node_id: &str, role: pb::NodeRole) -> pb::RegisterRequest {
    pb::RegisterRequest {
        node_id: node_id.into(),
        role: role.into(),
        ..Default::default()
    }
}

/// `ferrocast ctl --json ARGS` as the admin, over TLS: its JSON.
fn ctl(grpc: SocketAddr, ca: &Path, args: &[&str]) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new(ferrocast_bin())
            .args(["ctl", "--json", "--controller", &grpc.to_string()])
            .args(["--token", ADMIN, "--ca"])
            .arg(ca)
            .args(args),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A certificate of the cluster CA that names no node (what `ferrocast certs` used to
/// issue): signed by `openssl` with the CA key in `pki`, into `dir` as a --tls-dir.
fn certificate_of_nobody(pki: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost\n",
    )
    .expect("ext");
    let openssl = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("openssl").current_dir(dir).args(args),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "node-key.pem",
        "-subj",
        "/CN=nobody",
        "-out",
        "node.csr",
    ]);
    let ca = pki.join("ca.pem").display().to_string();
    let ca_key = pki.join("ca-key.pem").display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "4242",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "node.pem",
    ]);
    copy(&pki.join("ca.pem"), &dir.join("ca.pem"));
}

/// Issue 13: a cluster certificate used to be every node. Now an edge's certificate
/// cannot register as an origin (or as another edge), claim streams (and so test
/// publish keys), release another origin's stream, nor does the access snapshot it may
/// watch carry a publish-side secret; a controller's certificate gets no playback
/// secrets, and a cluster certificate that names no node gets nothing at all.
#[test]
fn an_edge_certificate_is_that_edge_and_nothing_more_on_the_controller() {
    let pki = TempDir::new("id-pki");
    certs(
        &pki.0,
        &["controller:c1", "origin:o1", "origin:o2", "edge:e1"],
    );
    let dir = |node: &str| pki.join(node);
    let (controller, grpc) = start_controller(&[
        "--tls-dir",
        &dir("controller-c1").display().to_string(),
        "--publish-auth",
        "closed",
        "--operator-token",
        ADMIN,
        "--lease-ttl",
        "30",
    ]);
    assert!(
        !controller.log().contains("NODE API WITHOUT IDENTITY"),
        "{}",
        controller.log()
    );
    // Publish-side secrets: a publish key and a publish signing key; and a play key.
    let ca = pki.join("ca.pem");
    let publish_key = ctl(grpc, &ca, &["keys", "create", "cam"])["secret"]
        .as_str()
        .expect("publish key secret")
        .to_owned();
    let publish_signing = ctl(
        grpc,
        &ca,
        &["signing-keys", "create", "--purpose", "publish"],
    );
    let play_signing = ctl(grpc, &ca, &["signing-keys", "create", "--purpose", "play"]);
    let play_key_id = play_signing["key_id"].as_str().expect("key id").to_owned();
    let publish_secret = publish_signing["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let nobody = TempDir::new("id-nobody");
    certificate_of_nobody(&pki.0, &nobody.0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut edge = node_client(grpc, &dir("edge-e1")).await;
        let mut o1 = node_client(grpc, &dir("origin-o1")).await;
        let mut o2 = node_client(grpc, &dir("origin-o2")).await;
        let mut ctl_cert = node_client(grpc, &dir("controller-c1")).await;
        let mut nobody = node_client(grpc, &nobody.0).await;

        // Register only as yourself.
        denied(
            "edge registering as origin o1",
            edge.register(register("o1", pb::NodeRole::Origin)).await,
        );
        denied(
            "edge registering as its own id with the origin role",
            edge.register(register("e1", pb::NodeRole::Origin)).await,
        );
        denied(
            "edge registering as edge e2",
            edge.register(register("e2", pb::NodeRole::Edge)).await,
        );
        edge.register(register("e1", pb::NodeRole::Edge))
            .await
            .expect("the edge registers as itself");
        o1.register(register("o1", pb::NodeRole::Origin))
            .await
            .expect("o1 registers");
        o2.register(register("o2", pb::NodeRole::Origin))
            .await
            .expect("o2 registers");
        denied(
            "a controller certificate registering as an edge",
            ctl_cert.register(register("c1", pb::NodeRole::Edge)).await,
        );

        // o1 holds `cam` with the publish key.
        let claim = |node: &str, credential: &str| pb::ClaimStreamRequest {
            node_id: node.into(),
            stream: "cam".into(),
            credential: credential.into(),
            client_ip: "192.0.2.1".into(),
        };
        let credential = format!("key={publish_key}");
        let granted = o1
            .claim_stream(claim("o1", &credential))
            .await
            .expect("o1 claims")
            .into_inner();
        assert_eq!(granted.outcome(), pb::ClaimOutcome::Granted, "{granted:?}");
        let epoch = granted.assignment.expect("assignment").epoch;

        // Claims only by origins, as themselves: no publish-key oracle for an edge.
        denied(
            "edge claiming as o1",
            edge.claim_stream(claim("o1", &credential)).await,
        );
        denied(
            "edge claiming as itself",
            edge.claim_stream(claim("e1", "key=guess")).await,
        );
        denied(
            "o2 claiming as o1",
            o2.claim_stream(claim("o1", &credential)).await,
        );

        // Release only what you hold, as yourself.
        let release = |node: &str| pb::ReleaseStreamRequest {
            node_id: node.into(),
            stream: "cam".into(),
            epoch,
            continuity: None,
        };
        denied(
            "edge releasing o1's stream as o1",
            edge.release_stream(release("o1")).await,
        );
        denied(
            "edge releasing o1's stream as itself",
            edge.release_stream(release("e1")).await,
        );
        denied(
            "o2 releasing o1's stream as o1",
            o2.release_stream(release("o1")).await,
        );
        denied(
            "o2 releasing o1's stream as itself",
            o2.release_stream(release("o2")).await,
        );
        let again = o1
            .claim_stream(claim("o1", &credential))
            .await
            .expect("o1 claims again")
            .into_inner();
        assert_eq!(
            again.outcome(),
            pb::ClaimOutcome::AlreadyHeld,
            "still o1's: {again:?}"
        );
        assert_eq!(again.assignment.expect("assignment").epoch, epoch);

        // Playback rules go to edges (and origins), and carry no publish-side secret.
        let mut watch = edge
            .watch_access(pb::WatchAccessRequest {
                node_id: "e1".into(),
            })
            .await
            .expect("an edge watches access")
            .into_inner();
        let snapshot = loop {
            let snap = tokio::time::timeout(T, watch.message())
                .await
                .expect("a snapshot in time")
                .expect("a snapshot")
                .expect("the stream stays open");
            if snap.play_keys.iter().any(|k| k.key_id == play_key_id) {
                break snap;
            }
        };
        assert!(
            snapshot.play_keys.iter().all(|k| k.purpose == "play"),
            "{snapshot:?}"
        );
        let bytes = prost::Message::encode_to_vec(&snapshot);
        for secret in [publish_key.as_bytes(), publish_secret.as_bytes()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a publish-side secret in the edge's snapshot"
            );
        }
        o1.watch_access(pb::WatchAccessRequest {
            node_id: "o1".into(),
        })
        .await
        .expect("origins check playback tokens too");
        denied(
            "a controller certificate watching access",
            ctl_cert
                .watch_access(pb::WatchAccessRequest::default())
                .await,
        );

        // A cluster certificate that names no node: nothing at all.
        denied(
            "a certificate of nobody registering",
            nobody.register(register("x", pb::NodeRole::Edge)).await,
        );
        denied(
            "a certificate of nobody watching access",
            nobody.watch_access(pb::WatchAccessRequest::default()).await,
        );

        // o1 releases its own stream.
        o1.release_stream(release("o1"))
            .await
            .expect("o1 releases its stream");
    });
    controller.wait_log(
        "node call refused: the cluster certificate names no node",
        T,
    );
    controller.wait_log(
        "node call refused: not what the caller's certificate names",
        T,
    );
}

/// The relay checks roles both ways: an origin takes only edges as clients (an
/// origin's certificate cannot pull as an edge), and an edge takes only an origin as
/// its server (a node with an edge's certificate cannot pose as an origin). A real edge
/// meanwhile plays.
#[test]
fn an_origins_certificate_cannot_act_as_an_edge_on_the_relay() {
    let pki = TempDir::new("relay-pki");
    certs(&pki.0, &["origin:o1", "origin:o2", "edge:e1", "edge:e9"]);
    let dir = |node: &str| pki.join(node).display().to_string();
    let logs = TempDir::new("relay-roles");
    let quic = free_udp_addr();
    let origin = Node::launch(Launch {
        name: Some("origin-o1".into()),
        ..Launch::new(
            "origin",
            &[
                "--tls-dir",
                &dir("origin-o1"),
                "--quic-listen",
                &quic.to_string(),
            ],
        )
    });
    let _publisher = ffmpeg_publish_live(&origin.rtmp_url("roles"), 60, &logs.0, "ffmpeg");
    origin.wait_live("roles", Duration::from_secs(20));

    let as_edge = |name: &str, tls: &str, origin_quic: SocketAddr| {
        Node::launch(Launch {
            name: Some(name.into()),
            ..Launch::new(
                "edge",
                &["--origin", &origin_quic.to_string(), "--tls-dir", tls],
            )
        })
    };
    // o2's certificate pulling from o1 as if it were an edge.
    let impostor = as_edge("edge-with-origin-cert", &dir("origin-o2"), quic);
    let r = impostor.get("/live/roles/index.m3u8");
    assert!(
        r.status == 503 || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
    origin.wait_log("relay handshake failed; edge refused", T);

    // A node with an edge's certificate serving the relay: edges refuse it.
    let fake_quic = free_udp_addr();
    let fake = Node::launch(Launch {
        name: Some("origin-with-edge-cert".into()),
        ..Launch::new(
            "origin",
            &[
                "--tls-dir",
                &dir("edge-e9"),
                "--quic-listen",
                &fake_quic.to_string(),
            ],
        )
    });
    let _fake_publisher = ffmpeg_publish_live(&fake.rtmp_url("roles"), 60, &logs.0, "ffmpeg-fake");
    fake.wait_live("roles", Duration::from_secs(20));
    let fooled = as_edge("edge-of-fake-origin", &dir("edge-e1"), fake_quic);
    let r = fooled.get("/live/roles/index.m3u8");
    assert!(
        r.status == 503 || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
    fooled.wait_log("no origin identity", T);

    // The real edge plays from the real origin.
    let edge = as_edge("edge-e1", &dir("edge-e1"), quic);
    edge.wait_live("roles", Duration::from_secs(30));
}

/// `ferrocast certs` with a CA as Helm's `genCA` makes it (an RSA key in PKCS#1) in a
/// read-only directory (a Secret mount): the CA is only read, `--out` takes the node's
/// files, and the certificate names the node, the extra DNS name and expires in
/// `--days`. Misuse is refused with a message naming the flag.
#[test]
fn certs_issues_from_a_helm_style_ca_in_a_read_only_directory() {
    let ca_dir = TempDir::new("certs-helm-ca");
    let openssl = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("openssl").current_dir(&ca_dir.0).args(args),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    openssl(&["genrsa", "-traditional", "-out", "ca-key.pem", "2048"]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca-key.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=ferrocast-ca",
        "-out",
        "ca.pem",
    ]);
    let ca_before = std::fs::read(ca_dir.join("ca.pem")).expect("ca.pem");
    let read_only = |mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&ca_dir.0, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    read_only(0o555);
    let out_dir = TempDir::new("certs-out");
    let target = out_dir.join("edge-5");
    let certs = |args: &[&str]| {
        run_with_timeout(
            Command::new(ferrocast_bin())
                .arg("certs")
                .arg(&ca_dir.0)
                .args(args),
            Duration::from_secs(30),
        )
    };
    let target_s = target.display().to_string();
    let ok = certs(&[
        "--node",
        "edge:edge-5",
        "--dns",
        "edge-5.example",
        "--days",
        "7",
        "--out",
        &target_s,
    ]);
    read_only(0o755);
    assert!(
        ok.status.success(),
        "certs: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        std::fs::read(ca_dir.join("ca.pem")).expect("ca.pem"),
        ca_before
    );
    assert_eq!(
        std::fs::read(target.join("ca.pem")).expect("node ca.pem"),
        ca_before
    );
    let node = target.join("node.pem").display().to_string();
    let text = openssl(&["x509", "-in", &node, "-noout", "-text"]);
    assert!(text.contains("URI:ferrocast://edge/edge-5"), "{text}");
    assert!(text.contains("DNS:edge-5.example"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    openssl(&["verify", "-CAfile", "ca.pem", &node]);
    // Valid for 7 days: still in 6, not in 8.
    let expires_within = |days: u32| {
        run_with_timeout(
            Command::new("openssl")
                .args(["x509", "-in", &node, "-noout", "-checkend"])
                .arg((days * 86_400).to_string()),
            Duration::from_secs(30),
        )
        .status
        .success()
    };
    assert!(expires_within(6), "expires within 6 days");
    assert!(!expires_within(8), "still valid after 8 days");
    for (args, flag) in [
        (
            &["--node", "edge:a", "--node", "edge:b", "--out", &target_s][..],
            "out",
        ),
        (&["--node", "shield:s1"][..], "node"),
        (&["--node", "edge:a", "--days", "0"][..], "days"),
    ] {
        let bad = certs(args);
        assert!(!bad.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(&format!("invalid {flag}")), "{args:?}: {err}");
    }
}

/// True when the server closes `sock` (EOF or reset) within `within`, whatever it sends
/// first (a TLS alert).
fn closed_within(sock: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn rejected(node: &Node, reason: &str) -> f64 {
    node.admin_get("/metrics")
        .text()
        .lines()
        .filter(|l| {
            l.starts_with("ferrocast_ingest_rejected_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The playlist's newest part (its `#EXT-X-PART` line).
fn last_part(node: &Node, key: &str) -> String {
    let text = node.get(&format!("/live/{key}/index.m3u8")).text();
    text.lines()
        .rfind(|l| l.starts_with("#EXT-X-PART:"))
        .unwrap_or_else(|| panic!("no part in {text}"))
        .to_owned()
}

#[test]
fn ffmpeg_publishes_over_rtmps_and_hostile_clients_on_its_port_are_closed() {
    let pki = TempDir::new("rtmps-pki");
    make_certs(&pki.0);
    let rtmps = free_addr();
    let (cert, key, ca) = (
        pki.join("node.pem"),
        pki.join("node-key.pem"),
        pki.join("ca.pem"),
    );
    let origin = Node::launch(Launch {
        name: Some("origin".into()),
        ..Launch::new(
            "origin",
            &[
                "--rtmps-listen",
                &rtmps.to_string(),
                "--rtmps-cert",
                &cert.display().to_string(),
                "--rtmps-key",
                &key.display().to_string(),
                "--handshake-timeout",
                "3",
            ],
        )
    });
    // ffmpeg checks the origin's certificate against the CA (GnuTLS, -tls_verify 1).
    let url = format!("rtmps://{rtmps}/live/sec");
    let ca_s = ca.display().to_string();
    let _publisher = ffmpeg_publish_live_with(
        &url,
        &["-tls_verify", "1", "-ca_file", &ca_s],
        90,
        &origin.dir.0,
        "ffmpeg-rtmps",
    );
    origin.wait_live("sec", Duration::from_secs(30));
    assert!(
        origin.log().contains("scheme=\"rtmps\""),
        "the publisher came in over RTMPS: {}",
        origin.log()
    );
    // A publisher that does not trust the certificate's CA gives up.
    let other = TempDir::new("rtmps-other");
    make_certs(&other.0);
    let other_ca = other.join("ca.pem").display().to_string();
    let mut wrong = ffmpeg_publish_live_with(
        &format!("rtmps://{rtmps}/live/other"),
        &["-tls_verify", "1", "-ca_file", &other_ca],
        30,
        &origin.dir.0,
        "ffmpeg-wrong-ca",
    );
    let status = wrong
        .wait_timeout(Duration::from_secs(15))
        .expect("ffmpeg gives up on an unknown CA");
    assert!(!status.success());

    let before = last_part(&origin, "sec");
    // Plain RTMP (C0 + C1) on the RTMPS port: not TLS, closed.
    let mut plain = TcpStream::connect(rtmps).expect("connect");
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    plain.write_all(&c0c1).expect("write");
    assert!(
        closed_within(&mut plain, Duration::from_secs(5)),
        "plain RTMP on the RTMPS port is closed"
    );
    // A TLS handshake record full of garbage: closed.
    let mut garbage = TcpStream::connect(rtmps).expect("connect");
    let mut record = vec![0x16, 0x03, 0x01, 0x01, 0x00];
    record.extend((0..256u32).map(|i| (i * 37 % 251) as u8));
    garbage.write_all(&record).expect("write");
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)),
        "TLS garbage is closed"
    );
    // Silence: closed at the handshake timeout (3 s).
    let mut silent = TcpStream::connect(rtmps).expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a client that never starts TLS is closed at the handshake timeout"
    );
    assert!(
        rejected(&origin, "tls_handshake") >= 2.0,
        "TLS failures counted"
    );
    assert!(
        rejected(&origin, "handshake_timeout") >= 1.0,
        "the timeout counted"
    );

    // The live stream went on, and ffmpeg plays it back from the origin's HLS.
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_part(&origin, "sec") == before {
        assert!(
            Instant::now() < deadline,
            "the playlist stopped at {before}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (text, err) = framemd5_raw(&origin.playlist_url("sec"), &["-t", "3", "-map", "0:v"]);
    assert!(err.trim().is_empty(), "ffmpeg errors: {err}");
    let frames = parse_framemd5(&text).len();
    assert!(frames >= 60, "ffmpeg decoded only {frames} frames in 3 s");
}

/// A new TLS connection to `addr` presents `want` within `within`.
fn wait_cert(what: &str, addr: SocketAddr, alpn: &[&[u8]], want: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = TlsClient::connect(addr, alpn).map(|c| c.cert);
        if got.as_ref().is_ok_and(|c| c.as_ref() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the new certificate not served within {within:?} (last: {:?})",
            got.map(|c| c.len())
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn certificates_replaced_on_disk_reach_new_handshakes_without_a_restart() {
    // Edge HTTPS and RTMPS (one standalone process, the HTTPS pair for both) and the
    // controller's gRPC port, each from files this test then replaces.
    let pki = TempDir::new("reload-pki");
    make_certs(&pki.0);
    let web = TempDir::new("reload-web");
    let (web_cert, web_key) = (web.join("cert.pem"), web.join("key.pem"));
    copy(&pki.join("node.pem"), &web_cert);
    copy(&pki.join("node-key.pem"), &web_key);
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let rtmps = free_addr();
    let mut cmd = Command::new(ferrocast_bin());
    cmd.args(["standalone", "--demo"])
        .args(["--rtmp-listen", &free_addr().to_string()])
        .args(["--http-listen", &https.to_string()])
        .args(["--origin-http-listen", &free_addr().to_string()])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", &free_addr().to_string()])
        .args(["--rtmps-listen", &rtmps.to_string()])
        .arg("--https-cert")
        .arg(&web_cert)
        .arg("--https-key")
        .arg(&web_key)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let _standalone = Proc::spawn("standalone", &mut cmd, &web.0);
    let standalone_log = || std::fs::read_to_string(web.join("standalone.log")).unwrap_or_default();
    let (controller, grpc) = start_controller(&["--tls-dir", &pki.0.display().to_string()]);
    let old = first_cert(&web_cert);
    let old_ctl = first_cert(&pki.join("node.pem"));

    // A keep-alive HTTPS connection made before the change.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = loop {
        if let Ok(mut c) = TlsClient::connect(https, &[b"http/1.1"]) {
            if c.get("localhost", "/readyz").is_ok_and(|s| s == 200) {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS not ready: {}",
            standalone_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(held.cert, old);
    let rtmps_before = TlsClient::connect(rtmps, &[]).expect("RTMPS handshake");
    assert_eq!(rtmps_before.cert, old);
    let grpc_before = TlsClient::connect(grpc, &[b"h2"]).expect("gRPC handshake");
    assert_eq!(grpc_before.cert, old_ctl);

    // Half-written files: logged, and the old certificate stays in use.
    std::fs::write(&web_cert, "-----BEGIN CERTIFICATE-----\nnot yet").expect("write");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !standalone_log().contains("new certificate files do not load") {
        let c = TlsClient::connect(https, &[b"http/1.1"]).expect("handshake with the old one");
        assert_eq!(
            c.cert, old,
            "the old certificate while the new files are bad"
        );
        assert!(
            Instant::now() < deadline,
            "bad files not reported: {}",
            standalone_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Renewed: another key pair with another name, the key first, as a copy would go.
    let renewed = TempDir::new("reload-renewed");
    let out = run_with_timeout(
        Command::new(ferrocast_bin())
            .arg("certs")
            .arg(&renewed.0)
            .args(["--name", "renewed.example"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    copy(&renewed.join("node-key.pem"), &web_key);
    copy(&renewed.join("node.pem"), &web_cert);
    let new = first_cert(&web_cert);
    assert_ne!(new, old);
    wait_cert(
        "edge HTTPS",
        https,
        &[b"h2", b"http/1.1"],
        &new,
        Duration::from_secs(15),
    );
    wait_cert("RTMPS", rtmps, &[], &new, Duration::from_secs(15));
    // The controller's node certificate, renewed the same way.
    copy(&renewed.join("node-key.pem"), &pki.join("node-key.pem"));
    copy(&renewed.join("node.pem"), &pki.join("node.pem"));
    wait_cert(
        "controller gRPC",
        grpc,
        &[b"h2"],
        &new,
        Duration::from_secs(15),
    );
    assert!(standalone_log().contains("certificate reloaded"));
    assert!(controller.log().contains("certificate reloaded"));

    // The connection made before the change is still up and served.
    assert_eq!(
        held.get("localhost", "/readyz").expect("held connection"),
        200
    );
    assert_eq!(held.cert, old);
    drop((rtmps_before, grpc_before));
}
