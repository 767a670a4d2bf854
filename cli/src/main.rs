//! The `ferrocast` binary: a thin `main` over the node libraries.

mod config;
mod demo;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrocast_runtime::metrics::Metrics;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Ferrocast: RTMP in, Low-Latency HLS out, on a cluster of origins and edges.
#[derive(Debug, Parser)]
#[command(name = "ferrocast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an origin: RTMP ingest (1935), LL-HLS over HTTP (8081).
    Origin(config::NodeArgs),
    /// Run every node in one process with embedded defaults (today: the origin).
    Standalone {
        #[command(flatten)]
        node: config::NodeArgs,
        /// Also publish a built-in test stream named "demo".
        #[arg(long, env = "FERROCAST_DEMO")]
        demo: bool,
    },
    /// Load tools: RTMP publishers and LL-HLS / HLS viewers.
    Bench {
        #[command(subcommand)]
        tool: BenchTool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchTool {
    /// N concurrent RTMP publishers looping one FLV file in real time (default: the demo clip).
    Publish(ferrocast_bench::PublishArgs),
    /// N concurrent viewers that play like hls.js in low-latency mode, or classic HLS.
    View(ferrocast_bench::ViewArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (args, demo, standalone) = match cli.command {
        Command::Origin(a) => (a, false, false),
        Command::Standalone { node, demo } => (node, demo, true),
        Command::Bench { tool } => return bench(tool),
    };
    let settings = config::Settings::resolve(args, standalone)?;
    ferrocast_runtime::telemetry::init(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(settings, demo))
}

/// Runs a load tool; it prints its own progress and summary.
fn bench(tool: BenchTool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match tool {
            BenchTool::Publish(args) => {
                let clip = bytes::Bytes::from_static(demo::CLIP);
                ferrocast_bench::publish(args, clip).await.map(drop)
            }
            BenchTool::View(args) => ferrocast_bench::view(args).await.map(drop),
        }
    })
}

async fn run(settings: config::Settings, demo: bool) -> anyhow::Result<()> {
    let registry = Arc::new(Metrics::new());
    let origin = ferrocast_origin::Origin::bind(settings.origin.clone(), registry)
        .await
        .context("starting the origin")?;
    tracing::info!(
        node = %settings.node_id,
        region = %settings.region,
        rtmp = %origin.rtmp_addr(),
        http = %origin.http_addr(),
        "ferrocast started; publish to rtmp://HOST:{}/live/KEY, watch at http://HOST:{}/",
        origin.rtmp_addr().port(),
        origin.http_addr().port(),
    );
    let shutdown = CancellationToken::new();
    ferrocast_runtime::shutdown::cancel_on_signal(shutdown.clone());
    if demo {
        tokio::spawn(demo::run(origin.streams(), shutdown.child_token()));
        tracing::info!(url = %format!("http://127.0.0.1:{}/watch/demo", origin.http_addr().port()), "demo stream publishing");
    }
    origin.run(shutdown).await;
    Ok(())
}
