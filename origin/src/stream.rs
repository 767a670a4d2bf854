//! The live streams an origin holds: who publishes each one, its packager, and the
//! snapshots its viewers read. A publisher holds a [`Publisher`] guard; when the guard
//! drops, the stream waits out the grace period for the publisher to come back before it
//! ends (EXT-X-ENDLIST) and, later, ages out. Stream numbering survives a restart of the
//! same key: the last continuity state of each ended key is remembered (bounded).
//!
//! A held stream remembers a hash of the credential that won it ([`CredentialHash`]):
//! while the controller cannot be reached, only a publisher presenting that same
//! credential continues the stream; anyone else is refused until the controller answers.

use crate::metrics::{OriginMetrics, ResultLabels};
use crate::package::{Continuity, PackageError, Packager, PackagerConfig, Snapshot};
use bytes::Bytes;
use ferrocast_admission::{Action, Admission, Verdict};
use ferrocast_media::flv;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The cluster's say over which origin holds a stream (the controller, through
/// [`crate::cluster`]). Without one, an origin decides alone.
pub trait Authority: Send + Sync + std::fmt::Debug + 'static {
    /// Asks for `stream` before its publisher, who presented `credential`, is accepted.
    fn claim<'a>(
        &'a self,
        stream: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<Grant, ClaimError>>;
    /// The stream ended here (its grace period is over): hand it back with `continuity`.
    fn released(&self, stream: &str, epoch: u64, continuity: Continuity);
}

/// What a publisher presented, for the cluster to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// The query of the publish URL (`key=SECRET` or `token=TOKEN`); empty: none.
    pub query: String,
    /// The publisher's address.
    pub client_ip: Option<std::net::IpAddr>,
}

impl Credential {
    /// The hash of this credential that a stream won with it keeps.
    pub fn hash(&self) -> CredentialHash {
        CredentialHash::of_query(&self.query)
    }
}

/// SHA-256 of the credential parts of a publish query: every `key=` and `token=` pair,
/// in the order sent (anything else in the query is no credential). A held stream keeps
/// this, never the secret, to know the publisher that won it when the controller cannot
/// be asked. No credential at all hashes too (an open stream goes on for anyone without
/// one, as the controller would allow).
#[derive(Clone, Copy)]
pub struct CredentialHash([u8; 32]);

impl CredentialHash {
    /// The hash of `query`'s credential parts.
    pub fn of_query(query: &str) -> Self {
        let mut h = Sha256::new();
        for (i, kv) in query
            .split('&')
            .filter(|kv| kv.starts_with("key=") || kv.starts_with("token="))
            .enumerate()
        {
            if i > 0 {
                h.update(b"&");
            }
            h.update(kv.as_bytes());
        }
        CredentialHash(h.finalize().into())
    }

    /// Whether both are the hash of the same credential (in constant time, so the time
    /// taken says nothing about how much of a guess was right).
    pub fn matches(&self, other: &CredentialHash) -> bool {
        ferrocast_tokens::constant_time_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the hash goes to logs.
        f.write_str("CredentialHash(..)")
    }
}

/// A claim the cluster granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The epoch this origin holds the stream under.
    pub epoch: u64,
    /// Where the previous holder got to (already past anything it may have used).
    pub continuity: Option<Continuity>,
}

/// How streams behave over time.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Cutting and window rules.
    pub packager: PackagerConfig,
    /// A publisher that comes back within this time continues the same stream.
    pub reconnect_grace: Duration,
    /// An ended stream stays fetchable this long before it is dropped.
    pub linger: Duration,
    /// Most streams this origin holds at once.
    pub max_streams: usize,
    /// Ended stream keys whose numbering is remembered.
    pub remembered_keys: usize,
    /// Where each stream's continuity (next media sequence number, discontinuity count)
    /// is kept across restarts of this process; `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            packager: PackagerConfig::default(),
            reconnect_grace: Duration::from_secs(10),
            linger: Duration::from_secs(30),
            max_streams: 1000,
            remembered_keys: 10_000,
            state_dir: None,
        }
    }
}

