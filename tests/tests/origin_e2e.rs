//! End-to-end tests of the origin as a separate process, with ffmpeg as publisher and
//! player, our own Enhanced-RTMP publisher for H.265, and the HLS spec linter.

use ferrocast_media::hls::lint::lint;
use ferrocast_tests::rtmp_client::{publish_hevc_annexb, Publisher};
use ferrocast_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// ffmpeg publishes H.264 (with B-frames) + AAC; ffmpeg reads it back from the playlist:
/// every packet is byte-identical to what was sent, in order, with the same timing.
#[test]
fn h264_aac_round_trip_is_packet_exact() {
    let dir = TempDir::new("roundtrip");
    let clip = dir.join("clip.flv");
    make_h264_clip(&clip, 6, 60);
    let node = Node::origin(&["--reconnect-grace", "1"]);
    let mut ffmpeg = ffmpeg_publish_file(&clip, &node.rtmp_url("rt"), &dir.0, "publisher");
    let status = ffmpeg
        .wait_timeout(Duration::from_secs(40))
        .expect("publisher finishes");
    assert!(status.success(), "publisher failed");
    let playlist = node.wait_ended("rt", Duration::from_secs(15));
    assert!(
        lint(&playlist).is_empty(),
        "lint: {:?}\n{playlist}",
        lint(&playlist)
    );

    let url = node.playlist_url("rt");
    let source = clip.to_str().expect("utf-8 path");
    for (map, what) in [("0:v", "video"), ("0:a", "audio")] {
        assert_same_packets(what, source, &url, &["-map", map, "-c", "copy"]);
    }
    // And it decodes without a single error.
    assert_decodes_cleanly("round trip", &url, &[]);
}

/// H.265 over Enhanced RTMP (our own publisher; Debian's ffmpeg cannot send it), read
/// back by ffprobe as HEVC with the right size and every frame.
#[test]
fn hevc_over_enhanced_rtmp_plays() {
    let dir = TempDir::new("hevc");
    let es = dir.join("clip.hevc");
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=30:duration=4",
            ])
            .args([
                "-c:v",
                "libx265",
                "-pix_fmt",
                "yuv420p",
                "-x265-params",
                "keyint=30:min-keyint=30:bframes=0:aud=1:log-level=error",
            ])
            .args(["-f", "hevc"])
            .arg(&es),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "x265: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let annexb = std::fs::read(&es).expect("read hevc");
    let node = Node::origin(&["--reconnect-grace", "1"]);
    let mut p =
        Publisher::connect(node.rtmp, "hevc", Duration::from_secs(10)).expect("publish accepted");
    let frames = publish_hevc_annexb(&mut p, &annexb, 30, false).expect("publish frames");
    assert_eq!(frames, 120);
    drop(p);
    let playlist = node.wait_ended("hevc", Duration::from_secs(15));
    assert!(lint(&playlist).is_empty(), "lint: {:?}", lint(&playlist));
    let master = node.get("/live/hevc/master.m3u8").text();
    assert!(
        master.contains("CODECS=\"hvc1."),
        "multivariant names HEVC: {master}"
    );
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
            &node.playlist_url("hevc"),
        ]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert_eq!(
        first.trim(),
        "hevc,320,240,120",
        "stream as ffprobe sees it: {stdout}"
    );
}

fn hint(playlist: &str) -> (u64, u32) {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .expect("preload hint");
    let uri = line
        .split("URI=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("hint uri");
    let (m, p) = uri
        .trim_start_matches("part-")
        .trim_end_matches(".m4s")
        .split_once('.')
        .expect("part name");
    (m.parse().expect("msn"), p.parse().expect("part"))
}

fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .expect("media sequence")
}

