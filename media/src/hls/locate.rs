//! What a serving node decides about one viewer request from the playlist alone: where
//! a requested part or segment stands (listed, fetchable, soon, never), whether a
//! playlist request may be held, and for how long. Origins and edges both answer with
//! these functions, so the rule lives once and both roles give the same answer for the
//! same playlist: the origin reads the bytes from its packager, the edge from its cache
//! or upstream, but which requests wait and which are refused is decided here.

use super::playlist::{blocking_decision, BlockDecision, MediaPlaylist, SegmentInfo};
use super::query::BlockingQuery;
use std::time::Duration;

/// How many segments older than the playlist window may still be asked for (an origin
/// retains a few beyond the window; asking for anything older would only load it).
pub const OLDER_SEGMENTS: u64 = 8;

/// How long a request is held when no playlist is known yet.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(6);

/// Where a requested part stands against a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartPlace {
    /// Listed in the playlist: it exists.
    Listed,
    /// Not listed but maybe still held (a part of an older segment): look it up.
    Fetch,
    /// The preload-hinted part or the one after it: worth holding the request.
    Soon,
    /// Does not exist and never will.
    Never,
}

/// Where a requested segment stands against a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentPlace {
    /// Complete and listed with this many parts: it is those parts back to back.
    Parts(usize),
    /// Complete but its parts are not listed, or it slid out of the window: look it up.
    Fetch,
    /// The segment being built: worth holding the request.
    Soon,
    /// Does not exist and never will.
    Never,
}

/// At least one part exists (a stream with none has "no media yet").
pub fn has_media(p: &MediaPlaylist) -> bool {
    !p.segments.is_empty() || !p.pending_parts.is_empty()
}

fn recently_dropped(p: &MediaPlaylist, msn: u64) -> bool {
    msn < p.media_sequence && msn.saturating_add(OLDER_SEGMENTS) >= p.media_sequence
}

/// Where part `i` of segment `msn` stands.
///
/// The hinted part (`next_msn`, pending count) and the one after it are held. The one
/// after may be the next part of `next_msn`, or part 0 of `next_msn + 1` when `next_msn`
/// ends after the hinted part; both are held. This is decided from the playlist alone,
/// never from whether the packager happens to be building a segment at this instant
/// (origins once refused part 0 of `next_msn + 1` between two segments while edges held
/// it): a viewer only knows the playlist, and the same playlist must get the same
/// answer from every node.
pub fn locate_part(p: &MediaPlaylist, msn: u64, i: u32) -> PartPlace {
    let i = i as usize;
    if msn < p.next_msn {
        return match p.segment(msn) {
            Some(s) if s.parts.is_empty() => PartPlace::Fetch,
            Some(s) if i < s.parts.len() => PartPlace::Listed,
            Some(_) => PartPlace::Never,
            None if recently_dropped(p, msn) => PartPlace::Fetch,
            None => PartPlace::Never,
        };
    }
    let pending = p.pending_parts.len();
    if msn == p.next_msn {
        if i < pending {
            PartPlace::Listed
        } else if !p.ended && i <= pending + 1 {
            PartPlace::Soon
        } else {
            PartPlace::Never
        }
    } else if !p.ended && msn == p.next_msn + 1 && i == 0 {
        PartPlace::Soon
    } else {
        PartPlace::Never
    }
}

/// Where segment `msn` stands.
pub fn locate_segment(p: &MediaPlaylist, msn: u64) -> SegmentPlace {
    if msn < p.next_msn {
        match p.segment(msn) {
            Some(SegmentInfo { parts, .. }) if !parts.is_empty() => {
                SegmentPlace::Parts(parts.len())
            }
            Some(_) => SegmentPlace::Fetch,
            None if recently_dropped(p, msn) => SegmentPlace::Fetch,
            None => SegmentPlace::Never,
        }
    } else if msn == p.next_msn && !p.ended {
        SegmentPlace::Soon
    } else {
        SegmentPlace::Never
    }
}

/// Whether a playlist request with delivery directives `q` is answered now, held
/// ([`BlockDecision::Wait`]) or refused: a live stream with no media yet holds every
/// request (the first part is about to come), otherwise [`blocking_decision`] decides.
pub fn playlist_request(p: &MediaPlaylist, q: &BlockingQuery) -> BlockDecision {
    if !has_media(p) && !p.ended {
        BlockDecision::Wait
    } else {
        blocking_decision(p, q)
    }
}

