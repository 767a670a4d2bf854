//! FLV tag bodies (= RTMP audio/video message payloads) and FLV files: parsing of legacy AVC/HEVC
//! video, Enhanced RTMP v1 video (`avc1`/`hvc1` FourCC) and AAC audio, builders for the same,
//! and a bounded reader for whole FLV files.
//!
//! References: Adobe FLV File Format Specification v10.1 (E.4.2 AUDIODATA, E.4.3 VIDEODATA) and
//! the Enhanced RTMP v1 specification (ExVideoTagHeader). Parsed payloads are zero-copy slices
//! of the input `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};

/// Why an FLV tag body or file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The body or file ended before a field the format requires.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The file does not start with the `FLV` signature or its header is malformed.
    #[error("not an FLV file: {0}")]
    BadHeader(&'static str),
    /// A tag's DataSize runs past the end of the input.
    #[error("tag at offset {offset} claims {size} bytes, past the end of the input")]
    TagOverrun {
        /// Byte offset of the tag header in the file.
        offset: usize,
        /// The DataSize the tag header claims.
        size: usize,
    },
}

/// The video codecs we repackage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VideoCodec {
    /// H.264 (legacy codec id 7, or Enhanced RTMP FourCC `avc1`).
    Avc,
    /// H.265 (Enhanced RTMP FourCC `hvc1`, or the non-standard legacy codec id 12).
    Hevc,
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoTag {
    /// avcC / hvcC bytes (AVCDecoderConfigurationRecord / HEVCDecoderConfigurationRecord).
    SequenceHeader {
        /// Which codec the record is for.
        codec: VideoCodec,
        /// The decoder configuration record.
        config: Bytes,
    },
    /// `data` = length-prefixed NAL units, as in the FLV body (zero-copy slice of the input).
    Frame {
        /// Which codec the frame is coded with.
        codec: VideoCodec,
        /// FrameType 1 (key frame) or 4 (generated key frame).
        keyframe: bool,
        /// PTS − DTS in milliseconds (signed 24-bit in the tag).
        composition_time_ms: i32,
        /// Length-prefixed NAL units.
        data: Bytes,
    },
    /// End of sequence marker.
    EndOfSequence {
        /// Which codec's sequence ends.
        codec: VideoCodec,
    },
    /// Something we ignore (command frame, info frame, unsupported codec id/FourCC) — caller decides.
    Unsupported {
        /// What was found, for logs.
        reason: &'static str,
    },
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioTag {
    /// An AudioSpecificConfig (AACPacketType 0).
    AacSequenceHeader(Bytes),
    /// One raw AAC frame (AACPacketType 1).
    AacRaw(Bytes),
    /// A sound format or packet type we do not repackage.
    Unsupported {
        /// What was found, for logs.
        reason: &'static str,
    },
}

// VIDEODATA FrameType values (E.4.3.1), shared by the Enhanced RTMP header.
const FRAME_KEY: u8 = 1;
const FRAME_INTER: u8 = 2;
const FRAME_GENERATED_KEY: u8 = 4;
const FRAME_COMMAND: u8 = 5;

// Legacy CodecID values: 7 = AVC; 12 = HEVC is not in the Adobe spec but widely deployed.
const CODEC_AVC: u8 = 7;
const CODEC_HEVC_LEGACY: u8 = 12;

// Enhanced RTMP v1 VideoPacketType values.
const PKT_SEQUENCE_START: u8 = 0;
const PKT_CODED_FRAMES: u8 = 1;
const PKT_SEQUENCE_END: u8 = 2;
const PKT_CODED_FRAMES_X: u8 = 3;
const PKT_METADATA: u8 = 4;
const PKT_MPEG2TS_SEQUENCE_START: u8 = 5;

const SOUND_FORMAT_AAC: u8 = 10;
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// Legacy FLV (codec id 7 = AVC, 12 = HEVC as some servers use) and Enhanced RTMP
/// (IsExHeader bit, FourCC 'hvc1'/'avc1', PacketType SequenceStart/CodedFrames/CodedFramesX/SequenceEnd).
pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Truncated("video tag"))?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(body, first);
    }
    let frame_type = first >> 4;
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Unsupported {
            reason: "video info/command frame",
        });
    }
    let codec = match first & 0x0f {
        CODEC_AVC => VideoCodec::Avc,
        CODEC_HEVC_LEGACY => VideoCodec::Hevc,
        _ => {
            return Ok(VideoTag::Unsupported {
                reason: "unsupported video codec id",
            })
        }
    };
    let header = body
        .get(1..5)
        .ok_or(FlvError::Truncated("AVC video tag header"))?;
    let composition_time_ms = si24(&header[1..4]);
    let keyframe = matches!(frame_type, FRAME_KEY | FRAME_GENERATED_KEY);
    Ok(match header[0] {
        0 => VideoTag::SequenceHeader {
            codec,
            config: body.slice(5..),
        },
        1 => VideoTag::Frame {
            codec,
            keyframe,
            composition_time_ms,
            data: body.slice(5..),
        },
        2 => VideoTag::EndOfSequence { codec },
        _ => VideoTag::Unsupported {
            reason: "unknown AVCPacketType",
        },
    })
}

