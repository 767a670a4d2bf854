//! Rendering of LL-HLS media and multivariant playlists from a window snapshot, and
//! the Blocking Playlist Reload decision (rfc8216bis §6.2.5.2) over the same
//! snapshot. Seconds are rendered from whole milliseconds so no float noise reaches
//! the text and rounding is monotone (a part never rounds above PART-TARGET).

use std::fmt::Write as _;

use super::names;
use super::query::BlockingQuery;

/// §8: EXT-X-MAP in a playlist without EXT-X-I-FRAMES-ONLY needs version 6; nothing
/// else we write needs more. A Playlist Delta Update needs 9 for EXT-X-SKIP.
const VERSION: u32 = 6;
const VERSION_WITH_SKIP: u32 = 9;

/// One partial segment (a CMAF chunk).
#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with an independent (key) frame: INDEPENDENT=YES.
    pub independent: bool,
}

/// One complete media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Media sequence number.
    pub msn: u64,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of the first sample, unix milliseconds.
    pub program_date_time_ms: i64,
    /// Starts a discontinuity: EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// Init generation (EXT-X-MAP names `init-{init_id}.mp4`).
    pub init_id: u64,
    /// Its parts, in order; empty once too old to list (§6.2.2).
    pub parts: Vec<PartInfo>,
}

/// A snapshot of a live stream's window: everything a playlist shows, nothing more.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: u32,
    /// PART-TARGET, seconds.
    pub part_target: f64,
    /// Media sequence number of `segments[0]`.
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// Complete segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Media sequence number of the segment being built.
    pub next_msn: u64,
    /// Init generation of the segment being built.
    pub next_init_id: u64,
    /// The segment being built starts a discontinuity.
    pub next_discontinuity: bool,
    /// Wall-clock time of the first sample of the segment being built, if known.
    pub next_program_date_time_ms: Option<i64>,
    /// Parts of `next_msn` published so far.
    pub pending_parts: Vec<PartInfo>,
    /// The stream has ended: EXT-X-ENDLIST, no preload hint.
    pub ended: bool,
}

/// Per-request rendering choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// `_HLS_skip=YES` (or `v2`) was asked for: render a Playlist Delta Update.
    pub skip: bool,
}

/// One entry of the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Media playlist URI, relative to the multivariant playlist.
    pub uri: String,
    /// BANDWIDTH: peak bits per second.
    pub bandwidth: u64,
    /// CODECS (RFC 6381), comma-separated; omitted when empty.
    pub codecs: String,
    /// RESOLUTION (width, height).
    pub resolution: Option<(u32, u32)>,
    /// FRAME-RATE.
    pub frame_rate: Option<f64>,
}

/// What a blocking playlist request should do now (§6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockDecision {
    /// Answer now with the current playlist.
    Ready,
    /// Hold the request until the snapshot changes (503 after three target durations).
    Wait,
    /// Answer 400 now: the request is further ahead than any client should ask.
    BadRequest,
}

impl MediaPlaylist {
    /// The Skip Boundary advertised as CAN-SKIP-UNTIL: §4.4.3.8 requires at least six
    /// target durations; more would only make delta updates less useful.
    pub fn can_skip_until(&self) -> f64 {
        f64::from(self.target_duration) * 6.0
    }

    /// How many of the oldest segments a Playlist Delta Update replaces with
    /// EXT-X-SKIP. §6.2.5.1 skips segments "further from the end of the last (Parent)
    /// Media Segment in the Playlist than the Skip Boundary"; we read that
    /// conservatively: the whole segment (its end) lies more than CAN-SKIP-UNTIL before
    /// the end of the last complete segment. Skipping less is always safe for the
    /// client, and this matches the spec's own delta-update example.
    pub fn skip_count(&self) -> usize {
        let boundary_ms = u64::from(self.target_duration).saturating_mul(6_000);
        let total_ms = self
            .segments
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(to_ms(s.duration)));
        let mut end_ms = 0u64;
        let mut n = 0;
        for s in &self.segments {
            end_ms = end_ms.saturating_add(to_ms(s.duration));
            if total_ms - end_ms > boundary_ms {
                n += 1;
            } else {
                break;
            }
        }
        n
    }

    /// The Advance Part Limit of §6.2.5.2: "three divided by the Part Target Duration
    /// if the Part Target Duration is less than one second, or three otherwise".
    pub(crate) fn advance_part_limit(&self) -> f64 {
        if self.part_target.is_finite() && self.part_target > 0.0 && self.part_target < 1.0 {
            3.0 / self.part_target
        } else {
            3.0
        }
    }

    /// The listed segment `msn`, if the playlist shows it.
    pub fn segment(&self, msn: u64) -> Option<&SegmentInfo> {
        let idx = usize::try_from(msn.checked_sub(self.media_sequence)?).ok()?;
        self.segments.get(idx).filter(|s| s.msn == msn)
    }
}

