//! Unit tests of the packager on real codec configurations (from an ffmpeg-made FLV) and
//! synthetic frames: cutting rules, sessions and discontinuities, the window, part
//! lookup, limits, and the rendered playlist. The produced CMAF is read back by walking
//! its boxes, so timing is checked where players see it (tfdt, trun).

use super::*;
use ferrocast_media::flv;
use ferrocast_media::hls::{lint::lint, render_media, RenderOptions};

/// avcC of `ffmpeg -f lavfi -i testsrc2=size=160x120:rate=30 -c:v libx264` (High, 160x120).
const AVCC_160: [u8; 46] = [
    0x01, 0x64, 0x00, 0x0b, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0b, 0xac, 0xd9, 0x42, 0x84,
    0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0x65,
    0x80, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// avcC of the same at 320x240, 25 fps: a different configuration.
const AVCC_320: [u8; 46] = [
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// AudioSpecificConfig of ffmpeg's AAC encoder on `-f lavfi -i sine` (AAC-LC, 44.1 kHz, mono).
const ASC: [u8; 5] = [0x12, 0x08, 0x56, 0xe5, 0x00];
const AUDIO_RATE: u32 = 44_100;

/// Wall clock passed to the packager (it only feeds PROGRAM-DATE-TIME).
const NOW: i64 = 1_700_000_000_000;
const TICKS: f64 = 90_000.0;

pub(crate) fn cfg() -> PackagerConfig {
    // A window large enough that cutting tests see every segment.
    PackagerConfig {
        window_segments: 10_000,
        ..PackagerConfig::default()
    }
}

fn video_header(p: &mut Packager, ts: i64, avcc: &[u8]) -> Result<(), PackageError> {
    let body = flv::video_sequence_header(VideoCodec::Avc, avcc);
    p.push_video(ts, flv::parse_video(&body).expect("valid tag"), NOW)
}

fn audio_header(p: &mut Packager, ts: i64) -> Result<(), PackageError> {
    let body = flv::aac_sequence_header(&ASC);
    p.push_audio(ts, flv::parse_audio(&body).expect("valid tag"), NOW)
}

fn video(p: &mut Packager, ts: i64, key: bool) -> Result<(), PackageError> {
    let nal_type = if key { 0x65 } else { 0x41 };
    let body = flv::video_frame(VideoCodec::Avc, key, 0, &[0, 0, 0, 2, nal_type, ts as u8]);
    p.push_video(ts, flv::parse_video(&body).expect("valid tag"), NOW + ts)
}

fn audio(p: &mut Packager, ts: i64) -> Result<(), PackageError> {
    let body = flv::aac_frame(&[0x21, 0x10, ts as u8]);
    p.push_audio(ts, flv::parse_audio(&body).expect("valid tag"), NOW + ts)
}

/// A synthetic publisher: timestamps as ffmpeg's FLV muxer writes them (milliseconds,
/// rounded), interleaved in timestamp order, video first on ties.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clip {
    fps: f64,
    /// Frames per GOP.
    gop: u64,
    seconds: f64,
    video: bool,
    audio: bool,
    /// Publisher timestamp of the first frame.
    start_ms: i64,
}

impl Clip {
    pub(crate) fn av(fps: f64, gop: u64, seconds: f64) -> Self {
        Self {
            fps,
            gop,
            seconds,
            video: true,
            audio: true,
            start_ms: 0,
        }
    }

    fn video_ts(&self, i: u64) -> i64 {
        self.start_ms + (i as f64 * 1000.0 / self.fps).round() as i64
    }

    fn audio_ts(&self, j: u64) -> i64 {
        self.start_ms + (j as f64 * 1024.0 * 1000.0 / f64::from(AUDIO_RATE)).round() as i64
    }

    fn video_frames(&self) -> u64 {
        if self.video {
            (self.seconds * self.fps).round() as u64
        } else {
            0
        }
    }

    fn audio_frames(&self) -> u64 {
        if self.audio {
            // Rounded up: the audio ends a little after the video, as ffmpeg's does.
            (self.seconds * f64::from(AUDIO_RATE) / 1024.0).ceil() as u64
        } else {
            0
        }
    }

    /// (timestamp, is_video, index) in push order.
    fn events(&self) -> Vec<(i64, bool, u64)> {
        let mut ev: Vec<(i64, bool, u64)> = (0..self.video_frames())
            .map(|i| (self.video_ts(i), true, i))
            .chain((0..self.audio_frames()).map(|j| (self.audio_ts(j), false, j)))
            .collect();
        ev.sort_by_key(|&(ts, is_video, i)| (ts, !is_video, i));
        ev
    }

    fn headers(&self, p: &mut Packager) {
        if self.video {
            video_header(p, self.start_ms, &AVCC_160).expect("avcC");
        }
        if self.audio {
            audio_header(p, self.start_ms).expect("ASC");
        }
    }

    fn media(&self, p: &mut Packager) -> Result<(), PackageError> {
        for (ts, is_video, i) in self.events() {
            if is_video {
                video(p, ts, i % self.gop == 0)?;
            } else {
                audio(p, ts)?;
            }
        }
        Ok(())
    }

    pub(crate) fn feed(&self, p: &mut Packager) {
        self.headers(p);
        self.media(p).expect("packaging");
    }

    /// Keyframe times on the 90 kHz timeline (the first frame is at 0).
    fn keyframes(&self) -> Vec<u64> {
        (0..self.video_frames())
            .step_by(self.gop as usize)
            .map(|i| ((self.video_ts(i) - self.start_ms) * 90) as u64)
            .collect()
    }
}

/// One `traf` of a fragment, as read back.
#[derive(Debug, Clone)]
struct Run {
    track_id: u32,
    base: u64,
    samples: Vec<RunSample>,
}

#[derive(Debug, Clone, Copy)]
struct RunSample {
    duration: u32,
    flags: u32,
    cts: i32,
}

impl RunSample {
    fn sync(&self) -> bool {
        self.flags & 0x1_0000 == 0
    }
}

impl Run {
    fn end(&self) -> u64 {
        self.base
            + self
                .samples
                .iter()
                .map(|s| u64::from(s.duration))
                .sum::<u64>()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Top-level boxes of `b`: (type, payload).
fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = be32(b, 0) as usize;
        let kind: [u8; 4] = b[4..8].try_into().expect("4 bytes");
        let (header, size) = match size {
            1 => (16, be64(b, 8) as usize),
            0 => (8, b.len()),
            s => (8, s),
        };
        assert!(size >= header && size <= b.len(), "box {kind:?} overruns");
        out.push((kind, &b[header..size]));
        b = &b[size..];
    }
    assert!(b.is_empty(), "trailing bytes after boxes");
    out
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(b)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, p)| p)
}

