#![no_main]
//! HEVCDecoderConfigurationRecord + SPS parsing and building an hvcC from parameter sets:
//! never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = ferrocast_media::codec::HevcConfig::parse(&data.to_vec().into()) {
        let _ = cfg.codec_string();
    }
    let _ = ferrocast_media::codec::h265::parse_sps(data);
    // The same bytes as an SPS between a fixed VPS and PPS header.
    let mut sps = vec![0x42, 0x01];
    sps.extend_from_slice(data);
    let _ =
        ferrocast_media::codec::HevcConfig::from_parameter_sets(&[0x40, 0x01], &sps, &[0x44, 0x01]);
});
