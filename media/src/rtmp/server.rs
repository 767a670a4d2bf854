//! The server end of an RTMP connection: handshake, connection setup and the
//! publish / play command flow (spec 7.2), turned into [`ServerEvent`]s.
//!
//! The session answers what needs no policy (connect, createStream, pings,
//! acknowledgements) by itself and leaves decisions (may this key publish?) to
//! the caller through events and [`ServerSession::accept_publish`] /
//! [`ServerSession::reject_publish`].

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::chunk::{ChunkDecoder, RawMessage};
use super::handshake::ServerHandshake;
use super::message::{
    self, amf_values, csid, msg_type, payload_u32, user_control, AckState, Command, Outbox,
};
use super::{Limits, RtmpError, MAX_NAME_LEN, MAX_QUERY_LEN, MAX_TC_URL_LEN};
use crate::amf0::Amf0Value;

/// Window Acknowledgement Size and peer bandwidth we announce on connect.
const WINDOW: u32 = 2_500_000;
/// Chunk size we switch our output to on connect: fewer headers for video.
const OUT_CHUNK_SIZE: u32 = 4096;
/// Message streams one connection may create; a publisher needs one.
const MAX_STREAMS: u32 = 16;

/// Something the application must know about or decide on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The client connected to `app`; the session has already replied `_result`
    /// (NetConnection.Connect.Success).
    Connect {
        /// Application name from the connect command object.
        app: String,
        /// `tcUrl` from the connect command object, if sent.
        tc_url: Option<String>,
    },
    /// The client wants to publish; answer with `accept_publish` or `reject_publish`.
    Publish {
        /// Message stream the client publishes on.
        stream_id: u32,
        /// Application name from connect.
        app: String,
        /// Stream name as sent; may include a `?query`.
        name: String,
        /// Publishing type (`live`, `record`, `append`); `live` if not sent.
        kind: String,
    },
    /// The client wants to play `name`.
    Play {
        /// Message stream the client plays on.
        stream_id: u32,
        /// Stream name as sent.
        name: String,
    },
    /// The client stopped publishing (FCUnpublish, deleteStream or closeStream).
    /// Sent once per publish, whether or not it had been accepted.
    Unpublish {
        /// Message stream that was publishing.
        stream_id: u32,
    },
    /// An audio message (an FLV audio tag body).
    Audio {
        /// Message stream it arrived on.
        stream_id: u32,
        /// Absolute timestamp in milliseconds (wraps at 2^32).
        timestamp: u32,
        /// The message body.
        payload: Bytes,
    },
    /// A video message (an FLV video tag body).
    Video {
        /// Message stream it arrived on.
        stream_id: u32,
        /// Absolute timestamp in milliseconds (wraps at 2^32).
        timestamp: u32,
        /// The message body.
        payload: Bytes,
    },
    /// `@setDataFrame` / `onMetaData`, with `@setDataFrame` stripped (so usually
    /// `["onMetaData", {...}]`).
    Metadata {
        /// Message stream it arrived on.
        stream_id: u32,
        /// The AMF values.
        values: Vec<Amf0Value>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum StreamState {
    Idle,
    PublishPending { name: String },
    Publishing { name: String },
    PlayPending,
}

/// Sans-IO RTMP server connection.
#[derive(Debug)]
pub struct ServerSession {
    handshake: ServerHandshake,
    decoder: ChunkDecoder,
    outbox: Outbox,
    ack: AckState,
    events: VecDeque<ServerEvent>,
    /// Set by connect; commands before it are refused.
    app: Option<String>,
    streams: BTreeMap<u32, StreamState>,
    next_stream_id: u32,
    failed: Option<RtmpError>,
}

impl ServerSession {
    /// `random`: 1528 bytes of randomness for S1 (shorter is zero-padded) and
    /// `epoch_ms` for S1's time field.
    pub fn new(limits: Limits, random: &[u8], epoch_ms: u32) -> Self {
        ServerSession {
            handshake: ServerHandshake::new(random, epoch_ms),
            decoder: ChunkDecoder::new(limits),
            outbox: Outbox::default(),
            ack: AckState::default(),
            events: VecDeque::new(),
            app: None,
            streams: BTreeMap::new(),
            next_stream_id: 1,
            failed: None,
        }
    }

    /// Feeds bytes read from the socket. Parses as much as possible; events and
    /// output queue up. After an error every call returns it again.
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
        }
        self.decoder.push(rest)?;
        while let Some(msg) = self.decoder.next_message()? {
            self.handle(msg)?;
        }
        Ok(())
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the socket (handshake replies, acks, command results, pings...).
    pub fn take_output(&mut self) -> Option<Bytes> {
        self.outbox.take()
    }

    /// Whether the handshake has completed.
    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// Accepts a pending publish: StreamBegin and onStatus NetStream.Publish.Start.
    /// Does nothing unless `stream_id` has a publish awaiting a decision.
    pub fn accept_publish(&mut self, stream_id: u32) {
        let Some(state) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let StreamState::PublishPending { name } = state else {
            return;
        };
        let name = std::mem::take(name);
        let description = format!("{name} is now published.");
        *state = StreamState::Publishing { name };
        self.outbox.send(&message::user_control(
            user_control::STREAM_BEGIN,
            stream_id,
        ));
        self.send_status(stream_id, "status", "NetStream.Publish.Start", &description);
    }

    /// Refuses a pending publish with an error onStatus carrying `code` (e.g.
    /// "NetStream.Publish.BadName"). Does nothing unless a publish is pending.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        if let Some(state) = self.streams.get_mut(&stream_id) {
            if matches!(state, StreamState::PublishPending { .. }) {
                *state = StreamState::Idle;
                self.send_status(stream_id, "error", code, description);
            }
        }
    }

    /// Refuses a pending play with onStatus NetStream.Play.Failed.
    pub fn reject_play(&mut self, stream_id: u32, description: &str) {
        if let Some(state) = self.streams.get_mut(&stream_id) {
            if *state == StreamState::PlayPending {
                *state = StreamState::Idle;
                self.send_status(stream_id, "error", "NetStream.Play.Failed", description);
            }
        }
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = Amf0Value::object([
            ("level", Amf0Value::string(level)),
            ("code", Amf0Value::string(code)),
            ("description", Amf0Value::string(description)),
        ]);
        self.outbox.send(&message::command(
            csid::STREAM,
            stream_id,
            &[
                Amf0Value::string("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                info,
            ],
        ));
    }

    fn reply(&mut self, name: &str, transaction_id: f64, rest: Vec<Amf0Value>) {
        let mut values = vec![Amf0Value::string(name), Amf0Value::Number(transaction_id)];
        values.extend(rest);
        self.outbox
            .send(&message::command(csid::COMMAND, 0, &values));
    }

    fn handle(&mut self, msg: RawMessage) -> Result<(), RtmpError> {
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
            msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => self.command(&msg)?,
            msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => self.data(&msg)?,
            msg_type::AUDIO | msg_type::VIDEO => self.media(msg)?,
            msg_type::AGGREGATE => self.aggregate(&msg)?,
            // Set Chunk Size and Abort were applied by the decoder; Acknowledgement
            // and Set Peer Bandwidth need nothing from a server that does not
            // throttle; shared objects are not supported and safely ignored.
            _ => {}
        }
        Ok(())
    }

    fn media(&mut self, msg: RawMessage) -> Result<(), RtmpError> {
        if !matches!(
            self.streams.get(&msg.stream_id),
            Some(StreamState::Publishing { .. })
        ) {
            return Err(RtmpError::UnexpectedMessage(
                "audio/video on a stream without an accepted publish",
            ));
        }
        let RawMessage {
            timestamp,
            stream_id,
            payload,
            ..
        } = msg;
        self.events.push_back(if msg.type_id == msg_type::AUDIO {
            ServerEvent::Audio {
                stream_id,
                timestamp,
                payload,
            }
        } else {
            ServerEvent::Video {
                stream_id,
                timestamp,
                payload,
            }
        });
        Ok(())
    }

    fn data(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        let mut values = amf_values(msg)?;
        match values.first().and_then(Amf0Value::as_str) {
            Some("@setDataFrame") => {
                values.remove(0);
            }
            Some("onMetaData") => {}
            // Other data messages (onTextData, onCuePoint, ...) are not ours to use.
            _ => return Ok(()),
        }
        // Metadata only means something for an accepted publish; before that
        // (a client not waiting for Publish.Start) it is dropped, not fatal.
        if matches!(
            self.streams.get(&msg.stream_id),
            Some(StreamState::Publishing { .. })
        ) {
            self.events.push_back(ServerEvent::Metadata {
                stream_id: msg.stream_id,
                values,
            });
        }
        Ok(())
    }

    /// Aggregate messages (spec 7.1.6) carry FLV-tag-shaped sub-messages whose
    /// timestamps are relative to the first one.
    fn aggregate(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        const TAG_HEADER: usize = 11;
        const BACK_POINTER: usize = 4;
        let malformed = RtmpError::MalformedMessage("aggregate sub-message");
        let mut pos = 0;
        let mut first_ts = None;
        while pos < msg.payload.len() {
            let header = msg
                .payload
                .get(pos..pos + TAG_HEADER)
                .ok_or_else(|| malformed.clone())?;
            let type_id = header[0];
            let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            let ts = u32::from_be_bytes([header[7], header[4], header[5], header[6]]);
            let body_start = pos + TAG_HEADER;
            let body_end = body_start + size;
            if msg.payload.len() < body_end + BACK_POINTER {
                return Err(malformed);
            }
            let first = *first_ts.get_or_insert(ts);
            let sub = RawMessage {
                csid: msg.csid,
                timestamp: msg.timestamp.wrapping_add(ts.wrapping_sub(first)),
                type_id,
                stream_id: msg.stream_id,
                payload: msg.payload.slice(body_start..body_end),
            };
            match type_id {
                msg_type::AUDIO | msg_type::VIDEO => self.media(sub)?,
                msg_type::DATA_AMF0 => self.data(&sub)?,
                _ => {}
            }
            pos = body_end + BACK_POINTER;
        }
        Ok(())
    }

    fn command(&mut self, msg: &RawMessage) -> Result<(), RtmpError> {
        let cmd = Command::parse(msg)?;
        if cmd.name == "connect" {
            return self.connect(&cmd);
        }
        let Some(app) = self.app.clone() else {
            return Err(RtmpError::UnexpectedMessage("command before connect"));
        };
        match cmd.name.as_str() {
            "releaseStream" | "FCPublish" => {
                self.reply(
                    "_result",
                    cmd.transaction_id,
                    vec![Amf0Value::Null, Amf0Value::Undefined],
                );
            }
            "createStream" => {
                if self.next_stream_id > MAX_STREAMS {
                    return Err(RtmpError::TooManyStreams { max: MAX_STREAMS });
                }
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.streams.insert(id, StreamState::Idle);
                self.reply(
                    "_result",
                    cmd.transaction_id,
                    vec![Amf0Value::Null, Amf0Value::Number(f64::from(id))],
                );
            }
            "publish" => {
                let name = cmd
                    .str_arg(0)
                    .ok_or(RtmpError::MalformedMessage("publish without a stream name"))?;
                if let Err(e) = check_name("stream name", "publish query", name) {
                    // Told why (never echoing the name), then the connection ends.
                    self.send_status(
                        msg.stream_id,
                        "error",
                        "NetStream.Publish.BadName",
                        &e.to_string(),
                    );
                    return Err(e);
                }
                let name = name.to_owned();
                let kind = cmd.str_arg(1).unwrap_or("live").to_owned();
                self.start(
                    msg.stream_id,
                    StreamState::PublishPending { name: name.clone() },
                )?;
                self.events.push_back(ServerEvent::Publish {
                    stream_id: msg.stream_id,
                    app,
                    name,
                    kind,
                });
            }
            "play" => {
                let name = cmd
                    .str_arg(0)
                    .ok_or(RtmpError::MalformedMessage("play without a stream name"))?
                    .to_owned();
                self.start(msg.stream_id, StreamState::PlayPending)?;
                self.events.push_back(ServerEvent::Play {
                    stream_id: msg.stream_id,
                    name,
                });
            }
            "FCUnpublish" => {
                let Some(name) = cmd.str_arg(0) else {
                    return Ok(());
                };
                let found = self.streams.iter().find_map(|(&id, state)| match state {
                    StreamState::PublishPending { name: n }
                    | StreamState::Publishing { name: n }
                        if strip_query(n) == strip_query(name) =>
                    {
                        Some(id)
                    }
                    _ => None,
                });
                if let Some(id) = found {
                    self.stop(id);
                }
            }
            "deleteStream" => {
                if let Some(id) = cmd.f64_arg(0).and_then(stream_id_from_f64) {
                    self.stop(id);
                    self.streams.remove(&id);
                }
            }
            "closeStream" => self.stop(msg.stream_id),
            // Anything else (getStreamLength, _checkbw, a client's own _result...)
            // needs no answer from a publish-only server; ignoring keeps old
            // clients working.
            _ => {}
        }
        Ok(())
    }

    fn connect(&mut self, cmd: &Command) -> Result<(), RtmpError> {
        if self.app.is_some() {
            return Err(RtmpError::UnexpectedMessage("second connect"));
        }
        let object = cmd.object();
        let field = |key: &str| object.and_then(|o| o.get(key));
        let app = field("app")
            .and_then(Amf0Value::as_str)
            .ok_or(RtmpError::MalformedMessage("connect without app"))?;
        let tc_url = field("tcUrl").and_then(Amf0Value::as_str);
        // The app may carry the credential (`live?key=…`); both are capped before anyone
        // reads them, and the client is told why it is refused.
        let tc_url_capped = match tc_url {
            Some(u) if u.len() > MAX_TC_URL_LEN => Err(RtmpError::TooLong {
                what: "tcUrl",
                len: u.len(),
                max: MAX_TC_URL_LEN,
            }),
            _ => Ok(()),
        };
        let capped = check_name("app", "app query", app).and(tc_url_capped);
        if let Err(e) = capped {
            let information = Amf0Value::object([
                ("level", Amf0Value::string("error")),
                ("code", Amf0Value::string("NetConnection.Connect.Rejected")),
                ("description", Amf0Value::string(e.to_string())),
            ]);
            self.reply(
                "_error",
                cmd.transaction_id,
                vec![Amf0Value::Null, information],
            );
            return Err(e);
        }
        let app = app.to_owned();
        let tc_url = tc_url.map(str::to_owned);
        let object_encoding = field("objectEncoding")
            .and_then(Amf0Value::as_f64)
            .unwrap_or(0.0);

        self.outbox.send(&message::window_ack_size(WINDOW));
        self.outbox
            .send(&message::set_peer_bandwidth(WINDOW, message::LIMIT_DYNAMIC));
        self.outbox.set_chunk_size(OUT_CHUNK_SIZE);
        let properties = Amf0Value::object([
            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
            ("capabilities", Amf0Value::Number(31.0)),
        ]);
        let information = Amf0Value::object([
            ("level", Amf0Value::string("status")),
            ("code", Amf0Value::string("NetConnection.Connect.Success")),
            ("description", Amf0Value::string("Connection succeeded.")),
            ("objectEncoding", Amf0Value::Number(object_encoding)),
        ]);
        self.reply("_result", cmd.transaction_id, vec![properties, information]);
        self.app = Some(app.clone());
        self.events.push_back(ServerEvent::Connect { app, tc_url });
        Ok(())
    }

    /// Moves an idle, created stream into `next`.
    fn start(&mut self, stream_id: u32, next: StreamState) -> Result<(), RtmpError> {
        match self.streams.get_mut(&stream_id) {
            Some(state) if *state == StreamState::Idle => {
                *state = next;
                Ok(())
            }
            Some(_) => Err(RtmpError::UnexpectedMessage(
                "publish/play on a stream that is already in use",
            )),
            None => Err(RtmpError::UnexpectedMessage(
                "publish/play on a stream that was not created",
            )),
        }
    }

    /// Ends whatever `stream_id` was doing; a publish ending is reported once.
    fn stop(&mut self, stream_id: u32) {
        if let Some(state) = self.streams.get_mut(&stream_id) {
            let was = std::mem::replace(state, StreamState::Idle);
            if matches!(
                was,
                StreamState::PublishPending { .. } | StreamState::Publishing { .. }
            ) {
                self.events.push_back(ServerEvent::Unpublish { stream_id });
            }
        }
    }
}

