//! End-to-end tests of single-track streams (audio-only AAC, video-only H.264) published
//! by ffmpeg and read back by ffmpeg through the playlist, and of the per-IP RTMP
//! connection limit.

use ferrocast_media::flv::{self, VideoCodec};
use ferrocast_media::hls::lint::lint;
use ferrocast_tests::rtmp_client::Publisher;
use ferrocast_tests::*;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Makes a `seconds`-long FLV clip with ffmpeg from lavfi `inputs` and codec `args`.
fn make_clip(path: &Path, inputs: &[&str], args: &[&str]) {
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(inputs)
            .args(args)
            .args(["-f", "flv"])
            .arg(path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ffmpeg clip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CODECS attribute of the (single) variant of the multivariant playlist.
fn codecs(master: &str) -> String {
    master
        .split("CODECS=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CODECS in {master}"))
        .to_owned()
}

/// Publishes `clip` with ffmpeg (stream copy), waits for the playlist to end, and checks
/// that ffmpeg reads back every packet of `map` byte-identical, with the same timing,
/// from the playlist, and decodes it without errors. Returns the multivariant playlist.
fn round_trip(clip: &Path, key: &str, map: &str) -> String {
    let dir = TempDir::new(key);
    let node = Node::origin(&["--reconnect-grace", "1"]);
    let mut ffmpeg = ffmpeg_publish_file(clip, &node.rtmp_url(key), &dir.0, "publisher");
    let status = ffmpeg
        .wait_timeout(Duration::from_secs(40))
        .expect("publisher finishes");
    assert!(status.success(), "publisher failed; log:\n{}", node.log());
    let playlist = node.wait_ended(key, Duration::from_secs(15));
    assert!(
        lint(&playlist).is_empty(),
        "lint: {:?}\n{playlist}",
        lint(&playlist)
    );
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");

    let url = node.playlist_url(key);
    let n = assert_same_packets(
        key,
        clip.to_str().expect("utf-8 path"),
        &url,
        &["-c", "copy"],
    );
    assert!(n > 50, "{key}: source has packets");
    assert_decodes_cleanly(key, &url, &["-map", map]);
    let master = node.get(&format!("/live/{key}/master.m3u8"));
    assert_eq!(master.status, 200);
    master.text()
}

/// ffmpeg publishes AAC alone; it comes back packet-exact, and the multivariant
/// playlist names only the audio codec.
#[test]
fn audio_only_round_trip_is_packet_exact() {
    let dir = TempDir::new("audio-only");
    let clip = dir.join("clip.flv");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=6",
        ],
        &["-vn", "-c:a", "aac", "-b:a", "96k"],
    );
    let master = round_trip(&clip, "aonly", "0:a");
    assert_eq!(codecs(&master), "mp4a.40.2", "{master}");
    assert!(!master.contains("RESOLUTION="), "{master}");
    assert!(!master.contains("FRAME-RATE="), "{master}");
}

/// ffmpeg publishes H.264 (with B-frames) alone; it comes back packet-exact, and the
/// multivariant playlist names only the video codec.
#[test]
fn video_only_round_trip_is_packet_exact() {
    let dir = TempDir::new("video-only");
    let clip = dir.join("clip.flv");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=6",
        ],
        &[
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "2",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
        ],
    );
    let master = round_trip(&clip, "vonly", "0:v");
    let c = codecs(&master);
    assert!(c.starts_with("avc1.") && !c.contains(','), "{master}");
    assert!(!master.contains("mp4a"), "{master}");
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
}

/// avcC of an ffmpeg-made 160x120 H.264 stream (High profile), so the packager
/// accepts what the connection-limit publishers send.
const AVCC: [u8; 46] = [
    0x01, 0x64, 0x00, 0x0b, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0b, 0xac, 0xd9, 0x42, 0x84,
    0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0x65,
    0x80, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// Sends a configuration and `frames` frames at 30 fps (a keyframe each second) from
/// timestamp `from_ms`.
fn send_video(p: &mut Publisher, from: u32, frames: u32) -> std::io::Result<()> {
    if from == 0 {
        p.video(0, flv::video_sequence_header(VideoCodec::Avc, &AVCC))?;
    }
    for i in from..from + frames {
        let key = i % 30 == 0;
        let body = flv::video_frame(VideoCodec::Avc, key, 0, &[0, 0, 0, 2, 0x65, i as u8]);
        p.video(i * 1000 / 30, body)?;
    }
    Ok(())
}

/// Whether the server closes `sock` (EOF or reset) within `timeout`.
fn closed_within(sock: &mut TcpStream, timeout: Duration) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

fn rejected_from_ip(node: &Node) -> f64 {
    let text = node.admin_get("/metrics").text();
    text.lines()
        .filter(|l| {
            l.starts_with("ferrocast_ingest_rejected_total{")
                && l.contains("reason=\"too_many_connections_from_ip\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With `--max-connections-per-ip 2`, a third RTMP connection from 127.0.0.1 is closed
/// at once and counted; the first two go on publishing; a freed slot is usable again.
#[test]
fn connections_per_ip_are_limited() {
    let node = Node::origin(&["--max-connections-per-ip", "2"]);
    let timeout = Duration::from_secs(10);
    let mut first = Publisher::connect(node.rtmp, "one", timeout).expect("first connection");
    let mut second = Publisher::connect(node.rtmp, "two", timeout).expect("second connection");
    assert_eq!(node.metric("ferrocast_ingest_rejected_total"), 0.0);

    let mut third = TcpStream::connect_timeout(&node.rtmp, timeout).expect("tcp connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(2)),
        "the third connection from one IP is closed at once"
    );
    // An RTMP client gets no further either.
    assert!(Publisher::connect(node.rtmp, "three", timeout).is_err());
    assert!(
        rejected_from_ip(&node) >= 2.0,
        "{}",
        node.admin_get("/metrics").text()
    );
    assert_eq!(
        node.metric("ferrocast_ingest_rejected_total"),
        rejected_from_ip(&node),
        "nothing else was refused"
    );

    // The first two are still open: they publish and their streams go live.
    send_video(&mut first, 0, 45).expect("first publishes");
    send_video(&mut second, 0, 45).expect("second publishes");
    for key in ["one", "two"] {
        let playlist = node.wait_live(key, Duration::from_secs(10));
        assert!(lint(&playlist).is_empty(), "{:?}", lint(&playlist));
    }
    send_video(&mut first, 45, 30).expect("first still open");
    send_video(&mut second, 45, 30).expect("second still open");
    for p in [&mut first, &mut second] {
        p.pump().expect("the server has not closed it");
    }
    assert_eq!(
        node.get("/api/streams").status,
        200,
        "the origin still serves"
    );

    // Closing one frees its slot (the server notices the close asynchronously).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        match Publisher::connect(node.rtmp, "again", timeout) {
            Ok(p) => break p,
            Err(e) => assert!(Instant::now() < deadline, "slot never freed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(again);
    drop(second);
}
