//! The origin ↔ edge relay messages, written by hand to match `proto/relay.proto`
//! field by field (tags, types, optionality), and the lossless conversion between a
//! [`MediaPlaylist`] and a [`PlaylistState`].

use ferrocast_media::hls::{self, MediaPlaylist};

/// First frame of every bidirectional stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// What the edge asks for.
    #[prost(oneof = "request::Kind", tags = "1, 2")]
    pub kind: Option<request::Kind>,
}

/// Nested types of [`Request`].
pub mod request {
    /// The request kinds.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Follow a stream's live tail.
        #[prost(message, tag = "1")]
        Subscribe(super::Subscribe),
        /// One object.
        #[prost(message, tag = "2")]
        Fetch(super::Fetch),
    }
}

/// Subscribe to a stream's live tail, resuming after the `have_*` markers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {
    /// The stream key.
    #[prost(string, tag = "1")]
    pub stream: String,
    /// Edge-chosen id, unique on the connection, echoed in every pushed ObjectHeader.
    #[prost(uint64, tag = "2")]
    pub subscription: u64,
    /// Highest init id the edge holds.
    #[prost(uint64, optional, tag = "3")]
    pub have_init_id: Option<u64>,
    /// Media sequence number of the last part the edge holds.
    #[prost(uint64, optional, tag = "4")]
    pub have_msn: Option<u64>,
    /// Index of the last part held within `have_msn`; absent: the whole segment.
    #[prost(uint32, optional, tag = "5")]
    pub have_part: Option<u32>,
}

/// The origin's answer to [`Subscribe`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeReply {
    /// The origin holds the stream; PlaylistState frames follow.
    #[prost(bool, tag = "1")]
    pub found: bool,
    /// The epoch under which the origin holds the stream (0 without a controller); an
    /// edge ignores an origin whose epoch is below the assignment's.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}

/// One partial segment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartInfo {
    /// Seconds.
    #[prost(double, tag = "1")]
    pub duration: f64,
    /// Starts with an independent frame.
    #[prost(bool, tag = "2")]
    pub independent: bool,
}

/// One complete segment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SegmentInfo {
    /// Media sequence number.
    #[prost(uint64, tag = "1")]
    pub msn: u64,
    /// Seconds.
    #[prost(double, tag = "2")]
    pub duration: f64,
    /// Wall-clock time of the first sample, unix ms.
    #[prost(int64, tag = "3")]
    pub program_date_time_ms: i64,
    /// Starts a discontinuity.
    #[prost(bool, tag = "4")]
    pub discontinuity: bool,
    /// Init generation.
    #[prost(uint64, tag = "5")]
    pub init_id: u64,
    /// Its parts; empty once too old to list.
    #[prost(message, repeated, tag = "6")]
    pub parts: Vec<PartInfo>,
}

/// Video size.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Resolution {
    /// Pixels.
    #[prost(uint32, tag = "1")]
    pub width: u32,
    /// Pixels.
    #[prost(uint32, tag = "2")]
    pub height: u32,
}

/// A media playlist's state plus what the multivariant playlist needs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaylistState {
    /// Packager version; grows with every visible change.
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// EXT-X-TARGETDURATION.
    #[prost(uint32, tag = "2")]
    pub target_duration: u32,
    /// PART-TARGET.
    #[prost(double, tag = "3")]
    pub part_target: f64,
    /// EXT-X-MEDIA-SEQUENCE.
    #[prost(uint64, tag = "4")]
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    #[prost(uint64, tag = "5")]
    pub discontinuity_sequence: u64,
    /// Complete segments, oldest first.
    #[prost(message, repeated, tag = "6")]
    pub segments: Vec<SegmentInfo>,
    /// Segment being built.
    #[prost(uint64, tag = "7")]
    pub next_msn: u64,
    /// Its init generation.
    #[prost(uint64, tag = "8")]
    pub next_init_id: u64,
    /// It starts a discontinuity.
    #[prost(bool, tag = "9")]
    pub next_discontinuity: bool,
    /// Its first sample's wall-clock time.
    #[prost(int64, optional, tag = "10")]
    pub next_program_date_time_ms: Option<i64>,
    /// Its parts so far.
    #[prost(message, repeated, tag = "11")]
    pub pending_parts: Vec<PartInfo>,
    /// EXT-X-ENDLIST.
    #[prost(bool, tag = "12")]
    pub ended: bool,
    /// RFC 6381 codecs list.
    #[prost(string, tag = "13")]
    pub codecs: String,
    /// Video size.
    #[prost(message, optional, tag = "14")]
    pub resolution: Option<Resolution>,
    /// Frames per second.
    #[prost(double, optional, tag = "15")]
    pub frame_rate: Option<f64>,
    /// Peak bits per second.
    #[prost(uint64, tag = "16")]
    pub bandwidth: u64,
}

