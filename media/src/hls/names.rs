//! Deterministic object names, relative to `/live/{stream}/`, and their strict inverse.
//! `parse` accepts only the exact spelling `init`/`segment`/`part` produce, so every
//! object has exactly one name and a cache keyed by name never holds it twice.

/// Name of the media playlist.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
/// Name of the multivariant playlist.
pub const MULTIVARIANT: &str = "master.m3u8";

/// `init-{id}.mp4`: the CMAF header (EXT-X-MAP) for init generation `id`.
pub fn init(id: u64) -> String {
    format!("init-{id}.mp4")
}

/// `seg-{msn}.m4s`: the complete media segment with media sequence number `msn`.
pub fn segment(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}

/// `part-{msn}.{i}.m4s`: partial segment `i` (0-based Part Index) of segment `msn`.
pub fn part(msn: u64, i: u32) -> String {
    format!("part-{msn}.{i}.m4s")
}

/// An object a viewer URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// `init-{id}.mp4`
    Init(u64),
    /// `seg-{msn}.m4s`
    Segment(u64),
    /// `part-{msn}.{i}.m4s`
    Part(u64, u32),
    /// `index.m3u8`
    MediaPlaylist,
    /// `master.m3u8`
    Multivariant,
}

/// Inverse of the name builders. Rejects anything but the canonical spelling: no
/// leading zeros, signs, whitespace, overflow, case changes or extra suffixes.
pub fn parse(name: &str) -> Option<Object> {
    match name {
        MEDIA_PLAYLIST => return Some(Object::MediaPlaylist),
        MULTIVARIANT => return Some(Object::Multivariant),
        _ => {}
    }
    if let Some(id) = name
        .strip_prefix("init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return canonical_u64(id).map(Object::Init);
    }
    if let Some(msn) = name
        .strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".m4s"))
    {
        return canonical_u64(msn).map(Object::Segment);
    }
    if let Some(rest) = name
        .strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".m4s"))
    {
        let (msn, idx) = rest.split_once('.')?;
        let msn = canonical_u64(msn)?;
        let idx = u32::try_from(canonical_u64(idx)?).ok()?;
        return Some(Object::Part(msn, idx));
    }
    None
}

/// A decimal number exactly as `format!("{}")` writes it.
fn canonical_u64(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let first = *bytes.first()?;
    if !bytes.iter().all(u8::is_ascii_digit) || (first == b'0' && bytes.len() > 1) {
        return None;
    }
    s.parse().ok()
}

// The stream key rule lives in `ferrocast-names`, where roles without media code (the
// controller) use it too.
pub use ferrocast_names::valid_stream_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_spell_the_contract() {
        assert_eq!(init(3), "init-3.mp4");
        assert_eq!(segment(0), "seg-0.m4s");
        assert_eq!(part(12, 4), "part-12.4.m4s");
    }

    #[test]
    fn round_trip() {
        for v in [0, 1, 9, 10, 1234567, u64::MAX] {
            assert_eq!(parse(&init(v)), Some(Object::Init(v)));
            assert_eq!(parse(&segment(v)), Some(Object::Segment(v)));
            for i in [0, 1, 10, u32::MAX] {
                assert_eq!(parse(&part(v, i)), Some(Object::Part(v, i)));
            }
        }
        assert_eq!(parse("index.m3u8"), Some(Object::MediaPlaylist));
        assert_eq!(parse("master.m3u8"), Some(Object::Multivariant));
    }

    #[test]
    fn rejects_non_canonical() {
        for bad in [
            "",
            "seg-.m4s",
            "seg-01.m4s",
            "seg-00.m4s",
            "seg-+1.m4s",
            "seg--1.m4s",
            "seg- 1.m4s",
            "seg-1 .m4s",
            "seg-1.m4s ",
            "seg-1.m4s?x=1",
            "seg-1.m4s.m4s",
            "seg-1.mp4",
            "SEG-1.m4s",
            "seg-18446744073709551616.m4s",
            "seg-1e3.m4s",
            "seg-١.m4s",
            "init-1.m4s",
            "init-01.mp4",
            "init-.mp4",
            "part-1.m4s",
            "part-1..m4s",
            "part-.1.m4s",
            "part-1.01.m4s",
            "part-01.1.m4s",
            "part-1.2.3.m4s",
            "part-1.4294967296.m4s",
            "part-1.-1.m4s",
            "index.m3u8/",
            "Index.m3u8",
            "./index.m3u8",
            "master.m3u",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} must be rejected");
        }
    }
}
