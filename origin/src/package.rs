//! The packager: turns one stream's publisher tags (FLV bodies with millisecond
//! timestamps) into CMAF parts and segments on a continuous timeline, and keeps the
//! bounded window of them that the playlist shows. Pure: no I/O, no clock (callers pass
//! the wall-clock time), so every cutting rule is unit-tested deterministically.
//!
//! Cutting rules:
//! - a segment starts on a video keyframe (audio-only: on any frame) and is cut at the
//!   first keyframe at or after the segment target; a longer GOP makes a longer segment;
//! - a segment is a sequence of parts, each a self-contained `moof`+`mdat`, each no
//!   longer than the part target, so the segment's bytes are its parts back to back;
//! - a publisher that goes away and comes back (or changes codec configuration) starts a
//!   new discontinuity with a new init segment; timestamps are shifted so the timeline
//!   never goes backwards and media sequence numbers never restart.

use bytes::Bytes;
use ferrocast_media::cmaf::{self, Sample, Track, TrackConfig, TrackRun};
use ferrocast_media::codec::{AacConfig, AvcConfig, HevcConfig};
use ferrocast_media::flv::{AudioTag, VideoCodec, VideoTag};
use ferrocast_media::hls::{self, MediaPlaylist, PartInfo, SegmentInfo};
use std::collections::VecDeque;
use std::sync::Arc;

/// Timescale of the video track and of every cutting decision.
const VIDEO_TIMESCALE: u32 = 90_000;
const VIDEO_TRACK_ID: u32 = 1;
const AUDIO_TRACK_ID: u32 = 2;
/// AAC frames carry 1024 samples (ISO/IEC 14496-3, AAC-LC and the core of HE-AAC).
const AAC_FRAME_SAMPLES: u64 = 1024;
/// How much a video frame's duration may differ from the previous one's through the
/// millisecond rounding of FLV timestamps alone (24 fps arrives as 42, 41, 42 ms).
const FRAME_JITTER: u64 = 2 * VIDEO_TIMESCALE as u64 / 1000;

/// How the packager cuts and how much it keeps.
#[derive(Debug, Clone)]
pub struct PackagerConfig {
    /// Target segment duration in seconds; segments are cut at the first keyframe after it.
    pub segment_target: f64,
    /// Maximum part duration in seconds (the playlist's PART-TARGET).
    pub part_target: f64,
    /// Complete segments listed in the playlist.
    pub window_segments: usize,
    /// Segments kept fetchable after they leave the playlist, for clients that just read it.
    pub retained_segments: usize,
    /// A GOP longer than this is refused: the segment could not be closed and memory
    /// would grow without bound.
    pub max_segment_duration: f64,
    /// Most bytes one segment may hold.
    pub max_segment_bytes: usize,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        Self {
            segment_target: 2.0,
            part_target: 0.25,
            window_segments: 10,
            retained_segments: 3,
            max_segment_duration: 30.0,
            max_segment_bytes: 64 << 20,
        }
    }
}

/// Why the packager refused the publisher's input. Each ends that publishing session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The avcC/hvcC/AudioSpecificConfig could not be parsed.
    #[error("bad codec configuration: {0}")]
    BadCodecConfig(#[from] ferrocast_media::codec::CodecError),
    /// No keyframe for longer than the allowed segment duration.
    #[error("no keyframe for {0:.1} s (longer than the allowed GOP)")]
    GopTooLong(f64),
    /// One segment grew past the byte limit.
    #[error("segment exceeds {0} bytes")]
    SegmentTooLarge(usize),
}

/// One part: a complete `moof`+`mdat`.
#[derive(Debug, Clone)]
pub struct Part {
    /// The CMAF chunk bytes.
    pub bytes: Bytes,
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with a keyframe (or holds only audio).
    pub independent: bool,
    /// Wall clock when it was cut, Unix milliseconds (what an edge's propagation delay
    /// is measured from).
    pub made_at_ms: i64,
}

/// A complete segment: its parts, back to back, are the segment.
#[derive(Debug)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// The parts in order.
    pub parts: Vec<Part>,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of the first sample, unix milliseconds.
    pub program_date_time_ms: i64,
    /// First segment after a discontinuity.
    pub discontinuity: bool,
    /// Which init segment it needs.
    pub init_id: u64,
}

