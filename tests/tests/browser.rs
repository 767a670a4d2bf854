//! The player page in a real browser: Debian's Chromium driven by playwright-core plays
//! the demo stream of `ferrocast standalone --demo` through hls.js in low-latency mode.

use ferrocast_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

#[test]
fn player_page_plays_demo_in_low_latency_mode() {
    let root = repo_root();
    let driver = root.join("tests/browser/play.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix tests/browser` first (scripts/test.sh does)"
    );
    let node = Node::start("standalone", &["--demo"]);
    node.wait_live("demo", Duration::from_secs(20));
    let home = node.get("/");
    assert_eq!(home.status, 200);
    assert!(
        home.text().contains("/api/streams"),
        "home page lists streams from the API"
    );
    let api = node.get("/api/streams").text();
    assert!(api.contains("\"name\":\"demo\""), "{api}");

    let url = format!("http://{}/watch/demo", node.http);
    let out = run_with_timeout(
        Command::new("node")
            .arg(&driver)
            .args(["--url", &url, "--seconds", "20"]),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser playback failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        node.log()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .expect("JSON result line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(v["started"], true);
    assert_eq!(v["lowLatencyMode"], true);
    assert_eq!(v["hasParts"], true);
    assert!(
        v["framesDecoded"].as_u64().unwrap_or(0) > 300,
        "frames decoded: {line}"
    );
    assert!(
        v["maxStallMs"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "stalls: {line}"
    );
    let latency = v["medianLatency"].as_f64().expect("median latency");
    eprintln!("hls.js median latency behind live: {latency:.3} s");
    assert!(
        latency > 0.0 && latency <= 1.5,
        "hls.js {latency:.3} s behind live (goal ≤ 1.5 s)"
    );

    // hls.js with low latency off plays the very same playlist the classic way.
    let out = run_with_timeout(
        Command::new("node").arg(&driver).args([
            "--url",
            &format!("{url}?ll=0"),
            "--seconds",
            "10",
            "--no-require-ll",
        ]),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "classic playback failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .expect("JSON result line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(v["started"], true);
    assert_eq!(v["lowLatencyMode"], false, "{line}");
    assert!(
        v["framesDecoded"].as_u64().unwrap_or(0) > 150,
        "frames decoded: {line}"
    );
}
