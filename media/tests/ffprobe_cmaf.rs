//! ffprobe as the oracle for the CMAF writer: real FLV / Annex B input from ffmpeg is parsed
//! with `flv` + `codec`, muxed into init + fragments, and ffprobe/ffmpeg must read back exactly
//! the packets, timestamps and stream parameters we wrote, and decode them without errors.
//! Set FERROCAST_KEEP_TMP=1 to keep the generated files in the temp dir for inspection.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocast_media::cmaf::{self, Sample, Track, TrackConfig, TrackRun};
use ferrocast_media::codec::{self, AacConfig, AvcConfig, HevcConfig};
use ferrocast_media::flv::{self, AudioTag, VideoCodec, VideoTag};

const TIMEOUT: Duration = Duration::from_secs(120);
const FRAGMENT_MS: u64 = 500;

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ferrocast-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FERROCAST_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn tools_available() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok("ffmpeg") && ok("ffprobe") {
        true
    } else {
        println!("skipping: ffmpeg/ffprobe not on PATH");
        false
    }
}

/// Run a tool with a deadline; stdout/stderr go to files so a chatty tool can never block on a
/// full pipe. Returns (stdout, stderr); panics on timeout or a non-zero exit.
fn run(dir: &Path, tool: &str, args: &[&str]) -> (String, String) {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "{tool} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// One ffprobe section (a stream, packet or frame) as key → value.
type Entry = HashMap<String, String>;

/// ffprobe output, one list per section kind.
#[derive(Debug, Default)]
struct Probe {
    streams: Vec<Entry>,
    packets: Vec<Entry>,
    frames: Vec<Entry>,
}

/// Run ffprobe with the `compact` writer (`section|key=value|...`, one section per line), which
/// is simple enough to read without a JSON parser.
fn ffprobe(dir: &Path, args: &[&str]) -> Probe {
    let mut all = vec!["-v", "error", "-of", "compact=p=1:nk=0"];
    all.extend_from_slice(args);
    let (stdout, stderr) = run(dir, "ffprobe", &all);
    assert!(stderr.trim().is_empty(), "ffprobe errors: {stderr}");
    let mut probe = Probe::default();
    for line in stdout.lines() {
        let mut fields = line.split('|');
        let section = fields.next().unwrap_or_default();
        let entry: Entry = fields
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match section {
            "stream" => probe.streams.push(entry),
            "packet" => probe.packets.push(entry),
            "frame" => probe.frames.push(entry),
            _ => {}
        }
    }
    probe
}

fn text<'a>(e: &'a Entry, key: &str) -> &'a str {
    e.get(key).map_or("", String::as_str)
}

fn int(e: &Entry, key: &str) -> i64 {
    let v = text(e, key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer: {v:?}"))
}

/// A sample with absolute timestamps in its track's timescale.
#[derive(Debug, Clone)]
struct Timed {
    dts: u64,
    pts: u64,
    keyframe: bool,
    data: Bytes,
}

/// Durations from the next sample's DTS; the last sample repeats the previous duration.
fn to_samples(timed: &[Timed], default_duration: u32) -> Vec<Sample> {
    timed
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let duration = match (
                timed.get(i + 1),
                i.checked_sub(1).and_then(|p| timed.get(p)),
            ) {
                (Some(next), _) => next.dts - t.dts,
                (None, Some(prev)) => t.dts - prev.dts,
                (None, None) => u64::from(default_duration),
            };
            Sample {
                duration: duration as u32,
                composition_offset: (t.pts as i64 - t.dts as i64) as i32,
                keyframe: t.keyframe,
                data: t.data.clone(),
            }
        })
        .collect()
}

