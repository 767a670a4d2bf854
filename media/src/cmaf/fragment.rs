//! CMAF fragments: `moof` (mfhd + one traf per track run) followed by one `mdat`
//! (ISO/IEC 14496-12 8.8.4–8.8.12).

use bytes::Bytes;

use super::BoxWriter;

/// One media sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale (next DTS − this DTS).
    pub duration: u32,
    /// PTS − DTS in the track's timescale (trun version 1 allows negative values).
    pub composition_offset: i32,
    /// A sync sample (IDR / IRAP picture). Audio samples are all sync: set it for every one.
    pub keyframe: bool,
    /// The sample bytes (length-prefixed NAL units for video, one raw AAC frame for audio).
    pub data: Bytes,
}

/// The samples of one track in a fragment.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    /// track_ID from the init segment.
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    /// The samples, in decode order.
    pub samples: &'a [Sample],
}

// tfhd flags (8.8.7.1)
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
// trun flags (8.8.8.1)
const DATA_OFFSET_PRESENT: u32 = 0x000001;
const SAMPLE_DURATION_PRESENT: u32 = 0x000100;
const SAMPLE_SIZE_PRESENT: u32 = 0x000200;
const SAMPLE_FLAGS_PRESENT: u32 = 0x000400;
const SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT: u32 = 0x000800;

// Sample flags (8.8.3.1): sample_depends_on in bits 25..24, sample_is_non_sync_sample bit 16.
const SYNC_SAMPLE_FLAGS: u32 = 2 << 24;
const NON_SYNC_SAMPLE_FLAGS: u32 = (1 << 24) | (1 << 16);

