//! Playback access for every node that serves viewers (edges, and origins on their HTTP
//! port), with no round trip: the rules the controller pushes (`WatchAccess`: playback
//! signing keys, stream policies, revoked tokens) and [`PlaybackAccess::gate`], the one
//! check every viewer request passes before routing. The rule lives here once; edge and
//! origin only call it.
//!
//! Fail closed:
//! - A node whose rules come from a controller ([`RulesSource::Controller`]) knows
//!   nothing until its first snapshot: every request for a stream is refused (403), and
//!   [`PlaybackAccess::ready`] is false (an edge's `/readyz` answers 503 meanwhile).
//!   Restarting a node while the controller or etcd is down never makes a protected
//!   stream public.
//! - Snapshots carry the store revision they were read at ([`merge`]). One older than the
//!   rules in force (a lagging replica, met after a reconnect) changes nothing, and only
//!   a newer one may drop a revocation the node has seen; an unversioned one (an older
//!   controller) only adds revocations. Revocations are forgotten at their expiry.
//! - A node with no controller at all ([`RulesSource::None`]: development, an edge with
//!   `--origin`) has no rules: every stream is open, as it always was.
//!
//! A token comes in the path, `/t/{token}/live/{stream}/…` (players resolve the
//! playlist's relative URIs against it, so parts and segments carry it too), or as
//! `?token=` on any request. The gate strips the `/t/{token}` prefix, so the routes, the
//! stream registry and the cache never see a token: one cached object serves every viewer.

use crate::pb;
use ferrocast_runtime::http::Response;
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::respond::error;
use ferrocast_tokens::{self as tokens, Algorithm, Purpose, Token, VerifyKey};
use http::{StatusCode, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Where a node's playback rules come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RulesSource {
    /// The controller's `WatchAccess`: every stream closed until the first snapshot.
    #[default]
    Controller,
    /// No controller, so no rules exist: every stream is open (development, an edge
    /// pulling from a fixed `--origin`).
    None,
}

/// How far a node's rules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the controller's first snapshot: every stream is closed.
    Awaiting,
    /// No controller: every stream is open.
    Open,
    /// A snapshot is in force.
    Loaded,
}

/// One stream's policy (a stream without one is open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Policy {
    token_required: bool,
    blocked: bool,
}

/// The rules in force.
#[derive(Debug)]
pub struct Rules {
    phase: Phase,
    /// The revision of the newest snapshot applied (0: none, or only unversioned ones).
    revision: u64,
    keys: HashMap<String, VerifyKey>,
    streams: HashMap<String, Policy>,
    /// Revoked tokens' signatures → their expiry (Unix seconds).
    revoked: HashMap<String, u64>,
}

impl Rules {
    fn empty(phase: Phase) -> Rules {
        Rules {
            phase,
            revision: 0,
            keys: HashMap::new(),
            streams: HashMap::new(),
            revoked: HashMap::new(),
        }
    }

    /// Rules waiting for the controller's first snapshot (everything closed).
    pub fn awaiting() -> Rules {
        Rules::empty(Phase::Awaiting)
    }

    /// Whether token `signature` is revoked.
    pub fn is_revoked(&self, signature: &str) -> bool {
        self.revoked.contains_key(signature)
    }

    /// The revision in force.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether a snapshot is in force.
    pub fn is_loaded(&self) -> bool {
        self.phase == Phase::Loaded
    }
}

/// What [`merge`] makes of a snapshot.
#[derive(Debug)]
pub enum Merged {
    /// The rules to put in force.
    Rules(Rules),
    /// Older than the rules in force (a lagging replica): nothing changes.
    Stale,
}

