//! A whole cluster of separate processes for the failover tests: real etcd, controller
//! replicas, origins and edges joined through the controller, and a poller that watches
//! an edge's playlist the way a player would (recording every answer).

use crate::etcd::Etcd;
use crate::{free_addr, free_udp_addr, http_get, make_certs, Launch, Node, TempDir};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// etcd, controllers and the cluster certificates; origins and edges are started on it.
#[derive(Debug)]
pub struct ControlPlane {
    /// The etcd cluster.
    pub etcd: Etcd,
    /// Controller replicas (`Node::http` is the admin HTTP port).
    pub controllers: Vec<Option<Node>>,
    /// Their gRPC addresses, in the same order.
    pub grpc: Vec<SocketAddr>,
    /// Cluster certificates.
    pub tls: TempDir,
    /// Node lease TTL, seconds.
    pub lease_s: u32,
}

/// An origin of the cluster with its QUIC relay address.
#[derive(Debug)]
pub struct ClusterOrigin {
    /// The process.
    pub node: Node,
    /// Relay address.
    pub quic: SocketAddr,
}

impl ControlPlane {
    /// `etcd_members` etcd members, `controllers` controller replicas with a node lease
    /// of `lease_s` seconds, and certificates.
    pub fn start(etcd_members: usize, controllers: usize, lease_s: u32) -> Self {
        let etcd = Etcd::start(etcd_members);
        let tls = TempDir::new("tls");
        make_certs(&tls.0);
        let mut cp = ControlPlane {
            etcd,
            controllers: Vec::new(),
            grpc: Vec::new(),
            tls,
            lease_s,
        };
        for i in 0..controllers {
            let grpc = free_addr();
            cp.grpc.push(grpc);
            let c = cp.launch_controller(i);
            cp.controllers.push(Some(c));
        }
        cp
    }

    fn launch_controller(&self, i: usize) -> Node {
        Node::launch(self.controller_spec(i))
    }

    /// Stops controller replica `i` (SIGTERM, then SIGKILL after 10 s) and starts it
    /// again on the same gRPC address without waiting for it to be ready (with etcd
    /// down it is not).
    pub fn restart_controller(&mut self, i: usize) {
        if let Some(mut old) = self.controllers[i].take() {
            old.proc.signal("TERM");
            if old.proc.wait_timeout(Duration::from_secs(10)).is_none() {
                old.proc.signal("KILL");
                old.proc.wait_timeout(Duration::from_secs(5));
            }
        }
        self.controllers[i] = Some(Node::spawn(self.controller_spec(i)));
    }

    fn controller_spec(&self, i: usize) -> Launch {
        let grpc = self.grpc[i].to_string();
        let lease = self.lease_s.to_string();
        let etcd = self.etcd.endpoints();
        Launch {
            name: Some(format!("controller-{i}")),
            ..Launch::new(
                "controller",
                &[
                    "--grpc-listen",
                    &grpc,
                    "--etcd",
                    &etcd,
                    "--lease-ttl",
                    &lease,
                    // These tests are about failover, not publishers' credentials.
                    "--publish-auth",
                    "open",
                ],
            )
        }
    }

    /// Starts `role` node `name` joined to the controllers without waiting for it to be
    /// ready (an edge is not, until its first access snapshot).
    pub fn spawn_member(&self, role: &str, name: &str, extra: &[&str]) -> Node {
        let (tls, urls) = (self.tls.0.display().to_string(), self.controller_urls());
        let args = ["--node-id", name, "--tls-dir", &tls, "--controller", &urls]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        Node::spawn(Launch {
            name: Some(name.to_owned()),
            args,
            ..Launch::new(role, &[])
        })
    }

