//! A structural checker for media playlists: the rfc8216bis rules that can be checked
//! from the text alone. Used by our unit tests on rendered playlists and by the
//! end-to-end tests against live servers. Returns violations; empty means clean.
//!
//! Where URIs follow [`super::names`], it also checks sequence numbering: segments are
//! consecutive from EXT-X-MEDIA-SEQUENCE (+ SKIPPED-SEGMENTS), parts belong to the
//! segment that follows them and are numbered from 0, and the preload hint names the
//! next part.

use super::names::{self, Object};

/// Check one media playlist text. Each violation is one human-readable line that
/// starts with the 1-based line number it concerns (0 for the whole playlist).
pub fn lint(playlist_text: &str) -> Vec<String> {
    let mut l = Linter::default();
    let lines: Vec<&str> = playlist_text
        .lines()
        .map(|s| s.trim_end_matches('\r'))
        .collect();
    if lines.first() != Some(&"#EXTM3U") {
        l.err(1, "first line must be #EXTM3U (§4.3.1.1)");
    }
    for (i, text) in lines.iter().enumerate().skip(1) {
        l.line(i + 1, text);
    }
    l.finish();
    l.out
}

#[derive(Debug, Clone)]
struct Part {
    line: usize,
    duration: f64,
    independent: bool,
    name: Option<(u64, u32)>,
}

#[derive(Debug, Default)]
struct Linter {
    out: Vec<String>,
    version: Option<u64>,
    target: Option<u64>,
    part_target: Option<f64>,
    media_sequence: Option<u64>,
    skipped: u64,
    skip_line: Option<usize>,
    server_control: Vec<(String, String)>,
    seen_media: bool,
    seen_map: bool,
    first_media_has_map: bool,
    /// Parts since the last segment URI line: the current Parent Segment's.
    parts: Vec<Part>,
    /// The EXTINF (line, duration) waiting for its URI line.
    extinf: Option<(usize, f64)>,
    /// Next segment's msn, known while the segment URIs follow our names.
    expected_msn: Option<u64>,
    /// Complete segments seen so far.
    segments: u64,
    hints: Vec<(usize, String, String)>,
    endlist: Option<usize>,
}

impl Linter {
    fn err(&mut self, line: usize, msg: impl std::fmt::Display) {
        self.out.push(format!("line {line}: {msg}"));
    }

