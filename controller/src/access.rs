//! Access control kept by the controller: publish keys (per stream, stored as SHA-256 of
//! the secret, shown once), signing keys of publish and playback tokens (HMAC secrets the
//! controller makes, or Ed25519 public keys operators register), per-stream playback
//! policies and revoked tokens, all as access records in the [`Store`].
//!
//! Every replica keeps an [`AccessView`] of them, re-read every [`REFRESH`] (and at once
//! after the leader's own writes), and pushes the playback part to edges and origins
//! through `WatchAccess` ([`Access::subscribe`]): a revocation reaches every node within
//! `REFRESH` plus a push. Publishers are checked by the leader on `ClaimStream`
//! ([`Access::check_publish`]), so publish keys never leave the store.
//!
//! Fail closed: a replica that has not read the records yet has no view at all (not an
//! empty one, which would say "every stream open, nothing revoked"), and `WatchAccess`
//! waits for one ([`Access::loaded`]). Each view carries the store revision it was read
//! at, in one consistent read, so nodes can tell a lagging replica's rules from newer
//! ones (see `ferrocast_agent::access`).

use crate::store::{Fence, Revision, Store, StoreError};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_runtime::access::{self as tokens, Algorithm, Purpose, Token, VerifyKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often every replica re-reads the access records.
pub const REFRESH: Duration = Duration::from_millis(500);

const PUBLISH_KEYS: &str = "publish-keys";
const SIGNING_KEYS: &str = "signing-keys";
const STREAMS: &str = "streams";
const REVOKED: &str = "revoked";

/// Whether publishers need a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishAuth {
    /// Anyone may publish any stream (development; `standalone`'s default).
    #[default]
    Open,
    /// A publisher needs a publish key of its stream or a signed publish token.
    Closed,
}

impl std::str::FromStr for PublishAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(PublishAuth::Open),
            "closed" => Ok(PublishAuth::Closed),
            _ => Err(format!("{s:?}: expected open or closed")),
        }
    }
}

/// A publish key as stored: the secret only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PublishKeyRecord {
    stream: String,
    sha256: String,
    created_unix: u64,
}

/// A signing key as stored: HMAC needs the secret itself; Ed25519 only a public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SigningKeyRecord {
    purpose: String,
    /// `hmac-sha256` or `ed25519` (records written before Ed25519 have none: HMAC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    algorithm: String,
    /// HMAC: base64url of the secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    secret: String,
    /// Ed25519: base64url of the 32-byte public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    public_key: String,
    created_unix: u64,
    /// What verifies its tokens, decoded on load (`None` only before that).
    #[serde(skip)]
    key: Option<VerifyKey>,
}

impl SigningKeyRecord {
    /// Decodes the key material; `None` when the record is unusable.
    fn decode(&self) -> Option<VerifyKey> {
        match Algorithm::parse(&self.algorithm)? {
            Algorithm::HmacSha256 => tokens::base64_decode(&self.secret)
                .filter(|raw| !raw.is_empty())
                .map(VerifyKey::Hmac),
            Algorithm::Ed25519 => tokens::base64_decode(&self.public_key)
                .and_then(|raw| tokens::parse_ed25519_public_key(&raw).ok())
                .map(VerifyKey::Ed25519),
        }
    }

    fn algorithm(&self) -> Algorithm {
        self.key
            .as_ref()
            .map_or(Algorithm::HmacSha256, VerifyKey::algorithm)
    }

