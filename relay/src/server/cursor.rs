//! What one subscription has pushed so far, and which objects of a new snapshot are
//! new to it: the server's push rule, sans-IO and unit-tested on fabricated snapshots.

use super::source::Snapshot;
use crate::wire::Subscribe;
use bytes::Bytes;
use ferrocast_media::hls::names::Object;

/// What a subscription has pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    /// First init id not pushed yet.
    pub(super) next_init: u64,
    /// First part (msn, index) not pushed yet.
    pub(super) next_part: (u64, u32),
}

/// New objects to push, oldest first.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Objects with the time parts were cut (none for inits).
    pub(super) objects: Vec<(Object, Bytes, Option<i64>)>,
    /// Parts left out because the subscriber was too far behind.
    pub(super) skipped: u64,
}

impl Cursor {
    /// Starts after the edge's markers; without them (or with markers this origin
    /// cannot make sense of) at the segment being built.
    pub(super) fn new(req: &Subscribe, snap: &impl Snapshot) -> Self {
        let live = snap.live_msn();
        let next_part = match (req.have_msn, req.have_part) {
            (Some(m), Some(p)) => (m, p.saturating_add(1)),
            (Some(m), None) => (m.saturating_add(1), 0),
            _ => (live, 0),
        };
        // Markers ahead of what exists (another origin's numbering) restart at the tail.
        let next_part = if next_part.0 > live.saturating_add(1) {
            (live, 0)
        } else {
            next_part
        };
        Self {
            next_init: req.have_init_id.map_or(0, |i| i.saturating_add(1)),
            next_part,
        }
    }

