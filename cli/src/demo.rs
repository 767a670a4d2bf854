//! The built-in demo publisher: a short H.264+AAC clip shipped in the binary, looped
//! forever in real time with continuous timestamps, fed into the origin exactly as an
//! RTMP publisher's tags would be.

use bytes::Bytes;
use ferrocast_media::flv;
use ferrocast_origin::stream::{ClaimError, Streams};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo clip: 6 s of H.264 + AAC (scripts/make-demo-clip.sh makes it).
pub const CLIP: &[u8] = include_bytes!("../assets/demo.flv");

/// Publishes the clip as stream `demo` until `shutdown`.
pub async fn run(streams: Arc<Streams>, shutdown: CancellationToken) {
    let tags = match flv::read_file(&Bytes::from_static(CLIP)) {
        Ok(t) => t,
        Err(error) => {
            tracing::error!(%error, "demo clip is unreadable");
            return;
        }
    };
    // In a cluster the claim goes through the controller, which may not answer yet.
    let mut attempts = 0;
    let mut publisher = loop {
        attempts += 1;
        match streams.publish("demo").await {
            Ok(p) => break p,
            Err(error @ (ClaimError::Unavailable(..) | ClaimError::Unreachable(..)))
                if attempts < 30 =>
            {
                tracing::debug!(%error, "demo stream not granted yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot publish the demo stream");
                return;
            }
        }
    };
    // One loop lasts until the last video frame ends; a frame is ~33 ms at 30 fps.
    let last_ts = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0);
    let loop_ms = u64::from(last_ts) + 33;
    let start = tokio::time::Instant::now();
    for round in 0u64.. {
        for tag in &tags {
            let is_config = tag.body.len() > 1 && tag.body[1] == 0;
            if round > 0 && is_config {
                continue; // sequence headers only once
            }
            let ts = round * loop_ms + u64::from(tag.timestamp_ms);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(start + Duration::from_millis(ts)) => {}
            }
            let ts32 = ts as u32; // RTMP timestamps wrap; the origin unwraps them
            let result = match tag.tag_type {
                8 => publisher.audio(ts32, &tag.body),
                9 => publisher.video(ts32, &tag.body),
                _ => Ok(()),
            };
            if let Err(error) = result {
                tracing::error!(%error, "demo publisher stopped");
                return;
            }
        }
    }
}
