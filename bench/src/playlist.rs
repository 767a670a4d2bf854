//! What a viewer reads out of a media playlist, and where it goes next: segments,
//! parts with their wall-clock start (PROGRAM-DATE-TIME plus the offset within the
//! parent segment), the preload hint and the `_HLS_msn`/`_HLS_part` of the next
//! blocking reload. Pure: text in, a model out. The URIs in the model are slices of
//! the received playlist ([`Text`]), not copies: a viewer parses a playlist for every
//! part, and an allocation per listed URI was most of the load tool's own CPU.

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// A URI as written in a playlist: a slice of the playlist's bytes, valid UTF-8 (it is
/// cut at ASCII delimiters out of text that was checked whole). Clones share the bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(Bytes);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked when the playlist was parsed; checking a short URI again is cheap and
        // keeps this free of `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A partial segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Parent segment's media sequence number.
    pub msn: u64,
    /// Index within the parent segment.
    pub index: u32,
    /// URI as written (relative to the playlist).
    pub uri: Text,
    /// Duration, seconds.
    pub duration: f64,
    /// INDEPENDENT=YES.
    pub independent: bool,
    /// Wall-clock time of its first sample (unix ms), when the playlist has PDTs.
    pub start_ms: Option<i64>,
}

/// A complete segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// URI as written.
    pub uri: Text,
    /// EXTINF duration, seconds.
    pub duration: f64,
    /// Wall-clock time of its first sample (unix ms), when known.
    pub start_ms: Option<i64>,
    /// Its parts, if still listed.
    pub parts: Vec<Part>,
}

/// A parsed media playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: f64,
    /// PART-TARGET, seconds (LL-HLS only).
    pub part_target: Option<f64>,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// CAN-BLOCK-RELOAD=YES.
    pub can_block_reload: bool,
    /// CAN-SKIP-UNTIL is set: the server answers delta updates (`_HLS_skip=YES`).
    pub can_skip: bool,
    /// The last EXT-X-MAP URI.
    pub map_uri: Option<Text>,
    /// Complete segments, oldest first.
    pub segments: Vec<Segment>,
    /// Parts of the segment being built (`next_msn`).
    pub pending_parts: Vec<Part>,
    /// EXT-X-PRELOAD-HINT TYPE=PART URI.
    pub preload_hint: Option<Text>,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

