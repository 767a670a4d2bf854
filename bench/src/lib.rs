//! `ferrocast bench`: load generators that speak what our users speak. `publish` runs
//! N RTMP publishers looping one FLV clip in real time; `view` runs N viewers that play
//! an LL-HLS playlist like hls.js in low-latency mode (or a classic HLS player) and
//! report latency behind live, stalls, errors and request-latency percentiles.
//!
//! Both functions print a progress line to stderr every second and a summary to
//! stdout at the end (JSON with `--json`), and return the report.

pub mod http;
pub mod mediaclock;
pub mod playlist;
mod publish;
pub mod stats;
mod view;

pub use publish::{publish, PublishArgs, PublishReport};
pub use view::{view, Clock, KindReport, Mode, ViewArgs, ViewReport};
