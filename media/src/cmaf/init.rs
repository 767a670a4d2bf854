//! The CMAF init segment: `ftyp` + `moov` with one fragmented track per input track
//! (ISO/IEC 14496-12 8.2–8.8, sample entries per ISO/IEC 14496-15 and 14496-14).

use bytes::Bytes;

use super::BoxWriter;
use crate::codec::{AacConfig, AvcConfig, HevcConfig};

/// The codec configuration a track's sample entry is built from.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackConfig {
    /// H.264: `avc1` sample entry with `avcC`.
    Avc(AvcConfig),
    /// H.265: `hvc1` sample entry with `hvcC` (parameter sets out of band).
    Hevc(HevcConfig),
    /// AAC: `mp4a` sample entry with `esds`.
    Aac(AacConfig),
}

/// One track of the init segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// track_ID, non-zero and unique within the presentation.
    pub id: u32,
    /// Media timescale in ticks per second: 90000 for video, the sample rate for audio.
    pub timescale: u32,
    /// What the samples are.
    pub config: TrackConfig,
}

/// The unity transformation matrix of `mvhd`/`tkhd` (14496-12 8.2.2.3).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// ftyp (major 'iso6', brands incl. 'cmfc','iso6','mp41', 'dash') + moov (mvhd, trak per track with tkhd/mdia/
/// hdlr/minf/stbl with avc1+avcC / hvc1+hvcC / mp4a+esds, empty stts/stsc/stsz/stco, mvex/trex).
pub fn init_segment(tracks: &[Track]) -> Bytes {
    let mut w = BoxWriter::with_capacity(1024);
    let ftyp = w.open(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
        w.bytes(brand);
    }
    w.close(ftyp);

    let moov = w.open(b"moov");
    let mvhd = w.open_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown, the movie is fragmented
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    matrix(&mut w);
    w.zeros(24); // pre_defined
    let next_track_id = tracks
        .iter()
        .map(|t| t.id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    w.u32(next_track_id);
    w.close(mvhd);

    for track in tracks {
        trak(&mut w, track);
    }

    let mvex = w.open(b"mvex");
    for track in tracks {
        let trex = w.open_full(b"trex", 0, 0);
        w.u32(track.id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.close(trex);
    }
    w.close(mvex);
    w.close(moov);
    Bytes::from(w.buf)
}

fn matrix(w: &mut BoxWriter) {
    for v in MATRIX {
        w.u32(v);
    }
}

fn trak(w: &mut BoxWriter, track: &Track) {
    let (width, height, is_video) = match &track.config {
        TrackConfig::Avc(c) => (c.width, c.height, true),
        TrackConfig::Hevc(c) => (c.width, c.height, true),
        TrackConfig::Aac(_) => (0, 0, false),
    };
    let trak = w.open(b"trak");
    // flags 3 = track_enabled | track_in_movie
    let tkhd = w.open_full(b"tkhd", 0, 3);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(track.id);
    w.u32(0); // reserved
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(if is_video { 0 } else { 0x0100 }); // volume
    w.u16(0);
    matrix(w);
    // 16.16 fixed point; sizes beyond 65535 cannot be represented and are clamped.
    w.u32(width.min(0xffff) << 16);
    w.u32(height.min(0xffff) << 16);
    w.close(tkhd);

    let mdia = w.open(b"mdia");
    let mdhd = w.open_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(track.timescale);
    w.u32(0);
    // ISO-639-2/T 'und' packed as three 5-bit letters (each minus 0x60).
    w.u16((u16::from(b'u' - 0x60) << 10) | (u16::from(b'n' - 0x60) << 5) | u16::from(b'd' - 0x60));
    w.u16(0);
    w.close(mdhd);

    let hdlr = w.open_full(b"hdlr", 0, 0);
    w.u32(0); // pre_defined
    w.bytes(if is_video { b"vide" } else { b"soun" });
    w.zeros(12);
    w.bytes(if is_video {
        b"VideoHandler\0"
    } else {
        b"SoundHandler\0"
    });
    w.close(hdlr);

    let minf = w.open(b"minf");
    if is_video {
        let vmhd = w.open_full(b"vmhd", 0, 1);
        w.zeros(8); // graphicsmode, opcolor
        w.close(vmhd);
    } else {
        let smhd = w.open_full(b"smhd", 0, 0);
        w.zeros(4); // balance, reserved
        w.close(smhd);
    }
    let dinf = w.open(b"dinf");
    let dref = w.open_full(b"dref", 0, 0);
    w.u32(1);
    let url = w.open_full(b"url ", 0, 1); // flag 1: media data is in this file
    w.close(url);
    w.close(dref);
    w.close(dinf);

    let stbl = w.open(b"stbl");
    let stsd = w.open_full(b"stsd", 0, 0);
    w.u32(1);
    match &track.config {
        TrackConfig::Avc(c) => visual_entry(w, b"avc1", b"avcC", c.width, c.height, &c.raw),
        TrackConfig::Hevc(c) => visual_entry(w, b"hvc1", b"hvcC", c.width, c.height, &c.raw),
        TrackConfig::Aac(c) => mp4a_entry(w, c),
    }
    w.close(stsd);
    for kind in [b"stts", b"stsc", b"stco"] {
        let b = w.open_full(kind, 0, 0);
        w.u32(0); // entry_count
        w.close(b);
    }
    let stsz = w.open_full(b"stsz", 0, 0);
    w.u32(0); // sample_size
    w.u32(0); // sample_count
    w.close(stsz);
    w.close(stbl);
    w.close(minf);
    w.close(mdia);
    w.close(trak);
}

/// VisualSampleEntry (14496-12 12.1.3) followed by the codec's configuration box.
fn visual_entry(
    w: &mut BoxWriter,
    kind: &[u8; 4],
    config_kind: &[u8; 4],
    width: u32,
    height: u32,
    config: &[u8],
) {
    let entry = w.open(kind);
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(16); // pre_defined, reserved
    w.u16(u16::try_from(width).unwrap_or(u16::MAX));
    w.u16(u16::try_from(height).unwrap_or(u16::MAX));
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018); // depth
    w.u16(0xffff); // pre_defined = -1
    let cfg = w.open(config_kind);
    w.bytes(config);
    w.close(cfg);
    w.close(entry);
}

/// AudioSampleEntry (14496-12 12.2.3) + `esds` (14496-14 5.6) around the AudioSpecificConfig.
fn mp4a_entry(w: &mut BoxWriter, c: &AacConfig) {
    let entry = w.open(b"mp4a");
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(8);
    w.u16(if c.channels == 0 {
        2
    } else {
        u16::from(c.channels)
    });
    w.u16(16); // samplesize
    w.u32(0); // pre_defined, reserved
              // 16.16; rates above 65535 Hz do not fit and are signalled only by the ASC.
    w.u32(if c.sample_rate <= 0xffff {
        c.sample_rate << 16
    } else {
        0
    });

    let esds = w.open_full(b"esds", 0, 0);
    let asc = &c.raw[..];
    // 14496-1 7.2.6.6 DecoderSpecificInfo (tag 5), 7.2.6.6 DecoderConfigDescriptor (tag 4),
    // 7.2.6.8 SLConfigDescriptor (tag 6), inside an ES_Descriptor (tag 3, 7.2.6.5).
    let dsi_len = asc.len();
    let dcd_len = 13 + descriptor_size(dsi_len);
    let es_len = 3 + descriptor_size(dcd_len) + descriptor_size(1);
    descriptor_header(w, 3, es_len);
    w.u16(0); // ES_ID: 0 in MP4 files (14496-14 3.1.2), the track is identified by the trak
    w.u8(0); // no dependsOn, URL or OCR stream
    descriptor_header(w, 4, dcd_len);
    w.u8(0x40); // objectTypeIndication: MPEG-4 Audio
    w.u8((0x05 << 2) | 1); // streamType audio, upStream 0, reserved 1
    w.bytes(&[0, 0, 0]); // bufferSizeDB
    w.u32(0); // maxBitrate
    w.u32(0); // avgBitrate
    descriptor_header(w, 5, dsi_len);
    w.bytes(asc);
    descriptor_header(w, 6, 1);
    w.u8(2); // predefined: reserved for use in MP4 files
    w.close(esds);
    w.close(entry);
}

/// Total size of a descriptor with a `len`-byte payload (tag + size field + payload).
fn descriptor_size(len: usize) -> usize {
    1 + size_field_len(len) + len
}

fn size_field_len(len: usize) -> usize {
    match len {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        _ => 4,
    }
}

/// Tag + expandable size field (14496-1 8.3.3: 7 bits per byte, high bit = more follows).
fn descriptor_header(w: &mut BoxWriter, tag: u8, len: usize) {
    w.u8(tag);
    let n = size_field_len(len);
    for i in (0..n).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        w.u8(more | ((len >> (7 * i)) & 0x7f) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::tests::{children, find};

    fn avc() -> AvcConfig {
        AvcConfig::parse(&Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9,
            0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03,
            0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
        ]))
        .unwrap()
    }

    fn aac() -> AacConfig {
        AacConfig::parse(&Bytes::from_static(&[0x12, 0x08])).unwrap()
    }

    #[test]
    fn structure() {
        let init = init_segment(&[
            Track {
                id: 1,
                timescale: 90000,
                config: TrackConfig::Avc(avc()),
            },
            Track {
                id: 2,
                timescale: 44100,
                config: TrackConfig::Aac(aac()),
            },
        ]);
        let top: Vec<_> = children(&init).iter().map(|(k, _)| *k).collect();
        assert_eq!(top, [*b"ftyp", *b"moov"]);
        let ftyp = find(&init, &["ftyp"]).unwrap();
        assert_eq!(&ftyp[..4], b"iso6");
        let moov: Vec<_> = children(find(&init, &["moov"]).unwrap())
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(moov, [*b"mvhd", *b"trak", *b"trak", *b"mvex"]);
        let mvhd = find(&init, &["moov", "mvhd"]).unwrap();
        assert_eq!(&mvhd[12..16], &1000u32.to_be_bytes());
        assert_eq!(&mvhd[96..100], &3u32.to_be_bytes()); // next_track_ID
        let tkhd = find(&init, &["moov", "trak", "tkhd"]).unwrap();
        assert_eq!(&tkhd[..4], &[0, 0, 0, 3]);
        assert_eq!(&tkhd[76..84], &[1, 0x40, 0, 0, 0, 0xf0, 0, 0]);
        let avcc = find(
            &init,
            &[
                "moov", "trak", "mdia", "minf", "stbl", "stsd", "avc1", "avcC",
            ],
        )
        .unwrap();
        assert_eq!(avcc, &avc().raw[..]);
        let mdhd = find(&init, &["moov", "trak", "mdia", "mdhd"]).unwrap();
        assert_eq!(&mdhd[12..16], &90000u32.to_be_bytes());
        assert_eq!(&mdhd[20..22], &[0x55, 0xc4]);
        let trex = find(&init, &["moov", "mvex", "trex"]).unwrap();
        assert_eq!(&trex[4..8], &1u32.to_be_bytes());
    }

    #[test]
    fn esds_descriptors() {
        let init = init_segment(&[Track {
            id: 1,
            timescale: 44100,
            config: TrackConfig::Aac(aac()),
        }]);
        let esds = find(
            &init,
            &[
                "moov", "trak", "mdia", "minf", "stbl", "stsd", "mp4a", "esds",
            ],
        )
        .unwrap();
        assert_eq!(
            esds,
            [
                0, 0, 0, 0, // version, flags
                3, 25, 0, 0, 0, // ES_Descriptor
                4, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DecoderConfigDescriptor
                5, 2, 0x12, 0x08, // DecoderSpecificInfo
                6, 1, 2, // SLConfigDescriptor
            ]
        );
        let mp4a = find(
            &init,
            &["moov", "trak", "mdia", "minf", "stbl", "stsd", "mp4a"],
        )
        .unwrap();
        assert_eq!(&mp4a[16..18], &1u16.to_be_bytes()); // mono
        assert_eq!(&mp4a[24..28], &(44100u32 << 16).to_be_bytes());
    }

    #[test]
    fn hevc_track() {
        let hevc = crate::codec::HevcConfig::from_parameter_sets(
            crate::codec::h265::tests::VPS,
            crate::codec::h265::tests::SPS,
            crate::codec::h265::tests::PPS,
        )
        .unwrap();
        let init = init_segment(&[Track {
            id: 5,
            timescale: 90000,
            config: TrackConfig::Hevc(hevc.clone()),
        }]);
        let stbl = ["moov", "trak", "mdia", "minf", "stbl"];
        let hvcc = find(&init, &[&stbl[..], &["stsd", "hvc1", "hvcC"]].concat()).unwrap();
        assert_eq!(hvcc, &hevc.raw[..]);
        let hvc1 = find(&init, &[&stbl[..], &["stsd", "hvc1"]].concat()).unwrap();
        assert_eq!(&hvc1[24..28], &[0x01, 0x40, 0x00, 0xf0]); // 320 x 240
        for empty in ["stts", "stsc", "stco"] {
            let b = find(&init, &[&stbl[..], &[empty]].concat()).unwrap();
            assert_eq!(b, [0; 8], "{empty}");
        }
        assert_eq!(
            find(&init, &[&stbl[..], &["stsz"]].concat()).unwrap(),
            [0; 12]
        );
        let hdlr = find(&init, &["moov", "trak", "mdia", "hdlr"]).unwrap();
        assert_eq!(&hdlr[8..12], b"vide");
        let dref = find(&init, &["moov", "trak", "mdia", "minf", "dinf", "dref"]).unwrap();
        assert_eq!(
            dref,
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12, b'u', b'r', b'l', b' ', 0, 0, 0, 1]
        );
        let mvhd = find(&init, &["moov", "mvhd"]).unwrap();
        assert_eq!(&mvhd[96..100], &6u32.to_be_bytes());
    }

    #[test]
    fn descriptor_size_encoding() {
        let mut w = BoxWriter::default();
        descriptor_header(&mut w, 5, 200);
        assert_eq!(w.buf, [5, 0x81, 0x48]);
        assert_eq!(descriptor_size(200), 203);
    }
}
