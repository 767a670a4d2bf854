//! H.265 / HEVC: the HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC 14496-15 8.3.3.1), the
//! SPS fields a packager needs (ITU-T H.265 7.3.2.2), building an `hvcC` from bare parameter
//! sets, and the codec string of 14496-15 Annex E.3.

use bytes::Bytes;

use super::{frame_rate, unescape_rbsp, BitReader, ByteReader, CodecError};

/// NAL unit types of the parameter sets (H.265 Table 7-1).
const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

/// A parsed `hvcC` with the first SPS's picture size and frame rate.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcConfig {
    /// The record exactly as received (or built); written verbatim into the `hvcC` box.
    pub raw: Bytes,
    /// general_profile_space (0..3).
    pub general_profile_space: u8,
    /// general_tier_flag: false = Main tier, true = High tier.
    pub general_tier_flag: bool,
    /// general_profile_idc (1 = Main, 2 = Main 10, ...).
    pub general_profile_idc: u8,
    /// general_profile_compatibility_flags, flag j in bit 31 - j.
    pub general_profile_compatibility_flags: u32,
    /// The 48 bits of general constraint indicator flags, right-aligned.
    pub general_constraint_indicator_flags: u64,
    /// general_level_idc (30 × the level number).
    pub general_level_idc: u8,
    /// Bytes in each NAL unit length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    /// Video parameter set NAL units (zero-copy slices of `raw`).
    pub vps: Vec<Bytes>,
    /// Sequence parameter set NAL units (zero-copy slices of `raw`).
    pub sps: Vec<Bytes>,
    /// Picture parameter set NAL units (zero-copy slices of `raw`).
    pub pps: Vec<Bytes>,
    /// Width in luma samples after the conformance window.
    pub width: u32,
    /// Height in luma samples after the conformance window.
    pub height: u32,
    /// Frames per second from the SPS VUI timing info, when present.
    pub frame_rate: Option<f64>,
}

