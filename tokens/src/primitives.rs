//! The building blocks tokens and keys are made of, each taken from a crate so that
//! the tree has one copy of it: base64url (`base64`), randomness (ring's
//! `SystemRandom`, the generator rustls already trusts), constant-time comparison
//! (`subtle`), SHA-256 (`sha2`). What is ours is only the choice: which alphabet a
//! token is written in, which spellings it is read from.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Reads with or without `=` padding: keys are pasted from tools that write either.
const READ: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// The URL-safe alphabet tokens and key records are written in.
const URL_SAFE_READ: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, READ);
/// The standard alphabet of PEM bodies and `openssl base64`.
const STANDARD_READ: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, READ);

/// base64url without padding (RFC 4648 §5): how signatures, secrets and public keys
/// are written.
pub fn base64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url or standard base64, with or without padding (the inverse of
/// [`base64url`], and what an operator pastes). `None` for anything else, including a
/// spelling whose unused trailing bits are set: every value has one spelling.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_READ
        .decode(s)
        .or_else(|_| STANDARD_READ.decode(s))
        .ok()
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix
/// (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// SHA-256 of `data`, lowercase hex (how publish keys are stored).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The operating system's random generator failed (no entropy source); nothing secret
/// can be made until it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random generator failed")]
pub struct RandomError;

/// `n` random bytes from the operating system's generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomError> {
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| RandomError)?;
    Ok(buf)
}

/// A random id of `n` lowercase hex digits.
pub fn random_id(n: usize) -> Result<String, RandomError> {
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
    fn base64_decodes_both_alphabets_with_or_without_padding() {
        for n in 0..40 {
            let raw: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64url(&raw)).unwrap(), raw);
        }
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("+/8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("-_8=").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("a").is_none() && base64_decode("ab$c").is_none());
        // "-_9" is "-_8" with an unused bit set: the same bytes, another spelling.
        assert!(base64_decode("-_9").is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(random_id(8).unwrap().len(), 8);
        assert_eq!(random_id(7).unwrap().len(), 7);
        assert_ne!(random_bytes(16).unwrap(), random_bytes(16).unwrap());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac"));
        assert!(!constant_time_eq(b"ab", b"abc") && constant_time_eq(b"", b""));
    }
}