/// Header of a pushed object; `len` raw bytes follow.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectHeader {
    /// The stream key.
    #[prost(string, tag = "1")]
    pub stream: String,
    /// `init-{id}.mp4` or `part-{msn}.{i}.m4s`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Origin wall clock (unix ms) when the object was made.
    #[prost(int64, tag = "3")]
    pub made_at_ms: i64,
    /// Bytes that follow.
    #[prost(uint64, tag = "4")]
    pub len: u64,
    /// The subscription this push belongs to.
    #[prost(uint64, tag = "5")]
    pub subscription: u64,
}

/// Fetch one object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Fetch {
    /// The stream key.
    #[prost(string, tag = "1")]
    pub stream: String,
    /// `init-{id}.mp4`, `part-{msn}.{i}.m4s` or `seg-{msn}.m4s`.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// How a fetch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FetchStatus {
    /// The bytes follow.
    Ok = 0,
    /// The stream exists, the object does not (or no longer).
    NotFound = 1,
    /// The origin does not hold the stream.
    NoStream = 2,
}

/// The origin's answer to [`Fetch`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchReply {
    /// How it ended.
    #[prost(enumeration = "FetchStatus", tag = "1")]
    pub status: i32,
    /// Bytes that follow (0 unless OK).
    #[prost(uint64, tag = "2")]
    pub len: u64,
}

/// Application error codes for connection close and stream reset / stop.
pub mod code {
    /// Shutting down, or done.
    pub const DONE: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// Something failed on our side.
    pub const INTERNAL: u32 = 2;
    /// The edge no longer wants the subscription.
    pub const UNSUBSCRIBED: u32 = 3;
    /// The origin holds as many connections as it may.
    pub const BUSY: u32 = 4;
}

impl From<&hls::PartInfo> for PartInfo {
    fn from(p: &hls::PartInfo) -> Self {
        Self {
            duration: p.duration,
            independent: p.independent,
        }
    }
}

impl From<&PartInfo> for hls::PartInfo {
    fn from(p: &PartInfo) -> Self {
        Self {
            duration: p.duration,
            independent: p.independent,
        }
    }
}

impl From<&hls::SegmentInfo> for SegmentInfo {
    fn from(s: &hls::SegmentInfo) -> Self {
        Self {
            msn: s.msn,
            duration: s.duration,
            program_date_time_ms: s.program_date_time_ms,
            discontinuity: s.discontinuity,
            init_id: s.init_id,
            parts: s.parts.iter().map(Into::into).collect(),
        }
    }
}

impl From<&SegmentInfo> for hls::SegmentInfo {
    fn from(s: &SegmentInfo) -> Self {
        Self {
            msn: s.msn,
            duration: s.duration,
            program_date_time_ms: s.program_date_time_ms,
            discontinuity: s.discontinuity,
            init_id: s.init_id,
            parts: s.parts.iter().map(Into::into).collect(),
        }
    }
}

/// What the multivariant playlist says about a stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VariantInfo {
    /// RFC 6381 codecs list.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
    /// Peak bits per second.
    pub bandwidth: u64,
}

impl PlaylistState {
    /// The state of `playlist` at packager `version`, with its variant description.
    pub fn new(version: u64, p: &MediaPlaylist, info: VariantInfo) -> Self {
        Self {
            version,
            target_duration: p.target_duration,
            part_target: p.part_target,
            media_sequence: p.media_sequence,
            discontinuity_sequence: p.discontinuity_sequence,
            segments: p.segments.iter().map(Into::into).collect(),
            next_msn: p.next_msn,
            next_init_id: p.next_init_id,
            next_discontinuity: p.next_discontinuity,
            next_program_date_time_ms: p.next_program_date_time_ms,
            pending_parts: p.pending_parts.iter().map(Into::into).collect(),
            ended: p.ended,
            codecs: info.codecs,
            resolution: info
                .resolution
                .map(|(width, height)| Resolution { width, height }),
            frame_rate: info.frame_rate,
            bandwidth: info.bandwidth,
        }
    }

    /// The media playlist this state describes.
    pub fn playlist(&self) -> MediaPlaylist {
        MediaPlaylist {
            target_duration: self.target_duration,
            part_target: self.part_target,
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            segments: self.segments.iter().map(Into::into).collect(),
            next_msn: self.next_msn,
            next_init_id: self.next_init_id,
            next_discontinuity: self.next_discontinuity,
            next_program_date_time_ms: self.next_program_date_time_ms,
            pending_parts: self.pending_parts.iter().map(Into::into).collect(),
            ended: self.ended,
        }
    }

    /// The variant description carried alongside.
    pub fn variant(&self) -> VariantInfo {
        VariantInfo {
            codecs: self.codecs.clone(),
            resolution: self.resolution.map(|r| (r.width, r.height)),
            frame_rate: self.frame_rate,
            bandwidth: self.bandwidth,
        }
    }
}

