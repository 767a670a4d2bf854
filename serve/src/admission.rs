//! Viewer admission (an edge's `--admission-*`; an origin's webhook is asked about
//! publishers only): the operator's webhook (see `ferrocast_admission`)
//! decides whether a viewer may play a stream. HLS has no sessions, so a viewer is a
//! (stream, client IP, credential) triple, where the credential is the request's query
//! without LL-HLS's own `_HLS_*` parameters, with the one playback token the edge read
//! (and checked, when the stream needs one) first as `token=…`, whether it came in the
//! path or the query (a request with two is refused before this, see
//! `ferrocast_tokens::viewer_token`). The first request of a viewer asks the
//! webhook; its decision is cached for the TTL (bounded, byte-free keys: the credential
//! is kept as its SHA-256), and concurrent first requests of the same viewer share one
//! call. Playlists, parts and segments all pass the same check, so a denied viewer gets
//! 403 on everything, while the object cache, keyed by (stream, object) alone, still
//! serves one copy to every admitted viewer.
//!
//! A call the webhook client refuses as busy (every slot, or this client's share, in
//! use) is answered 503 and not kept: under `--admission-fail open` only decisions
//! already made can let a viewer in past the limit, never a made-up credential.

use ferrocast_admission::{Action, Admission, AdmissionConfig, Decision, Source, Verdict};
use ferrocast_runtime::http::Response;
use ferrocast_runtime::metrics::Metrics;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A decision the webhook could not make (error → fail mode) is reused at most this
/// long, so a recovered webhook is asked again soon, while an outage costs each viewer
/// one timeout per this period rather than one per request.
const FALLBACK_TTL: Duration = Duration::from_secs(5);

/// A viewer: stream, client address, SHA-256 of the credential.
type Key = (Arc<str>, Option<IpAddr>, [u8; 32]);

/// How long each decision lives: the TTL, or less for a fallback.
struct Lifetime {
    ttl: Duration,
}

impl moka::Expiry<Key, Arc<Decision>> for Lifetime {
    fn expire_after_create(&self, _: &Key, d: &Arc<Decision>, _: Instant) -> Option<Duration> {
        Some(match d.source {
            Source::Webhook => self.ttl,
            Source::Fallback => self.ttl.min(FALLBACK_TTL),
            // Never cached (see `admit`); a zero lifetime should one slip in.
            Source::Busy => Duration::ZERO,
        })
    }
}

/// The webhook client and the viewers' decisions.
#[derive(Debug)]
pub struct ViewerAdmission {
    hook: Admission,
    decisions: Cache<Key, Arc<Decision>>,
}

impl ViewerAdmission {
    /// A webhook client for `cfg` (validated before) with its decision cache.
    pub fn new(cfg: AdmissionConfig, registry: &Metrics) -> Self {
        let decisions = Cache::builder()
            .max_capacity(cfg.cache_entries)
            .expire_after(Lifetime { ttl: cfg.cache_ttl })
            .build();
        Self {
            hook: Admission::new(cfg, registry),
            decisions,
        }
    }

    /// The viewer's address to ask about and cache by: from the trusted header
    /// (`--admission-client-ip-header`) when configured and present, else `peer`.
    pub fn client_ip(&self, headers: &http::HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        self.hook.config().client_ip(headers, peer)
    }

    /// `Ok` when the viewer at `client` may request `stream` with `token` (the one the
    /// edge read from the path or the query, and checked) and `query`; otherwise the
    /// 403 (or, when the webhook is busy, 503) to answer.
    pub async fn admit(
        &self,
        stream: &str,
        client: Option<IpAddr>,
        token: Option<&str>,
        query: &str,
    ) -> Result<(), Box<Response>> {
        let credential = credential(token, query);
        let key: Key = (
            Arc::from(stream),
            client,
            Sha256::digest(credential.as_bytes()).into(),
        );
        // `try_get_with` keeps only `Ok`: a busy refusal is shared by the requests
        // waiting on the same call, then forgotten.
        let decision = self
            .decisions
            .try_get_with(key, async {
                let d = self
                    .hook
                    .check(Action::Play, stream, client, &credential)
                    .await;
                match d.source {
                    Source::Busy => Err(()),
                    _ => Ok(Arc::new(d)),
                }
            })
            .await;
        let Ok(decision) = decision else {
            let mut r = ferrocast_runtime::respond::error(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "admission webhook busy; try again",
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return Err(Box::new(r));
        };
        match &decision.verdict {
            Verdict::Allow => Ok(()),
            Verdict::Deny(why) => {
                tracing::debug!(%stream, client = ?client, reason = %why, "viewer refused by admission");
                Err(crate::access::forbidden(why))
            }
        }
    }
}

/// What identifies a viewer's credential, and what the webhook gets as `query`: the
/// edge's one `token` first as `token=…`, then the query's other parameters without
/// `_HLS_*` (they change on every playlist reload) and without any `token` (the one
/// given, whether it came in the query or the path, is the one first).
pub fn credential(token: Option<&str>, query: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let first = token.map(|t| format!("token={t}"));
    parts.extend(first.as_deref());
    parts.extend(query.split('&').filter(|kv| {
        let name = kv.split('=').next().unwrap_or("");
        !kv.is_empty() && !kv.starts_with("_HLS_") && name != "token"
    }));
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_ignores_ll_hls_parameters_and_carries_a_path_token() {
        assert_eq!(credential(None, ""), "");
        assert_eq!(
            credential(None, "_HLS_msn=4&_HLS_part=1&user=ann&sig=x"),
            "user=ann&sig=x"
        );
        assert_eq!(
            credential(Some("k.1.s"), "_HLS_msn=4&user=ann"),
            "token=k.1.s&user=ann"
        );
        // The token the edge read is the one passed on, wherever it came from.
        assert_eq!(credential(Some("q"), "a=1&token=q"), "token=q&a=1");
        assert_eq!(credential(None, "token=q"), "");
    }
}
