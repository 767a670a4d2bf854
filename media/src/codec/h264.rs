//! H.264 / AVC: the AVCDecoderConfigurationRecord (`avcC`, ISO/IEC 14496-15 5.3.3.1) and the
//! sequence parameter set fields we need for playlists and sample entries (ITU-T H.264 7.3.2.1).

use bytes::Bytes;

use super::{frame_rate, unescape_rbsp, BitReader, ByteReader, CodecError};

/// A parsed `avcC` with the first SPS's picture size and frame rate.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// The record exactly as received; written verbatim into the `avcC` box.
    pub raw: Bytes,
    /// AVCProfileIndication (profile_idc).
    pub profile: u8,
    /// profile_compatibility (the constraint_set flags byte).
    pub compatibility: u8,
    /// AVCLevelIndication (level_idc).
    pub level: u8,
    /// Bytes in each NAL unit length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    /// Sequence parameter set NAL units (zero-copy slices of `raw`).
    pub sps: Vec<Bytes>,
    /// Picture parameter set NAL units (zero-copy slices of `raw`).
    pub pps: Vec<Bytes>,
    /// Display width in luma samples, after cropping.
    pub width: u32,
    /// Display height in luma samples, after cropping.
    pub height: u32,
    /// Frames per second from the SPS VUI timing info, when present.
    pub frame_rate: Option<f64>,
}

