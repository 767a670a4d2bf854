//! Helpers for the end-to-end tests: free ports, the `ferrocast` binary as a child
//! process, ffmpeg as publisher and player, a small HTTP client with timeouts, and our
//! own RTMP publisher (for what Debian's ffmpeg cannot send, such as Enhanced RTMP).
//! Every wait here has a deadline; every child is killed by its own PID on drop.

use bytes::{Bytes, BytesMut};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod codegen;
pub mod etcd;
pub mod rtmp_client;
pub mod tls;

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// The `ferrocast` binary built next to this test.
pub fn ferrocast_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCAST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/ferrocast
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("ferrocast");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first (cargo build)",
        bin.display()
    );
    bin
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("ferrocast-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("creating temp dir");
        Self(p)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (by its PID) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr going to files in `logs`.
    pub fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> Self {
        let out = std::fs::File::create(logs.join(format!("{name}.log"))).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `ferrocast` node.
#[derive(Debug)]
pub struct Node {
    /// The process.
    pub proc: Proc,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Admin address (`/metrics`, the probes, every stream on `/api/streams`): a free
    /// port of its own for origins, edges and standalone; a controller's HTTP port.
    pub admin: SocketAddr,
    /// Where logs go.
    pub dir: TempDir,
}

impl Node {
    /// Starts `ferrocast origin` on free loopback ports with `extra` flags and waits
    /// for `/readyz`.
    pub fn origin(extra: &[&str]) -> Self {
        Self::start("origin", extra)
    }

    /// Starts `ferrocast <role>` and waits until it is ready.
    pub fn start(role: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new(role);
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin = admin_addr(role, http, extra);
        let mut cmd = Command::new(ferrocast_bin());
        cmd.arg(role)
            .args([
                "--rtmp-listen",
                &rtmp.to_string(),
                "--http-listen",
                &http.to_string(),
            ])
            .args(admin_flag(role, admin, extra))
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if role == "standalone" {
            // The embedded origin's own HTTP port, so parallel tests never collide.
            cmd.args([
                "--origin-http-listen",
                &format!("127.0.0.1:{}", free_port()),
                // The embedded controller's gRPC port: any free one.
                "--grpc-listen",
                "127.0.0.1:0",
            ]);
        }
        let proc = Proc::spawn(role, &mut cmd, &dir.0);
        let mut node = Self {
            proc,
            rtmp,
            http,
            admin,
            dir,
        };
        node.wait_ready(Duration::from_secs(20));
        node
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.proc.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    self.proc.name,
                    self.log()
                );
            }
            if let Ok(r) = http_get(self.http, "/readyz", Duration::from_secs(1)) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} not ready within {timeout:?}; log:\n{}",
            self.proc.name,
            self.log()
        );
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{}.log", self.proc.name)))
            .unwrap_or_default()
    }

    /// Waits until the node's log holds `needle`; panics with the log after `within`.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// `http://127.0.0.1:PORT/live/KEY/index.m3u8`.
    pub fn playlist_url(&self, key: &str) -> String {
        format!("http://{}/live/{key}/index.m3u8", self.http)
    }

    /// Fetches a path on the node's HTTP port.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Waits until the playlist of `key` answers 200 and lists at least one part.
    pub fn wait_live(&self, key: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let path = format!("/live/{key}/index.m3u8");
        while Instant::now() < deadline {
            if let Ok(r) = http_get(self.http, &path, Duration::from_secs(10)) {
                if r.status == 200 && r.text().contains("#EXT-X-PART:") {
                    return r.text();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "stream {key} not live within {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// Fetches a path on the node's admin port.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        self.admin_get_with(path, &[])
    }

    /// [`Node::admin_get`] with extra request headers.
    pub fn admin_get_with(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get_with(self.admin, path, headers, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("GET {path} on the admin port: {e}"))
    }

    /// The node's `/metrics` (on its admin port).
    pub fn metrics_text(&self) -> String {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "/metrics on the admin port: {}", r.text());
        r.text()
    }

    /// A metric's value summed over all label sets (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics_text(), name)
    }
}