    /// As the API shows it; `with_secret` only for edges and the creating operator.
    fn to_pb(&self, id: &str, with_secret: bool) -> pb::SigningKey {
        let (secret, public_key) = match &self.key {
            Some(VerifyKey::Hmac(s)) if with_secret => (s.clone(), Vec::new()),
            Some(VerifyKey::Ed25519(k)) => (Vec::new(), k.to_vec()),
            _ => (Vec::new(), Vec::new()),
        };
        pb::SigningKey {
            key_id: id.to_owned(),
            purpose: self.purpose.clone(),
            secret,
            created_unix: self.created_unix,
            algorithm: self.algorithm().as_str().to_owned(),
            public_key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StreamRecord {
    token_required: bool,
    blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RevokedRecord {
    expiry_unix: u64,
}

/// Every access record, as one replica last read them.
#[derive(Debug, Default)]
pub struct AccessView {
    /// The store revision of the read that first saw these records (`None`: nothing read
    /// yet, the replica knows nothing). Kept while the records stay the same, so nodes
    /// are not sent the same rules again after every unrelated write to the store.
    revision: Option<Revision>,
    publish_keys: BTreeMap<String, PublishKeyRecord>,
    signing_keys: BTreeMap<String, SigningKeyRecord>,
    streams: BTreeMap<String, StreamRecord>,
    revoked: BTreeMap<String, RevokedRecord>,
}

/// The records of `kind` out of one read of them all.
fn of_kind(all: &[(String, String, Vec<u8>)], kind: &str) -> Vec<(String, Vec<u8>)> {
    all.iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(_, name, v)| (name.clone(), v.clone()))
        .collect()
}

fn decode_all<T: serde::de::DeserializeOwned>(
    kind: &str,
    records: Vec<(String, Vec<u8>)>,
) -> BTreeMap<String, T> {
    records
        .into_iter()
        .filter_map(|(name, v)| match serde_json::from_slice(&v) {
            Ok(r) => Some((name, r)),
            Err(error) => {
                tracing::warn!(kind, %name, %error, "skipping a corrupt access record");
                None
            }
        })
        .collect()
}

impl AccessView {
    /// Reads every record from `store`, in one read; expired revocations are left out.
    pub async fn load(store: &dyn Store) -> Result<AccessView, StoreError> {
        let now = tokens::unix_now();
        let all = store.all_records().await?;
        let records = &all.records;
        let mut signing_keys: BTreeMap<String, SigningKeyRecord> =
            decode_all(SIGNING_KEYS, of_kind(records, SIGNING_KEYS));
        signing_keys.retain(|id, k| match k.decode() {
            Some(key) => {
                k.key = Some(key);
                true
            }
            None => {
                tracing::warn!(key = %id, "skipping a signing key with a bad secret or public key");
                false
            }
        });
        let mut revoked: BTreeMap<String, RevokedRecord> =
            decode_all(REVOKED, of_kind(records, REVOKED));
        revoked.retain(|_, r| r.expiry_unix >= now);
        Ok(AccessView {
            revision: Some(all.revision),
            publish_keys: decode_all(PUBLISH_KEYS, of_kind(records, PUBLISH_KEYS)),
            signing_keys,
            streams: decode_all(STREAMS, of_kind(records, STREAMS)),
            revoked,
        })
    }

    /// Whether this view was read from the store (a replica's first view is not).
    pub fn is_loaded(&self) -> bool {
        self.revision.is_some()
    }

    /// The store revision the records were read at (`None` before the first read).
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// Whether `other` holds the same records (whatever revision each was read at).
    fn same_records(&self, other: &AccessView) -> bool {
        self.publish_keys == other.publish_keys
            && self.signing_keys == other.signing_keys
            && self.streams == other.streams
            && self.revoked == other.revoked
    }

    /// What edges and origins need: play keys with secrets or public keys, policies,
    /// revocations, and the revision they were read at.
    pub fn edge_snapshot(&self) -> pb::AccessSnapshot {
        pb::AccessSnapshot {
            play_keys: self
                .signing_keys
                .iter()
                .filter(|(_, k)| k.purpose == Purpose::Play.as_str())
                .map(|(id, k)| k.to_pb(id, true))
                .collect(),
            streams: self.streams_pb(),
            revoked: self
                .revoked
                .iter()
                .map(|(sig, r)| pb::RevokedToken {
                    signature: sig.clone(),
                    expiry_unix: r.expiry_unix,
                })
                .collect(),
            // etcd's revisions start at 1; the in-memory store's at 0 (nothing written),
            // sent as 1 so that a loaded view is never mistaken for an unversioned one.
            revision: self
                .revision
                .map_or(0, |r| u64::try_from(r).unwrap_or(0).max(1)),
        }
    }

    fn streams_pb(&self) -> Vec<pb::StreamAccess> {
        self.streams
            .iter()
            .map(|(s, r)| pb::StreamAccess {
                stream: s.clone(),
                token_required: r.token_required,
                blocked: r.blocked,
            })
            .collect()
    }

    /// Whether `credential` (the RTMP URL's query) lets its holder publish `stream`.
    pub fn check_publish(&self, stream: &str, credential: &str, now: u64) -> Result<(), String> {
        if let Some(secret) = tokens::query_param(credential, "key") {
            let Some((id, _)) = secret.split_once('.') else {
                return Err("malformed publish key".into());
            };
            let Some(k) = self.publish_keys.get(id) else {
                return Err(format!("unknown or revoked publish key {id:?}"));
            };
            if k.stream != stream {
                return Err(format!("publish key {id:?} is not for this stream"));
            }
            let hash = tokens::sha256_hex(secret.as_bytes());
            if !bool::from(hash.as_bytes().ct_eq(k.sha256.as_bytes())) {
                return Err(format!("wrong secret for publish key {id:?}"));
            }
            return Ok(());
        }
        if let Some(token) = tokens::query_param(credential, "token") {
            let t = Token::parse(token).map_err(|e| format!("publish token: {e}"))?;
            let Some(key) = self
                .signing_keys
                .get(t.key_id)
                .filter(|k| k.purpose == Purpose::Publish.as_str())
                .and_then(|k| k.key.as_ref())
            else {
                return Err(format!(
                    "publish token: unknown or revoked signing key {:?}",
                    t.key_id
                ));
            };
            t.verify_with(Purpose::Publish, stream, key, now)
                .map_err(|e| format!("publish token: {e}"))?;
            if self.revoked.contains_key(t.signature) {
                return Err("publish token: revoked".into());
            }
            return Ok(());
        }
        Err(
            "no publish credential: publish to rtmp://HOST/live/STREAM?key=SECRET or ?token=TOKEN"
                .into(),
        )
    }
}

/// A replica's access state and its publication to watchers.
#[derive(Debug)]
pub struct Access {
    mode: PublishAuth,
    view: watch::Sender<Arc<AccessView>>,
}

impl Access {
    /// Not loaded (no view at all) until the first [`refresh`](Access::refresh).
    pub fn new(mode: PublishAuth) -> Self {
        Access {
            mode,
            view: watch::channel(Arc::new(AccessView::default())).0,
        }
    }

    /// Whether publishers need a credential.
    pub fn mode(&self) -> PublishAuth {
        self.mode
    }

    /// The current view and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AccessView>> {
        self.view.subscribe()
    }

    /// Waits up to `limit` for the first good read of the records: true when this
    /// replica has a view to serve.
    pub async fn loaded(&self, limit: Duration) -> bool {
        let mut rx = self.view.subscribe();
        let loaded = tokio::time::timeout(limit, rx.wait_for(|v| v.is_loaded()))
            .await
            .is_ok_and(|r| r.is_ok());
        loaded
    }

    /// Re-reads the records; publishes a new view when anything changed (the first
    /// good read always is one).
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let next = AccessView::load(store).await?;
        self.view.send_if_modified(|cur| {
            // Newer records carry the revision that first saw them; the same records
            // keep theirs (a later read may only have seen unrelated writes).
            let changed = !cur.is_loaded() || !cur.same_records(&next);
            if changed {
                *cur = Arc::new(next);
            }
            changed
        });
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until `cancel`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            match self.refresh(store.as_ref()).await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot read access records; keeping the last ones");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// Whether `credential` lets its holder publish `stream` (always, when open). A
    /// refusal is checked again on a fresh read, so a key created a moment ago works.
    pub async fn check_publish(
        &self,
        store: &dyn Store,
        stream: &str,
        credential: &str,
    ) -> Result<(), String> {
        if self.mode == PublishAuth::Open {
            return Ok(());
        }
        let now = tokens::unix_now();
        let first = self.view.borrow().check_publish(stream, credential, now);
        if first.is_ok() {
            return first;
        }
        if self.refresh(store).await.is_err() {
            return first;
        }
        let second = self.view.borrow().check_publish(stream, credential, now);
        second
    }
}

/// Why an access call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A field is malformed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No such key.
    #[error("{0}")]
    NotFound(String),
    /// A key with that id exists already.
    #[error("{0}")]
    Exists(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error("no randomness: {0}")]
    Random(String),
}

fn random(n: usize) -> Result<Vec<u8>, AccessError> {
    tokens::random_bytes(n).map_err(|e| AccessError::Random(e.to_string()))
}

fn new_id() -> Result<String, AccessError> {
    tokens::random_id(12).map_err(|e| AccessError::Random(e.to_string()))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn valid_stream(stream: &str) -> Result<(), AccessError> {
    if ferrocast_names::valid_stream_key(stream) {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!("invalid stream {stream:?}")))
    }
}

