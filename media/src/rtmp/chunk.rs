//! The RTMP chunk layer (spec section 5.3): splitting messages into chunks and
//! reassembling them, per chunk stream, under the connection's [`Limits`].
//!
//! The decoder applies Set Chunk Size and Abort (spec 5.4.1, 5.4.2) itself,
//! because they change how the very next chunk is parsed; it still hands those
//! messages up so a session can see them.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::message::msg_type;
use super::{Limits, RtmpError};

/// Chunk size both ends start with (spec 5.4.1).
pub(crate) const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Timestamp field value that says "the real value is in the extended field".
const EXTENDED: u32 = 0xFF_FFFF;
/// Largest chunk stream id the 3-byte basic header can carry.
const MAX_CSID: u32 = 65_599;
/// Largest message length a chunk header can carry.
const MAX_LENGTH: usize = 0xFF_FFFF;

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Chunk stream it arrived on (or is to be sent on).
    pub csid: u32,
    /// Absolute timestamp in milliseconds (deltas accumulated, wrapping at 2^32).
    pub timestamp: u32,
    /// Message type id (see [`msg_type`](super::msg_type)).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// What we remember about one incoming chunk stream.
#[derive(Debug, Default)]
struct InStream {
    /// Absolute timestamp of the latest message.
    timestamp: u32,
    /// The latest header's timestamp field: a delta, or after a type-0 header
    /// the absolute value (what ffmpeg, librtmp and SRS add for a following type 3).
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The latest type 0/1/2 header used an extended timestamp, so type-3
    /// chunks on this stream carry one too.
    extended: bool,
    /// Body of the message being reassembled, if one is unfinished.
    partial: Option<BytesMut>,
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: Limits,
    buf: BytesMut,
    chunk_size: u32,
    streams: HashMap<u32, InStream>,
    pending_bytes: usize,
    failed: Option<RtmpError>,
}

/// A parsed chunk header, before anything is committed.
struct Header {
    fmt: u8,
    csid: u32,
    /// Bytes of basic + message header + extended timestamp.
    len: usize,
    timestamp_field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

enum Step {
    NeedMore,
    Consumed,
    Message(RawMessage),
}

impl ChunkDecoder {
    /// A decoder at the default chunk size of 128.
    pub fn new(limits: Limits) -> Self {
        ChunkDecoder {
            limits,
            buf: BytesMut::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            pending_bytes: 0,
            failed: None,
        }
    }