impl Segment {
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }

    /// Whether the segment has no bytes (never true for a stored segment).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the playlist, players and the home page want to know about the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamInfo {
    /// RFC 6381 codecs list, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Video size, when there is video.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second, when known.
    pub frame_rate: Option<f64>,
    /// Peak bits per second over the segments in the window.
    pub bandwidth: u64,
}

/// State that lets a stream go on after its publisher, or its origin, changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Continuity {
    /// Media sequence number the next segment takes.
    pub next_msn: u64,
    /// Discontinuity count so far (the next discontinuity gets this plus one).
    pub discontinuity: u64,
    /// End of the timeline so far, in milliseconds.
    pub timeline_end_ms: i64,
}

#[derive(Debug)]
struct PendingVideo {
    dts: u64,
    cts: i32,
    keyframe: bool,
    data: Bytes,
}

#[derive(Debug)]
struct VideoTrack {
    config: TrackConfig,
    pending: Option<PendingVideo>,
    ready: Vec<Sample>,
    ready_base: u64,
    last_duration: u32,
}

#[derive(Debug)]
struct AudioTrack {
    config: AacConfig,
    next_dts: Option<u64>,
    ready: Vec<Sample>,
    ready_base: u64,
}

#[derive(Debug)]
struct Building {
    msn: u64,
    start: u64,
    part_start: u64,
    parts: Vec<Part>,
    bytes: usize,
    program_date_time_ms: i64,
    discontinuity: bool,
    init_id: u64,
}

/// One stream's packager.
#[derive(Debug)]
pub struct Packager {
    cfg: PackagerConfig,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// Current init segment id and bytes, once built.
    init: Option<(u64, Bytes)>,
    /// Init segments still referenced by a retained segment.
    inits: VecDeque<(u64, Bytes)>,
    segments: VecDeque<Arc<Segment>>,
    building: Option<Building>,
    next_msn: u64,
    discontinuity: u64,
    /// The next segment begins a discontinuity.
    next_discontinuity: bool,
    /// ms added to the publisher's timestamps; `None` until the session's first sample.
    offset_ms: Option<i64>,
    timeline_end_ms: i64,
    /// (wall ms, timeline ms) at the session's first sample, for PROGRAM-DATE-TIME.
    anchor: Option<(i64, i64)>,
    fragment_seq: u32,
    ended: bool,
    version: u64,
}

/// Converts milliseconds on the timeline to a track timescale.
fn ms_to(ts_ms: i64, timescale: u32) -> u64 {
    (ts_ms.max(0) as u64) * u64::from(timescale) / 1000
}

impl Packager {
    /// A fresh stream, or one that continues from `continuity` (a restarted stream key,
    /// or a stream taken over from another origin).
    pub fn new(cfg: PackagerConfig, continuity: Option<Continuity>) -> Self {
        let c = continuity.unwrap_or_default();
        let resumed = continuity.is_some();
        Self {
            cfg,
            video: None,
            audio: None,
            init: None,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            building: None,
            next_msn: c.next_msn,
            discontinuity: c.discontinuity,
            next_discontinuity: resumed,
            offset_ms: None,
            timeline_end_ms: c.timeline_end_ms,
            anchor: None,
            fragment_seq: 0,
            ended: false,
            version: 0,
        }
    }

    /// Bumped whenever something a viewer can see changed.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What a successor needs to go on without restarting the stream.
    /// `next_msn` is the first number never used, not even by the segment being built
    /// (whose parts are already out), so a successor can never name different media
    /// the same way.
    pub fn continuity(&self) -> Continuity {
        Continuity {
            next_msn: self.building.as_ref().map_or(self.next_msn, |b| b.msn + 1),
            discontinuity: self.discontinuity,
            timeline_end_ms: self.timeline_end_ms,
        }
    }

    /// A new publisher session begins (first, or a reconnect within the grace period):
    /// whatever the previous session left is flushed, and the next segment starts a
    /// discontinuity with timestamps continuing the timeline.
    pub fn begin_session(&mut self) {
        self.flush();
        if self.version > 0 || self.next_msn > 0 {
            self.next_discontinuity = true;
        }
        self.video = None;
        self.audio = None;
        self.init = None;
        self.offset_ms = None;
        self.anchor = None;
        self.ended = false;
        self.version += 1;
    }