fn purpose(s: &str) -> Result<Purpose, AccessError> {
    Purpose::parse(s)
        .ok_or_else(|| AccessError::Invalid(format!("purpose {s:?}: expected publish or play")))
}

/// The leader's writes of access records; each refreshes the view at once.
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The leader's fence.
    pub fence: &'a Fence,
    /// The replica's access state.
    pub access: &'a Access,
}

impl Admin<'_> {
    async fn set(
        &self,
        kind: &'static str,
        name: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), AccessError> {
        self.store
            .set_record(kind, name.to_owned(), value, self.fence.clone())
            .await?;
        // The leader's own write is visible at once; others see it within REFRESH.
        let _ = self.access.refresh(self.store).await;
        Ok(())
    }

    async fn write_publish_key(
        &self,
        id: String,
        stream: String,
    ) -> Result<pb::PublishKeySecret, AccessError> {
        let secret = format!("{id}.{}", tokens::base64url(&random(24)?));
        let rec = PublishKeyRecord {
            stream: stream.clone(),
            sha256: tokens::sha256_hex(secret.as_bytes()),
            created_unix: tokens::unix_now(),
        };
        self.set(PUBLISH_KEYS, &id, Some(json(&rec))).await?;
        Ok(pb::PublishKeySecret {
            key: Some(pb::PublishKey {
                key_id: id,
                stream,
                created_unix: rec.created_unix,
            }),
            secret,
        })
    }

    /// A new publish key of `stream`.
    pub async fn create_publish_key(
        &self,
        stream: String,
    ) -> Result<pb::PublishKeySecret, AccessError> {
        valid_stream(&stream)?;
        self.write_publish_key(new_id()?, stream).await
    }

    /// A new secret for key `id`.
    pub async fn rotate_publish_key(&self, id: &str) -> Result<pb::PublishKeySecret, AccessError> {
        let view = AccessView::load(self.store).await?;
        let Some(k) = view.publish_keys.get(id) else {
            return Err(AccessError::NotFound(format!("no publish key {id:?}")));
        };
        self.write_publish_key(id.to_owned(), k.stream.clone())
            .await
    }

    /// Deletes publish key `id`.
    pub async fn revoke_publish_key(&self, id: &str) -> Result<(), AccessError> {
        let view = AccessView::load(self.store).await?;
        if !view.publish_keys.contains_key(id) {
            return Err(AccessError::NotFound(format!("no publish key {id:?}")));
        }
        self.set(PUBLISH_KEYS, id, None).await
    }

    /// A new signing key: an HMAC secret made here (the reply carries it, once), or the
    /// Ed25519 public key the caller registers.
    pub async fn create_signing_key(
        &self,
        r: pb::CreateSigningKeyRequest,
    ) -> Result<pb::SigningKey, AccessError> {
        let p = purpose(&r.purpose)?;
        let algorithm = Algorithm::parse(&r.algorithm).ok_or_else(|| {
            AccessError::Invalid(format!(
                "algorithm {:?}: expected hmac-sha256 or ed25519",
                r.algorithm
            ))
        })?;
        let key = match algorithm {
            Algorithm::HmacSha256 if !r.public_key.is_empty() => return Err(AccessError::Invalid(
                "an HMAC key takes no public key (its secret is made here); say algorithm ed25519"
                    .into(),
            )),
            Algorithm::HmacSha256 => VerifyKey::Hmac(random(32)?),
            Algorithm::Ed25519 if r.public_key.is_empty() => {
                return Err(AccessError::Invalid(
                    "an Ed25519 key needs its public key".into(),
                ))
            }
            Algorithm::Ed25519 => VerifyKey::Ed25519(
                tokens::parse_ed25519_public_key(&r.public_key)
                    .map_err(|e| AccessError::Invalid(format!("public key: {e}")))?,
            ),
        };
        let id = if r.key_id.is_empty() {
            new_id()?
        } else if tokens::valid_key_id(&r.key_id) {
            r.key_id
        } else {
            return Err(AccessError::Invalid(format!(
                "key id {:?}: 1 to 32 of a-z 0-9 -",
                r.key_id
            )));
        };
        let view = AccessView::load(self.store).await?;
        if view.signing_keys.contains_key(&id) {
            return Err(AccessError::Exists(format!(
                "signing key {id:?} exists already (revoke it first, or pick another id)"
            )));
        }
        let mut rec = SigningKeyRecord {
            purpose: p.as_str().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            secret: String::new(),
            public_key: String::new(),
            created_unix: tokens::unix_now(),
            key: None,
        };
        match &key {
            VerifyKey::Hmac(s) => rec.secret = tokens::base64url(s),
            VerifyKey::Ed25519(k) => rec.public_key = tokens::base64url(k),
        }
        self.set(SIGNING_KEYS, &id, Some(json(&rec))).await?;
        rec.key = Some(key);
        Ok(rec.to_pb(&id, true))
    }

    /// Deletes signing key `id`: its tokens stop working.
    pub async fn revoke_signing_key(&self, id: &str) -> Result<(), AccessError> {
        let view = AccessView::load(self.store).await?;
        if !view.signing_keys.contains_key(id) {
            return Err(AccessError::NotFound(format!("no signing key {id:?}")));
        }
        self.set(SIGNING_KEYS, id, None).await
    }

    /// Signs a token.
    pub async fn issue_token(
        &self,
        r: pb::IssueTokenRequest,
    ) -> Result<pb::IssueTokenReply, AccessError> {
        let p = purpose(&r.purpose)?;
        valid_stream(&r.stream)?;
        let view = AccessView::load(self.store).await?;
        let key = if r.key_id.is_empty() {
            view.signing_keys
                .iter()
                .filter(|(_, k)| k.purpose == p.as_str() && k.algorithm() == Algorithm::HmacSha256)
                .max_by_key(|(_, k)| k.created_unix)
        } else {
            view.signing_keys
                .get_key_value(&r.key_id)
                .filter(|(_, k)| k.purpose == p.as_str())
        };
        let Some((id, k)) = key else {
            return Err(AccessError::NotFound(format!(
                "no {} signing key{}: create one first",
                p.as_str(),
                if r.key_id.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", r.key_id)
                }
            )));
        };
        let Some(VerifyKey::Hmac(secret)) = &k.key else {
            return Err(AccessError::Invalid(format!(
                "signing key {id:?} is an Ed25519 public key: the controller cannot sign with it; sign with its private key (ferrocast ctl token sign --ed25519-key FILE)"
            )));
        };
        let ttl = if r.ttl_seconds == 0 {
            3600
        } else {
            r.ttl_seconds
        };
        let expiry = tokens::unix_now().saturating_add(ttl);
        Ok(pb::IssueTokenReply {
            token: tokens::sign(p, id, &r.stream, expiry, secret),
            expiry_unix: expiry,
        })
    }

    /// Refuses `token` until its expiry (expired revocations are dropped meanwhile).
    pub async fn revoke_token(&self, token: &str) -> Result<(), AccessError> {
        let t = Token::parse(token).map_err(|e| AccessError::Invalid(e.to_string()))?;
        let now = tokens::unix_now();
        let view = AccessView::load(self.store).await?;
        for (sig, r) in &view.revoked {
            if r.expiry_unix < now {
                self.store
                    .set_record(REVOKED, sig.clone(), None, self.fence.clone())
                    .await?;
            }
        }
        let rec = RevokedRecord {
            expiry_unix: t.expiry,
        };
        self.set(REVOKED, t.signature, Some(json(&rec))).await
    }

    /// Sets a stream's playback policy (the default policy is deleted, not stored).
    pub async fn set_stream(&self, s: pb::StreamAccess) -> Result<pb::StreamAccess, AccessError> {
        valid_stream(&s.stream)?;
        let value = (s.token_required || s.blocked).then(|| {
            json(&StreamRecord {
                token_required: s.token_required,
                blocked: s.blocked,
            })
        });
        self.set(STREAMS, &s.stream, value).await?;
        Ok(s)
    }
}

