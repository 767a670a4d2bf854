//! Signed access tokens, shared by whoever issues them (the controller, an operator's
//! backend following docs/access.md) and whoever checks them (the controller for
//! publishers, every edge for viewers, with no round trip).
//!
//! A token is `{key_id}.{expiry}.{signature}`:
//! - `key_id`: which signing key (1 to 32 of `a-z 0-9 -`),
//! - `expiry`: Unix seconds, decimal,
//! - `signature`: base64url (no padding) of the signature over
//!   `"ferrocast/{purpose}\n{key_id}\n{stream}\n{expiry}"` ([`message`]): HMAC-SHA256
//!   with the key's secret (32 bytes, 43 characters), or Ed25519 with the private half of
//!   a key whose public half was registered (64 bytes, 86 characters).
//!
//! The stream is not in the token: it is the one the URL names, and it is signed, so a
//! token for one stream fails on another, and the purpose (`publish`, `play`) is signed
//! too, so a playback token cannot publish. Every character is URL- and path-safe.
//!
//! Ed25519 lets a platform's backend sign with a private key that never reaches the
//! cluster: the controller and the edges hold only public keys ([`VerifyKey`]).

use hmac::{Hmac, Mac};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Publishing the stream (RTMP).
    Publish,
    /// Playing the stream (HLS at an edge).
    Play,
}

impl Purpose {
    /// The name signed into the token and used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Publish => "publish",
            Purpose::Play => "play",
        }
    }

    /// Parses `publish` or `play`.
    pub fn parse(s: &str) -> Option<Purpose> {
        match s {
            "publish" => Some(Purpose::Publish),
            "play" => Some(Purpose::Play),
            _ => None,
        }
    }
}

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not `{key_id}.{expiry}.{signature}`.
    #[error("malformed token")]
    Malformed,
    /// The key id names no (live) signing key.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// Past its expiry.
    #[error("token expired at {0}")]
    Expired(u64),
    /// The signature does not match (wrong key, stream or purpose, or altered).
    #[error("bad signature")]
    BadSignature,
    /// Revoked by an operator.
    #[error("token revoked")]
    Revoked,
}

/// A token split into its parts (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// The signing key's id.
    pub key_id: &'a str,
    /// Unix seconds after which it is refused.
    pub expiry: u64,
    /// The base64url signature (also the token's identity for revocation).
    pub signature: &'a str,
}

/// Whether `id` is a valid key id.
pub fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl<'a> Token<'a> {
    /// Splits `s`; checks only its shape.
    pub fn parse(s: &'a str) -> Result<Token<'a>, TokenError> {
        let mut it = s.splitn(3, '.');
        let (Some(key_id), Some(expiry), Some(signature)) = (it.next(), it.next(), it.next())
        else {
            return Err(TokenError::Malformed);
        };
        if !valid_key_id(key_id)
            || expiry.is_empty()
            || expiry.len() > 12
            || !expiry.bytes().all(|b| b.is_ascii_digit())
            || (signature.len() != HMAC_SIG_LEN && signature.len() != ED25519_SIG_LEN)
            || !signature
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::Malformed);
        }
        Ok(Token {
            key_id,
            expiry: expiry.parse().map_err(|_| TokenError::Malformed)?,
            signature,
        })
    }

    /// Checks an HMAC signature with `secret`, and the expiry against `now` (Unix
    /// seconds).
    pub fn verify(
        &self,
        purpose: Purpose,
        stream: &str,
        secret: &[u8],
        now: u64,
    ) -> Result<(), TokenError> {
        let want = signature(purpose, self.key_id, stream, self.expiry, secret);
        if !constant_time_eq(want.as_bytes(), self.signature.as_bytes()) {
            return Err(TokenError::BadSignature);
        }
        self.check_expiry(now)
    }

    /// Checks the signature with `key` (either algorithm), and the expiry against `now`.
    pub fn verify_with(
        &self,
        purpose: Purpose,
        stream: &str,
        key: &VerifyKey,
        now: u64,
    ) -> Result<(), TokenError> {
        match key {
            VerifyKey::Hmac(secret) => self.verify(purpose, stream, secret, now),
            VerifyKey::Ed25519(public) => {
                // Only the canonical encoding of the 64 bytes: a token has exactly one
                // signature string, which is what a revocation names.
                let sig = match base64_decode(self.signature) {
                    Some(sig)
                        if sig.len() == 64
                            && base64url(&sig).as_bytes() == self.signature.as_bytes() =>
                    {
                        sig
                    }
                    _ => return Err(TokenError::BadSignature),
                };
                let msg = message(purpose, self.key_id, stream, self.expiry);
                UnparsedPublicKey::new(&ED25519, public)
                    .verify(msg.as_bytes(), &sig)
                    .map_err(|_| TokenError::BadSignature)?;
                self.check_expiry(now)
            }
        }
    }

    fn check_expiry(&self, now: u64) -> Result<(), TokenError> {
        if now > self.expiry {
            return Err(TokenError::Expired(self.expiry));
        }
        Ok(())
    }
}

