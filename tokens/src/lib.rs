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
//!
//! This file owns the token format and its checks; [`ed25519`] the Ed25519 keys,
//! [`credential`] where a viewer request carries its token, [`primitives`] the base64,
//! randomness and comparisons they are built from (each from a crate).

pub mod credential;
pub mod ed25519;
pub mod primitives;

pub use credential::{query_param, viewer_token, CredentialError};
pub use ed25519::{ed25519_public_key_pem, parse_ed25519_public_key, Ed25519Signer};
pub use primitives::{
    base64_decode, base64url, constant_time_eq, random_bytes, random_id, sha256_hex, unix_now,
    RandomError,
};

use hmac::{Hmac, Mac};
use ring::signature::{UnparsedPublicKey, ED25519};
use sha2::Sha256;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