    fn line(&mut self, n: usize, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        if let Some(&(hint_line, _, _)) = self.hints.first() {
            let allowed = text.starts_with("#EXT-X-PRELOAD-HINT")
                || text.starts_with("#EXT-X-RENDITION-REPORT")
                || (text.starts_with('#') && !text.starts_with("#EXT"));
            if !allowed {
                self.err(
                    n,
                    format!("content after EXT-X-PRELOAD-HINT (line {hint_line})"),
                );
            }
        }
        if let Some(end) = self.endlist {
            if !text.starts_with('#') || text.starts_with("#EXT-X-PART:") {
                self.err(n, format!("media after EXT-X-ENDLIST (line {end})"));
            }
        }
        let Some(tag) = text.strip_prefix('#') else {
            self.uri_line(n, text);
            return;
        };
        if !tag.starts_with("EXT") {
            return; // comment
        }
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        match name {
            "EXT-X-VERSION" => self.version = self.int(n, name, value),
            "EXT-X-TARGETDURATION" => {
                if self.target.is_some() {
                    self.err(n, "EXT-X-TARGETDURATION appears twice");
                }
                self.target = self.int(n, name, value);
            }
            "EXT-X-MEDIA-SEQUENCE" => {
                if self.seen_media {
                    self.err(n, "EXT-X-MEDIA-SEQUENCE after the first segment (§4.4.3.2)");
                }
                self.media_sequence = self.int(n, name, value);
            }
            "EXT-X-PART-INF" => {
                let attrs = attributes(value);
                self.part_target = get(&attrs, "PART-TARGET").and_then(float);
                if self.part_target.is_none() {
                    self.err(n, "EXT-X-PART-INF without a valid PART-TARGET");
                }
            }
            "EXT-X-SERVER-CONTROL" => self.server_control = attributes(value),
            "EXT-X-SKIP" => {
                if self.skip_line.is_some() {
                    self.err(n, "EXT-X-SKIP MUST NOT appear more than once (§4.4.5.2)");
                }
                if self.seen_media {
                    self.err(n, "EXT-X-SKIP after the first segment");
                }
                self.skip_line = Some(n);
                let attrs = attributes(value);
                match get(&attrs, "SKIPPED-SEGMENTS").and_then(int) {
                    Some(0) | None => self.err(n, "EXT-X-SKIP needs SKIPPED-SEGMENTS >= 1"),
                    Some(k) => self.skipped = k,
                }
            }
            "EXT-X-DISCONTINUITY" | "EXT-X-MAP" | "EXT-X-PROGRAM-DATE-TIME" | "EXT-X-KEY" => {
                if let Some(p) = self.parts.first() {
                    self.err(
                        n,
                        format!(
                            "{name} after the first EXT-X-PART of its Parent Segment (line {}) (§4.4.4.9)",
                            p.line
                        ),
                    );
                }
                if self.extinf.is_some() {
                    self.err(n, format!("{name} between EXTINF and its URI"));
                }
                if name == "EXT-X-MAP" {
                    if !self.seen_media {
                        self.first_media_has_map = true;
                    }
                    self.seen_map = true;
                }
                if name == "EXT-X-PROGRAM-DATE-TIME" && !plausible_date_time(value) {
                    self.err(
                        n,
                        format!("EXT-X-PROGRAM-DATE-TIME not ISO 8601: {value:?}"),
                    );
                }
            }
            "EXT-X-PART" => self.part(n, value),
            "EXTINF" => {
                let dur = value.split(',').next().and_then(float);
                match dur {
                    None => self.err(n, "EXTINF without a valid duration"),
                    Some(d) => {
                        if let Some(t) = self.target {
                            if d.round() > t as f64 {
                                self.err(
                                    n,
                                    format!(
                                        "EXTINF {d} rounds above TARGETDURATION {t} (§4.4.3.1)"
                                    ),
                                );
                            }
                        }
                        self.extinf = Some((n, d));
                    }
                }
            }
            "EXT-X-PRELOAD-HINT" => {
                let attrs = attributes(value);
                let ty = get(&attrs, "TYPE").unwrap_or_default().to_owned();
                let uri = get(&attrs, "URI").unwrap_or_default().to_owned();
                if self.hints.iter().any(|(_, t, _)| *t == ty) {
                    self.err(
                        n,
                        format!("second EXT-X-PRELOAD-HINT of TYPE={ty} (§6.2.6)"),
                    );
                }
                if uri.is_empty() {
                    self.err(n, "EXT-X-PRELOAD-HINT without URI");
                }
                self.hints.push((n, ty, uri));
            }
            "EXT-X-ENDLIST" => self.endlist = Some(n),
            _ => {}
        }
    }

    fn int(&mut self, n: usize, name: &str, value: &str) -> Option<u64> {
        let v = int(value);
        if v.is_none() {
            self.err(n, format!("{name} is not a decimal-integer: {value:?}"));
        }
        v
    }

    fn part(&mut self, n: usize, value: &str) {
        let attrs = attributes(value);
        let Some(duration) = get(&attrs, "DURATION").and_then(float) else {
            self.err(n, "EXT-X-PART without a valid DURATION");
            return;
        };
        let Some(uri) = get(&attrs, "URI") else {
            self.err(n, "EXT-X-PART without URI");
            return;
        };
        match self.part_target {
            None => self.err(
                n,
                "EXT-X-PART before (or without) EXT-X-PART-INF (§4.4.3.7)",
            ),
            Some(t) if duration > t => self.err(
                n,
                format!("part DURATION {duration} exceeds PART-TARGET {t} (§4.4.4.9)"),
            ),
            Some(_) => {}
        }
        if self.extinf.is_some() {
            self.err(n, "EXT-X-PART between EXTINF and its URI");
        }
        self.seen_media = true;
        let name = match names::parse(uri) {
            Some(Object::Part(msn, i)) => Some((msn, i)),
            _ => None,
        };
        if let (Some((msn, i)), Some(prev)) = (name, self.parts.last().and_then(|p| p.name)) {
            if msn != prev.0 || Some(i) != prev.1.checked_add(1) {
                self.err(
                    n,
                    format!("part {uri} does not follow part {}.{}", prev.0, prev.1),
                );
            }
        }
        self.parts.push(Part {
            line: n,
            duration,
            independent: get(&attrs, "INDEPENDENT") == Some("YES"),
            name,
        });
    }