/// Follows a live stream for more than 20 s the way an LL-HLS player does and checks
/// every playlist against the spec, every blocking request and every hinted part.
#[test]
fn ll_hls_live_follows_the_spec() {
    let dir = TempDir::new("llhls");
    let node = Node::origin(&[]);
    let _ffmpeg = ffmpeg_publish_live(&node.rtmp_url("ll"), 90, &dir.0, "publisher");
    let first = node.wait_live("ll", Duration::from_secs(20));
    assert!(lint(&first).is_empty(), "{:?}", lint(&first));

    let r = node.get("/live/ll/index.m3u8");
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("cache-control")
        .is_some_and(|c| c.contains("no-cache")));
    // The origin answers `/play/` like an edge (one serving path): without a controller
    // it sends the viewer to its own playlist, with the query (a token) kept.
    let r = node.get("/play/ll?token=t");
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("location"), Some("/live/ll/index.m3u8?token=t"));

    let start = Instant::now();
    let (mut last_msn, mut last_seq) = (0u64, 0u64);
    let mut held = 0;
    let mut requests = 0;
    let mut playlist = first;
    // At least 22 s, and on until the window slid: a loaded machine encodes the live
    // source slower than real time (bounded at 60 s).
    while start.elapsed() < Duration::from_secs(22)
        || (last_seq == 0 && start.elapsed() < Duration::from_secs(60))
    {
        let (m, p) = hint(&playlist);
        assert!(m >= last_msn, "hinted msn went backwards");
        last_msn = m;
        // Ask for the hinted part before it exists, and for the playlist that has it.
        let http = node.http;
        let part_fetch = std::thread::spawn(move || {
            http_get(
                http,
                &format!("/live/ll/part-{m}.{p}.m4s"),
                Duration::from_secs(10),
            )
        });
        let r = node.get(&format!("/live/ll/index.m3u8?_HLS_msn={m}&_HLS_part={p}"));
        assert_eq!(r.status, 200, "blocking reload: {}", r.text());
        requests += 1;
        if r.elapsed > Duration::from_millis(30) {
            held += 1;
        }
        assert!(
            r.elapsed < Duration::from_secs(3),
            "blocking reload took {:?}",
            r.elapsed
        );
        playlist = r.text();
        let problems = lint(&playlist);
        assert!(problems.is_empty(), "lint: {problems:?}\n{playlist}");
        let has_part =
            playlist.contains(&format!("URI=\"part-{m}.{p}.m4s\"")) || hint(&playlist).0 > m;
        assert!(
            has_part,
            "blocking reload returned before part {m}.{p} existed:\n{playlist}"
        );
        let seq = media_sequence(&playlist);
        assert!(seq >= last_seq, "media sequence went backwards");
        last_seq = seq;
        let part = part_fetch.join().expect("part thread").expect("part fetch");
        assert_eq!(part.status, 200, "hinted part");
        assert_eq!(&part.body[4..8], b"moof", "a part is a CMAF chunk");
        assert_eq!(part.header("content-type"), Some("video/mp4"));
        assert!(part
            .header("cache-control")
            .is_some_and(|c| c.contains("immutable")));
    }
    assert!(requests > 40, "followed {requests} parts in 22 s");
    assert!(
        held * 2 > requests,
        "most blocking requests were held until the part existed ({held}/{requests})"
    );
    assert!(last_seq > 0, "the window slid");

    // Delta update once the window is longer than CAN-SKIP-UNTIL.
    let delta = node.get("/live/ll/index.m3u8?_HLS_skip=YES").text();
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{delta}");
    assert!(lint(&delta).is_empty(), "{:?}", lint(&delta));
    // Requests beyond the spec's bound, and malformed ones, are 400.
    let (m, _) = hint(&playlist);
    assert_eq!(
        node.get(&format!("/live/ll/index.m3u8?_HLS_msn={}", m + 3))
            .status,
        400
    );
    assert_eq!(node.get("/live/ll/index.m3u8?_HLS_part=1").status, 400);
    assert_eq!(node.get("/live/ll/index.m3u8?_HLS_msn=x").status, 400);
    assert_eq!(node.get("/live/nope/index.m3u8").status, 404);
    assert_eq!(node.get("/live/ll/seg-999999.m4s").status, 404);

    // HTTP/2 (h2c with prior knowledge) serves the same playlist.
    let out = run_with_timeout(
        Command::new("curl").args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &node.playlist_url("ll"),
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}