/// The track runs of one CMAF chunk (`moof` + `mdat`).
fn parse_fragment(bytes: &[u8]) -> Vec<Run> {
    let top = boxes(bytes);
    assert_eq!(top.len(), 2, "a part is one moof and one mdat");
    assert_eq!(&top[0].0, b"moof");
    assert_eq!(&top[1].0, b"mdat");
    let mut runs = Vec::new();
    for (kind, traf) in boxes(top[0].1) {
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd").expect("tfhd");
        let track_id = be32(tfhd, 4);
        let tfdt = child(traf, b"tfdt").expect("tfdt");
        let base = if tfdt[0] == 1 {
            be64(tfdt, 4)
        } else {
            u64::from(be32(tfdt, 4))
        };
        let trun = child(traf, b"trun").expect("trun");
        let flags = be32(trun, 0) & 0x00ff_ffff;
        let count = be32(trun, 4);
        let mut at = 8;
        if flags & 0x1 != 0 {
            at += 4;
        }
        let first_flags = (flags & 0x4 != 0).then(|| {
            at += 4;
            be32(trun, at - 4)
        });
        let mut samples = Vec::new();
        for i in 0..count {
            let mut s = RunSample {
                duration: 0,
                flags: 0,
                cts: 0,
            };
            if flags & 0x100 != 0 {
                s.duration = be32(trun, at);
                at += 4;
            }
            if flags & 0x200 != 0 {
                at += 4;
            }
            if flags & 0x400 != 0 {
                s.flags = be32(trun, at);
                at += 4;
            } else if let (0, Some(f)) = (i, first_flags) {
                s.flags = f;
            }
            if flags & 0x800 != 0 {
                s.cts = be32(trun, at) as i32;
                at += 4;
            }
            samples.push(s);
        }
        runs.push(Run {
            track_id,
            base,
            samples,
        });
    }
    runs
}

fn track(runs: &[Run], id: u32) -> Option<&Run> {
    runs.iter().find(|r| r.track_id == id)
}

/// Track ids declared by an init segment.
fn init_tracks(init: &[u8]) -> Vec<u32> {
    let moov = child(init, b"moov").expect("moov");
    boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .map(|(_, trak)| {
            let tkhd = child(trak, b"tkhd").expect("tkhd");
            // version 0: 4 flags, 4 creation, 4 modification, then track_ID.
            let off = if tkhd[0] == 1 { 20 } else { 12 };
            be32(tkhd, off)
        })
        .collect()
}

/// Every run of `id` across the parts of `segs`, in order.
fn runs_of(segs: &[Arc<Segment>], id: u32) -> Vec<Run> {
    segs.iter()
        .flat_map(|s| s.parts.iter())
        .flat_map(|p| parse_fragment(&p.bytes))
        .filter(|r| r.track_id == id)
        .collect()
}

fn segment_start(s: &Segment, id: u32) -> u64 {
    let runs = parse_fragment(&s.parts[0].bytes);
    track(&runs, id).expect("first part holds the track").base
}

/// The cut points the rules ask for: from each segment start, the first keyframe at
/// least `target` later.
fn expected_starts(keys: &[u64], target: f64) -> Vec<u64> {
    let target = (target * TICKS) as u64;
    let mut starts = vec![keys[0]];
    for &k in keys {
        if k - starts.last().expect("nonempty") >= target {
            starts.push(k);
        }
    }
    starts
}

fn assert_close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-6, "{what}: {a} vs {b}");
}