/// The rules after snapshot `snap` arrives on top of `cur`, at Unix time `now`:
/// - a snapshot older than `cur` (both versioned) is [`Merged::Stale`];
/// - otherwise its keys and policies replace `cur`'s, and its revocations too when it is
///   strictly newer (the controller read them later than anything `cur` holds, so a
///   revocation it lacks was removed); an equal or unversioned one keeps every
///   revocation `cur` has (never fewer than the node has seen);
/// - revocations past their expiry are dropped (the token is refused as expired anyway).
pub fn merge(cur: &Rules, snap: pb::AccessSnapshot, now: u64) -> Merged {
    let versioned = cur.phase == Phase::Loaded && cur.revision != 0 && snap.revision != 0;
    if versioned && snap.revision < cur.revision {
        return Merged::Stale;
    }
    let newer = versioned && snap.revision > cur.revision;
    let mut revoked: HashMap<String, u64> = snap
        .revoked
        .into_iter()
        .map(|r| (r.signature, r.expiry_unix))
        .collect();
    if !newer {
        for (sig, expiry) in &cur.revoked {
            revoked.entry(sig.clone()).or_insert(*expiry);
        }
    }
    revoked.retain(|_, expiry| *expiry >= now);
    Merged::Rules(Rules {
        phase: Phase::Loaded,
        revision: cur.revision.max(snap.revision),
        keys: snap.play_keys.into_iter().filter_map(decode_key).collect(),
        streams: snap
            .streams
            .into_iter()
            .map(|s| {
                let p = Policy {
                    token_required: s.token_required,
                    blocked: s.blocked,
                };
                (s.stream, p)
            })
            .collect(),
        revoked,
    })
}

/// A pushed key as nodes verify with; a key they cannot use is left out (its tokens are
/// refused as signed by an unknown key), never guessed at.
fn decode_key(k: pb::SigningKey) -> Option<(String, VerifyKey)> {
    let key = match Algorithm::parse(&k.algorithm) {
        Some(Algorithm::HmacSha256) if !k.secret.is_empty() => VerifyKey::Hmac(k.secret),
        Some(Algorithm::Ed25519) => match tokens::parse_ed25519_public_key(&k.public_key) {
            Ok(public) => VerifyKey::Ed25519(public),
            Err(why) => {
                tracing::warn!(key = %k.key_id, reason = %why, "ignoring a playback key");
                return None;
            }
        },
        _ => {
            tracing::warn!(key = %k.key_id, algorithm = %k.algorithm, "ignoring a playback key");
            return None;
        }
    };
    Some((k.key_id, key))
}

/// Labels of the playback metrics: which node part (a standalone process runs an
/// origin and an edge on one registry).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// Labels of refusals: the role and why (a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    role: &'static str,
    reason: &'static str,
}

/// The playback metrics, shared by every [`PlaybackAccess`] of a registry.
#[derive(Clone, Debug, Default)]
struct SharedMetrics {
    loaded: Family<RoleLabels, Gauge>,
    revision: Family<RoleLabels, Gauge>,
    stale: Family<RoleLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
}

impl SharedMetrics {
    fn register(registry: &Metrics) -> SharedMetrics {
        registry.shared(|r| {
            let m = SharedMetrics::default();
            r.register(
                "ferrocast_playback_rules_loaded",
                "1 once the controller's first access snapshot is in force (0: every stream refused)",
                m.loaded.clone(),
            );
            r.register(
                "ferrocast_playback_rules_revision",
                "Store revision of the access rules in force",
                m.revision.clone(),
            );
            r.register(
                "ferrocast_playback_snapshots_stale",
                "Access snapshots ignored as older than the rules in force",
                m.stale.clone(),
            );
            r.register(
                "ferrocast_playback_refused",
                "Viewer requests refused by the playback rules, by reason",
                m.refused.clone(),
            );
            m
        })
    }
}

/// A node's playback rules and the gate that applies them.
#[derive(Debug)]
pub struct PlaybackAccess {
    rules: watch::Sender<Arc<Rules>>,
    role: &'static str,
    metrics: SharedMetrics,
}

impl PlaybackAccess {
    /// Rules from `source` for a node part `role` (`edge`, `origin`), with no metrics.
    pub fn new(source: RulesSource, role: &'static str) -> PlaybackAccess {
        let phase = match source {
            RulesSource::Controller => Phase::Awaiting,
            RulesSource::None => Phase::Open,
        };
        PlaybackAccess {
            rules: watch::channel(Arc::new(Rules::empty(phase))).0,
            role,
            metrics: SharedMetrics::default(),
        }
    }

    /// [`new`](PlaybackAccess::new), counting into `registry`
    /// (`ferrocast_playback_*{role}`).
    pub fn with_metrics(source: RulesSource, role: &'static str, registry: &Metrics) -> Self {
        let mut a = PlaybackAccess::new(source, role);
        a.metrics = SharedMetrics::register(registry);
        let open = i64::from(source == RulesSource::None);
        a.metrics.loaded.get_or_create(&a.labels()).set(open);
        a
    }

    fn labels(&self) -> RoleLabels {
        RoleLabels { role: self.role }
    }

