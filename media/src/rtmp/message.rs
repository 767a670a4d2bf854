//! RTMP message types and the message-level pieces both session ends share:
//! protocol control messages (spec 5.4), user control events (spec 6.2, 7.1.7),
//! AMF command / data payloads (spec 7.1.1, 7.1.2) and acknowledgement bookkeeping.

use bytes::{BufMut, Bytes, BytesMut};

use super::chunk::{ChunkEncoder, RawMessage};
use super::RtmpError;
use crate::amf0::{self, Amf0Value};

/// RTMP message type ids (spec 5.4 and 7.1).
pub mod msg_type {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (protocol control).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (protocol control).
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3 encoding.
    pub const DATA_AMF3: u8 = 15;
    /// Shared object message, AMF3 encoding.
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    /// Command message, AMF3 encoding.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 encoding (`@setDataFrame`, `onMetaData`).
    pub const DATA_AMF0: u8 = 18;
    /// Shared object message, AMF0 encoding.
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    /// Command message, AMF0 encoding.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message.
    pub const AGGREGATE: u8 = 22;
}

/// Chunk stream ids we send on. Any consistent choice works; these follow
/// what common encoders use so captures look familiar.
pub(crate) mod csid {
    /// Protocol control and user control messages (spec 5.4: csid 2).
    pub(crate) const CONTROL: u32 = 2;
    /// NetConnection commands (message stream 0).
    pub(crate) const COMMAND: u32 = 3;
    /// Audio.
    pub(crate) const AUDIO: u32 = 4;
    /// NetStream commands, status and data messages.
    pub(crate) const STREAM: u32 = 5;
    /// Video.
    pub(crate) const VIDEO: u32 = 6;
}

/// User control event types (spec 7.1.7).
pub(crate) mod user_control {
    pub(crate) const STREAM_BEGIN: u16 = 0;
    pub(crate) const PING_REQUEST: u16 = 6;
    pub(crate) const PING_RESPONSE: u16 = 7;
}

/// Set Peer Bandwidth limit type "dynamic" (spec 5.4.5).
pub(crate) const LIMIT_DYNAMIC: u8 = 2;

fn control(type_id: u8, payload: Bytes) -> RawMessage {
    RawMessage {
        csid: csid::CONTROL,
        timestamp: 0,
        type_id,
        stream_id: 0,
        payload,
    }
}

pub(crate) fn set_chunk_size(size: u32) -> RawMessage {
    control(
        msg_type::SET_CHUNK_SIZE,
        Bytes::copy_from_slice(&size.to_be_bytes()),
    )
}

pub(crate) fn acknowledgement(sequence: u32) -> RawMessage {
    control(
        msg_type::ACKNOWLEDGEMENT,
        Bytes::copy_from_slice(&sequence.to_be_bytes()),
    )
}

pub(crate) fn window_ack_size(size: u32) -> RawMessage {
    control(
        msg_type::WINDOW_ACK_SIZE,
        Bytes::copy_from_slice(&size.to_be_bytes()),
    )
}

pub(crate) fn set_peer_bandwidth(size: u32, limit_type: u8) -> RawMessage {
    let mut payload = BytesMut::with_capacity(5);
    payload.put_u32(size);
    payload.put_u8(limit_type);
    control(msg_type::SET_PEER_BANDWIDTH, payload.freeze())
}

pub(crate) fn user_control(event: u16, value: u32) -> RawMessage {
    let mut payload = BytesMut::with_capacity(6);
    payload.put_u16(event);
    payload.put_u32(value);
    control(msg_type::USER_CONTROL, payload.freeze())
}

/// An AMF0 command message on `csid` / `stream_id`.
pub(crate) fn command(csid: u32, stream_id: u32, values: &[Amf0Value]) -> RawMessage {
    RawMessage {
        csid,
        timestamp: 0,
        type_id: msg_type::COMMAND_AMF0,
        stream_id,
        payload: amf0::encode_all(values),
    }
}

