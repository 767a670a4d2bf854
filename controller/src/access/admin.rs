//! The leader's writes of access records ([`Admin`]: create, rotate and revoke keys,
//! sign and revoke tokens, set stream policies), each refreshing the view at once, and
//! the operator API's reads of them ([`list_publish_keys`], [`list_signing_keys`],
//! [`list_streams`]), which any replica answers from a fresh read.

use super::view::{
    AccessView, PublishKeyRecord, RevokedRecord, SigningKeyRecord, StreamRecord, PUBLISH_KEYS,
    REVOKED, SIGNING_KEYS, STREAMS,
};
use super::{Access, AccessError};
use crate::store::{Fence, Store};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tokens::{self as tokens, Algorithm, Purpose, Token, VerifyKey};
use serde::Serialize;

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
