//! The player page in a real browser: Debian's Chromium driven by playwright-core plays
//! the demo stream of `ferrocast standalone --demo` through hls.js in low-latency mode.

use ferrocast_tests::*;
use std::time::Duration;

#[test]
fn player_page_plays_demo_in_low_latency_mode() {
    let node = Node::start("standalone", &["--demo"]);
    let home = node.get("/");
    assert_eq!(home.status, 200);
    assert!(
        home.text().contains("/api/streams"),
        "home page lists streams from the API"
    );
    // The page lists the demo before anyone watches it: nothing has asked the edge for
    // its playlist yet, so the edge knows of it only from the cluster's assignments.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let api = node.get("/api/streams").text();
        if api.contains("\"name\":\"demo\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge's page never listed the unwatched demo: {api}; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.wait_live("demo", Duration::from_secs(20));

    let url = format!("http://{}/watch/demo", node.http);
    let v = play_in_browser(&url, 20, &[], || node.log());
    let line = v.to_string();
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

    assert!(
        v["warnings"].get("bufferSeekOverHole").is_none(),
        "a hole in the timeline: {line}"
    );

    // hls.js with low latency off plays the very same playlist the classic way, across
    // two loop points of the demo clip (8 s each) without a hole or a stall: the loop
    // leaves no gap in either track's timeline.
    let v = play_in_browser(&format!("{url}?ll=0"), 20, &["--no-require-ll"], || {
        node.log()
    });
    let line = v.to_string();
    assert_eq!(v["started"], true);
    assert_eq!(v["lowLatencyMode"], false, "{line}");
    assert!(
        v["framesDecoded"].as_u64().unwrap_or(0) > 400,
        "frames decoded: {line}"
    );
    assert!(
        v["warnings"].get("bufferSeekOverHole").is_none(),
        "a hole in the timeline: {line}"
    );
    assert!(
        v["warnings"].get("bufferStalledError").is_none() && v["stalls"] == 0,
        "classic hls.js stalled: {line}"
    );
}