    /// The objects of `snap` not pushed yet; of the parts at most the newest
    /// `skip_after`.
    pub(super) fn take_new(&mut self, snap: &impl Snapshot, skip_after: usize) -> Batch {
        let mut batch = Batch::default();
        for (id, bytes) in snap.inits() {
            if id >= self.next_init {
                batch.objects.push((Object::Init(id), bytes.clone(), None));
                self.next_init = id + 1;
            }
        }
        let next = self.next_part;
        let mut parts: Vec<_> = snap
            .parts_from(next.0)
            .filter(|p| (p.msn, p.index) >= next)
            .collect();
        if parts.len() > skip_after {
            let skipped = parts.len() - skip_after;
            batch.skipped = skipped as u64;
            parts.drain(..skipped);
        }
        if let Some(p) = parts.last() {
            self.next_part = (p.msn, p.index + 1);
        }
        batch.objects.extend(parts.into_iter().map(|p| {
            (
                Object::Part(p.msn, p.index),
                p.bytes.clone(),
                Some(p.made_at_ms),
            )
        }));
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::source::{Lookup, PartRef};
    use crate::wire::VariantInfo;
    use ferrocast_media::hls::MediaPlaylist;

    /// A stream as a list of segments of `parts` parts each; the last one is being built.
    #[derive(Debug)]
    struct Fake {
        inits: Vec<(u64, Bytes)>,
        /// (msn, parts so far); the last is the segment being built.
        segments: Vec<(u64, u32)>,
        bytes: Bytes,
        playlist: MediaPlaylist,
    }

    impl Fake {
        fn new(first: u64, complete: u64, parts: u32, building: u32) -> Self {
            let mut segments: Vec<_> = (first..first + complete).map(|m| (m, parts)).collect();
            segments.push((first + complete, building));
            Fake {
                inits: vec![(0, Bytes::from_static(b"init"))],
                segments,
                bytes: Bytes::from_static(b"part"),
                // The cursor never reads the playlist.
                playlist: MediaPlaylist {
                    target_duration: 1,
                    part_target: 0.2,
                    media_sequence: first,
                    discontinuity_sequence: 0,
                    segments: Vec::new(),
                    next_msn: first + complete,
                    next_init_id: 0,
                    next_discontinuity: false,
                    next_program_date_time_ms: None,
                    pending_parts: Vec::new(),
                    ended: false,
                },
            }
        }
    }

    impl Snapshot for Fake {
        fn version(&self) -> u64 {
            0
        }
        fn playlist(&self) -> &MediaPlaylist {
            &self.playlist
        }
        fn variant(&self) -> VariantInfo {
            VariantInfo::default()
        }
        fn live_msn(&self) -> u64 {
            self.segments.last().map_or(0, |s| s.0)
        }
        fn inits(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
            self.inits.iter().map(|(id, b)| (*id, b))
        }
        fn parts_from(&self, msn: u64) -> impl Iterator<Item = PartRef<'_>> + '_ {
            self.segments
                .iter()
                .filter(move |s| s.0 >= msn)
                .flat_map(move |&(msn, n)| {
                    (0..n).map(move |index| PartRef {
                        msn,
                        index,
                        bytes: &self.bytes,
                        made_at_ms: i64::from(index),
                    })
                })
        }
        fn lookup(&self, _object: Object) -> Lookup {
            Lookup::Never
        }
    }

    fn names_of(b: &Batch) -> Vec<Object> {
        b.objects.iter().map(|(o, _, _)| *o).collect()
    }

    #[test]
    fn a_fresh_subscription_gets_the_inits_and_the_live_segment_once() {
        let snap = Fake::new(3, 2, 4, 2);
        let mut c = Cursor::new(&Subscribe::default(), &snap);
        let first = c.take_new(&snap, 100);
        assert_eq!(
            names_of(&first),
            [Object::Init(0), Object::Part(5, 0), Object::Part(5, 1)]
        );
        assert_eq!(first.objects[2].2, Some(1), "a part keeps its cut time");
        assert!(c.take_new(&snap, 100).objects.is_empty(), "nothing twice");

        // The live segment closes and the next one begins: only what is new.
        let snap2 = Fake::new(3, 3, 4, 1);
        assert_eq!(
            names_of(&c.take_new(&snap2, 100)),
            [Object::Part(5, 2), Object::Part(5, 3), Object::Part(6, 0)]
        );
    }

    #[test]
    fn a_resumed_subscription_starts_after_its_markers() {
        let snap = Fake::new(3, 2, 4, 2);
        let resumed = Subscribe {
            have_init_id: Some(0),
            have_msn: Some(4),
            have_part: Some(2),
            ..Default::default()
        };
        let mut c = Cursor::new(&resumed, &snap);
        assert_eq!(
            names_of(&c.take_new(&snap, 100)),
            [Object::Part(4, 3), Object::Part(5, 0), Object::Part(5, 1)],
            "init not repeated"
        );
        // A whole segment held: the next one from its first part.
        let whole = Subscribe {
            have_init_id: Some(0),
            have_msn: Some(4),
            ..Default::default()
        };
        let mut c = Cursor::new(&whole, &snap);
        assert_eq!(
            names_of(&c.take_new(&snap, 100)),
            [Object::Part(5, 0), Object::Part(5, 1)]
        );
    }

    #[test]
    fn a_subscriber_far_behind_skips_to_the_newest_parts() {
        let snap = Fake::new(0, 5, 4, 2);
        let mut far = Cursor::new(
            &Subscribe {
                have_msn: Some(0),
                have_part: Some(0),
                ..Default::default()
            },
            &snap,
        );
        let b = far.take_new(&snap, 3);
        assert_eq!(
            names_of(&b),
            [
                Object::Init(0),
                Object::Part(4, 3),
                Object::Part(5, 0),
                Object::Part(5, 1)
            ],
            "init + the 3 newest parts"
        );
        // Three left in segment 0, four in each of 1..=4, two being built: 21 new.
        assert_eq!(b.skipped, 21 - 3);
        assert_eq!(far.next_part, (5, 2));
    }

    #[test]
    fn markers_from_the_future_restart_at_the_live_tail() {
        let snap = Fake::new(0, 2, 4, 1);
        let future = Cursor::new(
            &Subscribe {
                have_msn: Some(1_000_000),
                ..Default::default()
            },
            &snap,
        );
        assert_eq!(future.next_part, (2, 0));
        // One segment ahead is not the future: the next segment may just be starting.
        let next = Cursor::new(
            &Subscribe {
                have_msn: Some(2),
                ..Default::default()
            },
            &snap,
        );
        assert_eq!(next.next_part, (3, 0));
    }
}