    /// Puts the controller's snapshot in force, as [`merge`] says.
    pub fn apply(&self, snap: pb::AccessSnapshot) {
        let revision = snap.revision;
        let now = tokens::unix_now();
        let mut in_force = None;
        // Merged under the watch's lock: two snapshots applied at once cannot undo each
        // other (a stale one never lands after a newer one).
        self.rules
            .send_if_modified(|cur| match merge(cur, snap, now) {
                Merged::Rules(next) => {
                    let first = cur.phase == Phase::Awaiting;
                    in_force = Some(next.revision);
                    if first {
                        tracing::info!(
                            revision = next.revision,
                            keys = next.keys.len(),
                            streams = next.streams.len(),
                            revoked = next.revoked.len(),
                            "playback access rules loaded"
                        );
                    } else {
                        tracing::debug!(
                            revision = next.revision,
                            keys = next.keys.len(),
                            streams = next.streams.len(),
                            revoked = next.revoked.len(),
                            "playback access rules updated"
                        );
                    }
                    *cur = Arc::new(next);
                    true
                }
                Merged::Stale => {
                    tracing::debug!(
                        revision,
                        in_force = cur.revision,
                        "ignoring an access snapshot older than the rules in force"
                    );
                    false
                }
            });
        let labels = self.labels();
        match in_force {
            Some(revision) => {
                self.metrics.loaded.get_or_create(&labels).set(1);
                self.metrics
                    .revision
                    .get_or_create(&labels)
                    .set(i64::try_from(revision).unwrap_or(i64::MAX));
            }
            None => {
                self.metrics.stale.get_or_create(&labels).inc();
            }
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.borrow().clone()
    }

    /// Whether the node can decide: a snapshot is in force, or there is no controller.
    pub fn ready(&self) -> bool {
        self.rules.borrow().phase != Phase::Awaiting
    }

    /// Resolves once [`ready`](PlaybackAccess::ready) holds.
    pub async fn wait_ready(&self) {
        let mut rx = self.rules.subscribe();
        // The sender lives as long as `self`: the wait ends only by readiness.
        let _ = rx.wait_for(|r| r.phase != Phase::Awaiting).await;
    }

    /// Whether `stream` plays with no token at all (what a public listing may show):
    /// never before the rules are known.
    pub fn is_public(&self, stream: &str) -> bool {
        let rules = self.rules();
        match rules.phase {
            Phase::Open => true,
            Phase::Awaiting => false,
            Phase::Loaded => {
                let p = rules.streams.get(stream).copied().unwrap_or_default();
                !p.token_required && !p.blocked
            }
        }
    }

    /// Checks a viewer request: `Ok` with the path to route (any `/t/{token}` prefix
    /// removed) and the one credential it carried, or the 400 (two credentials), 403 or
    /// 404 to answer. The credential is read here and only here
    /// ([`tokens::viewer_token`]), so the token check, the admission webhook and the
    /// caching decision all see the same one.
    pub fn gate<'a>(&self, uri: &'a Uri) -> Result<Admitted<'a>, Box<Response>> {
        let token = match tokens::viewer_token(uri.path(), uri.query().unwrap_or("")) {
            Ok(t) => t,
            Err(e) => {
                let mut r = error(StatusCode::BAD_REQUEST, &e.to_string());
                ferrocast_runtime::respond::make_private(&mut r);
                return Err(Box::new(r));
            }
        };
        let path: Cow<'a, str> = match uri.path().strip_prefix("/t/") {
            Some(rest) => match rest.split_once('/') {
                Some((_, live)) if live.starts_with("live/") => Cow::Owned(format!("/{live}")),
                _ => return Err(Box::new(error(StatusCode::NOT_FOUND, "not found"))),
            },
            None => Cow::Borrowed(uri.path()),
        };
        let Some(stream) = path
            .strip_prefix("/live/")
            .and_then(|r| r.split('/').next())
        else {
            return Ok(Admitted { path, token });
        };
        match self.decide(stream, token) {
            Ok(()) => Ok(Admitted { path, token }),
            Err((reason, why)) => {
                self.metrics
                    .refused
                    .get_or_create(&RefusalLabels {
                        role: self.role,
                        reason,
                    })
                    .inc();
                tracing::debug!(%stream, %reason, why = %why, "playback refused");
                Err(forbidden(&why))
            }
        }
    }

    /// Whether `token` (if any) may play `stream`: `Err((reason, message))` when not.
    fn decide(&self, stream: &str, token: Option<&str>) -> Result<(), (&'static str, String)> {
        let rules = self.rules();
        match rules.phase {
            Phase::Open => return Ok(()),
            Phase::Awaiting => {
                return Err((
                    "not_loaded",
                    "playback rules not loaded yet: try again shortly".into(),
                ))
            }
            Phase::Loaded => {}
        }
        let p = rules.streams.get(stream).copied().unwrap_or_default();
        if p.blocked {
            return Err(("blocked", "playback of this stream is revoked".into()));
        }
        if !p.token_required {
            return Ok(());
        }
        let Some(token) = token else {
            return Err(("no_token", "this stream needs a playback token".into()));
        };
        check(&rules, stream, token)
            .map_err(|e| ("bad_token", format!("playback token refused: {e}")))
    }
}

