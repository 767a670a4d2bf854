//! The `ferrocast controller` binary against a real etcd that speaks TLS only and admits
//! only clients with a certificate of its CA (`--client-cert-auth`): with `--etcd-ca`,
//! `--etcd-cert` and `--etcd-key` it leads and is ready; without a client certificate it
//! stays degraded and its log says which flags are missing; a PEM file that is not there
//! stops it before it binds, naming the flag.

use ferrocast_tests::etcd::Etcd;
use ferrocast_tests::{
    ferrocast_bin, free_addr, http_get, run_with_timeout, Launch, Node, TempDir,
};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn controller_args(etcd: &Etcd, grpc: &str, with_cert: bool) -> Vec<String> {
    let t = etcd.tls().expect("a TLS etcd");
    let mut args = vec![
        "--grpc-listen".to_owned(),
        grpc.to_owned(),
        "--etcd".to_owned(),
        etcd.endpoints(),
        "--etcd-ca".to_owned(),
        t.ca.display().to_string(),
    ];
    if with_cert {
        args.extend([
            "--etcd-cert".to_owned(),
            t.client_cert.display().to_string(),
            "--etcd-key".to_owned(),
            t.client_key.display().to_string(),
        ]);
    }
    args
}

#[test]
fn a_controller_with_the_etcd_client_certificate_leads_and_is_ready() {
    let etcd = Etcd::start_tls(1);
    let grpc = free_addr().to_string();
    let args = controller_args(&etcd, &grpc, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Ready means the state store answers (503 `degraded` while it does not).
    let c = Node::launch(Launch::new("controller", &args));
    c.wait_log("elected leader", WAIT);
    let r = http_get(c.http, "/readyz", Duration::from_secs(2)).expect("readyz");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_controller_without_a_client_certificate_is_refused_and_says_why() {
    let etcd = Etcd::start_tls(1);
    let grpc = free_addr().to_string();
    let args = controller_args(&etcd, &grpc, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Node::spawn(Launch::new("controller", &args));
    c.wait_log(
        "etcd wants a client certificate its CA signed: --etcd-cert, --etcd-key",
        WAIT,
    );
    let r = http_get(c.http, "/readyz", Duration::from_secs(2)).expect("readyz");
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn a_missing_etcd_pem_file_stops_the_controller_before_it_binds() {
    let dir = TempDir::new("etcd-pem");
    let missing = dir.join("ca.pem").display().to_string();
    let grpc = free_addr();
    let out = run_with_timeout(
        Command::new(ferrocast_bin()).args([
            "controller",
            "--grpc-listen",
            &grpc.to_string(),
            "--http-listen",
            &free_addr().to_string(),
            "--etcd",
            "127.0.0.1:2379",
            "--etcd-ca",
            &missing,
        ]),
        WAIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without its CA file");
    assert!(
        stderr.contains(&format!("etcd-ca: {missing}")),
        "the error names neither the flag nor the file:\n{stderr}"
    );
}
