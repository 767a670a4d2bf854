//! A real etcd server for tests: `etcd` (Debian `etcd-server`) on free loopback ports with
//! a temporary data dir (on tmpfs when there is one), killed by PID and cleaned up on drop. Every wait is bounded.

pub mod cluster;

use ferrocast_controller::etcd::EtcdClient;
use ferrocast_proto::etcd::etcdserverpb::RangeRequest;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A running etcd.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl EtcdServer {
    /// Starts etcd and waits (at most 20 s) until it answers a read.
    pub async fn start() -> EtcdServer {
        // A port can be taken between probing and binding: try again on new ones.
        for attempt in 0..3 {
            let (client, peer) = (free_port(), free_port());
            // etcd fsyncs every write: on tmpfs a busy disk cannot stall it past a lease.
            let base = Some(PathBuf::from("/dev/shm"))
                .filter(|p| p.is_dir())
                .unwrap_or_else(std::env::temp_dir);
            let dir = base.join(format!(
                "ferrocast-etcd-{}-{client}-{attempt}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
            let child = Command::new("etcd")
                .arg("--name=test")
                .arg(format!("--data-dir={}", dir.join("data").display()))
                .arg(format!("--listen-client-urls={endpoint}"))
                .arg(format!("--advertise-client-urls={endpoint}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd runs (apt-get install etcd-server)");
            let mut server = EtcdServer {
                child,
                dir,
                endpoint,
            };
            if server.wait_ready(Duration::from_secs(20)).await {
                return server;
            }
            let log = std::fs::read_to_string(server.dir.join("etcd.log")).unwrap_or_default();
            eprintln!("etcd attempt {attempt} failed:\n{log}");
        }
        panic!("etcd did not start");
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let client = self.client(Duration::from_millis(500));
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let req = RangeRequest {
                key: b"ready".to_vec(),
                ..Default::default()
            };
            if client.call(client.kv().range(req)).await.is_ok() {
                return true;
            }
            sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// A client of this server with call deadline `timeout`.
    pub fn client(&self, timeout: Duration) -> EtcdClient {
        EtcdClient::new(std::slice::from_ref(&self.endpoint), timeout).unwrap()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the etcd process.
    // Not every test binary that includes this module uses it.
    #[allow(dead_code)]
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} etcd");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
