#![no_main]
//! AVCDecoderConfigurationRecord + SPS parsing: never panic; a parsed record re-muxes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferrocast_media::codec::h264::parse_sps(data);
    if let Ok(cfg) = ferrocast_media::codec::AvcConfig::parse(&data.to_vec().into()) {
        let _ = cfg.codec_string();
        let _ = ferrocast_media::cmaf::init_segment(&[ferrocast_media::cmaf::Track {
            id: 1,
            timescale: 90_000,
            config: ferrocast_media::cmaf::TrackConfig::Avc(cfg),
        }]);
    }
});
