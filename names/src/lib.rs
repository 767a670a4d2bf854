//! Stream names: the rule for what a stream key may be ([`valid_stream_key`]) and the cap
//! on the publish credential that travels with it ([`MAX_CREDENTIAL_LEN`]).
//!
//! A leaf with no dependencies because every role applies the same rule: the origin's
//! RTMP layer before it reads a name, the edge before it looks anything up, the controller
//! before it checks a claim or stores an access record. The controller has no other use
//! for media code, so the rule does not live there.

/// Longest stream key, in bytes (the rule of [`valid_stream_key`]).
pub const MAX_STREAM_KEY_LEN: usize = 64;

/// Longest publish credential (the `?query` of an RTMP publish or connect, where `key=`
/// and `token=` travel; tens to hundreds of bytes in practice). Origins refuse a longer
/// one at the RTMP layer and the controller refuses a longer one in a claim.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// Whether `key` can name a stream: 1 to [`MAX_STREAM_KEY_LEN`] of `A-Z a-z 0-9 _ -`. The
/// same rule holds on every node, so a name no origin could accept is refused anywhere
/// without a lookup.
pub fn valid_stream_key(key: &str) -> bool {
    (1..=MAX_STREAM_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_key_is_1_to_64_url_safe_characters() {
        for good in ["a", "cam-1", "Live_Stream", &"x".repeat(MAX_STREAM_KEY_LEN)] {
            assert!(valid_stream_key(good), "{good:?} is a stream key");
        }
        let too_long = "x".repeat(MAX_STREAM_KEY_LEN + 1);
        for bad in [
            "",
            too_long.as_str(),
            "a/b",
            "a.b",
            "../x",
            "a b",
            "a?key=1",
            "é",
            "a%2F",
        ] {
            assert!(!valid_stream_key(bad), "{bad:?} is not a stream key");
        }
    }
}
