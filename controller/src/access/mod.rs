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
//!
//! `view` holds the records and their rules, `admin` the leader's writes and the
//! operator reads; this module the replica's [`Access`] state and its refresh loop.

mod admin;
#[cfg(test)]
mod tests;
mod view;

pub use admin::{list_publish_keys, list_signing_keys, list_streams, Admin};
pub use view::AccessView;

use crate::store::{Store, StoreError};
use ferrocast_tokens as tokens;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often every replica re-reads the access records.
pub const REFRESH: Duration = Duration::from_millis(500);

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
