//! `ferrocast ctl` run as a real process against a running controller: tables with the
//! expected rows, `--json` that parses, the operator token, errors with exit code 1, and a
//! write sent to a follower retried on the leader (real etcd).
//!
//! Needs the binary: `cargo build -p ferrocast-cli --bin ferrocast` (CI builds every binary
//! first), or `FERROCAST_BIN=/path/to/ferrocast`.

mod support;

use ferrocast_controller::ControllerConfig;
use ferrocast_proto::controller::v1 as pb;
use pb::node_service_client::NodeServiceClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use support::cluster::{load, node, register, Beating, Running, WAIT};
use support::EtcdServer;
use tokio::process::Command;
use tokio::time::{sleep, timeout};

const TOKEN: &str = "s3cret";

/// The `ferrocast` binary of this target directory.
fn ferrocast_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCAST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/ferrocast
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ferrocast");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p ferrocast-cli --bin ferrocast",
        bin.display()
    );
    bin
}

fn ctl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(ferrocast_bin());
    cmd.arg("ctl")
        .args(args)
        .env_remove("FERROCAST_CONTROLLER")
        .env_remove("FERROCAST_OPERATOR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `ferrocast ctl ARGS` to completion (bounded).
async fn ctl(args: &[&str]) -> Output {
    let child = ctl_command(args).spawn().expect("ferrocast runs");
    timeout(WAIT, child.wait_with_output())
        .await
        .expect("ctl ends in time")
        .expect("ctl output")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn failure(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The row of `table` whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in\n{table}"))
}

/// Checks that `column` starts at the same position in the header and in every row.
fn assert_aligned(table: &str, column: &str) {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    let at = header.find(column).expect("the column");
    for l in lines {
        let before = &l[..at];
        assert!(
            before.ends_with("  ") && !l[at..].starts_with(' '),
            "{column} misaligned in\n{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_tables_json_token_and_errors() {
    let c = Running::start(ControllerConfig {
        operator_token: Some(TOKEN.into()),
        region_cidrs: vec!["10.0.0.0/8=eu".parse().unwrap()],
        ..ControllerConfig::default()
    })
    .await;
    let mut nodes = NodeServiceClient::new(c.channel().await);
    let o1 = register(&mut nodes, node("o1", pb::NodeRole::Origin, "eu", 0)).await;
    let e1 = register(&mut nodes, node("e1", pb::NodeRole::Edge, "eu", 100)).await;
    let e2 = register(&mut nodes, node("edge-two", pb::NodeRole::Edge, "us", 100)).await;
    let _alive = [
        Beating::start(
            nodes.clone(),
            "o1",
            o1,
            load(0, &[]),
            Duration::from_secs(1),
        ),
        Beating::start(
            nodes.clone(),
            "e1",
            e1,
            load(7, &[("s", 7)]),
            Duration::from_secs(1),
        ),
        Beating::start(
            nodes.clone(),
            "edge-two",
            e2,
            load(0, &[]),
            Duration::from_secs(1),
        ),
    ];
    let claim = pb::ClaimStreamRequest {
        node_id: "o1".into(),
        stream: "s".into(),
        ..Default::default()
    };
    timeout(WAIT, nodes.claim_stream(claim))
        .await
        .unwrap()
        .unwrap();
    // e1's first load report is in.
    sleep(Duration::from_millis(300)).await;
    let url = format!("http://{}", c.addr);
    fn args<'a>(url: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--controller", url, "--token", TOKEN];
        v.extend_from_slice(rest);
        v
    }
    let with = |rest: &[&'static str]| args(&url, rest);

    // Without the token: refused, readable, exit code 1.
    let err = failure(&ctl(&["--controller", &url, "nodes"]).await);
    assert!(
        err.contains("unauthenticated") && err.contains("--token"),
        "{err}"
    );
    let err = failure(&ctl(&["--controller", &url, "--token", "wrong", "nodes"]).await);
    assert!(err.contains("unauthenticated"), "{err}");

    let table = stdout(&ctl(&with(&["nodes"])).await);
    assert!(table.starts_with("ID "), "{table}");
    let e1_row = row(&table, "e1");
    for cell in ["edge", "eu", "up", "7", "http://e1.example"] {
        assert!(
            e1_row.split_whitespace().any(|c| c == cell),
            "{cell}: {e1_row}"
        );
    }
    assert!(row(&table, "o1").contains("origin"));
    assert!(row(&table, "edge-two").contains("us"));
    for column in ["ROLE", "REGION", "STATE", "VIEWERS", "ADDRESS"] {
        assert_aligned(&table, column);
    }

    let json: Value = serde_json::from_str(&stdout(
        &ctl(&with(&["--json", "nodes", "--role", "edge"])).await,
    ))
    .unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1", "edge-two"]);
    assert_eq!(json[0]["role"], "edge");
    assert_eq!(json[0]["viewers"], 7);

    let detail = stdout(&ctl(&with(&["node", "e1"])).await);
    assert!(
        detail
            .lines()
            .any(|l| l.starts_with("region:") && l.ends_with("eu")),
        "{detail}"
    );

    let streams = stdout(&ctl(&with(&["streams"])).await);
    let s_row: Vec<&str> = row(&streams, "s").split_whitespace().collect();
    assert_eq!(&s_row[..5], ["s", "live", "o1", "1", "7"], "{streams}");
    let s: Value =
        serde_json::from_str(&stdout(&ctl(&with(&["stream", "s", "--json"])).await)).unwrap();
    assert_eq!(
        (
            s["origin"].as_str(),
            s["epoch"].as_u64(),
            s["state"].as_str()
        ),
        (Some("o1"), Some(1), Some("live"))
    );
    assert_eq!(s["origin_relay"], "o1:4433");
    assert_eq!(s["edges"][0], "e1");

    let r: Value = serde_json::from_str(&stdout(
        &ctl(&with(&[
            "--json",
            "resolve",
            "s",
            "--client-ip",
            "10.2.3.4",
        ]))
        .await,
    ))
    .unwrap();
    assert_eq!(
        (r["edge_id"].as_str(), r["client_region"].as_str()),
        (Some("e1"), Some("eu"))
    );
    assert_eq!(r["url"], "http://e1.example/live/s/index.m3u8");
    let text = stdout(&ctl(&with(&["resolve", "s", "--region", "us"])).await);
    assert!(
        text.lines()
            .any(|l| l.starts_with("edge:") && l.ends_with("edge-two")),
        "{text}"
    );

    let out = stdout(&ctl(&with(&["drain", "e1"])).await);
    assert!(out.contains("e1 draining"), "{out}");
    let json: Value =
        serde_json::from_str(&stdout(&ctl(&with(&["--json", "node", "e1"])).await)).unwrap();
    assert_eq!(json["state"], "draining");
    let out = stdout(&ctl(&with(&["drain", "e1", "--undo"])).await);
    assert!(out.contains("no longer draining"), "{out}");

    let out = stdout(&ctl(&with(&["kick", "s", "--reason", "test"])).await);
    assert!(out.contains("origin o1"), "{out}");

    let err = failure(&ctl(&with(&["stream", "nope"])).await);
    assert!(err.contains("not found"), "{err}");
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = unused.local_addr().unwrap().to_string();
    drop(unused);
    let err = failure(&ctl(&["--controller", &dead, "--timeout", "2s", "nodes"]).await);
    assert!(err.contains("cannot reach the controller"), "{err}");

    // The environment works as the flags do.
    let mut cmd = ctl_command(&["--json", "streams"]);
    cmd.env("FERROCAST_CONTROLLER", format!("{dead},{url}"))
        .env("FERROCAST_OPERATOR_TOKEN", TOKEN);
    let out = timeout(WAIT, cmd.spawn().unwrap().wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["stream"], "s");

    // events: one JSON object per line; stops after --count. The hub (200 ms) has
    // reported e1's drain and undo before the watcher starts.
    sleep(Duration::from_millis(600)).await;
    let events = ctl_command(&with(&["--json", "events", "--count", "2"]))
        .spawn()
        .unwrap();
    let toggle = async {
        let mut drain = true;
        let mut op = pb::operator_service_client::OperatorServiceClient::new(c.channel().await);
        loop {
            let mut req = tonic::Request::new(pb::DrainNodeRequest {
                node_id: "edge-two".into(),
                drain,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            op.drain_node(req).await.unwrap();
            drain = !drain;
            sleep(Duration::from_millis(400)).await;
        }
    };
    let out = tokio::select! {
        out = timeout(WAIT, events.wait_with_output()) => out.expect("events ends in time").unwrap(),
        _ = toggle => unreachable!(),
    };
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for e in &lines {
        assert_eq!(e["node_id"], "edge-two", "{e}");
        assert!(
            ["node_draining", "node_up"].contains(&e["kind"].as_str().unwrap()),
            "{e}"
        );
        assert!(e["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_retried_on_the_leader() {
    let etcd = EtcdServer::start().await;
    let cfg = ControllerConfig {
        etcd: etcd.config(),
        lease_ttl: Duration::from_secs(2),
        ..ControllerConfig::default()
    };
    let a = Running::start(cfg.clone()).await;
    let mut na = NodeServiceClient::new(a.channel().await);
    let e1 = register(&mut na, node("e1", pb::NodeRole::Edge, "eu", 100)).await;
    let _alive = Beating::start(
        na.clone(),
        "e1",
        e1,
        load(0, &[]),
        Duration::from_millis(500),
    );
    let b = Running::start(cfg).await;

    let follower = format!("http://{}", b.addr);
    let out = stdout(&ctl(&["--controller", &follower, "drain", "e1"]).await);
    assert!(out.contains("e1 draining"), "{out}");
    // A read on the follower sees it.
    let json: Value = serde_json::from_str(&stdout(
        &ctl(&["--controller", &follower, "--json", "node", "e1"]).await,
    ))
    .unwrap();
    assert_eq!(json["state"], "draining");
    b.stop().await;
    a.stop().await;
}