/// Render the media playlist. Pure function of the snapshot; URIs are relative
/// ([`names`]). With `opts.skip` on a live playlist the oldest segments are replaced by
/// EXT-X-SKIP (§6.2.5.1); on an ended playlist the directive is ignored as §6.2.5.1
/// requires.
pub fn render_media(p: &MediaPlaylist, opts: &RenderOptions) -> String {
    let skipped = if opts.skip && !p.ended {
        p.skip_count()
    } else {
        0
    };
    let target_ms = u64::from(p.target_duration).saturating_mul(1000);
    let part_target_ms = to_ms(p.part_target);
    let mut out = String::with_capacity(256 + 160 * p.segments.len());
    let version = if skipped > 0 {
        VERSION_WITH_SKIP
    } else {
        VERSION
    };
    line(&mut out, format_args!("#EXTM3U"));
    line(&mut out, format_args!("#EXT-X-VERSION:{version}"));
    line(
        &mut out,
        format_args!("#EXT-X-TARGETDURATION:{}", p.target_duration),
    );
    // §4.4.3.8: HOLD-BACK >= 3 target durations (MUST); PART-HOLD-BACK >= 3 part targets
    // (SHOULD), computed from the advertised PART-TARGET so it holds on the text.
    // Blocking and skipping mean nothing once EXT-X-ENDLIST is present (§6.2.5.1,
    // §6.2.5.2: the server MUST ignore those directives), so they are not advertised.
    let hold = format!(
        "PART-HOLD-BACK={},HOLD-BACK={}",
        secs(part_target_ms.saturating_mul(3)),
        secs(target_ms.saturating_mul(3))
    );
    if p.ended {
        line(&mut out, format_args!("#EXT-X-SERVER-CONTROL:{hold}"));
    } else {
        line(
            &mut out,
            format_args!(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},{hold}",
                secs(target_ms.saturating_mul(6))
            ),
        );
    }
    line(
        &mut out,
        format_args!("#EXT-X-PART-INF:PART-TARGET={}", secs(part_target_ms)),
    );
    // §4.4.5.2: skipping does not change EXT-X-MEDIA-SEQUENCE (the first skipped
    // segment's) nor EXT-X-DISCONTINUITY-SEQUENCE. The latter is always written: §6.2.2
    // requires it once discontinuities can slide out, and after a failover it is the
    // only way a joining client learns the count.
    line(
        &mut out,
        format_args!("#EXT-X-MEDIA-SEQUENCE:{}", p.media_sequence),
    );
    line(
        &mut out,
        format_args!("#EXT-X-DISCONTINUITY-SEQUENCE:{}", p.discontinuity_sequence),
    );
    line(&mut out, format_args!("#EXT-X-INDEPENDENT-SEGMENTS"));
    if skipped > 0 {
        line(
            &mut out,
            format_args!("#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}"),
        );
    }

    // The first listed segment always gets its EXT-X-MAP (and PDT), so a delta update
    // is usable on its own terms and the map never hides behind the skip.
    let mut current_init: Option<u64> = None;
    for s in p.segments.iter().skip(skipped) {
        segment_tags(
            &mut out,
            s.discontinuity,
            s.init_id,
            Some(s.program_date_time_ms),
            &mut current_init,
        );
        parts(&mut out, s.msn, &s.parts);
        line(
            &mut out,
            format_args!("#EXTINF:{},", secs(to_ms(s.duration))),
        );
        line(&mut out, format_args!("{}", names::segment(s.msn)));
    }
    // §4.4.4.9: tags applied to a Parent Segment MUST precede its first EXT-X-PART.
    if !p.pending_parts.is_empty() {
        segment_tags(
            &mut out,
            p.next_discontinuity,
            p.next_init_id,
            p.next_program_date_time_ms,
            &mut current_init,
        );
        parts(&mut out, p.next_msn, &p.pending_parts);
    }
    if p.ended {
        line(&mut out, format_args!("#EXT-X-ENDLIST"));
    } else {
        // §4.4.5.3: never with EXT-X-ENDLIST; the URI MUST match the EXT-X-PART that
        // will later list it.
        let next = u32::try_from(p.pending_parts.len()).unwrap_or(u32::MAX);
        line(
            &mut out,
            format_args!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                names::part(p.next_msn, next)
            ),
        );
    }
    out
}