impl AvcConfig {
    /// Parse an `avcC` record. The first SPS must parse; extra trailing fields (the
    /// chroma/bit-depth extension of high profiles) are ignored.
    pub fn parse(avcc: &Bytes) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(avcc);
        let version = r.u8("avcC header")?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let profile = r.u8("avcC header")?;
        let compatibility = r.u8("avcC header")?;
        let level = r.u8("avcC header")?;
        let nal_length_size = (r.u8("avcC header")? & 0x03) + 1;
        if nal_length_size == 3 {
            // lengthSizeMinusOne = 2 is not allowed (14496-15 5.3.3.1.2).
            return Err(CodecError::Invalid("avcC lengthSizeMinusOne"));
        }
        let num_sps = r.u8("avcC SPS count")? & 0x1f;
        let mut sps = Vec::with_capacity(usize::from(num_sps));
        for _ in 0..num_sps {
            let len = r.u16("avcC SPS length")?;
            let (s, e) = r.take(usize::from(len), "avcC SPS")?;
            sps.push(avcc.slice(s..e));
        }
        let num_pps = r.u8("avcC PPS count")?;
        let mut pps = Vec::with_capacity(usize::from(num_pps));
        for _ in 0..num_pps {
            let len = r.u16("avcC PPS length")?;
            let (s, e) = r.take(usize::from(len), "avcC PPS")?;
            pps.push(avcc.slice(s..e));
        }
        let first = sps.first().ok_or(CodecError::Missing("SPS"))?;
        let info = parse_sps(first)?;
        Ok(Self {
            raw: avcc.clone(),
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
            width: info.width,
            height: info.height,
            frame_rate: info.frame_rate,
        })
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f` (14496-15 Annex E.2: profile, compatibility
    /// and level as two hex digits each).
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }
}

/// The fields of an H.264 SPS that a packager needs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SpsInfo {
    /// profile_idc.
    pub profile_idc: u8,
    /// constraint_set0..5 flags and reserved bits, as one byte.
    pub constraint_flags: u8,
    /// level_idc.
    pub level_idc: u8,
    /// Cropped width in luma samples.
    pub width: u32,
    /// Cropped height in luma samples.
    pub height: u32,
    /// Frames per second from VUI timing, when present.
    pub frame_rate: Option<f64>,
}

/// Parse an SPS NAL unit (with its one-byte NAL header, emulation prevention bytes included).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, CodecError> {
    let rbsp = unescape_rbsp(nal);
    let mut r = BitReader::new(&rbsp);
    r.skip(3)?; // forbidden_zero_bit, nal_ref_idc
    if r.bits(5)? != 7 {
        return Err(CodecError::Invalid("SPS NAL unit type"));
    }
    let profile_idc = r.bits(8)? as u8;
    let constraint_flags = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    r.ue_max(31, "seq_parameter_set_id")?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        r.ue_max(6, "bit_depth_luma_minus8")?;
        r.ue_max(6, "bit_depth_chroma_minus8")?;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: 7.3.2.1.1.1 scaling_list()
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max(12, "log2_max_frame_num_minus4")?;
    match r.ue_max(2, "pic_order_cnt_type")? {
        0 => {
            r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let n = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4];
    if r.flag()? {
        for c in &mut crop {
            *c = u64::from(r.ue()?);
        }
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    // Table 6-1 and the frame_crop_* semantics in 7.4.2.1.1.
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let full_w = width_mbs * 16;
    let full_h = height_map_units * 16 * field_factor;
    let cut_w = (crop[0] + crop[1]) * crop_x;
    let cut_h = (crop[2] + crop[3]) * crop_y;
    let width = full_w
        .checked_sub(cut_w)
        .filter(|w| *w > 0)
        .and_then(|w| u32::try_from(w).ok())
        .ok_or(CodecError::Invalid("SPS width/cropping"))?;
    let height = full_h
        .checked_sub(cut_h)
        .filter(|h| *h > 0)
        .and_then(|h| u32::try_from(h).ok())
        .ok_or(CodecError::Invalid("SPS height/cropping"))?;
    // A damaged VUI should not make an otherwise usable stream unplayable: the frame rate is
    // only informational, so errors past this point just leave it unknown.
    let frame_rate = if r.flag().unwrap_or(false) {
        vui_frame_rate(&mut r).ok().flatten()
    } else {
        None
    };
    Ok(SpsInfo {
        profile_idc,
        constraint_flags,
        level_idc,
        width,
        height,
        frame_rate,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(CodecError::Invalid("delta_scale"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// E.1.1 vui_parameters() up to timing_info.
fn vui_frame_rate(r: &mut BitReader<'_>) -> Result<Option<f64>, CodecError> {
    if r.flag()? {
        // aspect_ratio_info_present_flag; 255 = Extended_SAR
        if r.bits(8)? == 255 {
            r.skip(32)?;
        }
    }
    if r.flag()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.flag()? {
        r.skip(4)?; // video_format, video_full_range_flag
        if r.flag()? {
            r.skip(24)?; // colour_primaries, transfer_characteristics, matrix_coefficients
        }
    }
    if r.flag()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if !r.flag()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    // One frame is two ticks for H.264 (E.2.1, frame rate = time_scale / (2 * num_units_in_tick)).
    Ok(frame_rate(num_units_in_tick, time_scale, 2))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// avcC written by ffmpeg/libx264 into an FLV sequence header (testsrc2 320x240, 30 fps).
    pub(crate) const AVCC_320X240: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8,
        0x00,
    ];

    #[test]
    fn parses_real_avcc() {
        let cfg = AvcConfig::parse(&Bytes::from_static(AVCC_320X240)).unwrap();
        assert_eq!((cfg.profile, cfg.compatibility, cfg.level), (0x64, 0, 0x0d));
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.sps.len(), 1);
        assert_eq!(cfg.pps.len(), 1);
        assert_eq!(cfg.sps[0].len(), 0x19);
        assert_eq!(cfg.pps[0][..], [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]);
        assert_eq!((cfg.width, cfg.height), (320, 240));
        assert_eq!(cfg.frame_rate, Some(30.0));
        assert_eq!(cfg.codec_string(), "avc1.64000d");
    }

    #[test]
    fn cropping_is_applied() {
        // libx264 baseline 1920x1080 at 25 fps: 120x68 macroblocks, 8 rows cropped at the bottom.
        let sps = [
            0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
            0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc9, 0x20,
        ];
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.profile_idc, info.level_idc), (66, 40));
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!(info.frame_rate, Some(25.0));
        // Cut inside the VUI: the size survives, the frame rate is unknown.
        let info = parse_sps(&sps[..12]).unwrap();
        assert_eq!(
            (info.width, info.height, info.frame_rate),
            (1920, 1080, None)
        );
    }

    #[test]
    fn hostile_records_are_errors() {
        let good = AVCC_320X240;
        for cut in 0..good.len() - 1 {
            // Every truncation either fails cleanly or (after the PPS) still parses.
            let _ = AvcConfig::parse(&Bytes::copy_from_slice(&good[..cut]));
        }
        assert!(AvcConfig::parse(&Bytes::copy_from_slice(&good[..20])).is_err());
        let mut bad = good.to_vec();
        bad[0] = 2;
        assert_eq!(
            AvcConfig::parse(&Bytes::from(bad)),
            Err(CodecError::UnsupportedVersion(2))
        );
        let mut bad = good.to_vec();
        bad[6] = 0xff; // SPS length 0xff19: runs past the end
        assert!(AvcConfig::parse(&Bytes::from(bad)).is_err());
        let no_sps = [1, 0x64, 0, 0x1f, 0xff, 0xe0, 0];
        assert_eq!(
            AvcConfig::parse(&Bytes::copy_from_slice(&no_sps)),
            Err(CodecError::Missing("SPS"))
        );
        // An SPS of all-ones / all-zeros bits must not panic or loop.
        let _ = parse_sps(&[0x67, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(parse_sps(&[0x67, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_sps(&[0x67, 0x64, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
