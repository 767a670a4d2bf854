#![no_main]
//! RTMP server session: after a valid (simple) handshake, arbitrary bytes never
//! panic. Publishes are accepted as they come so media paths run too.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use ferrocast_media::rtmp::{Limits, ServerEvent, ServerSession};
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_message_size: 1 << 20,
        max_pending_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut session = ServerSession::new(limits, &[0x5A; 1528], 0);
    // C0 (version 3), C1 and C2 of zeros: a client without a digest.
    let mut handshake = vec![3u8];
    handshake.resize(1 + 2 * 1536, 0);
    session.feed(&handshake).expect("valid handshake");
    assert!(session.handshake_done());
    for piece in rest.chunks(usize::from(split) + 1) {
        let result = session.feed(piece);
        while let Some(event) = session.poll_event() {
            if let ServerEvent::Publish { stream_id, .. } = event {
                session.accept_publish(stream_id);
            }
        }
        while session.take_output().is_some() {}
        if result.is_err() {
            break;
        }
    }
});