    /// The publisher is gone: close what is open so viewers get every sample.
    pub fn flush(&mut self) {
        let end = match (&mut self.video, &self.audio) {
            (Some(v), _) if v.pending.is_some() => {
                let p = v.pending.take().expect("checked");
                let duration = v.last_duration.max(1);
                let end = p.dts + u64::from(duration);
                self.push_pending(p, duration);
                Some(end)
            }
            (None, Some(a)) => a
                .next_dts
                .map(|d| d * u64::from(VIDEO_TIMESCALE) / u64::from(a.config.sample_rate.max(1))),
            _ => None,
        };
        if let (Some(end), true) = (end, self.building.is_some()) {
            self.close_part(end);
            self.close_segment(end);
            self.version += 1;
        }
    }

    /// The stream is over: the playlist gets EXT-X-ENDLIST.
    pub fn end(&mut self) {
        self.flush();
        if !self.ended {
            self.ended = true;
            self.version += 1;
        }
    }

    /// Whether the stream has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Feeds a video tag. `ts_ms` is the publisher's timestamp (unwrapped).
    pub fn push_video(
        &mut self,
        ts_ms: i64,
        tag: VideoTag,
        now_ms: i64,
    ) -> Result<(), PackageError> {
        match tag {
            VideoTag::SequenceHeader { codec, config } => {
                let parsed = match codec {
                    VideoCodec::Hevc => TrackConfig::Hevc(HevcConfig::parse(&config)?),
                    _ => TrackConfig::Avc(AvcConfig::parse(&config)?),
                };
                let same = self
                    .video
                    .as_ref()
                    .is_some_and(|v| config_bytes(&v.config) == config_bytes(&parsed));
                if !same {
                    self.new_configuration();
                    self.video = Some(VideoTrack {
                        config: parsed,
                        pending: None,
                        ready: Vec::new(),
                        ready_base: 0,
                        last_duration: VIDEO_TIMESCALE / 30,
                    });
                }
                Ok(())
            }
            VideoTag::Frame {
                keyframe,
                composition_time_ms,
                data,
                ..
            } => {
                if self.video.is_none() || data.is_empty() {
                    return Ok(()); // frames before any configuration can't be decoded
                }
                if self.building.is_none() && !keyframe {
                    return Ok(()); // wait for the first keyframe
                }
                let t = self.timeline_ms(ts_ms, now_ms);
                let dts = ms_to(t, VIDEO_TIMESCALE);
                self.on_video_frame(dts, composition_time_ms, keyframe, data)
            }
            _ => Ok(()),
        }
    }

    /// Feeds an audio tag.
    pub fn push_audio(
        &mut self,
        ts_ms: i64,
        tag: AudioTag,
        now_ms: i64,
    ) -> Result<(), PackageError> {
        match tag {
            AudioTag::AacSequenceHeader(asc) => {
                let parsed = AacConfig::parse(&asc)?;
                let same = self
                    .audio
                    .as_ref()
                    .is_some_and(|a| a.config.raw == parsed.raw);
                if !same {
                    self.new_configuration();
                    self.audio = Some(AudioTrack {
                        config: parsed,
                        next_dts: None,
                        ready: Vec::new(),
                        ready_base: 0,
                    });
                }
                Ok(())
            }
            AudioTag::AacRaw(data) => {
                if self.audio.is_none() || data.is_empty() {
                    return Ok(());
                }
                if self.video.is_some() && self.building.is_none() {
                    // Audio waits for the first video keyframe so segments start on one.
                    return Ok(());
                }
                let t = self.timeline_ms(ts_ms, now_ms);
                self.on_audio_frame(t, data)
            }
            _ => Ok(()),
        }
    }

    /// A codec configuration differs from the one in use: what was built so far is
    /// closed with the old init, and the next segment starts a discontinuity.
    fn new_configuration(&mut self) {
        if self.init.is_some() {
            self.flush();
            self.init = None;
            self.next_discontinuity = true;
            // The flush ended the last frame on a guessed duration: re-base so the new
            // configuration starts where that ended, not before it.
            self.offset_ms = None;
        }
    }

    /// Maps a publisher timestamp onto the continuous timeline.
    fn timeline_ms(&mut self, ts_ms: i64, now_ms: i64) -> i64 {
        let offset = *self.offset_ms.get_or_insert(self.timeline_end_ms - ts_ms);
        let t = (ts_ms + offset).max(0);
        if self.anchor.is_none() {
            self.anchor = Some((now_ms, t));
        }
        t
    }