/// Enhanced RTMP v1 ExVideoTagHeader: IsExHeader(1) FrameType(3) PacketType(4) FourCC(32).
fn parse_enhanced_video(body: &Bytes, first: u8) -> Result<VideoTag, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    if frame_type == FRAME_COMMAND && packet_type != PKT_METADATA {
        return Ok(VideoTag::Unsupported {
            reason: "video command frame",
        });
    }
    let fourcc = body
        .get(1..5)
        .ok_or(FlvError::Truncated("enhanced video tag header"))?;
    let codec = match fourcc {
        b"avc1" => VideoCodec::Avc,
        b"hvc1" => VideoCodec::Hevc,
        _ => {
            return Ok(VideoTag::Unsupported {
                reason: "unsupported video FourCC",
            })
        }
    };
    let keyframe = matches!(frame_type, FRAME_KEY | FRAME_GENERATED_KEY);
    Ok(match packet_type {
        PKT_SEQUENCE_START => VideoTag::SequenceHeader {
            codec,
            config: body.slice(5..),
        },
        PKT_CODED_FRAMES => {
            let cts = body
                .get(5..8)
                .ok_or(FlvError::Truncated("CodedFrames composition time"))?;
            VideoTag::Frame {
                codec,
                keyframe,
                composition_time_ms: si24(cts),
                data: body.slice(8..),
            }
        }
        PKT_CODED_FRAMES_X => VideoTag::Frame {
            codec,
            keyframe,
            composition_time_ms: 0,
            data: body.slice(5..),
        },
        PKT_SEQUENCE_END => VideoTag::EndOfSequence { codec },
        PKT_METADATA => VideoTag::Unsupported {
            reason: "video metadata packet",
        },
        PKT_MPEG2TS_SEQUENCE_START => VideoTag::Unsupported {
            reason: "MPEG2-TS sequence start",
        },
        _ => VideoTag::Unsupported {
            reason: "unknown enhanced video packet type",
        },
    })
}

/// AUDIODATA (E.4.2.1) with AACAUDIODATA; other sound formats are `Unsupported`.
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Truncated("audio tag"))?;
    match first >> 4 {
        SOUND_FORMAT_AAC => {}
        SOUND_FORMAT_EX_HEADER => {
            return Ok(AudioTag::Unsupported {
                reason: "enhanced audio (ExAudioTagHeader)",
            })
        }
        _ => {
            return Ok(AudioTag::Unsupported {
                reason: "unsupported sound format",
            })
        }
    }
    let packet_type = *body.get(1).ok_or(FlvError::Truncated("AACPacketType"))?;
    Ok(match packet_type {
        0 => AudioTag::AacSequenceHeader(body.slice(2..)),
        1 => AudioTag::AacRaw(body.slice(2..)),
        _ => AudioTag::Unsupported {
            reason: "unknown AACPacketType",
        },
    })
}

/// Sign-extend a big-endian 24-bit integer. `b` must hold at least 3 bytes (callers slice it).
fn si24(b: &[u8]) -> i32 {
    let v = b
        .iter()
        .take(3)
        .fold(0i32, |acc, &x| (acc << 8) | i32::from(x));
    (v << 8) >> 8
}

fn put_si24(out: &mut BytesMut, v: i32) {
    let v = v.clamp(-(1 << 23), (1 << 23) - 1);
    out.put_slice(&v.to_be_bytes()[1..]);
}

fn frame_type(keyframe: bool) -> u8 {
    if keyframe {
        FRAME_KEY
    } else {
        FRAME_INTER
    }
}

