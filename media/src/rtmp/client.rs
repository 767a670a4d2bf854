//! The client end of an RTMP connection, publish-only: what our own publisher
//! needs (tests, the hostile-client tests, the bench tool). It performs the
//! simple handshake, then connect → releaseStream / FCPublish / createStream →
//! publish, and sends metadata, audio and video on the created stream.

use std::collections::VecDeque;

use bytes::Bytes;

use super::chunk::{ChunkDecoder, RawMessage};
use super::handshake::ClientHandshake;
use super::message::{self, csid, msg_type, payload_u32, user_control, AckState, Command, Outbox};
use super::{Limits, RtmpError};
use crate::amf0::{self, Amf0Value};

// Transaction ids of the commands we send, to match `_result`s to them.
const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE_STREAM: f64 = 2.0;
const TXN_FC_PUBLISH: f64 = 3.0;
const TXN_CREATE_STREAM: f64 = 4.0;
const TXN_PUBLISH: f64 = 5.0;
const TXN_FC_UNPUBLISH: f64 = 6.0;
const TXN_DELETE_STREAM: f64 = 7.0;

/// What happened on a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server accepted `connect`.
    Connected,
    /// The server sent NetStream.Publish.Start: media may flow on `stream_id`.
    PublishStarted {
        /// The message stream we publish on.
        stream_id: u32,
    },
    /// Any other onStatus / `_error` the server sent.
    Status {
        /// `level` ("status", "warning", "error").
        level: String,
        /// `code`, e.g. "NetStream.Publish.BadName".
        code: String,
        /// `description`.
        description: String,
    },
    /// The server refused connect, createStream or publish; nothing more will
    /// happen on this connection and the caller should close it.
    Closed,
}

#[derive(Debug, Clone)]
struct Plan {
    app: String,
    tc_url: String,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Handshake, or done with no publish requested yet.
    Idle,
    Connecting,
    CreatingStream,
    Publishing {
        stream_id: u32,
    },
    Live {
        stream_id: u32,
    },
    Unpublished,
    Closed,
}

/// Sans-IO RTMP publishing client.
#[derive(Debug)]
pub struct ClientSession {
    handshake: ClientHandshake,
    decoder: ChunkDecoder,
    outbox: Outbox,
    ack: AckState,
    events: VecDeque<ClientEvent>,
    plan: Option<Plan>,
    phase: Phase,
    /// Chunk size asked for before the handshake finished.
    pending_chunk_size: Option<u32>,
    failed: Option<RtmpError>,
}

impl ClientSession {
    /// Starts a connection; C0 + C1 are ready in [`take_output`](Self::take_output).
    /// `random`: 1528 bytes for C1 (shorter is zero-padded); `epoch_ms` for its time field.
    pub fn new(limits: Limits, random: &[u8], epoch_ms: u32) -> Self {
        let mut outbox = Outbox::default();
        let handshake = ClientHandshake::new(random, epoch_ms, &mut outbox.out);
        ClientSession {
            handshake,
            decoder: ChunkDecoder::new(limits),
            outbox,
            ack: AckState::default(),
            events: VecDeque::new(),
            plan: None,
            phase: Phase::Idle,
            pending_chunk_size: None,
            failed: None,
        }
    }

