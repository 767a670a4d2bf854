#![no_main]
//! RTMP chunk decoder: arbitrary bytes, split at an input-chosen size, never
//! panic or exceed the limits; every decoded message survives a round trip
//! through the encoder.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use ferrocast_media::rtmp::{msg_type, ChunkDecoder, ChunkEncoder, Limits};
    let limits = Limits {
        max_message_size: 1 << 20,
        max_pending_bytes: 1 << 20,
        ..Limits::default()
    };
    // The first byte picks how the rest is cut, so partial-input paths run too.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = ChunkDecoder::new(limits.clone());
    let mut messages = Vec::new();
    'feed: for piece in rest.chunks(usize::from(split) + 1) {
        if decoder.push(piece).is_err() {
            break;
        }
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    assert!(msg.payload.len() <= limits.max_message_size as usize);
                    messages.push(msg);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    // Set Chunk Size and Abort change the decoder itself; leave them out.
    messages.retain(|m| m.type_id != msg_type::SET_CHUNK_SIZE && m.type_id != msg_type::ABORT);
    let mut encoder = ChunkEncoder::new();
    let mut wire = bytes::BytesMut::new();
    for msg in &messages {
        encoder.write(msg.csid, msg, &mut wire);
    }
    let mut again = ChunkDecoder::new(limits);
    again.push(&wire).expect("push");
    for msg in &messages {
        assert_eq!(again.next_message().expect("re-encoded chunks decode").as_ref(), Some(msg));
    }
    assert_eq!(again.next_message(), Ok(None));
});