/// Why a publisher may not publish.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimError {
    /// Another publisher is live on this key.
    #[error("stream {0:?} is already being published")]
    AlreadyLive(String),
    /// The key is not `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid stream key {0:?}: expected 1 to 64 of A-Z a-z 0-9 _ -")]
    InvalidKey(String),
    /// The origin holds as many streams as it may.
    #[error("origin is at its limit of {0} streams")]
    TooManyStreams(usize),
    /// The cluster says the stream is live on another origin.
    #[error("stream {0:?} is already being published elsewhere ({1})")]
    Duplicate(String, String),
    /// The publisher's credential is missing, wrong, expired or revoked.
    #[error("publish unauthorized for stream {0:?}: {1}")]
    Unauthorized(String, String),
    /// The admission webhook said no (or could not answer, failing closed).
    #[error("publish of stream {0:?} refused: {1}")]
    Denied(String, String),
    /// The controller says this origin cannot take the stream now (draining, full, not
    /// registered).
    #[error("the cluster cannot take stream {0:?} now: {1}; try again")]
    Unavailable(String, String),
    /// The controller could not be reached (an outage): a stream held here goes on only
    /// for the credential that won it; anything else waits until the controller answers.
    #[error("the controller cannot be reached to grant stream {0:?}: {1}; try again")]
    Unreachable(String, String),
    /// The controller answered the claim with an error: final, never an outage.
    #[error("the controller refused stream {0:?}: {1}")]
    Refused(String, String),
}

/// On what grounds a stream is claimed here.
#[derive(Debug, Clone, Copy)]
enum Basis<'a> {
    /// No cluster: this origin decides alone.
    Local,
    /// The controller granted it.
    Granted(Grant),
    /// The controller cannot be reached (why): only a stream held here may go on, and
    /// only for the credential that won it.
    Outage(&'a str),
}

pub use ferrocast_media::hls::names::valid_stream_key as valid_key;

/// The query as the admission webhook sees it: a Ferrocast publish key (`key=ID.SECRET`)
/// reduced to its id, so the secret never leaves the cluster.
pub fn without_key_secrets(query: &str) -> String {
    query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some(("key", v)) => format!("key={}", v.split('.').next().unwrap_or("")),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Default)]
struct PublishState {
    /// Session id of the live publisher, if any.
    live: Option<u64>,
    /// Bumped on each claim and each release, so stale timers do nothing.
    generation: u64,
    /// The credential the stream was last granted (or locally claimed) with.
    winner: Option<CredentialHash>,
}

/// One stream.
#[derive(Debug)]
pub struct Stream {
    name: String,
    packager: Mutex<Packager>,
    publish: Mutex<PublishState>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// The cluster epoch this origin holds the stream under (0: no controller).
    epoch: AtomicU64,
    /// The cluster gave the stream to another origin: refuse its media.
    fenced: AtomicBool,
    /// Handed back to the cluster (ended here); no longer reported.
    released: AtomicBool,
}

impl Stream {
    /// The stream key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Latest snapshot, and a receiver to wait for the next one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Whether a publisher is connected now.
    pub fn has_publisher(&self) -> bool {
        lock(&self.publish).live.is_some()
    }

    /// The cluster epoch the stream is held under (0 without a controller).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Whether this origin holds the stream for the cluster now (claimed, not released,
    /// not fenced): what its heartbeats report.
    pub fn held(&self) -> bool {
        self.epoch() > 0
            && !self.released.load(Ordering::Relaxed)
            && !self.fenced.load(Ordering::Relaxed)
    }

    /// Where numbering stands.
    pub fn continuity(&self) -> Continuity {
        lock(&self.packager).continuity()
    }

