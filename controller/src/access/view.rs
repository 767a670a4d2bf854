//! The access records as stored (publish keys as SHA-256 of the secret, signing keys,
//! stream policies, revocations) and [`AccessView`], one consistent read of them all:
//! what it lets publish ([`AccessView::check_publish`]) and what edges and origins are
//! sent of it ([`AccessView::edge_snapshot`]).

use crate::store::{Revision, Store, StoreError};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tokens::{self as tokens, Algorithm, Purpose, Token, VerifyKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of access record, as the store names them.
pub(super) const PUBLISH_KEYS: &str = "publish-keys";
pub(super) const SIGNING_KEYS: &str = "signing-keys";
pub(super) const STREAMS: &str = "streams";
pub(super) const REVOKED: &str = "revoked";

/// A publish key as stored: the secret only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PublishKeyRecord {
    pub(super) stream: String,
    pub(super) sha256: String,
    pub(super) created_unix: u64,
}

/// A signing key as stored: HMAC needs the secret itself; Ed25519 only a public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SigningKeyRecord {
    pub(super) purpose: String,
    /// `hmac-sha256` or `ed25519` (records written before Ed25519 have none: HMAC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) algorithm: String,
    /// HMAC: base64url of the secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) secret: String,
    /// Ed25519: base64url of the 32-byte public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) public_key: String,
    pub(super) created_unix: u64,
    /// What verifies its tokens, decoded on load (`None` only before that).
    #[serde(skip)]
    pub(super) key: Option<VerifyKey>,
}

impl SigningKeyRecord {
    /// Decodes the key material; `None` when the record is unusable.
    pub(super) fn decode(&self) -> Option<VerifyKey> {
        match Algorithm::parse(&self.algorithm)? {
            Algorithm::HmacSha256 => tokens::base64_decode(&self.secret)
                .filter(|raw| !raw.is_empty())
                .map(VerifyKey::Hmac),
            Algorithm::Ed25519 => tokens::base64_decode(&self.public_key)
                .and_then(|raw| tokens::parse_ed25519_public_key(&raw).ok())
                .map(VerifyKey::Ed25519),
        }
    }

    pub(super) fn algorithm(&self) -> Algorithm {
        self.key
            .as_ref()
            .map_or(Algorithm::HmacSha256, VerifyKey::algorithm)
    }

    /// As the API shows it; `with_secret` only for edges and the creating operator.
    pub(super) fn to_pb(&self, id: &str, with_secret: bool) -> pb::SigningKey {
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
pub(super) struct StreamRecord {
    pub(super) token_required: bool,
    pub(super) blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RevokedRecord {
    pub(super) expiry_unix: u64,
}

/// Every access record, as one replica last read them.
#[derive(Debug, Default)]
pub struct AccessView {
    /// The store revision of the read that first saw these records (`None`: nothing read
    /// yet, the replica knows nothing). Kept while the records stay the same, so nodes
    /// are not sent the same rules again after every unrelated write to the store.
    revision: Option<Revision>,
    pub(super) publish_keys: BTreeMap<String, PublishKeyRecord>,
    pub(super) signing_keys: BTreeMap<String, SigningKeyRecord>,
    pub(super) streams: BTreeMap<String, StreamRecord>,
    pub(super) revoked: BTreeMap<String, RevokedRecord>,
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
    pub(super) fn same_records(&self, other: &AccessView) -> bool {
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

    pub(super) fn streams_pb(&self) -> Vec<pb::StreamAccess> {
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
            if !tokens::constant_time_eq(hash.as_bytes(), k.sha256.as_bytes()) {
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
