//! The one etcd launcher of every test (the controller's and the cluster's): one member or
//! a cluster of several, each an `etcd` process (Debian `etcd-server`) on free loopback
//! ports with its data on tmpfs when there is one, plaintext or with TLS and
//! `--client-cert-auth` on the client port (certificates made here with rcgen). Members can
//! be stopped, frozen and started again on the same data; `etcdctl` runs against them.
//! Every wait has a deadline; every process is killed by its own PID on drop.

use crate::{free_port, http_get, Proc, TempDir};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One member's fixed identity (ports and data dir survive a restart).
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    /// Plain HTTP `/health` and `/metrics`, whatever the client port speaks.
    metrics: SocketAddr,
    proc: Option<Proc>,
}

/// PEM files of a TLS etcd: the CA, and a client certificate it accepts.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate (CN `ferrocast-controller`) signed by the CA.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// An etcd cluster of one or more members.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: TempDir,
    initial_cluster: String,
    restarts: u32,
    tls: Option<EtcdTlsFiles>,
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_tls_files(dir: &TempDir) -> EtcdTlsFiles {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "ferrocast test etcd CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let leaf = |cn: &str, sans: Vec<String>, usage| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    // The members' certificates serve both their clients and their peers.
    let (server, server_key) = leaf(
        "etcd",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(
        "ferrocast-controller",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("writing a PEM file");
        p
    };
    EtcdTlsFiles {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client),
        client_key: write("client-key.pem", &client_key),
    }
}

impl Etcd {
    /// Starts `n` plaintext members and waits (at most 30 s) until every one is healthy.
    pub fn start(n: usize) -> Etcd {
        Self::launch(n, false)
    }

    /// Starts `n` members whose client port speaks TLS only and accepts only clients with
    /// a certificate of [`Etcd::tls`]'s CA (`--client-cert-auth`).
    pub fn start_tls(n: usize) -> Etcd {
        Self::launch(n, true)
    }

    fn launch(n: usize, tls: bool) -> Etcd {
        let dir = tmpfs_dir("etcd");
        let tls = tls.then(|| make_tls_files(&dir));
        let local = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: local(free_port()),
                peer: local(free_port()),
                metrics: local(free_port()),
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
            tls,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i, Duration::from_secs(30));
        }
        etcd
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn spawn(&mut self, i: usize) {
        self.restarts += 1;
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let client = format!("{}://{}", self.scheme(), m.client);
        let peer = format!("http://{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--listen-metrics-urls=http://{}", m.metrics))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=ferrocast-test")
            // Fast elections on loopback: the tests measure failover in seconds.
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let name = format!("etcd-{}-{}", m.name, self.restarts);
        let proc = Proc::spawn(&name, &mut cmd, &self.dir.0);
        self.members[i].proc = Some(proc);
    }

    /// Whether member `i` answers `/health` with `"health":"true"`.
    pub fn healthy(&self, i: usize) -> bool {
        http_get(self.members[i].metrics, "/health", Duration::from_secs(1))
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

    /// Client URLs, one per member.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}", self.scheme(), m.client))
            .collect()
    }

    /// Client URLs, comma-separated (for `--etcd`).
    pub fn endpoints(&self) -> String {
        self.endpoint_list().join(",")
    }

    /// The CA and a client certificate, when the members speak TLS.
    pub fn tls(&self) -> Option<&EtcdTlsFiles> {
        self.tls.as_ref()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to every member, by PID.
    pub fn signal(&self, signal: &str) {
        for m in &self.members {
            if let Some(p) = &m.proc {
                p.signal(signal);
            }
        }
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

    /// Runs `etcdctl ARGS` against every member (with the client certificate when the
    /// members speak TLS), bounded to 10 s.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints());
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        crate::run_with_timeout(cmd.args(args), Duration::from_secs(10))
    }

    /// The index of the member that leads now (asked with `etcdctl endpoint status`).
    pub fn leader(&self) -> Option<usize> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let all = v.as_array()?;
        for (i, url) in self.endpoint_list().iter().enumerate() {
            let st = all.iter().find(|s| s["Endpoint"] == url.as_str())?;
            let id = &st["Status"]["header"]["member_id"];
            if !id.is_null() && *id == st["Status"]["leader"] {
                return Some(i);
            }
        }
        None
    }
}