    pub(crate) fn with_packager<R>(&self, f: impl FnOnce(&mut Packager) -> R) -> R {
        let mut p = lock(&self.packager);
        let before = p.version();
        let r = f(&mut p);
        if p.version() != before {
            let snap = Arc::new(p.snapshot());
            drop(p);
            self.tx.send_replace(snap);
        }
        r
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take every stream down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// All streams of one origin.
#[derive(Debug)]
pub struct Streams {
    cfg: StreamConfig,
    authority: OnceLock<Arc<dyn Authority>>,
    admission: OnceLock<Admission>,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    remembered: Mutex<(HashMap<String, Continuity>, VecDeque<String>)>,
    next_session: std::sync::atomic::AtomicU64,
    metrics: Arc<OriginMetrics>,
    /// Bumped whenever a stream is added or dropped, so viewers' subscriptions to a
    /// dropped stream end and a "no such stream" learnt before an addition is not kept.
    changes: watch::Sender<u64>,
}

impl Streams {
    /// An empty registry.
    pub fn new(cfg: StreamConfig, metrics: Arc<OriginMetrics>) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            authority: OnceLock::new(),
            admission: OnceLock::new(),
            streams: Mutex::default(),
            remembered: Mutex::default(),
            next_session: 1.into(),
            metrics,
            changes: watch::Sender::new(0),
        })
    }

    /// The configuration streams run with.
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// A stream by key.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        lock(&self.streams).get(name).cloned()
    }

    /// A receiver bumped whenever a stream is added or dropped.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// All streams, sorted by key.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<_> = lock(&self.streams).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Puts the cluster in charge of which streams this origin may take; set once,
    /// before the first publisher.
    pub fn set_authority(&self, authority: Arc<dyn Authority>) {
        if self.authority.set(authority).is_err() {
            tracing::warn!("the cluster authority was already set");
        }
    }

    /// Asks `admission` about every new publisher, before the cluster is asked (set once,
    /// before the first publisher).
    pub fn set_admission(&self, admission: Admission) {
        if self.admission.set(admission).is_err() {
            tracing::warn!("the admission webhook was already set");
        }
    }

    /// Claims `name` for a new publisher: from the cluster first when there is one, then
    /// here. While the controller is unreachable, a stream this origin already holds
    /// goes on under its epoch (nobody else can be granted it meanwhile); a new one is
    /// refused until the controller answers.
    pub async fn publish(self: &Arc<Self>, name: &str) -> Result<Publisher, ClaimError> {
        self.publish_with(name, &Credential::default()).await
    }

    /// [`publish`](Streams::publish) for a publisher who presented `credential`.
    pub async fn publish_with(
        self: &Arc<Self>,
        name: &str,
        credential: &Credential,
    ) -> Result<Publisher, ClaimError> {
        if !valid_key(name) {
            return Err(ClaimError::InvalidKey(name.chars().take(80).collect()));
        }
        if self.get(name).is_some_and(|s| s.has_publisher()) {
            return Err(ClaimError::AlreadyLive(name.to_owned()));
        }
        // The webhook before the claim: a denied publisher never changes cluster state
        // (no epoch bump, no takeover of an orphaned stream).
        if let Some(hook) = self.admission.get() {
            let query = without_key_secrets(&credential.query);
            let decision = hook
                .check(Action::Publish, name, credential.client_ip, &query)
                .await;
            if let Verdict::Deny(why) = decision.verdict {
                return Err(ClaimError::Denied(name.to_owned(), why.to_string()));
            }
        }
        let hash = credential.hash();
        let Some(authority) = self.authority.get() else {
            return self.claim_granted(name, Basis::Local, hash);
        };
        match authority.claim(name, credential).await {
            Ok(grant) => self.claim_granted(name, Basis::Granted(grant), hash),
            Err(ClaimError::Unreachable(_, why)) => {
                let r = self.claim_granted(name, Basis::Outage(&why), hash);
                let result = if r.is_ok() { "continued" } else { "refused" };
                self.metrics
                    .outage_claims
                    .get_or_create(&ResultLabels { result })
                    .inc();
                r
            }
            Err(e) => Err(e),
        }
    }

    /// Claims `name` for a new publisher without asking the cluster. A stream within its
    /// grace period (or ended but not yet aged out) goes on with a discontinuity; a live
    /// one refuses.
    pub fn claim(self: &Arc<Self>, name: &str) -> Result<Publisher, ClaimError> {
        self.claim_granted(name, Basis::Local, Credential::default().hash())
    }

    fn new_stream(&self, name: &str, continuity: Option<Continuity>, epoch: u64) -> Arc<Stream> {
        let packager = Packager::new(self.cfg.packager.clone(), continuity);
        let snap = Arc::new(packager.snapshot());
        Arc::new(Stream {
            name: name.to_owned(),
            packager: Mutex::new(packager),
            publish: Mutex::default(),
            tx: watch::channel(snap).0,
            epoch: AtomicU64::new(epoch),
            fenced: AtomicBool::new(false),
            released: AtomicBool::new(false),
        })
    }

    /// Claims `name` here on `basis` for a publisher who presented `credential`. A
    /// stream held under an older epoch (it went elsewhere and came back) starts over
    /// with the newer numbering. In an outage only a held stream goes on, and only for
    /// the credential that won it (checked under the map's lock, so the stream cannot
    /// change in between).
    fn claim_granted(
        self: &Arc<Self>,
        name: &str,
        basis: Basis<'_>,
        credential: CredentialHash,
    ) -> Result<Publisher, ClaimError> {
        if !valid_key(name) {
            return Err(ClaimError::InvalidKey(name.chars().take(80).collect()));
        }
        let grant = match basis {
            Basis::Granted(g) => Some(g),
            Basis::Local | Basis::Outage(_) => None,
        };
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let stream = {
            let mut map = lock(&self.streams);
            let existing = map.get(name).cloned();
            if let Basis::Outage(why) = basis {
                let Some(s) = existing.as_ref().filter(|s| s.held()) else {
                    return Err(ClaimError::Unreachable(name.to_owned(), why.to_owned()));
                };
                let won = lock(&s.publish)
                    .winner
                    .is_some_and(|w| w.matches(&credential));
                if !won {
                    tracing::warn!(stream = name, reason = %why, "controller unreachable; publisher refused: not the credential that won the stream");
                    return Err(ClaimError::Unreachable(
                        name.to_owned(),
                        format!("{why}; until it answers, only the credential that holds the stream continues it"),
                    ));
                }
                tracing::warn!(stream = name, reason = %why, "controller unreachable; the credential that won the stream continues it");
            }
            let stale = match (&existing, grant) {
                (Some(s), Some(g)) => s.epoch() != g.epoch || s.fenced.load(Ordering::Relaxed),
                _ => false,
            };
            match existing {
                Some(s) if !stale => {
                    if let Some(g) = grant {
                        s.epoch.store(g.epoch, Ordering::Relaxed);
                    }
                    s.released.store(false, Ordering::Relaxed);
                    s
                }
                existing => {
                    if existing.is_none() && map.len() >= self.cfg.max_streams {
                        return Err(ClaimError::TooManyStreams(self.cfg.max_streams));
                    }
                    let mut continuity = self.take_remembered(name);
                    if let Some(old) = existing {
                        if lock(&old.publish).live.is_some() {
                            return Err(ClaimError::AlreadyLive(name.to_owned()));
                        }
                        old.fenced.store(true, Ordering::Relaxed);
                        continuity = furthest(continuity, Some(old.continuity()));
                    }
                    let continuity = furthest(continuity, grant.and_then(|g| g.continuity));
                    let s = self.new_stream(name, continuity, grant.map_or(0, |g| g.epoch));
                    map.insert(name.to_owned(), s.clone());
                    self.metrics.streams.set(map.len() as i64);
                    self.changed();
                    s
                }
            }
        };
        {
            let mut st = lock(&stream.publish);
            if st.live.is_some() {
                return Err(ClaimError::AlreadyLive(name.to_owned()));
            }
            st.live = Some(session);
            st.generation += 1;
            st.winner = Some(credential);
        }
        stream.with_packager(|p| p.begin_session());
        tracing::info!(stream = name, session, "publisher claimed stream");
        Ok(Publisher {
            streams: self.clone(),
            stream,
            session,
            clock: TimestampUnwrapper::default(),
        })
    }

    fn take_remembered(&self, name: &str) -> Option<Continuity> {
        lock(&self.remembered).0.remove(name)
    }

    fn remember(&self, name: &str, c: Continuity) {
        let mut r = lock(&self.remembered);
        let (map, order) = &mut *r;
        if map.insert(name.to_owned(), c).is_none() {
            order.push_back(name.to_owned());
        }
        while order.len() > self.cfg.remembered_keys {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn release(self: &Arc<Self>, stream: &Arc<Stream>, session: u64) {
        let generation = {
            let mut st = lock(&stream.publish);
            if st.live != Some(session) {
                return;
            }
            st.live = None;
            st.generation += 1;
            st.generation
        };
        stream.with_packager(|p| p.flush());
        tracing::info!(
            stream = stream.name(),
            session,
            grace_s = self.cfg.reconnect_grace.as_secs_f64(),
            "publisher gone; waiting for it to come back"
        );
        let this = self.clone();
        let stream = stream.clone();
        // Bounded timer task: it ends after grace + linger whatever happens.
        tokio::spawn(async move {
            tokio::time::sleep(this.cfg.reconnect_grace).await;
            if lock(&stream.publish).generation != generation {
                return; // the publisher came back
            }
            stream.with_packager(|p| p.end());
            tracing::info!(stream = stream.name(), "stream ended (grace period over)");
            if let Some(a) = this.authority.get() {
                if stream.held() {
                    stream.released.store(true, Ordering::Relaxed);
                    a.released(stream.name(), stream.epoch(), stream.continuity());
                }
            }
            tokio::time::sleep(this.cfg.linger).await;
            let mut map = lock(&this.streams);
            if lock(&stream.publish).generation != generation {
                return;
            }
            if map
                .get(stream.name())
                .is_some_and(|s| Arc::ptr_eq(s, &stream))
            {
                map.remove(stream.name());
                this.metrics.streams.set(map.len() as i64);
                drop(map);
                this.changed();
                let c = lock(&stream.packager).continuity();
                this.remember(stream.name(), c);
                tracing::info!(stream = stream.name(), "stream aged out");
            }
        });
    }
}

impl Streams {
    /// The cluster gave `name` to another origin, or an operator kicked its publisher:
    /// the publisher is cut off at its next message and the stream is dropped here at
    /// once (its numbering is remembered for a return). Returns the stream's epoch and
    /// continuity when it was here.
    pub fn fence(&self, name: &str) -> Option<(u64, Continuity)> {
        let stream = {
            let mut map = lock(&self.streams);
            let s = map.remove(name)?;
            self.metrics.streams.set(map.len() as i64);
            s
        };
        self.changed();
        stream.fenced.store(true, Ordering::Relaxed);
        let c = stream.continuity();
        self.remember(name, c);
        tracing::warn!(
            stream = name,
            epoch = stream.epoch(),
            "stream fenced: dropped here"
        );
        Some((stream.epoch(), c))
    }
}

/// The continuity that goes furthest (a successor must pass every number either used).
fn furthest(a: Option<Continuity>, b: Option<Continuity>) -> Option<Continuity> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Continuity {
            next_msn: a.next_msn.max(b.next_msn),
            discontinuity: a.discontinuity.max(b.discontinuity),
            timeline_end_ms: a.timeline_end_ms.max(b.timeline_end_ms),
        }),
        (a, b) => a.or(b),
    }
}

