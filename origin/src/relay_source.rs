//! The origin's streams as the relay server's [`Source`]: the one place where the
//! relay (crate `ferrocast-relay`) meets the packager's [`Snapshot`], so a change of the
//! packager's types is absorbed here.

use crate::package::{PartLookup, Snapshot};
use crate::stream::{Stream, Streams};
use bytes::Bytes;
use ferrocast_media::hls::names::Object;
use ferrocast_media::hls::MediaPlaylist;
use ferrocast_relay::server::source::{self, Lookup, PartRef, Source, SourceStream};
use ferrocast_relay::wire::VariantInfo;
use std::sync::Arc;
use tokio::sync::watch;

impl Source for Streams {
    type Stream = Stream;

    fn get(&self, name: &str) -> Option<Arc<Stream>> {
        Streams::get(self, name)
    }
}

impl SourceStream for Stream {
    type Snapshot = Snapshot;

    fn epoch(&self) -> u64 {
        Stream::epoch(self)
    }

    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        Stream::subscribe(self)
    }
}

impl source::Snapshot for Snapshot {
    fn version(&self) -> u64 {
        self.version
    }

    fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }

    fn variant(&self) -> VariantInfo {
        VariantInfo {
            codecs: self.info.codecs.clone(),
            resolution: self.info.resolution,
            frame_rate: self.info.frame_rate,
            bandwidth: self.info.bandwidth,
        }
    }

    fn live_msn(&self) -> u64 {
        self.building_msn.unwrap_or(self.playlist.next_msn)
    }

    fn inits(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        self.inits.iter().map(|(id, bytes)| (*id, bytes))
    }

    fn parts_from(&self, msn: u64) -> impl Iterator<Item = PartRef<'_>> + '_ {
        let complete = self
            .segments
            .iter()
            .filter(move |s| s.msn >= msn)
            .flat_map(|s| s.parts.iter().enumerate().map(move |(i, p)| (s.msn, i, p)));
        let building = self
            .building_msn
            .into_iter()
            .flat_map(|m| self.pending.iter().enumerate().map(move |(i, p)| (m, i, p)));
        complete.chain(building).filter_map(|(msn, i, p)| {
            Some(PartRef {
                msn,
                index: u32::try_from(i).ok()?,
                bytes: &p.bytes,
                made_at_ms: p.made_at_ms,
            })
        })
    }

    fn lookup(&self, object: Object) -> Lookup {
        match object {
            Object::Init(id) => self
                .init(id)
                .map_or(Lookup::Never, |b| Lookup::Found(vec![b])),
            Object::Part(msn, i) => match self.part(msn, i) {
                PartLookup::Found(b) => Lookup::Found(vec![b]),
                PartLookup::Soon => Lookup::Soon,
                PartLookup::Never => Lookup::Never,
            },
            Object::Segment(msn) => self.segment(msn).map_or(Lookup::Never, |s| {
                Lookup::Found(s.parts.iter().map(|p| p.bytes.clone()).collect())
            }),
            Object::MediaPlaylist | Object::Multivariant => Lookup::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Packager, PackagerConfig};
    use ferrocast_media::flv::{self, FlvTag};
    use ferrocast_relay::server::source::Snapshot as _;

    fn demo_tags() -> Vec<FlvTag> {
        let data = Bytes::from(
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../cli/assets/demo.flv"
            ))
            .unwrap(),
        );
        flv::read_file(&data).unwrap()
    }

    /// The demo clip packaged until two segments are complete and the third has parts.
    fn snapshot() -> Snapshot {
        let mut p = Packager::new(PackagerConfig::default(), None);
        p.begin_session();
        for t in demo_tags() {
            let r = match t.tag_type {
                8 => p.push_audio(
                    i64::from(t.timestamp_ms),
                    flv::parse_audio(&t.body).unwrap(),
                    0,
                ),
                9 => p.push_video(
                    i64::from(t.timestamp_ms),
                    flv::parse_video(&t.body).unwrap(),
                    0,
                ),
                _ => Ok(()),
            };
            r.unwrap();
            let s = p.snapshot();
            if s.playlist.segments.len() >= 2 && s.pending.len() >= 2 {
                return s;
            }
        }
        panic!("the demo clip is long enough")
    }

    fn positions(parts: impl Iterator<Item = (u64, u32)>) -> Vec<(u64, u32)> {
        parts.collect()
    }

    #[test]
    fn parts_are_listed_in_order_from_a_segment_through_the_one_being_built() {
        let snap = snapshot();
        let building = snap.building_msn.unwrap();
        assert_eq!(snap.live_msn(), building);

        let live = positions(snap.parts_from(building).map(|p| (p.msn, p.index)));
        let pending = snap.pending.len() as u32;
        assert_eq!(
            live,
            positions((0..pending).map(|i| (building, i))),
            "the live segment's parts"
        );

        let first = snap.segments.first().unwrap().msn;
        let all: Vec<_> = snap.parts_from(first).collect();
        let mut want = Vec::new();
        for s in &snap.segments {
            want.extend((0..s.parts.len() as u32).map(|i| (s.msn, i)));
        }
        want.extend((0..pending).map(|i| (building, i)));
        assert_eq!(positions(all.iter().map(|p| (p.msn, p.index))), want);
        // Bytes and cut times are the packager's own.
        let last = all.last().unwrap();
        let part = snap.pending.last().unwrap();
        assert_eq!(last.bytes, &part.bytes);
        assert_eq!(last.made_at_ms, part.made_at_ms);

        assert_eq!(
            snap.inits().map(|(id, _)| id).collect::<Vec<_>>(),
            snap.inits.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lookups_answer_from_the_snapshot() {
        let snap = snapshot();
        let seg = snap.segments.first().unwrap();
        let found = |o| match snap.lookup(o) {
            Lookup::Found(b) => b,
            other => panic!("{o:?}: {other:?}"),
        };
        assert_eq!(
            found(Object::Segment(seg.msn)),
            seg.parts
                .iter()
                .map(|p| p.bytes.clone())
                .collect::<Vec<_>>(),
            "a segment is its parts back to back"
        );
        assert_eq!(
            found(Object::Part(seg.msn, 1)),
            [seg.parts[1].bytes.clone()]
        );
        assert_eq!(found(Object::Init(0)), [snap.init(0).unwrap()]);
        let building = snap.building_msn.unwrap();
        assert!(matches!(
            snap.lookup(Object::Part(building, snap.pending.len() as u32)),
            Lookup::Soon
        ));
        assert!(matches!(snap.lookup(Object::Init(99)), Lookup::Never));
        assert!(matches!(snap.lookup(Object::MediaPlaylist), Lookup::Never));
    }
}
