//! Failover with real processes: etcd, two controller replicas, origins and edges joined
//! through them, ffmpeg publishing, and viewers polling the edges. Processes are killed
//! and frozen with signals, by their own PIDs.

use ferrocast_tests::cluster::{check_continuity, ClusterOrigin, ControlPlane, Poller};
use ferrocast_tests::{ffmpeg_publish_live, http_get, metric_value, Node, Proc};
use std::time::{Duration, Instant};

const KEY: &str = "failover";

/// Publishes to `origin` until it accepts (a duplicate is refused while the previous
/// holder's lease lives): a publisher that reconnects until it gets through.
fn publish_until_accepted(origin: &ClusterOrigin, within: Duration, tag: &str) -> Proc {
    let deadline = Instant::now() + within;
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        let mut p = ffmpeg_publish_live(
            &origin.node.rtmp_url(KEY),
            120,
            &origin.node.dir.0,
            &format!("ffmpeg-{tag}-{attempt}"),
        );
        // Refused publishers exit at once; an accepted one keeps going.
        if p.wait_timeout(Duration::from_millis(1500)).is_none()
            && origin.node.log().contains("publisher claimed stream")
        {
            return p;
        }
        drop(p);
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "no publisher accepted by {} within {within:?}; log:\n{}",
        origin.node.proc.name,
        origin.node.log()
    );
}

/// Waits until `edge` lists a segment numbered above `msn`.
fn wait_past(edge: &Node, poller: &Poller, msn: u64, within: Duration) -> Duration {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = poller
            .samples()
            .iter()
            .find(|s| s.last_msn().is_some_and(|m| m > msn))
        {
            return s.at;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} never listed a segment past {msn} within {within:?}; log:\n{}",
        edge.proc.name,
        edge.log()
    );
}

/// The highest segment number the poller has seen (waiting up to 15 s for a first one).
fn last_msn(poller: &Poller) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(m) = poller.samples().iter().rev().find_map(|s| s.last_msn()) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no segment listed: {:?}",
            poller.samples()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stream published to origin-a and watched through edge-1 by a poller.
struct Watched {
    cp: ControlPlane,
    a: ClusterOrigin,
    edge: Node,
    _publisher: Proc,
    poller: Poller,
    /// The controller replica leading at the start.
    leader: usize,
}

/// `ControlPlane::start(etcd_members, controllers, lease_s)`, origin-a with a publisher,
/// edge-1 live, and a poller on its playlist.
fn watched(etcd_members: usize, controllers: usize, lease_s: u32) -> Watched {
    let cp = ControlPlane::start(etcd_members, controllers, lease_s);
    let leader = cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let edge = cp.start_edge("edge-1", &[]);
    let _publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    edge.wait_live(KEY, Duration::from_secs(30));
    let poller = Poller::start(
        edge.http,
        &format!("/live/{KEY}/index.m3u8"),
        Duration::from_millis(200),
    );
    Watched {
        cp,
        a,
        edge,
        _publisher,
        poller,
        leader,
    }
}