/// Checks every rule about parts on complete segments; returns how many parts.
fn check_parts(segs: &[Arc<Segment>], part_target: f64, what: &str) -> usize {
    let mut n = 0;
    for s in segs {
        let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
        assert_close(
            sum,
            s.duration,
            &format!("{what}: parts of {} add up", s.msn),
        );
        for (i, p) in s.parts.iter().enumerate() {
            n += 1;
            assert!(
                p.duration <= part_target + 1e-9,
                "{what}: part {}.{i} is {} s, over the part target",
                s.msn,
                p.duration
            );
            if i + 1 < s.parts.len() {
                assert!(
                    p.duration >= 0.85 * part_target,
                    "{what}: part {}.{i} is {} s, under 85% of the part target (parts {:?})",
                    s.msn,
                    p.duration,
                    s.parts.iter().map(|p| p.duration).collect::<Vec<_>>()
                );
            }
            let runs = parse_fragment(&p.bytes);
            let starts_with_key = match track(&runs, VIDEO_TRACK_ID) {
                Some(v) => v.samples[0].sync(),
                // Audio-only part: every sample is a sync sample.
                None => !runs.is_empty(),
            };
            assert_eq!(
                p.independent, starts_with_key,
                "{what}: part {}.{i} INDEPENDENT",
                s.msn
            );
            // The duration of a part is where the timeline is cut, not sample sums,
            // but the video samples must lie inside it.
            if let Some(v) = track(&runs, VIDEO_TRACK_ID) {
                let dur = (v.end() - v.base) as f64 / TICKS;
                assert_close(dur, p.duration, &format!("{what}: video of {}.{i}", s.msn));
            }
        }
    }
    n
}

#[test]
fn segments_start_on_keyframes_and_cut_at_the_first_keyframe_after_the_target() {
    // GOPs of 0.9 s and 0.7 s: keyframes never land on the 2 s target.
    for (gop, fps) in [(27, 30.0), (21, 30.0), (60, 30.0), (50, 25.0)] {
        let clip = Clip::av(fps, gop, 20.0);
        let mut p = Packager::new(cfg(), None);
        p.begin_session();
        clip.feed(&mut p);
        let snap = p.snapshot();
        let segs = &snap.segments;
        let keys = clip.keyframes();
        let expected = expected_starts(&keys, 2.0);
        let starts: Vec<u64> = segs
            .iter()
            .map(|s| segment_start(s, VIDEO_TRACK_ID))
            .collect();
        assert_eq!(
            starts,
            expected[..starts.len()],
            "gop {gop}: segment starts"
        );
        assert!(
            starts.len() + 1 >= expected.len(),
            "gop {gop}: all but the open one"
        );
        for s in segs {
            let v = parse_fragment(&s.parts[0].bytes);
            assert!(
                track(&v, VIDEO_TRACK_ID).expect("video").samples[0].sync(),
                "gop {gop}: segment {} starts on a keyframe",
                s.msn
            );
            assert!(s.parts[0].independent);
            assert!(!s.discontinuity);
        }
        for w in segs.windows(2) {
            assert_eq!(w[1].msn, w[0].msn + 1);
        }
        assert_eq!(segs[0].msn, 0);
    }
}

#[test]
fn a_gop_longer_than_the_target_makes_one_long_segment() {
    let clip = Clip::av(30.0, 150, 21.0);
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    clip.feed(&mut p);
    p.end();
    let segs = p.snapshot().segments;
    assert_eq!(segs.len(), 5, "four 5 s GOPs and the 1 s tail");
    for s in &segs[..4] {
        assert_close(s.duration, 5.0, "5 s GOP, one segment");
    }
    assert_eq!(p.snapshot().playlist.target_duration, 5);
    check_parts(&segs, 0.25, "5 s GOP");
}

#[test]
fn parts_fit_the_part_target_at_common_frame_rates() {
    for fps in [24.0f64, 25.0, 30.0, 60.0, 30_000.0 / 1001.0, 50.0] {
        // GOPs of 2 s, 1 s, and 2 s plus a frame (so parts start at every phase of
        // the millisecond rounding pattern).
        for gop in [
            (fps * 2.0).round() as u64,
            (fps * 1.0).round() as u64,
            (fps * 2.0).round() as u64 + 1,
        ] {
            let gop_s = gop as f64 / fps;
            let clip = Clip::av(fps, gop, 12.0);
            let mut p = Packager::new(cfg(), None);
            p.begin_session();
            clip.feed(&mut p);
            let segs = p.snapshot().segments;
            assert!(segs.len() >= 5, "{fps} fps: segments");
            let parts = check_parts(&segs, 0.25, &format!("{fps} fps, {gop_s} s GOP"));
            assert!(parts >= segs.len() * 7, "{fps} fps: parts");
            // Mid-segment keyframes with a 1 s GOP are inside parts, never INDEPENDENT.
            for s in &segs {
                assert!(s.parts[0].independent);
            }
        }
    }
}

#[test]
fn parts_fit_a_non_default_part_target() {
    let config = PackagerConfig {
        part_target: 0.5,
        segment_target: 4.0,
        ..cfg()
    };
    for fps in [24.0, 30.0] {
        let clip = Clip::av(fps, (fps * 4.0) as u64, 20.0);
        let mut p = Packager::new(config.clone(), None);
        p.begin_session();
        clip.feed(&mut p);
        check_parts(
            &p.snapshot().segments,
            0.5,
            &format!("{fps} fps, 0.5 s parts"),
        );
    }
}

