#![no_main]
//! AudioSpecificConfig parsing: never panic; a parsed config builds an esds.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = ferrocast_media::codec::AacConfig::parse(&data.to_vec().into()) {
        let _ = cfg.codec_string();
        let _ = ferrocast_media::cmaf::init_segment(&[ferrocast_media::cmaf::Track {
            id: 2,
            timescale: cfg.sample_rate,
            config: ferrocast_media::cmaf::TrackConfig::Aac(cfg),
        }]);
    }
});