#[test]
fn origin_killed_publisher_moves_edges_follow() {
    let cp = ControlPlane::start(1, 2, 2);
    cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let b = cp.start_origin("origin-b", &[]);
    let edges = [cp.start_edge("edge-1", &[]), cp.start_edge("edge-2", &[])];
    let _publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    for e in &edges {
        e.wait_live(KEY, Duration::from_secs(30));
    }
    let path = format!("/live/{KEY}/index.m3u8");
    let pollers: Vec<Poller> = edges
        .iter()
        .map(|e| Poller::start(e.http, &path, Duration::from_millis(150)))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let before = pollers.iter().map(last_msn).max().unwrap();

    let killed_at = pollers[0].elapsed();
    a.node.proc.signal("KILL");
    let _b_publisher = publish_until_accepted(&b, Duration::from_secs(30), "b");
    let mut recovered = Vec::new();
    for (e, p) in edges.iter().zip(&pollers) {
        wait_past(e, p, before, Duration::from_secs(30));
        // New media: the first segment from the new origin (after the discontinuity).
        let deadline = Instant::now() + Duration::from_secs(30);
        let at = loop {
            let seen = p
                .samples()
                .iter()
                .find(|s| s.at > killed_at && s.segments.iter().any(|(_, d)| *d))
                .map(|s| s.at);
            if let Some(at) = seen {
                break at;
            }
            assert!(Instant::now() < deadline, "{}: no new media", e.proc.name);
            std::thread::sleep(Duration::from_millis(100));
        };
        recovered.push(at - killed_at);
    }
    // Let the new origin's stream run a little through both edges.
    std::thread::sleep(Duration::from_secs(4));
    for ((e, p), took) in edges.iter().zip(pollers).zip(&recovered) {
        let samples = p.stop();
        // 503 may answer a blocking request that outlasts its deadline; plain
        // reloads of the playlist never 404 and never go back.
        let discontinuities = check_continuity(&e.proc.name, &samples, &[503]);
        assert_eq!(
            discontinuities, 1,
            "{}: one EXT-X-DISCONTINUITY where the stream moved",
            e.proc.name
        );
        eprintln!(
            "FIGURE origin kill → new media at {}: {:.2} s",
            e.proc.name,
            took.as_secs_f64()
        );
    }
    assert!(b.node.log().contains("taken_over=true"), "{}", b.node.log());
}