/// Length of an HMAC-SHA256 signature in a token (32 bytes, base64url).
const HMAC_SIG_LEN: usize = 43;
/// Length of an Ed25519 signature in a token (64 bytes, base64url).
const ED25519_SIG_LEN: usize = 86;

/// The bytes a token's signature covers (UTF-8):
/// `"ferrocast/{purpose}\n{key_id}\n{stream}\n{expiry}"`, `\n` a single line feed, no
/// trailing newline, expiry in decimal without leading zeros.
pub fn message(purpose: Purpose, key_id: &str, stream: &str, expiry: u64) -> String {
    format!(
        "ferrocast/{}\n{key_id}\n{stream}\n{expiry}",
        purpose.as_str()
    )
}

/// How a signing key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret the controller generates and keeps.
    #[default]
    HmacSha256,
    /// Ed25519: the operator registers a public key and signs with its private key.
    Ed25519,
}

impl Algorithm {
    /// The name used in APIs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Parses `hmac-sha256` (also the empty string, as older records and clients say
    /// nothing) or `ed25519`.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "" | "hmac-sha256" => Some(Algorithm::HmacSha256),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// What checks a token's signature.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// The HMAC-SHA256 secret.
    Hmac(Vec<u8>),
    /// An Ed25519 public key (32 bytes).
    Ed25519([u8; 32]),
}

impl VerifyKey {
    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyKey::Hmac(_) => Algorithm::HmacSha256,
            VerifyKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never a secret in a log line.
            VerifyKey::Hmac(s) => write!(f, "Hmac({} bytes)", s.len()),
            VerifyKey::Ed25519(k) => write!(f, "Ed25519({})", base64url(k)),
        }
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Encodings of the points of small order (sign bit ignored, as in libsodium's list),
/// including the non-canonical `p` and `p + 1`. A public key among them lets anyone
/// forge signatures (with the identity, `R = identity, S = 0` verifies every message).
const SMALL_ORDER: [[u8; 32]; 7] = {
    let mut ff = [0xff; 32];
    ff[31] = 0x7f;
    let mut minus_one = ff;
    minus_one[0] = 0xec;
    let mut p = ff;
    p[0] = 0xed;
    let mut p1 = ff;
    p1[0] = 0xee;
    let mut one = [0; 32];
    one[0] = 1;
    [
        [0; 32],
        one,
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
        minus_one,
        p,
        p1,
    ]
};

/// Reads an Ed25519 public key given as PEM (`-----BEGIN PUBLIC KEY-----`, what
/// `openssl pkey -pubout` and [`Ed25519Signer::public_key_pem`] write), as its DER, as
/// the raw 32 bytes, or as base64/base64url text of those. Refuses anything else, a
/// private key, and keys of small order (which would let anyone forge tokens).
pub fn parse_ed25519_public_key(input: &[u8]) -> Result<[u8; 32], String> {
    let raw: Vec<u8> = if input.len() == 32 {
        input.to_vec()
    } else if let Some(der) = input.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        der.to_vec()
    } else {
        let text = std::str::from_utf8(input)
            .map_err(|_| "not an Ed25519 public key (PEM, DER or 32 bytes)".to_owned())?
            .trim();
        if text.contains("PRIVATE KEY-----") {
            return Err(
                "this is a private key: register the public key (keep the private one with the signer)"
                    .into(),
            );
        }
        if text.starts_with("-----BEGIN") {
            let der = pem_decode(text, "PUBLIC KEY")
                .ok_or_else(|| "not a PEM \"PUBLIC KEY\"".to_owned())?;
            der.strip_prefix(&ED25519_SPKI_PREFIX[..])
                .filter(|k| k.len() == 32)
                .ok_or_else(|| "the PEM public key is not an Ed25519 key".to_owned())?
                .to_vec()
        } else {
            base64_decode(text).ok_or_else(|| {
                "not an Ed25519 public key (PEM, DER, 32 bytes or their base64)".to_owned()
            })?
        }
    };
    let key: [u8; 32] = raw
        .try_into()
        .map_err(|v: Vec<u8>| format!("an Ed25519 public key has 32 bytes, not {}", v.len()))?;
    let mut cleared = key;
    cleared[31] &= 0x7f;
    if SMALL_ORDER.contains(&cleared) {
        return Err("weak Ed25519 public key (a point of small order)".into());
    }
    Ok(key)
}