impl HevcConfig {
    /// Parse an `hvcC` record. The first SPS must parse.
    pub fn parse(hvcc: &Bytes) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(hvcc);
        let version = r.u8("hvcC header")?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let (hs, he) = r.take(12, "hvcC header")?;
        let ptl = Ptl::from_bytes(hvcc.get(hs..he).unwrap_or_default())?;
        // min_spatial_segmentation_idc, parallelismType, chromaFormat, bit depths, avgFrameRate
        r.take(8, "hvcC header")?;
        let nal_length_size = (r.u8("hvcC header")? & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(CodecError::Invalid("hvcC lengthSizeMinusOne"));
        }
        let num_arrays = r.u8("hvcC array count")?;
        let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..num_arrays {
            let nal_type = r.u8("hvcC array header")? & 0x3f;
            let count = r.u16("hvcC array header")?;
            for _ in 0..count {
                let len = r.u16("hvcC NAL length")?;
                let (s, e) = r.take(usize::from(len), "hvcC NAL unit")?;
                let nal = hvcc.slice(s..e);
                match nal_type {
                    NAL_VPS => vps.push(nal),
                    NAL_SPS => sps.push(nal),
                    NAL_PPS => pps.push(nal),
                    _ => {} // SEI arrays and the like: carried in `raw`, not needed here
                }
            }
        }
        let first = sps.first().ok_or(CodecError::Missing("SPS"))?;
        let info = parse_sps(first)?;
        Ok(Self {
            raw: hvcc.clone(),
            general_profile_space: ptl.profile_space,
            general_tier_flag: ptl.tier_flag,
            general_profile_idc: ptl.profile_idc,
            general_profile_compatibility_flags: ptl.compatibility_flags,
            general_constraint_indicator_flags: ptl.constraint_flags,
            general_level_idc: ptl.level_idc,
            nal_length_size,
            vps,
            sps,
            pps,
            width: info.width,
            height: info.height,
            frame_rate: info.frame_rate,
        })
    }

    /// Codec string per ISO/IEC 14496-15 Annex E.3, e.g. `hvc1.1.6.L93.B0`: profile space
    /// letter + profile_idc, the compatibility flags bit-reversed in hex, tier + level, then the
    /// constraint bytes in hex with trailing zero bytes omitted.
    pub fn codec_string(&self) -> String {
        let space = match self.general_profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.general_profile_idc,
            self.general_profile_compatibility_flags.reverse_bits(),
            if self.general_tier_flag { 'H' } else { 'L' },
            self.general_level_idc,
        );
        let bytes = self.general_constraint_indicator_flags.to_be_bytes();
        let constraint = bytes.get(2..).unwrap_or_default();
        let used = constraint
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1);
        for b in constraint.iter().take(used) {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }

    /// Build an `hvcC` (array_completeness set, 4-byte NAL lengths) from one VPS, SPS and PPS
    /// NAL unit each (with their two-byte NAL headers, as they appear in an Annex B stream).
    /// The profile, tier, level, chroma format, bit depths and temporal layering come from the SPS.
    pub fn from_parameter_sets(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Self, CodecError> {
        for (nal, ty, what) in [
            (vps, NAL_VPS, "VPS NAL unit type"),
            (sps, NAL_SPS, "SPS NAL unit type"),
            (pps, NAL_PPS, "PPS NAL unit type"),
        ] {
            if nal_type(nal) != Some(ty) {
                return Err(CodecError::Invalid(what));
            }
            if nal.len() > usize::from(u16::MAX) {
                return Err(CodecError::Invalid("parameter set too large for hvcC"));
            }
        }
        let info = parse_sps(sps)?;
        let mut raw = Vec::with_capacity(23 + 15 + vps.len() + sps.len() + pps.len());
        raw.push(1); // configurationVersion
        raw.extend_from_slice(&info.ptl_bytes);
        raw.extend_from_slice(&[0xf0, 0x00]); // reserved + min_spatial_segmentation_idc = 0
        raw.push(0xfc); // reserved + parallelismType = 0 (unknown)
        raw.push(0xfc | (info.chroma_format_idc & 0x03));
        raw.push(0xf8 | (info.bit_depth_luma_minus8 & 0x07));
        raw.push(0xf8 | (info.bit_depth_chroma_minus8 & 0x07));
        raw.extend_from_slice(&[0, 0]); // avgFrameRate = 0 (unspecified)
                                        // constantFrameRate = 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne = 3
        raw.push(
            ((info.max_sub_layers & 0x07) << 3) | (u8::from(info.temporal_id_nesting) << 2) | 0x03,
        );
        raw.push(3); // numOfArrays
        for (ty, nal) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
            raw.push(0x80 | ty); // array_completeness = 1: no more of this type in-band
            raw.extend_from_slice(&1u16.to_be_bytes());
            raw.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            raw.extend_from_slice(nal);
        }
        Self::parse(&Bytes::from(raw))
    }
}

fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// The general part of profile_tier_level() (H.265 7.3.3), 12 bytes in both the SPS and hvcC.
#[derive(Debug)]
struct Ptl {
    profile_space: u8,
    tier_flag: bool,
    profile_idc: u8,
    compatibility_flags: u32,
    constraint_flags: u64,
    level_idc: u8,
}

impl Ptl {
    fn from_bytes(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(b);
        Ok(Self {
            profile_space: r.bits(2)? as u8,
            tier_flag: r.flag()?,
            profile_idc: r.bits(5)? as u8,
            compatibility_flags: r.bits(32)?,
            constraint_flags: r.bits64(48)?,
            level_idc: r.bits(8)? as u8,
        })
    }
}

/// The fields of an H.265 SPS that a packager needs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SpsInfo {
    /// The 12 bytes of general profile_tier_level, as laid out in `hvcC`.
    pub ptl_bytes: [u8; 12],
    /// sps_max_sub_layers_minus1 + 1.
    pub max_sub_layers: u8,
    /// sps_temporal_id_nesting_flag.
    pub temporal_id_nesting: bool,
    /// chroma_format_idc.
    pub chroma_format_idc: u8,
    /// bit_depth_luma_minus8.
    pub bit_depth_luma_minus8: u8,
    /// bit_depth_chroma_minus8.
    pub bit_depth_chroma_minus8: u8,
    /// Width in luma samples after the conformance window.
    pub width: u32,
    /// Height in luma samples after the conformance window.
    pub height: u32,
    /// Frames per second from VUI timing, when present.
    pub frame_rate: Option<f64>,
}

