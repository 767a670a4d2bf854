//! The RTMP handshake (spec section 5.2: C0/C1/C2, S0/S1/S2) for both ends,
//! including the server side of the digest ("complex") handshake that Flash
//! Player 9+ clients, OBS (librtmp) and ffmpeg send.
//!
//! The digest handshake is not in the published spec; its layout is de-facto
//! knowledge: a 32-byte HMAC-SHA256 digest sits inside the 1536-byte C1 / S1
//! block at an offset derived from four bytes of the block itself, in one of two
//! schemes. A peer that does not find our digest falls back or gives up, so when
//! the client sent one we must answer in kind.

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::RtmpError;

/// Size of C1, C2, S1 and S2.
pub(crate) const BLOCK: usize = 1536;
/// Random bytes in C1 / S1 after the time and zero / version fields.
pub(crate) const RANDOM_LEN: usize = BLOCK - 8;
const DIGEST_LEN: usize = 32;
const RTMP_VERSION: u8 = 3;

/// Key a Flash Player client signs C1 with.
const CLIENT_KEY: &[u8] = b"Genuine Adobe Flash Player 001";
/// Key a media server signs S1 with (first 36 bytes) and derives the S2 key from (all 68).
const SERVER_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
const SERVER_KEY_PARTIAL_LEN: usize = 36;
/// Version field we put in a digest S1; non-zero tells the client "digest present".
const SERVER_VERSION: [u8; 4] = [5, 0, 3, 1];

type HmacSha256 = Hmac<Sha256>;

/// Where the digest lives in a 1536-byte block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestScheme {
    /// Offset from the sum of bytes 8..12: `sum % 728 + 12`.
    Zero,
    /// Offset from the sum of bytes 772..776: `sum % 728 + 776`.
    One,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC takes keys of any length, so this never falls back in practice.
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0; DIGEST_LEN];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn digest_offset(block: &[u8; BLOCK], scheme: DigestScheme) -> usize {
    let (base, add) = match scheme {
        DigestScheme::Zero => (8, 12),
        DigestScheme::One => (772, 776),
    };
    let sum: usize = block[base..base + 4].iter().map(|&b| usize::from(b)).sum();
    sum % 728 + add
}

/// HMAC over the block with the digest bytes at `offset` left out.
pub(crate) fn block_digest(block: &[u8; BLOCK], offset: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    hmac_sha256(key, &[&block[..offset], &block[offset + DIGEST_LEN..]])
}

/// The client digest in C1 and the scheme it used, if C1 carries a valid one.
fn find_client_digest(c1: &[u8; BLOCK]) -> Option<(DigestScheme, [u8; DIGEST_LEN])> {
    [DigestScheme::Zero, DigestScheme::One]
        .into_iter()
        .find_map(|scheme| {
            let offset = digest_offset(c1, scheme);
            let expected = block_digest(c1, offset, CLIENT_KEY);
            (c1[offset..offset + DIGEST_LEN] == expected).then_some((scheme, expected))
        })
}

/// Key for the S2 signature: HMAC of the client's digest with the full server key.
pub(crate) fn s2_key(client_digest: &[u8]) -> [u8; DIGEST_LEN] {
    hmac_sha256(&SERVER_KEY, &[client_digest])
}

fn fill_random(random: &[u8]) -> [u8; RANDOM_LEN] {
    // Shorter input is padded with zeros: randomness here is a courtesy to the
    // peer, not something the protocol's safety rests on.
    let mut out = [0u8; RANDOM_LEN];
    let n = random.len().min(RANDOM_LEN);
    out[..n].copy_from_slice(&random[..n]);
    out
}

/// S0 + S1 + S2 in answer to C1.
fn server_reply(c1: &[u8; BLOCK], random: &[u8; RANDOM_LEN], epoch_ms: u32, out: &mut BytesMut) {
    let mut s1 = [0u8; BLOCK];
    s1[..4].copy_from_slice(&epoch_ms.to_be_bytes());
    s1[8..].copy_from_slice(random);
    out.put_u8(RTMP_VERSION);
    match find_client_digest(c1) {
        None => {
            // Simple handshake: S2 echoes C1 (spec 5.2.4).
            out.put_slice(&s1);
            out.put_slice(c1);
        }
        Some((scheme, client_digest)) => {
            s1[4..8].copy_from_slice(&SERVER_VERSION);
            let offset = digest_offset(&s1, scheme);
            let digest = block_digest(&s1, offset, &SERVER_KEY[..SERVER_KEY_PARTIAL_LEN]);
            s1[offset..offset + DIGEST_LEN].copy_from_slice(&digest);
            let mut s2 = [0u8; BLOCK];
            s2[..BLOCK - DIGEST_LEN].copy_from_slice(&c1[..BLOCK - DIGEST_LEN]);
            let signature = hmac_sha256(&s2_key(&client_digest), &[&s2[..BLOCK - DIGEST_LEN]]);
            s2[BLOCK - DIGEST_LEN..].copy_from_slice(&signature);
            out.put_slice(&s1);
            out.put_slice(&s2);
        }
    }
}

