//! The Prometheus registry every node exposes on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Mutex;

/// A registry shared by a node's components; rendered on each scrape.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metric sets registered once and shared by every component that asks (a
    /// standalone process runs an origin and an edge on one registry).
    shared: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets a component register its metrics (called at start-up, never on a hot path).
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut reg);
    }

    /// The metric set of type `T`, registered by `init` on the first call and shared
    /// by later callers (metric handles are cheap clones of the same counters).
    pub fn shared<T: Clone + Send + 'static>(&self, init: impl FnOnce(&mut Registry) -> T) -> T {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = shared
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
        {
            return t.clone();
        }
        let t = {
            let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            init(&mut reg)
        };
        shared.insert(TypeId::of::<T>(), Box::new(t.clone()));
        t
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
