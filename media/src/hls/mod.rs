//! HLS and Low-Latency HLS (draft-pantos-hls-rfc8216bis): the media and multivariant
//! playlist renderers, the delivery-directive query parser (`_HLS_msn`, `_HLS_part`,
//! `_HLS_skip`), the blocking-reload decision and where a requested object stands
//! ([`locate`]), the deterministic object names, and a
//! structural playlist linter. Everything here is a pure function of its inputs: the
//! window snapshot comes from the packager, the clock never enters.

pub mod lint;
pub mod locate;
pub mod names;
mod playlist;
mod query;

pub use locate::{
    hold_limit, locate_part, locate_segment, playlist_request, PartPlace, SegmentPlace,
};
pub use playlist::{
    blocking_decision, format_date_time, render_media, render_multivariant, BlockDecision,
    MediaPlaylist, PartInfo, RenderOptions, SegmentInfo, Variant,
};
pub use query::{parse_query, BlockingQuery, QueryError, SkipRequest, MAX_QUERY_LEN};