impl From<&MediaPlaylist> for PlaylistState {
    fn from(p: &MediaPlaylist) -> Self {
        Self::new(0, p, VariantInfo::default())
    }
}

impl From<&PlaylistState> for MediaPlaylist {
    fn from(s: &PlaylistState) -> Self {
        s.playlist()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: M) {
        let bytes = m.encode_to_vec();
        assert_eq!(M::decode(&bytes[..]).unwrap(), m);
    }

    fn playlist() -> MediaPlaylist {
        MediaPlaylist {
            target_duration: 4,
            part_target: 0.333,
            media_sequence: 17,
            discontinuity_sequence: 2,
            segments: vec![
                hls::SegmentInfo {
                    msn: 17,
                    duration: 3.9,
                    program_date_time_ms: 1_700_000_000_123,
                    discontinuity: true,
                    init_id: 3,
                    parts: vec![],
                },
                hls::SegmentInfo {
                    msn: 18,
                    duration: 0.1 + 0.2,
                    program_date_time_ms: -5,
                    discontinuity: false,
                    init_id: 3,
                    parts: vec![
                        hls::PartInfo {
                            duration: 0.2,
                            independent: true,
                        },
                        hls::PartInfo {
                            duration: 0.1 + 0.2 - 0.2,
                            independent: false,
                        },
                    ],
                },
            ],
            next_msn: 19,
            next_init_id: 4,
            next_discontinuity: true,
            next_program_date_time_ms: Some(1_700_000_004_000),
            pending_parts: vec![hls::PartInfo {
                duration: f64::MIN_POSITIVE,
                independent: true,
            }],
            ended: true,
        }
    }

    #[test]
    fn playlist_state_is_lossless() {
        let info = VariantInfo {
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(29.97),
            bandwidth: 2_500_000,
        };
        for p in [
            playlist(),
            MediaPlaylist {
                next_program_date_time_ms: None,
                ended: false,
                segments: vec![],
                ..playlist()
            },
        ] {
            let s = PlaylistState::new(9, &p, info.clone());
            let decoded = PlaylistState::decode(&s.encode_to_vec()[..]).unwrap();
            assert_eq!(decoded.playlist(), p);
            assert_eq!(decoded.variant(), info);
            assert_eq!(decoded.version, 9);
            assert_eq!(MediaPlaylist::from(&PlaylistState::from(&p)), p);
        }
        let none = PlaylistState::new(0, &playlist(), VariantInfo::default());
        let decoded = PlaylistState::decode(&none.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.variant(), VariantInfo::default());
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Request {
            kind: Some(request::Kind::Subscribe(Subscribe {
                stream: "s".into(),
                subscription: 7,
                have_init_id: Some(0),
                have_msn: Some(12),
                have_part: None,
            })),
        });
        round_trip(Request {
            kind: Some(request::Kind::Fetch(Fetch {
                stream: "s".into(),
                name: "seg-3.m4s".into(),
            })),
        });
        round_trip(Request { kind: None });
        round_trip(SubscribeReply {
            found: true,
            epoch: 7,
        });
        round_trip(PlaylistState::new(1, &playlist(), VariantInfo::default()));
        round_trip(ObjectHeader {
            stream: "s".into(),
            name: "part-3.1.m4s".into(),
            made_at_ms: 1_700_000_000_000,
            len: 1234,
            subscription: u64::MAX,
        });
        round_trip(FetchReply {
            status: FetchStatus::NoStream as i32,
            len: 0,
        });
        round_trip(Resolution {
            width: 1,
            height: 2,
        });
    }

    #[test]
    fn wire_layout_matches_the_schema() {
        // Spot checks of tags and wire types against relay.proto.
        assert_eq!(
            SubscribeReply {
                found: true,
                epoch: 0
            }
            .encode_to_vec(),
            [0x08, 1]
        );
        let s = Subscribe {
            stream: "a".into(),
            subscription: 1,
            have_init_id: Some(0),
            have_msn: None,
            have_part: Some(2),
        };
        assert_eq!(
            s.encode_to_vec(),
            [0x0a, 1, b'a', 0x10, 1, 0x18, 0, 0x28, 2]
        );
        let r = FetchReply {
            status: FetchStatus::NotFound as i32,
            len: 5,
        };
        assert_eq!(r.encode_to_vec(), [0x08, 1, 0x10, 5]);
        assert_eq!(r.status(), FetchStatus::NotFound);
        let f = Request {
            kind: Some(request::Kind::Fetch(Fetch {
                stream: String::new(),
                name: "x".into(),
            })),
        };
        assert_eq!(f.encode_to_vec(), [0x12, 3, 0x12, 1, b'x']);
    }
}
