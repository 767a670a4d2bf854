#![no_main]
//! AMF0: decoding arbitrary bytes never panics, and whatever decodes re-encodes
//! to bytes that decode to the same encoding (compared as bytes, so NaN is fine).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use ferrocast_media::amf0::{decode, decode_all, encode_all};
    if let Ok((_, used)) = decode(data) {
        assert!(used <= data.len());
    }
    if let Ok(values) = decode_all(data) {
        let bytes = encode_all(&values);
        let again = decode_all(&bytes).expect("re-encoded AMF0 decodes");
        assert_eq!(encode_all(&again), bytes);
    }
});
