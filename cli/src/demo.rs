//! The built-in demo publisher: a short H.264+AAC clip shipped in the binary, looped
//! forever in real time with continuous timestamps, fed into the origin exactly as an
//! RTMP publisher's tags would be.
//!
//! A loop must leave neither a hole nor an overlap in either track's timeline: players
//! stall on a hole (hls.js: `bufferSeekOverHole`, then `bufferStalledError`), and the
//! origin counts AAC frames rather than trusting millisecond timestamps, so audio that is
//! not whole in frames per loop drifts until the origin re-anchors it (a hole again).
//! [`LoopPlan`] therefore makes one loop exactly as long as the video track (frames ×
//! frame interval) and sends exactly the audio frames that fill it; the clip is cut to a
//! length that is whole in both (8 s: 240 frames at 30 fps, 375 AAC frames at 48 kHz).

use bytes::Bytes;
use ferrocast_media::codec::aac::AacConfig;
use ferrocast_media::flv::{self, FlvTag};
use ferrocast_origin::stream::{ClaimError, Streams};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo clip: 8 s of H.264 + AAC (scripts/make-demo-clip.sh makes it).
pub const CLIP: &[u8] = include_bytes!("../assets/demo.flv");

/// How a clip is looped: the sequence headers once, then `tags` every `loop_ms`.
#[derive(Debug)]
struct LoopPlan {
    /// Sequence headers (and metadata), sent once before the first loop.
    headers: Vec<FlvTag>,
    /// One loop's media tags, in file order, with timestamps within `[0, loop_ms)`.
    tags: Vec<FlvTag>,
    /// Length of one loop: the video track's frame count times its frame interval.
    loop_ms: u64,
    /// Audio frames sent per loop, and how many milliseconds they last (the plan is exact
    /// when that equals `loop_ms`).
    audio_frames: usize,
    audio_ms: f64,
}

/// The endless sequence of (timestamp ms, tag) a [`LoopPlan`] sends: the headers at 0,
/// then round after round of the media tags.
#[derive(Debug)]
struct Schedule<'a> {
    plan: &'a LoopPlan,
    headers_left: std::slice::Iter<'a, FlvTag>,
    round: u64,
    next: usize,
}

impl<'a> Iterator for Schedule<'a> {
    type Item = (u64, &'a FlvTag);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(h) = self.headers_left.next() {
            return Some((0, h));
        }
        if self.next == self.plan.tags.len() {
            self.next = 0;
            self.round += 1;
        }
        let tag = self.plan.tags.get(self.next)?;
        self.next += 1;
        Some((
            self.round * self.plan.loop_ms + u64::from(tag.timestamp_ms),
            tag,
        ))
    }
}

impl LoopPlan {
    fn schedule(&self) -> Schedule<'_> {
        Schedule {
            plan: self,
            headers_left: self.headers.iter(),
            round: 0,
            next: 0,
        }
    }

    fn new(all: Vec<FlvTag>) -> Result<Self, String> {
        // Byte 1 of an AVC/AAC tag: 0 a sequence header, 1 a frame, 2 (AVC) the end of
        // the sequence, which a loop must not send.
        let kind = |t: &FlvTag| t.body.get(1).copied();
        let all = all
            .into_iter()
            .filter(|t| !(t.tag_type == 9 && kind(t) == Some(2)));
        let (headers, media): (Vec<_>, Vec<_>) =
            all.partition(|t| kind(t) == Some(0) || !matches!(t.tag_type, 8 | 9));
        let video: Vec<u32> = media
            .iter()
            .filter(|t| t.tag_type == 9)
            .map(|t| t.timestamp_ms)
            .collect();
        let (Some(first), Some(last)) = (video.first(), video.last()) else {
            return Err("the clip has no video".into());
        };
        if video.len() < 2 {
            return Err("the clip has a single video frame".into());
        }
        // The mean interval, not one delta: millisecond timestamps of 30 fps alternate
        // between 33 and 34 ms.
        let interval = f64::from(last - first) / (video.len() - 1) as f64;
        let loop_ms = (interval * video.len() as f64).round() as u64;
        let rate = headers
            .iter()
            .find(|t| t.tag_type == 8 && t.body.len() > 2)
            .map(|t| AacConfig::parse(&t.body.slice(2..)))
            .transpose()
            .map_err(|e| format!("the clip's AAC config: {e}"))?
            .map(|c| c.sample_rate);
        let frame_ms = rate.map(|r| 1024.0 * 1000.0 / f64::from(r.max(1)));
        // Whole audio frames that start inside the loop; the rest would overlap the next.
        let audio_frames = frame_ms.map_or(0, |f| (loop_ms as f64 / f).round() as usize);
        let mut sent_audio = 0;
        let tags = media
            .into_iter()
            .filter(|t| u64::from(t.timestamp_ms) < loop_ms)
            .filter(|t| {
                if t.tag_type != 8 {
                    return true;
                }
                sent_audio += 1;
                sent_audio <= audio_frames
            })
            .collect::<Vec<_>>();
        let audio_frames = sent_audio.min(audio_frames);
        let audio_ms = frame_ms.map_or(0.0, |f| f * audio_frames as f64);
        Ok(Self {
            headers,
            tags,
            loop_ms,
            audio_frames,
            audio_ms,
        })
    }
}