#[test]
fn frames_before_the_first_keyframe_and_audio_before_it_are_dropped() {
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    // A keyframe before any configuration cannot be decoded.
    video(&mut p, 0, true).expect("ignored");
    video_header(&mut p, 0, &AVCC_160).expect("avcC");
    audio_header(&mut p, 0).expect("ASC");
    // 0.5 s of audio and inter frames, then the first keyframe at 500 ms.
    let clip = Clip::av(30.0, 60, 6.0);
    let mut sent_video = 0;
    let mut sent_audio = 0;
    for (ts, is_video, i) in clip.events() {
        if is_video {
            let key = i == 15 || (i > 15 && (i - 15) % 60 == 0);
            video(&mut p, ts, key).expect("video");
            sent_video += u64::from(i >= 15);
        } else {
            audio(&mut p, ts).expect("audio");
            sent_audio += u64::from(ts >= 500);
        }
    }
    assert_eq!(p.snapshot().segments.len(), 2, "video before 0.5 s dropped");
    p.end();
    let segs = p.snapshot().segments;
    let v = runs_of(&segs, VIDEO_TRACK_ID);
    let a = runs_of(&segs, AUDIO_TRACK_ID);
    assert!(v[0].samples[0].sync(), "first video sample is the keyframe");
    assert_eq!(v[0].base, 0, "the timeline starts at the first keyframe");
    let nv: usize = v.iter().map(|r| r.samples.len()).sum();
    let na: usize = a.iter().map(|r| r.samples.len()).sum();
    assert_eq!(nv as u64, sent_video);
    assert_eq!(na as u64, sent_audio);
    // The first audio sample is the first one at or after the keyframe.
    let j0 = (0..).find(|&j| clip.audio_ts(j) >= 500).expect("audio");
    let t = (clip.audio_ts(j0) - 500) as u64;
    assert_eq!(a[0].base, t * u64::from(AUDIO_RATE) / 1000);
}

#[test]
fn audio_only_streams_make_parts_and_segments() {
    let clip = Clip {
        video: false,
        ..Clip::av(30.0, 1, 11.0)
    };
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    clip.feed(&mut p);
    p.end();
    let snap = p.snapshot();
    let segs = &snap.segments;
    assert!(segs.len() >= 5, "{} segments", segs.len());
    for s in &segs[..segs.len() - 1] {
        assert!(
            (s.duration - 2.0).abs() <= 1024.0 / f64::from(AUDIO_RATE),
            "audio segment of {} s",
            s.duration
        );
    }
    check_parts(segs, 0.25, "audio only");
    assert!(segs.iter().flat_map(|s| &s.parts).all(|p| p.independent));
    let a = runs_of(segs, AUDIO_TRACK_ID);
    assert!(runs_of(segs, VIDEO_TRACK_ID).is_empty());
    let n: usize = a.iter().map(|r| r.samples.len()).sum();
    assert_eq!(n as u64, clip.audio_frames(), "every audio frame");
    for w in a.windows(2) {
        assert_eq!(w[1].base, w[0].end(), "audio is gapless");
    }
    assert_eq!(snap.info.codecs, "mp4a.40.2");
    assert_eq!(snap.info.resolution, None);
    let (id, init) = &snap.inits[0];
    assert_eq!(*id, segs[0].init_id);
    assert_eq!(init_tracks(init), vec![AUDIO_TRACK_ID]);
    assert!(lint(&render_media(&snap.playlist, &RenderOptions::default())).is_empty());
}

#[test]
fn video_only_streams_make_parts_and_segments() {
    let clip = Clip {
        audio: false,
        ..Clip::av(30.0, 60, 11.0)
    };
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    clip.feed(&mut p);
    p.end();
    let snap = p.snapshot();
    let segs = &snap.segments;
    assert_eq!(segs.len(), 6);
    for s in &segs[..5] {
        assert_close(s.duration, 2.0, "video-only segment");
    }
    check_parts(segs, 0.25, "video only");
    assert!(runs_of(segs, AUDIO_TRACK_ID).is_empty());
    let n: usize = runs_of(segs, VIDEO_TRACK_ID)
        .iter()
        .map(|r| r.samples.len())
        .sum();
    assert_eq!(n as u64, clip.video_frames(), "every video frame");
    assert_eq!(snap.info.codecs, "avc1.64000b");
    assert_eq!(snap.info.resolution, Some((160, 120)));
    assert_eq!(init_tracks(&snap.inits[0].1), vec![VIDEO_TRACK_ID]);
}

/// The last segment before a change and the first one after it.
fn around(segs: &[Arc<Segment>], msn: u64) -> (&Arc<Segment>, &Arc<Segment>) {
    let i = segs.iter().position(|s| s.msn == msn).expect("segment");
    (&segs[i - 1], &segs[i])
}

fn track_end(s: &Segment, id: u32) -> u64 {
    s.parts
        .iter()
        .flat_map(|p| parse_fragment(&p.bytes))
        .filter(|r| r.track_id == id)
        .map(|r| r.end())
        .max()
        .expect("track present")
}

