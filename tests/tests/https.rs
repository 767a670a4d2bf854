//! HTTPS on the viewer port: with `--https-cert/--https-key` the edge speaks TLS and
//! negotiates HTTP/2 or HTTP/1.1 by ALPN; plaintext is no longer answered.

use ferrocast_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn curl(args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
        Duration::from_secs(15),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn edge_serves_https_with_alpn_h2_and_http11() {
    let dir = TempDir::new("https");
    let out = run_with_timeout(
        Command::new(ferrocast_bin()).arg("certs").arg(&dir.0),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node-key.pem"),
    );
    let http = free_port();
    let mut cmd = Command::new(ferrocast_bin());
    cmd.args(["standalone", "--demo"])
        .args(["--rtmp-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args([
            "--origin-http-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--https-cert")
        .arg(&cert)
        .arg("--https-key")
        .arg(&key);
    let _node = Proc::spawn("standalone", &mut cmd, &dir.0);
    let ca = ca.to_str().expect("utf-8");
    let base = format!("https://localhost:{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let code = curl(&[
            "--cacert",
            ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/live/demo/index.m3u8"),
        ]);
        if code == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS never served the playlist (last: {code})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("{base}/live/demo/index.m3u8");
    let h2 = curl(&[
        "--cacert",
        ca,
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(h2, "2 200", "ALPN picks HTTP/2");
    let h1 = curl(&[
        "--cacert",
        ca,
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(h1, "1.1 200", "ALPN falls back to HTTP/1.1");
    let body = curl(&["--cacert", ca, &url]);
    assert!(body.contains("#EXT-X-PART:"), "{body}");
    // Plain HTTP on the TLS port gets no playlist.
    let plain = http_get(
        format!("127.0.0.1:{http}").parse().expect("addr"),
        "/live/demo/index.m3u8",
        Duration::from_secs(5),
    );
    assert!(
        plain.map(|r| r.status != 200).unwrap_or(true),
        "plaintext must not be served on the HTTPS port"
    );
}
