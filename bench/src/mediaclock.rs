//! Behind-live from the media itself, for servers whose playlists carry no
//! EXT-X-PROGRAM-DATE-TIME (nginx-rtmp, xiu): the wall-clock time of a segment's or
//! part's content is the moment the publisher sent its first frame plus how far the
//! segment's first video timestamp is past the stream's first one. Timestamps are read
//! from MPEG-TS (the DTS, or PTS when there is no DTS, of the first video PES; 90 kHz,
//! 33 bits, wrapping) and from fMP4 (`tfdt` of the video track over the `mdhd` timescale
//! of the init segment). Pure: bytes in, milliseconds out.

/// MPEG-TS packet size.
const TS_PACKET: usize = 188;
/// MPEG-TS sync byte.
const TS_SYNC: u8 = 0x47;
/// PES timestamps are 33 bits of a 90 kHz clock.
const PES_WRAP: u64 = 1 << 33;
/// Most boxes looked at per level, so that garbage cannot keep a viewer busy.
const MAX_BOXES: usize = 4096;

/// One track of an fMP4 init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    /// `tkhd` track_ID.
    pub id: u32,
    /// `mdhd` timescale, ticks per second.
    pub timescale: u32,
    /// `hdlr` handler type is `vide`.
    pub video: bool,
}

/// The first video timestamp of an MPEG-TS segment, in 90 kHz ticks (33 bits): the DTS
/// of the first video PES (stream_id 0xE0–0xEF) that starts in it, or its PTS when it
/// carries no DTS. `None` if the bytes are not TS or hold no video PES header.
pub fn ts_first_video_ticks(data: &[u8]) -> Option<u64> {
    if data.first() != Some(&TS_SYNC) {
        return None;
    }
    for pkt in data.chunks_exact(TS_PACKET) {
        if pkt[0] != TS_SYNC {
            return None;
        }
        let payload_start = pkt[1] & 0x40 != 0;
        let adaptation = (pkt[3] >> 4) & 0b11;
        if !payload_start || adaptation & 0b01 == 0 {
            continue;
        }
        let offset = if adaptation & 0b10 != 0 {
            5 + usize::from(pkt[4])
        } else {
            4
        };
        let Some(pes) = pkt.get(offset..) else {
            continue;
        };
        if pes.len() < 9 || pes[..3] != [0, 0, 1] || !(0xE0..=0xEF).contains(&pes[3]) {
            continue;
        }
        let field = match pes[7] >> 6 {
            0b11 => pes.get(14..19), // PTS then DTS: the DTS
            0b10 => pes.get(9..14),  // PTS only
            _ => None,
        };
        if let Some(b) = field {
            return Some(pes_timestamp(b));
        }
    }
    None
}

/// A 33-bit PES timestamp from its 5-byte field (ISO/IEC 13818-1 2.4.3.7).
fn pes_timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// Iterates the boxes of one level: (type, payload). Stops at the first malformed one.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(data[..4].try_into().ok()?);
        let kind: [u8; 4] = data[4..8].try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8, data.len()),
            1 => {
                let large = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
                (16, usize::try_from(large).ok()?)
            }
            n => (8, n as usize),
        };
        if size < header || size > data.len() {
            return None;
        }
        let payload = &data[header..size];
        data = &data[size..];
        Some((kind, payload))
    })
    .take(MAX_BOXES)
}

/// The payload of the first child box of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, p)| p)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The tracks of an fMP4 init segment (`moov/trak`: `tkhd` id, `mdhd` timescale,
/// `hdlr` type). Empty if there is no `moov`.
pub fn init_tracks(init: &[u8]) -> Vec<TrackInfo> {
    let Some(moov) = child(init, b"moov") else {
        return Vec::new();
    };
    boxes(moov)
        .filter(|(k, _)| k == b"trak")
        .filter_map(|(_, trak)| {
            let tkhd = child(trak, b"tkhd")?;
            // Full box: version, flags; then creation/modification times (32 or 64 bits).
            let id = be_u32(tkhd, if tkhd.first()? == &1 { 20 } else { 12 })?;
            let mdia = child(trak, b"mdia")?;
            let mdhd = child(mdia, b"mdhd")?;
            let timescale = be_u32(mdhd, if mdhd.first()? == &1 { 20 } else { 12 })?;
            let video = child(mdia, b"hdlr").and_then(|h| h.get(8..12)) == Some(b"vide");
            (timescale > 0).then_some(TrackInfo {
                id,
                timescale,
                video,
            })
        })
        .collect()
}