#[test]
fn a_new_session_is_a_discontinuity_on_a_continuing_timeline() {
    for clip in [
        Clip::av(30.0, 60, 5.0),
        Clip {
            audio: false,
            ..Clip::av(25.0, 50, 5.0)
        },
        // Video ends at 4.99 s, audio at 5.0155 s.
        Clip::av(100.0, 200, 4.99),
        Clip {
            video: false,
            ..Clip::av(30.0, 1, 5.0)
        },
    ] {
        let mut p = Packager::new(cfg(), None);
        p.begin_session();
        clip.feed(&mut p);
        let before = p.snapshot();
        let open_msn = before.building_msn.expect("a segment is open");
        p.begin_session();
        let flushed = p.snapshot();
        assert_eq!(flushed.segments.len(), before.segments.len() + 1, "flushed");
        assert_eq!(flushed.playlist.next_msn, open_msn + 1);
        // The new publisher's timestamps restart (at 0, and at 7 s for the third).
        for start_ms in [0, 7_000] {
            let first_new = p.snapshot().playlist.next_msn;
            let again = Clip { start_ms, ..clip };
            again.feed(&mut p);
            p.begin_session();
            let segs = p.snapshot().segments;
            let (prev, next) = around(&segs, first_new);
            assert!(next.discontinuity, "discontinuity after a new session");
            assert_eq!(next.msn, prev.msn + 1, "numbering goes on");
            assert_eq!(next.init_id, prev.init_id + 1, "a new init");
            let ids = [VIDEO_TRACK_ID, AUDIO_TRACK_ID];
            for id in ids.into_iter().filter(|&id| {
                (id == VIDEO_TRACK_ID && clip.video) || (id == AUDIO_TRACK_ID && clip.audio)
            }) {
                let end = track_end(prev, id);
                let start = segment_start(next, id);
                let timescale = if id == VIDEO_TRACK_ID {
                    90_000
                } else {
                    u64::from(AUDIO_RATE)
                };
                assert!(
                    start >= end,
                    "track {id}: tfdt {start} goes back before the previous end {end}"
                );
                assert!(
                    start - end < timescale / 10,
                    "track {id}: tfdt {start} leaves a gap after {end}"
                );
            }
        }
        let snap = p.snapshot();
        for s in &snap.segments {
            assert!(snap.init(s.init_id).is_some(), "init of {}", s.msn);
        }
        let text = render_media(&snap.playlist, &RenderOptions::default());
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{text}");
        assert!(lint(&text).is_empty(), "{:?}\n{text}", lint(&text));
    }
}

#[test]
fn a_changed_avcc_starts_a_discontinuity_and_a_repeated_one_changes_nothing() {
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    let clip = Clip::av(30.0, 30, 5.0);
    clip.feed(&mut p);
    // The same configuration again (ffmpeg repeats it; so do encoders on reconnect).
    let v = p.version();
    let n = p.snapshot().segments.len();
    video_header(&mut p, 5_000, &AVCC_160).expect("same avcC");
    audio_header(&mut p, 5_000).expect("same ASC");
    assert_eq!(p.version(), v, "an identical header changes nothing");
    let later = Clip {
        start_ms: 5_000,
        ..clip
    };
    later.media(&mut p).expect("media");
    let snap = p.snapshot();
    assert!(snap.segments.len() > n);
    assert!(snap
        .segments
        .iter()
        .all(|s| !s.discontinuity && s.init_id == 0));
    assert_eq!(snap.inits.len(), 1);

    // Now a different one at 10 s: the open segment closes at the header.
    let open = snap.building_msn.expect("open");
    video_header(&mut p, 10_000, &AVCC_320).expect("new avcC");
    let snap = p.snapshot();
    let closed = snap.segment(open).expect("closed by the new configuration");
    assert_eq!(closed.init_id, 0);
    assert_eq!(snap.building_msn, None);
    let end = track_end(closed, VIDEO_TRACK_ID);
    let third = Clip {
        start_ms: 10_000,
        ..clip
    };
    third.media(&mut p).expect("media");
    p.end();
    let snap = p.snapshot();
    let next = snap.segment(open + 1).expect("next");
    assert!(next.discontinuity);
    assert_eq!(next.init_id, 1);
    assert!(segment_start(next, VIDEO_TRACK_ID) >= end);
    assert_eq!(snap.info.resolution, Some((320, 240)));
    assert_eq!(init_tracks(&snap.init(1).expect("new init")).len(), 2);
    assert_ne!(snap.init(0), snap.init(1));
    let text = render_media(&snap.playlist, &RenderOptions::default());
    assert!(lint(&text).is_empty(), "{:?}\n{text}", lint(&text));
}