/// The admin address of a `role` node started with `args`: the one `--admin-listen`
/// in `args` names, else a free loopback port (a controller's admin port is its HTTP
/// port, `http`).
fn admin_addr(role: &str, http: SocketAddr, args: &[impl AsRef<str>]) -> SocketAddr {
    if role == "controller" {
        return http;
    }
    args.iter()
        .position(|a| a.as_ref() == "--admin-listen")
        .and_then(|i| args.get(i + 1))
        .map(|a| a.as_ref().parse().expect("--admin-listen HOST:PORT"))
        .unwrap_or_else(free_addr)
}

/// `--admin-listen ADMIN` for a node that has an admin port and was not given one.
fn admin_flag(role: &str, admin: SocketAddr, args: &[impl AsRef<str>]) -> Vec<String> {
    if role == "controller" || args.iter().any(|a| a.as_ref() == "--admin-listen") {
        return Vec::new();
    }
    vec!["--admin-listen".to_owned(), admin.to_string()]
}

/// Sums every sample of metric `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A response from [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Time to the complete response.
    pub elapsed: Duration,
}

impl HttpResponse {
    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close` and a deadline on the whole exchange.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    http_get_with(addr, path, &[], timeout)
}

/// [`http_get`] with extra request headers.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    exchange(s, addr, path, headers, timeout)
}

fn parse_response(raw: &[u8], elapsed: Duration) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
        elapsed,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Runs a command to completion with a deadline; kills it when the deadline passes.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning command");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().expect("wait");
            eprintln!("command timed out after {timeout:?}: {cmd:?}");
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Makes a test clip: H.264 (with B-frames) + AAC in FLV, `seconds` long at 30 fps,
/// keyframes every `gop` frames.
pub fn make_h264_clip(path: &Path, seconds: u32, gop: u32) {
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=320x240:rate=30:duration={seconds}"),
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=440:sample_rate=48000:duration={seconds}"),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-bf",
                "2",
                "-g",
                &gop.to_string(),
                "-keyint_min",
                &gop.to_string(),
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-f",
                "flv",
            ])
            .arg(path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ffmpeg clip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts ffmpeg publishing `clip` in real time (`-re`, stream copy) to `url`.
pub fn ffmpeg_publish_file(clip: &Path, url: &str, logs: &Path, name: &str) -> Proc {
    Proc::spawn(
        name,
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(clip)
            .args(["-c", "copy", "-f", "flv", url]),
        logs,
    )
}

/// Starts ffmpeg encoding a live test pattern for `seconds` and publishing it to `url`.
pub fn ffmpeg_publish_live(url: &str, seconds: u32, logs: &Path, name: &str) -> Proc {
    ffmpeg_publish_live_with(url, &[], seconds, logs, name)
}

/// [`ffmpeg_publish_live`] with output options before the URL (e.g. `-tls_verify 1
/// -ca_file ca.pem` for `rtmps://`).
pub fn ffmpeg_publish_live_with(
    url: &str,
    output_opts: &[&str],
    seconds: u32,
    logs: &Path,
    name: &str,
) -> Proc {
    Proc::spawn(
        name,
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=320x240:rate=30:duration={seconds}"),
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=440:sample_rate=48000:duration={seconds}"),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-bf",
                "0",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-f",
                "flv",
            ])
            .args(output_opts)
            .arg(url),
        logs,
    )
}

/// One packet line of `ffmpeg -f framemd5`: (stream, dts, pts, duration, size, md5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketHash {
    /// Stream index.
    pub stream: u32,
    /// Decode timestamp in the stream's time base.
    pub dts: i64,
    /// Presentation timestamp.
    pub pts: i64,
    /// Duration.
    pub duration: i64,
    /// Size in bytes.
    pub size: u64,
    /// md5 of the packet (or decoded frame).
    pub hash: String,
}

/// Parses `ffmpeg -f framemd5` output.
pub fn parse_framemd5(text: &str) -> Vec<PacketHash> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() < 6 {
                return None;
            }
            Some(PacketHash {
                stream: f[0].parse().ok()?,
                dts: f[1].parse().ok()?,
                pts: f[2].parse().ok()?,
                duration: f[3].parse().ok()?,
                size: f[4].parse().ok()?,
                hash: f[5].to_owned(),
            })
        })
        .collect()
}

