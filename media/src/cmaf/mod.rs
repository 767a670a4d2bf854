//! CMAF (ISO/IEC 23000-19) / ISO BMFF (ISO/IEC 14496-12) writing: the init segment (`ftyp` +
//! `moov`) and fragments (`moof` + `mdat`) that LL-HLS parts and segments are made of.
//!
//! Writing only; nothing here parses MP4. Boxes are built in one buffer with a size placeholder
//! that is patched when the box closes.

mod fragment;
mod init;

pub use fragment::{fragment, Sample, TrackRun};
pub use init::{init_segment, Track, TrackConfig};

/// Appends boxes to a buffer; `open` returns the box start, `close` patches its size.
#[derive(Debug, Default)]
pub(crate) struct BoxWriter {
    pub(crate) buf: Vec<u8>,
}

impl BoxWriter {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub(crate) fn open(&mut self, kind: &[u8; 4]) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(kind);
        start
    }

    /// A FullBox: box header + version (8 bits) + flags (24 bits).
    pub(crate) fn open_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let start = self.open(kind);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        start
    }

    pub(crate) fn close(&mut self, start: usize) {
        // Only `mdat` can outgrow 32 bits and it is written separately; saturating keeps this
        // total rather than panicking on absurd input.
        let size = u32::try_from(self.buf.len().saturating_sub(start)).unwrap_or(u32::MAX);
        self.patch_u32(start, size);
    }

    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// A minimal box walker for tests: (type, payload) of each box in `data`.
    pub(crate) fn children(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while rest.len() >= 8 {
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = rest[4..8].try_into().unwrap();
            let (size, header) = if size == 1 {
                (
                    u64::from_be_bytes(rest[8..16].try_into().unwrap()) as usize,
                    16,
                )
            } else {
                (size, 8)
            };
            assert!(size >= header && size <= rest.len(), "bad box size");
            out.push((kind, &rest[header..size]));
            rest = &rest[size..];
        }
        assert!(rest.is_empty(), "trailing bytes");
        out
    }

    /// The payload of the first box on a path like `["moov", "trak", "mdia"]`. Boxes that carry
    /// fields before their children (`stsd`, `dref`, sample entries) have those fields skipped.
    pub(crate) fn find<'a>(data: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
        let (first, rest) = path.split_first()?;
        let payload = children(data)
            .into_iter()
            .find(|(k, _)| k == first.as_bytes())?
            .1;
        if rest.is_empty() {
            return Some(payload);
        }
        let skip = match *first {
            "stsd" => 8,
            "dref" => 8,
            "avc1" | "hvc1" => 78,
            "mp4a" => 28,
            _ => 0,
        };
        find(payload.get(skip..)?, rest)
    }
}