/// A sequence header tag body: legacy (codec id 7) for Avc, Enhanced RTMP `hvc1` for Hevc.
pub fn video_sequence_header(codec: VideoCodec, config: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(config.len() + 5);
    match codec {
        VideoCodec::Avc => {
            out.put_slice(&[(FRAME_KEY << 4) | CODEC_AVC, 0, 0, 0, 0]);
        }
        VideoCodec::Hevc => {
            out.put_u8(0x80 | (FRAME_KEY << 4) | PKT_SEQUENCE_START);
            out.put_slice(b"hvc1");
        }
    }
    out.put_slice(config);
    out.freeze()
}

/// A coded frame tag body. Avc uses the legacy layout; Hevc uses Enhanced RTMP CodedFrames, or
/// CodedFramesX when the composition time is zero. Composition times beyond the signed 24-bit
/// range are clamped.
pub fn video_frame(
    codec: VideoCodec,
    keyframe: bool,
    composition_time_ms: i32,
    data: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    let ft = frame_type(keyframe);
    match codec {
        VideoCodec::Avc => {
            out.put_slice(&[(ft << 4) | CODEC_AVC, 1]);
            put_si24(&mut out, composition_time_ms);
        }
        VideoCodec::Hevc if composition_time_ms == 0 => {
            out.put_u8(0x80 | (ft << 4) | PKT_CODED_FRAMES_X);
            out.put_slice(b"hvc1");
        }
        VideoCodec::Hevc => {
            out.put_u8(0x80 | (ft << 4) | PKT_CODED_FRAMES);
            out.put_slice(b"hvc1");
            put_si24(&mut out, composition_time_ms);
        }
    }
    out.put_slice(data);
    out.freeze()
}

/// An AAC sequence header tag body (AAC, 44 kHz, 16-bit, stereo flags as E.4.2.1 requires for AAC).
pub fn aac_sequence_header(asc: &[u8]) -> Bytes {
    aac_body(0, asc)
}

/// An AAC raw frame tag body.
pub fn aac_frame(raw: &[u8]) -> Bytes {
    aac_body(1, raw)
}

fn aac_body(packet_type: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 2);
    // SoundFormat 10, SoundRate 3 (44 kHz), SoundSize 1 (16-bit), SoundType 1 (stereo): the
    // spec says AAC always signals these; the real parameters are in the AudioSpecificConfig.
    out.put_slice(&[(SOUND_FORMAT_AAC << 4) | 0x0f, packet_type]);
    out.put_slice(payload);
    out.freeze()
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data (the low five bits of the TagType byte).
    pub tag_type: u8,
    /// Timestamp in milliseconds, with TimestampExtended as the upper 8 bits.
    pub timestamp_ms: u32,
    /// The tag body (zero-copy slice of the file).
    pub body: Bytes,
}

