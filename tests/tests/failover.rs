//! Failover with real processes: etcd, two controller replicas, origins and edges joined
//! through them, ffmpeg publishing, and viewers polling the edges. Processes are killed
//! and frozen with signals, by their own PIDs.

use ferrocast_tests::cluster::{check_continuity, ClusterOrigin, ControlPlane, Poller};
use ferrocast_tests::{ffmpeg_publish_live, Node, Proc};
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

fn last_msn(poller: &Poller) -> u64 {
    poller
        .samples()
        .iter()
        .rev()
        .find_map(|s| s.last_msn())
        .expect("a listed segment")
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
        recovered.push(wait_past(e, p, before, Duration::from_secs(30)) - killed_at);
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
}

#[test]
fn controller_leader_killed_another_takes_over() {
    let lease = 2;
    let mut cp = ControlPlane::start(1, 2, lease);
    let first = cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let edge = cp.start_edge("edge-1", &[]);
    let _publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    edge.wait_live(KEY, Duration::from_secs(30));
    let poller = Poller::start(
        edge.http,
        &format!("/live/{KEY}/index.m3u8"),
        Duration::from_millis(200),
    );

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
}

#[test]
fn etcd_leader_lost_in_a_three_member_cluster_changes_nothing() {
    let mut cp = ControlPlane::start(3, 1, 2);
    cp.wait_leader(Duration::from_secs(15));
    let a = cp.start_origin("origin-a", &[]);
    let edge = cp.start_edge("edge-1", &[]);
    let _publisher = publish_until_accepted(&a, Duration::from_secs(20), "a");
    edge.wait_live(KEY, Duration::from_secs(30));
    let poller = Poller::start(
        edge.http,
        &format!("/live/{KEY}/index.m3u8"),
        Duration::from_millis(200),
    );
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
}
