//! Logging and tracing set-up: `tracing` to stderr as text or JSON, filtered by
//! `RUST_LOG` (default `info`), and — only when an OTLP endpoint is configured — spans
//! exported as OpenTelemetry traces over OTLP/HTTP (protobuf).
//!
//! The exporter follows the standard OpenTelemetry environment variables, so the Helm
//! chart and operators need nothing Ferrocast-specific:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (the base URL; `/v1/traces` is appended) or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL): export is on when either is set;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` / `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`: only
//!   `http/protobuf` (the default) is supported; anything else turns export off with a
//!   warning rather than sending what a collector would not understand;
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` (and the `_TRACES_` forms);
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` (service name `ferrocast` otherwise);
//! - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` (batching);
//! - `OTEL_SDK_DISABLED=true` turns export off.
//!
//! Spans are batched on the SDK's own thread; the HTTP requests run on a one-thread
//! Tokio runtime owned by the returned [`Telemetry`], so exporting never competes with the
//! node's runtime and works before that runtime exists. Dropping [`Telemetry`] flushes
//! what is still batched (bounded by the SDK's shutdown timeout).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Keeps trace export alive; dropping it flushes the spans still batched and stops the
/// exporter. Hold it in `main` for the life of the process.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace export at once"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    export_runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are being exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The subscriber is gone from this point of view; stderr is all that is left.
            if let Err(e) = provider.shutdown() {
                eprintln!("ferrocast: flushing traces failed: {e}");
            }
        }
        if let Some(rt) = self.export_runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Whether text logs carry ANSI colour codes: only on a terminal, unless `NO_COLOR` is set.
fn colour_wanted(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

/// Installs the global subscriber (logs, plus OTLP trace export when configured by the
/// environment). Calling it twice is harmless (the second call loses and exports
/// nothing), which keeps tests that start several nodes in one process simple.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (text, json) = match format {
        LogFormat::Text => (
            // Colour codes only for a person at a terminal: redirected to a file or a log
            // collector they are noise (and `NO_COLOR`, https://no-color.org, turns them off).
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour_wanted(
                        std::io::IsTerminal::is_terminal(&std::io::stderr()),
                        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
                    ))
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let (mut telemetry, problem) = match otlp_from_env() {
        Ok(Some(t)) => (t, None),
        Ok(None) => (Telemetry::default(), None),
        Err(problem) => (Telemetry::default(), Some(problem)),
    };
    let otel = telemetry
        .provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ferrocast")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // Someone else's subscriber won: our exporter would never see a span.
        telemetry = Telemetry::default();
    }
    if let Some(problem) = problem {
        tracing::warn!(%problem, "OpenTelemetry trace export is off");
    } else if telemetry.exporting() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    telemetry
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The exporter the `OTEL_*` environment asks for: `None` when no endpoint is set.
fn otlp_from_env() -> Result<Option<Telemetry>, String> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_none()
    {
        return Ok(None);
    }
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".to_owned());
    if protocol.trim() != "http/protobuf" {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?} is not supported (use http/protobuf)"
        ));
    }
    let timeout = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the export runtime: {e}"))?;
    let client = ExportClient {
        handle: runtime.handle().clone(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        timeout,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map_err(|e| format!("building the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name("ferrocast");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(Telemetry {
        provider: Some(provider),
        export_runtime: Some(runtime),
    }))
}

/// OTLP/HTTP requests on hyper: each request runs on the export runtime, so the SDK's
/// batch thread (which is not a Tokio thread) can simply await its outcome.
#[derive(Debug, Clone)]
struct ExportClient {
    handle: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'a>>;

impl HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(&'a self, request: Request<Bytes>) -> SendFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.handle.spawn(async move {
            let response = tokio::time::timeout(timeout, client.request(request.map(Full::new)))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))??;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(timeout, body.collect())
                .await
                .map_err(|_| format!("no full answer within {timeout:?}"))??
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        Box::pin(async move { task.await? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse_and_unknown_ones_are_named() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "xml".parse::<LogFormat>().expect_err("unknown");
        assert!(err.contains("xml"), "{err}");
    }

    #[test]
    fn text_logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, false));
        assert!(
            !colour_wanted(false, false),
            "a file or a pipe gets plain text"
        );
        assert!(!colour_wanted(true, true), "NO_COLOR wins over a terminal");
    }
}