/// The SubjectPublicKeyInfo PEM of an Ed25519 public key.
pub fn ed25519_public_key_pem(key: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    pem_encode("PUBLIC KEY", &der)
}

/// An Ed25519 private key, for operators who sign tokens locally (`ferrocast ctl token
/// sign`) and for tests. The cluster never needs one.
#[derive(Debug)]
pub struct Ed25519Signer {
    pair: Ed25519KeyPair,
}

impl Ed25519Signer {
    /// A new key pair, with its PKCS#8 v2 document as PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn generate() -> Result<(Self, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no randomness".to_owned())?;
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// Reads an unencrypted PKCS#8 PEM private key, v1 (`openssl genpkey -algorithm
    /// ed25519`) or v2 ([`generate`](Self::generate)).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = pem_decode(pem, "PRIVATE KEY")
            .ok_or_else(|| "not a PEM \"PRIVATE KEY\" (unencrypted PKCS#8)".to_owned())?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| format!("not an Ed25519 private key: {e}"))?;
        Ok(Self { pair })
    }

    /// The public half.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// The public half as PEM, to register with the controller.
    pub fn public_key_pem(&self) -> String {
        ed25519_public_key_pem(&self.public_key())
    }

    /// Signs a token for `stream` valid until `expiry` (Unix seconds).
    pub fn sign(&self, purpose: Purpose, key_id: &str, stream: &str, expiry: u64) -> String {
        let sig = self
            .pair
            .sign(message(purpose, key_id, stream, expiry).as_bytes());
        format!("{key_id}.{expiry}.{}", base64url(sig.as_ref()))
    }
}

/// The signature of a token (base64url, no padding).
pub fn signature(
    purpose: Purpose,
    key_id: &str,
    stream: &str,
    expiry: u64,
    secret: &[u8],
) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message(purpose, key_id, stream, expiry).as_bytes());
    base64url(&mac.finalize().into_bytes())
}

/// Signs a token for `stream` valid until `expiry` (Unix seconds).
pub fn sign(purpose: Purpose, key_id: &str, stream: &str, expiry: u64, secret: &[u8]) -> String {
    format!(
        "{key_id}.{expiry}.{}",
        signature(purpose, key_id, stream, expiry, secret)
    )
}

/// SHA-256 of `data`, lowercase hex (how publish keys are stored).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5).
pub fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64 or base64url, with or without padding (the inverse of [`base64url`]
/// and of PEM's base64). `None` on any other character or an impossible length.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6 | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// PEM: `-----BEGIN {label}-----`, base64 of `der` in lines of 64, `-----END {label}-----`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64: String = base64url(der)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let pad = "=".repeat((4 - b64.len() % 4) % 4);
    let b64 = b64 + &pad;
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first `label` block of `pem`.
pub fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64_decode(&body)
}

/// `n` random bytes from the operating system's generator.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A random id of `n` lowercase hex digits.
pub fn random_id(n: usize) -> std::io::Result<String> {
    Ok(random_bytes(n.div_ceil(2))?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..n]
        .to_owned())
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of `name` in a URL query (`a=1&token=x`), if present.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a viewer request's playback credential cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// More than one: a path token and a `token` parameter, or the parameter twice. What
    /// one checker reads (the first, the last, the path's) another may not, so a request
    /// could be checked with one token and admitted by a webhook on the other.
    #[error("more than one playback token: give one, in the path (/t/TOKEN/...) or as ?token=")]
    Duplicate,
    /// A parameter that names `token` only once decoded or case-folded (`tok%65n`,
    /// `Token`): a webhook decoding the query would read a token the node never saw.
    #[error("the token parameter must be spelled token")]
    Disguised,
}

/// The one playback credential of a viewer request: the token of a `/t/{token}/…` path,
/// or the value of the query's `token` parameter; `None` when there is neither. Two
/// credentials, or a parameter name that decodes to `token`, are an error (answered
/// 400), so that whoever reads the request — the token check, the admission webhook, a
/// shared cache — reads the same credential.
pub fn viewer_token<'a>(path: &'a str, query: &'a str) -> Result<Option<&'a str>, CredentialError> {
    let mut found = path
        .strip_prefix("/t/")
        .and_then(|rest| rest.split('/').next());
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (name, value) = kv.split_once('=').unwrap_or((kv, ""));
        if name == "token" {
            if found.replace(value).is_some() {
                return Err(CredentialError::Duplicate);
            }
        } else if names_token(name) {
            return Err(CredentialError::Disguised);
        }
    }
    Ok(found)
}