/// Reads the big-endian u32 at the start of a control message payload.
pub(crate) fn payload_u32(payload: &[u8], what: &'static str) -> Result<u32, RtmpError> {
    let bytes = payload.get(..4).ok_or(RtmpError::MalformedMessage(what))?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// A user control event: type and its first 4-byte parameter (all the events
/// we act on have one).
pub(crate) fn parse_user_control(payload: &[u8]) -> Result<(u16, Option<u32>), RtmpError> {
    let event = payload
        .get(..2)
        .ok_or(RtmpError::MalformedMessage("short user control message"))?;
    let value = payload
        .get(2..6)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Ok((u16::from_be_bytes([event[0], event[1]]), value))
}

/// Largest command or data message we decode. Decoded AMF takes many times
/// its wire size (a one-byte null becomes a whole `Amf0Value`), so the general
/// message size limit is far too generous here; real commands and metadata
/// are a few KiB.
pub(crate) const MAX_AMF_MESSAGE: usize = 256 * 1024;

/// The AMF values of a command or data message. AMF3 variants (types 15, 17)
/// start with a format byte; in practice peers send 0 and AMF0 after it.
pub(crate) fn amf_values(msg: &RawMessage) -> Result<Vec<Amf0Value>, RtmpError> {
    if msg.payload.len() > MAX_AMF_MESSAGE {
        return Err(RtmpError::MessageTooLarge {
            size: u32::try_from(msg.payload.len()).unwrap_or(u32::MAX),
            max: MAX_AMF_MESSAGE as u32,
        });
    }
    let body = match msg.type_id {
        msg_type::COMMAND_AMF3 | msg_type::DATA_AMF3 => match msg.payload.split_first() {
            Some((0, rest)) => rest,
            Some(_) => return Err(RtmpError::MalformedMessage("AMF3 payload not in AMF0 form")),
            None => &[],
        },
        _ => &msg.payload[..],
    };
    Ok(amf0::decode_all(body)?)
}

/// A decoded command message (spec 7.1.1): name, transaction id, then the rest.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) name: String,
    pub(crate) transaction_id: f64,
    /// Command object (usually Null except for `connect`) and the arguments.
    pub(crate) args: Vec<Amf0Value>,
}

impl Command {
    pub(crate) fn parse(msg: &RawMessage) -> Result<Self, RtmpError> {
        let mut values = amf_values(msg)?.into_iter();
        let name = match values.next() {
            Some(Amf0Value::String(s)) => s,
            _ => return Err(RtmpError::MalformedMessage("command without a name")),
        };
        // Some clients omit the transaction id of notifications; 0 is what it would be.
        let transaction_id = match values.next() {
            Some(Amf0Value::Number(n)) => n,
            None => 0.0,
            Some(_) => return Err(RtmpError::MalformedMessage("command transaction id")),
        };
        Ok(Command {
            name,
            transaction_id,
            args: values.collect(),
        })
    }

    /// The command object (`args[0]`).
    pub(crate) fn object(&self) -> Option<&Amf0Value> {
        self.args.first()
    }

    /// Argument `i` after the command object, as a string.
    pub(crate) fn str_arg(&self, i: usize) -> Option<&str> {
        self.args.get(i + 1).and_then(Amf0Value::as_str)
    }

    /// Argument `i` after the command object, as a number.
    pub(crate) fn f64_arg(&self, i: usize) -> Option<f64> {
        self.args.get(i + 1).and_then(Amf0Value::as_f64)
    }
}

/// Acknowledgement bookkeeping for bytes we receive (spec 5.4.3, 5.4.4).
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Bytes received so far; the sequence number wraps like the wire field.
    received: u32,
    /// Bytes received since the last acknowledgement we sent.
    unacked: u64,
    /// The peer's Window Acknowledgement Size, once it has sent one.
    window: Option<u32>,
}

impl AckState {
    pub(crate) fn set_window(&mut self, size: u32) {
        self.window = (size > 0).then_some(size);
    }

    /// Counts `n` received bytes; returns an Acknowledgement if they crossed the window.
    pub(crate) fn received(&mut self, n: usize) -> Option<RawMessage> {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.received = self.received.wrapping_add(n32);
        self.unacked = self.unacked.saturating_add(n as u64);
        let window = self.window?;
        if self.unacked >= u64::from(window) {
            self.unacked = 0;
            return Some(acknowledgement(self.received));
        }
        None
    }
}