/// Parse an SPS NAL unit (with its two-byte NAL header, emulation prevention bytes included).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, CodecError> {
    if nal_type(nal) != Some(NAL_SPS) {
        return Err(CodecError::Invalid("SPS NAL unit type"));
    }
    let rbsp = unescape_rbsp(nal);
    let mut r = BitReader::new(&rbsp);
    r.skip(16)?; // nal_unit_header()
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as u8;
    if max_sub_layers_minus1 > 6 {
        return Err(CodecError::Invalid("sps_max_sub_layers_minus1"));
    }
    let temporal_id_nesting = r.flag()?;
    // profile_tier_level(1, sps_max_sub_layers_minus1): the general part is byte aligned here.
    let mut ptl_bytes = [0u8; 12];
    for b in &mut ptl_bytes {
        *b = r.bits(8)? as u8;
    }
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        sub_profile[i] = r.flag()?;
        sub_level[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - usize::from(max_sub_layers_minus1)))?; // reserved_zero_2bits
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
            r.skip(8)?;
        }
    }
    r.ue_max(15, "sps_seq_parameter_set_id")?;
    let chroma_format_idc = r.ue_max(3, "chroma_format_idc")? as u8;
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let pic_width = u64::from(r.ue()?);
    let pic_height = u64::from(r.ue()?);
    let mut win = [0u64; 4];
    if r.flag()? {
        for w in &mut win {
            *w = u64::from(r.ue()?);
        }
    }
    // Conformance window offsets are in chroma units (7.4.3.2.1, Table 6-1).
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let width = pic_width
        .checked_sub((win[0] + win[1]) * sub_w)
        .filter(|w| *w > 0)
        .and_then(|w| u32::try_from(w).ok())
        .ok_or(CodecError::Invalid("SPS width/conformance window"))?;
    let height = pic_height
        .checked_sub((win[2] + win[3]) * sub_h)
        .filter(|h| *h > 0)
        .and_then(|h| u32::try_from(h).ok())
        .ok_or(CodecError::Invalid("SPS height/conformance window"))?;
    let bit_depth_luma_minus8 = r.ue_max(8, "bit_depth_luma_minus8")? as u8;
    let bit_depth_chroma_minus8 = r.ue_max(8, "bit_depth_chroma_minus8")? as u8;
    // The frame rate sits in the VUI, behind a long tail of syntax; it is informational, so a
    // failure to reach it leaves it unknown instead of rejecting the SPS.
    let frame_rate = sps_tail_frame_rate(&mut r, max_sub_layers_minus1)
        .ok()
        .flatten();
    Ok(SpsInfo {
        ptl_bytes,
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width,
        height,
        frame_rate,
    })
}

/// The SPS from log2_max_pic_order_cnt_lsb_minus4 up to vui_parameters()'s timing info.
fn sps_tail_frame_rate(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
) -> Result<Option<f64>, CodecError> {
    let log2_max_poc_lsb = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")? + 4;
    let ordering_all = r.flag()?;
    let first = if ordering_all {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?; // sps_max_dec_pic_buffering_minus1
        r.ue()?; // sps_max_num_reorder_pics
        r.ue()?; // sps_max_latency_increase_plus1
    }
    for _ in 0..6 {
        // log2_min_luma_coding_block_size_minus3 .. max_transform_hierarchy_depth_intra
        r.ue()?;
    }
    if r.flag()? && r.flag()? {
        // scaling_list_enabled_flag && sps_scaling_list_data_present_flag
        skip_scaling_list_data(r)?;
    }
    r.skip(2)?; // amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag()? {
        // pcm_enabled_flag
        r.skip(8)?;
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    let num_st_rps = r.ue_max(64, "num_short_term_ref_pic_sets")?;
    let mut num_delta_pocs = Vec::with_capacity(num_st_rps as usize);
    for idx in 0..num_st_rps as usize {
        let n = st_ref_pic_set(r, idx, &num_delta_pocs)?;
        num_delta_pocs.push(n);
    }
    if r.flag()? {
        // long_term_ref_pics_present_flag
        let n = r.ue_max(32, "num_long_term_ref_pics_sps")?;
        for _ in 0..n {
            r.skip(log2_max_poc_lsb as usize + 1)?;
        }
    }
    r.skip(2)?; // sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if !r.flag()? {
        return Ok(None);
    }
    // E.2.1 vui_parameters()
    if r.flag()? && r.bits(8)? == 255 {
        r.skip(32)?; // Extended_SAR
    }
    if r.flag()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.flag()? {
        r.skip(4)?; // video_format, video_full_range_flag
        if r.flag()? {
            r.skip(24)?;
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    r.skip(3)?; // neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    if r.flag()? {
        // default_display_window_flag
        for _ in 0..4 {
            r.ue()?;
        }
    }
    if !r.flag()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    // For HEVC one tick is one picture (E.3.1 vui_num_units_in_tick semantics).
    Ok(frame_rate(num_units_in_tick, time_scale, 1))
}

