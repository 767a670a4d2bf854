//! The configuration's tests: each role's flags, file and environment resolve to the
//! settings they did when one flat flag set served every role; each role now refuses
//! what it does not read, in its `--help`, on its command line and in its file.

use super::*;
use clap::{CommandFactory, Parser};

/// `v` as a command line after the role.
fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `ferrocast ROLE ARGS...` parsed as the binary parses it, then validated.
fn resolve(args: Vec<String>, role: Role) -> anyhow::Result<Settings> {
    let name = match role {
        Role::Origin => "origin",
        Role::Edge => "edge",
        Role::Standalone => "standalone",
        Role::Controller => "controller",
    };
    let argv = ["ferrocast".to_owned(), name.to_owned()]
        .into_iter()
        .chain(args);
    match crate::Cli::try_parse_from(argv)?.command {
        crate::Command::Origin(a) => a.validate(),
        crate::Command::Edge(a) => a.validate(),
        crate::Command::Standalone(a) => a.validate(),
        crate::Command::Controller(a) => a.validate(),
        other => panic!("not a node role: {other:?}"),
    }
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_bytes("512M").expect("ok"), 512 << 20);
    assert_eq!(parse_bytes("2GiB").expect("ok"), 2 << 30);
    assert_eq!(parse_bytes("65536").expect("ok"), 65536);
    assert!(parse_bytes("12X").is_err());
    assert!(parse_bytes("M").is_err());
}

