//! The object cache: init segments, parts and segments keyed by (stream, object),
//! byte-weighted in moka with a configured capacity and a time-to-idle so objects of
//! streams nobody watches age out. Misses go through `try_get_with`, so however many
//! viewers ask for the same missing object at once, one upstream fetch runs and the
//! others wait for it. Errors are never cached here (unknown streams are cached
//! negatively one level up, in `state`).

use crate::metrics::ServeMetrics;
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use ferrocast_media::hls::names::Object;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cache key: the stream and the object within it.
pub type Key = (Arc<str>, Object);

/// What an entry costs besides its bytes (key, moka bookkeeping), so a flood of tiny
/// objects cannot hold more than the capacity says.
const ENTRY_OVERHEAD: usize = 160;

/// Where a lookup was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already in memory.
    Hit,
    /// This caller fetched it upstream.
    Miss,
    /// Another caller's fetch was already running; this one waited for it.
    Coalesced,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

/// The byte-weighted object cache.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    inner: Cache<Key, Bytes>,
    metrics: Arc<ServeMetrics>,
}

impl ObjectCache {
    /// A cache holding at most `capacity` bytes (plus a small per-entry overhead);
    /// entries untouched for `idle` are dropped.
    pub fn new(capacity: u64, idle: Duration, metrics: Arc<ServeMetrics>) -> Self {
        let inner = Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &Key, v: &Bytes| weight(k, v))
            .time_to_idle(idle)
            // A live edge wants the newest parts; TinyLFU's admission filter would
            // reject a fresh part (frequency 0) once the cache is full.
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self { inner, metrics }
    }

    /// Stores a pushed object.
    pub async fn insert(&self, stream: &Arc<str>, object: Object, bytes: Bytes) {
        self.inner.insert((stream.clone(), object), bytes).await;
        self.metrics
            .cache_size_bytes
            .set(i64::try_from(self.inner.weighted_size()).unwrap_or(i64::MAX));
    }

    /// The object if it is in memory, without counting a lookup.
    pub async fn peek(&self, stream: &Arc<str>, object: Object) -> Option<Bytes> {
        self.inner.get(&(stream.clone(), object)).await
    }

    /// The object from memory, or fetched upstream once however many callers ask at
    /// the same moment. Errors reach every waiting caller and are not cached.
    pub async fn get_or_fetch(
        &self,
        stream: &Arc<str>,
        object: Object,
        upstream: &dyn Upstream,
    ) -> Result<(Bytes, Source), UpstreamError> {
        let key = (stream.clone(), object);
        if let Some(b) = self.inner.get(&key).await {
            self.metrics.cache(Source::Hit.label());
            return Ok((b, Source::Hit));
        }
        let ran = AtomicBool::new(false);
        let res = self
            .inner
            .try_get_with(key, async {
                ran.store(true, Ordering::Relaxed);
                let r = upstream.fetch(stream, object).await;
                self.metrics.fetch(match &r {
                    Ok(_) => "ok",
                    Err(UpstreamError::NoSuchObject) => "no_such_object",
                    Err(UpstreamError::NotFound) => "not_found",
                    Err(_) => "unavailable",
                });
                r
            })
            .await;
        let source = if ran.load(Ordering::Relaxed) {
            Source::Miss
        } else {
            Source::Coalesced
        };
        self.metrics.cache(source.label());
        if source == Source::Miss {
            self.metrics
                .cache_size_bytes
                .set(i64::try_from(self.inner.weighted_size()).unwrap_or(i64::MAX));
        }
        res.map(|b| (b, source)).map_err(|e| (*e).clone())
    }

    /// Bytes held (moka's weighted size; exact after [`Self::run_pending_tasks`]).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Applies pending evictions now (moka does this lazily on later operations).
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
        self.metrics
            .cache_size_bytes
            .set(i64::try_from(self.inner.weighted_size()).unwrap_or(i64::MAX));
    }
}

fn weight(k: &Key, v: &Bytes) -> u32 {
    u32::try_from(v.len() + k.0.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}