/// Cut the tracks into fragments of FRAGMENT_MS by decode time and write init + fragments.
fn mux(tracks: &[Track], timed: &[Vec<Timed>], path: &Path) {
    let mut out = cmaf::init_segment(tracks).to_vec();
    let samples: Vec<Vec<Sample>> = tracks
        .iter()
        .zip(timed)
        .map(|(t, s)| to_samples(s, t.timescale / 30))
        .collect();
    let end_ms = tracks
        .iter()
        .zip(timed)
        .filter_map(|(t, s)| s.last().map(|l| l.dts * 1000 / u64::from(t.timescale)))
        .max()
        .unwrap_or(0);
    let mut seq = 1;
    let mut window = 0;
    while window * FRAGMENT_MS <= end_ms {
        let mut runs = Vec::new();
        for ((track, timed), samples) in tracks.iter().zip(timed).zip(&samples) {
            let ts = u64::from(track.timescale);
            let in_window = |t: &Timed| t.dts * 1000 / ts / FRAGMENT_MS == window;
            let first = timed.iter().position(in_window);
            if let Some(first) = first {
                let n = timed[first..].iter().take_while(|t| in_window(t)).count();
                runs.push(TrackRun {
                    track_id: track.id,
                    base_decode_time: timed[first].dts,
                    samples: &samples[first..first + n],
                });
            }
        }
        out.extend_from_slice(&cmaf::fragment(seq, &runs));
        seq += 1;
        window += 1;
    }
    fs::write(path, out).expect("write mp4");
}

/// Check one stream's packets (decode order) against what we muxed.
fn check_packets(packets: &[&Entry], expected: &[Timed]) {
    assert_eq!(packets.len(), expected.len(), "packet count");
    for (i, (p, e)) in packets.iter().zip(expected).enumerate() {
        assert_eq!(int(p, "dts"), e.dts as i64, "dts of packet {i}");
        assert_eq!(int(p, "pts"), e.pts as i64, "pts of packet {i}");
        assert_eq!(int(p, "size"), e.data.len() as i64, "size of packet {i}");
        let key = text(p, "flags").starts_with('K');
        assert_eq!(key, e.keyframe, "keyframe flag of packet {i}");
    }
}

/// ffprobe reads the file back as expected and ffmpeg decodes every frame without an error.
fn verify(dir: &Path, file: &str, expected: &[(&str, &[Timed])]) -> Probe {
    let probe = ffprobe(dir, &["-show_streams", "-show_packets", file]);
    let streams = &probe.streams;
    assert_eq!(streams.len(), expected.len());
    let packets = &probe.packets;
    for (index, (codec_name, timed)) in expected.iter().enumerate() {
        assert_eq!(text(&streams[index], "codec_name"), *codec_name);
        let mine: Vec<&Entry> = packets
            .iter()
            .filter(|p| int(p, "stream_index") == index as i64)
            .collect();
        check_packets(&mine, timed);
    }
    // Decoding: every video packet gives a frame, in presentation order.
    let frames = ffprobe(dir, &["-select_streams", "v", "-show_frames", file]).frames;
    let (_, video) = expected[0];
    assert_eq!(frames.len(), video.len(), "decoded video frames");
    let mut pts: Vec<u64> = video.iter().map(|t| t.pts).collect();
    pts.sort_unstable();
    let decoded: Vec<u64> = frames.iter().map(|f| int(f, "pts") as u64).collect();
    assert_eq!(decoded, pts, "frames come out in presentation order");
    let (_, stderr) = run(
        dir,
        "ffmpeg",
        &["-v", "error", "-i", file, "-f", "null", "-"],
    );
    assert!(stderr.trim().is_empty(), "decode errors: {stderr}");
    probe
}