/// The first decode time of an fMP4 fragment (or a segment of several): the `tfdt` of
/// the first `moof`'s video track, or of its first track the init segment names when
/// it has no video. Returns (ticks, timescale).
pub fn fmp4_first_decode_time(data: &[u8], tracks: &[TrackInfo]) -> Option<(u64, u32)> {
    let moof = child(data, b"moof")?;
    let mut fallback = None;
    for (_, traf) in boxes(moof).filter(|(k, _)| k == b"traf") {
        let Some(id) = child(traf, b"tfhd").and_then(|t| be_u32(t, 4)) else {
            continue;
        };
        let Some(track) = tracks.iter().find(|t| t.id == id) else {
            continue;
        };
        let Some(tfdt) = child(traf, b"tfdt") else {
            continue;
        };
        let ticks = if tfdt.first() == Some(&1) {
            be_u64(tfdt, 4)
        } else {
            be_u32(tfdt, 4).map(u64::from)
        };
        let Some(ticks) = ticks else { continue };
        if track.video {
            return Some((ticks, track.timescale));
        }
        fallback.get_or_insert((ticks, track.timescale));
    }
    fallback
}

/// Maps media timestamps to the wall clock of the publisher.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaClock {
    /// Unix ms at which the publisher sent its first frame.
    published_at_ms: i64,
    /// That frame's timestamp in the server's output, ms.
    first_ts_ms: i64,
    /// Tracks of the last init segment seen (fMP4 only).
    tracks: Vec<TrackInfo>,
}

impl MediaClock {
    /// A clock for a stream whose first frame was sent at `published_at_ms` (unix ms)
    /// and carries timestamp `first_ts_ms` in what the server writes (0 when the server
    /// keeps the publisher's timestamps, which start at 0).
    pub fn new(published_at_ms: i64, first_ts_ms: i64) -> Self {
        MediaClock {
            published_at_ms,
            first_ts_ms,
            tracks: Vec::new(),
        }
    }

    /// Learns the track timescales of an fMP4 init segment; false if it has none.
    pub fn set_init(&mut self, init: &[u8]) -> bool {
        self.tracks = init_tracks(init);
        !self.tracks.is_empty()
    }