/// `ffmpeg -i input <args> -f framemd5 -`: per-packet (with `-c copy`) or per-frame hashes.
pub fn framemd5(input: &str, args: &[&str], timeout: Duration) -> (Vec<PacketHash>, String) {
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i", input])
            .args(args)
            .args(["-f", "framemd5", "-"]),
        timeout,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ffmpeg framemd5 of {input} failed: {stderr}"
    );
    (
        parse_framemd5(&String::from_utf8_lossy(&out.stdout)),
        stderr,
    )
}

/// Concatenates Bytes (test convenience).
pub fn concat(parts: &[Bytes]) -> Bytes {
    let mut b = BytesMut::new();
    for p in parts {
        b.extend_from_slice(p);
    }
    b.freeze()
}

/// A UDP port nobody is bound to on loopback right now (for `--quic-listen`).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral UDP port")
}

/// A loopback address with a free TCP port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A loopback address with a free UDP port.
pub fn free_udp_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

/// Runs `ferrocast certs DIR` (a fresh development CA and node certificate).
pub fn make_certs(dir: &Path) {
    let out = run_with_timeout(
        Command::new(ferrocast_bin()).arg("certs").arg(dir),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ferrocast certs {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How [`Node::launch`] starts a node: the role, its addresses (chosen free when not
/// given, so a restarted node can take over the ports of the one it replaces) and any
/// extra flags and environment.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `origin`, `edge` or `standalone`.
    pub role: String,
    /// `--http-listen`; a free port when `None`.
    pub http: Option<SocketAddr>,
    /// `--rtmp-listen` for origins and standalone (a free port when `None`); never
    /// passed to an edge.
    pub rtmp: Option<SocketAddr>,
    /// Further flags.
    pub args: Vec<String>,
    /// Environment (`RUST_LOG` defaults to `info`).
    pub env: Vec<(String, String)>,
    /// Name of the log file (default: the role).
    pub name: Option<String>,
}

impl Launch {
    /// A node of `role` with `args`, everything else chosen.
    pub fn new(role: &str, args: &[&str]) -> Self {
        Self {
            role: role.to_owned(),
            http: None,
            rtmp: None,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            name: None,
        }
    }
}

impl Node {
    /// Starts `ferrocast <role> <args>` on a free HTTP port and waits for `/readyz`.
    /// Unlike [`Node::start`], an edge gets no `--rtmp-listen` (`rtmp` is then unused).
    pub fn start_with(role: &str, args: &[&str]) -> Self {
        Self::launch(Launch::new(role, args))
    }

    /// Starts a node as `spec` says and waits until it is ready.
    pub fn launch(spec: Launch) -> Self {
        let mut node = Self::spawn(spec);
        node.wait_ready(Duration::from_secs(20));
        node
    }

    /// Starts a node as `spec` says without waiting for `/readyz` (for nodes that are
    /// meant not to be ready yet, e.g. with the controller or etcd down).
    pub fn spawn(spec: Launch) -> Self {
        let name = spec.name.clone().unwrap_or_else(|| spec.role.clone());
        let dir = TempDir::new(&name);
        let http = spec.http.unwrap_or_else(free_addr);
        let has_rtmp = spec.role != "edge" && spec.role != "controller";
        let rtmp = match (has_rtmp, spec.rtmp) {
            (true, Some(a)) => a,
            (true, None) => free_addr(),
            (false, _) => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let admin = admin_addr(&spec.role, http, &spec.args);
        let mut cmd = Command::new(ferrocast_bin());
        cmd.arg(&spec.role)
            .args(["--http-listen", &http.to_string()])
            .args(admin_flag(&spec.role, admin, &spec.args));
        if has_rtmp {
            cmd.args(["--rtmp-listen", &rtmp.to_string()]);
        }
        if spec.role == "standalone" {
            cmd.args(["--origin-http-listen", &free_addr().to_string()]);
            if !spec.args.iter().any(|a| a == "--grpc-listen") {
                cmd.args(["--grpc-listen", "127.0.0.1:0"]);
            }
        }
        cmd.args(&spec.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&name, &mut cmd, &dir.0);
        Self {
            proc,
            rtmp,
            http,
            admin,
            dir,
        }
    }

    /// The sum of metric `name` over the label sets that contain every `label="value"`
    /// pair of `labels` (0 when absent).
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value_with(&self.metrics_text(), name, labels)
    }
}

/// Sums the samples of metric `name` whose labels include every pair of `labels`.
pub fn metric_value_with(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (set, v) = r.split_once('}')?;
                    (set, v)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// An origin with its QUIC relay and cluster certificates, and edges pulling from it,
/// each a separate `ferrocast` process on free loopback ports.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster certificates (`ferrocast certs`).
    pub tls: TempDir,
    /// The origin's QUIC relay address.
    pub quic: SocketAddr,
    /// The origin.
    pub origin: Node,
    /// The edges, in start order.
    pub edges: Vec<Node>,
}

impl Cluster {
    /// Certificates, an origin (with `origin_args`) and `edges` edges, all ready.
    pub fn start(origin_args: &[&str], edges: usize) -> Self {
        let tls = TempDir::new("tls");
        make_certs(&tls.0);
        let quic = free_udp_addr();
        let origin = Node::launch(Launch {
            args: Self::origin_flags(&tls, quic, origin_args),
            ..Launch::new("origin", &[])
        });
        let mut c = Self {
            tls,
            quic,
            origin,
            edges: Vec::new(),
        };
        for _ in 0..edges {
            let e = c.start_edge(None, &[]);
            c.edges.push(e);
        }
        c
    }

    /// The flags of the cluster's origin: its TLS, its QUIC address, then `extra`.
    pub fn origin_flags(tls: &TempDir, quic: SocketAddr, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--tls-dir".to_owned(),
            tls.0.display().to_string(),
            "--quic-listen".to_owned(),
            quic.to_string(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    }

    /// Starts (and returns, without keeping it) an edge of this cluster on `http` (a
    /// free port when `None`) with `extra` flags.
    pub fn start_edge(&self, http: Option<SocketAddr>, extra: &[&str]) -> Node {
        self.start_edge_with_tls(&self.tls.0, http, extra)
    }

    /// An edge pulling from this cluster's origin with the certificates in `tls_dir`.
    pub fn start_edge_with_tls(
        &self,
        tls_dir: &Path,
        http: Option<SocketAddr>,
        extra: &[&str],
    ) -> Node {
        let mut args = vec![
            "--origin".to_owned(),
            self.quic.to_string(),
            "--tls-dir".to_owned(),
            tls_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Node::launch(Launch {
            http,
            args,
            ..Launch::new("edge", &[])
        })
    }

    /// The first edge.
    pub fn edge(&self) -> &Node {
        &self.edges[0]
    }
}

/// [`http_get`] on a stream connected beforehand (so many requests can be sent at the
/// same instant): `GET path` with `Connection: close` and a deadline on the exchange.
pub fn http_get_on(
    s: TcpStream,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    exchange(s, addr, path, &[], timeout)
}

fn exchange(
    mut s: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let start = Instant::now();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if start.elapsed() > timeout {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response deadline",
            ));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw, start.elapsed())
}

/// `ffmpeg -i input <args> -f framemd5 -`: (stdout, stderr); the command must succeed.
pub fn framemd5_raw(input: &str, args: &[&str]) -> (String, String) {
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i", input])
            .args(args)
            .args(["-f", "framemd5", "-"]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "ffmpeg framemd5 {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The time base (seconds per tick) of the first stream in framemd5 output (`#tb 0: a/b`).
pub fn time_base(text: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("#tb "))
        .find_map(|l| {
            let (_, frac) = l.split_once(':')?;
            let (a, b) = frac.trim().split_once('/')?;
            Some(a.parse::<f64>().ok()? / b.parse::<f64>().ok()?)
        })
        .expect("time base line")
}

/// ffmpeg reads the packets selected by `args` (e.g. `-map 0:v -c copy`) from `source`
/// and from the HLS playlist `hls`: every packet must be byte-identical, in order, with
/// the same timing (within FLV's millisecond precision; audio is re-timed to sample
/// counts) and the same composition offsets; reading the HLS must print no error.
/// Returns the number of packets compared.
pub fn assert_same_packets(what: &str, source: &str, hls: &str, args: &[&str]) -> usize {
    let (src_text, _) = framemd5_raw(source, args);
    let (hls_text, hls_err) = framemd5_raw(hls, args);
    assert!(
        hls_err.trim().is_empty(),
        "{what}: ffmpeg reported errors reading {hls}: {hls_err}"
    );
    let src = parse_framemd5(&src_text);
    let got = parse_framemd5(&hls_text);
    assert!(!src.is_empty(), "{what}: source has packets");
    assert_eq!(src.len(), got.len(), "{what}: packet count");
    let (src_tb, hls_tb) = (time_base(&src_text), time_base(&hls_text));
    let (s0, h0) = (src[0].dts as f64 * src_tb, got[0].dts as f64 * hls_tb);
    for (i, (s, h)) in src.iter().zip(&got).enumerate() {
        assert_eq!(
            (s.size, &s.hash),
            (h.size, &h.hash),
            "{what} packet {i} differs"
        );
        let sd = s.dts as f64 * src_tb - s0;
        let hd = h.dts as f64 * hls_tb - h0;
        assert!(
            (sd - hd).abs() < 0.025,
            "{what} packet {i}: dts {sd} vs {hd}"
        );
        let scts = (s.pts - s.dts) as f64 * src_tb;
        let hcts = (h.pts - h.dts) as f64 * hls_tb;
        assert!(
            (scts - hcts).abs() < 0.002,
            "{what} packet {i}: composition offset {scts} vs {hcts}"
        );
    }
    src.len()
}

impl Node {
    /// Waits until the playlist of `key` carries EXT-X-ENDLIST; returns it.
    pub fn wait_ended(&self, key: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(&format!("/live/{key}/index.m3u8"));
            if r.status == 200 && r.text().contains("#EXT-X-ENDLIST") {
                return r.text();
            }
            assert!(
                Instant::now() < deadline,
                "playlist of {key} at {} never ended (last {}: {}); log:\n{}",
                self.proc.name,
                r.status,
                r.text(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A controller (in-memory store) on a free gRPC address with `flags`; that address.
pub fn start_controller(flags: &[&str]) -> (Node, SocketAddr) {
    let grpc = free_addr();
    let listen = grpc.to_string();
    let args: Vec<&str> = ["--grpc-listen", listen.as_str()]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    let node = Node::launch(Launch {
        name: Some("controller".into()),
        ..Launch::new("controller", &args)
    });
    (node, grpc)
}

/// ffmpeg plays `seconds` of `url` (to nowhere) and exits successfully.
pub fn assert_plays(url: &str, seconds: u32) {
    let secs = seconds.to_string();
    let out = run_with_timeout(
        Command::new("ffmpeg").args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            url,
            "-t",
            &secs,
            "-f",
            "null",
            "-",
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ffmpeg could not play {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ffmpeg decodes `url` (with `args`, e.g. `-map 0:v`) to nowhere and prints no error.
pub fn assert_decodes_cleanly(what: &str, url: &str, args: &[&str]) {
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i", url])
            .args(args)
            .args(["-f", "null", "-"]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: decode errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plays the watch page `url` for `seconds` in headless Chromium (tests/browser/play.mjs
/// with `extra` flags); the driver must succeed. Returns its JSON result. `server_log`
/// is shown when playback fails.
pub fn play_in_browser(
    url: &str,
    seconds: u32,
    extra: &[&str],
    server_log: impl Fn() -> String,
) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix tests/browser` first (scripts/test.sh does)"
    );
    let out = run_with_timeout(
        Command::new("node")
            .arg(root.join("tests/browser/play.mjs"))
            .args(["--url", url, "--seconds", &seconds.to_string()])
            .args(extra),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser playback of {url} failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .expect("JSON result line");
    serde_json::from_str(line).expect("JSON")
}
