//! The controller's etcd path against a real etcd server: node leases, conditional
//! assignment writes fenced by revision, epoch and leadership, and leader election; the
//! same over TLS with client certificates, and with an etcd user and password.

mod support;

use ferrocast_controller::assign::{self, AssignError};
use ferrocast_controller::election::{Election, ElectionError, EtcdElection};
use ferrocast_controller::etcd::{EtcdAuth, EtcdClient, EtcdConfig};
use ferrocast_controller::model::{Assignment, AssignmentState, Capacity, Continuity, Node, Role};
use ferrocast_controller::scheduler::{ClaimDecision, GrantKind, Refusal};
use ferrocast_controller::store::etcd::{EtcdStore, DEFAULT_PREFIX};
use ferrocast_controller::store::{Fence, Store, StoreError};
use std::collections::HashMap;
use std::time::Duration;
use support::cluster::{node, register, Running};
use support::EtcdServer;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

const CALL: Duration = Duration::from_secs(2);
/// etcd's minimum lease TTL with its default election timeout.
const TTL: Duration = Duration::from_secs(2);
const ELECTION: &str = "/ferrocast/v1/election/controller";

fn origin(id: &str) -> Node {
    Node {
        id: id.into(),
        role: Role::Origin,
        region: "eu".into(),
        relay_addr: format!("{id}:4433"),
        http_url: String::new(),
        rtmp_addr: String::new(),
        capacity: Capacity::default(),
    }
}