fn segment_tags(
    out: &mut String,
    discontinuity: bool,
    init_id: u64,
    pdt_ms: Option<i64>,
    current_init: &mut Option<u64>,
) {
    if discontinuity {
        line(out, format_args!("#EXT-X-DISCONTINUITY"));
    }
    if *current_init != Some(init_id) {
        line(
            out,
            format_args!("#EXT-X-MAP:URI=\"{}\"", names::init(init_id)),
        );
        *current_init = Some(init_id);
    }
    if let Some(ms) = pdt_ms {
        line(
            out,
            format_args!("#EXT-X-PROGRAM-DATE-TIME:{}", format_date_time(ms)),
        );
    }
}

fn parts(out: &mut String, msn: u64, parts: &[PartInfo]) {
    for (i, part) in parts.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let independent = if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        };
        line(
            out,
            format_args!(
                "#EXT-X-PART:DURATION={},URI=\"{}\"{independent}",
                secs(to_ms(part.duration)),
                names::part(msn, i)
            ),
        );
    }
}

/// Render the multivariant playlist. No EXT-X-VERSION: nothing in it needs more than
/// version 1, and §6.2.1 says the version SHOULD NOT exceed what the tags require.
pub fn render_multivariant(variants: &[Variant]) -> String {
    let mut out = String::with_capacity(64 + 160 * variants.len());
    line(&mut out, format_args!("#EXTM3U"));
    line(&mut out, format_args!("#EXT-X-INDEPENDENT-SEGMENTS"));
    for v in variants {
        let mut attrs = format!("BANDWIDTH={}", v.bandwidth);
        // A quoted-string cannot hold '"', CR or LF (§4.2); drop them rather than
        // let a bad codec string corrupt the playlist.
        let codecs: String = v
            .codecs
            .chars()
            .filter(|c| !matches!(c, '"' | '\r' | '\n'))
            .collect();
        if !codecs.is_empty() {
            let _ = write!(attrs, ",CODECS=\"{codecs}\"");
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(attrs, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
            let _ = write!(attrs, ",FRAME-RATE={}", secs(to_ms(fps)));
        }
        line(&mut out, format_args!("#EXT-X-STREAM-INF:{attrs}"));
        let uri: String = v
            .uri
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n'))
            .collect();
        line(&mut out, format_args!("{uri}"));
    }
    out
}

/// Decide a blocking playlist request against the current snapshot (§6.2.5.2).
///
/// - EXT-X-ENDLIST: the Server "MUST ignore `_HLS_msn` and `_HLS_part`" → Ready.
/// - `_HLS_part` without `_HLS_msn` → BadRequest (MUST).
/// - "If the `_HLS_msn` is greater than the Media Sequence Number of the last Media
///   Segment in the current Playlist plus two, or if the `_HLS_part` exceeds the last
///   Partial Segment in the current Playlist by the Advance Part Limit, then the server
///   SHOULD immediately return Bad Request". The last Media Segment is the last
///   complete one (`next_msn - 1`); the segment being built has no URI line yet, so it
///   is a Parent Segment of parts, not a Media Segment in the Playlist.
/// - `_HLS_msn=M` alone: ready once segment M or later is complete.
/// - `_HLS_msn=M&_HLS_part=N`: ready once part N of M, or anything later, is listed. "If
///   the Client requests a Part Index greater than that of the final Partial Segment of
///   the Parent Segment, the Server MUST treat the request as one for Part Index 0 of
///   the following Parent Segment."
/// - Anything older than the window is Ready: the full playlist is delivered "even if
///   it is no longer in the Playlist".
pub fn blocking_decision(p: &MediaPlaylist, q: &BlockingQuery) -> BlockDecision {
    if p.ended {
        return BlockDecision::Ready;
    }
    let Some(msn) = q.msn else {
        return if q.part.is_some() {
            BlockDecision::BadRequest
        } else {
            BlockDecision::Ready
        };
    };
    if msn > p.next_msn.saturating_add(1) {
        return BlockDecision::BadRequest;
    }
    let Some(part) = q.part else {
        return if msn < p.next_msn {
            BlockDecision::Ready
        } else {
            BlockDecision::Wait
        };
    };
    let (msn, part) = if msn < p.next_msn {
        match p.segment(msn) {
            // Past the final part of a complete segment: part 0 of the next one.
            Some(s) if !s.parts.is_empty() && part as usize >= s.parts.len() => {
                (msn.saturating_add(1), 0)
            }
            // The part is listed, or the segment is complete but its parts are no
            // longer listed, or it slid out of the window: all already available.
            _ => return BlockDecision::Ready,
        }
    } else {
        (msn, part)
    };
    if msn < p.next_msn {
        return BlockDecision::Ready;
    }
    let listed = p.pending_parts.len() as u64;
    let wanted = u64::from(part);
    if msn == p.next_msn && wanted < listed {
        return BlockDecision::Ready;
    }
    // How many parts past the last listed one the request is. For the segment after
    // next we do not know how many parts next_msn will still get, so we count only the
    // parts we know must come first, and refuse only what is surely too far.
    let ahead = if msn == p.next_msn {
        wanted + 1 - listed
    } else {
        wanted + 1
    };
    if ahead as f64 > p.advance_part_limit() {
        BlockDecision::BadRequest
    } else {
        BlockDecision::Wait
    }
}

/// ISO 8601 / RFC 3339 date-time in UTC with milliseconds, as EXT-X-PROGRAM-DATE-TIME
/// wants (§4.4.4.6): `2026-02-28T23:59:59.999Z`.
pub fn format_date_time(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs_of_day = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        ms_of_day % 1000
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01, by
/// splitting time into 400-year eras of 146097 days that start on 1 March, so the leap
/// day is the last day of each shifted year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from 1 March
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds to whole milliseconds; negative, NaN and infinite durations become 0 so a
/// broken snapshot cannot print "NaN" into a playlist.
fn to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        // `as` saturates at u64::MAX.
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

/// A decimal-floating-point with exactly three decimals.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::lint::lint;
    use crate::hls::query::SkipRequest;

    const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    fn part(duration: f64, independent: bool) -> PartInfo {
        PartInfo {
            duration,
            independent,
        }
    }

    fn two_parts() -> Vec<PartInfo> {
        vec![part(1.0, true), part(1.0, false)]
    }

    fn seg(
        msn: u64,
        pdt: i64,
        init_id: u64,
        discontinuity: bool,
        parts: Vec<PartInfo>,
    ) -> SegmentInfo {
        SegmentInfo {
            msn,
            duration: 2.0,
            program_date_time_ms: pdt,
            discontinuity,
            init_id,
            parts,
        }
    }

    fn empty(next_msn: u64) -> MediaPlaylist {
        MediaPlaylist {
            target_duration: 2,
            part_target: 1.0,
            media_sequence: next_msn,
            discontinuity_sequence: 0,
            segments: vec![],
            next_msn,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: None,
            pending_parts: vec![],
            ended: false,
        }
    }

    /// Segments 100..=103 of 2 s, parts listed on the last two, one part pending.
    fn window() -> MediaPlaylist {
        let segments = (0..4)
            .map(|i| {
                let parts = if i >= 2 { two_parts() } else { vec![] };
                seg(100 + i, T0 + 2000 * i as i64, 0, false, parts)
            })
            .collect();
        MediaPlaylist {
            segments,
            media_sequence: 100,
            next_program_date_time_ms: Some(T0 + 8000),
            pending_parts: vec![part(1.0, true)],
            ..empty(104)
        }
    }

    fn clean(text: &str) {
        let v = lint(text);
        assert!(v.is_empty(), "lint violations {v:#?} in\n{text}");
    }

    const LIVE_HEADER: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=3.000,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=1.000
";

    #[test]
    fn fresh_stream_with_pending_parts_only() {
        let p = MediaPlaylist {
            part_target: 0.5,
            next_program_date_time_ms: Some(T0),
            pending_parts: vec![part(0.5, true), part(0.5, false)],
            ..empty(0)
        };
        let text = render_media(&p, &RenderOptions::default());
        assert_eq!(
            text,
            "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=1.500,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part-0.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part-0.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-0.2.m4s\"
"
        );
        clean(&text);
    }

    #[test]
    fn nothing_yet_is_just_a_hint() {
        let text = render_media(&empty(0), &RenderOptions::default());
        assert_eq!(
            text,
            format!(
                "{LIVE_HEADER}#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-0.0.m4s\"
"
            )
        );
        clean(&text);
    }

    #[test]
    fn full_window_parts_on_last_segments() {
        let text = render_media(&window(), &RenderOptions::default());
        assert_eq!(
            text,
            format!(
                "{LIVE_HEADER}#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
seg-100.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXTINF:2.000,
seg-101.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=1.000,URI=\"part-102.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.000,URI=\"part-102.1.m4s\"
#EXTINF:2.000,
seg-102.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z
#EXT-X-PART:DURATION=1.000,URI=\"part-103.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.000,URI=\"part-103.1.m4s\"
#EXTINF:2.000,
seg-103.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z
#EXT-X-PART:DURATION=1.000,URI=\"part-104.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-104.1.m4s\"
"
            )
        );
        clean(&text);
    }

    #[test]
    fn discontinuity_and_init_change() {
        let p = MediaPlaylist {
            media_sequence: 5,
            discontinuity_sequence: 3,
            segments: vec![
                seg(5, T0, 0, false, vec![]),
                seg(6, T0 + 60_000, 1, true, two_parts()),
            ],
            next_init_id: 2,
            next_discontinuity: true,
            next_program_date_time_ms: Some(T0 + 120_000),
            pending_parts: vec![part(1.0, true)],
            ..empty(7)
        };
        let text = render_media(&p, &RenderOptions::default());
        assert_eq!(
            text,
            format!(
                "{LIVE_HEADER}#EXT-X-MEDIA-SEQUENCE:5
#EXT-X-DISCONTINUITY-SEQUENCE:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
seg-5.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000Z
#EXT-X-PART:DURATION=1.000,URI=\"part-6.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.000,URI=\"part-6.1.m4s\"
#EXTINF:2.000,
seg-6.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:15:20.000Z
#EXT-X-PART:DURATION=1.000,URI=\"part-7.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-7.1.m4s\"
"
            )
        );
        clean(&text);
        // Same init for the pending parts: no repeated EXT-X-MAP.
        let same = MediaPlaylist {
            next_init_id: 1,
            next_discontinuity: false,
            ..p
        };
        let text = render_media(&same, &RenderOptions::default());
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        clean(&text);
    }

    #[test]
    fn ended() {
        let p = MediaPlaylist {
            ended: true,
            pending_parts: vec![],
            next_program_date_time_ms: None,
            ..window()
        };
        for skip in [false, true] {
            let text = render_media(&p, &RenderOptions { skip });
            assert!(text.starts_with(
                "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:PART-HOLD-BACK=3.000,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=1.000
#EXT-X-MEDIA-SEQUENCE:100
"
            ));
            assert!(
                text.ends_with("#EXTINF:2.000,\nseg-103.m4s\n#EXT-X-ENDLIST\n"),
                "{text}"
            );
            assert!(!text.contains("PRELOAD-HINT"));
            assert!(!text.contains("EXT-X-SKIP"));
            clean(&text);
        }
    }

    /// 1-second segments 50..=59 (target 1, so the Skip Boundary is 6 s); init changes at 52.
    fn long_window() -> MediaPlaylist {
        let segments = (0..10u64)
            .map(|i| SegmentInfo {
                msn: 50 + i,
                duration: 1.0,
                program_date_time_ms: T0 + 1000 * i as i64,
                discontinuity: i == 2,
                init_id: u64::from(i >= 2),
                parts: if i >= 7 {
                    vec![part(0.5, true), part(0.5, false)]
                } else {
                    vec![]
                },
            })
            .collect();
        MediaPlaylist {
            target_duration: 1,
            part_target: 0.5,
            media_sequence: 50,
            discontinuity_sequence: 4,
            segments,
            next_init_id: 1,
            next_program_date_time_ms: Some(T0 + 10_000),
            pending_parts: vec![part(0.5, true)],
            ..empty(60)
        }
    }

    #[test]
    fn skip_delta_update() {
        let p = long_window();
        assert_eq!(p.can_skip_until(), 6.0);
        // Segment ends at 1..=10 s; skipped while 10 - end > 6, i.e. 50, 51, 52.
        assert_eq!(p.skip_count(), 3);
        let text = render_media(&p, &RenderOptions { skip: true });
        assert!(
            text.starts_with(
                "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=1.500,HOLD-BACK=3.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:50
#EXT-X-DISCONTINUITY-SEQUENCE:4
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXT-X-MAP:URI=\"init-1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z
#EXTINF:1.000,
seg-53.m4s
"
            ),
            "{text}"
        );
        for gone in [
            "seg-50.m4s",
            "seg-51.m4s",
            "seg-52.m4s",
            "init-0.mp4",
            "#EXT-X-DISCONTINUITY\n",
        ] {
            assert!(!text.contains(gone), "{gone} should be skipped");
        }
        assert_eq!(text.matches("#EXTINF").count(), 7);
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-60.1.m4s\"\n"));
        clean(&text);

        // Without the directive, the same snapshot is a full playlist at version 6.
        let full = render_media(&p, &RenderOptions::default());
        assert!(full.contains("#EXT-X-VERSION:6\n") && !full.contains("EXT-X-SKIP"));
        assert_eq!(full.matches("#EXTINF").count(), 10);
        clean(&full);

        // A window no longer than the boundary has nothing to skip: no EXT-X-SKIP at all
        // (SKIPPED-SEGMENTS=0 trips some parsers), and version stays 6.
        let short = MediaPlaylist {
            segments: p.segments[4..].to_vec(),
            media_sequence: 54,
            ..p.clone()
        };
        assert_eq!(short.skip_count(), 0);
        let text = render_media(&short, &RenderOptions { skip: true });
        assert!(text.contains("#EXT-X-VERSION:6\n") && !text.contains("EXT-X-SKIP"));
        clean(&text);

        // The first listed segment keeps its own DISCONTINUITY.
        let mut d = p.clone();
        d.segments[3].discontinuity = true;
        let text = render_media(&d, &RenderOptions { skip: true });
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP"));
    }

    #[test]
    fn multivariant() {
        let text = render_multivariant(&[
            Variant {
                uri: "index.m3u8".into(),
                bandwidth: 2_500_000,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                frame_rate: Some(29.97002997),
            },
            Variant {
                uri: "audio/index.m3u8\n#EVIL".into(),
                bandwidth: 128_000,
                codecs: "mp4a.40.2\"".into(),
                resolution: None,
                frame_rate: Some(f64::NAN),
            },
            Variant {
                uri: "x.m3u8".into(),
                bandwidth: 1,
                codecs: String::new(),
                resolution: None,
                frame_rate: Some(30.0),
            },
        ]);
        assert_eq!(
            text,
            "#EXTM3U
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970
index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS=\"mp4a.40.2\"
audio/index.m3u8#EVIL
#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=30.000
x.m3u8
"
        );
    }

    #[test]
    fn numbers_have_no_float_noise() {
        let mut p = window();
        p.part_target = 0.1 + 0.2; // 0.30000000000000004
        p.segments[3].duration = 1.9999999;
        p.segments[3].parts = vec![part(0.1 + 0.2, true); 6];
        p.segments[3].parts[5].duration = 0.4 - 0.1 - 0.1 - 0.1; // 0.10000000000000003
        p.pending_parts = vec![part(f64::NAN, true), part(-1.0, false)];
        let text = render_media(&p, &RenderOptions::default());
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.300\n"));
        assert!(text.contains("PART-HOLD-BACK=0.900,"));
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.300,URI=\"part-103.0.m4s\",INDEPENDENT=YES\n")
        );
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.100,URI=\"part-103.5.m4s\",INDEPENDENT=YES\n")
        );
        assert!(text.contains("#EXTINF:2.000,\nseg-103.m4s\n"));
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.000,URI=\"part-104.0.m4s\",INDEPENDENT=YES\n")
        );
        assert!(!text.contains("NaN") && !text.contains("inf") && !text.contains("=-"));
    }

    #[test]
    fn program_date_time() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (T0 + 7, "2023-11-14T22:13:20.007Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_782_400_000 - 1, "2000-02-28T23:59:59.999Z"),
            (1_709_164_800_000 + 86_399_999, "2024-02-29T23:59:59.999Z"),
            (1_709_164_800_000 + 86_400_000, "2024-03-01T00:00:00.000Z"),
            (1_677_628_800_000 - 1, "2023-02-28T23:59:59.999Z"),
            (1_677_628_800_000, "2023-03-01T00:00:00.000Z"),
            (-2_203_891_200_000 - 1, "1900-02-28T23:59:59.999Z"),
            (4_107_542_400_000 - 1, "2100-02-28T23:59:59.999Z"),
            (-11_670_998_400_000, "1600-02-29T00:00:00.000Z"),
            (1_798_761_600_000 - 1, "2026-12-31T23:59:59.999Z"),
            (1_798_761_600_000, "2027-01-01T00:00:00.000Z"),
            (
                1_798_761_600_000 - 86_400_000 * 31,
                "2026-12-01T00:00:00.000Z",
            ),
            (
                1_798_761_600_000 - 86_400_000 * 31 - 1,
                "2026-11-30T23:59:59.999Z",
            ),
        ] {
            assert_eq!(format_date_time(ms), want, "{ms}");
        }
        // Extremes do not panic.
        let _ = format_date_time(i64::MIN);
        let _ = format_date_time(i64::MAX);
    }

    fn q(msn: Option<u64>, part: Option<u32>) -> BlockingQuery {
        BlockingQuery {
            msn,
            part,
            skip: SkipRequest::No,
        }
    }

    #[test]
    fn blocking_boundaries() {
        use BlockDecision::{BadRequest, Ready, Wait};
        // Complete 100..=103 (parts listed on 102, 103: two each), one part of 104.
        // Part target 1 s, so the Advance Part Limit is 3.
        let p = window();
        let cases: &[(Option<u64>, Option<u32>, BlockDecision)] = &[
            (None, None, Ready),
            (None, Some(0), BadRequest),
            (Some(0), None, Ready), // long gone: full playlist now
            (Some(0), Some(9), Ready),
            (Some(103), None, Ready),
            (Some(104), None, Wait),       // being built
            (Some(105), None, Wait),       // last Media Segment (103) + 2
            (Some(106), None, BadRequest), // + 3
            (Some(u64::MAX), None, BadRequest),
            (Some(100), Some(5), Ready), // complete, parts no longer listed
            (Some(103), Some(1), Ready), // listed part
            (Some(103), Some(2), Ready), // past its final part: 104.0, listed
            (Some(104), Some(0), Ready),
            (Some(104), Some(1), Wait), // the hinted part
            (Some(104), Some(3), Wait), // 3 past the last listed part: at the limit
            (Some(104), Some(4), BadRequest),
            (Some(104), Some(u32::MAX), BadRequest),
            (Some(105), Some(0), Wait),
            (Some(105), Some(2), Wait),
            (Some(105), Some(3), BadRequest),
            (Some(106), Some(0), BadRequest),
        ];
        for &(msn, part, want) in cases {
            assert_eq!(
                blocking_decision(&p, &q(msn, part)),
                want,
                "{msn:?} {part:?}"
            );
        }

        // Nothing of 104 yet: asking past 103's final part waits for 104.0.
        let idle = MediaPlaylist {
            pending_parts: vec![],
            ..window()
        };
        assert_eq!(blocking_decision(&idle, &q(Some(103), Some(2))), Wait);
        assert_eq!(blocking_decision(&idle, &q(Some(103), Some(1))), Ready);
        assert_eq!(blocking_decision(&idle, &q(Some(104), Some(0))), Wait);
        assert_eq!(blocking_decision(&idle, &q(Some(104), Some(2))), Wait);
        assert_eq!(blocking_decision(&idle, &q(Some(104), Some(3))), BadRequest);

        // Sub-second parts: the limit is 3 / PART-TARGET = 6 parts.
        let fast = MediaPlaylist {
            part_target: 0.5,
            ..window()
        };
        assert_eq!(blocking_decision(&fast, &q(Some(104), Some(6))), Wait);
        assert_eq!(blocking_decision(&fast, &q(Some(104), Some(7))), BadRequest);

        // A fresh stream: the last Media Segment is "-1", so 0 and 1 may block, 2 may not.
        let fresh = empty(0);
        assert_eq!(blocking_decision(&fresh, &q(Some(0), None)), Wait);
        assert_eq!(blocking_decision(&fresh, &q(Some(1), None)), Wait);
        assert_eq!(blocking_decision(&fresh, &q(Some(2), None)), BadRequest);
        assert_eq!(blocking_decision(&fresh, &q(Some(0), Some(0))), Wait);

        // EXT-X-ENDLIST: directives are ignored.
        let ended = MediaPlaylist {
            ended: true,
            ..window()
        };
        assert_eq!(blocking_decision(&ended, &q(Some(1_000), Some(50))), Ready);
    }

    /// A small segmenter: `parts_per_seg` parts per segment (the last one shorter), a
    /// window of `window` segments, parts listed for three target durations, a
    /// discontinuity with a new init every `disc_every` segments. Every snapshot it
    /// goes through, rendered full and as a delta update, must lint clean.
    fn simulate(
        target: u32,
        part_target: f64,
        parts_per_seg: usize,
        window: usize,
        disc_every: u64,
    ) -> usize {
        let mut p = MediaPlaylist {
            target_duration: target,
            part_target,
            next_program_date_time_ms: Some(T0),
            ..empty(0)
        };
        let mut checked = 0;
        let mut pdt = T0;
        for step in 0..(parts_per_seg * (window + 9)) {
            let idx = step % parts_per_seg;
            let last = idx + 1 == parts_per_seg;
            let dur = if last { part_target * 0.6 } else { part_target };
            p.pending_parts.push(part(dur, idx == 0));
            if last {
                let duration: f64 = p.pending_parts.iter().map(|x| x.duration).sum();
                p.segments.push(SegmentInfo {
                    msn: p.next_msn,
                    duration,
                    program_date_time_ms: p.next_program_date_time_ms.unwrap_or(pdt),
                    discontinuity: p.next_discontinuity,
                    init_id: p.next_init_id,
                    parts: std::mem::take(&mut p.pending_parts),
                });
                pdt += (duration * 1000.0) as i64;
                p.next_msn += 1;
                p.next_program_date_time_ms = Some(pdt);
                p.next_discontinuity = p.next_msn.is_multiple_of(disc_every);
                if p.next_discontinuity {
                    p.next_init_id += 1;
                }
                if p.segments.len() > window {
                    let gone = p.segments.remove(0);
                    p.media_sequence += 1;
                    if gone.discontinuity {
                        p.discontinuity_sequence += 1;
                    }
                }
                let keep_parts = (3.0 * f64::from(target) / duration).ceil() as usize;
                let n = p.segments.len();
                for s in p.segments.iter_mut().take(n.saturating_sub(keep_parts)) {
                    s.parts.clear();
                }
            }
            for skip in [false, true] {
                clean(&render_media(&p, &RenderOptions { skip }));
                checked += 1;
            }
        }
        p.ended = true;
        clean(&render_media(&p, &RenderOptions::default()));
        checked + 1
    }

    #[test]
    fn generated_playlists_lint_clean() {
        let mut n = 0;
        n += simulate(2, 0.5, 4, 8, 5);
        n += simulate(1, 0.25, 4, 12, 7);
        n += simulate(4, 1.0, 4, 20, 3);
        n += simulate(6, 1.5, 4, 10, 1000);
        n += simulate(2, 0.333, 6, 15, 4);
        assert!(n > 300);
    }

    #[test]
    fn window_accessors() {
        let p = window();
        assert_eq!(p.segment(102).map(|s| s.msn), Some(102));
        assert!(p.segment(99).is_none() && p.segment(104).is_none());
        assert_eq!(p.advance_part_limit(), 3.0);
    }
}