/// FLV file reader (for the --demo clip): header then tags.
///
/// Layout (E.2, E.3): a 9-byte header whose DataOffset points at PreviousTagSize0, then
/// tag header (11 bytes) + body + PreviousTagSize repeated. PreviousTagSize values are not
/// trusted (writers get them wrong); a missing final one is tolerated, a tag whose DataSize
/// runs past the input is an error.
pub fn read_file(data: &Bytes) -> Result<Vec<FlvTag>, FlvError> {
    let header = data.get(..9).ok_or(FlvError::Truncated("FLV header"))?;
    if &header[..3] != b"FLV" {
        return Err(FlvError::BadHeader("missing FLV signature"));
    }
    let data_offset = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if data_offset < 9 || data_offset > data.len() {
        return Err(FlvError::BadHeader("DataOffset out of range"));
    }
    let mut pos = data_offset;
    let mut tags = Vec::new();
    // PreviousTagSize0 (always 0) precedes the first tag.
    if data.len() - pos < 4 {
        return Ok(tags);
    }
    pos += 4;
    while pos < data.len() {
        let th = data
            .get(pos..pos + 11)
            .ok_or(FlvError::Truncated("FLV tag header"))?;
        let size = (usize::from(th[1]) << 16) | (usize::from(th[2]) << 8) | usize::from(th[3]);
        let timestamp_ms = u32::from_be_bytes([th[7], th[4], th[5], th[6]]);
        let body_start = pos + 11;
        let body_end = body_start
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or(FlvError::TagOverrun { offset: pos, size })?;
        tags.push(FlvTag {
            tag_type: th[0] & 0x1f,
            timestamp_ms,
            body: data.slice(body_start..body_end),
        });
        let remaining = data.len() - body_end;
        if remaining == 0 {
            break;
        }
        if remaining < 4 {
            return Err(FlvError::Truncated("PreviousTagSize"));
        }
        pos = body_end + 4;
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of tags from `ffmpeg -c:v libx264 -c:a aac -f flv`: video sequence
    /// header, AAC sequence header, a keyframe (cts 67 ms), an inter frame (cts 133 ms).
    const AVC_SEQ: &[u8] = &[
        0x17, 0x00, 0x00, 0x00, 0x00, 0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19,
    ];
    const AAC_SEQ: &[u8] = &[0xaf, 0x00, 0x12, 0x08, 0x56, 0xe5, 0x00];
    const AVC_KEY: &[u8] = &[
        0x17, 0x01, 0x00, 0x00, 0x43, 0x00, 0x00, 0x02, 0xac, 0x06, 0x05,
    ];
    const AVC_INTER: &[u8] = &[0x27, 0x01, 0x00, 0x00, 0x85, 0x00, 0x00, 0x07, 0x97, 0x41];
    const AAC_RAW: &[u8] = &[0xaf, 0x01, 0xde, 0x02, 0x00, 0x4c];

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn legacy_avc_tags() {
        let body = b(AVC_SEQ);
        match parse_video(&body).unwrap() {
            VideoTag::SequenceHeader { codec, config } => {
                assert_eq!(codec, VideoCodec::Avc);
                assert_eq!(&config[..], &AVC_SEQ[5..]);
                // Zero-copy: the config points into the input buffer.
                assert_eq!(config.as_ptr(), body[5..].as_ptr());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_video(&b(AVC_KEY)).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: true,
                composition_time_ms: 67,
                data: b(&AVC_KEY[5..]),
            }
        );
        assert_eq!(
            parse_video(&b(AVC_INTER)).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: false,
                composition_time_ms: 133,
                data: b(&AVC_INTER[5..]),
            }
        );
        assert_eq!(
            parse_video(&b(&[0x17, 0x02, 0, 0, 0])).unwrap(),
            VideoTag::EndOfSequence {
                codec: VideoCodec::Avc
            }
        );
        // Negative composition time (SI24).
        match parse_video(&b(&[0x27, 0x01, 0xff, 0xff, 0xdf, 9])).unwrap() {
            VideoTag::Frame {
                composition_time_ms,
                ..
            } => assert_eq!(composition_time_ms, -33),
            other => panic!("{other:?}"),
        }
        // Legacy HEVC codec id 12.
        assert!(matches!(
            parse_video(&b(&[0x1c, 0x00, 0, 0, 0, 1])).unwrap(),
            VideoTag::SequenceHeader {
                codec: VideoCodec::Hevc,
                ..
            }
        ));
    }

    #[test]
    fn enhanced_rtmp_tags() {
        // SequenceStart, keyframe, hvc1.
        let seq = b(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]);
        assert_eq!(
            parse_video(&seq).unwrap(),
            VideoTag::SequenceHeader {
                codec: VideoCodec::Hevc,
                config: b(&[1, 2, 3])
            }
        );
        // CodedFrames, inter frame, cts = 0x000102.
        let f = b(&[0xa1, b'h', b'v', b'c', b'1', 0, 1, 2, 9, 9]);
        assert_eq!(
            parse_video(&f).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: false,
                composition_time_ms: 258,
                data: b(&[9, 9])
            }
        );
        // CodedFramesX, keyframe, avc1.
        let fx = b(&[0x93, b'a', b'v', b'c', b'1', 7]);
        assert_eq!(
            parse_video(&fx).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: true,
                composition_time_ms: 0,
                data: b(&[7])
            }
        );
        assert_eq!(
            parse_video(&b(&[0x92, b'h', b'v', b'c', b'1'])).unwrap(),
            VideoTag::EndOfSequence {
                codec: VideoCodec::Hevc
            }
        );
        for unsupported in [
            &[0x94, b'h', b'v', b'c', b'1', 2][..], // Metadata
            &[0x95, b'h', b'v', b'c', b'1'][..],    // MPEG2TSSequenceStart
            &[0x90, b'a', b'v', b'0', b'1', 0][..], // AV1
            &[0xd1, 0x00][..],                      // command frame
            &[0x9f, b'h', b'v', b'c', b'1'][..],    // unknown packet type
            &[0x52, 0x00][..],                      // legacy info frame
            &[0x12, 0x00][..],                      // Sorenson H.263
            &[0x17, 0x05, 0, 0, 0][..],             // unknown AVCPacketType
        ] {
            assert!(
                matches!(
                    parse_video(&b(unsupported)).unwrap(),
                    VideoTag::Unsupported { .. }
                ),
                "{unsupported:?}"
            );
        }
        for truncated in [
            &[][..],
            &[0x17, 0x01, 0x00],
            &[0x91, b'h', b'v'],
            &[0x91, b'h', b'v', b'c', b'1', 0, 0],
        ] {
            assert!(parse_video(&b(truncated)).is_err(), "{truncated:?}");
        }
    }

    #[test]
    fn audio_tags() {
        assert_eq!(
            parse_audio(&b(AAC_SEQ)).unwrap(),
            AudioTag::AacSequenceHeader(b(&AAC_SEQ[2..]))
        );
        assert_eq!(
            parse_audio(&b(AAC_RAW)).unwrap(),
            AudioTag::AacRaw(b(&AAC_RAW[2..]))
        );
        assert!(matches!(
            parse_audio(&b(&[0x2f, 1, 2])).unwrap(),
            AudioTag::Unsupported { .. }
        ));
        assert!(matches!(
            parse_audio(&b(&[0xaf, 7])).unwrap(),
            AudioTag::Unsupported { .. }
        ));
        assert!(parse_audio(&b(&[])).is_err());
        assert!(parse_audio(&b(&[0xaf])).is_err());
    }

    #[test]
    fn builders_round_trip() {
        let cfg = [1u8, 2, 3, 4];
        for codec in [VideoCodec::Avc, VideoCodec::Hevc] {
            assert_eq!(
                parse_video(&video_sequence_header(codec, &cfg)).unwrap(),
                VideoTag::SequenceHeader {
                    codec,
                    config: b(&cfg)
                }
            );
            for (key, cts) in [(true, 0), (false, 67), (false, -33), (true, 1 << 30)] {
                assert_eq!(
                    parse_video(&video_frame(codec, key, cts, &[5, 6])).unwrap(),
                    VideoTag::Frame {
                        codec,
                        keyframe: key,
                        composition_time_ms: cts.min((1 << 23) - 1),
                        data: b(&[5, 6])
                    }
                );
            }
        }
        assert_eq!(
            &video_sequence_header(VideoCodec::Avc, &cfg)[..5],
            &AVC_SEQ[..5]
        );
        assert_eq!(
            parse_audio(&aac_sequence_header(&[0x12, 0x10])).unwrap(),
            AudioTag::AacSequenceHeader(b(&[0x12, 0x10]))
        );
        assert_eq!(aac_frame(&[9]), b(&[0xaf, 1, 9]));
    }

    fn file(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut out = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (ty, ts, body) in tags {
            out.push(*ty);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&ts.to_be_bytes()[1..]);
            out.push((ts >> 24) as u8);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(body);
            out.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
        }
        out
    }

    #[test]
    fn reads_files() {
        let data = file(&[(9, 0, AVC_SEQ), (8, 0, AAC_SEQ), (9, 0x0100_0021, AVC_KEY)]);
        let tags = read_file(&Bytes::from(data.clone())).unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!((tags[0].tag_type, tags[0].timestamp_ms), (9, 0));
        assert_eq!(&tags[1].body[..], AAC_SEQ);
        assert_eq!(tags[2].timestamp_ms, 0x0100_0021);
        // Without the final PreviousTagSize: still fine.
        assert_eq!(
            read_file(&Bytes::copy_from_slice(&data[..data.len() - 4]))
                .unwrap()
                .len(),
            3
        );
        // Every truncation inside a tag is an error, never a panic.
        for cut in 13..data.len() - 4 {
            let r = read_file(&Bytes::copy_from_slice(&data[..cut]));
            let at_boundary = r.as_ref().is_ok_and(|t| !t.is_empty());
            assert!(r.is_err() || at_boundary || cut == 13, "cut {cut}");
        }
        // DataSize past the end.
        let mut bad = data.clone();
        bad[14..17].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_file(&Bytes::from(bad)),
            Err(FlvError::TagOverrun { offset: 13, .. })
        ));
        assert!(matches!(
            read_file(&b(b"FLX\x01\x05\0\0\0\x09")),
            Err(FlvError::BadHeader(_))
        ));
        assert!(matches!(
            read_file(&b(b"FLV\x01\x05\0\0\xff\x09")),
            Err(FlvError::BadHeader(_))
        ));
        assert!(read_file(&b(b"FLV\x01")).is_err());
        assert!(read_file(&b(b"FLV\x01\x05\0\0\0\x09")).unwrap().is_empty());
    }
}
