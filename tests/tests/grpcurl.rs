//! The controller's gRPC API driven by the real grpcurl (v1.8.6, through server
//! reflection, as an operator would): operator roles by bearer token on a plaintext
//! controller, and over mutual TLS with operator certificates (`-cacert -cert -key`) on
//! a controller with `--tls-dir` and `--operator-ca`. Every changing call is in the audit
//! log with who made it.

use ferrocast_tests::tls::grpcurl;
use ferrocast_tests::{ferrocast_bin, make_certs, run_with_timeout, start_controller, TempDir};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const ADMIN: &str = "admin-secret-7";
const READER: &str = "read-secret-7";
const OPS: &str = "ferrocast.controller.v1.OperatorService";

/// `grpcurl FLAGS ADDR METHOD` with `-d DATA` when given; a 20 s deadline.
fn grpcurl_call(flags: &[&str], addr: SocketAddr, method: &str, data: Option<&str>) -> Output {
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-max-time", "10"]).args(flags);
    if let Some(d) = data {
        cmd.args(["-d", d]);
    }
    cmd.arg(addr.to_string());
    if !method.is_empty() {
        cmd.arg(method);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn assert_ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "grpcurl failed: {}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

#[track_caller]
fn assert_code(o: &Output, code: &str) {
    assert!(
        !o.status.success(),
        "grpcurl succeeded, {code} expected: {}",
        text(o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("Code: {code}")),
        "{code} expected: {}",
        text(o)
    );
}

fn drain(node_id: &str) -> String {
    format!(r#"{{"node_id":"{node_id}","drain":true}}"#)
}

#[test]
fn grpcurl_needs_a_token_for_reads_and_the_admin_token_for_changes() {
    let (controller, grpc) =
        start_controller(&["--operator-token", ADMIN, "--operator-read-token", READER]);
    let plain = ["-plaintext"];
    let read_h = format!("authorization: Bearer {READER}");
    let admin_h = format!("authorization: Bearer {ADMIN}");
    let as_reader = ["-plaintext", "-H", &read_h];
    let as_admin = ["-plaintext", "-H", &admin_h];

    // Reflection (v1alpha, which grpcurl 1.8 speaks) lists the services without a token.
    let list = grpcurl_call(&plain, grpc, "list", None);
    assert!(list.status.success(), "{}", text(&list));
    let services = String::from_utf8_lossy(&list.stdout);
    for s in [
        OPS,
        "ferrocast.controller.v1.NodeService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(s), "{s} not listed: {services}");
    }

    // No token: neither reads nor changes.
    let list_nodes = format!("{OPS}/ListNodes");
    let drain_node = format!("{OPS}/DrainNode");
    let create_key = format!("{OPS}/CreatePublishKey");
    assert_code(
        &grpcurl_call(&plain, grpc, &list_nodes, None),
        "Unauthenticated",
    );
    assert_code(
        &grpcurl_call(&plain, grpc, &drain_node, Some(&drain("edge-9"))),
        "Unauthenticated",
    );
    assert_code(
        &grpcurl_call(&plain, grpc, &create_key, Some(r#"{"stream":"cam"}"#)),
        "Unauthenticated",
    );
    // A wrong token is no token.
    assert_code(
        &grpcurl_call(
            &["-plaintext", "-H", "authorization: Bearer nope"],
            grpc,
            &list_nodes,
            None,
        ),
        "Unauthenticated",
    );

    // The read-only token: reads yes, changes no.
    assert_ok(&grpcurl_call(&as_reader, grpc, &list_nodes, None));
    assert_ok(&grpcurl_call(
        &as_reader,
        grpc,
        &format!("{OPS}/ListStreams"),
        None,
    ));
    assert_code(
        &grpcurl_call(&as_reader, grpc, &drain_node, Some(&drain("edge-9"))),
        "PermissionDenied",
    );
    assert_code(
        &grpcurl_call(&as_reader, grpc, &create_key, Some(r#"{"stream":"cam"}"#)),
        "PermissionDenied",
    );
    controller.wait_log("refused: read-only operator", Duration::from_secs(10));

    // The admin token: changes too.
    assert_ok(&grpcurl_call(
        &as_admin,
        grpc,
        &drain_node,
        Some(&drain("edge-9")),
    ));
    let key = assert_ok(&grpcurl_call(
        &as_admin,
        grpc,
        &create_key,
        Some(r#"{"stream":"cam"}"#),
    ));
    assert!(
        key.to_string().contains("cam"),
        "the key is for the stream: {key}"
    );
    controller.wait_log(
        "op=\"CreatePublishKey\" what=\"stream=cam",
        Duration::from_secs(10),
    );
    let log = controller.log();
    let audited = |op: &str| {
        log.lines().any(|l| {
            l.contains("ferrocast::audit")
                && l.contains("operator call done")
                && l.contains("who=admin@127.0.0.1")
                && l.contains(op)
        })
    };
    assert!(
        audited("op=\"DrainNode\" what=\"node=edge-9 drain=true\""),
        "{log}"
    );
    assert!(audited("op=\"CreatePublishKey\""), "{log}");
    assert!(
        !log.contains(ADMIN) && !log.contains(READER),
        "tokens never logged"
    );
}

/// `ferrocast certs DIR --operator admin:alice --operator read:bob`.
fn certs_with_operators(dir: &Path) {
    let out = run_with_timeout(
        Command::new(ferrocast_bin()).arg("certs").arg(dir).args([
            "--operator",
            "admin:alice",
            "--operator",
            "read:bob",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "certs: {}", text(&out));
}

#[test]
fn grpcurl_and_ctl_over_mutual_tls_with_operator_certificates() {
    let pki = TempDir::new("grpc-pki");
    certs_with_operators(&pki.0);
    let other = TempDir::new("grpc-other-pki");
    make_certs(&other.0);
    let p = |name: &str| pki.join(name).display().to_string();
    let (controller, grpc) = start_controller(&[
        "--tls-dir",
        &pki.0.display().to_string(),
        "--operator-ca",
        &p("operator-ca.pem"),
        "--operator-token",
        ADMIN,
    ]);
    let ca = p("ca.pem");
    let tls = ["-cacert", ca.as_str()];
    let (alice, alice_key) = (
        p("operator-admin-alice.pem"),
        p("operator-admin-alice-key.pem"),
    );
    let (bob, bob_key) = (p("operator-read-bob.pem"), p("operator-read-bob-key.pem"));
    let (node, node_key) = (p("node.pem"), p("node-key.pem"));
    let as_alice = ["-cacert", &ca, "-cert", &alice, "-key", &alice_key];
    let as_bob = ["-cacert", &ca, "-cert", &bob, "-key", &bob_key];
    let as_node = ["-cacert", &ca, "-cert", &node, "-key", &node_key];
    let list_nodes = format!("{OPS}/ListNodes");
    let drain_node = format!("{OPS}/DrainNode");

    // TLS with the controller's name checked against the cluster CA: reflection answers.
    let list = grpcurl_call(&tls, grpc, "list", None);
    assert!(list.status.success(), "{}", text(&list));
    assert!(String::from_utf8_lossy(&list.stdout).contains(OPS));
    // Plaintext on the TLS port gets nothing.
    let plain = grpcurl_call(&["-plaintext"], grpc, &list_nodes, None);
    assert!(
        !plain.status.success(),
        "plaintext answered: {}",
        text(&plain)
    );

    // No certificate, no token: refused. The token still works over TLS.
    assert_code(
        &grpcurl_call(&tls, grpc, &drain_node, Some(&drain("edge-1"))),
        "Unauthenticated",
    );
    let admin_h = format!("authorization: Bearer {ADMIN}");
    assert_ok(&grpcurl_call(
        &["-cacert", &ca, "-H", &admin_h],
        grpc,
        &list_nodes,
        None,
    ));

    // alice (admin:alice) may change; bob (read:bob) may only read.
    assert_ok(&grpcurl_call(
        &as_alice,
        grpc,
        &drain_node,
        Some(&drain("edge-1")),
    ));
    assert_ok(&grpcurl_call(&as_bob, grpc, &list_nodes, None));
    assert_code(
        &grpcurl_call(&as_bob, grpc, &drain_node, Some(&drain("edge-1"))),
        "PermissionDenied",
    );
    // A node's certificate (cluster CA) makes nobody an operator.
    assert_code(
        &grpcurl_call(&as_node, grpc, &drain_node, Some(&drain("edge-1"))),
        "Unauthenticated",
    );
    // And an operator certificate does not make a node.
    assert_code(
        &grpcurl_call(
            &as_alice,
            grpc,
            "ferrocast.controller.v1.NodeService/Register",
            Some(r#"{"node_id":"fake","role":"NODE_ROLE_EDGE"}"#),
        ),
        "Unauthenticated",
    );
    // A certificate of another CA fails the handshake.
    let o = other.join("node.pem").display().to_string();
    let ok = other.join("node-key.pem").display().to_string();
    let foreign = grpcurl_call(
        &["-cacert", &ca, "-cert", &o, "-key", &ok],
        grpc,
        &list_nodes,
        None,
    );
    assert!(
        !foreign.status.success(),
        "foreign certificate accepted: {}",
        text(&foreign)
    );
    controller.wait_log(
        "gRPC TLS handshake refused: client certificate",
        Duration::from_secs(10),
    );

    // ferrocast ctl with a certificate.
    let ctl = |args: &[&str]| {
        run_with_timeout(
            Command::new(ferrocast_bin())
                .args([
                    "ctl",
                    "--json",
                    "--controller",
                    &grpc.to_string(),
                    "--ca",
                    &ca,
                ])
                .args(args),
            Duration::from_secs(20),
        )
    };
    let out = ctl(&["--cert", &alice, "--key", &alice_key, "drain", "edge-2"]);
    assert!(out.status.success(), "ctl as alice: {}", text(&out));
    let out = ctl(&["--cert", &bob, "--key", &bob_key, "drain", "edge-2"]);
    assert!(!out.status.success(), "bob drained: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        text(&out)
    );
    let out = ctl(&["--cert", &bob, "--key", &bob_key, "nodes"]);
    assert!(out.status.success(), "ctl as bob reads: {}", text(&out));
    // Without --ca, ctl cannot talk to the TLS port.
    let out = run_with_timeout(
        Command::new(ferrocast_bin()).args(["ctl", "--controller", &grpc.to_string(), "nodes"]),
        Duration::from_secs(20),
    );
    assert!(
        !out.status.success(),
        "plaintext ctl answered: {}",
        text(&out)
    );
    // ... and says what to do.
    assert!(
        text(&out).contains("https:// with --ca"),
        "no hint: {}",
        text(&out)
    );

    // The audit log names the certificate identities.
    controller.wait_log("who=cert:alice@127.0.0.1", Duration::from_secs(10));
    let log = controller.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ferrocast::audit"))
        .collect();
    assert!(
        audit.iter().any(|l| l.contains("who=cert:alice@")
            && l.contains("node=edge-2")
            && l.contains("operator call done")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("who=cert:bob@") && l.contains("refused: read-only operator")),
        "{audit:#?}"
    );
}