/// Why a playlist could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// The text does not start with #EXTM3U.
    #[error("not a playlist (no #EXTM3U)")]
    NotAPlaylist,
    /// A tag we rely on is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl MediaPlaylist {
    /// Parses a media playlist as received (UTF-8, RFC 8216 section 4.1); the URIs in
    /// the result share `body`.
    pub fn parse_bytes(body: &Bytes) -> Result<Self, PlaylistError> {
        let text = std::str::from_utf8(body).map_err(|_| PlaylistError::Malformed("UTF-8"))?;
        let cut = |s: &str| Text(body.slice_ref(s.as_bytes()));
        let mut lines = text
            .split('\n')
            .map(str::trim_ascii)
            .filter(|l| !l.is_empty());
        if lines.next() != Some("#EXTM3U") {
            return Err(PlaylistError::NotAPlaylist);
        }
        let mut p = MediaPlaylist::default();
        let mut msn: Option<u64> = None;
        // State for the segment being read.
        let mut pdt: Option<i64> = None;
        let mut extinf: Option<f64> = None;
        let mut parts: Vec<Part> = Vec::new();
        let mut next_start: Option<i64> = None;
        let mut part_offset_ms = 0i64;
        for line in lines {
            let Some(tag) = line.strip_prefix('#') else {
                let m = *msn.get_or_insert(p.media_sequence);
                let duration = extinf.take().ok_or(PlaylistError::Malformed("EXTINF"))?;
                let start_ms = pdt.take().or(next_start);
                // The next segment has as many parts, give or take one (or none).
                let next_parts = match parts.len() {
                    0 => Vec::new(),
                    n => Vec::with_capacity(n + 1),
                };
                p.segments.push(Segment {
                    msn: m,
                    uri: cut(line),
                    duration,
                    start_ms,
                    parts: std::mem::replace(&mut parts, next_parts),
                });
                next_start = start_ms.map(|s| s + (duration * 1000.0).round() as i64);
                part_offset_ms = 0;
                msn = Some(m + 1);
                continue;
            };
            let (name, value) = match tag.bytes().position(|b| b == b':') {
                Some(i) => (&tag[..i], &tag[i + 1..]),
                None => (tag, ""),
            };
            match name {
                "EXT-X-TARGETDURATION" => {
                    p.target_duration = value
                        .parse()
                        .map_err(|_| PlaylistError::Malformed("EXT-X-TARGETDURATION"))?;
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    p.media_sequence = value
                        .parse()
                        .map_err(|_| PlaylistError::Malformed("EXT-X-MEDIA-SEQUENCE"))?;
                }
                "EXT-X-SKIP" => {
                    let n: u64 = attr(value, "SKIPPED-SEGMENTS")
                        .and_then(|v| v.parse().ok())
                        .ok_or(PlaylistError::Malformed("EXT-X-SKIP"))?;
                    msn = Some(msn.unwrap_or(p.media_sequence) + n);
                }
                "EXT-X-PART-INF" => {
                    p.part_target = attr(value, "PART-TARGET").and_then(|v| v.parse().ok());
                }
                "EXT-X-SERVER-CONTROL" => {
                    p.can_block_reload = attr(value, "CAN-BLOCK-RELOAD") == Some("YES");
                    p.can_skip = attr(value, "CAN-SKIP-UNTIL").is_some();
                }
                "EXT-X-MAP" => p.map_uri = attr(value, "URI").map(cut),
                "EXT-X-PROGRAM-DATE-TIME" => {
                    pdt = Some(
                        parse_date_time(value)
                            .ok_or(PlaylistError::Malformed("EXT-X-PROGRAM-DATE-TIME"))?,
                    );
                }
                "EXTINF" => {
                    let d = value.split(',').next().unwrap_or_default();
                    extinf = Some(d.parse().map_err(|_| PlaylistError::Malformed("EXTINF"))?);
                }
                "EXT-X-PART" => {
                    let duration: f64 = attr(value, "DURATION")
                        .and_then(|v| v.parse().ok())
                        .ok_or(PlaylistError::Malformed("EXT-X-PART DURATION"))?;
                    let uri =
                        attr(value, "URI").ok_or(PlaylistError::Malformed("EXT-X-PART URI"))?;
                    let base = pdt.or(next_start);
                    parts.push(Part {
                        msn: msn.unwrap_or(p.media_sequence),
                        index: u32::try_from(parts.len()).unwrap_or(u32::MAX),
                        uri: cut(uri),
                        duration,
                        independent: attr(value, "INDEPENDENT") == Some("YES"),
                        start_ms: base.map(|b| b + part_offset_ms),
                    });
                    part_offset_ms += (duration * 1000.0).round() as i64;
                }
                "EXT-X-PRELOAD-HINT" if attr(value, "TYPE") == Some("PART") => {
                    p.preload_hint = attr(value, "URI").map(cut);
                }
                "EXT-X-ENDLIST" => p.ended = true,
                _ => {}
            }
        }
        p.pending_parts = parts;
        Ok(p)
    }

    /// Parses a media playlist held as text (a copy: the URIs need bytes to share).
    pub fn parse(text: &str) -> Result<Self, PlaylistError> {
        Self::parse_bytes(&Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Media sequence number of the segment after the last complete one.
    pub fn next_msn(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.media_sequence, |s| s.msn + 1)
    }

    /// Every listed part in order, completed segments' first.
    pub fn parts(&self) -> impl Iterator<Item = &Part> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.pending_parts.iter())
    }

    /// The newest listed part.
    pub fn last_part(&self) -> Option<&Part> {
        self.pending_parts
            .last()
            .or_else(|| self.segments.last().and_then(|s| s.parts.last()))
    }

    /// `(msn, part)` of the part after the last listed one: what the next blocking
    /// reload asks for (`_HLS_msn`, `_HLS_part`) and what the preload hint names.
    pub fn next_part(&self) -> (u64, u32) {
        (
            self.next_msn(),
            u32::try_from(self.pending_parts.len()).unwrap_or(u32::MAX),
        )
    }

    /// Where a low-latency player joins: the newest part that starts with a key frame.
    pub fn join_part(&self) -> Option<&Part> {
        let all: Vec<&Part> = self.parts().collect();
        all.iter().rev().find(|p| p.independent).copied()
    }

    /// Wall-clock start of part `(msn, index)`, if listed with a PDT.
    pub fn part_start_ms(&self, msn: u64, index: u32) -> Option<i64> {
        self.parts()
            .find(|p| p.msn == msn && p.index == index)
            .and_then(|p| p.start_ms)
    }
}

