//! Real etcd for the cluster tests: one member or a cluster of several, each an `etcd`
//! process (Debian `etcd-server`) on free loopback ports with its data on tmpfs when
//! there is one. Members can be stopped, frozen and started again on the same data.
//! Every wait has a deadline; every process is killed by its own PID on drop.

use crate::{free_port, http_get, Proc, TempDir};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// One member's fixed identity (ports and data dir survive a restart).
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    proc: Option<Proc>,
}

/// An etcd cluster of one or more members.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: TempDir,
    initial_cluster: String,
    restarts: u32,
}

fn tmpfs_dir(tag: &str) -> TempDir {
    // etcd fsyncs every write: on tmpfs a busy disk cannot stall it past a lease.
    if std::path::Path::new("/dev/shm").is_dir() {
        let p = std::path::PathBuf::from(format!(
            "/dev/shm/ferrocast-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).expect("tmpfs dir");
        TempDir(p)
    } else {
        TempDir::new(tag)
    }
}

impl Etcd {
    /// Starts `n` members and waits (at most 30 s) until every one is healthy.
    pub fn start(n: usize) -> Etcd {
        let dir = tmpfs_dir("etcd");
        let local = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: local(free_port()),
                peer: local(free_port()),
                proc: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir,
            initial_cluster,
            restarts: 0,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i, Duration::from_secs(30));
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        self.restarts += 1;
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let client = format!("http://{}", m.client);
        let peer = format!("http://{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=ferrocast-test")
            // Fast elections on loopback: the tests measure failover in seconds.
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000");
        let name = format!("etcd-{}-{}", m.name, self.restarts);
        let proc = Proc::spawn(&name, &mut cmd, &self.dir.0);
        self.members[i].proc = Some(proc);
    }

    /// Whether member `i` answers `/health` with `"health":"true"`.
    pub fn healthy(&self, i: usize) -> bool {
        http_get(self.members[i].client, "/health", Duration::from_secs(1))
            .map(|r| r.status == 200 && r.text().contains("\"true\""))
            .unwrap_or(false)
    }

    fn wait_healthy(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(p) = self.members[i].proc.as_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("etcd {} exited ({status}):\n{}", i, self.logs());
                }
            }
            if self.healthy(i) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd member {i} not healthy within {within:?}:\n{}",
            self.logs()
        );
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir.0) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    out.push_str(&format!("== {}\n", p.display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Client URLs, comma-separated (for `--etcd`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.signal("KILL");
            p.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Starts member `i` again on its data and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i, Duration::from_secs(30));
    }

    /// The index of the member that leads now (asked with `etcdctl endpoint status`).
    pub fn leader(&self) -> Option<usize> {
        let out = crate::run_with_timeout(
            Command::new("etcdctl").env("ETCDCTL_API", "3").args([
                "--endpoints",
                &self.endpoints(),
                "endpoint",
                "status",
                "-w",
                "json",
            ]),
            Duration::from_secs(10),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let all = v.as_array()?;
        for (i, m) in self.members.iter().enumerate() {
            let url = format!("http://{}", m.client);
            let st = all.iter().find(|s| s["Endpoint"] == url.as_str())?;
            let id = &st["Status"]["header"]["member_id"];
            if !id.is_null() && *id == st["Status"]["leader"] {
                return Some(i);
            }
        }
        None
    }
}
