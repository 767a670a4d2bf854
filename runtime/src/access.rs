//! Signed access tokens, shared by whoever issues them (the controller, an operator's
//! backend following docs/access.md) and whoever checks them (the controller for
//! publishers, every edge for viewers, with no round trip).
//!
//! A token is `{key_id}.{expiry}.{signature}`:
//! - `key_id`: which signing key (1 to 32 of `a-z 0-9 -`),
//! - `expiry`: Unix seconds, decimal,
//! - `signature`: base64url (no padding) of HMAC-SHA256 with the key's secret over
//!   `"ferrocast/{purpose}\n{key_id}\n{stream}\n{expiry}"`.
//!
//! The stream is not in the token: it is the one the URL names, and it is signed, so a
//! token for one stream fails on another, and the purpose (`publish`, `play`) is signed
//! too, so a playback token cannot publish. Every character is URL- and path-safe.

use hmac::{Hmac, Mac};
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
            || signature.len() != 43
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

    /// Checks the signature with `secret`, and the expiry against `now` (Unix seconds).
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
        if now > self.expiry {
            return Err(TokenError::Expired(self.expiry));
        }
        Ok(())
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
    mac.update(
        format!(
            "ferrocast/{}\n{key_id}\n{stream}\n{expiry}",
            purpose.as_str()
        )
        .as_bytes(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

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