#[test]
fn the_window_lists_retains_and_forgets() {
    let config = PackagerConfig {
        window_segments: 4,
        retained_segments: 2,
        ..PackagerConfig::default()
    };
    let mut p = Packager::new(config, None);
    p.begin_session();
    let clip = Clip::av(30.0, 60, 6.0);
    let mut last_seq = 0;
    // Four sessions: 3 segments each (the last one flushed on the next session).
    for _ in 0..4 {
        clip.feed(&mut p);
        let snap = p.snapshot();
        let pl = &snap.playlist;
        assert!(pl.segments.len() <= 4);
        assert!(snap.segments.len() <= 6);
        assert!(
            pl.media_sequence >= last_seq,
            "media sequence never goes back"
        );
        last_seq = pl.media_sequence;
        p.begin_session();
    }
    clip.feed(&mut p);
    let snap = p.snapshot();
    let pl = &snap.playlist;
    // 4 sessions × 3 flushed segments, plus 2 complete in the fifth.
    let total = 14;
    assert_eq!(pl.segments.len(), 4);
    assert_eq!(pl.media_sequence, total - 4);
    assert_eq!(pl.segments[0].msn, pl.media_sequence);
    assert_eq!(pl.next_msn, total);
    assert_eq!(snap.segments.len(), 6);
    for msn in total - 6..total {
        assert!(snap.segment(msn).is_some(), "segment {msn} still fetchable");
    }
    assert!(snap.segment(total - 7).is_none(), "older ones are gone");
    assert!(snap.segment(total).is_none(), "not complete yet");
    // Inits: exactly those a retained segment or the open one needs.
    let mut needed: Vec<u64> = snap.segments.iter().map(|s| s.init_id).collect();
    needed.push(pl.next_init_id);
    needed.dedup();
    let mut have: Vec<u64> = snap.inits.iter().map(|(id, _)| *id).collect();
    have.sort_unstable();
    assert_eq!(have, needed, "unreferenced inits dropped");
    assert!(snap.init(0).is_none());
    // Sessions began at 3, 6, 9 and 12; the first listed (10) follows three of them.
    assert_eq!(pl.segments[0].msn, 10);
    assert_eq!(pl.discontinuity_sequence, 3);
}

#[test]
fn parts_are_listed_only_near_the_live_edge() {
    let config = PackagerConfig {
        window_segments: 8,
        ..PackagerConfig::default()
    };
    for seconds in [20.0, 20.6, 21.9] {
        let mut p = Packager::new(config.clone(), None);
        p.begin_session();
        Clip::av(30.0, 60, seconds).feed(&mut p);
        let pl = p.snapshot().playlist;
        assert_eq!(pl.target_duration, 2);
        let limit = 3.0 * f64::from(pl.target_duration);
        let pending: f64 = pl.pending_parts.iter().map(|p| p.duration).sum();
        let mut after = pending;
        let mut with_parts = 0;
        for s in pl.segments.iter().rev() {
            // From the end of this segment to the end of the playlist.
            assert_eq!(
                !s.parts.is_empty(),
                after < limit,
                "{seconds} s: segment {} ({after} s from the end)",
                s.msn
            );
            with_parts += usize::from(!s.parts.is_empty());
            after += s.duration;
        }
        assert!((2..=3).contains(&with_parts));
        assert!(pl.segments.len() > with_parts);
        let text = render_media(&pl, &RenderOptions::default());
        assert!(lint(&text).is_empty(), "{:?}\n{text}", lint(&text));
    }
}

#[test]
fn part_lookup_finds_waits_or_refuses() {
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    // 4.5 s: segments 0 and 1 complete, segment 2 has parts.
    Clip::av(30.0, 60, 4.5).feed(&mut p);
    let snap = p.snapshot();
    assert_eq!(snap.building_msn, Some(2));
    let done = snap.segment(1).expect("segment 1").parts.len() as u32;
    let pending = snap.pending.len() as u32;
    assert!(pending >= 1);
    let found = |l: PartLookup| matches!(l, PartLookup::Found(_));
    let soon = |l: PartLookup| matches!(l, PartLookup::Soon);
    let never = |l: PartLookup| matches!(l, PartLookup::Never);
    assert!(found(snap.part(0, 0)));
    assert!(found(snap.part(1, done - 1)));
    match snap.part(1, 2) {
        PartLookup::Found(b) => assert_eq!(b, snap.segment(1).expect("1").parts[2].bytes),
        other => panic!("part 1.2: {other:?}"),
    }
    assert!(found(snap.part(2, pending - 1)));
    assert!(
        never(snap.part(1, done)),
        "past the end of a complete segment"
    );
    assert!(soon(snap.part(2, pending)), "the hinted part");
    assert!(soon(snap.part(3, 0)), "the next segment's first part");
    assert!(
        never(snap.part(2, pending + 5)),
        "far ahead in this segment"
    );
    assert!(never(snap.part(3, 3)), "far ahead in the next segment");
    assert!(never(snap.part(4, 0)), "two segments ahead");
    assert!(never(snap.part(100, 0)));

    // Between sessions no segment is open: the next one's first part is worth waiting for.
    p.flush();
    let snap = p.snapshot();
    assert_eq!(snap.building_msn, None);
    assert!(found(snap.part(2, 0)));
    assert!(never(
        snap.part(2, snap.segment(2).expect("2").parts.len() as u32)
    ));
    assert!(soon(snap.part(3, 0)));
    // The part after the hint is held too, whichever segment it falls in: where a part
    // stands is decided from the playlist alone, as on every node (`hls::locate_part`).
    assert!(soon(snap.part(3, 1)));
    assert!(soon(snap.part(4, 0)));
    assert!(never(snap.part(4, 1)));
    assert!(never(snap.part(5, 0)));

    // An ended stream has nothing to wait for.
    p.end();
    let snap = p.snapshot();
    assert!(snap.playlist.ended);
    assert!(found(snap.part(2, 0)));
    for (msn, i) in [(3, 0), (3, 1), (2, 100), (4, 0)] {
        assert!(never(snap.part(msn, i)), "ended: part {msn}.{i}");
    }

    // Ended while a segment was open: the same.
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    Clip::av(30.0, 60, 3.0).feed(&mut p);
    p.end();
    let snap = p.snapshot();
    assert_eq!(snap.building_msn, None);
    assert!(never(snap.part(2, 0)));
    assert!(never(
        snap.part(1, snap.segment(1).expect("1").parts.len() as u32)
    ));
    assert!(found(snap.part(1, 0)));
}

