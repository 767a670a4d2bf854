#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ferrocast_media::hls::parse_query(s);
        let _ = ferrocast_media::hls::names::parse(s);
    }
});
