//! The media clock against real bytes: MPEG-TS and fMP4 HLS segments written by ffmpeg
//! (what nginx-rtmp and xiu serve is MPEG-TS, what Ferrocast serves is fMP4), with
//! ffprobe as the oracle for the first video timestamp of each segment.

use ferrocast_bench::mediaclock::{
    fmp4_first_decode_time, init_tracks, ts_first_video_ticks, MediaClock,
};
use ferrocast_tests::{run_with_timeout, TempDir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// ffmpeg writes a 3 s, 30 fps H.264 + AAC HLS stream into `dir` (1 s segments) with
/// timestamps starting at `offset_s` (MPEG-TS only: fMP4 keeps `tfdt` from 0).
fn ffmpeg_hls(dir: &Path, fmp4: bool, offset_s: &str) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=30:duration=3",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=3",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-output_ts_offset", offset_s])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "0"]);
    if fmp4 {
        cmd.args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ]);
    }
    cmd.arg(dir.join("index.m3u8"));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The segments ffmpeg listed, in order.
fn segments(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("index.m3u8"))
        .expect("playlist")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// ffprobe's first video packet of a file: (dts in the stream time base, time base).
fn ffprobe_first_video_dts(file: &Path) -> (i64, (i64, i64)) {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "packet=dts:stream=time_base"])
            .args(["-read_intervals", "%+#1", "-of", "default=nw=1"])
            .arg(file),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ffprobe {}: {text}", file.display());
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    let dts = field("dts=").parse().expect("dts");
    let tb = field("time_base=");
    let (num, den) = tb.split_once('/').expect("time base");
    (dts, (num.parse().unwrap(), den.parse().unwrap()))
}

#[test]
fn ts_segments_from_ffmpeg() {
    let dir = TempDir::new("clock-ts");
    ffmpeg_hls(&dir.0, false, "10");
    let segs = segments(&dir.0);
    assert!(segs.len() >= 3, "{segs:?}");
    let mut starts = Vec::new();
    for s in &segs {
        let path = dir.join(s);
        let bytes = std::fs::read(&path).unwrap();
        let (dts, tb) = ffprobe_first_video_dts(&path);
        assert_eq!(tb, (1, 90_000));
        assert_eq!(ts_first_video_ticks(&bytes), Some(dts as u64), "{s}");
        starts.push(dts);
    }
    // Dated from the first segment's timestamp: each segment starts a second later.
    let first_ms = starts[0] / 90;
    let clock = MediaClock::new(1_000_000, first_ms);
    for (i, s) in segs.iter().enumerate().take(3) {
        let bytes = std::fs::read(dir.join(s)).unwrap();
        let at = clock.start_ms(&bytes).unwrap();
        assert!((at - (1_000_000 + 1000 * i as i64)).abs() <= 1, "{s}: {at}");
    }
}

#[test]
fn ts_segments_across_the_33_bit_wrap() {
    // 2^33 / 90 kHz = 95443.717 s: the stream starts 1.5 s before the wrap, so its
    // later segments carry small timestamps again.
    let dir = TempDir::new("clock-ts-wrap");
    ffmpeg_hls(&dir.0, false, "95442.2");
    let segs = segments(&dir.0);
    let read = |s: &String| std::fs::read(dir.join(s)).unwrap();
    let ticks: Vec<u64> = segs
        .iter()
        .map(|s| ts_first_video_ticks(&read(s)).unwrap())
        .collect();
    assert!(
        ticks.windows(2).any(|w| w[1] < w[0]),
        "no wrap in {ticks:?}"
    );
    let first_ms = (ticks[0] / 90) as i64;
    let clock = MediaClock::new(0, first_ms);
    let starts: Vec<i64> = segs
        .iter()
        .map(|s| clock.start_ms(&read(s)).unwrap())
        .collect();
    assert_eq!(starts[0], 0);
    for w in starts.windows(2) {
        // Strictly increasing, about a second apart (the last segment may be short).
        assert!(w[1] > w[0] && w[1] - w[0] <= 1100, "{starts:?}");
    }
}

#[test]
fn fmp4_segments_from_ffmpeg() {
    let dir = TempDir::new("clock-fmp4");
    ffmpeg_hls(&dir.0, true, "0");
    let init = std::fs::read(dir.join("init.mp4")).unwrap();
    let tracks = init_tracks(&init);
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    let video = tracks.iter().find(|t| t.video).expect("a video track");
    assert!(tracks.iter().any(|t| !t.video && t.timescale == 48_000));
    let segs = segments(&dir.0);
    assert!(segs.len() >= 3, "{segs:?}");
    let mut clock = MediaClock::new(2_000_000, 0);
    assert!(clock.set_init(&init));
    // ffprobe reads each segment after the init segment; it may shift every timestamp
    // by the init's edit list, so compare the distances from the first segment.
    let mut first: Option<(i64, i64)> = None;
    for s in &segs {
        let bytes = std::fs::read(dir.join(s)).unwrap();
        let joined = dir.join(&format!("{s}.mp4"));
        std::fs::write(&joined, [init.as_slice(), bytes.as_slice()].concat()).unwrap();
        let (dts, (num, den)) = ffprobe_first_video_dts(&joined);
        assert_eq!((num, den), (1, i64::from(video.timescale)), "{s}");
        let (ticks, timescale) = fmp4_first_decode_time(&bytes, &tracks).unwrap();
        assert_eq!(timescale, video.timescale, "{s}");
        let (dts0, ticks0) = *first.get_or_insert((dts, ticks as i64));
        assert_eq!(ticks as i64 - ticks0, dts - dts0, "{s}");
        let expect = 2_000_000 + ticks as i64 * 1000 / den;
        assert_eq!(clock.start_ms(&bytes), Some(expect), "{s}");
    }
    let (_, ticks0) = first.unwrap();
    assert_eq!(ticks0, 0, "ffmpeg starts the fMP4 timeline at 0");
}
