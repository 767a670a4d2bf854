//! A blocking RTMP publisher over `ferrocast_media::rtmp::ClientSession`, for tests that
//! need what ffmpeg 5.1 cannot send (Enhanced RTMP H.265), or exact control of bytes.

use bytes::Bytes;
use ferrocast_media::codec::{split_annexb, HevcConfig};
use ferrocast_media::flv::{self, VideoCodec};
use ferrocast_media::rtmp::{ClientEvent, ClientSession, Limits};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connected, publishing RTMP client.
#[derive(Debug)]
pub struct Publisher {
    sock: TcpStream,
    session: ClientSession,
    /// Status events received (code strings).
    pub statuses: Vec<String>,
}

impl Publisher {
    /// Connects to `addr`, publishes `live/{key}` and waits (bounded) for the server's
    /// answer. Err carries the refusal's status code when the server says no.
    pub fn connect(addr: SocketAddr, key: &str, timeout: Duration) -> Result<Self, String> {
        let sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        let random: Vec<u8> = (0..1528u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut session = ClientSession::new(Limits::default(), &random, 0);
        session.publish("live", &format!("rtmp://{addr}/live"), key);
        let mut p = Self {
            sock,
            session,
            statuses: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            p.flush().map_err(|e| e.to_string())?;
            while let Some(ev) = p.session.poll_event() {
                match ev {
                    ClientEvent::PublishStarted { .. } => {
                        p.session.set_chunk_size(60_000);
                        return Ok(p);
                    }
                    ClientEvent::Status { code, .. } => {
                        p.statuses.push(code.clone());
                        if code.contains("BadName")
                            || code.contains("Failed")
                            || code.contains("Rejected")
                        {
                            return Err(code);
                        }
                    }
                    ClientEvent::Closed => return Err("closed".into()),
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for publish".into());
            }
            p.pump().map_err(|e| e.to_string())?;
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while let Some(out) = self.session.take_output() {
            self.sock.write_all(&out)?;
        }
        Ok(())
    }

    /// Reads whatever the server sent (waits at most 5 ms).
    pub fn pump(&mut self) -> std::io::Result<usize> {
        let mut buf = [0u8; 16 * 1024];
        match self.sock.read(&mut buf) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed",
            )),
            Ok(n) => {
                self.session.feed(&buf[..n]).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a video message body.
    pub fn video(&mut self, ts: u32, body: Bytes) -> std::io::Result<()> {
        self.session.send_video(ts, body);
        self.flush()
    }

    /// Sends an audio message body.
    pub fn audio(&mut self, ts: u32, body: Bytes) -> std::io::Result<()> {
        self.session.send_audio(ts, body);
        self.flush()
    }
}

/// Publishes an H.265 Annex B elementary stream (one access unit per AUD) as Enhanced
/// RTMP: a `hvc1` SequenceStart, then coded frames at `fps`. Returns the frame count.
pub fn publish_hevc_annexb(
    p: &mut Publisher,
    annexb: &[u8],
    fps: u32,
    realtime: bool,
) -> std::io::Result<usize> {
    let nals = split_annexb(annexb);
    let nal_type = |n: &[u8]| n.first().map(|b| (b >> 1) & 0x3f).unwrap_or(0);
    let (mut vps, mut sps, mut pps) = (None, None, None);
    for n in &nals {
        match nal_type(n) {
            32 if vps.is_none() => vps = Some(*n),
            33 if sps.is_none() => sps = Some(*n),
            34 if pps.is_none() => pps = Some(*n),
            _ => {}
        }
    }
    let (Some(vps), Some(sps), Some(pps)) = (vps, sps, pps) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no VPS/SPS/PPS",
        ));
    };
    let config = HevcConfig::from_parameter_sets(vps, sps, pps)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    p.video(0, flv::video_sequence_header(VideoCodec::Hevc, &config.raw))?;
    // Group NAL units into access units at each AUD (type 35) or, without AUDs, at each
    // VCL NAL whose first_slice_segment_in_pic_flag is set.
    let mut units: Vec<Vec<&[u8]>> = Vec::new();
    for n in nals {
        let t = nal_type(n);
        let starts_au = t == 35
            || (t < 32
                && n.get(2).is_some_and(|b| b & 0x80 != 0)
                && units
                    .last()
                    .is_some_and(|u| u.iter().any(|x| nal_type(x) < 32)));
        if units.is_empty() || starts_au {
            units.push(Vec::new());
        }
        if !matches!(t, 32..=35) {
            units.last_mut().expect("pushed").push(n);
        }
    }
    units.retain(|u| u.iter().any(|n| nal_type(n) < 32));
    let start = Instant::now();
    for (i, au) in units.iter().enumerate() {
        let ts = (i as u64 * 1000 / u64::from(fps)) as u32;
        if realtime {
            let due = Duration::from_millis(u64::from(ts));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let keyframe = au.iter().any(|n| matches!(nal_type(n), 16..=21));
        let mut data = Vec::new();
        for n in au {
            data.extend_from_slice(&(n.len() as u32).to_be_bytes());
            data.extend_from_slice(n);
        }
        p.video(ts, flv::video_frame(VideoCodec::Hevc, keyframe, 0, &data))?;
        p.pump()?;
    }
    Ok(units.len())
}
