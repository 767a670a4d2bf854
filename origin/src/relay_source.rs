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