/// Reads a fixed-size block out of a byte stream that arrives in pieces.
#[derive(Debug)]
struct Collector {
    buf: Vec<u8>,
    want: usize,
}

impl Collector {
    fn new(want: usize) -> Self {
        Collector {
            buf: Vec::new(),
            want,
        }
    }

    /// Takes what it still needs from `input`; returns bytes consumed.
    fn take(&mut self, input: &[u8]) -> usize {
        let n = (self.want - self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        n
    }

    fn full(&self) -> bool {
        self.buf.len() == self.want
    }
}

fn check_version(byte: Option<&u8>) -> Result<(), RtmpError> {
    match byte {
        Some(&RTMP_VERSION) | None => Ok(()),
        Some(&other) => Err(RtmpError::UnsupportedVersion(other)),
    }
}

#[derive(Debug)]
enum ServerState {
    /// Waiting for C0 + C1.
    C0C1(Collector),
    /// Replied; skipping C2 (left unvalidated: clients vary in what they echo).
    C2 {
        remaining: usize,
    },
    Done,
}

/// The server end of the handshake.
#[derive(Debug)]
pub(crate) struct ServerHandshake {
    state: ServerState,
    random: Box<[u8; RANDOM_LEN]>,
    epoch_ms: u32,
}

impl ServerHandshake {
    pub(crate) fn new(random: &[u8], epoch_ms: u32) -> Self {
        ServerHandshake {
            state: ServerState::C0C1(Collector::new(1 + BLOCK)),
            random: Box::new(fill_random(random)),
            epoch_ms,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Consumes handshake bytes from `input`, writing replies to `out`.
    /// Returns how many bytes were consumed; the rest belong to the chunk layer.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, RtmpError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.state {
                ServerState::C0C1(collector) => {
                    used += collector.take(rest);
                    check_version(collector.buf.first())?;
                    if !collector.full() {
                        return Ok(used);
                    }
                    let mut c1 = [0u8; BLOCK];
                    c1.copy_from_slice(&collector.buf[1..]);
                    server_reply(&c1, &self.random, self.epoch_ms, out);
                    self.state = ServerState::C2 { remaining: BLOCK };
                }
                ServerState::C2 { remaining } => {
                    let n = (*remaining).min(rest.len());
                    used += n;
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(used);
                    }
                    self.state = ServerState::Done;
                }
                ServerState::Done => return Ok(used),
            }
        }
    }
}

#[derive(Debug)]
enum ClientState {
    /// Waiting for S0 + S1.
    S0S1(Collector),
    /// Sent C2; skipping S2.
    S2 {
        remaining: usize,
    },
    Done,
}

/// The client end of the handshake (simple form: our own tools need no digest).
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    state: ClientState,
}

impl ClientHandshake {
    /// Starts the handshake, writing C0 + C1 to `out`.
    pub(crate) fn new(random: &[u8], epoch_ms: u32, out: &mut BytesMut) -> Self {
        out.put_u8(RTMP_VERSION);
        out.put_u32(epoch_ms);
        out.put_u32(0);
        out.put_slice(&fill_random(random));
        ClientHandshake {
            state: ClientState::S0S1(Collector::new(1 + BLOCK)),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, ClientState::Done)
    }

    /// Like [`ServerHandshake::feed`].
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, RtmpError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.state {
                ClientState::S0S1(collector) => {
                    used += collector.take(rest);
                    check_version(collector.buf.first())?;
                    if !collector.full() {
                        return Ok(used);
                    }
                    // C2 echoes S1 (spec 5.2.4).
                    out.put_slice(&collector.buf[1..]);
                    self.state = ClientState::S2 { remaining: BLOCK };
                }
                ClientState::S2 { remaining } => {
                    let n = (*remaining).min(rest.len());
                    used += n;
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(used);
                    }
                    self.state = ClientState::Done;
                }
                ClientState::Done => return Ok(used),
            }
        }
    }
}