/// The value of attribute `name` in an attribute list, quotes removed.
pub fn attr<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    // Byte scans: every delimiter is ASCII, so every index is a char boundary.
    let at = |s: &str, c: u8| s.bytes().position(|b| b == c);
    let mut rest = list;
    while !rest.is_empty() {
        let eq = at(rest, b'=')?;
        let (key, after) = (&rest[..eq], &rest[eq + 1..]);
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = at(q, b'"')?;
            (&q[..end], q[end + 1..].strip_prefix(',').unwrap_or(""))
        } else {
            match at(after, b',') {
                Some(i) => (&after[..i], &after[i + 1..]),
                None => (after, ""),
            }
        };
        if key.trim_ascii() == name {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// Parses an RFC 3339 date-time (`2026-02-28T23:59:59.999Z`, or with `+hh:mm`) into
/// unix milliseconds.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let da: u32 = d.next()?.parse().ok()?;
    let (clock, offset_min) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let pos = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..]
            .split_once(':')
            .unwrap_or((&off[1..3.min(off.len())], "0"));
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?),
        )
    };
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let mi: i64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || sec >= 61.0 {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    let ms = ((days * 86_400 + h * 3600 + mi * 60 - offset_min * 60) * 1000) as f64 + sec * 1000.0;
    Some(ms.round() as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_media::hls::{self, PartInfo, RenderOptions, SegmentInfo};

    const T0: i64 = 1_780_000_000_000;

    fn part(independent: bool) -> PartInfo {
        PartInfo {
            duration: 0.25,
            independent,
        }
    }

    fn seg(msn: u64, pdt: i64, parts: usize) -> SegmentInfo {
        SegmentInfo {
            msn,
            duration: 2.0,
            program_date_time_ms: pdt,
            discontinuity: false,
            init_id: 0,
            parts: (0..parts).map(|i| part(i == 0)).collect(),
        }
    }

    /// A live window as the origin renders it: segments 7 (parts dropped), 8 and 9
    /// (eight parts each), and three parts of 10 so far.
    fn live() -> hls::MediaPlaylist {
        hls::MediaPlaylist {
            target_duration: 2,
            part_target: 0.25,
            media_sequence: 7,
            discontinuity_sequence: 0,
            segments: vec![seg(7, T0, 0), seg(8, T0 + 2000, 8), seg(9, T0 + 4000, 8)],
            next_msn: 10,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: Some(T0 + 6000),
            pending_parts: vec![part(true), part(false), part(false)],
            ended: false,
        }
    }

    #[test]
    fn follows_a_rendered_ll_playlist() {
        let text = hls::render_media(&live(), &RenderOptions::default());
        let p = MediaPlaylist::parse(&text).unwrap();
        assert_eq!(p.target_duration, 2.0);
        assert_eq!(p.part_target, Some(0.25));
        assert!(p.can_block_reload);
        assert_eq!(p.map_uri.as_deref(), Some("init-0.mp4"));
        assert_eq!(
            p.segments.iter().map(|s| s.msn).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert_eq!(p.segments[2].uri, "seg-9.m4s");
        assert_eq!(p.segments[1].start_ms, Some(T0 + 2000));
        assert_eq!(p.parts().count(), 19);
        // The hint names the part after the last listed one, and the blocking reload
        // asks for exactly that.
        assert_eq!(p.preload_hint.as_deref(), Some("part-10.3.m4s"));
        assert_eq!(p.next_part(), (10, 3));
        let last = p.last_part().unwrap();
        assert_eq!(
            (last.msn, last.index, last.uri.as_str()),
            (10, 2, "part-10.2.m4s")
        );
        // PDT of the parent plus the durations of the parts before it.
        assert_eq!(last.start_ms, Some(T0 + 6000 + 500));
        assert_eq!(p.part_start_ms(9, 3), Some(T0 + 4000 + 750));
        // A low-latency player joins at the newest independent part.
        let join = p.join_part().unwrap();
        assert_eq!((join.msn, join.index), (10, 0));
        assert!(!p.ended);
    }

    #[test]
    fn next_part_after_a_completed_segment() {
        let mut snap = live();
        snap.pending_parts.clear();
        snap.next_program_date_time_ms = None;
        let p = MediaPlaylist::parse(&hls::render_media(&snap, &RenderOptions::default())).unwrap();
        assert_eq!(p.next_part(), (10, 0));
        assert_eq!(p.preload_hint.as_deref(), Some("part-10.0.m4s"));
        let last = p.last_part().unwrap();
        assert_eq!((last.msn, last.index), (9, 7));
        assert_eq!(last.start_ms, Some(T0 + 4000 + 1750));
    }

    #[test]
    fn delta_update_and_ended_playlists() {
        let mut snap = live();
        snap.segments = (0..10)
            .map(|i| seg(7 + i, T0 + 2000 * i as i64, 8))
            .collect();
        snap.next_msn = 17;
        snap.next_program_date_time_ms = Some(T0 + 20_000);
        let text = hls::render_media(&snap, &RenderOptions { skip: true });
        assert!(text.contains("#EXT-X-SKIP"), "{text}");
        let p = MediaPlaylist::parse(&text).unwrap();
        assert!(p.can_skip);
        // The newest parts keep their wall-clock start in a delta update.
        let last = p.last_part().unwrap();
        assert_eq!((last.msn, last.index), (17, 2));
        assert!(last.start_ms.is_some());
        // Skipped segments still count for the sequence numbers.
        assert_eq!(p.segments.last().unwrap().msn, 16);
        assert_eq!(p.next_part(), (17, 3));

        snap.ended = true;
        let p = MediaPlaylist::parse(&hls::render_media(&snap, &RenderOptions::default())).unwrap();
        assert!(p.ended);
        assert!(p.preload_hint.is_none());
        assert!(!p.can_block_reload);
    }

    #[test]
    fn classic_playlist_without_parts_or_pdt() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:4\n\
                    #EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\nk-4.ts\n#EXTINF:2.5,\nk-5.ts\n";
        let p = MediaPlaylist::parse(text).unwrap();
        assert_eq!(p.segments.len(), 2);
        assert_eq!((p.segments[1].msn, p.segments[1].duration), (5, 2.5));
        assert_eq!(p.segments[1].start_ms, None);
        assert!(p.part_target.is_none() && p.map_uri.is_none() && p.preload_hint.is_none());
        assert_eq!(p.next_msn(), 6);
        assert_eq!(
            MediaPlaylist::parse("<html>"),
            Err(PlaylistError::NotAPlaylist)
        );
    }

    #[test]
    fn date_times_round_trip_with_the_renderer() {
        for ms in [0, 951_782_399_999, T0, T0 + 123, 4_102_444_800_000] {
            assert_eq!(parse_date_time(&hls::format_date_time(ms)), Some(ms));
        }
        assert_eq!(parse_date_time("1970-01-01T01:00:00.500+01:00"), Some(500));
        assert_eq!(
            parse_date_time("1970-01-01T00:00:00-00:30"),
            Some(1_800_000)
        );
        assert_eq!(parse_date_time("1970-13-01T00:00:00Z"), None);
        assert_eq!(parse_date_time("garbage"), None);
    }

    #[test]
    fn bytes_must_be_utf8() {
        let text = hls::render_media(&live(), &RenderOptions::default());
        let body = Bytes::from(text.clone());
        let p = MediaPlaylist::parse_bytes(&body).unwrap();
        assert_eq!(p, MediaPlaylist::parse(&text).unwrap());
        // The URIs are slices of the body, not copies.
        let uri = &p.segments[0].uri;
        let at = uri.as_ptr() as usize - body.as_ptr() as usize;
        assert_eq!(&text[at..at + uri.len()], uri.as_str());
        let mut bad = text.into_bytes();
        bad.extend_from_slice(b"#EXT-X-PART:URI=\"\xff\"\n");
        assert_eq!(
            MediaPlaylist::parse_bytes(&Bytes::from(bad)),
            Err(PlaylistError::Malformed("UTF-8"))
        );
    }

    #[test]
    fn attribute_lists() {
        let l = r#"DURATION=0.25,URI="part-1.0.m4s",INDEPENDENT=YES"#;
        assert_eq!(attr(l, "URI"), Some("part-1.0.m4s"));
        assert_eq!(attr(l, "INDEPENDENT"), Some("YES"));
        assert_eq!(attr(l, "DURATION"), Some("0.25"));
        assert_eq!(attr(l, "BYTERANGE"), None);
        assert_eq!(attr(r#"URI="a,b",X=1"#, "X"), Some("1"));
    }
}