    /// Wall-clock time (unix ms) of the first frame of a TS or fMP4 segment or part.
    pub fn start_ms(&self, media: &[u8]) -> Option<i64> {
        if let Some(ticks) = ts_first_video_ticks(media) {
            let first = (self.first_ts_ms.rem_euclid(PES_WRAP as i64 / 90) as u64) * 90;
            // The difference modulo 2^33, read as signed: wraps cost nothing.
            let mut d = (ticks + PES_WRAP - first) % PES_WRAP;
            if d >= PES_WRAP / 2 {
                d = d.wrapping_sub(PES_WRAP);
            }
            return Some(self.published_at_ms + (d as i64).div_euclid(90));
        }
        let (ticks, timescale) = fmp4_first_decode_time(media, &self.tracks)?;
        let ms = u128::from(ticks) * 1000 / u128::from(timescale);
        Some(self.published_at_ms + i64::try_from(ms).ok()? - self.first_ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferrocast_media::cmaf::{fragment, init_segment, Sample, Track, TrackConfig, TrackRun};
    use ferrocast_media::codec::AacConfig;

    /// One TS packet with a PES header carrying `pts` (and `dts`), on `pid`.
    fn pes_packet(
        pid: u16,
        stream_id: u8,
        pts: u64,
        dts: Option<u64>,
        adaptation: usize,
    ) -> Vec<u8> {
        let ts = |marker: u8, t: u64| {
            [
                (marker << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
                (t >> 22) as u8,
                (((t >> 15) as u8) << 1) | 1,
                (t >> 7) as u8,
                ((t as u8) << 1) | 1,
            ]
        };
        let mut p = vec![TS_SYNC, 0x40 | (pid >> 8) as u8, pid as u8];
        if adaptation > 0 {
            p.push(0x30);
            p.push((adaptation - 1) as u8);
            p.extend(std::iter::repeat_n(0xFF, adaptation - 1));
        } else {
            p.push(0x10);
        }
        p.extend([0, 0, 1, stream_id, 0, 0, 0x80]);
        match dts {
            Some(d) => {
                p.extend([0xC0, 10]);
                p.extend(ts(0b0011, pts));
                p.extend(ts(0b0001, d));
            }
            None => {
                p.extend([0x80, 5]);
                p.extend(ts(0b0010, pts));
            }
        }
        p.resize(TS_PACKET, 0xFF);
        p
    }

    fn null_packet() -> Vec<u8> {
        let mut p = vec![TS_SYNC, 0x1F, 0xFF, 0x10];
        p.resize(TS_PACKET, 0xFF);
        p
    }

    #[test]
    fn ts_first_video_dts_skips_audio_and_other_packets() {
        let mut seg = null_packet();
        seg.extend(pes_packet(0x101, 0xC0, 5_000, None, 0)); // audio first
        seg.extend(pes_packet(0x100, 0xE0, 180_090, Some(180_000), 8)); // video, adaptation field
        seg.extend(pes_packet(0x100, 0xE0, 183_090, Some(183_000), 0));
        assert_eq!(ts_first_video_ticks(&seg), Some(180_000));
        // PTS only.
        let seg = pes_packet(0x100, 0xE1, (1 << 33) - 1, None, 0);
        assert_eq!(ts_first_video_ticks(&seg), Some((1 << 33) - 1));
        // Not TS, or no video.
        assert_eq!(ts_first_video_ticks(b"\0\0\0\x18ftypiso6"), None);
        assert_eq!(
            ts_first_video_ticks(&pes_packet(0x101, 0xC0, 1, None, 0)),
            None
        );
        assert_eq!(ts_first_video_ticks(&[]), None);
    }

    #[test]
    fn ts_clock_unwraps_33_bits() {
        // The server starts at 0.7 s (nginx-rtmp's HLS delay); the first frame was sent
        // at unix ms 1_000_000.
        let clock = MediaClock::new(1_000_000, 700);
        let at = |ticks: u64| clock.start_ms(&pes_packet(0x100, 0xE0, ticks, Some(ticks), 0));
        assert_eq!(at(63_000), Some(1_000_000));
        assert_eq!(at(63_000 + 180_000), Some(1_002_000));
        // A stream whose first timestamp is just below the wrap: later segments wrap.
        let first_ms = ((1u64 << 33) / 90 - 1_000) as i64;
        let clock = MediaClock::new(5_000_000, first_ms);
        let ticks = |ms: i64| (ms as u64 * 90) % (1 << 33);
        let at = |ms: i64| clock.start_ms(&pes_packet(0x100, 0xE0, ticks(ms), None, 0));
        assert_eq!(at(first_ms), Some(5_000_000));
        assert_eq!(at(first_ms + 4_000), Some(5_004_000), "after the wrap");
        // A frame slightly before the first one (a reordered B-frame's DTS) is negative.
        assert_eq!(at(first_ms - 40), Some(4_999_960));
    }

    fn our_init() -> Bytes {
        init_segment(&[Track {
            id: 2,
            timescale: 48_000,
            config: TrackConfig::Aac(AacConfig::parse(&Bytes::from_static(&[0x11, 0x90])).unwrap()),
        }])
    }

    fn sample() -> Sample {
        Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10, 0x04]),
        }
    }

    #[test]
    fn fmp4_decode_time_from_our_muxer() {
        let init = our_init();
        let tracks = init_tracks(&init);
        assert_eq!(
            tracks,
            [TrackInfo {
                id: 2,
                timescale: 48_000,
                video: false
            }]
        );
        let samples = [sample()];
        let frag = fragment(
            7,
            &[TrackRun {
                track_id: 2,
                base_decode_time: 48_000 * 3600,
                samples: &samples,
            }],
        );
        assert_eq!(
            fmp4_first_decode_time(&frag, &tracks),
            Some((48_000 * 3600, 48_000))
        );
        // Unknown tracks and a missing init give nothing.
        assert_eq!(fmp4_first_decode_time(&frag, &[]), None);
        let mut clock = MediaClock::new(10_000, 0);
        assert_eq!(clock.start_ms(&frag), None);
        assert!(clock.set_init(&init));
        assert_eq!(clock.start_ms(&frag), Some(10_000 + 3_600_000));
        assert!(!clock.set_init(b"not an init segment"));
    }

    #[test]
    fn boxes_stop_at_malformed_sizes() {
        // A box claiming more than there is, and a size smaller than its header.
        assert_eq!(boxes(&[0, 0, 0, 64, b'm', b'o', b'o', b'f']).count(), 0);
        assert_eq!(boxes(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']).count(), 0);
        // Size 0: to the end. Size 1: a 64-bit size follows.
        let mut b = vec![0, 0, 0, 0];
        b.extend(b"mdat");
        b.extend([1, 2, 3]);
        assert_eq!(boxes(&b).map(|(_, p)| p.len()).collect::<Vec<_>>(), [3]);
        let mut b = vec![0, 0, 0, 1];
        b.extend(b"free");
        b.extend(18u64.to_be_bytes());
        b.extend([9, 9]);
        assert_eq!(
            boxes(&b).map(|(_, p)| p.to_vec()).collect::<Vec<_>>(),
            [vec![9, 9]]
        );
    }
}
