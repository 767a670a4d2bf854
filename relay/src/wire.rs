//! The relay's messages, generated from `relay/relay.proto` into `src/gen/` (committed;
//! `tests/codegen.rs` keeps them current), the application error codes of the protocol,
//! the names objects travel under, and the lossless conversion between a
//! [`MediaPlaylist`] and a [`PlaylistState`]: the one place where the wire shape of a
//! playlist meets the media crate's.

use ferrocast_media::hls::names::{self, Object};
use ferrocast_media::hls::{self, MediaPlaylist};

#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
mod generated {
    include!("gen/ferrocast.relay.v1.rs");
}

pub use generated::*;

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

/// The name an object travels under in `ObjectHeader.name` and `Fetch.name`; playlists
/// never travel (edges render them from `PlaylistState`).
pub fn object_name(object: Object) -> Option<String> {
    match object {
        Object::Init(id) => Some(names::init(id)),
        Object::Part(msn, i) => Some(names::part(msn, i)),
        Object::Segment(msn) => Some(names::segment(msn)),
        Object::MediaPlaylist | Object::Multivariant => None,
    }
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

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes below were produced by the hand-written prost structs these generated
    /// ones replaced (issue 14): every field number, wire type and optionality is the
    /// same, so origins and edges of either build understand each other.
    #[test]
    fn encoding_is_byte_compatible_with_the_hand_written_messages() {
        let subscribe = Request {
            kind: Some(request::Kind::Subscribe(Subscribe {
                stream: "cam".into(),
                subscription: 300,
                have_init_id: Some(2),
                have_msn: Some(70000),
                have_part: Some(3),
            })),
        };
        assert_eq!(
            hex(&subscribe.encode_to_vec()),
            "0a100a0363616d10ac02180220f0a2042803"
        );
        let fetch = Request {
            kind: Some(request::Kind::Fetch(Fetch {
                stream: "cam".into(),
                name: "seg-9.m4s".into(),
            })),
        };
        assert_eq!(
            hex(&fetch.encode_to_vec()),
            "12100a0363616d12097365672d392e6d3473"
        );
        let reply = SubscribeReply {
            found: true,
            epoch: 129,
        };
        assert_eq!(hex(&reply.encode_to_vec()), "0801108101");
        let state = PlaylistState {
            version: 5,
            target_duration: 2,
            part_target: 0.25,
            media_sequence: 17,
            discontinuity_sequence: 1,
            segments: vec![SegmentInfo {
                msn: 17,
                duration: 1.5,
                program_date_time_ms: -3,
                discontinuity: true,
                init_id: 1,
                parts: vec![
                    PartInfo {
                        duration: 0.5,
                        independent: true,
                    },
                    PartInfo {
                        duration: 1.0,
                        independent: false,
                    },
                ],
            }],
            next_msn: 18,
            next_init_id: 1,
            next_discontinuity: true,
            next_program_date_time_ms: Some(1_700_000_000_000),
            pending_parts: vec![PartInfo {
                duration: 0.25,
                independent: true,
            }],
            ended: true,
            codecs: "avc1.64001f".into(),
            resolution: Some(Resolution {
                width: 1280,
                height: 720,
            }),
            frame_rate: Some(30.0),
            bandwidth: 2_500_000,
        };
        assert_eq!(
            hex(&state.encode_to_vec()),
            "0805100219000000000000d03f201128013232081111000000000000f83f18fdffffffffffffffff01\
             20012801320b09000000000000e03f1001320909000000000000f03f3812400148015080d095ffbc31\
             5a0b09000000000000d03f100160016a0b617663312e363430303166720608800a10d0057900000000\
             00003e408001a0cb9801"
        );
        let header = ObjectHeader {
            stream: "cam".into(),
            name: "part-18.0.m4s".into(),
            made_at_ms: 1_700_000_000_001,
            len: 4096,
            subscription: 300,
        };
        assert_eq!(
            hex(&header.encode_to_vec()),
            "0a0363616d120d706172742d31382e302e6d34731881d095ffbc3120802028ac02"
        );
        let no_stream = FetchReply {
            status: FetchStatus::NoStream as i32,
            len: 0,
        };
        assert_eq!(hex(&no_stream.encode_to_vec()), "0802");
        let ok = FetchReply {
            status: FetchStatus::Ok as i32,
            len: 1234,
        };
        assert_eq!(hex(&ok.encode_to_vec()), "10d209");
    }
}
