//! Access control with real parts: a controller process with closed publishing and
//! operator tokens, origins and edges joined to it, ffmpeg publishing with wrong and
//! right credentials, ffmpeg playing through a token URL, `ferrocast ctl` as the operator
//! (a tonic gRPC client; grpcurl itself is in grpcurl.rs), revocations timed at two
//! running edges of a cluster on real etcd, and the rules failing closed: edges and
//! controllers restarted while etcd is down, origins checking tokens on their HTTP port.

use ferrocast_tests::cluster::ControlPlane;
use ferrocast_tests::{
    assert_plays, ferrocast_bin, ffmpeg_publish_live, http_get, run_with_timeout, start_controller,
    Node, TempDir,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-secret-1";
const READER: &str = "read-secret-1";

fn ctl(grpc: SocketAddr, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(ferrocast_bin());
    cmd.args(["ctl", "--json", "--controller", &format!("http://{grpc}")]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    run_with_timeout(cmd.args(args), Duration::from_secs(20))
}

fn ctl_ok(grpc: SocketAddr, token: Option<&str>, args: &[&str]) -> serde_json::Value {
    let out = ctl(grpc, token, args);
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

/// A controller with the in-memory store, closed publishing and both operator tokens.
fn controller() -> (Node, SocketAddr) {
    start_controller(&["--operator-token", ADMIN, "--operator-read-token", READER])
}

/// Runs a publisher that must be refused: ffmpeg exits with an error within 15 s.
fn assert_refused(url: &str, origin: &Node, tag: &str) {
    let mut p = ffmpeg_publish_live(url, 30, &origin.dir.0, tag);
    let status = p
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{tag}: ffmpeg was not refused"));
    assert!(!status.success(), "{tag}: ffmpeg succeeded");
}

#[test]
fn publishers_need_a_key_or_a_signed_token_and_operators_need_roles() {
    let (ctl_node, grpc) = controller();
    assert!(
        !ctl_node.log().contains("PUBLISHING IS OPEN"),
        "the controller defaults to closed publishing"
    );
    let origin = Node::start_with(
        "origin",
        &["--node-id", "o1", "--controller", &format!("http://{grpc}")],
    );
    ctl_node.wait_log("node registered", Duration::from_secs(20));

    // Operators: no token is refused, the read-only token reads but may not change.
    let out = ctl(grpc, None, &["nodes"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = ctl_ok(grpc, Some(READER), &["nodes"]);
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    let out = ctl(grpc, Some(READER), &["keys", "create", "cam"]);
    assert!(!out.status.success(), "a read-only token created a key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ctl_node.log().contains("refused: read-only operator"));

    // A publish key: shown once, its hash stored; the admin's call is audited.
    let key = ctl_ok(grpc, Some(ADMIN), &["keys", "create", "cam"]);
    let secret = key["secret"].as_str().expect("a secret").to_owned();
    let key_id = key["key_id"].as_str().expect("an id").to_owned();
    ctl_node.wait_log("CreatePublishKey", Duration::from_secs(5));
    assert!(
        ctl_node.log().contains("who=admin@127.0.0.1"),
        "audit names the caller"
    );
    assert!(
        !ctl_node.log().contains(&secret),
        "the secret is never logged"
    );
    let listed = ctl_ok(grpc, Some(READER), &["keys", "list"]);
    assert_eq!(listed[0]["key_id"], key_id.as_str());
    assert!(!listed.to_string().contains(&secret));

    // No credential, a wrong one, another stream's: refused with a reason in the log.
    assert_refused(&origin.rtmp_url("cam"), &origin, "ffmpeg-none");
    origin.wait_log("no publish credential", Duration::from_secs(5));
    assert_refused(
        &format!("{}?key={key_id}.wrong", origin.rtmp_url("cam")),
        &origin,
        "ffmpeg-wrong",
    );
    origin.wait_log("wrong secret for publish key", Duration::from_secs(5));
    assert_refused(
        &format!("{}?key={secret}", origin.rtmp_url("other")),
        &origin,
        "ffmpeg-foreign",
    );
    origin.wait_log("is not for this stream", Duration::from_secs(5));
    assert!(origin.log().contains("publisher refused: unauthorized"));
    assert!(
        !origin.log().contains(&secret),
        "the secret is never logged"
    );

    // The right key publishes.
    let mut good = ffmpeg_publish_live(
        &format!("{}?key={secret}", origin.rtmp_url("cam")),
        60,
        &origin.dir.0,
        "ffmpeg-key",
    );
    origin.wait_live("cam", Duration::from_secs(30));
    assert!(good.wait_timeout(Duration::from_millis(10)).is_none());

    // A signed publish token for another stream, issued by the controller.
    ctl_ok(
        grpc,
        Some(ADMIN),
        &["signing-keys", "create", "--purpose", "publish"],
    );
    let t = ctl_ok(
        grpc,
        Some(ADMIN),
        &[
            "token",
            "issue",
            "cam2",
            "--purpose",
            "publish",
            "--ttl",
            "10m",
        ],
    );
    let token = t["token"].as_str().expect("a token").to_owned();
    assert_refused(
        &format!("{}?token={token}", origin.rtmp_url("cam3")),
        &origin,
        "ffmpeg-token-foreign",
    );
    let _tok = ffmpeg_publish_live(
        &format!("{}?token={token}", origin.rtmp_url("cam2")),
        60,
        &origin.dir.0,
        "ffmpeg-token",
    );
    origin.wait_live("cam2", Duration::from_secs(30));

    // Revoking the key refuses its next use; the stream already live is not affected.
    ctl_ok(grpc, Some(ADMIN), &["keys", "revoke", &key_id]);
    assert_refused(
        &format!("{}?key={secret}", origin.rtmp_url("cam")),
        &origin,
        "ffmpeg-revoked",
    );
    assert!(
        good.wait_timeout(Duration::from_millis(10)).is_none(),
        "the live publisher goes on"
    );
    assert_eq!(
        http_get(origin.http, "/live/cam/index.m3u8", Duration::from_secs(5))
            .expect("origin answers")
            .status,
        200
    );
}

/// GETs `path` on `edge`, answering the status.
fn status(edge: &Node, path: &str) -> u16 {
    http_get(edge.http, path, Duration::from_secs(10))
        .map(|r| r.status)
        .unwrap_or(0)
}

/// Waits until `f` holds, answering how long it took.
fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {limit:?}");
}

#[test]
fn playback_tokens_are_checked_at_every_edge_and_revocations_reach_them_fast() {
    let cp = ControlPlane::start(1, 1, 5);
    let grpc = cp.grpc[0];
    let origin = cp.start_origin("o1", &[]);
    let e1 = cp.start_edge("e1", &[]);
    let e2 = cp.start_edge("e2", &[]);
    let _pub = ffmpeg_publish_live(
        &origin.node.rtmp_url("cam"),
        120,
        &origin.node.dir.0,
        "ffmpeg",
    );
    origin.node.wait_live("cam", Duration::from_secs(30));
    e1.wait_live("cam", Duration::from_secs(30));

    ctl_ok(grpc, None, &["signing-keys", "create", "--purpose", "play"]);
    ctl_ok(grpc, None, &["playback", "cam", "--require-token"]);
    let issue = |stream: &str, ttl: &str| {
        ctl_ok(
            grpc,
            None,
            &["token", "issue", stream, "--purpose", "play", "--ttl", ttl],
        )["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let good = issue("cam", "10m");
    for edge in [&e1, &e2] {
        within(
            "the policy reaches the edge",
            Duration::from_secs(5),
            || status(edge, "/live/cam/index.m3u8") == 403,
        );
        assert_eq!(status(edge, &format!("/t/{good}/live/cam/index.m3u8")), 200);
        assert_eq!(
            status(edge, &format!("/live/cam/index.m3u8?token={good}")),
            200
        );
    }

    // A whole segment first (ffmpeg's HLS reader skips parts).
    let playlist_of = || {
        http_get(
            e1.http,
            &format!("/t/{good}/live/cam/index.m3u8"),
            Duration::from_secs(5),
        )
        .map(|r| r.text())
        .unwrap_or_default()
    };
    within("a whole segment", Duration::from_secs(20), || {
        playlist_of()
            .lines()
            .any(|l| !l.starts_with('#') && !l.trim().is_empty())
    });
    // ffmpeg plays through the token URL: relative URIs keep the token in the path.
    let url = format!("http://{}/t/{good}/live/cam/index.m3u8", e1.http);
    assert_plays(&url, 3);
    let playlist = http_get(
        e1.http,
        &format!("/t/{good}/live/cam/index.m3u8"),
        Duration::from_secs(5),
    )
    .expect("playlist")
    .text();
    let media = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a segment URI");
    assert!(!media.starts_with('/'), "relative URIs: {media}");
    assert_eq!(status(&e1, &format!("/t/{good}/live/cam/{media}")), 200);
    assert_eq!(status(&e1, &format!("/live/cam/{media}")), 403);

    // Expired and foreign tokens: 403.
    let short = issue("cam", "1");
    let foreign = issue("dog", "10m");
    std::thread::sleep(Duration::from_millis(2100));
    for t in [&short, &foreign] {
        assert_eq!(
            status(&e1, &format!("/t/{t}/live/cam/index.m3u8")),
            403,
            "{t}"
        );
        assert_eq!(status(&e2, &format!("/t/{t}/live/cam/{media}")), 403, "{t}");
    }

    // Revoking the token reaches both edges within 2 s.
    let other = issue("cam", "10m");
    let start = Instant::now();
    ctl_ok(grpc, None, &["token", "revoke", &good]);
    for edge in [&e1, &e2] {
        within(
            "token revocation",
            Duration::from_secs(2) - start.elapsed().min(Duration::from_secs(2)),
            || status(edge, &format!("/t/{good}/live/cam/index.m3u8")) == 403,
        );
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "token revocation took {took:?}"
    );
    assert_eq!(status(&e2, &format!("/t/{other}/live/cam/index.m3u8")), 200);

    // Blocking the stream's playback reaches both edges within 2 s.
    let start = Instant::now();
    ctl_ok(grpc, None, &["playback", "cam", "--block"]);
    for edge in [&e1, &e2] {
        within("stream revocation", Duration::from_secs(2), || {
            status(edge, &format!("/t/{other}/live/cam/index.m3u8")) == 403
        });
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "stream revocation took {took:?}"
    );

    // And open again.
    ctl_ok(grpc, None, &["playback", "cam", "--open"]);
    within("open again", Duration::from_secs(2), || {
        status(&e1, "/live/cam/index.m3u8") == 200
    });
}

/// Runs a command that must succeed within 20 s; answers its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Signs `ferrocast/play\n{key_id}\n{stream}\n{expiry}` with openssl, as docs/access.md
/// shows a backend doing it with standard tools: the token the bytes make.
fn openssl_token(dir: &TempDir, key: &Path, key_id: &str, stream: &str, expiry: u64) -> String {
    let msg = dir.join("msg");
    std::fs::write(
        &msg,
        format!("ferrocast/play\n{key_id}\n{stream}\n{expiry}"),
    )
    .unwrap();
    let sig = dir.join("sig");
    run_ok(Command::new("openssl").args([
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        key.to_str().unwrap(),
        "-in",
        msg.to_str().unwrap(),
        "-out",
        sig.to_str().unwrap(),
    ]));
    let sig = std::fs::read(&sig).unwrap();
    assert_eq!(sig.len(), 64, "an Ed25519 signature");
    format!("{key_id}.{expiry}.{}", ferrocast_tokens::base64url(&sig))
}

#[test]
fn ed25519_playback_tokens_signed_outside_the_cluster_play_and_key_revocation_reaches_both_edges() {
    let cp = ControlPlane::start(1, 1, 5);
    let grpc = cp.grpc[0];
    let origin = cp.start_origin("o1", &[]);
    let e1 = cp.start_edge("e1", &[]);
    let e2 = cp.start_edge("e2", &[]);
    let _pub = ffmpeg_publish_live(
        &origin.node.rtmp_url("cam"),
        120,
        &origin.node.dir.0,
        "ffmpeg",
    );
    origin.node.wait_live("cam", Duration::from_secs(30));
    e1.wait_live("cam", Duration::from_secs(30));

    // The platform's key, made by openssl (PKCS#8 v1), and an unrelated one made by ctl.
    let keys = TempDir::new("ed25519");
    let (key, key_pub) = (keys.join("backend.pem"), keys.join("backend.pub.pem"));
    run_ok(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]));
    run_ok(Command::new("openssl").args([
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        key_pub.to_str().unwrap(),
    ]));
    let other = keys.join("other.pem");
    let made =
        serde_json::from_str::<serde_json::Value>(&run_ok(Command::new(ferrocast_bin()).args([
            "ctl",
            "--json",
            "token",
            "keygen",
            "--out",
            other.to_str().unwrap(),
        ])))
        .expect("keygen prints JSON");
    assert_eq!(
        made["public_key_file"],
        keys.join("other.pub.pem").to_str().unwrap()
    );

    // A private key, or garbage, is refused at registration.
    let garbage = keys.join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    for (bad, why) in [
        (&key, "this is a private key"),
        (&garbage, "not an Ed25519 public key"),
    ] {
        let out = ctl(
            grpc,
            None,
            &[
                "signing-keys",
                "create",
                "--purpose",
                "play",
                "--key-id",
                "backend-1",
                "--public-key",
                bad.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "{bad:?} was registered");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid argument") && err.contains(why),
            "{err}"
        );
    }
    // The public key registers under the backend's id; only public keys are listed.
    let reg = ctl_ok(
        grpc,
        None,
        &[
            "signing-keys",
            "create",
            "--purpose",
            "play",
            "--key-id",
            "backend-1",
            "--public-key",
            key_pub.to_str().unwrap(),
        ],
    );
    assert_eq!(reg["algorithm"], "ed25519");
    let listed = ctl_ok(grpc, None, &["signing-keys", "list"]);
    assert_eq!(listed[0]["public_key"], reg["public_key"], "{listed}");
    ctl_ok(grpc, None, &["playback", "cam", "--require-token"]);

    let sign = |key: &Path| {
        ctl_ok(
            grpc,
            None,
            &[
                "token",
                "sign",
                "cam",
                "--purpose",
                "play",
                "--ttl",
                "10m",
                "--key-id",
                "backend-1",
                "--ed25519-key",
                key.to_str().unwrap(),
            ],
        )["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let good = sign(&key);
    let forged = sign(&other);
    // The documented bytes, signed by openssl, make a token that works as well.
    let expiry: u64 = good.split('.').nth(1).unwrap().parse().unwrap();
    let by_openssl = openssl_token(&keys, &key, "backend-1", "cam", expiry);
    for edge in [&e1, &e2] {
        within(
            "the policy and the key reach the edge",
            Duration::from_secs(5),
            || {
                status(edge, "/live/cam/index.m3u8") == 403
                    && status(edge, &format!("/t/{good}/live/cam/index.m3u8")) == 200
            },
        );
        assert_eq!(
            status(edge, &format!("/t/{by_openssl}/live/cam/index.m3u8")),
            200
        );
        assert_eq!(
            status(edge, &format!("/live/cam/index.m3u8?token={good}")),
            200
        );
        assert_eq!(
            status(edge, &format!("/t/{forged}/live/cam/index.m3u8")),
            403
        );
    }

    // Playlist, a whole segment and a part through the token URL; ffmpeg plays it.
    let playlist_of = || {
        http_get(
            e1.http,
            &format!("/t/{good}/live/cam/index.m3u8"),
            Duration::from_secs(5),
        )
        .map(|r| r.text())
        .unwrap_or_default()
    };
    within("a whole segment", Duration::from_secs(20), || {
        playlist_of()
            .lines()
            .any(|l| !l.starts_with('#') && !l.trim().is_empty())
    });
    let playlist = playlist_of();
    let media = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a segment URI")
        .to_owned();
    let part = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .next_back()
        .expect("a part URI")
        .to_owned();
    for (edge, obj) in [(&e1, &media), (&e2, &media), (&e1, &part)] {
        assert_eq!(
            status(edge, &format!("/t/{good}/live/cam/{obj}")),
            200,
            "{obj}"
        );
        assert_eq!(
            status(edge, &format!("/t/{forged}/live/cam/{obj}")),
            403,
            "{obj}"
        );
        assert_eq!(status(edge, &format!("/live/cam/{obj}")), 403, "{obj}");
    }
    let url = format!("http://{}/t/{good}/live/cam/index.m3u8", e2.http);
    assert_plays(&url, 3);

    // The controller has no private key: it cannot issue with this key.
    let out = ctl(
        grpc,
        None,
        &[
            "token",
            "issue",
            "cam",
            "--purpose",
            "play",
            "--key-id",
            "backend-1",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Ed25519"));

    // Revoking the key stops its tokens at both edges within 2 s.
    let start = Instant::now();
    ctl_ok(grpc, None, &["signing-keys", "revoke", "backend-1"]);
    for edge in [&e1, &e2] {
        within(
            "key revocation",
            Duration::from_secs(2) - start.elapsed().min(Duration::from_secs(2)),
            || status(edge, &format!("/t/{good}/live/cam/index.m3u8")) == 403,
        );
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "key revocation took {took:?}"
    );
    for edge in [&e1, &e2] {
        assert_eq!(
            status(edge, &format!("/t/{by_openssl}/live/cam/{media}")),
            403
        );
    }
}

/// A cluster on real etcd with `cam` live through edge `e1`, a play signing key, `cam`
/// needing a token, a good token and a revoked one (both refused/served at `e1` and at
/// the origin's HTTP port before this returns).
struct Protected {
    cp: ControlPlane,
    origin: ferrocast_tests::cluster::ClusterOrigin,
    e1: Node,
    _publisher: ferrocast_tests::Proc,
    good: String,
    revoked: String,
}

fn protected_cluster() -> Protected {
    let cp = ControlPlane::start(1, 1, 5);
    let grpc = cp.grpc[0];
    let origin = cp.start_origin("o1", &[]);
    let e1 = cp.start_edge("e1", &[]);
    let publisher = ffmpeg_publish_live(
        &origin.node.rtmp_url("cam"),
        180,
        &origin.node.dir.0,
        "ffmpeg",
    );
    origin.node.wait_live("cam", Duration::from_secs(30));
    e1.wait_live("cam", Duration::from_secs(30));
    ctl_ok(grpc, None, &["signing-keys", "create", "--purpose", "play"]);
    ctl_ok(grpc, None, &["playback", "cam", "--require-token"]);
    let issue = |ttl: &str| {
        ctl_ok(
            grpc,
            None,
            &["token", "issue", "cam", "--purpose", "play", "--ttl", ttl],
        )["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    // Different expiries: two tokens of one key, stream and expiry are the same token.
    let (good, revoked) = (issue("10m"), issue("9m"));
    assert_ne!(good, revoked);
    ctl_ok(grpc, None, &["token", "revoke", &revoked]);
    for node in [&e1, &origin.node] {
        let seen = || {
            [
                status(node, "/live/cam/index.m3u8"),
                status(node, &format!("/t/{revoked}/live/cam/index.m3u8")),
                status(node, &format!("/t/{good}/live/cam/index.m3u8")),
            ]
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen() != [403, 403, 200] {
            assert!(
                Instant::now() < deadline,
                "{}: the rules did not arrive: {:?}; log:\n{}",
                node.proc.name,
                seen(),
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Protected {
        cp,
        origin,
        e1,
        _publisher: publisher,
        good,
        revoked,
    }
}

/// Asserts that `node` refuses `cam` without a token, with the revoked one and with a
/// forged one, and (within 20 s: it may still be subscribing) serves it with the good one.
fn assert_protected(what: &str, node: &Node, good: &str, revoked: &str) {
    let forged = format!("{}x", &good[..good.len() - 1]);
    for path in [
        "/live/cam/index.m3u8".to_owned(),
        "/live/cam/init-0.mp4".to_owned(),
        format!("/t/{revoked}/live/cam/index.m3u8"),
        format!("/live/cam/index.m3u8?token={revoked}"),
        format!("/t/{forged}/live/cam/index.m3u8"),
    ] {
        assert_eq!(status(node, &path), 403, "{what}: {path}");
    }
    within(what, Duration::from_secs(20), || {
        status(node, &format!("/t/{good}/live/cam/index.m3u8")) == 200
    });
}

#[test]
fn origins_check_playback_tokens_on_their_http_port_like_edges() {
    let p = protected_cluster();
    let o = &p.origin.node;
    assert_protected("origin", o, &p.good, &p.revoked);
    assert_eq!(
        status(o, &format!("/live/cam/index.m3u8?token={}", p.good)),
        200
    );
    // The playlist's relative URIs keep the token in the path at the origin too.
    let playlist = http_get(
        o.http,
        &format!("/t/{}/live/cam/index.m3u8", p.good),
        Duration::from_secs(5),
    )
    .expect("playlist")
    .text();
    let part = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .next_back()
        .expect("a part URI")
        .to_owned();
    assert_eq!(status(o, &format!("/t/{}/live/cam/{part}", p.good)), 200);
    assert_eq!(status(o, &format!("/live/cam/{part}")), 403);
    // Blocking the stream reaches the origin's port as it reaches edges.
    ctl_ok(p.cp.grpc[0], None, &["playback", "cam", "--block"]);
    within(
        "stream blocked at the origin",
        Duration::from_secs(5),
        || status(o, &format!("/t/{}/live/cam/index.m3u8", p.good)) == 403,
    );
    assert!(o.metric("ferrocast_playback_refused_total") >= 1.0);
    assert_eq!(o.metric("ferrocast_playback_rules_loaded"), 1.0);
}

#[test]
fn an_edge_restarted_during_an_etcd_outage_serves_no_protected_stream_without_a_token() {
    let mut p = protected_cluster();
    p.cp.etcd.kill(0);
    // The controller still serves the rules it read last; a restarted edge gets them.
    p.e1.proc.signal("KILL");
    let e2 = p.cp.start_edge("e2", &[]);
    assert_protected("edge started during the outage", &e2, &p.good, &p.revoked);
    assert!(e2.log().contains("playback access rules loaded"));
    // The revoked token stays refused at the origin through the outage too.
    assert_protected("origin", &p.origin.node, &p.good, &p.revoked);
}

#[test]
fn a_controller_restarted_during_an_etcd_outage_serves_no_rules_and_edges_fail_closed() {
    let mut p = protected_cluster();
    p.cp.etcd.kill(0);
    p.cp.restart_controller(0);
    // A new edge meets a controller that has read nothing: it stays unready and closed,
    // never "everything open".
    let e2 = p.cp.spawn_member("edge", "e2", &[]);
    within("e2 answers", Duration::from_secs(20), || {
        status(&e2, "/healthz") == 200
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(status(&e2, "/readyz"), 503, "ready without access rules");
        for path in [
            "/live/cam/index.m3u8".to_owned(),
            "/live/unknown/index.m3u8".to_owned(),
            format!("/t/{}/live/cam/index.m3u8", p.good),
        ] {
            assert_eq!(status(&e2, &path), 403, "{path}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The edge that was running keeps the rules it had, revocations included.
    assert_protected(
        "edge across the controller restart",
        &p.e1,
        &p.good,
        &p.revoked,
    );

    // etcd back: the controller reads the rules, the new edge becomes ready with them,
    // and the revoked token is still refused everywhere.
    p.cp.etcd.restart(0);
    within("e2 ready", Duration::from_secs(30), || {
        status(&e2, "/readyz") == 200
    });
    assert_protected("edge after the outage", &e2, &p.good, &p.revoked);
    assert_protected("edge e1 after the outage", &p.e1, &p.good, &p.revoked);
    assert_protected(
        "origin after the outage",
        &p.origin.node,
        &p.good,
        &p.revoked,
    );
}