#[test]
fn frozen_origin_is_fenced_when_it_wakes() {
    let cp = ControlPlane::start(1, 1, 2);
    cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let b = cp.start_origin("origin-b", &[]);
    let edge = cp.start_edge("edge-1", &[]);
    let publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    edge.wait_live(KEY, Duration::from_secs(30));
    let poller = Poller::start(
        edge.http,
        &format!("/live/{KEY}/index.m3u8"),
        Duration::from_millis(150),
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = last_msn(&poller);

    // Frozen past its lease: the stream is taken over by another origin.
    a.node.proc.signal("STOP");
    drop(publisher);
    let _b_publisher = publish_until_accepted(&b, Duration::from_secs(30), "b");
    wait_past(&edge, &poller, before, Duration::from_secs(30));
    let moved_to = last_msn(&poller);

    // Woken up: the old holder learns its epoch is over and drops the stream.
    a.node.proc.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.node.log().contains("stream fenced") {
        assert!(
            Instant::now() < deadline,
            "the woken origin was not fenced; log:\n{}",
            a.node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = a.node.get(&format!("/live/{KEY}/index.m3u8"));
    assert_eq!(r.status, 404, "a fenced origin no longer serves the stream");
    // The edge stays with the new holder.
    wait_past(&edge, &poller, moved_to + 1, Duration::from_secs(15));
    let samples = poller.stop();
    assert_eq!(check_continuity("edge-1", &samples, &[503]), 1);
    assert!(b.node.log().contains("taken_over=true"), "{}", b.node.log());
    // The controller kept the new holder: the woken origin's reports were refused.
    assert_eq!(
        cp.stream_holder(KEY),
        ("origin-b".to_owned(), 2, "live".to_owned())
    );
}

#[test]
fn controller_leader_killed_another_takes_over() {
    let lease = 2;
    let Watched {
        mut cp,
        a,
        edge,
        _publisher,
        poller,
        leader: first,
    } = watched(1, 2, lease);

    let killed = Instant::now();
    let old = cp.controllers[first].take().expect("leader running");
    old.proc.signal("KILL");
    let next = cp.wait_leader(Duration::from_secs(u64::from(lease) + 10));
    let took = killed.elapsed();
    assert_ne!(next, first);
    eprintln!(
        "FIGURE controller leader kill → new leader: {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took <= Duration::from_secs(u64::from(lease) + 1) + Duration::from_millis(500),
        "took {took:?} (lease {lease} s)"
    );
    // The data path never noticed; the origin registers with the new leader.
    let before = last_msn(&poller);
    wait_past(&edge, &poller, before + 1, Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(15);
    while a
        .node
        .log()
        .matches("registered with the controller")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "origin did not re-register:\n{}",
            a.node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let samples = poller.stop();
    assert_eq!(
        check_continuity("edge-1", &samples, &[503]),
        0,
        "no reassignment"
    );
    assert_eq!(
        cp.stream_holder(KEY),
        ("origin-a".to_owned(), 1, "live".to_owned())
    );
}

#[test]
fn etcd_leader_lost_in_a_three_member_cluster_changes_nothing() {
    let Watched {
        mut cp,
        a,
        edge,
        _publisher,
        poller,
        leader: _,
    } = watched(3, 1, 2);
    let leader = cp.etcd.leader().expect("an etcd leader");
    cp.etcd.kill(leader);
    // Past several leases: the survivors elect a leader, the controller's lease and the
    // nodes' leases are kept alive through it.
    std::thread::sleep(Duration::from_secs(8));
    let before = last_msn(&poller);
    wait_past(&edge, &poller, before + 1, Duration::from_secs(15));
    let samples = poller.stop();
    assert_eq!(
        check_continuity("edge-1", &samples, &[503]),
        0,
        "no reassignment"
    );
    assert!(!a.node.log().contains("stream fenced"), "{}", a.node.log());
    assert_eq!(
        a.node
            .log()
            .matches("the controller granted the stream")
            .count(),
        1
    );
    assert_eq!(
        cp.stream_holder(KEY),
        ("origin-a".to_owned(), 1, "live".to_owned())
    );
}

/// The edge `/play/KEY` on the controller sends a viewer to (its `Location` host:port).
fn play_target(cp: &ControlPlane) -> Option<String> {
    let c = cp.controllers[0].as_ref().expect("controller running");
    let r = http_get(c.http, &format!("/play/{KEY}"), Duration::from_secs(5)).ok()?;
    if r.status != 302 {
        return None;
    }
    let loc = r.header("location")?.to_owned();
    Some(loc.split('/').nth(2)?.to_owned())
}

#[test]
fn killed_edge_is_no_longer_chosen_within_a_lease() {
    let lease = 2;
    let cp = ControlPlane::start(1, 1, lease);
    cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let mut edges = [
        Some(cp.start_edge("edge-1", &[])),
        Some(cp.start_edge("edge-2", &[])),
    ];
    let _publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    for e in edges.iter().flatten() {
        e.wait_live(KEY, Duration::from_secs(30));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let chosen = loop {
        if let Some(t) = play_target(&cp) {
            break t;
        }
        assert!(Instant::now() < deadline, "/play never answered 302");
        std::thread::sleep(Duration::from_millis(200));
    };
    let victim = edges
        .iter()
        .position(|e| e.as_ref().is_some_and(|e| e.http.to_string() == chosen))
        .unwrap_or_else(|| panic!("/play names {chosen}, not one of the edges"));
    let survivor = edges[1 - victim].as_ref().unwrap().http.to_string();
    let victim_id = ["edge-1", "edge-2"][victim];
    let killed = Instant::now();
    edges[victim].take().unwrap().proc.signal("KILL");
    // Gone from the cluster (its lease expired) within one lease, and from then on
    // never chosen.
    let took = loop {
        let nodes = cp.ctl_json(&["nodes", "--role", "edge"]);
        let listed = nodes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["id"] == victim_id));
        if !listed {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(u64::from(lease) * 3),
            "the dead edge is still listed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "FIGURE edge kill → gone from placement: {:.2} s",
        took.as_secs_f64()
    );
    // One lease, plus the poll itself (a `ferrocast ctl` process per look) on a busy
    // machine.
    assert!(
        took <= Duration::from_secs(u64::from(lease)) + Duration::from_millis(1500),
        "took {took:?} with a {lease} s lease"
    );
    // The /play view refreshes within its cache period.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..20 {
        assert_eq!(play_target(&cp).as_deref(), Some(survivor.as_str()));
    }
    // Every edge answers /play too, with the controller's choice (the query kept).
    let on_edge = http_get(
        edges[1 - victim].as_ref().unwrap().http,
        &format!("/play/{KEY}?token=t1"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(on_edge.status, 302);
    assert_eq!(
        on_edge.header("location"),
        Some(format!("http://{survivor}/live/{KEY}/index.m3u8?token=t1").as_str())
    );
}

#[test]
fn etcd_stopped_streams_keep_flowing_then_state_reconciles() {
    let Watched {
        mut cp,
        a,
        edge,
        _publisher,
        poller,
        leader: _,
    } = watched(1, 1, 2);
    let controller = cp.controllers[0].as_ref().unwrap().http;

    cp.etcd.kill(0);
    // Degraded, not dead: readiness fails with a reason, liveness holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_get(controller, "/readyz", Duration::from_secs(2)).unwrap();
        if r.status == 503 {
            assert!(r.text().contains("degraded"), "{}", r.text());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never reported the store down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let live = http_get(controller, "/healthz", Duration::from_secs(2)).unwrap();
    assert_eq!(live.status, 200);
    let m = http_get(controller, "/metrics", Duration::from_secs(2)).unwrap();
    assert_eq!(
        metric_value(&m.text(), "ferrocast_controller_store_up"),
        0.0
    );
    // Several leases without etcd: viewers keep getting new segments.
    let before = last_msn(&poller);
    wait_past(&edge, &poller, before + 2, Duration::from_secs(20));

    cp.etcd.restart(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = http_get(controller, "/metrics", Duration::from_secs(2)).unwrap();
        let ready = http_get(controller, "/readyz", Duration::from_secs(2)).unwrap();
        if metric_value(&m.text(), "ferrocast_controller_store_up") == 1.0 && ready.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never saw etcd back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Reconciled: both nodes registered again, the stream still where it was.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = cp.ctl_json(&["nodes"]);
        let ids: Vec<&str> = nodes
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["id"].as_str()).collect())
            .unwrap_or_default();
        if ids.contains(&"origin-a") && ids.contains(&"edge-1") {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not back: {nodes}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        cp.stream_holder(KEY),
        ("origin-a".to_owned(), 1, "live".to_owned())
    );
    let samples = poller.stop();
    assert_eq!(
        check_continuity("edge-1", &samples, &[503]),
        0,
        "no reassignment"
    );
    assert!(!a.node.log().contains("stream fenced"), "{}", a.node.log());
}

#[test]
fn play_sends_viewers_to_an_edge_public_url() {
    let cp = ControlPlane::start(1, 1, 2);
    cp.wait_leader(Duration::from_secs(15));
    let edge = cp.start_edge("edge-p", &["--public-url", "https://edge-p.cdn.example/"]);
    let c = cp.controllers[0].as_ref().expect("controller running");
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = http_get(c.http, &format!("/play/{KEY}"), Duration::from_secs(5)).ok();
        if let Some(r) = r.filter(|r| r.status == 302) {
            break r;
        }
        assert!(Instant::now() < deadline, "/play never answered 302");
        std::thread::sleep(Duration::from_millis(100));
    };
    let want = format!("https://edge-p.cdn.example/live/{KEY}/index.m3u8");
    assert_eq!(r.header("location"), Some(want.as_str()));
    // The edge's own /play answers with the same URL (the controller's choice).
    let on_edge = http_get(edge.http, &format!("/play/{KEY}"), Duration::from_secs(5)).unwrap();
    assert_eq!(on_edge.status, 302);
    assert_eq!(on_edge.header("location"), Some(want.as_str()));
}