/// The continuity file inside `state_dir`.
const STATE_FILE: &str = "continuity.json";
/// Numbers skipped after a restart: state is written once a second, and at most a few
/// segments can begin in between, so a successor starts safely beyond any name used.
const RESTART_MSN_MARGIN: u64 = 3;

impl Streams {
    /// Loads the continuity a previous run of this origin left in `state_dir`, so a
    /// publisher that comes back after a crash continues numbering. Returns how many
    /// keys were restored.
    pub fn load_state(&self) -> std::io::Result<usize> {
        let Some(dir) = &self.cfg.state_dir else {
            return Ok(0);
        };
        let text = match std::fs::read_to_string(dir.join(STATE_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: BTreeMap<String, Continuity> = serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{STATE_FILE}: {e}"),
            )
        })?;
        let n = saved.len();
        for (key, mut c) in saved {
            if valid_key(&key) {
                c.next_msn += RESTART_MSN_MARGIN;
                self.remember(&key, c);
            }
        }
        Ok(n)
    }

    /// Every stream's continuity now: live ones and remembered ended ones.
    fn state(&self) -> BTreeMap<String, Continuity> {
        let mut out: BTreeMap<String, Continuity> =
            lock(&self.remembered).0.clone().into_iter().collect();
        for s in self.list() {
            let c = lock(&s.packager).continuity();
            out.insert(s.name.clone(), c);
        }
        out
    }

    /// Writes the state file atomically (temporary file, then rename).
    fn write_state(&self, state: &BTreeMap<String, Continuity>) -> std::io::Result<()> {
        let Some(dir) = &self.cfg.state_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let body = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    }

    /// Keeps the state file current (once a second, when something changed) until
    /// `shutdown`, then writes it a last time.
    pub async fn persist(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.cfg.state_dir.is_none() {
            return;
        }
        let mut last = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            let state = self.state();
            if state != last || stop {
                let this = self.clone();
                let snapshot = state.clone();
                // File I/O off the async workers.
                match tokio::task::spawn_blocking(move || this.write_state(&snapshot)).await {
                    Ok(Ok(())) => last = state,
                    Ok(Err(error)) => tracing::warn!(%error, "cannot write the continuity state"),
                    Err(error) => tracing::warn!(%error, "state writer failed"),
                }
            }
            if stop {
                return;
            }
        }
    }
}