    fn ensure_init(&mut self) -> u64 {
        if let Some((id, _)) = &self.init {
            return *id;
        }
        if self.next_discontinuity && self.next_msn > 0 {
            self.discontinuity += 1;
        }
        let id = self.discontinuity;
        let mut tracks = Vec::new();
        if let Some(v) = &self.video {
            tracks.push(Track {
                id: VIDEO_TRACK_ID,
                timescale: VIDEO_TIMESCALE,
                config: v.config.clone(),
            });
        }
        if let Some(a) = &self.audio {
            tracks.push(Track {
                id: AUDIO_TRACK_ID,
                timescale: a.config.sample_rate.max(1),
                config: TrackConfig::Aac(a.config.clone()),
            });
        }
        let bytes = cmaf::init_segment(&tracks);
        self.inits.push_back((id, bytes.clone()));
        self.init = Some((id, bytes));
        id
    }

    fn start_segment(&mut self, start: u64) {
        let init_id = self.ensure_init();
        let discontinuity = std::mem::take(&mut self.next_discontinuity) && self.next_msn > 0;
        let start_ms = (start * 1000 / u64::from(VIDEO_TIMESCALE)) as i64;
        let pdt = match self.anchor {
            Some((wall, tl)) => wall + (start_ms - tl),
            None => 0,
        };
        self.building = Some(Building {
            msn: self.next_msn,
            start,
            part_start: start,
            parts: Vec::new(),
            bytes: 0,
            program_date_time_ms: pdt,
            discontinuity,
            init_id,
        });
    }

    fn on_video_frame(
        &mut self,
        mut dts: u64,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
    ) -> Result<(), PackageError> {
        let v = self.video.as_mut().expect("checked by caller");
        if let Some(p) = v.pending.take() {
            // Timestamps must increase; a publisher that repeats one gets a nudge.
            if dts <= p.dts {
                dts = p.dts + 1;
            }
            let dur = u32::try_from(dts - p.dts).unwrap_or(u32::MAX);
            // A jump far beyond a frame (a paused encoder) is not a frame duration.
            let dur = if dur > VIDEO_TIMESCALE * 2 {
                v.last_duration
            } else {
                dur
            };
            v.last_duration = dur.max(1);
            self.push_pending(p, dur.max(1));
        }
        let frame = u64::from(self.video.as_ref().expect("checked").last_duration);
        let cts = cts_ms.saturating_mul(90);
        self.decide_cut(dts, frame, keyframe, FRAME_JITTER)?;
        let v = self.video.as_mut().expect("checked");
        v.pending = Some(PendingVideo {
            dts,
            cts,
            keyframe,
            data,
        });
        Ok(())
    }

    fn on_audio_frame(&mut self, t_ms: i64, data: Bytes) -> Result<(), PackageError> {
        let a = self.audio.as_mut().expect("checked by caller");
        let rate = a.config.sample_rate.max(1);
        let actual = ms_to(t_ms, rate);
        // Frames are counted, not timed: FLV's millisecond timestamps are too coarse for
        // sample-exact audio. Re-anchor only when the publisher's clock really jumps.
        let dts = match a.next_dts {
            Some(expected) if actual.abs_diff(expected) <= u64::from(rate) / 10 => expected,
            _ => actual,
        };
        a.next_dts = Some(dts + AAC_FRAME_SAMPLES);
        let audio_only = self.video.is_none();
        if audio_only {
            let d90 = dts * u64::from(VIDEO_TIMESCALE) / u64::from(rate);
            let frame = AAC_FRAME_SAMPLES * u64::from(VIDEO_TIMESCALE) / u64::from(rate);
            if self.building.is_none() {
                // Audio-only timeline starts here.
                self.start_segment(d90);
            } else {
                self.decide_cut(d90, frame, true, 0)?;
            }
        }
        let a = self.audio.as_mut().expect("checked");
        if a.ready.is_empty() {
            a.ready_base = dts;
        }
        a.ready.push(Sample {
            duration: AAC_FRAME_SAMPLES as u32,
            composition_offset: 0,
            keyframe: true,
            data,
        });
        Ok(())
    }

    fn part_target(&self) -> u64 {
        (self.cfg.part_target * f64::from(VIDEO_TIMESCALE)).round() as u64
    }