    /// Buffers bytes read from the peer. Call [`next_message`](Self::next_message)
    /// until it returns `Ok(None)` to parse them.
    pub fn push(&mut self, input: &[u8]) -> Result<(), RtmpError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    /// The next complete message, or `Ok(None)` when more input is needed.
    /// After an error the decoder returns that error forever.
    pub fn next_message(&mut self) -> Result<Option<RawMessage>, RtmpError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            match self.step() {
                Ok(Step::NeedMore) => return Ok(None),
                Ok(Step::Consumed) => {}
                Ok(Step::Message(msg)) => match self.apply_control(&msg) {
                    Ok(()) => return Ok(Some(msg)),
                    Err(err) => return Err(self.fail(err)),
                },
                Err(err) => return Err(self.fail(err)),
            }
        }
    }

    /// Changes the size of incoming chunks (normally done by the decoder itself
    /// when Set Chunk Size arrives).
    pub fn set_chunk_size(&mut self, n: u32) -> Result<(), RtmpError> {
        if n == 0 || n & 0x8000_0000 != 0 {
            return Err(RtmpError::InvalidChunkSize(n));
        }
        if n > self.limits.max_chunk_size {
            return Err(RtmpError::ChunkSizeTooLarge {
                size: n,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = n;
        Ok(())
    }

    fn fail(&mut self, err: RtmpError) -> RtmpError {
        self.failed = Some(err.clone());
        err
    }

    fn apply_control(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            msg_type::SET_CHUNK_SIZE => {
                let size = be_u32(&msg.payload)
                    .ok_or(RtmpError::MalformedMessage("short Set Chunk Size"))?;
                self.set_chunk_size(size)
            }
            msg_type::ABORT => {
                let csid =
                    be_u32(&msg.payload).ok_or(RtmpError::MalformedMessage("short Abort"))?;
                if let Some(stream) = self.streams.get_mut(&csid) {
                    if let Some(partial) = stream.partial.take() {
                        self.pending_bytes = self.pending_bytes.saturating_sub(partial.len());
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Parses the header at the front of the buffer without consuming it.
    fn header(&self) -> Result<Option<Header>, RtmpError> {
        let buf = &self.buf[..];
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        // Basic header, spec 5.3.1.1.
        let (csid, mut pos) = match first & 0x3F {
            0 => match buf.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&lo), Some(&hi)) => (64 + u32::from(lo) + 256 * u32::from(hi), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let prev = self.streams.get(&csid);
        if prev.is_none() {
            if fmt != 0 {
                return Err(RtmpError::BadChunkHeader(
                    "first chunk of a chunk stream is not type 0",
                ));
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(RtmpError::TooManyChunkStreams {
                    max: self.limits.max_chunk_streams,
                });
            }
        }
        if fmt != 3 && prev.is_some_and(|p| p.partial.is_some()) {
            return Err(RtmpError::BadChunkHeader(
                "new message header before the previous message is complete",
            ));
        }
        // Message header, spec 5.3.1.2.
        let mh_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(mh) = buf.get(pos..pos + mh_len) else {
            return Ok(None);
        };
        pos += mh_len;
        let prev_or_default = |f: fn(&InStream) -> u32| prev.map_or(0, f);
        let timestamp_field = if fmt == 3 {
            prev_or_default(|p| p.delta)
        } else {
            u32::from_be_bytes([0, mh[0], mh[1], mh[2]])
        };
        let length = if fmt <= 1 {
            u32::from_be_bytes([0, mh[3], mh[4], mh[5]])
        } else {
            prev_or_default(|p| p.length)
        };
        let type_id = if fmt <= 1 {
            mh[6]
        } else {
            prev.map_or(0, |p| p.type_id)
        };
        let stream_id = if fmt == 0 {
            u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]])
        } else {
            prev_or_default(|p| p.stream_id)
        };
        let extended = if fmt == 3 {
            prev.is_some_and(|p| p.extended)
        } else {
            timestamp_field == EXTENDED
        };
        let mut timestamp_field = timestamp_field;
        if extended {
            // Spec 5.3.1.3; on type 3 it repeats the value of the header it continues.
            let Some(ext) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            timestamp_field = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
            pos += 4;
        }
        if length > self.limits.max_message_size {
            return Err(RtmpError::MessageTooLarge {
                size: length,
                max: self.limits.max_message_size,
            });
        }
        Ok(Some(Header {
            fmt,
            csid,
            len: pos,
            timestamp_field,
            length,
            type_id,
            stream_id,
            extended,
        }))
    }

    fn step(&mut self) -> Result<Step, RtmpError> {
        let Some(h) = self.header()? else {
            return Ok(Step::NeedMore);
        };
        let partial = self.streams.get(&h.csid).and_then(|s| s.partial.as_ref());
        let continuing = partial.is_some();
        let received = partial.map_or(0, BytesMut::len);
        let left = (h.length as usize).saturating_sub(received);
        let data_len = left.min(self.chunk_size as usize);
        if self.buf.len() < h.len + data_len {
            return Ok(Step::NeedMore);
        }
        let completes = data_len == left;
        if !completes && self.pending_bytes + data_len > self.limits.max_pending_bytes {
            return Err(RtmpError::PendingBytesExceeded {
                max: self.limits.max_pending_bytes,
            });
        }

        // Everything checked: commit.
        self.buf.advance(h.len);
        let data = self.buf.split_to(data_len);
        let stream = self.streams.entry(h.csid).or_default();
        if !continuing {
            // First chunk of a new message: this header defines it.
            match h.fmt {
                0 => {
                    stream.timestamp = h.timestamp_field;
                    stream.delta = h.timestamp_field;
                    stream.stream_id = h.stream_id;
                }
                _ => {
                    stream.delta = h.timestamp_field;
                    stream.timestamp = stream.timestamp.wrapping_add(h.timestamp_field);
                }
            }
            stream.length = h.length;
            stream.type_id = h.type_id;
            if h.fmt != 3 {
                stream.extended = h.extended;
            }
        }
        let payload = if completes {
            match stream.partial.take() {
                None => data.freeze(),
                Some(mut partial) => {
                    self.pending_bytes = self.pending_bytes.saturating_sub(partial.len());
                    partial.extend_from_slice(&data);
                    partial.freeze()
                }
            }
        } else {
            self.pending_bytes += data.len();
            match &mut stream.partial {
                Some(partial) => partial.extend_from_slice(&data),
                None => {
                    // A copy of its own, so an unfinished message does not pin the
                    // read buffer; it grows with what arrives, not with the
                    // length the header announced.
                    let mut partial = BytesMut::with_capacity(data.len() * 2);
                    partial.extend_from_slice(&data);
                    stream.partial = Some(partial);
                }
            }
            return Ok(Step::Consumed);
        };
        Ok(Step::Message(RawMessage {
            csid: h.csid,
            timestamp: stream.timestamp,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            payload,
        }))
    }
}

fn be_u32(payload: &[u8]) -> Option<u32> {
    let bytes = payload.get(..4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// What we remember about one outgoing chunk stream, to compress headers.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// The last header was type 0; its timestamp field was absolute, so we do
    /// not rely on peers agreeing what a following type 3 means.
    last_fmt0: bool,
}

/// Splits messages into chunks, compressing headers (type 1/2/3) when the
/// previous message on the same chunk stream allows it.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: HashMap<u32, OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder at the default chunk size of 128.
    pub fn new() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }

    /// Size of the chunks we write from now on; clamped to `1..=0x7FFF_FFFF`.
    /// The peer must have been told first (Set Chunk Size at the old size).
    pub fn set_chunk_size(&mut self, n: u32) {
        self.chunk_size = n.clamp(1, 0x7FFF_FFFF);
    }

    /// Current outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Appends `msg` as chunks on chunk stream `csid` (clamped to the valid
    /// `2..=65599`; `msg.csid` is ignored). A payload over 16 MiB - 1 cannot
    /// be expressed in a chunk header and is dropped.
    pub fn write(&mut self, csid: u32, msg: &RawMessage, out: &mut BytesMut) {
        let csid = csid.clamp(2, MAX_CSID);
        let Ok(length) = u32::try_from(msg.payload.len()) else {
            return;
        };
        if msg.payload.len() > MAX_LENGTH {
            return;
        }
        let prev = self.streams.get(&csid).copied();
        let (fmt, field) = match prev {
            Some(p) if p.stream_id == msg.stream_id && msg.timestamp >= p.timestamp => {
                let delta = msg.timestamp - p.timestamp;
                if p.length != length || p.type_id != msg.type_id {
                    (1, delta)
                } else if delta != p.delta || p.last_fmt0 || p.extended {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
            _ => (0, msg.timestamp),
        };
        let extended = if fmt == 3 {
            prev.is_some_and(|p| p.extended)
        } else {
            field >= EXTENDED
        };
        put_basic_header(out, fmt, csid);
        if fmt < 3 {
            out.put_uint(u64::from(field.min(EXTENDED)), 3);
        }
        if fmt < 2 {
            out.put_uint(u64::from(length), 3);
            out.put_u8(msg.type_id);
        }
        if fmt == 0 {
            out.put_u32_le(msg.stream_id);
        }
        if extended {
            out.put_u32(field);
        }
        let mut chunks = msg.payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for chunk in chunks {
            put_basic_header(out, 3, csid);
            if extended {
                out.put_u32(field);
            }
            out.put_slice(chunk);
        }
        self.streams.insert(
            csid,
            OutStream {
                timestamp: msg.timestamp,
                delta: field,
                length,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
                extended,
                last_fmt0: fmt == 0,
            },
        );
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.put_u8(fmt | csid as u8),
        64..=319 => {
            out.put_u8(fmt);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            out.put_u8(fmt | 1);
            out.put_u16_le((csid - 64) as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> RawMessage {
        RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: (0..len).map(|i| (i * 7 + len) as u8).collect(),
        }
    }

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Result<Vec<RawMessage>, RtmpError> {
        dec.push(bytes)?;
        let mut out = Vec::new();
        while let Some(m) = dec.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    /// Messages and the final error, feeding `bytes` in one go.
    fn at_once(limits: &Limits, bytes: &[u8]) -> (Vec<RawMessage>, Option<RtmpError>) {
        let mut dec = ChunkDecoder::new(limits.clone());
        let mut got = Vec::new();
        let err = dec.push(bytes).err().or_else(|| loop {
            match dec.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        });
        (got, err)
    }

    /// The same, one byte at a time.
    fn byte_by_byte(limits: &Limits, bytes: &[u8]) -> (Vec<RawMessage>, Option<RtmpError>) {
        let mut dec = ChunkDecoder::new(limits.clone());
        let mut got = Vec::new();
        for b in bytes {
            if let Err(e) = dec.push(&[*b]) {
                return (got, Some(e));
            }
            loop {
                match dec.next_message() {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e)),
                }
            }
        }
        (got, None)
    }

    fn with_csid(mut m: RawMessage, csid: u32) -> RawMessage {
        m.csid = csid;
        m
    }

    #[test]
    fn round_trip_with_header_compression() {
        let messages = vec![
            msg(6, 0, 9, 1, 300),
            msg(6, 40, 9, 1, 300),  // type 2 after type 0
            msg(6, 80, 9, 1, 300),  // type 3 (same delta)
            msg(6, 120, 9, 1, 300), // type 3
            msg(6, 150, 9, 1, 10),  // type 1
            msg(6, 150, 8, 1, 10),  // type 1, delta 0
            msg(6, 100, 8, 1, 10),  // backwards: type 0
            msg(6, 100, 8, 2, 0),   // new stream id: type 0, empty payload
            msg(4, 5, 8, 1, 128),   // exactly one chunk
            msg(4, 6, 8, 1, 129),   // one byte into a second chunk
        ];
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        for m in &messages {
            enc.write(m.csid, m, &mut wire);
        }
        let mut fmts = Vec::new();
        // Collect the fmt of each message's first chunk by re-encoding one at a time.
        let mut enc2 = ChunkEncoder::new();
        for m in &messages {
            let mut one = BytesMut::new();
            enc2.write(m.csid, m, &mut one);
            fmts.push(one[0] >> 6);
        }
        assert_eq!(fmts, vec![0, 2, 3, 3, 1, 1, 0, 0, 0, 1]);
        let mut dec = ChunkDecoder::new(Limits::default());
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), messages);
    }

    #[test]
    fn every_basic_header_form() {
        for csid in [2, 3, 63, 64, 65, 319, 320, 1000, 65_599] {
            let m = msg(csid, 1, 20, 0, 200);
            let mut wire = BytesMut::new();
            ChunkEncoder::new().write(csid, &m, &mut wire);
            let expected_basic = match csid {
                2..=63 => 1,
                64..=319 => 2,
                _ => 3,
            };
            assert_eq!(wire.len(), expected_basic * 2 + 11 + 200, "csid {csid}");
            let mut dec = ChunkDecoder::new(Limits::default());
            assert_eq!(decode_all(&mut dec, &wire).unwrap(), vec![m]);
        }
    }

    #[test]
    fn hand_built_type_1_2_3_headers() {
        // Spec 5.3.2.1 example shape: type 0, then type 2 deltas, then type 3.
        let mut wire = vec![
            0x03, 0, 0x03, 0xE8, 0, 0, 3, 8, 1, 0, 0, 0, b'a', b'b',
            b'c', // t0 ts=1000 len 3 type 8 sid 1
            0x43, 0, 0, 20, 0, 0, 2, 9, b'd', b'e', // t1 delta 20 len 2 type 9
            0x83, 0, 0, 30, b'f', b'g', // t2 delta 30
            0xC3, b'h', b'i', // t3: delta 30 again
        ];
        let mut dec = ChunkDecoder::new(Limits::default());
        let got = decode_all(&mut dec, &wire).unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|m| (m.timestamp, m.type_id, m.stream_id, m.payload.to_vec()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1000, 8, 1, b"abc".to_vec()),
                (1020, 9, 1, b"de".to_vec()),
                (1050, 9, 1, b"fg".to_vec()),
                (1080, 9, 1, b"hi".to_vec()),
            ]
        );
        // A type 3 right after a type 0 adds the type-0 field (as ffmpeg/librtmp do).
        wire = vec![0x04, 0, 0, 5, 0, 0, 1, 8, 1, 0, 0, 0, b'x', 0xC4, b'y'];
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &wire).unwrap();
        assert_eq!(got[1].timestamp, 10);
    }

    #[test]
    fn extended_timestamps_including_type_3_continuations() {
        let messages = vec![
            msg(4, 0x0100_0000, 9, 1, 300), // type 0 extended, 3 chunks
            msg(4, 0x0100_0010, 9, 1, 300), // type 2 small delta
            msg(4, 0x0200_0010, 9, 1, 300), // type 2 extended delta
            msg(4, 0xFFFF_FFF0, 9, 1, 10),  // type 2 extended delta
            msg(5, 0xFF_FFFF, 8, 1, 10),    // exactly the marker value
        ];
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        for m in &messages {
            enc.write(m.csid, m, &mut wire);
        }
        // First message: 1+11+4 header, then two type-3 chunks of 1 + 4 + data.
        assert_eq!(&wire[0..1], &[0x04]);
        assert_eq!(&wire[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(&wire[12..16], &0x0100_0000u32.to_be_bytes());
        let cont = 16 + 128;
        assert_eq!(wire[cont], 0xC4);
        assert_eq!(&wire[cont + 1..cont + 5], &0x0100_0000u32.to_be_bytes());
        let mut dec = ChunkDecoder::new(Limits::default());
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), messages);
        assert_eq!(byte_by_byte(&Limits::default(), &wire), (messages, None));
    }

    #[test]
    fn timestamps_wrap() {
        let wire = vec![
            0x04, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xF0, b'a', 0x84, 0,
            0, 0x20, b'b',
        ];
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &wire).unwrap();
        assert_eq!(got[0].timestamp, 0xFFFF_FFF0);
        assert_eq!(got[1].timestamp, 0x10);
    }

    #[test]
    fn interleaved_chunk_streams() {
        // Two 300-byte messages on csid 4 and 6, chunks alternating.
        let a = msg(4, 10, 8, 1, 300);
        let v = msg(6, 20, 9, 1, 300);
        let mut wa = BytesMut::new();
        let mut wv = BytesMut::new();
        ChunkEncoder::new().write(4, &a, &mut wa);
        ChunkEncoder::new().write(6, &v, &mut wv);
        // Each: 12-byte header + 128, then 1+128, then 1+44.
        let cuts = [0, 140, 269, 314];
        let mut wire = Vec::new();
        for w in cuts.windows(2) {
            wire.extend_from_slice(&wv[w[0]..w[1]]);
            wire.extend_from_slice(&wa[w[0]..w[1]]);
        }
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &wire).unwrap();
        assert_eq!(got, vec![v, a]);
    }

    #[test]
    fn chunk_size_changes_mid_stream() {
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        let before = msg(4, 0, 8, 1, 500);
        enc.write(4, &before, &mut wire);
        let scs = RawMessage {
            csid: 2,
            timestamp: 0,
            type_id: msg_type::SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 0, 0x10, 0]),
        };
        enc.write(2, &scs, &mut wire);
        enc.set_chunk_size(4096);
        let after = msg(4, 33, 8, 1, 5000);
        enc.write(4, &after, &mut wire);
        let expected = vec![before, with_csid(scs, 2), after];
        let mut dec = ChunkDecoder::new(Limits::default());
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), expected);
        assert_eq!(byte_by_byte(&Limits::default(), &wire), (expected, None));
    }

    #[test]
    fn chunk_size_change_while_a_message_is_half_done() {
        // csid 4 message of 200 bytes: first 128-byte chunk, then Set Chunk Size
        // to 50, then the remaining 72 bytes in chunks of 50 + 22.
        let m = msg(4, 0, 9, 1, 200);
        let mut wire = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&m.payload[..128]);
        wire.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 50]);
        wire.push(0xC4);
        wire.extend_from_slice(&m.payload[128..178]);
        wire.push(0xC4);
        wire.extend_from_slice(&m.payload[178..]);
        let (got, err) = at_once(&Limits::default(), &wire);
        assert_eq!(err, None);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], m);
    }

    #[test]
    fn set_chunk_size_validation() {
        let scs = |v: u32| {
            let mut w = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            w.extend_from_slice(&v.to_be_bytes());
            w
        };
        let limits = Limits::default();
        assert_eq!(
            at_once(&limits, &scs(0)).1,
            Some(RtmpError::InvalidChunkSize(0))
        );
        assert_eq!(
            at_once(&limits, &scs(0x8000_0100)).1,
            Some(RtmpError::InvalidChunkSize(0x8000_0100))
        );
        assert_eq!(
            at_once(&limits, &scs(65_537)).1,
            Some(RtmpError::ChunkSizeTooLarge {
                size: 65_537,
                max: 65_536
            })
        );
        assert_eq!(at_once(&limits, &scs(65_536)).1, None);
        assert_eq!(at_once(&limits, &scs(1)).1, None);
        let short = [0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            at_once(&limits, &short).1,
            Some(RtmpError::MalformedMessage("short Set Chunk Size"))
        );
        // After an error the decoder stays failed.
        let mut dec = ChunkDecoder::new(limits.clone());
        assert!(decode_all(&mut dec, &scs(0)).is_err());
        assert_eq!(dec.push(&[1]), Err(RtmpError::InvalidChunkSize(0)));
        assert_eq!(dec.next_message(), Err(RtmpError::InvalidChunkSize(0)));
    }

    #[test]
    fn abort_discards_the_partial_message() {
        let mut wire = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        // Abort csid 4.
        wire.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 4]);
        // A fresh type-0 message on csid 4 is fine now.
        wire.extend_from_slice(&[0x04, 0, 0, 7, 0, 0, 1, 8, 1, 0, 0, 0, b'z']);
        let (got, err) = at_once(&Limits::default(), &wire);
        assert_eq!(err, None);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].type_id, msg_type::ABORT);
        assert_eq!(got[1].payload, Bytes::from_static(b"z"));
        assert_eq!(got[1].timestamp, 7);
    }

    #[test]
    fn header_errors() {
        let limits = Limits::default();
        // Type 1/2/3 on a chunk stream never seen.
        for first in [0x44u8, 0x84, 0xC4] {
            assert_eq!(
                at_once(&limits, &[first, 0, 0, 0, 0, 0, 0, 0]).1,
                Some(RtmpError::BadChunkHeader(
                    "first chunk of a chunk stream is not type 0"
                ))
            );
        }
        // A type 0 header while the previous message on that stream is unfinished.
        let mut wire = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0]);
        assert!(matches!(
            at_once(&limits, &wire).1,
            Some(RtmpError::BadChunkHeader(_))
        ));
    }

    #[test]
    fn limit_message_size() {
        let limits = Limits {
            max_message_size: 1000,
            ..Limits::default()
        };
        let wire = [0x04, 0, 0, 0, 0, 0x03, 0xE9, 9, 1, 0, 0, 0];
        assert_eq!(
            at_once(&limits, &wire).1,
            Some(RtmpError::MessageTooLarge {
                size: 1001,
                max: 1000
            })
        );
        // Also via a type 1 header on a known stream.
        let mut wire = vec![0x04, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0];
        wire.extend_from_slice(&[0x44, 0, 0, 0, 0, 0x03, 0xE9, 9]);
        assert_eq!(
            at_once(&limits, &wire).1,
            Some(RtmpError::MessageTooLarge {
                size: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn limit_chunk_streams() {
        let limits = Limits {
            max_chunk_streams: 3,
            ..Limits::default()
        };
        let mut wire = Vec::new();
        for csid in 3..=6u8 {
            wire.extend_from_slice(&[csid, 0, 0, 0, 0, 0, 1, 8, 1, 0, 0, 0, 0]);
        }
        let (got, err) = at_once(&limits, &wire);
        assert_eq!(got.len(), 3);
        assert_eq!(err, Some(RtmpError::TooManyChunkStreams { max: 3 }));
    }

    #[test]
    fn limit_pending_bytes() {
        let limits = Limits {
            max_pending_bytes: 300,
            ..Limits::default()
        };
        // Three unfinished 1000-byte messages on different chunk streams: the
        // third first chunk would hold 384 > 300 bytes.
        let mut wire = Vec::new();
        for csid in 4..=6u8 {
            wire.extend_from_slice(&[csid, 0, 0, 0, 0, 0x03, 0xE8, 9, 1, 0, 0, 0]);
            wire.extend_from_slice(&[0u8; 128]);
        }
        let (got, err) = at_once(&limits, &wire);
        assert!(got.is_empty());
        assert_eq!(err, Some(RtmpError::PendingBytesExceeded { max: 300 }));
        // A completed message releases its bytes: many sequential 1000-byte
        // messages fit in a 1000-byte budget.
        let limits = Limits {
            max_pending_bytes: 1000,
            ..Limits::default()
        };
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        for i in 0..10 {
            enc.write(4, &msg(4, i, 9, 1, 1000), &mut wire);
        }
        let (got, err) = at_once(&limits, &wire);
        assert_eq!((got.len(), err), (10, None));
    }

    #[test]
    fn single_chunk_payloads_are_zero_copy() {
        let m = msg(4, 0, 9, 1, 100);
        let mut wire = BytesMut::new();
        ChunkEncoder::new().write(4, &m, &mut wire);
        let mut dec = ChunkDecoder::new(Limits::default());
        dec.push(&wire).unwrap();
        let base = dec.buf.as_ptr() as usize;
        let got = dec.next_message().unwrap().unwrap();
        assert_eq!(got.payload.as_ptr() as usize, base + 12);
    }

    #[test]
    fn truncated_input_byte_by_byte_matches_at_once() {
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        for i in 0..20u32 {
            let csid = 3 + i % 3;
            enc.write(
                csid,
                &msg(csid, i * 33, 8 + (i % 2) as u8, 1, (i * 37 % 400) as usize),
                &mut wire,
            );
        }
        let full = at_once(&Limits::default(), &wire);
        assert_eq!(full.0.len(), 20);
        for cut in [0, 1, 5, 13, 200, wire.len() / 2, wire.len() - 1, wire.len()] {
            let prefix = &wire[..cut];
            assert_eq!(
                at_once(&Limits::default(), prefix),
                byte_by_byte(&Limits::default(), prefix)
            );
        }
        // With an error in the middle, too.
        let mut bad = wire.to_vec();
        bad.extend_from_slice(&[0x7F, 0, 0, 0]);
        let limits = Limits {
            max_chunk_streams: 3,
            ..Limits::default()
        };
        let r = at_once(&limits, &bad);
        assert_eq!(r.0.len(), 20);
        assert!(r.1.is_some());
        assert_eq!(r, byte_by_byte(&limits, &bad));
    }

    #[test]
    fn encoder_clamps_and_drops() {
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(0);
        assert_eq!(enc.chunk_size(), 1);
        let mut out = BytesMut::new();
        let big = RawMessage {
            payload: Bytes::from(vec![0u8; MAX_LENGTH + 1]),
            ..msg(4, 0, 9, 1, 0)
        };
        enc.write(4, &big, &mut out);
        assert!(out.is_empty());
        enc.write(0, &msg(0, 0, 9, 1, 1), &mut out);
        assert_eq!(out[0] & 0x3F, 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut valid = BytesMut::new();
        let mut enc = ChunkEncoder::new();
        for i in 0..8u32 {
            enc.write(3 + i % 2, &msg(3, i * 10, 9, 1, 150), &mut valid);
        }
        let limits = Limits {
            max_message_size: 4096,
            max_pending_bytes: 8192,
            ..Limits::default()
        };
        let mut errors = 0;
        for round in 0..3_000 {
            let mut buf = if round % 2 == 0 {
                valid.to_vec()
            } else {
                (0..(next() % 300)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 5) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            let (messages, err) = at_once(&limits, &buf);
            if err.is_some() {
                errors += 1;
            }
            // Whatever decoded survives a round trip through the encoder (Set
            // Chunk Size and Abort change the decoder itself, so not those).
            let messages: Vec<_> = messages
                .into_iter()
                .filter(|m| m.type_id != msg_type::SET_CHUNK_SIZE && m.type_id != msg_type::ABORT)
                .collect();
            let mut wire = BytesMut::new();
            let mut enc = ChunkEncoder::new();
            for m in &messages {
                enc.write(m.csid, m, &mut wire);
            }
            assert_eq!(at_once(&limits, &wire), (messages, None));
        }
        assert!(errors > 0);
    }
}