/// Reads for the operator API (any replica).
pub async fn list_publish_keys(
    store: &dyn Store,
    stream: &str,
) -> Result<Vec<pb::PublishKey>, AccessError> {
    let view = AccessView::load(store).await?;
    Ok(view
        .publish_keys
        .iter()
        .filter(|(_, k)| stream.is_empty() || k.stream == stream)
        .map(|(id, k)| pb::PublishKey {
            key_id: id.clone(),
            stream: k.stream.clone(),
            created_unix: k.created_unix,
        })
        .collect())
}

/// Signing keys without their secrets (Ed25519 public keys included).
pub async fn list_signing_keys(store: &dyn Store) -> Result<Vec<pb::SigningKey>, AccessError> {
    let view = AccessView::load(store).await?;
    Ok(view
        .signing_keys
        .iter()
        .map(|(id, k)| k.to_pb(id, false))
        .collect())
}

/// Streams with a playback policy other than the default.
pub async fn list_streams(store: &dyn Store) -> Result<Vec<pb::StreamAccess>, AccessError> {
    Ok(AccessView::load(store).await?.streams_pb())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn publish_keys_and_tokens_are_checked_and_revocable() {
        let store = MemoryStore::new();
        let access = Access::new(PublishAuth::Closed);
        let fence = Fence::standalone();
        let admin = Admin {
            store: &store,
            fence: &fence,
            access: &access,
        };
        let check = |s: &str, c: &str| {
            let a = &access;
            let st = &store;
            let (s, c) = (s.to_owned(), c.to_owned());
            async move { a.check_publish(st, &s, &c).await }
        };
        let err = check("cam", "").await.unwrap_err();
        assert!(err.contains("no publish credential"), "{err}");

        let k = admin.create_publish_key("cam".into()).await.unwrap();
        let id = k.key.as_ref().unwrap().key_id.clone();
        assert!(k.secret.starts_with(&format!("{id}.")));
        check("cam", &format!("key={}", k.secret)).await.unwrap();
        // The store holds only the hash.
        let raw = store.records(PUBLISH_KEYS).await.unwrap();
        assert!(!String::from_utf8_lossy(&raw[0].1).contains(&k.secret));
        let err = check("other", &format!("key={}", k.secret))
            .await
            .unwrap_err();
        assert!(err.contains("not for this stream"), "{err}");
        let err = check("cam", &format!("key={id}.wrong")).await.unwrap_err();
        assert!(err.contains("wrong secret"), "{err}");

        let rotated = admin.rotate_publish_key(&id).await.unwrap();
        assert_eq!(rotated.key.unwrap().key_id, id);
        assert!(check("cam", &format!("key={}", k.secret)).await.is_err());
        check("cam", &format!("key={}", rotated.secret))
            .await
            .unwrap();
        admin.revoke_publish_key(&id).await.unwrap();
        assert!(check("cam", &format!("key={}", rotated.secret))
            .await
            .unwrap_err()
            .contains("unknown or revoked"));

        // Signed publish tokens.
        let play = admin.create_signing_key(hmac("play")).await.unwrap();
        let err = admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "publish".into(),
                stream: "cam".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, AccessError::NotFound(_)));
        admin.create_signing_key(hmac("publish")).await.unwrap();
        let t = admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "publish".into(),
                stream: "cam".into(),
                ttl_seconds: 60,
                ..Default::default()
            })
            .await
            .unwrap();
        check("cam", &format!("token={}", t.token)).await.unwrap();
        assert!(check("cam2", &format!("token={}", t.token)).await.is_err());
        // A playback token does not publish.
        let p = admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "play".into(),
                stream: "cam".into(),
                key_id: play.key_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(check("cam", &format!("token={}", p.token)).await.is_err());
        // An expired one fails.
        let expired = tokens::sign(
            Purpose::Publish,
            &play.key_id,
            "cam",
            tokens::unix_now() - 10,
            &play.secret,
        );
        assert!(check("cam", &format!("token={expired}")).await.is_err());
        admin.revoke_token(&t.token).await.unwrap();
        assert!(check("cam", &format!("token={}", t.token))
            .await
            .unwrap_err()
            .contains("revoked"));

        // The edges' snapshot: play keys with secrets, no publish keys.
        admin
            .set_stream(pb::StreamAccess {
                stream: "cam".into(),
                token_required: true,
                blocked: false,
            })
            .await
            .unwrap();
        let snap = access.subscribe().borrow().edge_snapshot();
        assert_eq!(snap.play_keys.len(), 1);
        assert_eq!(snap.play_keys[0].secret, play.secret);
        assert_eq!(snap.streams.len(), 1);
        assert_eq!(snap.revoked.len(), 1);

        // Open mode lets anything through.
        let open = Access::new(PublishAuth::Open);
        open.check_publish(&store, "cam", "").await.unwrap();
    }

    #[tokio::test]
    async fn ed25519_public_keys_are_registered_checked_and_pushed_without_secrets() {
        let store = MemoryStore::new();
        let access = Access::new(PublishAuth::Closed);
        let fence = Fence::standalone();
        let admin = Admin {
            store: &store,
            fence: &fence,
            access: &access,
        };
        let (signer, private_pem) = tokens::Ed25519Signer::generate().unwrap();
        let ed = |purpose: &str, id: &str, key: &[u8]| pb::CreateSigningKeyRequest {
            purpose: purpose.into(),
            algorithm: "ed25519".into(),
            public_key: key.to_vec(),
            key_id: id.into(),
        };
        // Malformed keys are refused at registration, and nothing is stored.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        for (bad, why) in [
            (&b"not a key"[..], "public key"),
            (&signer.public_key()[..31], "32 bytes"),
            (private_pem.as_bytes(), "private key"),
            (&weak[..], "weak"),
            (&b""[..], "needs its public key"),
        ] {
            let err = admin
                .create_signing_key(ed("play", "", bad))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, AccessError::Invalid(m) if m.contains(why)),
                "{why}: {err}"
            );
        }
        let err = admin
            .create_signing_key(ed("play", "Bad_Id", &signer.public_key()))
            .await
            .unwrap_err();
        assert!(matches!(err, AccessError::Invalid(_)), "{err}");
        let err = admin
            .create_signing_key(pb::CreateSigningKeyRequest {
                public_key: signer.public_key().to_vec(),
                ..hmac("play")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, AccessError::Invalid(_)), "{err}");
        assert!(store.records(SIGNING_KEYS).await.unwrap().is_empty());

        // Registered from PEM under the operator's id; a second key of that id is refused.
        let pem = signer.public_key_pem();
        let k = admin
            .create_signing_key(ed("play", "backend-1", pem.as_bytes()))
            .await
            .unwrap();
        assert_eq!(
            (k.key_id.as_str(), k.algorithm.as_str()),
            ("backend-1", "ed25519")
        );
        assert_eq!(k.public_key, signer.public_key());
        assert!(k.secret.is_empty());
        let err = admin
            .create_signing_key(ed("play", "backend-1", &signer.public_key()))
            .await
            .unwrap_err();
        assert!(matches!(err, AccessError::Exists(_)), "{err}");

        // The controller cannot sign with it; the newest HMAC key signs by default.
        let err = admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "play".into(),
                stream: "cam".into(),
                key_id: "backend-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AccessError::Invalid(m) if m.contains("Ed25519")),
            "{err}"
        );
        assert!(matches!(
            admin
                .issue_token(pb::IssueTokenRequest {
                    purpose: "play".into(),
                    stream: "cam".into(),
                    ..Default::default()
                })
                .await,
            Err(AccessError::NotFound(_))
        ));

        // Edges get the public key and the algorithm, listings too.
        let snap = access.subscribe().borrow().edge_snapshot();
        assert_eq!(snap.play_keys.len(), 1);
        assert_eq!(snap.play_keys[0].algorithm, "ed25519");
        assert_eq!(snap.play_keys[0].public_key, signer.public_key());
        let listed = list_signing_keys(&store).await.unwrap();
        assert_eq!(listed[0].public_key, signer.public_key());

        // Ed25519 publish tokens: right key ok, another key's, stream's or purpose's not.
        admin
            .create_signing_key(ed("publish", "pub-1", &signer.public_key()))
            .await
            .unwrap();
        let exp = tokens::unix_now() + 60;
        let good = signer.sign(Purpose::Publish, "pub-1", "cam", exp);
        access
            .check_publish(&store, "cam", &format!("token={good}"))
            .await
            .unwrap();
        let (other, _) = tokens::Ed25519Signer::generate().unwrap();
        for bad in [
            other.sign(Purpose::Publish, "pub-1", "cam", exp),
            signer.sign(Purpose::Publish, "pub-1", "dog", exp),
            signer.sign(Purpose::Play, "pub-1", "cam", exp),
            signer.sign(Purpose::Play, "backend-1", "cam", exp),
            signer.sign(Purpose::Publish, "pub-1", "cam", 10),
        ] {
            assert!(
                access
                    .check_publish(&store, "cam", &format!("token={bad}"))
                    .await
                    .is_err(),
                "{bad}"
            );
        }
        admin.revoke_signing_key("pub-1").await.unwrap();
        let err = access
            .check_publish(&store, "cam", &format!("token={good}"))
            .await
            .unwrap_err();
        assert!(err.contains("unknown or revoked"), "{err}");
    }

    #[tokio::test]
    async fn signing_key_records_from_before_ed25519_still_load() {
        let store = MemoryStore::new();
        let fence = Fence::standalone();
        let old = br#"{"purpose":"play","secret":"c2VjcmV0","created_unix":5}"#;
        store
            .set_record(SIGNING_KEYS, "old".into(), Some(old.to_vec()), fence)
            .await
            .unwrap();
        let view = AccessView::load(&store).await.unwrap();
        let snap = view.edge_snapshot();
        assert_eq!(snap.play_keys[0].secret, b"secret");
        assert_eq!(snap.play_keys[0].algorithm, "hmac-sha256");
    }

    #[tokio::test]
    async fn a_replica_has_no_view_before_its_first_read_and_versions_each_change() {
        let store = MemoryStore::new();
        let fence = Fence::standalone();
        let access = Access::new(PublishAuth::Closed);
        // Not an empty view: no view at all, and WatchAccess would wait for one.
        assert!(!access.subscribe().borrow().is_loaded());
        assert!(!access.loaded(Duration::from_millis(50)).await);
        access.refresh(&store).await.unwrap();
        assert!(access.loaded(Duration::from_millis(50)).await);
        let first = access.subscribe().borrow().edge_snapshot();
        assert!(first.revision >= 1, "a loaded view is versioned");

        let admin = Admin {
            store: &store,
            fence: &fence,
            access: &access,
        };
        let key = admin.create_signing_key(hmac("play")).await.unwrap();
        let t = admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "play".into(),
                stream: "cam".into(),
                ttl_seconds: 60,
                key_id: key.key_id.clone(),
            })
            .await
            .unwrap();
        admin.revoke_token(&t.token).await.unwrap();
        let revoked = access.subscribe().borrow().edge_snapshot();
        assert!(revoked.revision > first.revision);
        assert_eq!(revoked.revoked.len(), 1);

        // Writes elsewhere in the store move its revision but not the view's: nodes are
        // not sent the same rules again.
        let mut rx = access.subscribe();
        rx.mark_unchanged();
        store
            .share_loads(b"loads".to_vec(), fence.clone())
            .await
            .unwrap();
        let before = store.revision().await.unwrap();
        access.refresh(&store).await.unwrap();
        assert!(!rx.has_changed().unwrap());
        assert_eq!(
            access.subscribe().borrow().edge_snapshot().revision,
            revoked.revision
        );
        assert!(before > i64::try_from(revoked.revision).unwrap());
    }

    fn hmac(purpose: &str) -> pb::CreateSigningKeyRequest {
        pb::CreateSigningKeyRequest {
            purpose: purpose.into(),
            ..Default::default()
        }
    }
}