    fn uri_line(&mut self, n: usize, uri: &str) {
        self.seen_media = true;
        let Some((_, duration)) = self.extinf.take() else {
            self.err(n, format!("URI {uri:?} without EXTINF"));
            self.parts.clear();
            return;
        };
        let first = self.segments == 0;
        self.segments += 1;
        if first && self.seen_map && !self.first_media_has_map {
            self.err(n, "first listed segment is not preceded by an EXT-X-MAP");
        }
        let msn = match names::parse(uri) {
            Some(Object::Segment(msn)) => Some(msn),
            _ => None,
        };
        if let Some(msn) = msn {
            let expected = self
                .expected_msn
                .or_else(|| self.media_sequence.unwrap_or(0).checked_add(self.skipped));
            if expected != Some(msn) {
                self.err(
                    n,
                    format!(
                        "segment {uri} but EXT-X-MEDIA-SEQUENCE/SKIP/order imply msn {expected:?}"
                    ),
                );
            }
            self.expected_msn = msn.checked_add(1);
        } else {
            self.expected_msn = None;
        }
        let parts = std::mem::take(&mut self.parts);
        self.check_parent(&parts, msn, true);
        if let (Some(first), false) = (parts.first(), parts.is_empty()) {
            // Only a full set of parts must add up to the segment (§3.2: same samples).
            if first.name.is_none_or(|(_, i)| i == 0) {
                let sum: f64 = parts.iter().map(|p| p.duration).sum();
                let tolerance = 0.001 * (parts.len() as f64 + 1.0);
                if (sum - duration).abs() > tolerance {
                    self.err(
                        n,
                        format!("parts add up to {sum:.3}s but EXTINF says {duration:.3}s"),
                    );
                }
            }
        }
    }