/// One CMAF chunk: moof (mfhd seq, traf per run with tfhd default-base-is-moof, tfdt v1, trun v1 with
/// data offset, duration, size, flags, signed composition offsets) + one mdat. Runs with no samples are skipped.
///
/// Each trun's data_offset points at its run's first byte in the mdat, counted from the start
/// of the moof (default-base-is-moof), so the runs can be read without any other context.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Bytes {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let payload: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let sample_count: usize = runs.iter().map(|r| r.samples.len()).sum();
    let moof_estimate = 24 + runs.len() * 64 + sample_count * 16;
    let mut w = BoxWriter::with_capacity(moof_estimate + 16 + payload);

    let moof = w.open(b"moof");
    let mfhd = w.open_full(b"mfhd", 0, 0);
    w.u32(sequence_number);
    w.close(mfhd);
    let mut offset_slots = Vec::with_capacity(runs.len());
    for run in &runs {
        let traf = w.open(b"traf");
        let tfhd = w.open_full(b"tfhd", 0, DEFAULT_BASE_IS_MOOF);
        w.u32(run.track_id);
        w.close(tfhd);
        let tfdt = w.open_full(b"tfdt", 1, 0);
        w.u64(run.base_decode_time);
        w.close(tfdt);
        let trun = w.open_full(
            b"trun",
            1,
            DATA_OFFSET_PRESENT
                | SAMPLE_DURATION_PRESENT
                | SAMPLE_SIZE_PRESENT
                | SAMPLE_FLAGS_PRESENT
                | SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT,
        );
        w.u32(u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
        offset_slots.push(w.buf.len());
        w.u32(0); // data_offset, patched once the moof size is known
        for s in run.samples {
            w.u32(s.duration);
            w.u32(u32::try_from(s.data.len()).unwrap_or(u32::MAX));
            w.u32(if s.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            });
            w.u32(s.composition_offset as u32); // version 1: signed, two's complement
        }
        w.close(trun);
        w.close(traf);
    }
    w.close(moof);

    let moof_size = w.buf.len() - moof;
    let mdat_total = 8 + payload;
    let mdat_header = if u32::try_from(mdat_total).is_ok() {
        w.u32(mdat_total as u32);
        w.bytes(b"mdat");
        8
    } else {
        // 64-bit largesize (8.1.1) for an mdat of 4 GiB or more.
        w.u32(1);
        w.bytes(b"mdat");
        w.u64((payload + 16) as u64);
        16
    };
    let mut run_start = moof_size + mdat_header;
    for (run, slot) in runs.iter().zip(offset_slots) {
        w.patch_u32(slot, u32::try_from(run_start).unwrap_or(u32::MAX));
        for s in run.samples {
            w.bytes(&s.data);
            run_start += s.data.len();
        }
    }
    Bytes::from(w.buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::tests::{children, find};

    fn sample(duration: u32, cts: i32, key: bool, data: &'static [u8]) -> Sample {
        Sample {
            duration,
            composition_offset: cts,
            keyframe: key,
            data: Bytes::from_static(data),
        }
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn layout_and_data_offsets() {
        let video = [
            sample(3000, 6000, true, b"KEYFRAME"),
            sample(3000, -3000, false, b"B"),
        ];
        let audio = [
            sample(1024, 0, true, b"aac1"),
            sample(1024, 0, true, b"aac22"),
        ];
        let out = fragment(
            7,
            &[
                TrackRun {
                    track_id: 1,
                    base_decode_time: 90_000,
                    samples: &video,
                },
                TrackRun {
                    track_id: 3,
                    base_decode_time: 0,
                    samples: &[],
                },
                TrackRun {
                    track_id: 2,
                    base_decode_time: 1 << 40,
                    samples: &audio,
                },
            ],
        );
        let top = children(&out);
        assert_eq!(top.len(), 2);
        assert_eq!(&top[0].0, b"moof");
        assert_eq!(&top[1].0, b"mdat");
        assert_eq!(top[1].1, b"KEYFRAMEBaac1aac22");
        let moof = top[0].1;
        let kids = children(moof);
        let kinds: Vec<_> = kids.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [*b"mfhd", *b"traf", *b"traf"]); // the empty run is skipped
        assert_eq!(be32(kids[0].1, 4), 7);

        let traf_v = kids[1].1;
        let tfhd = find(traf_v, &["tfhd"]).unwrap();
        assert_eq!(be32(tfhd, 0), 0x0002_0000);
        assert_eq!(be32(tfhd, 4), 1);
        let tfdt = find(traf_v, &["tfdt"]).unwrap();
        assert_eq!(tfdt[0], 1);
        assert_eq!(&tfdt[4..12], &90_000u64.to_be_bytes());
        let trun = find(traf_v, &["trun"]).unwrap();
        assert_eq!(be32(trun, 0), 0x0100_0f01);
        assert_eq!(be32(trun, 4), 2);
        let data_offset = be32(trun, 8) as usize;
        assert_eq!(&out[data_offset..data_offset + 8], b"KEYFRAME");
        // sample 0: duration, size, flags, cts
        assert_eq!(
            [
                be32(trun, 12),
                be32(trun, 16),
                be32(trun, 20),
                be32(trun, 24)
            ],
            [3000, 8, 0x0200_0000, 6000]
        );
        assert_eq!(
            [
                be32(trun, 28),
                be32(trun, 32),
                be32(trun, 36),
                be32(trun, 40)
            ],
            [3000, 1, 0x0101_0000, (-3000i32) as u32]
        );

        let traf_a = kids[2].1;
        let tfdt = find(traf_a, &["tfdt"]).unwrap();
        assert_eq!(&tfdt[4..12], &(1u64 << 40).to_be_bytes());
        let trun = find(traf_a, &["trun"]).unwrap();
        let data_offset = be32(trun, 8) as usize;
        assert_eq!(&out[data_offset..data_offset + 9], b"aac1aac22");
        assert_eq!(be32(trun, 20), 0x0200_0000);
    }

    #[test]
    fn empty_fragment_is_still_well_formed() {
        let out = fragment(1, &[]);
        let top = children(&out);
        assert_eq!(top.len(), 2);
        assert!(top[1].1.is_empty());
    }
}
