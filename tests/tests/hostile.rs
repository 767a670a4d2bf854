//! Hostile RTMP clients: malformed handshakes, chunk headers, sizes, AMF, codec
//! configurations, never-ending messages and slow trickles. The origin closes each
//! connection, stays up with bounded memory, and a real publish works afterwards.

use bytes::Bytes;
use ferrocast_media::flv::{self, VideoCodec};
use ferrocast_tests::rtmp_client::Publisher;
use ferrocast_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Waits until the server closes `s` (EOF or reset); false if still open at the deadline.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A completed simple handshake, ready for chunks.
fn handshake(node: &Node) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&node.rtmp, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 8));
    c0c1.extend((0..1528u32).map(|i| (i * 7) as u8));
    s.write_all(&c0c1).expect("c0c1");
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.read_exact(&mut s0s1s2).expect("s0s1s2");
    assert_eq!(s0s1s2[0], 3);
    s.write_all(&s0s1s2[1..1537]).expect("c2");
    s
}

/// A chunk with a type-0 header.
fn chunk0(csid: u8, type_id: u8, declared_len: u32, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![csid & 0x3f];
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&declared_len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&stream_id.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn amf_string(s: &str) -> Vec<u8> {
    let mut v = vec![2u8];
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn hostile_clients_are_closed_and_the_origin_keeps_working() {
    let node = Node::origin(&[
        "--handshake-timeout",
        "2",
        "--idle-timeout",
        "3",
        "--reconnect-grace",
        "1",
    ]);
    let dir = TempDir::new("hostile");
    // A healthy stream runs throughout; it must not notice anything.
    let _good = ffmpeg_publish_live(&node.rtmp_url("good"), 60, &dir.0, "good");
    node.wait_live("good", Duration::from_secs(20));
    let baseline = rss_kib(node.proc.pid());
    let t = Duration::from_secs(8);

    for round in 0..3 {
        // Wrong version byte.
        let mut s = TcpStream::connect(node.rtmp).expect("connect");
        s.write_all(&[0x10; 1537]).expect("write");
        assert!(closed_within(&mut s, t), "bad version not closed");

        // A trickle that never finishes the handshake.
        let mut s = TcpStream::connect(node.rtmp).expect("connect");
        let start = Instant::now();
        let mut closed = false;
        for _ in 0..40 {
            if s.write_all(&[3]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if start.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        assert!(
            closed || closed_within(&mut s, t),
            "trickling handshake not closed"
        );

        // A handshake, then part of a message trickled a byte at a time for longer than
        // the handshake deadline: traffic that never makes a publish does not keep the
        // connection open (the idle timeout alone would, as every read resets it).
        let mut s = handshake(&node);
        let start = Instant::now();
        let partial = chunk0(3, 20, 200, 0, &[0u8; 16]);
        let mut closed = s.write_all(&partial).is_err();
        while !closed && start.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(200));
            closed =
                s.write_all(&[0]).is_err() || closed_within(&mut s, Duration::from_millis(150));
        }
        assert!(
            closed && start.elapsed() < Duration::from_secs(6),
            "a trickled partial message kept the connection open for {:?}",
            start.elapsed()
        );

        // Continuation header on a chunk stream never opened.
        let mut s = handshake(&node);
        s.write_all(&[0x45, 0, 0, 1, 0, 0, 4, 20]).expect("write");
        assert!(
            closed_within(&mut s, t),
            "type-1 header on unknown chunk stream not closed"
        );

        // Set Chunk Size to an absurd value.
        let mut s = handshake(&node);
        s.write_all(&chunk0(2, 1, 4, 0, &0x7fff_ffffu32.to_be_bytes()))
            .expect("write");
        assert!(closed_within(&mut s, t), "huge chunk size not closed");

        // A message declaring 16 MiB.
        let mut s = handshake(&node);
        s.write_all(&chunk0(3, 20, 0xff_ffff, 0, &[0u8; 128]))
            .expect("write");
        assert!(closed_within(&mut s, t), "oversized message not closed");

        // Never-ending messages across many chunk streams.
        let mut s = handshake(&node);
        let mut open = true;
        for csid in 3..63u8 {
            if s.write_all(&chunk0(csid, 9, 4_000_000, 1, &[0u8; 128]))
                .is_err()
            {
                open = false;
                break;
            }
        }
        // Then keep feeding one of them slowly so the idle timeout alone would not fire.
        for _ in 0..20 {
            if !open
                || s.write_all(&[0xC3])
                    .and_then(|_| s.write_all(&[0u8; 128]))
                    .is_err()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !open || closed_within(&mut s, t),
            "never-ending messages not closed"
        );

        // connect with garbage AMF.
        let mut s = handshake(&node);
        let mut body = amf_string("connect");
        body.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x0e, 0xff, 0xff]);
        s.write_all(&chunk0(3, 20, body.len() as u32, 0, &body))
            .expect("write");
        assert!(closed_within(&mut s, t), "garbage AMF not closed");

        // connect with objects nested 1000 deep.
        let mut s = handshake(&node);
        let mut body = amf_string("connect");
        body.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..1000 {
            body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        let mut msg = chunk0(3, 20, body.len() as u32, 0, &body[..128]);
        for c in body[128..].chunks(128) {
            msg.push(0xC3);
            msg.extend_from_slice(c);
        }
        let _ = s.write_all(&msg);
        assert!(closed_within(&mut s, t), "deep AMF not closed");

        // A publisher whose avcC is garbage.
        let mut p = Publisher::connect(node.rtmp, &format!("bad{round}"), Duration::from_secs(10))
            .expect("publish");
        let _ = p.video(
            0,
            flv::video_sequence_header(VideoCodec::Avc, &[1, 2, 3, 0xff, 0xff, 0xff]),
        );
        let _ = p.video(0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 5, 0x65]));
        let deadline = Instant::now() + t;
        let mut closed = false;
        while Instant::now() < deadline {
            if p.pump().is_err() {
                closed = true;
                break;
            }
        }
        assert!(closed, "bad avcC not closed");

        // Silence after the handshake: idle timeout.
        let mut s = handshake(&node);
        assert!(closed_within(&mut s, t), "idle connection not closed");
    }

    assert_eq!(node.get("/healthz").status, 200);
    assert!(
        node.metric("ferrocast_ingest_rejected_total") >= 20.0,
        "rejections counted"
    );
    // The healthy stream kept going through all of it.
    let playlist = node.get("/live/good/index.m3u8");
    assert_eq!(playlist.status, 200);
    // Memory back to about where it was (allocator slack allowed, not 16 MiB per attack).
    let after = rss_kib(node.proc.pid());
    assert!(
        after < baseline + 24 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    // And a real publish works afterwards.
    let _fresh = ffmpeg_publish_live(&node.rtmp_url("after"), 10, &dir.0, "after");
    node.wait_live("after", Duration::from_secs(20));
    let log = node.log();
    assert!(
        log.contains("rtmp connection closed on error"),
        "reasons are logged"
    );
    assert!(!log.contains("panicked"), "no panic:\n{log}");
}