    /// `--controller` for nodes: every replica.
    pub fn controller_urls(&self) -> String {
        self.grpc
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a `role` node `name` joined to the controllers with the cluster's TLS,
    /// `flags` of its role, then `extra`.
    fn launch_member(&self, role: &str, name: &str, flags: &[&str], extra: &[&str]) -> Node {
        let (tls, urls) = (self.tls.0.display().to_string(), self.controller_urls());
        let common = ["--node-id", name, "--tls-dir", &tls, "--controller", &urls];
        let args = common
            .iter()
            .chain(flags)
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        Node::launch(Launch {
            name: Some(name.to_owned()),
            args,
            ..Launch::new(role, &[])
        })
    }

    /// Starts origin `name` joined to the controllers.
    pub fn start_origin(&self, name: &str, extra: &[&str]) -> ClusterOrigin {
        let quic = free_udp_addr();
        let flags = ["--quic-listen", &quic.to_string()];
        let node = self.launch_member("origin", name, &flags, extra);
        ClusterOrigin { node, quic }
    }

    /// Starts edge `name` joined to the controllers (origins come from assignments).
    pub fn start_edge(&self, name: &str, extra: &[&str]) -> Node {
        self.launch_member("edge", name, &[], extra)
    }

    /// Runs `ferrocast ctl --json ARGS` against the replicas and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = crate::run_with_timeout(
            std::process::Command::new(crate::ferrocast_bin())
                .args(["ctl", "--json", "--controller", &self.controller_urls()])
                .args(args),
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The controller's view of `stream`: (origin, epoch, state in lower case).
    pub fn stream_holder(&self, stream: &str) -> (String, u64, String) {
        let v = self.ctl_json(&["stream", stream]);
        (
            v["origin"].as_str().unwrap_or_default().to_owned(),
            v["epoch"].as_u64().unwrap_or_default(),
            v["state"].as_str().unwrap_or_default().to_lowercase(),
        )
    }

    /// The replica that reports itself leader (`ferrocast_controller_leader 1`).
    pub fn leader(&self) -> Option<usize> {
        self.controllers.iter().enumerate().find_map(|(i, c)| {
            let c = c.as_ref()?;
            let r = http_get(c.http, "/metrics", Duration::from_secs(2)).ok()?;
            (crate::metric_value(&r.text(), "ferrocast_controller_leader") == 1.0).then_some(i)
        })
    }

    /// Waits up to `within` for a leader.
    pub fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(i) = self.leader() {
                return i;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no controller leads within {within:?}");
    }
}

/// One answer to a playlist request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the poller started.
    pub at: Duration,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// `#EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: Option<u64>,
    /// Media sequence numbers of the segments listed, with whether each follows an
    /// `EXT-X-DISCONTINUITY` tag.
    pub segments: Vec<(u64, bool)>,
}

impl Sample {
    /// The highest media sequence number listed.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.0)
    }
}

/// Parses a media playlist's media sequence and segments.
pub fn parse_playlist(text: &str) -> (Option<u64>, Vec<(u64, bool)>) {
    let mut seq = None;
    let mut segs = Vec::new();
    let mut disc = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().ok();
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let msn = seq.unwrap_or(0) + segs.len() as u64;
            segs.push((msn, disc));
            disc = false;
        }
    }
    (seq, segs)
}

/// Polls a playlist every `every` on a thread until stopped, keeping every answer.
#[derive(Debug)]
pub struct Poller {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

impl Poller {
    /// Starts polling `path` on `addr`.
    pub fn start(addr: SocketAddr, path: &str, every: Duration) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (s, v, path) = (stop.clone(), samples.clone(), path.to_owned());
        let thread = std::thread::spawn(move || {
            // Bounded: a test stops it, and it ends by itself after ten minutes.
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let at = started.elapsed();
                let sample = match http_get(addr, &path, Duration::from_secs(5)) {
                    Ok(r) => {
                        let (media_sequence, segments) = if r.status == 200 {
                            parse_playlist(&r.text())
                        } else {
                            (None, Vec::new())
                        };
                        Sample {
                            at,
                            status: r.status,
                            media_sequence,
                            segments,
                        }
                    }
                    Err(_) => Sample {
                        at,
                        status: 0,
                        media_sequence: None,
                        segments: Vec::new(),
                    },
                };
                v.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                std::thread::sleep(every);
            }
        });
        Poller {
            stop,
            samples,
            thread: Some(thread),
            started,
        }
    }

    /// Time since the poller started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The answers so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops and returns every answer.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Checks what a viewer saw across a failover: every answer 200 (`allowed` other
/// statuses aside, never 404), the media sequence never going back, segment numbers
/// strictly increasing in every playlist. Returns the number of distinct
/// discontinuities seen (by the msn that starts each).
pub fn check_continuity(what: &str, samples: &[Sample], allowed: &[u16]) -> usize {
    assert!(!samples.is_empty(), "{what}: no samples");
    let mut last_seq = 0;
    let mut discontinuities = std::collections::BTreeSet::new();
    for s in samples {
        assert_ne!(s.status, 404, "{what}: a playlist 404 at {:?}", s.at);
        if s.status != 200 {
            assert!(
                allowed.contains(&s.status),
                "{what}: status {} at {:?}",
                s.status,
                s.at
            );
            continue;
        }
        let seq = s.media_sequence.expect("a media sequence");
        assert!(
            seq >= last_seq,
            "{what}: media sequence went back {last_seq} → {seq} at {:?}",
            s.at
        );
        last_seq = seq;
        for w in s.segments.windows(2) {
            assert!(w[1].0 > w[0].0, "{what}: segments out of order: {s:?}");
        }
        for (msn, d) in &s.segments {
            if *d {
                discontinuities.insert(*msn);
            }
        }
    }
    discontinuities.len()
}