#[test]
fn h264_aac_from_flv() {
    if !tools_available() {
        return;
    }
    let tmp = TempDir::new("cmaf-h264");
    let dir = &tmp.0;
    run(
        dir,
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-bf",
            "2",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-f",
            "flv",
            "in.flv",
        ],
    );
    let data = Bytes::from(fs::read(dir.join("in.flv")).expect("read flv"));
    let tags = flv::read_file(&data).expect("flv file");

    let (mut avc, mut aac) = (None, None);
    let (mut video, mut audio_ms) = (Vec::new(), Vec::new());
    for tag in &tags {
        match tag.tag_type {
            9 => match flv::parse_video(&tag.body).expect("video tag") {
                VideoTag::SequenceHeader { codec, config } => {
                    assert_eq!(codec, VideoCodec::Avc);
                    avc = Some(AvcConfig::parse(&config).expect("avcC"));
                }
                VideoTag::Frame {
                    keyframe,
                    composition_time_ms,
                    data,
                    ..
                } => {
                    let dts = u64::from(tag.timestamp_ms) * 90;
                    let pts = (i64::from(tag.timestamp_ms) + i64::from(composition_time_ms)) * 90;
                    video.push(Timed {
                        dts,
                        pts: pts as u64,
                        keyframe,
                        data,
                    });
                }
                VideoTag::EndOfSequence { .. } => {}
                other => panic!("unexpected video tag {other:?}"),
            },
            8 => match flv::parse_audio(&tag.body).expect("audio tag") {
                AudioTag::AacSequenceHeader(asc) => {
                    aac = Some(AacConfig::parse(&asc).expect("ASC"))
                }
                AudioTag::AacRaw(raw) => audio_ms.push((tag.timestamp_ms, raw)),
                other => panic!("unexpected audio tag {other:?}"),
            },
            _ => {}
        }
    }
    let avc = avc.expect("AVC sequence header");
    let aac = aac.expect("AAC sequence header");
    assert_eq!((avc.width, avc.height), (320, 240));
    assert_eq!(avc.frame_rate, Some(30.0));
    assert_eq!((aac.sample_rate, aac.channels), (44100, 1));
    assert_eq!(aac.codec_string(), "mp4a.40.2");
    assert_eq!(video.len(), 60);
    assert!(
        video.iter().any(|t| t.pts != t.dts),
        "the input should have B-frames"
    );
    let rate = u64::from(aac.sample_rate);
    let audio: Vec<Timed> = audio_ms
        .into_iter()
        .map(|(ms, data)| {
            let t = (u64::from(ms) * rate + 500) / 1000;
            Timed {
                dts: t,
                pts: t,
                keyframe: true,
                data,
            }
        })
        .collect();

    let tracks = [
        Track {
            id: 1,
            timescale: 90_000,
            config: TrackConfig::Avc(avc),
        },
        Track {
            id: 2,
            timescale: aac.sample_rate,
            config: TrackConfig::Aac(aac),
        },
    ];
    mux(
        &tracks,
        &[video.clone(), audio.clone()],
        &dir.join("out.mp4"),
    );
    let probe = verify(dir, "out.mp4", &[("h264", &video), ("aac", &audio)]);
    let streams = &probe.streams;
    assert_eq!(text(&streams[0], "codec_tag_string"), "avc1");
    assert_eq!(
        (int(&streams[0], "width"), int(&streams[0], "height")),
        (320, 240)
    );
    assert_eq!(text(&streams[0], "time_base"), "1/90000");
    assert_eq!(text(&streams[1], "sample_rate"), "44100");
    assert_eq!(int(&streams[1], "channels"), 1);
    assert_eq!(text(&streams[1], "time_base"), "1/44100");
}

fn hevc_nal_type(nal: &[u8]) -> u8 {
    (nal[0] >> 1) & 0x3f
}

/// Group an Annex B HEVC stream into access units (H.265 7.4.2.4.4): a new AU starts at the
/// first slice of a picture or at a parameter set / AUD / prefix SEI that follows a picture.
fn access_units(nals: Vec<&[u8]>) -> Vec<Vec<&[u8]>> {
    let mut aus: Vec<Vec<&[u8]>> = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut seen_vcl = false;
    for nal in nals {
        let ty = hevc_nal_type(nal);
        let vcl = ty < 32;
        let starts_au = if vcl {
            nal.get(2).is_some_and(|b| b & 0x80 != 0)
        } else {
            matches!(ty, 32..=35 | 39 | 41..=44 | 48..=55)
        };
        if starts_au && seen_vcl {
            aus.push(std::mem::take(&mut current));
            seen_vcl = false;
        }
        seen_vcl |= vcl;
        current.push(nal);
    }
    if !current.is_empty() {
        aus.push(current);
    }
    aus
}