/// RTMP timestamps are 32-bit milliseconds that wrap after ~49.7 days.
#[derive(Debug, Default)]
struct TimestampUnwrapper {
    last: Option<u32>,
    epoch: i64,
}

impl TimestampUnwrapper {
    fn unwrap(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > u32::MAX / 2 {
                self.epoch += 1 << 32;
            } else if ts > last && ts - last > u32::MAX / 2 && self.epoch > 0 {
                // A late packet from before the wrap.
                return self.epoch - (1 << 32) + i64::from(ts);
            }
        }
        self.last = Some(ts);
        self.epoch + i64::from(ts)
    }
}

/// A live publisher's hold on a stream. Dropping it starts the grace period.
#[derive(Debug)]
pub struct Publisher {
    streams: Arc<Streams>,
    stream: Arc<Stream>,
    session: u64,
    clock: TimestampUnwrapper,
}

impl Publisher {
    /// The stream being published.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// A video message body (an FLV video tag body) with its RTMP timestamp.
    pub fn video(&mut self, timestamp: u32, body: &Bytes) -> Result<(), IngestError> {
        self.check_fenced()?;
        let tag = flv::parse_video(body)?;
        let ts = self.clock.unwrap(timestamp);
        self.streams.metrics.ingest_bytes.inc_by(body.len() as u64);
        Ok(self
            .stream
            .with_packager(|p| p.push_video(ts, tag, now_ms()))?)
    }

