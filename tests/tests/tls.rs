//! TLS on every hop, with real processes: origins and edges joined to a controller over
//! mutual TLS (a stranger's certificate is refused), ffmpeg publishing over RTMPS with
//! the certificate checked and the HLS played back by ffmpeg, hostile clients on the
//! RTMPS port closed without harm to a live stream, and certificates replaced on disk
//! while the edge's HTTPS, the RTMPS port and the controller's gRPC port keep running.

use ferrocast_tests::tls::{first_cert, TlsClient};
use ferrocast_tests::{
    ferrocast_bin, ffmpeg_publish_live, ffmpeg_publish_live_with, framemd5_raw, free_addr,
    free_port, free_udp_addr, make_certs, parse_framemd5, run_with_timeout, start_controller,
    Launch, Node, Proc, TempDir,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    let (controller, grpc) = start_controller(&["--tls-dir", &tls_dir, "--publish-auth", "open"]);
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