    /// Feeds bytes read from the socket. After an error every call returns it again.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), RtmpError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.feed_inner(input);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<(), RtmpError> {
        self.process(input)?;
        // Counted after processing: the input may have set the window.
        if let Some(ack) = self.ack.received(input.len()) {
            self.outbox.send(&ack);
        }
        Ok(())
    }

    fn process(&mut self, input: &[u8]) -> Result<(), RtmpError> {
        let mut rest = input;
        if !self.handshake.is_done() {
            let used = self.handshake.feed(input, &mut self.outbox.out)?;
            rest = input.get(used..).unwrap_or_default();
            if !self.handshake.is_done() {
                return Ok(());
            }
            if let Some(size) = self.pending_chunk_size.take() {
                self.outbox.set_chunk_size(size);
            }
            self.send_connect();
        }
        self.decoder.push(rest)?;
        while let Some(msg) = self.decoder.next_message()? {
            self.handle(&msg)?;
        }
        Ok(())
    }

    /// Bytes to write to the socket.
    pub fn take_output(&mut self) -> Option<Bytes> {
        self.outbox.take()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether the handshake has completed.
    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// Queues connect(app, tcUrl) → releaseStream / FCPublish / createStream →
    /// publish(name, "live"); each step is sent when the previous one's reply
    /// arrives (connect as soon as the handshake is done). Only the first call
    /// has an effect.
    pub fn publish(&mut self, app: &str, tc_url: &str, name: &str) {
        if self.plan.is_some() {
            return;
        }
        self.plan = Some(Plan {
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            name: name.to_owned(),
        });
        if self.handshake.is_done() {
            self.send_connect();
        }
    }

    /// Sends `@setDataFrame` followed by `values` (usually `"onMetaData", {...}`).
    /// Ignored unless publishing has started.
    pub fn send_metadata(&mut self, values: &[Amf0Value]) {
        let Phase::Live { stream_id } = self.phase else {
            return;
        };
        let mut all = Vec::with_capacity(values.len() + 1);
        all.push(Amf0Value::string("@setDataFrame"));
        all.extend_from_slice(values);
        self.outbox.send(&RawMessage {
            csid: csid::STREAM,
            timestamp: 0,
            type_id: msg_type::DATA_AMF0,
            stream_id,
            payload: amf0::encode_all(&all),
        });
    }

    /// Sends an audio message (an FLV audio tag body) with an absolute
    /// timestamp in ms. Ignored unless publishing has started.
    pub fn send_audio(&mut self, timestamp: u32, payload: Bytes) {
        self.send_media(csid::AUDIO, msg_type::AUDIO, timestamp, payload);
    }

    /// Sends a video message (an FLV video tag body) with an absolute
    /// timestamp in ms. Ignored unless publishing has started.
    pub fn send_video(&mut self, timestamp: u32, payload: Bytes) {
        self.send_media(csid::VIDEO, msg_type::VIDEO, timestamp, payload);
    }

    /// Tells the server our new chunk size and switches to it (clamped to
    /// `1..=0x7FFF_FFFF`). Before the handshake is done, it is sent right
    /// after it.
    pub fn set_chunk_size(&mut self, size: u32) {
        if self.handshake.is_done() {
            self.outbox.set_chunk_size(size);
        } else {
            self.pending_chunk_size = Some(size);
        }
    }

    /// Stops publishing: FCUnpublish and deleteStream. Ignored unless
    /// publishing has started.
    pub fn unpublish(&mut self) {
        let Phase::Live { stream_id } = self.phase else {
            return;
        };
        let name = self
            .plan
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        self.send_command(
            0,
            "FCUnpublish",
            TXN_FC_UNPUBLISH,
            vec![Amf0Value::Null, Amf0Value::String(name)],
        );
        self.send_command(
            0,
            "deleteStream",
            TXN_DELETE_STREAM,
            vec![Amf0Value::Null, Amf0Value::Number(f64::from(stream_id))],
        );
        self.phase = Phase::Unpublished;
    }

    fn send_media(&mut self, csid: u32, type_id: u8, timestamp: u32, payload: Bytes) {
        let Phase::Live { stream_id } = self.phase else {
            return;
        };
        self.outbox.send(&RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        });
    }

    fn send_command(&mut self, stream_id: u32, name: &str, txn: f64, rest: Vec<Amf0Value>) {
        let mut values = vec![Amf0Value::string(name), Amf0Value::Number(txn)];
        values.extend(rest);
        let csid = if stream_id == 0 {
            csid::COMMAND
        } else {
            csid::STREAM
        };
        self.outbox
            .send(&message::command(csid, stream_id, &values));
    }

    fn send_connect(&mut self) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        if self.phase != Phase::Idle {
            return;
        }
        let object = Amf0Value::object([
            ("app", Amf0Value::String(plan.app)),
            ("type", Amf0Value::string("nonprivate")),
            (
                "flashVer",
                Amf0Value::string("FMLE/3.0 (compatible; ferrocast)"),
            ),
            ("tcUrl", Amf0Value::String(plan.tc_url)),
        ]);
        self.send_command(0, "connect", TXN_CONNECT, vec![object]);
        self.phase = Phase::Connecting;
    }

    fn handle(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            msg_type::WINDOW_ACK_SIZE => {
                let size = payload_u32(&msg.payload, "short Window Acknowledgement Size")?;
                self.ack.set_window(size);
            }
            msg_type::USER_CONTROL => {
                let (event, value) = message::parse_user_control(&msg.payload)?;
                if let (user_control::PING_REQUEST, Some(value)) = (event, value) {
                    self.outbox
                        .send(&message::user_control(user_control::PING_RESPONSE, value));
                }
            }
            msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => self.command(msg)?,
            // Everything else a publish-only client can ignore.
            _ => {}
        }
        Ok(())
    }

    fn command(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        let cmd = Command::parse(msg)?;
        match cmd.name.as_str() {
            "_result" => self.on_result(&cmd),
            "_error" => {
                self.push_status(cmd.args.get(1));
                if matches!(self.phase, Phase::Connecting | Phase::CreatingStream)
                    && (cmd.transaction_id == TXN_CONNECT
                        || cmd.transaction_id == TXN_CREATE_STREAM)
                {
                    self.close();
                }
            }
            "onStatus" => {
                let info = cmd.args.get(1);
                let code = info.and_then(|i| i.get("code")).and_then(Amf0Value::as_str);
                let level = info
                    .and_then(|i| i.get("level"))
                    .and_then(Amf0Value::as_str);
                match self.phase {
                    Phase::Publishing { stream_id } if code == Some("NetStream.Publish.Start") => {
                        self.phase = Phase::Live { stream_id };
                        self.events
                            .push_back(ClientEvent::PublishStarted { stream_id });
                    }
                    Phase::Publishing { .. } if level == Some("error") => {
                        self.push_status(info);
                        self.close();
                    }
                    _ => self.push_status(info),
                }
            }
            // onBWDone, onFCPublish, _checkbw...: nothing for a publisher to do.
            _ => {}
        }
        Ok(())
    }

    fn on_result(&mut self, cmd: &Command) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        if cmd.transaction_id == TXN_CONNECT && self.phase == Phase::Connecting {
            self.events.push_back(ClientEvent::Connected);
            let name = Amf0Value::String(plan.name);
            self.send_command(
                0,
                "releaseStream",
                TXN_RELEASE_STREAM,
                vec![Amf0Value::Null, name.clone()],
            );
            self.send_command(0, "FCPublish", TXN_FC_PUBLISH, vec![Amf0Value::Null, name]);
            self.send_command(0, "createStream", TXN_CREATE_STREAM, vec![Amf0Value::Null]);
            self.phase = Phase::CreatingStream;
        } else if cmd.transaction_id == TXN_CREATE_STREAM && self.phase == Phase::CreatingStream {
            let stream_id = cmd
                .f64_arg(0)
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= f64::from(u32::MAX))
                .map(|n| n as u32);
            let Some(stream_id) = stream_id else {
                self.events.push_back(ClientEvent::Status {
                    level: "error".into(),
                    code: "createStream".into(),
                    description: "createStream result without a usable stream id".into(),
                });
                self.close();
                return;
            };
            self.send_command(
                stream_id,
                "publish",
                TXN_PUBLISH,
                vec![
                    Amf0Value::Null,
                    Amf0Value::String(plan.name),
                    Amf0Value::string("live"),
                ],
            );
            self.phase = Phase::Publishing { stream_id };
        }
    }

    fn push_status(&mut self, info: Option<&Amf0Value>) {
        let field = |key: &str| {
            info.and_then(|i| i.get(key))
                .and_then(Amf0Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        self.events.push_back(ClientEvent::Status {
            level: field("level"),
            code: field("code"),
            description: field("description"),
        });
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.events.push_back(ClientEvent::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::handshake::BLOCK;
    use crate::rtmp::message::amf_values;
    use bytes::BytesMut;

    /// Plays a scripted server: simple handshake, then raw messages.
    struct ScriptedServer {
        client: ClientSession,
        dec: ChunkDecoder,
        enc: message::Outbox,
    }

    impl ScriptedServer {
        fn new() -> Self {
            let mut client = ClientSession::new(Limits::default(), &[7; 1528], 5);
            let c0c1 = client.take_output().unwrap();
            assert_eq!(c0c1.len(), 1 + BLOCK);
            assert_eq!(c0c1[0], 3);
            assert_eq!(&c0c1[1..5], &5u32.to_be_bytes());
            ScriptedServer {
                client,
                dec: ChunkDecoder::new(Limits::default()),
                enc: message::Outbox::default(),
            }
        }

        fn handshake(&mut self) {
            let mut s0s1s2 = vec![3u8];
            s0s1s2.extend_from_slice(&[1u8; BLOCK]);
            s0s1s2.extend_from_slice(&[2u8; BLOCK]);
            self.client.feed(&s0s1s2).unwrap();
            let out = self.client.take_output().unwrap_or_default();
            assert_eq!(&out[..BLOCK], &[1u8; BLOCK][..], "C2 echoes S1");
            self.dec.push(&out[BLOCK..]).unwrap();
        }

        fn commands(&mut self) -> Vec<(u32, Vec<Amf0Value>)> {
            while let Some(b) = self.client.take_output() {
                self.dec.push(&b).unwrap();
            }
            let mut got = Vec::new();
            while let Some(m) = self.dec.next_message().unwrap() {
                if m.type_id == msg_type::COMMAND_AMF0 {
                    got.push((m.stream_id, amf_values(&m).unwrap()));
                }
            }
            got
        }

        fn send(&mut self, stream_id: u32, values: &[Amf0Value]) -> Result<(), RtmpError> {
            self.enc.send(&message::command(3, stream_id, values));
            let b = self.enc.take().unwrap_or_default();
            self.client.feed(&b)
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.client.poll_event()).collect()
        }
    }

    fn names(cmds: &[(u32, Vec<Amf0Value>)]) -> Vec<String> {
        cmds.iter()
            .map(|(_, v)| v[0].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn status(level: &str, code: &str) -> Amf0Value {
        Amf0Value::object([
            ("level", Amf0Value::string(level)),
            ("code", Amf0Value::string(code)),
            ("description", Amf0Value::string("d")),
        ])
    }

    #[test]
    fn publish_flow_step_by_step() {
        let mut s = ScriptedServer::new();
        s.client.set_chunk_size(2000);
        s.client.publish("app", "rtmp://h/app", "key");
        // Nothing before the handshake ends.
        assert!(s.client.take_output().is_none());
        s.client.send_video(0, Bytes::from_static(b"x"));
        assert!(s.client.take_output().is_none());
        s.handshake();
        let cmds = s.commands();
        assert_eq!(names(&cmds), vec!["connect"]);
        assert_eq!(
            cmds[0].1[2].get("tcUrl").and_then(Amf0Value::as_str),
            Some("rtmp://h/app")
        );
        s.send(
            0,
            &[
                Amf0Value::string("_result"),
                Amf0Value::Number(1.0),
                Amf0Value::Null,
                status("status", "NetConnection.Connect.Success"),
            ],
        )
        .unwrap();
        assert_eq!(s.events(), vec![ClientEvent::Connected]);
        assert_eq!(
            names(&s.commands()),
            vec!["releaseStream", "FCPublish", "createStream"]
        );
        s.send(
            0,
            &[
                Amf0Value::string("_result"),
                Amf0Value::Number(4.0),
                Amf0Value::Null,
                Amf0Value::Number(7.0),
            ],
        )
        .unwrap();
        let cmds = s.commands();
        assert_eq!(names(&cmds), vec!["publish"]);
        assert_eq!(cmds[0].0, 7);
        assert_eq!(cmds[0].1[3].as_str(), Some("key"));
        assert_eq!(cmds[0].1[4].as_str(), Some("live"));
        s.send(
            7,
            &[
                Amf0Value::string("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                status("status", "NetStream.Publish.Start"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.events(),
            vec![ClientEvent::PublishStarted { stream_id: 7 }]
        );
        let big = Bytes::from(vec![9u8; 5000]);
        s.client.send_video(40, big.clone());
        let mut out = BytesMut::new();
        while let Some(b) = s.client.take_output() {
            out.extend_from_slice(&b);
        }
        // The chunk size asked for before the handshake applies (2000-byte chunks).
        s.dec.push(&out).unwrap();
        let m = s.dec.next_message().unwrap().unwrap();
        assert_eq!(
            (m.type_id, m.stream_id, m.timestamp),
            (msg_type::VIDEO, 7, 40)
        );
        assert_eq!(m.payload, big);
        assert_eq!(out.len(), 5000 + 12 + 2);
    }

    #[test]
    fn connect_error_closes() {
        let mut s = ScriptedServer::new();
        s.client.publish("app", "rtmp://h/app", "key");
        s.handshake();
        s.commands();
        s.send(
            0,
            &[
                Amf0Value::string("_error"),
                Amf0Value::Number(1.0),
                Amf0Value::Null,
                status("error", "NetConnection.Connect.Rejected"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.events(),
            vec![
                ClientEvent::Status {
                    level: "error".into(),
                    code: "NetConnection.Connect.Rejected".into(),
                    description: "d".into()
                },
                ClientEvent::Closed
            ]
        );
        assert!(s.commands().is_empty());
    }

    #[test]
    fn answers_pings_and_acknowledges() {
        let mut s = ScriptedServer::new();
        s.handshake();
        s.enc.send(&message::window_ack_size(100));
        s.enc
            .send(&message::user_control(user_control::PING_REQUEST, 42));
        let b = s.enc.take().unwrap();
        s.client.feed(&b).unwrap();
        while let Some(b) = s.client.take_output() {
            s.dec.push(&b).unwrap();
        }
        let mut types = Vec::new();
        while let Some(m) = s.dec.next_message().unwrap() {
            types.push(m.type_id);
            if m.type_id == msg_type::USER_CONTROL {
                assert_eq!(&m.payload[..], &[0, 7, 0, 0, 0, 42]);
            }
        }
        assert_eq!(
            types,
            vec![msg_type::USER_CONTROL, msg_type::ACKNOWLEDGEMENT]
        );
    }

    #[test]
    fn bad_server_version_is_an_error() {
        let mut c = ClientSession::new(Limits::default(), &[], 0);
        assert_eq!(c.feed(&[6]), Err(RtmpError::UnsupportedVersion(6)));
        assert_eq!(c.feed(&[3]), Err(RtmpError::UnsupportedVersion(6)));
    }
}