    /// Adds the pending video frame to the open part now that its duration is known.
    /// If it would take the part past the part target, the part ends where it starts:
    /// parts are as full as they can be without ever exceeding the target.
    fn push_pending(&mut self, p: PendingVideo, duration: u32) {
        let part_target = self.part_target();
        if let Some(b) = &self.building {
            let end = p.dts + u64::from(duration);
            if p.dts > b.part_start && end - b.part_start > part_target {
                self.close_part(p.dts);
            }
        }
        if let Some(v) = &mut self.video {
            push_video_sample(v, p, duration);
        }
    }

    /// Called with the start time of a new sample (video, or audio when audio-only),
    /// before it is added: closes the part and/or segment that end here. `frame` is the
    /// expected duration of the new sample, `jitter` how far off it may be: the part is
    /// closed early only when the sample surely does not fit (a video frame that might
    /// fit is settled by [`Self::push_pending`] once its duration is known).
    fn decide_cut(
        &mut self,
        at: u64,
        frame: u64,
        keyframe: bool,
        jitter: u64,
    ) -> Result<(), PackageError> {
        let seg_target = (self.cfg.segment_target * f64::from(VIDEO_TIMESCALE)) as u64;
        let part_target = self.part_target();
        let Some(b) = &self.building else {
            self.start_segment(at);
            return Ok(());
        };
        let elapsed = at.saturating_sub(b.start);
        if keyframe && elapsed + frame / 2 >= seg_target {
            self.close_part(at);
            self.close_segment(at);
            self.start_segment(at);
            return Ok(());
        }
        let max = (self.cfg.max_segment_duration * f64::from(VIDEO_TIMESCALE)) as u64;
        if elapsed > max {
            return Err(PackageError::GopTooLong(
                elapsed as f64 / f64::from(VIDEO_TIMESCALE),
            ));
        }
        if b.bytes > self.cfg.max_segment_bytes {
            return Err(PackageError::SegmentTooLarge(self.cfg.max_segment_bytes));
        }
        if at.saturating_sub(b.part_start) + frame.saturating_sub(jitter) > part_target {
            self.close_part(at);
        }
        Ok(())
    }

    fn close_part(&mut self, end: u64) {
        let Some(b) = &mut self.building else { return };
        let mut runs = Vec::with_capacity(2);
        let mut independent = true;
        let (mut vsamples, mut asamples) = (Vec::new(), Vec::new());
        let (mut vbase, mut abase) = (0, 0);
        if let Some(v) = &mut self.video {
            vsamples = std::mem::take(&mut v.ready);
            vbase = v.ready_base;
            independent = vsamples.first().is_some_and(|s| s.keyframe);
        }
        if let Some(a) = &mut self.audio {
            asamples = std::mem::take(&mut a.ready);
            abase = a.ready_base;
        }
        if vsamples.is_empty() && asamples.is_empty() {
            return;
        }
        if !vsamples.is_empty() {
            runs.push(TrackRun {
                track_id: VIDEO_TRACK_ID,
                base_decode_time: vbase,
                samples: &vsamples,
            });
        }
        if !asamples.is_empty() {
            runs.push(TrackRun {
                track_id: AUDIO_TRACK_ID,
                base_decode_time: abase,
                samples: &asamples,
            });
        }
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        let bytes = cmaf::fragment(self.fragment_seq, &runs);
        let duration = end.saturating_sub(b.part_start) as f64 / f64::from(VIDEO_TIMESCALE);
        b.bytes += bytes.len();
        b.parts.push(Part {
            bytes,
            duration,
            independent,
            made_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        });
        b.part_start = end;
        // The timeline ends where the later track ends, rounded up: a new session or
        // configuration must not start before a sample of this one has ended.
        let mut end_ms = (end * 1000).div_ceil(u64::from(VIDEO_TIMESCALE));
        if let Some(next) = self.audio.as_ref().and_then(|a| {
            let rate = u64::from(a.config.sample_rate.max(1));
            a.next_dts.map(|d| (d * 1000).div_ceil(rate))
        }) {
            end_ms = end_ms.max(next);
        }
        self.timeline_end_ms = end_ms as i64;
        self.version += 1;
    }

