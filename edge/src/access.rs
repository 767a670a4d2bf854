//! Playback access at the edge, with no round trip: the playback signing keys (HMAC
//! secrets and Ed25519 public keys), stream policies and revoked tokens the controller
//! pushes (`WatchAccess`), and [`gate`], which every viewer request passes before
//! routing.
//!
//! A token comes in the path, `/t/{token}/live/{stream}/…` (players resolve the
//! playlist's relative URIs against it, so parts and segments carry it too), or as
//! `?token=` on any request. The gate strips the `/t/{token}` prefix, so the routes, the
//! stream registry and the cache never see a token: one cached object serves every viewer.

use ferrocast_agent::pb;
use ferrocast_runtime::access::{self as tokens, Algorithm, Purpose, Token, VerifyKey};
use ferrocast_runtime::http::Response;
use ferrocast_runtime::respond::error;
use http::{StatusCode, Uri};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// The rules in force, as the controller last pushed them.
#[derive(Debug, Default)]
struct Rules {
    keys: HashMap<String, VerifyKey>,
    /// Stream → (token required, blocked).
    streams: HashMap<String, (bool, bool)>,
    revoked: HashSet<String>,
}

/// The edge's playback rules (empty, i.e. everything open, until the controller speaks).
#[derive(Debug, Default)]
pub struct EdgeAccess {
    rules: RwLock<Arc<Rules>>,
}

impl EdgeAccess {
    /// Replaces the rules with the controller's snapshot.
    pub fn apply(&self, snap: pb::AccessSnapshot) {
        let rules = Rules {
            keys: snap.play_keys.into_iter().filter_map(decode_key).collect(),
            streams: snap
                .streams
                .into_iter()
                .map(|s| (s.stream, (s.token_required, s.blocked)))
                .collect(),
            revoked: snap.revoked.into_iter().map(|r| r.signature).collect(),
        };
        tracing::debug!(
            keys = rules.keys.len(),
            streams = rules.streams.len(),
            revoked = rules.revoked.len(),
            "playback access rules updated"
        );
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A pushed key as the edge verifies with; a key it cannot use is left out (its tokens
/// are refused as signed by an unknown key), never guessed at.
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

/// Checks a viewer request: `Ok` with the path to route (any `/t/{token}` prefix
/// removed), or the 403 (or 404) to answer.
pub fn gate<'a>(access: &EdgeAccess, uri: &'a Uri) -> Result<Cow<'a, str>, Box<Response>> {
    let path = uri.path();
    let query_token = uri.query().and_then(|q| tokens::query_param(q, "token"));
    let (path, token): (Cow<'a, str>, Option<&str>) = match path.strip_prefix("/t/") {
        Some(rest) => match rest.split_once('/') {
            Some((t, live)) if live.starts_with("live/") => {
                (Cow::Owned(format!("/{live}")), Some(t))
            }
            _ => return Err(Box::new(error(StatusCode::NOT_FOUND, "not found"))),
        },
        None => (Cow::Borrowed(path), query_token),
    };
    let Some(stream) = path
        .strip_prefix("/live/")
        .and_then(|r| r.split('/').next())
    else {
        return Ok(path);
    };
    let rules = access.rules();
    let (required, blocked) = rules.streams.get(stream).copied().unwrap_or_default();
    if blocked {
        return Err(forbidden("playback of this stream is revoked"));
    }
    if !required {
        return Ok(path);
    }
    let Some(token) = token else {
        return Err(forbidden("this stream needs a playback token"));
    };
    let why = match check(&rules, stream, token) {
        Ok(()) => return Ok(path),
        Err(e) => e,
    };
    tracing::debug!(%stream, reason = %why, "playback refused");
    Err(forbidden(&format!("playback token refused: {why}")))
}

fn check(rules: &Rules, stream: &str, token: &str) -> Result<(), tokens::TokenError> {
    let t = Token::parse(token)?;
    let key = rules
        .keys
        .get(t.key_id)
        .ok_or_else(|| tokens::TokenError::UnknownKey(t.key_id.to_owned()))?;
    t.verify_with(Purpose::Play, stream, key, tokens::unix_now())?;
    if rules.revoked.contains(t.signature) {
        return Err(tokens::TokenError::Revoked);
    }
    Ok(())
}

/// A 403 that no cache keeps.
pub(crate) fn forbidden(why: &str) -> Box<Response> {
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
        }
    }

    fn status(a: &EdgeAccess, uri: &str) -> Result<String, u16> {
        let uri: Uri = uri.parse().unwrap();
        gate(a, &uri)
            .map(|p| p.into_owned())
            .map_err(|r| r.status().as_u16())
    }

    #[test]
    fn tokens_are_checked_in_the_path_or_query_and_stripped() {
        let a = EdgeAccess::default();
        // Nothing pushed yet: open.
        assert_eq!(
            status(&a, "/live/cam/index.m3u8").unwrap(),
            "/live/cam/index.m3u8"
        );
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
        let a = EdgeAccess::default();
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
        // A key the edge cannot use is left out, not trusted.
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