/// Publishes the clip as stream `demo` until `shutdown`.
pub async fn run(streams: Arc<Streams>, shutdown: CancellationToken) {
    let plan = match flv::read_file(&Bytes::from_static(CLIP))
        .map_err(|e| e.to_string())
        .and_then(LoopPlan::new)
    {
        Ok(p) => p,
        Err(error) => {
            tracing::error!(%error, "demo clip is unreadable");
            return;
        }
    };
    if plan.audio_frames > 0 && (plan.audio_ms - plan.loop_ms as f64).abs() >= 1.0 {
        // Only a clip made by something other than scripts/make-demo-clip.sh gets here.
        tracing::warn!(
            loop_ms = plan.loop_ms,
            audio_ms = plan.audio_ms,
            "the demo clip's audio is not whole in AAC frames per loop: expect a hole at each loop"
        );
    }
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
    let start = tokio::time::Instant::now();
    for (ts, tag) in plan.schedule() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_clip_loops_without_a_hole_or_an_overlap_in_either_track() {
        let plan =
            LoopPlan::new(flv::read_file(&Bytes::from_static(CLIP)).expect("clip")).expect("plan");
        assert_eq!(plan.loop_ms, 8000);
        // Audio: whole AAC frames that last exactly one loop (the origin counts frames).
        assert_eq!(plan.audio_frames, 375);
        assert_eq!(plan.audio_ms, plan.loop_ms as f64);
        // Video: every frame, the last one ending where the next loop's first begins.
        let video: Vec<u32> = plan
            .tags
            .iter()
            .filter(|t| t.tag_type == 9)
            .map(|t| t.timestamp_ms)
            .collect();
        assert_eq!(video.len(), 240);
        let gap = plan.loop_ms - u64::from(*video.last().expect("frames"));
        assert!(
            (33..=34).contains(&gap),
            "last frame to the loop point: {gap} ms"
        );
        // The headers go once, and the loop starts on a keyframe.
        assert!(plan.headers.iter().any(|t| t.tag_type == 9));
        assert!(plan.headers.iter().any(|t| t.tag_type == 8));
        let first_video = plan.tags.iter().find(|t| t.tag_type == 9).expect("video");
        assert_eq!(first_video.body[0] >> 4, 1, "a loop starts with a keyframe");
        assert!(plan
            .tags
            .iter()
            .all(|t| u64::from(t.timestamp_ms) < plan.loop_ms));
    }

    /// The origin counts AAC frames and re-anchors audio only when the publisher's clock
    /// strays from the count by more than 100 ms (a hole players stall on). Over an hour
    /// of loops the demo's audio timestamps stay within a millisecond of the count, and
    /// its video timestamps only go forward, by about a frame each.
    #[test]
    fn an_hour_of_loops_keeps_audio_on_the_frame_count_and_video_frame_spaced() {
        let plan =
            LoopPlan::new(flv::read_file(&Bytes::from_static(CLIP)).expect("clip")).expect("plan");
        let frame_ms = 1024.0 * 1000.0 / 48_000.0;
        let hour = 3_600_000;
        let (mut audio, mut last_video) = (0u64, None::<u64>);
        let media = plan.schedule().skip(plan.headers.len());
        for (ts, tag) in media.take_while(|(ts, _)| *ts < hour) {
            match tag.tag_type {
                8 => {
                    let expected = audio as f64 * frame_ms;
                    assert!(
                        (ts as f64 - expected).abs() <= 1.0,
                        "audio frame {audio} at {ts} ms, its count says {expected:.1} ms"
                    );
                    audio += 1;
                }
                9 => {
                    if let Some(prev) = last_video {
                        assert!(
                            (33..=34).contains(&(ts - prev)),
                            "video frame at {ts} ms after {prev} ms"
                        );
                    }
                    last_video = Some(ts);
                }
                _ => {}
            }
        }
        assert!(audio > 160_000, "{audio} audio frames in an hour");
    }
}