    fn close_segment(&mut self, end: u64) {
        let Some(b) = self.building.take() else {
            return;
        };
        if b.parts.is_empty() {
            return;
        }
        let seg = Segment {
            msn: b.msn,
            duration: end.saturating_sub(b.start) as f64 / f64::from(VIDEO_TIMESCALE),
            parts: b.parts,
            program_date_time_ms: b.program_date_time_ms,
            discontinuity: b.discontinuity,
            init_id: b.init_id,
        };
        self.next_msn = b.msn + 1;
        self.segments.push_back(Arc::new(seg));
        let keep = self.cfg.window_segments + self.cfg.retained_segments;
        while self.segments.len() > keep {
            self.segments.pop_front();
        }
        let oldest_init = self.segments.front().map(|s| s.init_id).unwrap_or(u64::MAX);
        let current = self.init.as_ref().map(|(id, _)| *id);
        self.inits
            .retain(|(id, _)| *id >= oldest_init || Some(*id) == current);
        self.version += 1;
    }

    /// Everything viewers can fetch right now.
    pub fn snapshot(&self) -> Snapshot {
        let listed_from = self.segments.len().saturating_sub(self.cfg.window_segments);
        let listed: Vec<&Arc<Segment>> = self.segments.iter().skip(listed_from).collect();
        let max_dur = listed.iter().map(|s| s.duration).fold(0.0, f64::max);
        let target_duration =
            (self.cfg.segment_target.round().max(1.0)).max(max_dur.round()) as u32;
        // Parts are listed for segments within three target durations of the live edge
        // (draft-pantos-hls-rfc8216bis §4.4.4.9).
        let pending_dur: f64 = self
            .building
            .as_ref()
            .map(|b| b.parts.iter().map(|p| p.duration).sum())
            .unwrap_or(0.0);
        let mut from_end = pending_dur;
        let mut with_parts = vec![false; listed.len()];
        for (i, s) in listed.iter().enumerate().rev() {
            if from_end >= 3.0 * f64::from(target_duration) {
                break;
            }
            with_parts[i] = true;
            from_end += s.duration;
        }
        let segments = listed
            .iter()
            .zip(with_parts)
            .map(|(s, parts)| SegmentInfo {
                msn: s.msn,
                duration: s.duration,
                program_date_time_ms: s.program_date_time_ms,
                discontinuity: s.discontinuity,
                init_id: s.init_id,
                parts: if parts {
                    s.parts.iter().map(part_info).collect()
                } else {
                    Vec::new()
                },
            })
            .collect::<Vec<_>>();
        // The count of discontinuities before the first segment shown (listed, else the
        // one being built): the same number whether that segment is complete or not.
        let discontinuity_sequence = match (listed.first(), &self.building) {
            (Some(s), _) => s.init_id - u64::from(s.discontinuity),
            (None, Some(b)) => b.init_id - u64::from(b.discontinuity),
            (None, None) => self.discontinuity,
        };
        let (next_init_id, next_discontinuity, next_pdt, pending) = match &self.building {
            Some(b) => (
                b.init_id,
                b.discontinuity,
                Some(b.program_date_time_ms),
                b.parts.clone(),
            ),
            None => (
                self.init
                    .as_ref()
                    .map(|(id, _)| *id)
                    .unwrap_or(self.discontinuity),
                false,
                None,
                Vec::new(),
            ),
        };
        let media_sequence = listed.first().map(|s| s.msn).unwrap_or(self.next_msn);
        let bandwidth = listed
            .iter()
            .filter(|s| s.duration > 0.0)
            .map(|s| (s.len() as f64 * 8.0 / s.duration) as u64)
            .max()
            .unwrap_or(0);
        let playlist = MediaPlaylist {
            target_duration,
            part_target: self.cfg.part_target,
            media_sequence,
            discontinuity_sequence,
            segments,
            next_msn: self
                .building
                .as_ref()
                .map(|b| b.msn)
                .unwrap_or(self.next_msn),
            next_init_id,
            next_discontinuity,
            next_program_date_time_ms: next_pdt,
            pending_parts: pending.iter().map(part_info).collect(),
            ended: self.ended,
        };
        Snapshot {
            version: self.version,
            playlist,
            segments: self.segments.iter().cloned().collect(),
            pending,
            building_msn: self.building.as_ref().map(|b| b.msn),
            inits: self.inits.iter().cloned().collect(),
            info: self.info(bandwidth),
            live: self.building.is_some() || !self.segments.is_empty(),
        }
    }