/// 7.3.4 scaling_list_data().
fn skip_scaling_list_data(r: &mut BitReader<'_>) -> Result<(), CodecError> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _ in (0..6).step_by(step) {
            if !r.flag()? {
                r.ue()?; // scaling_list_pred_matrix_id_delta
            } else {
                let coef_num = 64.min(1u32 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.se()?; // scaling_list_dc_coef_minus8
                }
                for _ in 0..coef_num {
                    r.se()?;
                }
            }
        }
    }
    Ok(())
}

/// 7.3.7 st_ref_pic_set(stRpsIdx) as it appears in the SPS; returns NumDeltaPocs[stRpsIdx].
fn st_ref_pic_set(
    r: &mut BitReader<'_>,
    idx: usize,
    num_delta_pocs: &[u32],
) -> Result<u32, CodecError> {
    let inter = idx != 0 && r.flag()?;
    if inter {
        // In the SPS, delta_idx_minus1 is absent: the reference is the previous set.
        r.skip(1)?; // delta_rps_sign
        r.ue()?; // abs_delta_rps_minus1
        let ref_count = *num_delta_pocs
            .get(idx - 1)
            .ok_or(CodecError::Invalid("st_ref_pic_set"))?;
        let mut count = 0;
        for _ in 0..=ref_count {
            let used = r.flag()?;
            let use_delta = used || r.flag()?;
            if use_delta {
                count += 1;
            }
        }
        Ok(count)
    } else {
        let neg = r.ue_max(16, "num_negative_pics")?;
        let pos = r.ue_max(16, "num_positive_pics")?;
        for _ in 0..neg + pos {
            r.ue()?; // delta_poc_s*_minus1
            r.skip(1)?; // used_by_curr_pic_s*_flag
        }
        Ok(neg + pos)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parameter sets from a libx265 (ffmpeg 5.1) Annex B stream: testsrc2 320x240, 30 fps.
    pub(crate) const VPS: &[u8] = &[
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x95, 0x90, 0x09,
    ];
    pub(crate) const SPS: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0x24, 0x93, 0x2b, 0xc0, 0x5a,
        0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x10,
    ];
    pub(crate) const PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];

    #[test]
    fn sps_fields() {
        let info = parse_sps(SPS).unwrap();
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.chroma_format_idc, 1);
        assert_eq!(info.max_sub_layers, 1);
        assert_eq!(info.frame_rate, Some(30.0));
    }

    #[test]
    fn from_parameter_sets_round_trips() {
        let cfg = HevcConfig::from_parameter_sets(VPS, SPS, PPS).unwrap();
        assert_eq!(cfg.general_profile_space, 0);
        assert!(!cfg.general_tier_flag);
        assert_eq!(cfg.general_profile_idc, 1);
        assert_eq!(cfg.general_profile_compatibility_flags, 0x6000_0000);
        assert_eq!(cfg.general_constraint_indicator_flags, 0x9000_0000_0000);
        assert_eq!(cfg.general_level_idc, 60);
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!((cfg.vps.len(), cfg.sps.len(), cfg.pps.len()), (1, 1, 1));
        assert_eq!(&cfg.sps[0][..], SPS);
        assert_eq!(&cfg.pps[0][..], PPS);
        assert_eq!((cfg.width, cfg.height), (320, 240));
        assert_eq!(cfg.codec_string(), "hvc1.1.6.L60.90");
        // Parsing the built record again gives the same thing.
        assert_eq!(HevcConfig::parse(&cfg.raw).unwrap(), cfg);
        // Wrong NAL types are refused.
        assert!(HevcConfig::from_parameter_sets(SPS, SPS, PPS).is_err());
        assert!(HevcConfig::from_parameter_sets(VPS, SPS, &[]).is_err());
    }

    #[test]
    fn main10_with_conformance_window() {
        // libx265 Main 10, 1916x1076 (coded 1920x1080 with a conformance window), 25 fps.
        const VPS10: &[u8] = &[
            0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00,
            0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x78, 0x95, 0x98, 0x09,
        ];
        const SPS10: &[u8] = &[
            0x42, 0x01, 0x01, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe7, 0x76, 0xd9, 0x65, 0x66,
            0x92, 0x4c, 0xaf, 0x01, 0x68, 0x08, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03,
            0x00, 0xc8, 0x40,
        ];
        let info = parse_sps(SPS10).unwrap();
        assert_eq!((info.width, info.height), (1916, 1076));
        assert_eq!(
            (info.bit_depth_luma_minus8, info.bit_depth_chroma_minus8),
            (2, 2)
        );
        assert_eq!(info.frame_rate, Some(25.0));
        let cfg = HevcConfig::from_parameter_sets(VPS10, SPS10, PPS).unwrap();
        assert_eq!(cfg.codec_string(), "hvc1.2.4.L120.90");
        // chromaFormat and bit depths land in the record (14496-15 8.3.3.1.2).
        assert_eq!(&cfg.raw[16..19], &[0xfd, 0xfa, 0xfa]);
        assert_eq!(cfg.raw[21], 0x0f); // one temporal layer, nested, 4-byte lengths
    }

    #[test]
    fn codec_string_examples() {
        let mut cfg = HevcConfig::from_parameter_sets(VPS, SPS, PPS).unwrap();
        cfg.general_level_idc = 93;
        cfg.general_constraint_indicator_flags = 0xb000_0000_0000;
        assert_eq!(cfg.codec_string(), "hvc1.1.6.L93.B0");
        // Main 10, high tier, profile space 1, two constraint bytes.
        cfg.general_profile_idc = 2;
        cfg.general_profile_compatibility_flags = 0x2000_0000;
        cfg.general_tier_flag = true;
        cfg.general_profile_space = 1;
        cfg.general_level_idc = 120;
        cfg.general_constraint_indicator_flags = 0xb000_0000_0100;
        assert_eq!(cfg.codec_string(), "hvc1.A2.4.H120.B0.0.0.0.1");
        cfg.general_constraint_indicator_flags = 0;
        assert_eq!(cfg.codec_string(), "hvc1.A2.4.H120");
    }

    #[test]
    fn hostile_records_are_errors() {
        let cfg = HevcConfig::from_parameter_sets(VPS, SPS, PPS).unwrap();
        let raw = cfg.raw.to_vec();
        for cut in 0..raw.len() {
            let _ = HevcConfig::parse(&Bytes::copy_from_slice(&raw[..cut]));
        }
        assert!(HevcConfig::parse(&Bytes::copy_from_slice(&raw[..30])).is_err());
        let mut bad = raw.clone();
        bad[0] = 0;
        assert_eq!(
            HevcConfig::parse(&Bytes::from(bad)),
            Err(CodecError::UnsupportedVersion(0))
        );
        // 255 arrays of 65535 NAL units each, with nothing behind them: a clean error, no allocation spree.
        let mut bomb = raw[..22].to_vec();
        bomb.extend_from_slice(&[0xff, 0xa0, 0xff, 0xff, 0xff, 0xff]);
        assert!(HevcConfig::parse(&Bytes::from(bomb)).is_err());
        for sps in [
            &[0x42, 0x01][..],
            &[0x42, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x42],
        ] {
            assert!(parse_sps(sps).is_err());
        }
        let mut zeros = vec![0x42, 0x01];
        zeros.extend_from_slice(&[0; 40]);
        assert!(parse_sps(&zeros).is_err());
    }
}