fn ids(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

/// Polls `check` every 100 ms until it is true or `within` has passed; returns the time taken.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_disappears_when_its_lease_expires() {
    let etcd = EtcdServer::start().await;
    let store = EtcdStore::new(etcd.client(CALL).await, DEFAULT_PREFIX);
    let a = store.register_node(origin("a"), TTL).await.unwrap();
    let b = store.register_node(origin("b"), TTL).await.unwrap();
    assert_eq!(ids(&store.nodes().await.unwrap()), ["a", "b"]);

    // a heartbeats, b does not: after a few TTLs only a is left.
    let start = Instant::now();
    while start.elapsed() < TTL * 2 {
        let _ = store.keep_alive(a).await;
        sleep(TTL / 4).await;
    }
    let gone = eventually(TTL + Duration::from_secs(3), || async {
        // A renewal lost to a busy machine is retried 100 ms later.
        let _ = store.keep_alive(a).await;
        store.nodes().await.is_ok_and(|n| ids(&n) == ["a"])
    })
    .await;
    assert!(gone.is_some(), "b still registered");
    assert_eq!(
        store.keep_alive(b).await,
        Err(StoreError::LeaseExpired(b.0))
    );

    // A clean shutdown revokes: gone at once.
    store.revoke(a).await.unwrap();
    assert!(store.nodes().await.unwrap().is_empty());
    assert_eq!(
        store.keep_alive(a).await,
        Err(StoreError::LeaseExpired(a.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_revisions_epochs_and_leaders_cannot_write() {
    let etcd = EtcdServer::start().await;
    let client = etcd.client(CALL).await;
    let store = EtcdStore::new(client.clone(), DEFAULT_PREFIX);
    let election = EtcdElection::new(client.clone(), ELECTION, "c1", TTL);
    let leader = timeout(
        Duration::from_secs(10),
        election.campaign(CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    let fence = leader.fence().clone();
    let no_load = HashMap::new();

    let _o1 = store.register_node(origin("o1"), TTL).await.unwrap();
    let o2 = store
        .register_node(origin("o2"), Duration::from_secs(30))
        .await
        .unwrap();
    let snap = assign::snapshot(&store, &no_load).await.unwrap();
    let d = assign::claim(&store, &fence, &snap, "o1", "s")
        .await
        .unwrap();
    assert!(
        matches!(
            d,
            ClaimDecision::Grant {
                kind: GrantKind::New,
                ..
            }
        ),
        "{d:?}"
    );
    let d = assign::claim(&store, &fence, &snap, "o2", "s")
        .await
        .unwrap();
    assert_eq!(
        d,
        ClaimDecision::Refuse(Refusal::Duplicate {
            holder: "o1".into()
        })
    );
    let cont = |next_msn| Continuity {
        next_msn,
        discontinuity: 0,
        timeline_end_ms: next_msn * 2_000,
    };
    assign::report(&store, &fence, "s", 1, cont(10), false)
        .await
        .unwrap();

    // A write based on a revision that is no longer current fails, whoever makes it.
    let read = store.assignment("s".into()).await.unwrap().unwrap();
    let mut a: Assignment = read.value.clone();
    a.continuity = cont(11);
    let r2 = store
        .put_assignment(a.clone(), Some(read.revision), fence.clone())
        .await
        .unwrap();
    assert!(r2 > read.revision);
    assert!(matches!(
        store
            .put_assignment(a.clone(), Some(read.revision), fence.clone())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.put_assignment(a.clone(), None, fence.clone()).await,
        Err(StoreError::Conflict(_))
    ));

    // o1's lease expires (it froze: nothing renews it); o2 takes over with epoch 2 and
    // o1's continuity.
    let expired = eventually(TTL + Duration::from_secs(3), || async {
        !ids(&store.nodes().await.unwrap()).contains(&"o1")
    })
    .await;
    assert!(expired.is_some(), "o1 still registered");
    let snap = assign::snapshot(&store, &no_load).await.unwrap();
    let d = assign::claim(&store, &fence, &snap, "o2", "s")
        .await
        .unwrap();
    let ClaimDecision::Grant { kind, assignment } = d else {
        panic!("{d:?}")
    };
    assert_eq!(kind, GrantKind::TakenOver { from: "o1".into() });
    assert_eq!((assignment.epoch, assignment.continuity), (2, cont(11)));

    // o1 wakes up and reports under its old epoch: refused, nothing written.
    assert_eq!(
        assign::report(&store, &fence, "s", 1, cont(12), true).await,
        Err(AssignError::StaleEpoch {
            stream: "s".into(),
            epoch: 1,
            current: 2
        })
    );
    let now = store.assignment("s".into()).await.unwrap().unwrap().value;
    assert_eq!(
        (now.origin.as_str(), now.epoch, now.state),
        ("o2", 2, AssignmentState::Live)
    );

    // The drain flag is fenced too, and survives the node.
    store
        .set_draining("o2".into(), true, fence.clone())
        .await
        .unwrap();
    assert!(store.draining().await.unwrap().contains("o2"));

    // A controller without a leader key cannot write at all.
    assert_eq!(
        store
            .put_assignment(now.clone(), None, Fence::standalone())
            .await,
        Err(StoreError::Fenced)
    );
    // Once the leader resigns, its fence fails.
    let current = store.assignment("s".into()).await.unwrap().unwrap();
    leader.resign().await;
    assert_eq!(
        store
            .put_assignment(now.clone(), Some(current.revision), fence.clone())
            .await,
        Err(StoreError::Fenced)
    );
    assert_eq!(
        store.set_draining("o2".into(), false, fence.clone()).await,
        Err(StoreError::Fenced)
    );
    assert_eq!(
        assign::report(&store, &fence, "s", 2, cont(13), false).await,
        Err(AssignError::Store(StoreError::Fenced))
    );
    store.revoke(o2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_takeover_within_lease_plus_one_second() {
    let etcd = EtcdServer::start().await;
    let a = EtcdElection::new(etcd.client(CALL).await, ELECTION, "controller-a", TTL);
    let b = EtcdElection::new(etcd.client(CALL).await, ELECTION, "controller-b", TTL);
    let cancel = CancellationToken::new();
    let mut ca = tokio::spawn({
        let cancel = cancel.clone();
        async move { a.campaign(cancel).await }
    });
    let mut cb = tokio::spawn({
        let cancel = cancel.clone();
        async move { b.campaign(cancel).await }
    });
    let observer = EtcdElection::new(etcd.client(CALL).await, ELECTION, "observer", TTL);

    // Exactly one wins; the other keeps campaigning.
    let (first, first_name, mut other) = tokio::select! {
        r = &mut ca => (r.unwrap().unwrap(), "controller-a", cb),
        r = &mut cb => (r.unwrap().unwrap(), "controller-b", ca),
        _ = sleep(Duration::from_secs(10)) => panic!("nobody elected"),
    };
    assert!(first.is_leader());
    assert_eq!(
        observer.leader().await.unwrap().as_deref(),
        Some(first_name)
    );
    assert!(
        timeout(first.ttl() * 2, &mut other).await.is_err(),
        "two leaders at once"
    );

    // The leader stops renewing (as if killed): the other leads within lease + 1 s.
    let ttl = first.ttl();
    let old_fence = first.fence().clone();
    drop(first);
    let stopped = Instant::now();
    let second = timeout(ttl + Duration::from_secs(1), &mut other)
        .await
        .expect("no takeover within lease + 1 s")
        .unwrap()
        .unwrap();
    eprintln!("takeover after {:?} (lease {ttl:?})", stopped.elapsed());
    assert!(second.is_leader());
    assert_ne!(second.fence(), &old_fence);
    assert_ne!(
        observer.leader().await.unwrap().as_deref(),
        Some(first_name)
    );

    // The old leader's fence no longer writes; the new one does.
    let store = EtcdStore::new(etcd.client(CALL).await, DEFAULT_PREFIX);
    let a = Assignment {
        stream: "s".into(),
        origin: "o1".into(),
        epoch: 1,
        continuity: Continuity::default(),
        state: AssignmentState::Live,
    };
    assert_eq!(
        store.put_assignment(a.clone(), None, old_fence).await,
        Err(StoreError::Fenced)
    );
    store
        .put_assignment(a, None, second.fence().clone())
        .await
        .unwrap();

    // Resigning hands over at once; a cancelled campaign ends.
    second.resign().await;
    assert_eq!(observer.leader().await.unwrap(), None);
    let c = EtcdElection::new(etcd.client(CALL).await, ELECTION, "controller-c", TTL);
    let cancel_c = CancellationToken::new();
    cancel_c.cancel();
    assert_eq!(
        c.campaign(cancel_c).await.unwrap_err(),
        ElectionError::Cancelled
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_within_its_lease() {
    let etcd = EtcdServer::start().await;
    let election = EtcdElection::new(
        etcd.client(Duration::from_secs(1)).await,
        ELECTION,
        "c1",
        TTL,
    );
    let leader = timeout(
        Duration::from_secs(10),
        election.campaign(CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    // Renewals work while etcd runs.
    sleep(leader.ttl() * 2).await;
    assert!(leader.is_leader());

    etcd.signal("STOP");
    let frozen = Instant::now();
    let lost = timeout(
        leader.ttl() + Duration::from_millis(300),
        leader.lost().cancelled(),
    )
    .await;
    let took = frozen.elapsed();
    etcd.signal("CONT");
    assert!(lost.is_ok(), "still leader {took:?} after etcd froze");
    assert!(!leader.is_leader());
    eprintln!(
        "stepped down {took:?} after etcd froze (lease {:?})",
        leader.ttl()
    );
}

/// What a controller does with etcd, done through `client`: a node under a lease, an
/// election won, a claim granted with the leader's fence, the assignment read back.
async fn store_claim_and_lead(client: EtcdClient) {
    let store = EtcdStore::new(client.clone(), DEFAULT_PREFIX);
    let election = EtcdElection::new(client, ELECTION, "c1", TTL);
    let leader = timeout(
        Duration::from_secs(10),
        election.campaign(CancellationToken::new()),
    )
    .await
    .expect("elected in time")
    .expect("elected");
    assert_eq!(election.leader().await.unwrap().as_deref(), Some("c1"));
    let lease = store.register_node(origin("o1"), TTL).await.unwrap();
    store.keep_alive(lease).await.unwrap();
    let snap = assign::snapshot(&store, &HashMap::new()).await.unwrap();
    let d = assign::claim(&store, leader.fence(), &snap, "o1", "s")
        .await
        .unwrap();
    assert!(matches!(d, ClaimDecision::Grant { .. }), "{d:?}");
    let a = store.assignment("s".into()).await.unwrap().expect("stored");
    assert_eq!(a.value.origin, "o1");
    store.revoke(lease).await.unwrap();
    leader.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_stores_claims_and_leads_through_etcd_with_tls_and_client_certificates() {
    let etcd = EtcdServer::start_tls().await;
    assert!(etcd.endpoints().starts_with("https://"));
    store_claim_and_lead(etcd.client(CALL).await).await;

    // The whole controller too: it leads and registers nodes through TLS etcd.
    let c = Running::start(ferrocast_controller::ControllerConfig {
        etcd: etcd.config(),
        lease_ttl: TTL,
        ..Default::default()
    })
    .await;
    let mut n = ferrocast_proto::controller::v1::node_service_client::NodeServiceClient::new(
        c.channel().await,
    );
    let role = ferrocast_proto::controller::v1::NodeRole::Origin;
    assert!(register(&mut n, node("o2", role, "eu", 0)).await > 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_etcd_refuses_the_controller_with_a_clear_error() {
    let etcd = EtcdServer::start_tls().await;
    let mut cfg = etcd.config();
    cfg.tls.as_mut().expect("tls").identity = None;
    let client = EtcdClient::connect(&cfg, CALL).await.expect("lazy connect");
    let store = EtcdStore::new(client, DEFAULT_PREFIX);
    let err = store
        .nodes()
        .await
        .expect_err("etcd let in a client without a certificate");
    eprintln!("refused: {err}");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(msg.contains("etcd: "), "{msg}");
    assert!(msg.contains("--etcd-cert"), "{msg}");
}

/// Makes `fc` (password `fc-pw`) a user allowed the `/ferrocast/` prefix, then turns
/// etcd's authentication on.
fn enable_auth(etcd: &EtcdServer) {
    let run = |args: &[&str]| {
        let out = etcd.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["user", "add", "root:root-pw"]);
    run(&["user", "grant-role", "root", "root"]);
    run(&["user", "add", "fc:fc-pw"]);
    run(&["role", "add", "fc"]);
    run(&[
        "role",
        "grant-permission",
        "fc",
        "--prefix=true",
        "readwrite",
        "/ferrocast/",
    ]);
    run(&["user", "grant-role", "fc", "fc"]);
    run(&["auth", "enable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_authenticate_and_a_stale_token_is_renewed() {
    let etcd = EtcdServer::start().await;
    enable_auth(&etcd);
    let with = |user: &str, password: &str| EtcdConfig {
        auth: Some(EtcdAuth {
            user: user.into(),
            password: password.into(),
        }),
        ..etcd.config()
    };

    // No user, or a wrong password: refused, saying why.
    let anonymous = EtcdStore::new(etcd.client(CALL).await, DEFAULT_PREFIX);
    let err = anonymous.nodes().await.unwrap_err().to_string();
    assert!(err.contains("user name is empty"), "{err}");
    let wrong = EtcdClient::connect(&with("fc", "nope"), CALL)
        .await
        .unwrap();
    let err = EtcdStore::new(wrong, DEFAULT_PREFIX)
        .nodes()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "{err}");

    let client = EtcdClient::connect(&with("fc", "fc-pw"), CALL)
        .await
        .unwrap();
    store_claim_and_lead(client.clone()).await;

    // A change of the auth rules makes etcd refuse the token as old: the client
    // authenticates again on its own.
    let out = etcd.etcdctl(&[
        "--user=root:root-pw",
        "role",
        "grant-permission",
        "fc",
        "read",
        "/elsewhere",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = EtcdStore::new(client, DEFAULT_PREFIX);
    assert!(store.assignment("s".into()).await.unwrap().is_some());
}