#[test]
fn a_gop_over_the_maximum_is_refused() {
    let config = PackagerConfig {
        max_segment_duration: 6.0,
        ..cfg()
    };
    let mut p = Packager::new(config, None);
    p.begin_session();
    let clip = Clip::av(30.0, 300, 12.0);
    clip.headers(&mut p);
    let err = clip.media(&mut p).expect_err("a 10 s GOP is refused");
    match err {
        PackageError::GopTooLong(s) => assert!((6.0..6.2).contains(&s), "{s}"),
        other => panic!("{other:?}"),
    }
    // A GOP just under the limit is fine.
    let mut p = Packager::new(
        PackagerConfig {
            max_segment_duration: 6.0,
            ..cfg()
        },
        None,
    );
    p.begin_session();
    Clip::av(30.0, 175, 12.0).feed(&mut p);
}

#[test]
fn non_monotonic_timestamps_are_nudged_forward() {
    let mut p = Packager::new(cfg(), None);
    p.begin_session();
    video_header(&mut p, 0, &AVCC_160).expect("avcC");
    // Repeated, backwards and jittery timestamps.
    let ts = [0, 33, 33, 20, 67, 100, 100, 99, 133, 167, 150, 200];
    let mut t = 0;
    for round in 0..10 {
        for (i, d) in ts.iter().enumerate() {
            video(&mut p, round * 200 + d, round % 3 == 0 && i == 0).expect("frame");
            t += 1;
        }
    }
    p.end();
    let segs = p.snapshot().segments;
    let v = runs_of(&segs, VIDEO_TRACK_ID);
    let n: usize = v.iter().map(|r| r.samples.len()).sum();
    assert_eq!(n, t, "every frame kept");
    for r in &v {
        assert!(r.samples.iter().all(|s| s.duration > 0), "zero duration");
    }
    for w in v.windows(2) {
        assert_eq!(w[1].base, w[0].end(), "decode times increase without gaps");
    }
    for s in &segs {
        assert!(s.duration > 0.0);
        assert!(s.parts.iter().all(|p| p.duration > 0.0));
    }
}

#[tokio::test]
async fn a_32_bit_timestamp_wrap_keeps_the_timeline() {
    use crate::metrics::OriginMetrics;
    use crate::stream::{StreamConfig, Streams};
    let streams = Streams::new(
        StreamConfig {
            packager: cfg(),
            ..StreamConfig::default()
        },
        Arc::new(OriginMetrics::new()),
    );
    let mut publisher = streams.claim("wrap").expect("claim");
    let start: u32 = u32::MAX - 3_000;
    publisher
        .video(
            start,
            &flv::video_sequence_header(VideoCodec::Avc, &AVCC_160),
        )
        .expect("avcC");
    publisher
        .audio(start, &flv::aac_sequence_header(&ASC))
        .expect("ASC");
    let clip = Clip::av(30.0, 60, 8.0);
    for (ts, is_video, i) in clip.events() {
        let rtmp_ts = start.wrapping_add(ts as u32);
        if is_video {
            let body = flv::video_frame(VideoCodec::Avc, i % 60 == 0, 0, &[0, 0, 0, 1, 0x65]);
            publisher.video(rtmp_ts, &body).expect("video");
        } else {
            publisher
                .audio(rtmp_ts, &flv::aac_frame(&[0x21, 0x10]))
                .expect("audio");
        }
    }
    let snap = publisher.stream().snapshot();
    assert_eq!(snap.segments.len(), 3, "8 s in 2 s segments, last one open");
    for s in snap.segments.iter() {
        assert_close(s.duration, 2.0, "segment across the wrap");
        assert!(!s.discontinuity);
    }
    let v = runs_of(&snap.segments, VIDEO_TRACK_ID);
    for w in v.windows(2) {
        assert_eq!(w[1].base, w[0].end(), "video timeline across the wrap");
    }
    let a = runs_of(&snap.segments, AUDIO_TRACK_ID);
    for w in a.windows(2) {
        assert_eq!(w[1].base, w[0].end(), "audio timeline across the wrap");
    }
    drop(publisher);
}

