#![no_main]
//! RTMP audio/video payloads (FLV tag bodies) and whole FLV files: never panic, and every
//! parsed payload is a slice of the input.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Built with `.into()` so the target needs no direct dependency on `bytes`.
    let body = data.to_vec().into();
    if let Ok(ferrocast_media::flv::VideoTag::Frame { data: frame, .. }) =
        ferrocast_media::flv::parse_video(&body)
    {
        assert!(frame.len() <= body.len());
    }
    let _ = ferrocast_media::flv::parse_audio(&body);
    let _ = ferrocast_media::flv::read_file(&body);
});