/// How long a held request may wait: about three target durations (rfc8216bis
/// §6.2.5.2 suggests 503 after that), or [`DEFAULT_HOLD`] before any playlist.
pub fn hold_limit(p: Option<&MediaPlaylist>) -> Duration {
    match p {
        Some(p) => Duration::from_secs_f64(3.0 * f64::from(p.target_duration.max(1))),
        None => DEFAULT_HOLD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::{PartInfo, SkipRequest};

    /// `complete` segments of `parts` one-second parts from `media_sequence`, then
    /// `pending` parts of the segment being built.
    fn playlist(media_sequence: u64, complete: u64, parts: usize, pending: usize) -> MediaPlaylist {
        let part = PartInfo {
            duration: 1.0,
            independent: true,
        };
        MediaPlaylist {
            target_duration: 4,
            part_target: 1.0,
            media_sequence,
            discontinuity_sequence: 0,
            segments: (media_sequence..media_sequence + complete)
                .map(|msn| SegmentInfo {
                    msn,
                    duration: parts as f64,
                    program_date_time_ms: 0,
                    discontinuity: false,
                    init_id: 0,
                    parts: vec![part.clone(); parts],
                })
                .collect(),
            next_msn: media_sequence + complete,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: None,
            pending_parts: vec![part; pending],
            ended: false,
        }
    }

    fn query(msn: Option<u64>, part: Option<u32>) -> BlockingQuery {
        BlockingQuery {
            msn,
            part,
            skip: SkipRequest::No,
        }
    }

    #[test]
    fn parts_are_listed_held_fetched_or_refused() {
        // Segments 10..12 complete (4 parts each), 2 parts of 12 so far.
        let p = playlist(10, 2, 4, 2);
        assert_eq!(locate_part(&p, 10, 3), PartPlace::Listed);
        assert_eq!(locate_part(&p, 10, 4), PartPlace::Never);
        assert_eq!(locate_part(&p, 12, 1), PartPlace::Listed);
        // The hinted part and the one after are held; further ones are not.
        assert_eq!(locate_part(&p, 12, 2), PartPlace::Soon);
        assert_eq!(locate_part(&p, 12, 3), PartPlace::Soon);
        assert_eq!(locate_part(&p, 12, 4), PartPlace::Never);
        assert_eq!(locate_part(&p, 13, 0), PartPlace::Soon);
        assert_eq!(locate_part(&p, 13, 1), PartPlace::Never);
        assert_eq!(locate_part(&p, 14, 0), PartPlace::Never);
        // Slid out of the window: maybe still held, within reason.
        assert_eq!(locate_part(&p, 9, 0), PartPlace::Fetch);
        assert_eq!(locate_part(&p, 2, 0), PartPlace::Fetch);
        assert_eq!(locate_part(&p, 1, 0), PartPlace::Never);
        let mut ended = p.clone();
        ended.ended = true;
        assert_eq!(locate_part(&ended, 12, 2), PartPlace::Never);
        assert_eq!(locate_part(&ended, 13, 0), PartPlace::Never);
    }

    #[test]
    fn between_two_segments_the_hinted_part_and_the_one_after_are_held_either_way() {
        // Segment 12 just completed, nothing of 13 yet: the hint is 13.0, and the part
        // after it is 13.1 or, should 13 end after one part, 14.0. The origin used to
        // refuse 14.0 here (it knew no segment was being built); the playlist cannot
        // say, so both are held, on every node.
        let p = playlist(10, 3, 4, 0);
        assert_eq!(locate_part(&p, 13, 0), PartPlace::Soon);
        assert_eq!(locate_part(&p, 13, 1), PartPlace::Soon);
        assert_eq!(locate_part(&p, 14, 0), PartPlace::Soon);
        assert_eq!(locate_part(&p, 13, 2), PartPlace::Never);
        assert_eq!(locate_part(&p, 14, 1), PartPlace::Never);
    }

    #[test]
    fn segments_are_parts_fetched_held_or_refused() {
        let mut p = playlist(10, 2, 4, 2);
        assert_eq!(locate_segment(&p, 11), SegmentPlace::Parts(4));
        assert_eq!(locate_segment(&p, 12), SegmentPlace::Soon);
        assert_eq!(locate_segment(&p, 13), SegmentPlace::Never);
        assert_eq!(locate_segment(&p, 5), SegmentPlace::Fetch);
        p.segments[0].parts.clear();
        assert_eq!(locate_segment(&p, 10), SegmentPlace::Fetch);
        p.ended = true;
        assert_eq!(locate_segment(&p, 12), SegmentPlace::Never);
    }

    #[test]
    fn a_stream_without_media_holds_every_playlist_request_until_it_ends() {
        let mut p = playlist(0, 0, 4, 0);
        assert!(!has_media(&p));
        assert_eq!(
            playlist_request(&p, &query(None, None)),
            BlockDecision::Wait
        );
        assert_eq!(
            playlist_request(&p, &query(Some(0), Some(0))),
            BlockDecision::Wait
        );
        p.ended = true;
        assert_eq!(
            playlist_request(&p, &query(None, None)),
            BlockDecision::Ready
        );
        let live = playlist(10, 2, 4, 2);
        assert_eq!(
            playlist_request(&live, &query(None, None)),
            BlockDecision::Ready
        );
        assert_eq!(
            playlist_request(&live, &query(Some(12), Some(2))),
            BlockDecision::Wait
        );
        assert_eq!(
            playlist_request(&live, &query(Some(12), Some(1))),
            BlockDecision::Ready
        );
        assert_eq!(
            playlist_request(&live, &query(Some(20), None)),
            BlockDecision::BadRequest
        );
    }

    #[test]
    fn a_request_is_held_for_three_target_durations() {
        let p = playlist(10, 2, 4, 2);
        assert_eq!(hold_limit(Some(&p)), Duration::from_secs(12));
        assert_eq!(hold_limit(None), DEFAULT_HOLD);
        let mut zero = p;
        zero.target_duration = 0;
        assert_eq!(hold_limit(Some(&zero)), Duration::from_secs(3));
    }
}