#[test]
fn continuity_carries_numbering_and_timeline_to_a_successor() {
    let mut old = Packager::new(cfg(), None);
    old.begin_session();
    Clip::av(30.0, 60, 7.0).feed(&mut old);
    old.end();
    let c = old.continuity();
    let last = old.snapshot().segments.last().expect("segments").msn;
    assert_eq!(c.next_msn, last + 1);
    let last_seg = old.snapshot().segments.last().expect("last").clone();
    let video_end = track_end(&last_seg, VIDEO_TRACK_ID);
    let audio_end = track_end(&last_seg, AUDIO_TRACK_ID);
    assert!(
        audio_end * 90_000 > video_end * u64::from(AUDIO_RATE),
        "this clip's audio ends after its video"
    );
    // The timeline ends where the later track ends, in whole milliseconds rounded up.
    let end_ms = (video_end * 1000)
        .div_ceil(90_000)
        .max((audio_end * 1000).div_ceil(u64::from(AUDIO_RATE)));
    assert_eq!(c.timeline_end_ms as u64, end_ms);
    let end = end_ms * 90;

    let mut new = Packager::new(cfg(), Some(c));
    assert_eq!(new.continuity(), c, "nothing changes before media");
    new.begin_session();
    Clip::av(30.0, 60, 5.0).feed(&mut new);
    let snap = new.snapshot();
    let first = &snap.segments[0];
    assert_eq!(first.msn, c.next_msn);
    assert!(first.discontinuity);
    assert_eq!(first.init_id, c.discontinuity + 1);
    assert_eq!(snap.playlist.media_sequence, c.next_msn);
    assert_eq!(snap.playlist.discontinuity_sequence, c.discontinuity);
    assert_eq!(
        segment_start(first, VIDEO_TRACK_ID),
        end,
        "the timeline goes on"
    );
    let text = render_media(&snap.playlist, &RenderOptions::default());
    assert!(text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}\n", c.next_msn)));
    assert!(lint(&text).is_empty(), "{:?}\n{text}", lint(&text));

    // Twice over: a successor of the successor.
    new.end();
    let c2 = new.continuity();
    assert_eq!(c2.discontinuity, c.discontinuity + 1);
    let mut third = Packager::new(cfg(), Some(c2));
    third.begin_session();
    Clip::av(30.0, 60, 3.0).feed(&mut third);
    let s = &third.snapshot().segments[0];
    assert_eq!(
        (s.msn, s.init_id, s.discontinuity),
        (c2.next_msn, c2.discontinuity + 1, true)
    );
}

#[test]
fn a_successors_first_segment_has_one_discontinuity_number_while_built_and_after() {
    let mut old = Packager::new(cfg(), None);
    old.begin_session();
    Clip::av(30.0, 60, 5.0).feed(&mut old);
    old.end();
    let c = old.continuity();

    // Under one GOP: the first segment is still being built, only its parts show.
    let mut new = Packager::new(cfg(), Some(c));
    new.begin_session();
    Clip::av(30.0, 60, 1.0).feed(&mut new);
    let building = new.snapshot();
    assert!(building.segments.is_empty(), "no segment completed yet");
    assert!(!building.playlist.pending_parts.is_empty(), "parts exist");
    assert!(building.playlist.next_discontinuity);
    // The first segment after the restart is the first of discontinuity
    // `c.discontinuity + 1`; the sequence counts the ones before it.
    assert_eq!(building.playlist.discontinuity_sequence, c.discontinuity);

    let mut new = Packager::new(cfg(), Some(c));
    new.begin_session();
    Clip::av(30.0, 60, 3.0).feed(&mut new);
    let built = new.snapshot();
    assert_eq!(built.segments[0].msn, c.next_msn);
    assert_eq!(built.playlist.discontinuity_sequence, c.discontinuity);
    for snap in [&building, &built] {
        let text = render_media(&snap.playlist, &RenderOptions::default());
        assert!(
            text.contains(&format!(
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
                c.discontinuity
            )),
            "{text}"
        );
        assert!(lint(&text).is_empty(), "{:?}\n{text}", lint(&text));
    }
}

#[test]
fn every_rendered_playlist_lints_clean() {
    let config = PackagerConfig {
        window_segments: 5,
        ..PackagerConfig::default()
    };
    let mut p = Packager::new(config, None);
    let mut checked = 0;
    let mut last_version = u64::MAX;
    let mut check = |p: &Packager| {
        if p.version() == last_version {
            return;
        }
        last_version = p.version();
        let snap = p.snapshot();
        for skip in [false, true] {
            let text = render_media(&snap.playlist, &RenderOptions { skip });
            let problems = lint(&text);
            assert!(problems.is_empty(), "{problems:?}\n{text}");
        }
        checked += 1;
    };
    check(&p);
    p.begin_session();
    check(&p);
    for (i, clip) in [
        Clip::av(30.0, 60, 15.0),
        Clip::av(24.0, 48, 9.0),
        Clip {
            audio: false,
            ..Clip::av(25.0, 25, 7.0)
        },
        Clip::av(60.0, 90, 14.0),
    ]
    .into_iter()
    .enumerate()
    {
        clip.headers(&mut p);
        check(&p);
        for (ts, is_video, j) in clip.events() {
            if i == 2 && is_video && j == 100 {
                // A changed configuration mid-session.
                video_header(&mut p, ts, &AVCC_320).expect("avcC");
                check(&p);
            }
            if is_video {
                video(&mut p, ts, j % clip.gop == 0).expect("video");
            } else {
                audio(&mut p, ts).expect("audio");
            }
            check(&p);
        }
        p.flush();
        check(&p);
        p.begin_session();
        check(&p);
    }
    Clip::av(30.0, 60, 3.0).feed(&mut p);
    p.end();
    check(&p);
    assert!(checked > 150, "{checked} playlists");
}