/// Checks a name as sent (`NAME` or `NAME?QUERY`) against [`MAX_NAME_LEN`] and
/// [`MAX_QUERY_LEN`]; `what` and `query` name the two parts in the error.
fn check_name(what: &'static str, query: &'static str, sent: &str) -> Result<(), RtmpError> {
    let (name, q) = sent.split_once('?').unwrap_or((sent, ""));
    if name.len() > MAX_NAME_LEN {
        return Err(RtmpError::TooLong {
            what,
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if q.len() > MAX_QUERY_LEN {
        return Err(RtmpError::TooLong {
            what: query,
            len: q.len(),
            max: MAX_QUERY_LEN,
        });
    }
    Ok(())
}

fn strip_query(name: &str) -> &str {
    name.split('?').next().unwrap_or(name)
}

fn stream_id_from_f64(n: f64) -> Option<u32> {
    (n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n)).then_some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::super::handshake::{client_digest_c1, DigestScheme, BLOCK};
    use super::super::{ChunkEncoder, ClientEvent, ClientSession};
    use super::*;
    use bytes::BytesMut;

    fn random(seed: u8) -> Vec<u8> {
        (0..1528u32).map(|i| (i as u8) ^ seed).collect()
    }

    fn server() -> ServerSession {
        ServerSession::new(Limits::default(), &random(1), 1000)
    }

    fn client() -> ClientSession {
        ClientSession::new(Limits::default(), &random(2), 2000)
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(c: &mut ClientSession, s: &mut ServerSession) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(b) = c.take_output() {
                s.feed(&b).unwrap();
                moved = true;
            }
            while let Some(b) = s.take_output() {
                c.feed(&b).unwrap();
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    fn server_events(s: &mut ServerSession) -> Vec<ServerEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn client_events(c: &mut ClientSession) -> Vec<ClientEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// Client and server connected, stream 1 publishing "key?token=1".
    fn publishing() -> (ClientSession, ServerSession) {
        let mut c = client();
        let mut s = server();
        c.publish("live", "rtmp://localhost/live", "key?token=1");
        pump(&mut c, &mut s);
        assert!(s.handshake_done());
        assert_eq!(
            server_events(&mut s),
            vec![
                ServerEvent::Connect {
                    app: "live".into(),
                    tc_url: Some("rtmp://localhost/live".into()),
                },
                ServerEvent::Publish {
                    stream_id: 1,
                    app: "live".into(),
                    name: "key?token=1".into(),
                    kind: "live".into(),
                },
            ]
        );
        assert_eq!(client_events(&mut c), vec![ClientEvent::Connected]);
        s.accept_publish(1);
        pump(&mut c, &mut s);
        assert_eq!(
            client_events(&mut c),
            vec![ClientEvent::PublishStarted { stream_id: 1 }]
        );
        (c, s)
    }

    #[test]
    fn full_publish_session() {
        let (mut c, mut s) = publishing();
        let meta = vec![
            Amf0Value::string("onMetaData"),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
        ];
        c.send_metadata(&meta);
        c.set_chunk_size(1000);
        let big: Bytes = (0..10_000u32).map(|i| i as u8).collect();
        c.send_video(0, Bytes::from_static(b"\x17\x00seqhdr"));
        c.send_audio(0, Bytes::from_static(b"\xaf\x00"));
        c.send_video(33, big.clone());
        c.send_audio(23, Bytes::from_static(b"\xaf\x01a"));
        c.send_video(66, Bytes::from_static(b"\x27\x01b"));
        c.send_audio(46, Bytes::from_static(b"\xaf\x01c"));
        c.send_video(0x0100_0000, Bytes::from_static(b"\x27\x01late"));
        pump(&mut c, &mut s);
        let video = |timestamp, payload: Bytes| ServerEvent::Video {
            stream_id: 1,
            timestamp,
            payload,
        };
        let audio = |timestamp, payload: &'static [u8]| ServerEvent::Audio {
            stream_id: 1,
            timestamp,
            payload: Bytes::from_static(payload),
        };
        assert_eq!(
            server_events(&mut s),
            vec![
                ServerEvent::Metadata {
                    stream_id: 1,
                    values: meta
                },
                video(0, Bytes::from_static(b"\x17\x00seqhdr")),
                audio(0, b"\xaf\x00"),
                video(33, big),
                audio(23, b"\xaf\x01a"),
                video(66, Bytes::from_static(b"\x27\x01b")),
                audio(46, b"\xaf\x01c"),
                video(0x0100_0000, Bytes::from_static(b"\x27\x01late")),
            ]
        );
        // Unpublish is reported once, however the client says it.
        c.unpublish();
        pump(&mut c, &mut s);
        assert_eq!(
            server_events(&mut s),
            vec![ServerEvent::Unpublish { stream_id: 1 }]
        );
    }

    #[test]
    fn rejected_publish() {
        let mut c = client();
        let mut s = server();
        c.publish("live", "rtmp://localhost/live", "taken");
        pump(&mut c, &mut s);
        assert_eq!(server_events(&mut s).len(), 2);
        s.reject_publish(1, "NetStream.Publish.BadName", "already publishing");
        pump(&mut c, &mut s);
        assert_eq!(
            client_events(&mut c),
            vec![
                ClientEvent::Connected,
                ClientEvent::Status {
                    level: "error".into(),
                    code: "NetStream.Publish.BadName".into(),
                    description: "already publishing".into(),
                },
                ClientEvent::Closed,
            ]
        );
        // Accepting after rejecting does nothing.
        s.accept_publish(1);
        assert!(s.take_output().is_none());
    }

    /// A hand-driven client: simple handshake, then raw messages.
    struct RawPeer {
        server: ServerSession,
        enc: ChunkEncoder,
        dec: ChunkDecoder,
    }

    impl RawPeer {
        fn new() -> Self {
            let mut server = server();
            let mut c0c1 = vec![3u8];
            c0c1.extend_from_slice(&[0u8; BLOCK]);
            server.feed(&c0c1).unwrap();
            let s0s1s2 = server.take_output().unwrap();
            assert_eq!(s0s1s2.len(), 1 + 2 * BLOCK);
            server.feed(&[0u8; BLOCK]).unwrap();
            assert!(server.handshake_done());
            RawPeer {
                server,
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::new(Limits::default()),
            }
        }

        fn send(&mut self, msg: RawMessage) -> Result<(), RtmpError> {
            let mut out = BytesMut::new();
            self.enc.write(msg.csid, &msg, &mut out);
            self.server.feed(&out)
        }

        fn command(&mut self, stream_id: u32, values: &[Amf0Value]) -> Result<(), RtmpError> {
            self.send(message::command(
                if stream_id == 0 { 3 } else { 8 },
                stream_id,
                values,
            ))
        }

        fn connect(&mut self) {
            self.command(
                0,
                &[
                    Amf0Value::string("connect"),
                    Amf0Value::Number(1.0),
                    Amf0Value::object([("app", Amf0Value::string("live"))]),
                ],
            )
            .unwrap();
        }

        fn create_stream(&mut self) {
            self.command(
                0,
                &[
                    Amf0Value::string("createStream"),
                    Amf0Value::Number(2.0),
                    Amf0Value::Null,
                ],
            )
            .unwrap();
        }

        fn publish(&mut self, stream_id: u32, name: &str) -> Result<(), RtmpError> {
            self.command(
                stream_id,
                &[
                    Amf0Value::string("publish"),
                    Amf0Value::Number(0.0),
                    Amf0Value::Null,
                    Amf0Value::string(name),
                ],
            )
        }

        /// Every message the server sent since last asked.
        fn received(&mut self) -> Vec<RawMessage> {
            let mut got = Vec::new();
            while let Some(bytes) = self.server.take_output() {
                self.dec.push(&bytes).unwrap();
            }
            while let Some(m) = self.dec.next_message().unwrap() {
                got.push(m);
            }
            got
        }

        fn commands(&mut self) -> Vec<Vec<Amf0Value>> {
            self.received()
                .iter()
                .filter(|m| m.type_id == msg_type::COMMAND_AMF0)
                .map(|m| amf_values(m).unwrap())
                .collect()
        }
    }

    fn media(type_id: u8, stream_id: u32) -> RawMessage {
        RawMessage {
            csid: 7,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from_static(b"\x17\x01"),
        }
    }

    /// The `onStatus` / `_error` information object of the last command sent.
    fn last_info(p: &mut RawPeer) -> Amf0Value {
        let cmds = p.commands();
        let last = cmds.last().expect("an answer");
        last.get(3).cloned().expect("an information object")
    }

    #[test]
    fn the_name_cap_is_the_stream_key_rule() {
        use crate::hls::names::valid_stream_key;
        assert!(valid_stream_key(&"x".repeat(MAX_NAME_LEN)));
        assert!(!valid_stream_key(&"x".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn publish_names_and_queries_over_their_caps_are_refused_with_a_reason() {
        let long_name = "n".repeat(MAX_NAME_LEN + 1);
        let long_query = format!("cam?key={}", "q".repeat(MAX_QUERY_LEN));
        for (name, what) in [
            (long_name.as_str(), "stream name"),
            (long_query.as_str(), "publish query"),
        ] {
            let mut p = RawPeer::new();
            p.connect();
            p.create_stream();
            p.received();
            server_events(&mut p.server);
            let err = p.publish(1, name).unwrap_err();
            assert!(
                matches!(err, RtmpError::TooLong { what: w, .. } if w == what),
                "{err:?}"
            );
            let info = last_info(&mut p);
            assert_eq!(
                info.get("code").and_then(Amf0Value::as_str),
                Some("NetStream.Publish.BadName")
            );
            let why = info.get("description").and_then(Amf0Value::as_str).unwrap();
            assert!(
                why.starts_with(what) && why.contains("longer than the limit"),
                "{why}"
            );
            assert!(
                !why.contains("nnnn") && !why.contains("qqqq"),
                "never echoed: {why}"
            );
            assert_eq!(server_events(&mut p.server), vec![], "nothing passed on");
            // The session is over.
            assert!(p.publish(1, "cam").is_err());
        }
        // At the caps exactly, the publish goes through.
        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        let at_cap = format!("{}?{}", "n".repeat(MAX_NAME_LEN), "q".repeat(MAX_QUERY_LEN));
        p.publish(1, &at_cap).unwrap();
        assert!(server_events(&mut p.server)
            .iter()
            .any(|e| matches!(e, ServerEvent::Publish { name, .. } if *name == at_cap)));
    }

    #[test]
    fn connect_apps_and_urls_over_their_caps_are_refused_with_a_reason() {
        let connect = |p: &mut RawPeer, app: &str, tc_url: &str| {
            p.command(
                0,
                &[
                    Amf0Value::string("connect"),
                    Amf0Value::Number(1.0),
                    Amf0Value::object([
                        ("app", Amf0Value::string(app)),
                        ("tcUrl", Amf0Value::string(tc_url)),
                    ]),
                ],
            )
        };
        let long_app = "a".repeat(MAX_NAME_LEN + 1);
        let long_query = format!("live?key={}", "k".repeat(MAX_QUERY_LEN));
        let long_url = format!("rtmp://h/{}", "u".repeat(MAX_TC_URL_LEN));
        for (app, url, what) in [
            (long_app.as_str(), "rtmp://h/x", "app"),
            (long_query.as_str(), "rtmp://h/live", "app query"),
            ("live", long_url.as_str(), "tcUrl"),
        ] {
            let mut p = RawPeer::new();
            let err = connect(&mut p, app, url).unwrap_err();
            assert!(
                matches!(err, RtmpError::TooLong { what: w, .. } if w == what),
                "{err:?}"
            );
            let cmds = p.commands();
            let reply = cmds.last().expect("an answer");
            assert_eq!(reply[0].as_str(), Some("_error"));
            assert_eq!(
                reply[3].get("code").and_then(Amf0Value::as_str),
                Some("NetConnection.Connect.Rejected")
            );
            let why = reply[3]
                .get("description")
                .and_then(Amf0Value::as_str)
                .unwrap();
            assert!(why.starts_with(what), "{why}");
            assert_eq!(server_events(&mut p.server), vec![]);
        }
        let mut p = RawPeer::new();
        let url = format!("rtmp://h/{}", "u".repeat(MAX_TC_URL_LEN - 9));
        connect(&mut p, &format!("live?{}", "k".repeat(MAX_QUERY_LEN)), &url).unwrap();
        assert_eq!(server_events(&mut p.server).len(), 1);
    }

    #[test]
    fn connect_reply_shape() {
        let mut p = RawPeer::new();
        p.connect();
        let got = p.received();
        let types: Vec<u8> = got.iter().map(|m| m.type_id).collect();
        assert_eq!(
            types,
            vec![
                msg_type::WINDOW_ACK_SIZE,
                msg_type::SET_PEER_BANDWIDTH,
                msg_type::SET_CHUNK_SIZE,
                msg_type::COMMAND_AMF0
            ]
        );
        assert_eq!(&got[0].payload[..], &2_500_000u32.to_be_bytes());
        assert_eq!(&got[1].payload[..], &[0, 0x26, 0x25, 0xA0, 2]);
        assert_eq!(&got[2].payload[..], &4096u32.to_be_bytes());
        let result = amf_values(&got[3]).unwrap();
        assert_eq!(result[0].as_str(), Some("_result"));
        assert_eq!(result[1].as_f64(), Some(1.0));
        assert_eq!(
            result[2].get("fmsVer").and_then(Amf0Value::as_str),
            Some("FMS/3,0,1,123")
        );
        assert_eq!(
            result[2].get("capabilities").and_then(Amf0Value::as_f64),
            Some(31.0)
        );
        assert_eq!(
            result[3].get("level").and_then(Amf0Value::as_str),
            Some("status")
        );
        assert_eq!(
            result[3].get("code").and_then(Amf0Value::as_str),
            Some("NetConnection.Connect.Success")
        );
        assert!(result[3].get("description").is_some());
        assert_eq!(
            result[3].get("objectEncoding").and_then(Amf0Value::as_f64),
            Some(0.0)
        );
        assert_eq!(
            server_events(&mut p.server),
            vec![ServerEvent::Connect {
                app: "live".into(),
                tc_url: None
            }]
        );
        // The server now writes 4096-byte chunks: a 5000-byte reply would show it,
        // but checking the encoder state is simpler.
        assert_eq!(p.server.outbox.encoder.chunk_size(), 4096);
        assert_eq!(
            p.command(
                0,
                &[
                    Amf0Value::string("connect"),
                    Amf0Value::Number(1.0),
                    Amf0Value::object([("app", Amf0Value::string("live"))]),
                ],
            ),
            Err(RtmpError::UnexpectedMessage("second connect"))
        );
    }

    #[test]
    fn create_stream_ids_and_cap() {
        let mut p = RawPeer::new();
        p.connect();
        p.received();
        for id in 1..=MAX_STREAMS {
            p.create_stream();
            let cmds = p.commands();
            assert_eq!(cmds[0][0].as_str(), Some("_result"));
            assert_eq!(cmds[0][3].as_f64(), Some(f64::from(id)));
        }
        let err = p.command(
            0,
            &[
                Amf0Value::string("createStream"),
                Amf0Value::Number(9.0),
                Amf0Value::Null,
            ],
        );
        assert_eq!(err, Err(RtmpError::TooManyStreams { max: MAX_STREAMS }));
    }

    #[test]
    fn commands_before_connect_are_refused_and_unknown_ones_ignored() {
        let mut p = RawPeer::new();
        assert_eq!(
            p.command(
                0,
                &[
                    Amf0Value::string("createStream"),
                    Amf0Value::Number(2.0),
                    Amf0Value::Null
                ]
            ),
            Err(RtmpError::UnexpectedMessage("command before connect"))
        );
        // The session stays failed.
        assert!(p.server.feed(&[0xC3]).is_err());

        let mut p = RawPeer::new();
        p.connect();
        p.received();
        p.command(
            0,
            &[Amf0Value::string("getStreamLength"), Amf0Value::Number(5.0)],
        )
        .unwrap();
        p.command(0, &[Amf0Value::string("_checkbw")]).unwrap();
        assert!(p.received().is_empty());
        assert_eq!(server_events(&mut p.server).len(), 1);
        // releaseStream / FCPublish get a _result.
        p.command(
            0,
            &[
                Amf0Value::string("releaseStream"),
                Amf0Value::Number(2.0),
                Amf0Value::Null,
                Amf0Value::string("k"),
            ],
        )
        .unwrap();
        let cmds = p.commands();
        assert_eq!(cmds[0][0].as_str(), Some("_result"));
        assert_eq!(cmds[0][1].as_f64(), Some(2.0));
    }

    #[test]
    fn media_before_accept_is_an_error() {
        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        assert!(matches!(
            p.publish(2, "x"),
            Err(RtmpError::UnexpectedMessage(_))
        ));

        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        p.publish(1, "x").unwrap();
        // Metadata before accept is dropped, not fatal.
        p.send(RawMessage {
            csid: 5,
            timestamp: 0,
            type_id: msg_type::DATA_AMF0,
            stream_id: 1,
            payload: crate::amf0::encode_all(&[
                Amf0Value::string("@setDataFrame"),
                Amf0Value::string("onMetaData"),
            ]),
        })
        .unwrap();
        assert_eq!(
            p.send(media(msg_type::VIDEO, 1)),
            Err(RtmpError::UnexpectedMessage(
                "audio/video on a stream without an accepted publish"
            ))
        );
        assert_eq!(server_events(&mut p.server).len(), 2);

        // After accept, fine; on another stream id, not.
        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        p.publish(1, "x").unwrap();
        p.server.accept_publish(1);
        let got = p.received();
        let begin = got
            .iter()
            .find(|m| m.type_id == msg_type::USER_CONTROL)
            .unwrap();
        assert_eq!(&begin.payload[..], &[0, 0, 0, 0, 0, 1]);
        let status = got
            .iter()
            .find(|m| m.type_id == msg_type::COMMAND_AMF0 && m.stream_id == 1)
            .map(|m| amf_values(m).unwrap())
            .unwrap();
        assert_eq!(status[0].as_str(), Some("onStatus"));
        assert_eq!(
            status[3].get("code").and_then(Amf0Value::as_str),
            Some("NetStream.Publish.Start")
        );
        p.send(media(msg_type::AUDIO, 1)).unwrap();
        assert!(p.send(media(msg_type::AUDIO, 2)).is_err());
    }

    #[test]
    fn unpublish_paths_report_once() {
        for how in ["FCUnpublish", "deleteStream", "closeStream"] {
            let mut p = RawPeer::new();
            p.connect();
            p.create_stream();
            p.publish(1, "key?x=1").unwrap();
            p.server.accept_publish(1);
            server_events(&mut p.server);
            let fc = [
                Amf0Value::string("FCUnpublish"),
                Amf0Value::Number(6.0),
                Amf0Value::Null,
                Amf0Value::string("key"),
            ];
            let delete = [
                Amf0Value::string("deleteStream"),
                Amf0Value::Number(7.0),
                Amf0Value::Null,
                Amf0Value::Number(1.0),
            ];
            let close = [
                Amf0Value::string("closeStream"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
            ];
            match how {
                "FCUnpublish" => p.command(0, &fc).unwrap(),
                "deleteStream" => p.command(0, &delete).unwrap(),
                _ => p.command(1, &close).unwrap(),
            }
            p.command(0, &fc).unwrap();
            p.command(0, &delete).unwrap();
            assert_eq!(
                server_events(&mut p.server),
                vec![ServerEvent::Unpublish { stream_id: 1 }],
                "{how}"
            );
        }
    }

    #[test]
    fn play_and_reject_play() {
        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        p.command(
            1,
            &[
                Amf0Value::string("play"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                Amf0Value::string("cam"),
            ],
        )
        .unwrap();
        let events = server_events(&mut p.server);
        assert_eq!(
            events.last(),
            Some(&ServerEvent::Play {
                stream_id: 1,
                name: "cam".into()
            })
        );
        p.received();
        p.server.reject_play(1, "no RTMP playback here");
        let cmds = p.commands();
        assert_eq!(cmds[0][0].as_str(), Some("onStatus"));
        assert_eq!(
            cmds[0][3].get("level").and_then(Amf0Value::as_str),
            Some("error")
        );
        assert_eq!(
            cmds[0][3].get("code").and_then(Amf0Value::as_str),
            Some("NetStream.Play.Failed")
        );
    }

    #[test]
    fn ping_and_acknowledgements() {
        let mut p = RawPeer::new();
        p.send(RawMessage {
            csid: 2,
            timestamp: 0,
            type_id: msg_type::USER_CONTROL,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 6, 0, 0, 0x12, 0x34]),
        })
        .unwrap();
        let got = p.received();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], &[0, 7, 0, 0, 0x12, 0x34]);

        p.send(message::window_ack_size(1000)).unwrap();
        p.connect();
        p.create_stream();
        p.publish(1, "x").unwrap();
        p.server.accept_publish(1);
        p.received();
        let mut acks = 0;
        for _ in 0..10 {
            let mut msg = media(msg_type::VIDEO, 1);
            msg.payload = Bytes::from(vec![0u8; 500]);
            p.send(msg).unwrap();
            acks += p
                .received()
                .iter()
                .filter(|m| m.type_id == msg_type::ACKNOWLEDGEMENT)
                .count();
        }
        // ~5000 bytes received with a 1000-byte window.
        assert!((4..=6).contains(&acks), "{acks} acks");
    }

    #[test]
    fn aggregate_messages_are_split() {
        let mut p = RawPeer::new();
        p.connect();
        p.create_stream();
        p.publish(1, "x").unwrap();
        p.server.accept_publish(1);
        server_events(&mut p.server);
        let mut payload = Vec::new();
        for (type_id, ts, body) in [(9u8, 1000u32, &b"v1"[..]), (8, 1020, b"a1")] {
            payload.push(type_id);
            payload.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            payload.extend_from_slice(&ts.to_be_bytes()[1..]);
            payload.push((ts >> 24) as u8);
            payload.extend_from_slice(&[0, 0, 0]);
            payload.extend_from_slice(body);
            payload.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        p.send(RawMessage {
            csid: 7,
            timestamp: 50,
            type_id: msg_type::AGGREGATE,
            stream_id: 1,
            payload: payload.into(),
        })
        .unwrap();
        assert_eq!(
            server_events(&mut p.server),
            vec![
                ServerEvent::Video {
                    stream_id: 1,
                    timestamp: 50,
                    payload: Bytes::from_static(b"v1")
                },
                ServerEvent::Audio {
                    stream_id: 1,
                    timestamp: 70,
                    payload: Bytes::from_static(b"a1")
                },
            ]
        );
    }

    #[test]
    fn digest_handshake_through_the_session() {
        let mut s = server();
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&client_digest_c1(&random(9), DigestScheme::One));
        s.feed(&c0c1).unwrap();
        let out = s.take_output().unwrap();
        assert_eq!(out.len(), 1 + 2 * BLOCK);
        assert_ne!(&out[5..9], &[0, 0, 0, 0]);
        assert!(!s.handshake_done());
        s.feed(&[0u8; BLOCK]).unwrap();
        assert!(s.handshake_done());
    }

    /// Every byte of a whole client session, as the server would read it, and
    /// where the publish command ends in it.
    fn recorded_client_bytes() -> (Vec<u8>, usize) {
        let mut c = client();
        let mut s = server();
        let mut wire = Vec::new();
        let mut publish_end = 0;
        c.publish("live", "rtmp://x/live", "k");
        for _ in 0..20 {
            while let Some(b) = c.take_output() {
                wire.extend_from_slice(&b);
                s.feed(&b).unwrap();
            }
            while let Some(b) = s.take_output() {
                c.feed(&b).unwrap();
            }
            if let Some(ServerEvent::Publish { stream_id, .. }) =
                server_events(&mut s).into_iter().last()
            {
                publish_end = wire.len();
                s.accept_publish(stream_id);
            }
        }
        c.set_chunk_size(300);
        for i in 0..10u32 {
            c.send_video(i * 40, Bytes::from(vec![i as u8; 700]));
            c.send_audio(i * 23, Bytes::from(vec![i as u8; 20]));
        }
        while let Some(b) = c.take_output() {
            wire.extend_from_slice(&b);
        }
        assert!(publish_end > 0);
        (wire, publish_end)
    }

    /// Feeds `pieces` in order, accepting any publish as soon as it shows up.
    fn drive<'a>(
        s: &mut ServerSession,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<ServerEvent>, Result<(), RtmpError>) {
        let mut events = Vec::new();
        for piece in pieces {
            let result = s.feed(piece);
            for event in server_events(s) {
                if let ServerEvent::Publish { stream_id, .. } = &event {
                    s.accept_publish(*stream_id);
                }
                events.push(event);
            }
            while s.take_output().is_some() {}
            if result.is_err() {
                return (events, result);
            }
        }
        (events, Ok(()))
    }

    #[test]
    fn byte_by_byte_equals_at_once() {
        let (wire, publish_end) = recorded_client_bytes();
        let (head, tail) = wire.split_at(publish_end);
        let at_once = drive(&mut server(), [head, tail]);
        assert_eq!(at_once.1, Ok(()));
        assert_eq!(at_once.0.len(), 2 + 20);
        let one = drive(&mut server(), wire.chunks(1));
        assert_eq!(at_once, one);
        // Truncated: the same prefix either way gives the same result.
        for cut in [publish_end + 1, publish_end + 777, wire.len() - 3] {
            let (head, tail) = wire[..cut].split_at(publish_end);
            assert_eq!(
                drive(&mut server(), [head, tail]),
                drive(&mut server(), wire[..cut].chunks(1))
            );
        }
    }

    #[test]
    fn garbage_after_handshake_never_panics() {
        let (wire, _) = recorded_client_bytes();
        let handshake_len = 1 + 2 * BLOCK;
        let mut state = 0xD1B5_4A32_D192_ED03u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut failures = 0;
        for round in 0..400 {
            let mut body: Vec<u8> = if round % 2 == 0 {
                wire[handshake_len..].to_vec()
            } else {
                (0..(next() % 2000)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 8) {
                if !body.is_empty() {
                    let i = (next() as usize) % body.len();
                    body[i] = next() as u8;
                }
            }
            let mut s = server();
            s.feed(&wire[..handshake_len]).unwrap();
            let size = 1 + (next() % 512) as usize;
            if drive(&mut s, body.chunks(size)).1.is_err() {
                failures += 1;
            }
        }
        assert!(failures > 0);
    }
}