#[test]
fn file_values_yield_to_flags_and_unknown_keys_are_refused() {
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "part-target = 0.5\nwindow-segments = 6\nrtmp-listen = \"127.0.0.1:2000\"\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let s = resolve(
        args(&["--config", f, "--window-segments", "8"]),
        Role::Origin,
    )
    .expect("valid");
    assert_eq!(s.origin.streams.packager.part_target, 0.5);
    assert_eq!(
        s.origin.streams.packager.window_segments, 8,
        "flag beats file"
    );
    assert_eq!(s.origin.rtmp_listen.port(), 2000);
    std::fs::write(&file, "no-such-key = 1\n").expect("write");
    let err = resolve(args(&["--config", f]), Role::Origin).expect_err("unknown key");
    assert!(format!("{err:#}").contains("no-such-key"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_viewer_node_has_an_admin_port() {
    let certs = std::env::temp_dir().join(format!("ferrocast-cfg-admin-{}", std::process::id()));
    ferrocast_tls::generate_dev(Some(&certs), &[]).expect("certs");
    let edge = [
        "--origin",
        "127.0.0.1:4433",
        "--tls-dir",
        certs.to_str().expect("utf-8"),
    ];
    let s = resolve(args(&[]), Role::Origin).expect("valid");
    assert_eq!(s.origin.admin_listen, Some("0.0.0.0:9081".parse().unwrap()));
    let s = resolve(args(&edge), Role::Edge).expect("valid");
    assert_eq!(s.edge.admin_listen, Some("0.0.0.0:9080".parse().unwrap()));
    let s = resolve(args(&[]), Role::Standalone).expect("valid");
    assert_eq!(s.edge.admin_listen, Some("127.0.0.1:9080".parse().unwrap()));
    assert_eq!(s.origin.admin_listen, None, "one admin port per process");
    let s = resolve(
        args(&[
            "--admin-listen",
            "127.0.0.1:7000",
            "--controller",
            "http://c:1",
        ]),
        Role::Origin,
    )
    .expect("valid");
    assert_eq!(
        s.origin.admin_listen,
        Some("127.0.0.1:7000".parse().unwrap())
    );
    // From the file, and checked before anything binds.
    let dir = std::env::temp_dir().join(format!("ferrocast-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(&file, "admin-listen = \"127.0.0.1:7001\"\n").expect("write");
    let f = file.to_str().expect("utf-8");
    let s = resolve(args(&["--config", f]), Role::Origin).expect("valid");
    assert_eq!(
        s.origin.admin_listen,
        Some("127.0.0.1:7001".parse().unwrap())
    );
    let _ = std::fs::remove_dir_all(&dir);
    let same = [
        &edge[..],
        &[
            "--http-listen",
            "127.0.0.1:7002",
            "--admin-listen",
            "127.0.0.1:7002",
        ],
    ]
    .concat();
    let err = resolve(args(&same), Role::Edge).expect_err("same port");
    assert!(format!("{err:#}").contains("admin-listen"), "{err:#}");
    let err = resolve(
        args(&["--admin-listen", "127.0.0.1:7003"]),
        Role::Controller,
    )
    .expect_err("not for the controller");
    assert!(format!("{err:#}").contains("admin-listen"), "{err:#}");
    let _ = std::fs::remove_dir_all(&certs);
}

#[test]
fn invalid_values_name_the_field() {
    let err = resolve(
        args(&["--part-target", "5", "--segment-target", "2"]),
        Role::Origin,
    )
    .expect_err("invalid");
    assert!(format!("{err:#}").contains("part-target"), "{err:#}");
    let err = resolve(args(&[]), Role::Edge).expect_err("edge needs an origin");
    assert!(format!("{err:#}").contains("origin"), "{err:#}");
    let err = resolve(
        args(&[
            "--cache-capacity",
            "1K",
            "--origin",
            "127.0.0.1:4433",
            "--tls-dir",
            "/x",
        ]),
        Role::Edge,
    )
    .expect_err("too small");
    assert!(format!("{err:#}").contains("cache-capacity"), "{err:#}");
}

#[test]
fn http_connection_limits_are_flags_with_defaults_for_origin_and_edge() {
    let s = resolve(args(&[]), Role::Standalone).expect("valid");
    let limit = ferrocast_runtime::net::descriptor_limit().expect("RLIMIT_NOFILE");
    for http in [&s.origin.http, &s.edge.http] {
        assert!((http.max_connections as u64) < limit);
        assert_eq!(http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(http.idle_timeout, Duration::from_secs(30));
        assert_eq!(http.send_timeout, Duration::from_secs(30));
        assert_eq!(http.http2_keepalive_interval, Some(Duration::from_secs(20)));
        assert_eq!(http.max_header_bytes, 32 * 1024);
        assert_eq!(http.listen_backlog, 4096);
        assert_eq!(http.fair_share_from_percent, 75);
    }
    // The controller's admin port: the same timeouts, a small cap (operators and
    // probes, not viewers).
    let c = &s.controller.http;
    assert!(c.max_connections <= 1024);
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.name, "controller");
    let s = resolve(
        args(&[
            "--http-max-connections",
            "100",
            "--http-fair-share-from",
            "50",
            "--http-header-timeout",
            "0.5",
            "--http-idle-timeout",
            "2",
            "--http-send-timeout",
            "3",
            "--http2-keepalive-interval",
            "0",
            "--http2-keepalive-timeout",
            "4",
            "--http-max-header-bytes",
            "16K",
            "--http-listen-backlog",
            "512",
        ]),
        Role::Standalone,
    )
    .expect("valid");
    for http in [&s.origin.http, &s.edge.http, &s.controller.http] {
        assert_eq!(http.max_connections, 100);
        assert_eq!(http.fair_share_from_percent, 50);
        assert_eq!(http.header_read_timeout, Duration::from_millis(500));
        assert_eq!(http.idle_timeout, Duration::from_secs(2));
        assert_eq!(http.send_timeout, Duration::from_secs(3));
        assert_eq!(http.http2_keepalive_interval, None);
        assert_eq!(http.http2_keepalive_timeout, Duration::from_secs(4));
        assert_eq!(http.max_header_bytes, 16 * 1024);
        assert_eq!(http.listen_backlog, 512);
    }
    for (flag, value) in [
        ("--http-max-connections", "0"),
        ("--http-max-connections", "100000000"),
        ("--http-fair-share-from", "0"),
        ("--http-header-timeout", "0"),
        ("--http-send-timeout", "99999"),
        ("--http-max-header-bytes", "1K"),
        ("--http-listen-backlog", "0"),
    ] {
        let err = resolve(args(&[flag, value]), Role::Origin).expect_err(flag);
        assert!(
            format!("{err:#}").contains(flag.trim_start_matches('-')),
            "{flag}: {err:#}"
        );
    }
    // The same keys in the file; a flag still wins.
    let dir = std::env::temp_dir().join(format!("ferrocast-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "http-idle-timeout = 5\nhttp-max-header-bytes = \"64K\"\n\
         http-listen-backlog = 1000\nhttp-send-timeout = 7\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let s = resolve(
        args(&["--config", f, "--http-send-timeout", "9"]),
        Role::Origin,
    )
    .expect("valid");
    assert_eq!(s.origin.http.idle_timeout, Duration::from_secs(5));
    assert_eq!(s.origin.http.max_header_bytes, 64 * 1024);
    assert_eq!(s.origin.http.listen_backlog, 1000);
    assert_eq!(s.origin.http.send_timeout, Duration::from_secs(9));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http_io_threads_are_one_per_core_by_default_and_bounded() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let s = resolve(args(&[]), Role::Standalone).expect("valid");
    assert_eq!(s.edge.http.io_threads, Some(cores));
    let s = resolve(args(&["--http-io-threads", "2"]), Role::Standalone).expect("valid");
    assert_eq!(s.edge.http.io_threads, Some(2));
    let s = resolve(args(&["--http-io-threads", "0"]), Role::Standalone).expect("valid");
    assert_eq!(s.edge.http.io_threads, None);
    let err =
        resolve(args(&["--http-io-threads", "1000"]), Role::Standalone).expect_err("too many");
    assert!(format!("{err:#}").contains("http-io-threads"), "{err:#}");
}

#[test]
fn public_url_is_a_base_url_for_edges_only() {
    let edge = |url: &str| resolve(args(&["--public-url", url]), Role::Standalone);
    let s = edge("https://edge-3.cdn.example.com/").expect("valid");
    assert_eq!(
        s.public_url.as_deref(),
        Some("https://edge-3.cdn.example.com")
    );
    let s = edge("http://[2001:db8::1]:8080").expect("valid");
    assert_eq!(s.public_url.as_deref(), Some("http://[2001:db8::1]:8080"));
    for bad in [
        "edge.example.com",
        "ftp://e.example",
        "https://e.example/?a=1",
        "https://e.example/#x",
        "https://",
    ] {
        let err = edge(bad).expect_err(bad);
        assert!(format!("{err:#}").contains("public-url"), "{bad}: {err:#}");
    }
    let err = resolve(args(&["--public-url", "https://o.example"]), Role::Origin)
        .expect_err("origins are not sent viewers");
    assert!(format!("{err:#}").contains("public-url"), "{err:#}");
}

#[test]
fn an_empty_region_means_the_default_one() {
    let s = resolve(args(&["--region", ""]), Role::Origin).expect("valid");
    assert_eq!(s.region, "default");
    let s = resolve(args(&["--region", "eu-west"]), Role::Origin).expect("valid");
    assert_eq!(s.region, "eu-west");
}

#[test]
fn controller_flags() {
    let s = resolve(
        args(&[
            "--grpc-listen",
            "127.0.0.1:6000",
            "--etcd",
            "10.0.0.1:2379,10.0.0.2:2379",
            "--operator-token",
            "t0k",
        ]),
        Role::Controller,
    )
    .expect("valid");
    assert_eq!(s.controller.grpc_listen.port(), 6000);
    assert_eq!(
        s.controller.etcd.endpoints,
        ["10.0.0.1:2379", "10.0.0.2:2379"]
    );
    assert_eq!(s.controller.operator_token.as_deref(), Some("t0k"));
    assert_eq!(s.controller.http_listen.port(), 8090);
    assert_eq!(
        s.controller.advertise, None,
        "a real listen address is advertised"
    );
    let s = resolve(
        args(&[
            "--grpc-listen",
            "0.0.0.0:6000",
            "--advertise-host",
            "10.0.0.9",
            "--insecure-node-api",
            "--operator-token",
            "t0k",
        ]),
        Role::Controller,
    )
    .expect("valid");
    assert_eq!(s.controller.advertise.as_deref(), Some("10.0.0.9:6000"));
    let s = resolve(args(&["--advertise-host", "fd00::9"]), Role::Controller).expect("valid");
    assert_eq!(s.controller.advertise.as_deref(), Some("[fd00::9]:50051"));
    let err = resolve(args(&["--advertise-host", ""]), Role::Controller).expect_err("empty");
    assert!(format!("{err:#}").contains("advertise-host"), "{err:#}");
    let err =
        resolve(args(&["--operator-token", "a b"]), Role::Controller).expect_err("whitespace");
    assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
    let s = resolve(
        args(&[
            "--region-cidr",
            "10.1.0.0/16=eu-west",
            "--region-cidr",
            "2001:db8::/32=us-east",
            "--region-header",
            "x-client-region",
        ]),
        Role::Controller,
    )
    .expect("valid");
    let cidrs: Vec<String> = s
        .controller
        .region_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["10.1.0.0/16=eu-west", "2001:db8::/32=us-east"]);
    assert_eq!(
        s.controller.region_header.as_deref(),
        Some("x-client-region")
    );
    let err = resolve(args(&["--region-cidr", "10.1.2.3/16=eu"]), Role::Controller)
        .expect_err("host bits");
    assert!(format!("{err:#}").contains("region-cidr"), "{err:#}");
    let err = resolve(args(&["--region-header", "bad header"]), Role::Controller)
        .expect_err("header name");
    assert!(format!("{err:#}").contains("region-header"), "{err:#}");
}

#[test]
fn admission_flags() {
    let s = resolve(
        args(&[
            "--admission-url",
            "http://127.0.0.1:9000/admit",
            "--admission-timeout",
            "0.5",
            "--admission-fail",
            "open",
            "--admission-secret",
            "s",
            "--admission-cache-ttl",
            "10",
            "--node-id",
            "o7",
        ]),
        Role::Origin,
    )
    .expect("valid");
    let a = s.origin.admission.expect("configured");
    assert_eq!(a.url, "http://127.0.0.1:9000/admit");
    assert_eq!(a.timeout, Duration::from_millis(500));
    assert_eq!(a.fail, ferrocast_admission::FailMode::Open);
    assert_eq!(a.secret.as_deref(), Some(&b"s"[..]));
    assert_eq!(a.cache_ttl, Duration::from_secs(10));
    assert_eq!(a.node, "o7");
    assert!(s.edge.admission.is_none(), "an origin's only");
    // Defaults: 2 s, closed.
    let s = resolve(args(&["--admission-url", "http://h/"]), Role::Origin).expect("valid");
    let a = s.origin.admission.expect("configured");
    assert_eq!(
        (a.timeout, a.fail),
        (
            Duration::from_secs(2),
            ferrocast_admission::FailMode::Closed
        )
    );
    for (bad, field) in [
        (&["--admission-url", "ftp://h/"][..], "admission-url"),
        (&["--admission-url", "https://"][..], "admission-url"),
        (
            &["--admission-url", "http://h/", "--admission-fail", "maybe"][..],
            "admission-fail",
        ),
        (
            &["--admission-url", "http://h/", "--admission-timeout", "0"][..],
            "admission-timeout",
        ),
        (&["--admission-fail", "open"][..], "admission-url"),
    ] {
        let err = resolve(args(bad), Role::Origin).expect_err("invalid");
        assert!(format!("{err:#}").contains(field), "{bad:?}: {err:#}");
    }
    let err = resolve(args(&["--admission-url", "http://h/"]), Role::Controller)
        .expect_err("not for the controller");
    assert!(format!("{err:#}").contains("admission-url"), "{err:#}");
}

#[test]
fn admission_over_https_and_the_client_ip_header() {
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-adm-{}", std::process::id()));
    ferrocast_tls::generate_dev(Some(&dir), &[]).expect("certs");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let https = ["--admission-url", "https://auth.example/admit"];
    let s = resolve(
        args(&[&https[..], &["--admission-ca", ca]].concat()),
        Role::Standalone,
    )
    .expect("valid");
    for a in [s.origin.admission, s.edge.admission] {
        let a = a.expect("configured");
        assert_eq!(a.url, "https://auth.example/admit");
        assert_eq!(a.ca.as_deref(), Some(std::path::Path::new(ca)));
    }
    // The TOML key, and the header for edges.
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "admission-url = \"https://auth.example/\"\nadmission-ca = \"{ca}\"\nadmission-client-ip-header = \"X-Forwarded-For\"\n"
        ),
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let s = resolve(args(&["--config", f]), Role::Standalone).expect("valid");
    let a = s.edge.admission.expect("configured");
    assert_eq!(a.ca.as_deref(), Some(std::path::Path::new(ca)));
    assert_eq!(
        a.client_ip_header.as_ref().map(|h| h.as_str()),
        Some("x-forwarded-for")
    );
    let key = dir.join("node-key.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    for (bad, role, field) in [
        (
            &[&https[..], &["--admission-ca", "/no/such/ca.pem"]].concat(),
            Role::Origin,
            "admission-ca",
        ),
        (
            &[
                &https[..],
                &["--admission-ca", empty.to_str().expect("utf-8")],
            ]
            .concat(),
            Role::Origin,
            "admission-ca",
        ),
        (
            &[
                &https[..],
                &["--admission-ca", key.to_str().expect("utf-8")],
            ]
            .concat(),
            Role::Origin,
            "admission-ca",
        ),
        (
            &["--admission-url", "http://h/", "--admission-ca", ca][..].to_vec(),
            Role::Origin,
            "admission-ca",
        ),
        (
            &["--admission-ca", ca][..].to_vec(),
            Role::Origin,
            "admission-url",
        ),
        (
            &[
                "--admission-url",
                "http://h/",
                "--admission-client-ip-header",
                "x-real-ip",
            ][..]
                .to_vec(),
            Role::Origin,
            "admission-client-ip-header",
        ),
        (
            &[
                "--admission-url",
                "http://h/",
                "--admission-client-ip-header",
                "bad header",
            ][..]
                .to_vec(),
            Role::Standalone,
            "admission-client-ip-header",
        ),
    ] {
        let err = resolve(args(bad), role).expect_err("invalid");
        assert!(format!("{err:#}").contains(field), "{bad:?}: {err:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_flags_are_checked_before_anything_binds() {
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-tls-{}", std::process::id()));
    ferrocast_tls::generate_dev(Some(&dir), &[]).expect("certs");
    let (cert, key) = (dir.join("node.pem"), dir.join("node-key.pem"));
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let err = resolve(args(&["--rtmps-listen", "127.0.0.1:1936"]), Role::Origin)
        .expect_err("no certificate");
    assert!(format!("{err:#}").contains("rtmps-listen"), "{err:#}");
    // The HTTPS pair serves RTMPS too.
    let s = resolve(
        args(&[
            "--rtmps-listen",
            "127.0.0.1:1936",
            "--https-cert",
            cert,
            "--https-key",
            key,
        ]),
        Role::Origin,
    )
    .expect("valid");
    assert_eq!(s.origin.rtmps.expect("rtmps").listen.port(), 1936);
    let err = resolve(
        args(&["--rtmps-cert", cert, "--rtmps-key", key]),
        Role::Origin,
    )
    .expect_err("a certificate without a port");
    assert!(format!("{err:#}").contains("rtmps-listen"), "{err:#}");
    let err = resolve(
        args(&[
            "--rtmps-listen",
            "127.0.0.1:1936",
            "--rtmps-cert",
            key,
            "--rtmps-key",
            key,
        ]),
        Role::Origin,
    )
    .expect_err("a key is no certificate");
    assert!(format!("{err:#}").contains("rtmps-cert"), "{err:#}");
    let err = resolve(args(&["--operator-ca", cert]), Role::Controller)
        .expect_err("operator CA without TLS");
    assert!(format!("{err:#}").contains("operator-ca"), "{err:#}");
    let d = dir.to_str().expect("utf-8");
    let s = resolve(
        args(&["--tls-dir", d, "--operator-ca", cert]),
        Role::Controller,
    )
    .expect("valid");
    let tls = s.controller.tls.expect("gRPC TLS");
    assert_eq!(tls.operator_ca.len(), 1);
    // Standalone's embedded controller stays loopback plaintext.
    let s = resolve(args(&["--tls-dir", d]), Role::Standalone).expect("valid");
    assert!(s.controller.tls.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
#[test]
fn a_plaintext_node_api_stays_on_loopback_unless_told_otherwise() {
    let s = resolve(args(&[]), Role::Controller).expect("valid");
    assert_eq!(s.controller.grpc_listen, "127.0.0.1:50051".parse().unwrap());
    let err = resolve(args(&["--grpc-listen", "0.0.0.0:50051"]), Role::Controller)
        .expect_err("plaintext node API on the network");
    assert!(format!("{err:#}").contains("grpc-listen"), "{err:#}");
    let s = resolve(
        args(&[
            "--grpc-listen",
            "0.0.0.0:50051",
            "--insecure-node-api",
            "--operator-token",
            "t0k",
        ]),
        Role::Controller,
    )
    .expect("explicitly insecure");
    assert!(s.controller.insecure_node_api);
    // An operator API beyond loopback is never open: it needs a credential.
    let err = resolve(
        args(&["--grpc-listen", "0.0.0.0:50051", "--insecure-node-api"]),
        Role::Controller,
    )
    .expect_err("an open operator API on the network");
    assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
    // With certificates, the default faces the network.
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-grpc-{}", std::process::id()));
    ferrocast_tls::generate_dev(Some(&dir), &[]).expect("certs");
    let d = dir.to_str().expect("utf-8");
    let err =
        resolve(args(&["--tls-dir", d]), Role::Controller).expect_err("no operator credential");
    assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
    let s = resolve(
        args(&["--tls-dir", d, "--operator-token", "t0k"]),
        Role::Controller,
    )
    .expect("valid");
    assert_eq!(s.controller.grpc_listen, "0.0.0.0:50051".parse().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_takes_its_id_from_its_certificate() {
    use ferrocast_tls::identity::NodeIdentity;
    use ferrocast_tls::pki::ClusterCa;
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-id-{}", std::process::id()));
    let ca = ClusterCa::generate("test", 1).expect("CA");
    let o7 = NodeIdentity::from_spec("origin:o7").expect("identity");
    ca.issue(&[o7], &[], 1)
        .expect("issue")
        .write_dir(&dir, ca.bundle_pem())
        .expect("write");
    let d = dir.to_str().expect("utf-8");
    let s = resolve(args(&["--tls-dir", d]), Role::Origin).expect("valid");
    assert_eq!(s.node_id, "o7");
    // Another id: refused when the controller checks certificates, allowed otherwise.
    let err = resolve(
        args(&[
            "--tls-dir",
            d,
            "--node-id",
            "o8",
            "--controller",
            "https://c:50051",
        ]),
        Role::Origin,
    )
    .expect_err("an id the certificate does not name");
    assert!(format!("{err:#}").contains("invalid node-id"), "{err:#}");
    let s = resolve(
        args(&[
            "--tls-dir",
            d,
            "--node-id",
            "o8",
            "--controller",
            "http://c:50051",
        ]),
        Role::Origin,
    )
    .expect("plaintext controller");
    assert_eq!(s.node_id, "o8");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The long names of `role`'s flags.
fn flags_of(role: &str) -> Vec<String> {
    let cli = crate::Cli::command();
    let sub = cli.find_subcommand(role).expect(role);
    sub.get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_owned)
        .collect()
}

/// `ferrocast ROLE --help`.
fn help_of(role: &str) -> String {
    let mut cli = crate::Cli::command();
    cli.build();
    let sub = cli.find_subcommand_mut(role).expect(role);
    sub.render_long_help().to_string()
}

#[test]
fn each_role_lists_the_flags_it_reads_and_no_other() {
    crate::Cli::command().debug_assert();
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "controller",
            &[
                "config",
                "node-id",
                "http-listen",
                "advertise-host",
                "tls-dir",
                "log-format",
                "grpc-listen",
                "operator-token",
                "operator-read-token",
                "publish-auth",
                "lease-ttl",
                "region-cidr",
                "region-header",
                "insecure-node-api",
                "operator-ca",
                "etcd",
                "http-idle-timeout",
            ],
            &[
                "rtmp-listen",
                "segment-target",
                "cache-capacity",
                "admin-listen",
                "region",
                "https-cert",
                "controller",
                "origin",
                "admission-url",
                "demo",
                "origin-http-listen",
            ],
        ),
        (
            "origin",
            &[
                "rtmp-listen",
                "rtmps-listen",
                "quic-listen",
                "state-dir",
                "segment-target",
                "reconnect-grace",
                "admin-listen",
                "region",
                "https-cert",
                "controller",
                "admission-url",
                "admission-cache-ttl",
                "demo",
                "http-max-connections",
            ],
            &[
                "grpc-listen",
                "etcd",
                "operator-token",
                "publish-auth",
                "insecure-node-api",
                "cache-capacity",
                "http-io-threads",
                "public-url",
                "origin",
                "admission-client-ip-header",
                "origin-http-listen",
            ],
        ),
        (
            "edge",
            &[
                "origin",
                "controller",
                "cache-capacity",
                "idle-unsubscribe",
                "http-io-threads",
                "public-url",
                "admission-client-ip-header",
                "admission-url",
                "admin-listen",
                "https-cert",
            ],
            &[
                "rtmp-listen",
                "segment-target",
                "state-dir",
                "rtmps-listen",
                "demo",
                "grpc-listen",
                "etcd",
                "operator-token",
                "origin-http-listen",
            ],
        ),
        (
            "standalone",
            &[
                "rtmp-listen",
                "origin-http-listen",
                "segment-target",
                "cache-capacity",
                "public-url",
                "grpc-listen",
                "operator-token",
                "publish-auth",
                "etcd",
                "admission-client-ip-header",
                "demo",
            ],
            &["controller", "origin", "operator-ca", "insecure-node-api"],
        ),
    ];
    for (role, has, lacks) in cases {
        let flags = flags_of(role);
        let help = help_of(role);
        for f in has {
            assert!(flags.iter().any(|g| g == f), "{role} lacks --{f}");
            assert!(
                help.contains(&format!("--{f}")),
                "{role} --help lacks --{f}"
            );
        }
        for f in lacks {
            assert!(!flags.iter().any(|g| g == f), "{role} takes --{f}");
        }
    }
    // What a newcomer met: the controller's help says nothing of ingest or caches.
    let help = help_of("controller");
    for f in ["--rtmp-listen", "--segment-target", "--cache-capacity"] {
        assert!(!help.contains(f), "controller --help shows {f}:\n{help}");
    }
}

#[test]
fn the_top_level_help_lists_every_subcommand() {
    let mut cli = crate::Cli::command();
    let help = cli.render_help().to_string();
    for sub in [
        "origin",
        "edge",
        "controller",
        "standalone",
        "ctl",
        "certs",
        "bench",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{sub} ")))
            .unwrap_or_else(|| panic!("no {sub} in:\n{help}"));
        assert!(
            line.len() > sub.len() + 10,
            "{sub} has no one-liner: {line}"
        );
    }
    let standalone = help
        .lines()
        .find(|l| l.trim_start().starts_with("standalone "))
        .expect("standalone");
    assert!(standalone.contains("controller"), "{standalone}");
}

#[test]
fn a_role_refuses_a_flag_it_does_not_read() {
    for (role, flag, value) in [
        ("controller", "--rtmp-listen", "0.0.0.0:1935"),
        ("controller", "--segment-target", "2"),
        ("controller", "--cache-capacity", "1G"),
        ("controller", "--admin-listen", "127.0.0.1:9090"),
        ("origin", "--etcd", "127.0.0.1:2379"),
        ("origin", "--cache-capacity", "1G"),
        ("edge", "--rtmp-listen", "0.0.0.0:1935"),
        ("standalone", "--controller", "http://127.0.0.1:50051"),
    ] {
        let err = crate::Cli::try_parse_from(["ferrocast", role, flag, value])
            .expect_err("an unexpected argument");
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::UnknownArgument,
            "{role} {flag}"
        );
        assert!(err.to_string().contains(flag), "{role} {flag}: {err}");
    }
}

#[test]
fn a_file_key_the_role_does_not_read_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    let f = file.to_str().expect("utf-8");
    for (role, text, key) in [
        (
            Role::Controller,
            "rtmp-listen = \"0.0.0.0:1935\"\n",
            "rtmp-listen",
        ),
        (
            Role::Controller,
            "cache-capacity = \"1G\"\n",
            "cache-capacity",
        ),
        (Role::Edge, "segment-target = 2\n", "segment-target"),
        (Role::Origin, "etcd = [\"127.0.0.1:2379\"]\n", "etcd"),
        (
            Role::Standalone,
            "controller = [\"http://c:1\"]\n",
            "controller",
        ),
        (Role::Origin, "demo = true\n", "demo"),
        (Role::Origin, "config = \"other.toml\"\n", "config"),
    ] {
        std::fs::write(&file, text).expect("write");
        let err = resolve(args(&["--config", f]), role).expect_err(text);
        assert!(format!("{err:#}").contains(key), "{role:?} {text}: {err:#}");
    }
    // Keys of every group the controller reads, through the same file.
    std::fs::write(
        &file,
        "grpc-listen = \"127.0.0.1:6001\"\netcd = [\"10.0.0.1:2379\"]\n\
         http-idle-timeout = 4\nlog-format = \"json\"\ninsecure-node-api = true\n",
    )
    .expect("write");
    let s = resolve(args(&["--config", f]), Role::Controller).expect("valid");
    assert_eq!(s.controller.grpc_listen.port(), 6001);
    assert_eq!(s.controller.etcd.endpoints, ["10.0.0.1:2379"]);
    assert_eq!(s.controller.http.idle_timeout, Duration::from_secs(4));
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(s.controller.insecure_node_api);
    std::fs::write(&file, "log-format = \"xml\"\n").expect("write");
    let err = resolve(args(&["--config", f]), Role::Controller).expect_err("bad format");
    assert!(format!("{err:#}").contains("log-format"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One key of each group, for standalone (every group but joining a controller) and
/// for an origin (joining one): the file's, the environment's and the flag's values.
const LAYERED: [(&str, [&str; 3]); 9] = [
    ("node-id", ["file", "env", "flag"]),
    ("region", ["file-r", "env-r", "flag-r"]),
    ("http-idle-timeout", ["5", "6", "7"]),
    ("admission-timeout", ["1", "1.5", "0.5"]),
    ("window-segments", ["5", "6", "7"]),
    ("idle-unsubscribe", ["5", "6", "7"]),
    ("lease-ttl", ["5", "6", "7"]),
    ("etcd", ["file:2379", "env:2379", "flag:2379"]),
    (
        "controller",
        ["http://file:1", "http://env:1", "http://flag:1"],
    ),
];

/// The keys standalone reads of [`LAYERED`] (all but `controller`) and the origin's.
fn layered_keys(role: Role) -> impl Iterator<Item = (&'static str, [&'static str; 3])> {
    LAYERED.into_iter().filter(move |(k, _)| match role {
        Role::Standalone => *k != "controller",
        _ => !matches!(*k, "idle-unsubscribe" | "lease-ttl" | "etcd"),
    })
}

/// Writes the file layer of [`LAYERED`] for `role` into `dir`.
fn layered_file(dir: &std::path::Path, role: Role) -> String {
    let mut text = "admission-url = \"http://127.0.0.1:9/admit\"\n".to_owned();
    for (key, [file, ..]) in layered_keys(role) {
        let value = match key {
            "node-id" | "region" => format!("{file:?}"),
            "etcd" | "controller" => format!("[{file:?}]"),
            _ => file.to_owned(),
        };
        text.push_str(&format!("{key} = {value}\n"));
    }
    let path = dir.join(format!("{role:?}.toml"));
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

/// Checks that `s` holds layer `i` (0 file, 1 environment, 2 flag) of every key
/// `role` reads.
fn assert_layer(s: &Settings, role: Role, i: usize) {
    let secs = |key: &str| -> Duration {
        let v = LAYERED.iter().find(|(k, _)| *k == key).expect(key).1[i];
        Duration::from_secs_f64(v.parse().expect("seconds"))
    };
    let value = |key: &str| LAYERED.iter().find(|(k, _)| *k == key).expect(key).1[i];
    assert_eq!(s.node_id, value("node-id"), "node-id, layer {i}");
    assert_eq!(s.region, value("region"), "region, layer {i}");
    let (http, admission) = match role {
        Role::Standalone => (&s.edge.http, s.edge.admission.as_ref()),
        _ => (&s.origin.http, s.origin.admission.as_ref()),
    };
    assert_eq!(http.idle_timeout, secs("http-idle-timeout"), "layer {i}");
    assert_eq!(
        admission.expect("admission").timeout,
        secs("admission-timeout"),
        "layer {i}"
    );
    assert_eq!(
        s.origin.streams.packager.window_segments.to_string(),
        value("window-segments"),
        "layer {i}"
    );
    match role {
        Role::Standalone => {
            assert_eq!(
                s.edge.idle_unsubscribe,
                secs("idle-unsubscribe"),
                "layer {i}"
            );
            assert_eq!(s.controller.lease_ttl, secs("lease-ttl"), "layer {i}");
            assert_eq!(s.controller.etcd.endpoints, [value("etcd")], "layer {i}");
        }
        _ => assert_eq!(s.controllers, [value("controller")], "layer {i}"),
    }
}

/// The flag layer of [`LAYERED`] for `role`, after `--config FILE`.
fn layered_flags(role: Role, file: &str) -> Vec<String> {
    let mut v = args(&["--config", file]);
    for (key, [.., flag]) in layered_keys(role) {
        v.push(format!("--{key}"));
        v.push(flag.to_owned());
    }
    v
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_in_every_group() {
    let dir = std::env::temp_dir().join(format!("ferrocast-cfg-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for role in [Role::Standalone, Role::Origin] {
        let file = layered_file(&dir, role);
        let s = resolve(args(&["--config", &file]), role).expect("file only");
        assert_layer(&s, role, 0);
        let s = resolve(layered_flags(role, &file), role).expect("flags over the file");
        assert_layer(&s, role, 2);
    }
    // The environment in a process of its own: tests in this one run side by side.
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"));
    child
        .args([
            "config::tests::the_environment_lies_between_flags_and_file",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("FERROCAST_TEST_LAYERS_DIR", &dir);
    for (key, [_, env, _]) in LAYERED {
        child.env(
            format!("FERROCAST_{}", key.to_ascii_uppercase().replace('-', "_")),
            env,
        );
    }
    let out = child.output().expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Also shows that a role ignores another role's variables: standalone runs with
/// `FERROCAST_CONTROLLER` set, the origin with `FERROCAST_ETCD` and `FERROCAST_LEASE_TTL`.
#[test]
#[ignore = "run by flags_beat_the_environment_which_beats_the_file_in_every_group, which sets its environment"]
fn the_environment_lies_between_flags_and_file() {
    let dir = std::env::var("FERROCAST_TEST_LAYERS_DIR").expect("run by its parent test");
    for role in [Role::Standalone, Role::Origin] {
        let file = layered_file(std::path::Path::new(&dir), role);
        let s = resolve(args(&["--config", &file]), role).expect("environment over the file");
        assert_layer(&s, role, 1);
        let s = resolve(layered_flags(role, &file), role).expect("flags over the environment");
        assert_layer(&s, role, 2);
    }
}

#[test]
fn etcd_tls_and_user_flags() {
    let dir = std::env::temp_dir().join(format!("ferrocast-etcd-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let err = resolve(
        args(&[
            "--etcd",
            "e:2379",
            "--etcd-cert",
            "c.pem",
            "--etcd-key",
            "k.pem",
        ]),
        Role::Controller,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid etcd-cert: needs --etcd-ca (TLS to etcd)"
    );
    let err = resolve(
        args(&["--etcd", "e:2379", "--etcd-ca", "/nonexistent/ca.pem"]),
        Role::Controller,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("etcd-ca: /nonexistent/ca.pem"),
        "{err}"
    );
    let err = resolve(
        args(&["--etcd", "e:2379", "--etcd-user", "fc"]),
        Role::Controller,
    );
    if std::env::var_os("FERROCAST_ETCD_PASSWORD").is_none() {
        assert!(err.unwrap_err().to_string().contains("needs a password"));
    }
    let pw = password.display().to_string();
    let s = resolve(
        args(&[
            "--etcd",
            "e:2379",
            "--etcd-user",
            "fc",
            "--etcd-password-file",
            &pw,
        ]),
        Role::Controller,
    )
    .expect("valid");
    let auth = s.controller.etcd.auth.expect("a user");
    assert_eq!(
        (auth.user.as_str(), auth.password.as_str()),
        ("fc", "s3cret")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