/// A request the gate let through.
#[derive(Debug)]
pub struct Admitted<'a> {
    /// The path to route, without any `/t/{token}` prefix.
    pub path: Cow<'a, str>,
    /// The token the request carried (path first, else `?token=`), checked when the
    /// stream needs one.
    pub token: Option<&'a str>,
}

fn check(rules: &Rules, stream: &str, token: &str) -> Result<(), tokens::TokenError> {
    let t = Token::parse(token)?;
    let key = rules
        .keys
        .get(t.key_id)
        .ok_or_else(|| tokens::TokenError::UnknownKey(t.key_id.to_owned()))?;
    t.verify_with(Purpose::Play, stream, key, tokens::unix_now())?;
    if rules.is_revoked(t.signature) {
        return Err(tokens::TokenError::Revoked);
    }
    Ok(())
}

/// A 403 that no cache keeps.
pub fn forbidden(why: &str) -> Box<Response> {
    let mut r = error(StatusCode::FORBIDDEN, why);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Box::new(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(required: bool, blocked: bool, revoked: &[&str]) -> pb::AccessSnapshot {
        pb::AccessSnapshot {
            play_keys: vec![pb::SigningKey {
                key_id: "k1".into(),
                purpose: "play".into(),
                secret: b"secret".to_vec(),
                ..Default::default()
            }],
            streams: vec![pb::StreamAccess {
                stream: "cam".into(),
                token_required: required,
                blocked,
            }],
            revoked: revoked
                .iter()
                .map(|s| pb::RevokedToken {
                    signature: (*s).into(),
                    expiry_unix: u64::MAX,
                })
                .collect(),
            revision: 0,
        }
    }

    fn at(revision: u64, s: pb::AccessSnapshot) -> pb::AccessSnapshot {
        pb::AccessSnapshot { revision, ..s }
    }

    fn status(a: &PlaybackAccess, uri: &str) -> Result<String, u16> {
        let uri: Uri = uri.parse().unwrap();
        a.gate(&uri)
            .map(|p| p.path.into_owned())
            .map_err(|r| r.status().as_u16())
    }

    #[test]
    fn before_the_first_snapshot_every_stream_is_refused_and_the_node_is_not_ready() {
        let a = PlaybackAccess::new(RulesSource::Controller, "edge");
        assert!(!a.ready());
        let exp = tokens::unix_now() + 60;
        let good = tokens::sign(Purpose::Play, "k1", "cam", exp, b"secret");
        // Unknown streams, protected ones, with or without a token: closed.
        for uri in [
            "/live/cam/index.m3u8".to_owned(),
            "/live/dog/seg-1.m4s".to_owned(),
            format!("/t/{good}/live/cam/index.m3u8"),
            format!("/live/cam/index.m3u8?token={good}"),
        ] {
            assert_eq!(status(&a, &uri), Err(403), "{uri}");
        }
        assert!(!a.is_public("dog"));
        // Probes and other paths pass (the handlers answer them).
        assert_eq!(status(&a, "/readyz").unwrap(), "/readyz");
        assert_eq!(status(&a, "/healthz").unwrap(), "/healthz");
        // The first snapshot: ready, and the rules decide.
        a.apply(snap(true, false, &[]));
        assert!(a.ready());
        assert_eq!(status(&a, "/live/cam/index.m3u8"), Err(403));
        assert!(status(&a, &format!("/t/{good}/live/cam/index.m3u8")).is_ok());
        assert!(status(&a, "/live/dog/index.m3u8").is_ok());
        assert!(a.is_public("dog") && !a.is_public("cam"));

        // Without a controller there are no rules: open and ready at once.
        let none = PlaybackAccess::new(RulesSource::None, "edge");
        assert!(none.ready());
        assert!(status(&none, "/live/cam/index.m3u8").is_ok());
        assert!(none.is_public("cam"));
    }

    #[tokio::test]
    async fn readiness_is_awaited_until_the_first_snapshot() {
        let a = Arc::new(PlaybackAccess::new(RulesSource::Controller, "origin"));
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.wait_ready().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        a.apply(snap(false, false, &[]));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("ready after the first snapshot")
            .unwrap();
    }

    #[test]
    fn revocations_survive_stale_and_unversioned_snapshots_and_drop_only_for_newer_ones() {
        let now = 1_000;
        let rules = |m: Merged| match m {
            Merged::Rules(r) => r,
            Merged::Stale => panic!("stale"),
        };
        let cur = rules(merge(
            &Rules::awaiting(),
            at(10, snap(true, false, &["a", "b"])),
            now,
        ));
        assert_eq!((cur.revision(), cur.is_loaded()), (10, true));
        assert!(cur.is_revoked("a") && cur.is_revoked("b"));

        // A lagging replica's snapshot (older) changes nothing, whatever it says.
        assert!(matches!(
            merge(&cur, at(9, snap(false, false, &[])), now),
            Merged::Stale
        ));
        // The same revision again (another replica, same records): nothing dropped.
        let same = rules(merge(&cur, at(10, snap(true, false, &["a"])), now));
        assert!(same.is_revoked("a") && same.is_revoked("b"));
        // Unversioned (an older controller): revocations only added.
        let old = rules(merge(&cur, snap(true, false, &["c"]), now));
        assert!(old.is_revoked("a") && old.is_revoked("b") && old.is_revoked("c"));
        assert_eq!(old.revision(), 10);
        // A newer snapshot speaks for every revocation: "b" was removed at 11.
        let newer = rules(merge(&old, at(11, snap(true, false, &["a"])), now));
        assert!(newer.is_revoked("a") && !newer.is_revoked("b") && !newer.is_revoked("c"));
        assert_eq!(newer.revision(), 11);
        // Expired revocations go (the token is refused as expired anyway).
        let mut s = at(12, snap(true, false, &[]));
        s.revoked.push(pb::RevokedToken {
            signature: "gone".into(),
            expiry_unix: now - 1,
        });
        s.revoked.push(pb::RevokedToken {
            signature: "live".into(),
            expiry_unix: now,
        });
        let pruned = rules(merge(&newer, s, now));
        assert!(!pruned.is_revoked("gone") && pruned.is_revoked("live"));
    }

    #[test]
    fn a_revoked_token_stays_refused_after_a_reconnect_to_a_lagging_replica() {
        let a = PlaybackAccess::new(RulesSource::Controller, "edge");
        let exp = tokens::unix_now() + 60;
        let good = tokens::sign(Purpose::Play, "k1", "cam", exp, b"secret");
        let sig = good.rsplit('.').next().unwrap().to_owned();
        let uri = format!("/t/{good}/live/cam/index.m3u8");
        a.apply(at(5, snap(true, false, &[])));
        assert!(status(&a, &uri).is_ok());
        a.apply(at(7, snap(true, false, &[&sig])));
        assert_eq!(status(&a, &uri), Err(403));
        // Reconnected to a replica still at revision 5: the revocation holds, and so
        // does the policy (an older "open" is not taken either).
        a.apply(at(5, snap(false, false, &[])));
        assert_eq!(status(&a, &uri), Err(403));
        assert_eq!(status(&a, "/live/cam/index.m3u8"), Err(403));
        assert_eq!(a.rules().revision(), 7);
    }

    #[test]
    fn tokens_are_checked_in_the_path_or_query_and_stripped() {
        let a = PlaybackAccess::new(RulesSource::Controller, "edge");
        a.apply(snap(true, false, &[]));
        let exp = tokens::unix_now() + 60;
        let good = tokens::sign(Purpose::Play, "k1", "cam", exp, b"secret");
        assert_eq!(status(&a, "/live/cam/index.m3u8"), Err(403));
        assert_eq!(
            status(&a, &format!("/t/{good}/live/cam/seg-3.m4s")).unwrap(),
            "/live/cam/seg-3.m4s"
        );
        assert_eq!(
            status(&a, &format!("/live/cam/index.m3u8?_HLS_msn=3&token={good}")).unwrap(),
            "/live/cam/index.m3u8"
        );
        let uri: Uri = format!("/t/{good}/live/cam/index.m3u8").parse().unwrap();
        assert_eq!(a.gate(&uri).unwrap().token, Some(good.as_str()));
        // Another stream's, an expired one, a publish one, an unknown key: 403.
        let other = tokens::sign(Purpose::Play, "k1", "dog", exp, b"secret");
        let old = tokens::sign(Purpose::Play, "k1", "cam", 5, b"secret");
        let publish = tokens::sign(Purpose::Publish, "k1", "cam", exp, b"secret");
        let foreign = tokens::sign(Purpose::Play, "k9", "cam", exp, b"secret");
        for t in [other, old, publish, foreign, "junk".to_owned()] {
            assert_eq!(
                status(&a, &format!("/t/{t}/live/cam/index.m3u8")),
                Err(403),
                "{t}"
            );
        }
        // Streams without a policy stay open; other paths pass.
        assert!(status(&a, "/live/dog/index.m3u8").is_ok());
        assert_eq!(status(&a, "/metrics").unwrap(), "/metrics");
        assert_eq!(status(&a, "/t/x/metrics"), Err(404));
        // Revoking the token, then the key, then the stream.
        let sig = good.rsplit('.').next().unwrap().to_owned();
        a.apply(snap(true, false, &[&sig]));
        assert_eq!(
            status(&a, &format!("/t/{good}/live/cam/index.m3u8")),
            Err(403)
        );
        let mut s = snap(true, false, &[]);
        s.play_keys.clear();
        a.apply(s);
        assert_eq!(
            status(&a, &format!("/t/{good}/live/cam/index.m3u8")),
            Err(403)
        );
        a.apply(snap(false, true, &[]));
        assert_eq!(status(&a, "/live/cam/index.m3u8"), Err(403));
    }

    #[test]
    fn ed25519_tokens_verify_with_the_pushed_public_key_only() {
        let a = PlaybackAccess::new(RulesSource::Controller, "edge");
        let (signer, _) = tokens::Ed25519Signer::generate().unwrap();
        let (other, _) = tokens::Ed25519Signer::generate().unwrap();
        let mut s = snap(true, false, &[]);
        s.play_keys.push(pb::SigningKey {
            key_id: "ed1".into(),
            purpose: "play".into(),
            algorithm: "ed25519".into(),
            public_key: signer.public_key().to_vec(),
            ..Default::default()
        });
        // A key the node cannot use is left out, not trusted.
        s.play_keys.push(pb::SigningKey {
            key_id: "ed2".into(),
            purpose: "play".into(),
            algorithm: "ed25519".into(),
            public_key: vec![0; 32],
            ..Default::default()
        });
        a.apply(s);
        assert_eq!(a.rules().keys.len(), 2, "k1 and ed1");
        let exp = tokens::unix_now() + 60;
        let good = signer.sign(Purpose::Play, "ed1", "cam", exp);
        assert_eq!(
            status(&a, &format!("/t/{good}/live/cam/index.m3u8")).unwrap(),
            "/live/cam/index.m3u8"
        );
        assert_eq!(
            status(&a, &format!("/live/cam/part-3.1.m4s?token={good}")).unwrap(),
            "/live/cam/part-3.1.m4s"
        );
        for bad in [
            other.sign(Purpose::Play, "ed1", "cam", exp),
            signer.sign(Purpose::Play, "ed1", "dog", exp),
            signer.sign(Purpose::Publish, "ed1", "cam", exp),
            signer.sign(Purpose::Play, "ed1", "cam", 5),
            signer.sign(Purpose::Play, "ed2", "cam", exp),
            // The HMAC key's id with an Ed25519 signature.
            signer.sign(Purpose::Play, "k1", "cam", exp),
        ] {
            assert_eq!(
                status(&a, &format!("/t/{bad}/live/cam/index.m3u8")),
                Err(403),
                "{bad}"
            );
        }
        // Revoking the key: the next request is refused.
        a.apply(snap(true, false, &[]));
        assert_eq!(
            status(&a, &format!("/t/{good}/live/cam/index.m3u8")),
            Err(403)
        );
    }
}