/// A part that will not come within ~3 target durations gets 503, not a hang.
#[test]
fn blocking_request_times_out_with_503_when_the_stream_stalls() {
    let dir = TempDir::new("stall");
    let clip = dir.join("clip.flv");
    make_h264_clip(&clip, 3, 30);
    let node = Node::origin(&["--reconnect-grace", "60"]);
    let mut ffmpeg = ffmpeg_publish_file(&clip, &node.rtmp_url("st"), &dir.0, "publisher");
    assert!(ffmpeg
        .wait_timeout(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let playlist = node.wait_live("st", Duration::from_secs(10));
    let (m, _) = hint(&playlist);
    let r = node.get(&format!(
        "/live/st/index.m3u8?_HLS_msn={}&_HLS_part=0",
        m + 1
    ));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.elapsed >= Duration::from_secs(4) && r.elapsed < Duration::from_secs(10),
        "held {:?}",
        r.elapsed
    );
}

/// A publisher that drops and comes back within the grace period continues the same
/// stream: numbering goes on, one discontinuity, timestamps never go back; after the
/// grace period the playlist ends.
#[test]
fn publisher_reconnect_continues_with_one_discontinuity() {
    let dir = TempDir::new("reconnect");
    let clip = dir.join("clip.flv");
    make_h264_clip(&clip, 4, 30);
    let node = Node::origin(&["--reconnect-grace", "3"]);
    for i in 0..2 {
        let mut ffmpeg = ffmpeg_publish_file(
            &clip,
            &node.rtmp_url("rc"),
            &dir.0,
            &format!("publisher{i}"),
        );
        let status = ffmpeg
            .wait_timeout(Duration::from_secs(30))
            .expect("publisher finishes");
        assert!(status.success(), "publisher {i} failed");
    }
    let playlist = node.wait_ended("rc", Duration::from_secs(15));
    assert!(
        lint(&playlist).is_empty(),
        "{:?}\n{playlist}",
        lint(&playlist)
    );
    assert_eq!(media_sequence(&playlist), 0);
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{playlist}"
    );
    assert_eq!(
        playlist.matches("#EXT-X-MAP:").count(),
        2,
        "a new init after the reconnect"
    );
    let (text, err) = framemd5_raw(&node.playlist_url("rc"), &["-map", "0:v", "-c", "copy"]);
    assert!(err.trim().is_empty(), "{err}");
    let packets = parse_framemd5(&text);
    assert_eq!(packets.len(), 240, "both sessions' frames");
    assert!(
        packets.windows(2).all(|w| w[1].dts > w[0].dts),
        "timestamps increase across the reconnect"
    );
}

/// A second publisher on a live key gets NetStream.Publish.BadName; the first goes on.
#[test]
fn second_publisher_is_refused_first_unaffected() {
    let dir = TempDir::new("dup");
    let node = Node::origin(&[]);
    let _first = ffmpeg_publish_live(&node.rtmp_url("dup"), 30, &dir.0, "first");
    let before = node.wait_live("dup", Duration::from_secs(20));
    let err = Publisher::connect(node.rtmp, "dup", Duration::from_secs(10))
        .expect_err("second publisher refused");
    assert_eq!(err, "NetStream.Publish.BadName");
    let mut second = ffmpeg_publish_live(&node.rtmp_url("dup"), 5, &dir.0, "second");
    let status = second
        .wait_timeout(Duration::from_secs(20))
        .expect("second ffmpeg gives up");
    assert!(!status.success(), "ffmpeg's second publish must fail");
    // The first stream still advances.
    let (m0, _) = hint(&before);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (m, _) = hint(&node.get("/live/dup/index.m3u8").text());
        if m > m0 + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "first stream stopped advancing");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = node.log();
    assert!(
        log.contains("already being published"),
        "refusal logged with its reason"
    );
    assert!(
        !log.contains('\x1b'),
        "text logs written to a file carry no colour codes"
    );
}