    /// Checks shared by the parts of a complete segment and the trailing parts.
    fn check_parent(&mut self, parts: &[Part], msn: Option<u64>, complete: bool) {
        let Some(target) = self.part_target else {
            return;
        };
        let last = parts.len().saturating_sub(1);
        for (i, p) in parts.iter().enumerate() {
            // §4.4.4.9: >= 85% of PART-TARGET except INDEPENDENT parts and the final part
            // of a Parent Segment (for trailing parts the last one may yet be final).
            if i != last && !p.independent && p.duration < 0.85 * target - 0.0005 {
                self.err(
                    p.line,
                    format!(
                        "part DURATION {} below 85% of PART-TARGET {target} (§4.4.4.9)",
                        p.duration
                    ),
                );
            }
            if let Some((pmsn, idx)) = p.name {
                if i == 0 && idx != 0 && !complete {
                    self.err(p.line, "trailing parts must start at part index 0");
                }
                if let Some(msn) = msn {
                    if pmsn != msn {
                        self.err(
                            p.line,
                            format!("part of msn {pmsn} listed before segment {msn}"),
                        );
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        if self.target.is_none() {
            self.err(0, "EXT-X-TARGETDURATION is REQUIRED (§4.4.3.1)");
        }
        if let Some((n, _)) = self.extinf {
            self.err(n, "EXTINF without a URI line");
        }
        let trailing = std::mem::take(&mut self.parts);
        let next_msn = self.expected_msn.or_else(|| {
            (self.segments == 0)
                .then(|| self.media_sequence.unwrap_or(0).checked_add(self.skipped))
                .flatten()
        });
        self.check_parent(&trailing, next_msn, false);
        if let Some(end) = self.endlist {
            if let Some(&(n, _, _)) = self.hints.first() {
                self.err(
                    n,
                    format!("EXT-X-PRELOAD-HINT with EXT-X-ENDLIST (line {end}) (§4.4.5.3)"),
                );
            }
        }
        // The hint names the part right after the last listed one.
        let hints = std::mem::take(&mut self.hints);
        for (n, ty, uri) in &hints {
            if ty != "PART" {
                continue;
            }
            let Some(Object::Part(hmsn, hidx)) = names::parse(uri) else {
                continue;
            };
            let expected = match trailing.last().and_then(|p| p.name) {
                Some((msn, i)) => Some((msn, i.saturating_add(1))),
                None if trailing.is_empty() => next_msn.map(|m| (m, 0)),
                None => None,
            };
            if let Some(e) = expected {
                if e != (hmsn, hidx) {
                    self.err(
                        *n,
                        format!(
                            "preload hint {uri} but the next part is {}",
                            names::part(e.0, e.1)
                        ),
                    );
                }
            }
        }
        let has_parts = self.part_target.is_some();
        if let Some(v) = self.version {
            if self.skip_line.is_some() && v < 9 {
                self.err(0, "EXT-X-SKIP needs EXT-X-VERSION 9 or higher (§8)");
            }
            if self.seen_map && v < 6 {
                self.err(0, "EXT-X-MAP needs EXT-X-VERSION 6 or higher (§8)");
            }
        } else if self.skip_line.is_some() || self.seen_map {
            self.err(
                0,
                "EXT-X-VERSION missing but required features are used (§8)",
            );
        }
        let sc = std::mem::take(&mut self.server_control);
        let target = self.target.unwrap_or(0) as f64;
        let check_min = |l: &mut Self, key: &str, min: f64, why: &str| {
            if let Some(v) = get(&sc, key) {
                match float(v) {
                    Some(x) if x + 0.0005 >= min => {}
                    _ => l.err(0, format!("{key}={v} below {min:.3} ({why})")),
                }
            }
        };
        check_min(
            self,
            "CAN-SKIP-UNTIL",
            6.0 * target,
            "MUST be >= 6x target, §4.4.3.8",
        );
        check_min(
            self,
            "HOLD-BACK",
            3.0 * target,
            "MUST be >= 3x target, §4.4.3.8",
        );
        if let Some(pt) = self.part_target {
            check_min(
                self,
                "PART-HOLD-BACK",
                2.0 * pt,
                "MUST be >= 2x part target, §4.4.3.8",
            );
            check_min(
                self,
                "PART-HOLD-BACK",
                3.0 * pt,
                "SHOULD be >= 3x part target, §4.4.3.8",
            );
        }
        if has_parts && get(&sc, "PART-HOLD-BACK").is_none() {
            self.err(
                0,
                "PART-HOLD-BACK is REQUIRED with EXT-X-PART-INF (§4.4.3.8)",
            );
        }
        if self.skip_line.is_some() && get(&sc, "CAN-SKIP-UNTIL").is_none() {
            self.err(0, "EXT-X-SKIP without CAN-SKIP-UNTIL");
        }
    }
}

/// Split an attribute-list (§4.2) into (name, value) with quotes removed. Tolerant:
/// malformed pairs are dropped; the checks above report what is missing.
fn attributes(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v, n.strip_prefix(',').unwrap_or(n)),
                None => (q, ""),
            }
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.push((name.trim().to_owned(), value.to_owned()));
        rest = next;
    }
    out
}

fn get<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn int(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// decimal-floating-point (§4.2): digits with at most one '.'.
fn float(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1
        && s.bytes().any(|b| b.is_ascii_digit());
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// `YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)`, shape only.
fn plausible_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10))
        || !(at(10, b'T') && digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':'))
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6) && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=1.500,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part-10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part-10.1.m4s\"
#EXTINF:1.000,
seg-10.m4s
#EXT-X-PART:DURATION=0.500,URI=\"part-11.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-11.1.m4s\"
";

    #[test]
    fn clean_playlist_passes() {
        assert_eq!(lint(GOOD), Vec::<String>::new());
    }

    fn expect(text: &str, needle: &str) {
        let v = lint(text);
        assert!(
            v.iter().any(|e| e.contains(needle)),
            "expected a violation containing {needle:?}, got {v:#?}"
        );
    }

    #[test]
    fn catches_violations() {
        expect(&GOOD.replace("#EXTM3U\n", ""), "#EXTM3U");
        expect(
            &GOOD.replace(
                "DURATION=0.500,URI=\"part-10.1",
                "DURATION=0.600,URI=\"part-10.1",
            ),
            "exceeds PART-TARGET",
        );
        expect(
            &GOOD.replace("#EXTINF:1.000", "#EXTINF:2.600"),
            "rounds above",
        );
        expect(
            &GOOD.replace("MEDIA-SEQUENCE:10", "MEDIA-SEQUENCE:9"),
            "imply msn",
        );
        expect(
            &GOOD.replace("part-11.1.m4s", "part-11.2.m4s"),
            "preload hint",
        );
        expect(
            &format!("{GOOD}#EXT-X-PART:DURATION=0.500,URI=\"part-11.1.m4s\"\n"),
            "after EXT-X-PRELOAD-HINT",
        );
        expect(&format!("{GOOD}#EXT-X-ENDLIST\n"), "with EXT-X-ENDLIST");
        expect(
            &GOOD.replace("PART-HOLD-BACK=1.500", "PART-HOLD-BACK=0.900"),
            "PART-HOLD-BACK",
        );
        expect(
            &GOOD.replace("CAN-SKIP-UNTIL=12.000", "CAN-SKIP-UNTIL=6.000"),
            "CAN-SKIP-UNTIL",
        );
        expect(
            &GOOD.replace("part-10.1.m4s", "part-11.1.m4s"),
            "does not follow",
        );
        expect(&GOOD.replace("T00:00:00.000Z", " 00:00:00"), "ISO 8601");
        expect(
            &GOOD.replace(
                "DURATION=0.500,URI=\"part-10.0.m4s\",INDEPENDENT=YES",
                "DURATION=0.200,URI=\"part-10.0.m4s\"",
            ),
            "85%",
        );
        expect(
            &GOOD.replace(
                "#EXT-X-PART:DURATION=0.500,URI=\"part-11.0.m4s\",INDEPENDENT=YES\n",
                "#EXT-X-PART:DURATION=0.500,URI=\"part-11.0.m4s\",INDEPENDENT=YES\n#EXT-X-DISCONTINUITY\n",
            ),
            "after the first EXT-X-PART",
        );
        expect(
            &GOOD.replace(
                "#EXT-X-MEDIA-SEQUENCE:10\n",
                "#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n",
            ),
            "VERSION 9",
        );
        expect(&GOOD.replace("#EXTINF:1.000,\n", ""), "without EXTINF");
    }

    #[test]
    fn date_time_shapes() {
        assert!(plausible_date_time("2026-01-01T00:00:00.000Z"));
        assert!(plausible_date_time("2026-01-01T00:00:00+00:00"));
        assert!(!plausible_date_time("2026-01-01T00:00:00.Z"));
        assert!(!plausible_date_time("2026-01-01T00:00:00.000"));
        assert!(!plausible_date_time("2026-01-01T00:00:00.000Zx"));
    }

    /// Garbage in, no panic out: lint, the query parser and the name parser all see
    /// untrusted text.
    #[test]
    fn arbitrary_text_never_panics() {
        const ALPHABET: &[&str] = &[
            "#EXT-X-PART:",
            "#EXTINF:",
            "#EXT-X-SKIP:",
            "#EXT-X-PRELOAD-HINT:",
            "=",
            ",",
            "\"",
            "\n",
            "URI=",
            "DURATION=",
            "seg-",
            "part-",
            ".m4s",
            "1",
            "0",
            "9",
            ".",
            "%",
            "%5F",
            "&",
            "_HLS_msn",
            "_HLS_part",
            "_HLS_skip",
            "YES",
            "-",
            "T",
            "Z",
            "é",
            "\r",
            "#EXT-X-TARGETDURATION:",
            "#EXT-X-PART-INF:PART-TARGET=",
            "#EXTM3U\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push_str(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
            }
            let _ = lint(&s);
            let _ = crate::hls::parse_query(&s);
            let _ = names::parse(&s);
        }
    }
}