/// Whether the parameter name `name` is `token` once percent-decoded and ASCII
/// case-folded. Decoded here rather than with a crate: only this five-letter comparison
/// needs it.
fn names_token(name: &str) -> bool {
    if name.len() > 3 * "token".len() {
        return false;
    }
    let b = name.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    decoded.eq_ignore_ascii_case(b"token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_request_has_one_credential_or_is_refused() {
        assert_eq!(viewer_token("/live/cam/index.m3u8", ""), Ok(None));
        assert_eq!(
            viewer_token("/live/cam/index.m3u8", "_HLS_msn=3&token=a.1.s&x=1"),
            Ok(Some("a.1.s"))
        );
        assert_eq!(
            viewer_token("/t/a.1.s/live/cam/index.m3u8", "_HLS_msn=3"),
            Ok(Some("a.1.s"))
        );
        assert_eq!(viewer_token("/live/cam/x", "tokens=1&xtoken=2"), Ok(None));
        for (path, query) in [
            ("/t/A/live/cam/index.m3u8", "token=B"),
            ("/t/A/live/cam/index.m3u8", "token"),
            ("/live/cam/index.m3u8", "token=A&token=B"),
            ("/live/cam/index.m3u8", "token=A&token=A"),
        ] {
            assert_eq!(
                viewer_token(path, query),
                Err(CredentialError::Duplicate),
                "{path}?{query}"
            );
        }
        for query in ["tok%65n=B", "Token=B", "%74%6F%6B%65%6E=B", "TOKEN"] {
            assert_eq!(
                viewer_token("/live/cam/index.m3u8", query),
                Err(CredentialError::Disguised),
                "{query}"
            );
        }
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_documented_message() {
        // RFC 4231 test case 2 as the primitive check: key "Jefe".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // And the token signs exactly "ferrocast/{purpose}\n{kid}\n{stream}\n{expiry}".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"ferrocast/play\nk1\ncam\n100");
        assert_eq!(
            signature(Purpose::Play, "k1", "cam", 100, b"k"),
            base64url(&mac.finalize().into_bytes())
        );
    }

    #[test]
    fn tokens_verify_only_for_their_stream_purpose_key_and_time() {
        let t = sign(Purpose::Play, "k1", "cam", 1000, b"secret");
        let p = Token::parse(&t).unwrap();
        assert_eq!((p.key_id, p.expiry), ("k1", 1000));
        assert_eq!(p.verify(Purpose::Play, "cam", b"secret", 999), Ok(()));
        assert_eq!(p.verify(Purpose::Play, "cam", b"secret", 1000), Ok(()));
        assert_eq!(
            p.verify(Purpose::Play, "cam", b"secret", 1001),
            Err(TokenError::Expired(1000))
        );
        assert_eq!(
            p.verify(Purpose::Play, "other", b"secret", 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            p.verify(Purpose::Publish, "cam", b"secret", 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            p.verify(Purpose::Play, "cam", b"wrong", 1),
            Err(TokenError::BadSignature)
        );
        // A changed expiry breaks the signature.
        let forged = t.replacen(".1000.", ".9999.", 1);
        assert_eq!(
            Token::parse(&forged)
                .unwrap()
                .verify(Purpose::Play, "cam", b"secret", 1),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "k1.1000", "K1.1000.x", "k1.abc.sig", &t[..t.len() - 1]] {
            assert_eq!(Token::parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn ed25519_tokens_verify_only_with_their_key_stream_purpose_and_time() {
        let (signer, pem) = Ed25519Signer::generate().unwrap();
        let public = VerifyKey::Ed25519(signer.public_key());
        let t = signer.sign(Purpose::Play, "ed1", "cam", 1000);
        let p = Token::parse(&t).unwrap();
        assert_eq!((p.key_id, p.expiry, p.signature.len()), ("ed1", 1000, 86));
        assert_eq!(p.verify_with(Purpose::Play, "cam", &public, 1000), Ok(()));
        // The signature is Ed25519 over exactly the documented message.
        let msg = b"ferrocast/play\ned1\ncam\n1000";
        UnparsedPublicKey::new(&ED25519, signer.public_key())
            .verify(msg, &base64_decode(p.signature).unwrap())
            .unwrap();
        assert_eq!(
            p.verify_with(Purpose::Play, "cam", &public, 1001),
            Err(TokenError::Expired(1000))
        );
        for (purpose, stream) in [(Purpose::Play, "dog"), (Purpose::Publish, "cam")] {
            assert_eq!(
                p.verify_with(purpose, stream, &public, 1),
                Err(TokenError::BadSignature)
            );
        }
        // Another key pair's public key, and an HMAC key of the same id, refuse it.
        let (other, _) = Ed25519Signer::generate().unwrap();
        assert_eq!(
            p.verify_with(
                Purpose::Play,
                "cam",
                &VerifyKey::Ed25519(other.public_key()),
                1
            ),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            p.verify_with(Purpose::Play, "cam", &VerifyKey::Hmac(b"s".to_vec()), 1),
            Err(TokenError::BadSignature)
        );
        // An HMAC token is refused by an Ed25519 key.
        let h = sign(Purpose::Play, "ed1", "cam", 1000, b"s");
        assert_eq!(
            Token::parse(&h)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        // A changed expiry, and a non-canonical spelling of the same 64 bytes (the last
        // character carries 4 unused bits), are refused: one token, one signature string.
        let forged = t.replacen(".1000.", ".9999.", 1);
        assert_eq!(
            Token::parse(&forged)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        let last = t.as_bytes()[t.len() - 1];
        let idx = B64URL.iter().position(|c| *c == last).unwrap();
        let respelled = format!("{}{}", &t[..t.len() - 1], B64URL[idx ^ 1] as char);
        assert_eq!(
            base64_decode(Token::parse(&respelled).unwrap().signature),
            base64_decode(p.signature)
        );
        assert_eq!(
            Token::parse(&respelled)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        // The private key round-trips through PEM; the public key through every form.
        let again = Ed25519Signer::from_pem(&pem).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let pk = signer.public_key();
        let pub_pem = signer.public_key_pem();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(parse_ed25519_public_key(pub_pem.as_bytes()), Ok(pk));
        assert_eq!(parse_ed25519_public_key(&pk), Ok(pk));
        assert_eq!(parse_ed25519_public_key(base64url(&pk).as_bytes()), Ok(pk));
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&pk);
        assert_eq!(parse_ed25519_public_key(&der), Ok(pk));
    }

    #[test]
    fn malformed_and_weak_ed25519_public_keys_are_refused() {
        let (signer, private_pem) = Ed25519Signer::generate().unwrap();
        let err = parse_ed25519_public_key(private_pem.as_bytes()).unwrap_err();
        assert!(err.contains("private key"), "{err}");
        let pk = signer.public_key();
        for bad in [
            &pk[..31],
            &[pk.as_slice(), &[0]].concat()[..],
            b"",
            b"hello",
        ] {
            assert!(parse_ed25519_public_key(bad).is_err(), "{bad:?}");
        }
        let short = base64url(&pk[..16]);
        assert!(parse_ed25519_public_key(short.as_bytes())
            .unwrap_err()
            .contains("32 bytes"));
        // A PEM public key of another algorithm (an RSA SPKI header) is not Ed25519.
        let rsa = pem_encode(
            "PUBLIC KEY",
            &[0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09],
        );
        assert!(parse_ed25519_public_key(rsa.as_bytes())
            .unwrap_err()
            .contains("not an Ed25519"));
        // Points of small order, with either sign bit: the identity would accept
        // R = identity, S = 0 as a signature of every message.
        for weak in SMALL_ORDER {
            for sign_bit in [0, 0x80] {
                let mut k = weak;
                k[31] |= sign_bit;
                assert!(
                    parse_ed25519_public_key(&k).unwrap_err().contains("weak"),
                    "{k:?}"
                );
            }
        }
        assert!(Ed25519Signer::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn base64_decodes_both_alphabets_and_pem() {
        for n in 0..40 {
            let raw: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64url(&raw)).unwrap(), raw);
            let pem = pem_encode("X", &raw);
            assert_eq!(pem_decode(&pem, "X").unwrap(), raw);
        }
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("a").is_none() && base64_decode("ab$c").is_none());
        // RFC 4648's vector with padding, as PEM writes it.
        assert_eq!(
            pem_encode("T", b"fo"),
            "-----BEGIN T-----\nZm8=\n-----END T-----\n"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(query_param("a=1&token=x.y&b", "token"), Some("x.y"));
        assert_eq!(query_param("a=1", "token"), None);
        assert_eq!(random_id(8).unwrap().len(), 8);
        assert_ne!(random_bytes(16).unwrap(), random_bytes(16).unwrap());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac"));
    }
}