#[test]
fn h265_from_annexb_parameter_sets() {
    if !tools_available() {
        return;
    }
    let tmp = TempDir::new("cmaf-h265");
    let dir = &tmp.0;
    // Encode into MP4 first so ffprobe can tell us each packet's real timestamps, then take
    // the Annex B elementary stream out of it: the parameter sets come in-band before IRAPs.
    run(
        dir,
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:bframes=2:keyint=30",
            "-video_track_timescale",
            "90000",
            "src.mp4",
        ],
    );
    run(
        dir,
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            "src.mp4",
            "-c",
            "copy",
            "-bsf:v",
            "hevc_mp4toannexb",
            "-f",
            "hevc",
            "src.hevc",
        ],
    );
    let src_packets = ffprobe(dir, &["-select_streams", "v", "-show_packets", "src.mp4"]).packets;
    let annexb = fs::read(dir.join("src.hevc")).expect("read hevc");
    let aus = access_units(codec::split_annexb(&annexb));
    assert_eq!(aus.len(), src_packets.len(), "access units vs packets");

    let find = |ty: u8| {
        aus.iter()
            .flatten()
            .copied()
            .find(|n| hevc_nal_type(n) == ty)
            .unwrap_or_else(|| panic!("no NAL of type {ty}"))
    };
    let config = HevcConfig::from_parameter_sets(find(32), find(33), find(34)).expect("hvcC");
    assert_eq!((config.width, config.height), (320, 240));
    assert_eq!(config.frame_rate, Some(30.0));
    assert!(
        config.codec_string().starts_with("hvc1.1.6.L"),
        "{}",
        config.codec_string()
    );
    assert_eq!(HevcConfig::parse(&config.raw).expect("reparse"), config);

    // Send every picture through the Enhanced RTMP builders and parser, with millisecond
    // timestamps, the way a publisher's frames reach the packager.
    let seq = flv::video_sequence_header(VideoCodec::Hevc, &config.raw);
    match flv::parse_video(&seq).expect("sequence start") {
        VideoTag::SequenceHeader { codec, config: c } => {
            assert_eq!(codec, VideoCodec::Hevc);
            assert_eq!(c, config.raw);
        }
        other => panic!("{other:?}"),
    }
    // The MP4 muxer starts DTS below zero (an edit list hides the B-frame delay); FLV
    // timestamps are unsigned, so shift everything to start at zero.
    let shift = -src_packets
        .iter()
        .map(|p| int(p, "dts"))
        .min()
        .unwrap_or(0)
        .min(0);
    let mut video = Vec::new();
    for (au, p) in aus.iter().zip(&src_packets) {
        let dts_ms = (int(p, "dts") + shift + 45) / 90;
        let pts_ms = (int(p, "pts") + shift + 45) / 90;
        let keyframe = text(p, "flags").starts_with('K');
        let vcl: Vec<&[u8]> = au
            .iter()
            .copied()
            .filter(|n| !matches!(hevc_nal_type(n), 32..=35))
            .collect();
        let body = flv::video_frame(
            VideoCodec::Hevc,
            keyframe,
            (pts_ms - dts_ms) as i32,
            &codec::to_length_prefixed(&vcl),
        );
        let VideoTag::Frame {
            keyframe: k,
            composition_time_ms,
            data,
            ..
        } = flv::parse_video(&body).expect("coded frames")
        else {
            panic!("not a frame");
        };
        assert_eq!(k, keyframe);
        let dts = dts_ms as u64 * 90;
        video.push(Timed {
            dts,
            pts: (dts_ms + i64::from(composition_time_ms)) as u64 * 90,
            keyframe,
            data,
        });
    }
    assert!(video.iter().any(|t| t.pts != t.dts), "B-frames expected");
    assert!(video[0].keyframe);

    let tracks = [Track {
        id: 1,
        timescale: 90_000,
        config: TrackConfig::Hevc(config),
    }];
    mux(&tracks, &[video.clone()], &dir.join("out.mp4"));
    let probe = verify(dir, "out.mp4", &[("hevc", &video)]);
    let stream = &probe.streams[0];
    assert_eq!(text(stream, "codec_tag_string"), "hvc1");
    assert_eq!((int(stream, "width"), int(stream, "height")), (320, 240));
    // Timestamps agree with the source encode to within the millisecond rounding of FLV.
    for (ours, theirs) in probe.packets.iter().zip(&src_packets) {
        assert!((int(ours, "pts") - int(theirs, "pts") - shift).abs() <= 45);
        assert!((int(ours, "dts") - int(theirs, "dts") - shift).abs() <= 45);
    }
}