    /// An audio message body (an FLV audio tag body) with its RTMP timestamp.
    pub fn audio(&mut self, timestamp: u32, body: &Bytes) -> Result<(), IngestError> {
        self.check_fenced()?;
        let tag = flv::parse_audio(body)?;
        let ts = self.clock.unwrap(timestamp);
        self.streams.metrics.ingest_bytes.inc_by(body.len() as u64);
        Ok(self
            .stream
            .with_packager(|p| p.push_audio(ts, tag, now_ms()))?)
    }
}

impl Publisher {
    fn check_fenced(&self) -> Result<(), IngestError> {
        if self.stream.fenced.load(Ordering::Relaxed) {
            return Err(IngestError::Fenced(self.stream.name.clone()));
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.streams.release(&self.stream, self.session);
    }
}

/// Why a publisher's media was refused; each ends its session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The FLV tag body is malformed.
    #[error("malformed media tag: {0}")]
    Flv(#[from] flv::FlvError),
    /// The packager refused it.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The cluster gave the stream to another origin, or an operator kicked it.
    #[error("stream {0:?} was taken away from this origin (fenced or kicked)")]
    Fenced(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(valid_key("demo"));
        assert!(valid_key("a-b_C9"));
        assert!(valid_key(&"x".repeat(64)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"x".repeat(65)));
        assert!(!valid_key("a/b"));
        assert!(!valid_key("a b"));
        assert!(!valid_key("ä"));
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary() {
        let mut c = TimestampUnwrapper::default();
        assert_eq!(c.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(c.unwrap(5), (1i64 << 32) + 5);
        assert_eq!(c.unwrap(u32::MAX - 2), i64::from(u32::MAX - 2));
        assert_eq!(c.unwrap(20), (1i64 << 32) + 20);
    }

    #[tokio::test]
    async fn continuity_survives_a_restart_through_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("ferrocast-state-{}", std::process::id()));
        let cfg = StreamConfig {
            state_dir: Some(dir.clone()),
            ..StreamConfig::default()
        };
        let before = Streams::new(cfg.clone(), Arc::new(OriginMetrics::new()));
        let saved = Continuity {
            next_msn: 7,
            discontinuity: 2,
            timeline_end_ms: 5000,
        };
        before.remember("k", saved);
        let live = before.claim("live").expect("claim");
        before.write_state(&before.state()).expect("write");
        drop(live);

        let after = Streams::new(cfg, Arc::new(OriginMetrics::new()));
        assert_eq!(
            after.load_state().expect("load"),
            2,
            "the ended key and the live one"
        );
        let p = after.claim("k").expect("claim after restart");
        let snap = p.stream().snapshot();
        assert_eq!(
            snap.playlist.next_msn,
            7 + RESTART_MSN_MARGIN,
            "numbering goes on past any name used"
        );
        assert_eq!(snap.playlist.discontinuity_sequence, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_damaged_state_file_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("ferrocast-state-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(STATE_FILE), b"{not json").expect("write");
        let cfg = StreamConfig {
            state_dir: Some(dir.clone()),
            ..StreamConfig::default()
        };
        let streams = Streams::new(cfg, Arc::new(OriginMetrics::new()));
        assert!(streams.load_state().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_webhook_never_sees_a_publish_key_secret() {
        assert_eq!(
            without_key_secrets("key=ab12.SECRETbytes&user=7"),
            "key=ab12&user=7"
        );
        assert_eq!(without_key_secrets("token=k.1.sig"), "token=k.1.sig");
        assert_eq!(without_key_secrets(""), "");
    }

    /// A controller link that answers each claim as the test says.
    #[derive(Debug, Default)]
    struct Scripted {
        next: Mutex<Option<Result<Grant, ClaimError>>>,
    }

    impl Scripted {
        fn answer(&self, r: Result<Grant, ClaimError>) {
            *lock(&self.next) = Some(r);
        }
    }

    impl Authority for Scripted {
        fn claim<'a>(
            &'a self,
            _stream: &'a str,
            _credential: &'a Credential,
        ) -> BoxFuture<'a, Result<Grant, ClaimError>> {
            let r = lock(&self.next).clone().expect("an answer was scripted");
            Box::pin(async move { r })
        }

        fn released(&self, _stream: &str, _epoch: u64, _continuity: Continuity) {}
    }

    fn cred(query: &str) -> Credential {
        Credential {
            query: query.to_owned(),
            client_ip: None,
        }
    }

    fn clustered() -> (Arc<Streams>, Arc<Scripted>) {
        let streams = Streams::new(StreamConfig::default(), Arc::new(OriginMetrics::new()));
        let authority = Arc::new(Scripted::default());
        streams.set_authority(authority.clone());
        (streams, authority)
    }

    const GRANT: Grant = Grant {
        epoch: 7,
        continuity: None,
    };

    #[tokio::test]
    async fn in_an_outage_a_held_stream_goes_on_only_for_the_credential_that_won_it() {
        let (streams, ctl) = clustered();
        ctl.answer(Ok(GRANT));
        let first = streams
            .publish_with("cam", &cred("key=k1.SECRET&x=1"))
            .await
            .expect("granted");
        drop(first); // the encoder dropped; the stream is held through the grace period

        let down = || ClaimError::Unreachable("cam".into(), "connection refused".into());
        ctl.answer(Err(down()));
        for who in ["", "key=k2.OTHER", "token=forged", "key=k1.SECRE", "x=1"] {
            let refused = streams.publish_with("cam", &cred(who)).await.unwrap_err();
            assert!(
                matches!(&refused, ClaimError::Unreachable(_, why) if why.contains("only the credential that holds the stream")),
                "{who:?}: {refused:?}"
            );
        }
        // Other parameters are no credential: the same key with another `x` continues.
        let again = streams
            .publish_with("cam", &cred("x=2&key=k1.SECRET"))
            .await
            .expect("the winning credential continues in an outage");
        assert_eq!(again.stream().epoch(), 7);
        assert_eq!(
            streams
                .metrics
                .outage_claims
                .get_or_create(&ResultLabels { result: "refused" })
                .get(),
            5
        );
    }

    #[tokio::test]
    async fn an_outage_never_gives_a_stream_that_is_not_held_here() {
        let (streams, ctl) = clustered();
        ctl.answer(Err(ClaimError::Unreachable("new".into(), "timeout".into())));
        assert!(matches!(
            streams.publish_with("new", &cred("")).await,
            Err(ClaimError::Unreachable(..))
        ));
        assert!(streams.get("new").is_none());
    }

    #[tokio::test]
    async fn an_error_the_controller_answers_is_final_even_for_the_winning_credential() {
        let (streams, ctl) = clustered();
        ctl.answer(Ok(GRANT));
        drop(
            streams
                .publish_with("cam", &cred("key=k1.S"))
                .await
                .expect("granted"),
        );
        ctl.answer(Err(ClaimError::Refused(
            "cam".into(),
            "controller refused: Internal: boom".into(),
        )));
        for who in ["", "key=k1.S"] {
            assert!(matches!(
                streams.publish_with("cam", &cred(who)).await,
                Err(ClaimError::Refused(..))
            ));
        }
    }

    #[test]
    fn the_credential_hash_covers_key_and_token_parts_only() {
        let h = CredentialHash::of_query;
        assert!(h("key=a.b").matches(&h("user=1&key=a.b&t=2")));
        assert!(h("").matches(&h("user=1")));
        assert!(!h("key=a.b").matches(&h("key=a.c")));
        assert!(!h("key=a.b").matches(&h("")));
        assert!(!h("key=a.b&token=t").matches(&h("token=t&key=a.b")));
        assert!(!h("key=a.b").matches(&h("token=a.b")));
        assert_eq!(format!("{:?}", h("key=a.b")), "CredentialHash(..)");
    }

    #[tokio::test]
    async fn second_publisher_is_refused_and_first_unaffected() {
        let streams = Streams::new(StreamConfig::default(), Arc::new(OriginMetrics::new()));
        let first = streams.claim("live1").expect("first claim");
        assert_eq!(
            streams.claim("live1").unwrap_err(),
            ClaimError::AlreadyLive("live1".into())
        );
        assert!(first.stream().has_publisher());
        assert!(matches!(
            streams.claim("bad key"),
            Err(ClaimError::InvalidKey(_))
        ));
        drop(first);
        // Within the grace period the key can be claimed again.
        let again = streams.claim("live1").expect("reclaim within grace");
        assert!(again.stream().has_publisher());
    }
}
