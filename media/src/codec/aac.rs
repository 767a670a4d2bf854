//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) and its RFC 6381 codec string.

use bytes::Bytes;

use super::{BitReader, CodecError};

/// samplingFrequencyIndex → Hz (14496-3 Table 1.18); 13 and 14 are reserved, 15 is explicit.
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The config exactly as received; written verbatim into the `esds` DecoderSpecificInfo.
    pub raw: Bytes,
    /// audioObjectType (2 = AAC LC, 5 = SBR, 29 = PS, ...), escape 31 resolved.
    pub object_type: u8,
    /// Sampling frequency in Hz of the core decoder.
    pub sample_rate: u32,
    /// channelConfiguration (0 = defined in a program_config_element).
    pub channels: u8,
}

impl AacConfig {
    /// Parse the leading fields of an AudioSpecificConfig; anything after channelConfiguration
    /// (GASpecificConfig, SBR extension signalling) is kept in `raw` but not interpreted.
    pub fn parse(asc: &Bytes) -> Result<Self, CodecError> {
        let mut r = BitReader::new(asc);
        let trunc = |_| CodecError::Truncated("AudioSpecificConfig");
        let mut object_type = r.bits(5).map_err(trunc)?;
        if object_type == 31 {
            object_type = 32 + r.bits(6).map_err(trunc)?;
        }
        if object_type == 0 {
            return Err(CodecError::Invalid("audioObjectType 0"));
        }
        let index = r.bits(4).map_err(trunc)?;
        let sample_rate = if index == 15 {
            r.bits(24).map_err(trunc)?
        } else {
            *SAMPLE_RATES
                .get(index as usize)
                .ok_or(CodecError::Invalid("samplingFrequencyIndex"))?
        };
        if sample_rate == 0 {
            return Err(CodecError::Invalid("sampling frequency 0"));
        }
        let channels = r.bits(4).map_err(trunc)? as u8;
        Ok(Self {
            raw: asc.clone(),
            object_type: object_type as u8,
            sample_rate,
            channels,
        })
    }

    /// RFC 6381 codec string: `mp4a.40.<audioObjectType>` (0x40 = MPEG-4 Audio).
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_asc_from_ffmpeg() {
        // ffmpeg's aac encoder, 44.1 kHz mono (lavfi sine), from an FLV AAC sequence header.
        let cfg = AacConfig::parse(&Bytes::from_static(&[0x12, 0x08, 0x56, 0xe5, 0x00])).unwrap();
        assert_eq!(
            (cfg.object_type, cfg.sample_rate, cfg.channels),
            (2, 44100, 1)
        );
        assert_eq!(cfg.codec_string(), "mp4a.40.2");
        // 48 kHz stereo LC.
        let cfg = AacConfig::parse(&Bytes::from_static(&[0x11, 0x90])).unwrap();
        assert_eq!(
            (cfg.object_type, cfg.sample_rate, cfg.channels),
            (2, 48000, 2)
        );
    }

    #[test]
    fn escapes() {
        // audioObjectType 31 + 6 bits (42 = 32 + 10), explicit 24-bit rate 12345, 2 channels:
        // 11111 001010 1111 000000000011000000111001 0010
        let bits = [
            "11111",
            "001010",
            "1111",
            "000000000011000000111001",
            "0010",
        ]
        .concat();
        let mut b = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                b[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let cfg = AacConfig::parse(&Bytes::from(b)).unwrap();
        assert_eq!(
            (cfg.object_type, cfg.sample_rate, cfg.channels),
            (42, 12345, 2)
        );
        assert_eq!(cfg.codec_string(), "mp4a.40.42");
    }

    #[test]
    fn bad_configs() {
        for bad in [
            &[][..],
            &[0x12],
            &[0xf8],
            &[0x00, 0x00],
            &[0x16, 0x80],
            &[0x17, 0x80, 0, 0, 0],
        ] {
            assert!(
                AacConfig::parse(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
