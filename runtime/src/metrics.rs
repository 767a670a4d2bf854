//! The Prometheus registry every node exposes on `/metrics`, and the one place that
//! decides which exposition format a scrape gets: OpenMetrics 1.0 when the client's
//! `Accept` names it (Prometheus itself does), the Prometheus text format 0.0.4 otherwise
//! (`curl`, `promtool check metrics`, older scrapers), as the Prometheus exposition
//! formats document: <https://prometheus.io/docs/instrumenting/exposition_formats/>.

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

    /// The registry in `format`.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Prometheus => openmetrics_to_prometheus(&self.render()),
        }
    }

    /// OpenMetrics text (what `prometheus-client` writes).
    pub fn render(&self) -> String {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics when it is accepted with a
    /// non-zero quality, the Prometheus text format otherwise (no header, `*/*`,
    /// `text/plain`), since that is what every Prometheus-compatible tool reads.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or("");
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !params.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    })
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4, the mapping Prometheus applies
/// when it ingests OpenMetrics: a counter family `x` (samples `x_total`) and an info
/// family `x` (samples `x_info`) are named like their samples, info becomes a gauge and
/// unknown becomes untyped; `# UNIT`, `# EOF` and exemplars have no 0.0.4 form and go;
/// HELP text unescapes `\"` (0.0.4 escapes only backslash and newline there).
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut renamed: HashMap<&str, (String, &str)> = HashMap::new();
    for line in text.lines() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
        else {
            continue;
        };
        let entry = match kind.trim() {
            "counter" => (format!("{name}_total"), "counter"),
            "info" => (format!("{name}_info"), "gauge"),
            "unknown" => (name.to_string(), "untyped"),
            other => (name.to_string(), other),
        };
        renamed.insert(name, entry);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
            if let Some((new, kind)) = renamed.get(name) {
                out.push_str(&format!("# TYPE {new} {kind}\n"));
                continue;
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = renamed.get(name).map_or(name, |(new, _)| new.as_str());
            out.push_str(&format!("# HELP {name} {}\n", help.replace("\\\"", "\"")));
            continue;
        } else if !line.starts_with('#') {
            // An exemplar follows the value after " # ".
            let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
            out.push_str(sample);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::info::Info;

    #[test]
    fn openmetrics_only_for_a_client_that_asks_for_it() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        // What Prometheus 2.x/3.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                          application/openmetrics-text;version=0.0.1;q=0.4,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn prometheus_text_names_counter_and_info_families_like_their_samples() {
        let m = Metrics::new();
        let requests = Counter::<u64>::default();
        let open = Gauge::<i64>::default();
        m.register(|r| {
            r.register(
                "ferrocast_x_requests",
                "Requests \"served\"",
                requests.clone(),
            );
            r.register("ferrocast_x_open", "Open things", open.clone());
            r.register(
                "ferrocast_x_build",
                "Build",
                Info::new(vec![("version", "1")]),
            );
        });
        requests.inc_by(3);
        open.set(2);
        let om = m.render_as(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE ferrocast_x_requests counter"), "{om}");
        let text = m.render_as(Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE ferrocast_x_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP ferrocast_x_requests_total Requests \"served\".\n"),
            "{text}"
        );
        assert!(text.contains("\nferrocast_x_requests_total 3\n"), "{text}");
        assert!(
            text.contains("# TYPE ferrocast_x_open gauge\nferrocast_x_open 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferrocast_x_build_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_x_build_info{version=\"1\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn exemplars_and_units_have_no_prometheus_text_form() {
        let om = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                  a_seconds_bucket{le=\"1.0\"} 1 # {trace_id=\"x\"} 0.5\n# EOF\n";
        let text = openmetrics_to_prometheus(om);
        assert_eq!(
            text,
            "# HELP a_seconds A.\n# TYPE a_seconds histogram\na_seconds_bucket{le=\"1.0\"} 1\n"
        );
    }
}