/// Outgoing side shared by both session ends: the encoder and the output buffer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) encoder: ChunkEncoder,
    pub(crate) out: BytesMut,
}

impl Outbox {
    pub(crate) fn send(&mut self, msg: &RawMessage) {
        self.encoder.write(msg.csid, msg, &mut self.out);
    }

    /// Tells the peer our new chunk size, then switches to it.
    pub(crate) fn set_chunk_size(&mut self, size: u32) {
        let size = size.clamp(1, 0x7FFF_FFFF);
        self.send(&set_chunk_size(size));
        self.encoder.set_chunk_size(size);
    }

    pub(crate) fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_message_payloads() {
        assert_eq!(&set_chunk_size(4096).payload[..], &[0, 0, 16, 0]);
        assert_eq!(
            &window_ack_size(2_500_000).payload[..],
            &2_500_000u32.to_be_bytes()
        );
        assert_eq!(
            &set_peer_bandwidth(2_500_000, LIMIT_DYNAMIC).payload[..],
            &[0, 0x26, 0x25, 0xA0, 2]
        );
        assert_eq!(
            &user_control(user_control::STREAM_BEGIN, 1).payload[..],
            &[0, 0, 0, 0, 0, 1]
        );
        assert_eq!(set_chunk_size(1).csid, 2);
        assert_eq!(set_chunk_size(1).stream_id, 0);
    }

    #[test]
    fn user_control_parsing() {
        assert_eq!(
            parse_user_control(&[0, 6, 0, 0, 1, 0]).unwrap(),
            (6, Some(256))
        );
        assert_eq!(parse_user_control(&[0, 6, 0]).unwrap(), (6, None));
        assert!(parse_user_control(&[0]).is_err());
    }

    #[test]
    fn command_parsing() {
        let msg = command(
            3,
            0,
            &[
                Amf0Value::string("createStream"),
                Amf0Value::Number(4.0),
                Amf0Value::Null,
                Amf0Value::string("x"),
            ],
        );
        let cmd = Command::parse(&msg).unwrap();
        assert_eq!(cmd.name, "createStream");
        assert_eq!(cmd.transaction_id, 4.0);
        assert_eq!(cmd.object(), Some(&Amf0Value::Null));
        assert_eq!(cmd.str_arg(0), Some("x"));
        assert_eq!(cmd.f64_arg(0), None);
        // AMF3 command with the leading format byte.
        let mut amf3 = msg.clone();
        amf3.type_id = msg_type::COMMAND_AMF3;
        let mut payload = vec![0u8];
        payload.extend_from_slice(&msg.payload);
        amf3.payload = payload.into();
        assert_eq!(Command::parse(&amf3).unwrap().name, "createStream");
        // No name.
        let bad = command(3, 0, &[Amf0Value::Number(1.0)]);
        assert!(Command::parse(&bad).is_err());
        // Too big to be worth decoding.
        let mut huge = msg;
        huge.payload = vec![5u8; MAX_AMF_MESSAGE + 1].into();
        assert_eq!(
            Command::parse(&huge).err(),
            Some(RtmpError::MessageTooLarge {
                size: MAX_AMF_MESSAGE as u32 + 1,
                max: MAX_AMF_MESSAGE as u32
            })
        );
    }

    #[test]
    fn acks_each_time_the_window_is_crossed() {
        let mut ack = AckState::default();
        assert!(ack.received(10_000).is_none(), "no window yet");
        ack.set_window(1000);
        // Bytes before the window was known count too (as ffmpeg counts them).
        assert!(ack.received(0).is_some());
        assert!(ack.received(999).is_none());
        let msg = ack.received(1).unwrap();
        assert_eq!(msg.type_id, msg_type::ACKNOWLEDGEMENT);
        assert_eq!(&msg.payload[..], &11_000u32.to_be_bytes());
        assert!(ack.received(500).is_none());
        assert!(ack.received(500).is_some());
    }
}