/// A C1 signed the way Flash Player / librtmp sign it, for tests.
#[cfg(test)]
pub(crate) fn client_digest_c1(random: &[u8], scheme: DigestScheme) -> [u8; BLOCK] {
    let mut c1 = [0u8; BLOCK];
    c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
    c1[8..].copy_from_slice(&fill_random(random));
    let offset = digest_offset(&c1, scheme);
    let digest = block_digest(&c1, offset, CLIENT_KEY);
    c1[offset..offset + DIGEST_LEN].copy_from_slice(&digest);
    c1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: u8) -> Vec<u8> {
        (0..RANDOM_LEN)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn run_server(c0c1: &[u8]) -> (ServerHandshake, BytesMut) {
        let mut hs = ServerHandshake::new(&random(7), 1234);
        let mut out = BytesMut::new();
        assert_eq!(hs.feed(c0c1, &mut out).unwrap(), c0c1.len());
        (hs, out)
    }

    #[test]
    fn constants_are_what_the_brief_says() {
        assert_eq!(CLIENT_KEY.len(), 30);
        assert_eq!(&SERVER_KEY[..36], b"Genuine Adobe Flash Media Server 001");
        assert_eq!(SERVER_KEY[36], 0xF0);
        assert_eq!(SERVER_KEY[67], 0xAE);
    }

    #[test]
    fn simple_handshake_echoes_c1() {
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0]);
        c0c1.extend_from_slice(&random(1));
        let (mut hs, out) = run_server(&c0c1);
        assert_eq!(out.len(), 1 + 2 * BLOCK);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &1234u32.to_be_bytes());
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(&out[9..1 + BLOCK], &random(7)[..]);
        assert_eq!(&out[1 + BLOCK..], &c0c1[1..]);
        assert!(!hs.is_done());
        // C2 plus two bytes of chunk data: only C2 is consumed.
        let mut more = vec![0u8; BLOCK];
        more.extend_from_slice(&[1, 2]);
        let mut out2 = BytesMut::new();
        assert_eq!(hs.feed(&more, &mut out2).unwrap(), BLOCK);
        assert!(hs.is_done());
        assert!(out2.is_empty());
    }

    #[test]
    fn digest_handshake_both_schemes() {
        for scheme in [DigestScheme::Zero, DigestScheme::One] {
            let c1 = client_digest_c1(&random(3), scheme);
            let client_offset = digest_offset(&c1, scheme);
            let client_digest = &c1[client_offset..client_offset + 32];
            let mut c0c1 = vec![3u8];
            c0c1.extend_from_slice(&c1);
            let (_, out) = run_server(&c0c1);
            assert_eq!(out.len(), 1 + 2 * BLOCK);
            let mut s1 = [0u8; BLOCK];
            s1.copy_from_slice(&out[1..1 + BLOCK]);
            let s2 = &out[1 + BLOCK..];
            assert_ne!(&s1[4..8], &[0, 0, 0, 0], "digest S1 carries a version");

            // S1 digest: HMAC-SHA256 with the 36-byte server key, computed here
            // directly rather than through the module's helpers.
            let offset = digest_offset(&s1, scheme);
            let mut mac =
                HmacSha256::new_from_slice(b"Genuine Adobe Flash Media Server 001").unwrap();
            mac.update(&s1[..offset]);
            mac.update(&s1[offset + 32..]);
            mac.verify_slice(&s1[offset..offset + 32])
                .expect("valid S1 digest");

            // S2 signature: key = HMAC(full server key, client digest).
            let mut key_mac = HmacSha256::new_from_slice(&SERVER_KEY).unwrap();
            key_mac.update(client_digest);
            let key = key_mac.finalize().into_bytes();
            let mut sig_mac = HmacSha256::new_from_slice(&key).unwrap();
            sig_mac.update(&s2[..BLOCK - 32]);
            sig_mac
                .verify_slice(&s2[BLOCK - 32..])
                .expect("valid S2 signature");
        }
    }

    #[test]
    fn corrupted_digest_falls_back_to_simple() {
        let mut c1 = client_digest_c1(&random(3), DigestScheme::Zero);
        let offset = digest_offset(&c1, DigestScheme::Zero);
        c1[offset] ^= 1;
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&c1);
        let (_, out) = run_server(&c0c1);
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(&out[1 + BLOCK..], &c1[..]);
    }

    #[test]
    fn wrong_version_is_rejected_at_the_first_byte() {
        for version in [0u8, 6, 0x16] {
            let mut hs = ServerHandshake::new(&[], 0);
            assert_eq!(
                hs.feed(&[version], &mut BytesMut::new()),
                Err(RtmpError::UnsupportedVersion(version))
            );
            let mut out = BytesMut::new();
            let mut client = ClientHandshake::new(&[], 0, &mut out);
            assert_eq!(out.len(), 1 + BLOCK);
            assert_eq!(
                client.feed(&[version], &mut out),
                Err(RtmpError::UnsupportedVersion(version))
            );
        }
    }

    #[test]
    fn client_and_server_meet_byte_by_byte() {
        let mut to_server = BytesMut::new();
        let mut client = ClientHandshake::new(&random(5), 77, &mut to_server);
        let mut server = ServerHandshake::new(&random(6), 88);
        let mut to_client = BytesMut::new();
        for b in to_server.split().iter() {
            assert_eq!(server.feed(&[*b], &mut to_client).unwrap(), 1);
        }
        for b in to_client.split().iter() {
            assert_eq!(client.feed(&[*b], &mut to_server).unwrap(), 1);
        }
        assert!(client.is_done());
        let c2 = to_server.split();
        assert_eq!(c2.len(), BLOCK);
        assert_eq!(server.feed(&c2, &mut to_client).unwrap(), BLOCK);
        assert!(server.is_done());
        // Done means nothing more is consumed.
        assert_eq!(server.feed(&[1, 2, 3], &mut to_client).unwrap(), 0);
    }
}