    fn info(&self, bandwidth: u64) -> StreamInfo {
        let mut codecs = Vec::new();
        let mut resolution = None;
        let mut frame_rate = None;
        if let Some(v) = &self.video {
            match &v.config {
                TrackConfig::Avc(c) => {
                    codecs.push(c.codec_string());
                    resolution = Some((c.width, c.height));
                    frame_rate = c.frame_rate;
                }
                TrackConfig::Hevc(c) => {
                    codecs.push(c.codec_string());
                    resolution = Some((c.width, c.height));
                    frame_rate = c.frame_rate;
                }
                _ => {}
            }
            if frame_rate.is_none() && v.last_duration > 0 {
                frame_rate = Some(f64::from(VIDEO_TIMESCALE) / f64::from(v.last_duration));
            }
        }
        if let Some(a) = &self.audio {
            codecs.push(a.config.codec_string());
        }
        StreamInfo {
            codecs: codecs.join(","),
            resolution,
            frame_rate,
            bandwidth,
        }
    }
}

fn config_bytes(c: &TrackConfig) -> &Bytes {
    match c {
        TrackConfig::Avc(c) => &c.raw,
        TrackConfig::Hevc(c) => &c.raw,
        TrackConfig::Aac(c) => &c.raw,
    }
}

fn part_info(p: &Part) -> PartInfo {
    PartInfo {
        duration: p.duration,
        independent: p.independent,
    }
}

fn push_video_sample(v: &mut VideoTrack, p: PendingVideo, duration: u32) {
    if v.ready.is_empty() {
        v.ready_base = p.dts;
    }
    v.ready.push(Sample {
        duration,
        composition_offset: p.cts,
        keyframe: p.keyframe,
        data: p.data,
    });
}

/// An immutable view of a stream published to every reader after each change (viewers'
/// renderings are cached once per change on the serving side, `ferrocast_serve::state`).
#[derive(Debug)]
pub struct Snapshot {
    /// Packager version this was taken at.
    pub version: u64,
    /// What the media playlist shows.
    pub playlist: MediaPlaylist,
    /// Complete segments still fetchable (the listed ones and a few older ones).
    pub segments: Vec<Arc<Segment>>,
    /// Parts of the segment being built.
    pub pending: Vec<Part>,
    /// Media sequence number of the segment being built.
    pub building_msn: Option<u64>,
    /// Init segments by id.
    pub inits: Vec<(u64, Bytes)>,
    /// Codecs, size, bandwidth.
    pub info: StreamInfo,
    /// At least one part exists.
    pub live: bool,
}

/// Where a requested part stands.
#[derive(Debug)]
pub enum PartLookup {
    /// Here it is.
    Found(Bytes),
    /// Not yet, but it is the next one or close: worth waiting for.
    Soon,
    /// It does not exist and never will.
    Never,
}

impl Snapshot {
    /// An empty snapshot for a stream that has no media yet.
    pub fn empty() -> Self {
        Packager::new(PackagerConfig::default(), None).snapshot()
    }

    /// A complete segment by media sequence number.
    pub fn segment(&self, msn: u64) -> Option<&Arc<Segment>> {
        let first = self.segments.first()?.msn;
        let s = self
            .segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)?;
        (s.msn == msn).then_some(s)
    }

    /// Finds part `i` of segment `msn`: where it stands is decided from the playlist
    /// alone ([`hls::locate_part`], the rule every serving node uses), the bytes come
    /// from this snapshot.
    pub fn part(&self, msn: u64, i: u32) -> PartLookup {
        let bytes = || {
            let part = if msn == self.playlist.next_msn && self.building_msn == Some(msn) {
                self.pending.get(i as usize)
            } else {
                self.segment(msn).and_then(|s| s.parts.get(i as usize))
            };
            part.map_or(PartLookup::Never, |p| PartLookup::Found(p.bytes.clone()))
        };
        match hls::locate_part(&self.playlist, msn, i) {
            hls::PartPlace::Listed | hls::PartPlace::Fetch => bytes(),
            hls::PartPlace::Soon => PartLookup::Soon,
            hls::PartPlace::Never => PartLookup::Never,
        }
    }

    /// Init segment bytes by id.
    pub fn init(&self, id: u64) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.clone())
    }
}

#[cfg(test)]
#[path = "package_tests.rs"]
pub(crate) mod tests;
