//! Parsing of the LL-HLS Delivery Directives (rfc8216bis §6.2.5) from a playlist
//! request's raw query string. Only `_HLS_`-prefixed keys are ours (§6.2.5 reserves
//! them); everything else (cache busters, auth tokens) is skipped unread.

use thiserror::Error;

/// Longest query string accepted. Generous enough for long signed tokens; anything
/// bigger is not a player talking to us.
pub const MAX_QUERY_LEN: usize = 16 * 1024;

/// Longest percent-encoded key that could still decode to one of our directive names
/// (`_HLS_skip` is 9 bytes, each byte at most 3 encoded characters).
const MAX_ENCODED_KEY_LEN: usize = 27;

/// What `_HLS_skip` asked for (§6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SkipRequest {
    /// No `_HLS_skip` directive: a full playlist.
    #[default]
    No,
    /// `_HLS_skip=YES`: skip older media segments.
    Yes,
    /// `_HLS_skip=v2`: also skip older EXT-X-DATERANGE tags.
    V2,
}

/// The Delivery Directives of one playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockingQuery {
    /// `_HLS_msn`: block until this media sequence number is available.
    pub msn: Option<u64>,
    /// `_HLS_part`: with `msn`, block until this Part Index of segment `msn`.
    pub part: Option<u32>,
    /// `_HLS_skip`: a Playlist Delta Update was asked for.
    pub skip: SkipRequest,
}

/// Why a query string was refused; every variant maps to HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query string is longer than [`MAX_QUERY_LEN`].
    #[error("query string longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    /// A directive appeared more than once.
    #[error("directive {0} given more than once")]
    Duplicate(&'static str),
    /// A numeric directive was empty, not a decimal integer, or out of range.
    #[error("directive {0} is not a decimal integer in range")]
    BadNumber(&'static str),
    /// `_HLS_skip` had a value other than `YES` or `v2`.
    #[error("_HLS_skip must be YES or v2")]
    BadSkip,
    /// `_HLS_part` without `_HLS_msn` (§6.2.5.2: MUST return Bad Request).
    #[error("_HLS_part given without _HLS_msn")]
    PartWithoutMsn,
    /// A directive's value had a malformed or non-UTF-8 percent-encoding.
    #[error("malformed percent-encoding in directive {0}")]
    BadEncoding(&'static str),
}

const MSN: &str = "_HLS_msn";
const PART: &str = "_HLS_part";
const SKIP: &str = "_HLS_skip";

/// Parse the raw query string (without the leading `?`). Keys and values may be
/// percent-encoded; other keys are ignored. Work is linear in the input and bounded
/// by [`MAX_QUERY_LEN`].
pub fn parse_query(q: &str) -> Result<BlockingQuery, QueryError> {
    if q.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    let mut out = BlockingQuery::default();
    let mut seen_skip = false;
    for pair in q.split('&') {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = directive_name(raw_key) else {
            continue;
        };
        let value = percent_decode(raw_value).ok_or(QueryError::BadEncoding(name))?;
        match name {
            MSN => {
                if out.msn.is_some() {
                    return Err(QueryError::Duplicate(MSN));
                }
                out.msn = Some(decimal(&value).ok_or(QueryError::BadNumber(MSN))?);
            }
            PART => {
                if out.part.is_some() {
                    return Err(QueryError::Duplicate(PART));
                }
                let n = decimal(&value).and_then(|n| u32::try_from(n).ok());
                out.part = Some(n.ok_or(QueryError::BadNumber(PART))?);
            }
            _ => {
                if seen_skip {
                    return Err(QueryError::Duplicate(SKIP));
                }
                seen_skip = true;
                // §6.2.5.1: an enumerated-string, so case-sensitive.
                out.skip = match value.as_str() {
                    "YES" => SkipRequest::Yes,
                    "v2" => SkipRequest::V2,
                    _ => return Err(QueryError::BadSkip),
                };
            }
        }
    }
    if out.part.is_some() && out.msn.is_none() {
        return Err(QueryError::PartWithoutMsn);
    }
    Ok(out)
}

/// The directive a raw key names, if any. Keys that cannot be ours are rejected
/// before decoding, so long or malformed foreign keys cost nothing.
fn directive_name(raw_key: &str) -> Option<&'static str> {
    if raw_key.len() > MAX_ENCODED_KEY_LEN {
        return None;
    }
    let key = percent_decode(raw_key)?;
    [MSN, PART, SKIP].into_iter().find(|d| *d == key)
}

/// A decimal-integer (§4.2): one or more ASCII digits, nothing else.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// RFC 3986 percent-decoding; `None` on a truncated escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex)?;
            let lo = bytes.get(i + 2).copied().and_then(hex)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(msn: Option<u64>, part: Option<u32>, skip: SkipRequest) -> BlockingQuery {
        BlockingQuery { msn, part, skip }
    }

    #[test]
    fn empty_and_foreign_keys() {
        assert_eq!(parse_query(""), Ok(BlockingQuery::default()));
        assert_eq!(
            parse_query("token=abc%ZZ&&=&x&_hls_msn=zz&_HLS_msnx=1&cb=123"),
            Ok(BlockingQuery::default())
        );
    }

    #[test]
    fn directives() {
        assert_eq!(
            parse_query("_HLS_msn=273&_HLS_part=2"),
            Ok(q(Some(273), Some(2), SkipRequest::No))
        );
        assert_eq!(
            parse_query("cb=9&_HLS_skip=YES&_HLS_msn=0"),
            Ok(q(Some(0), None, SkipRequest::Yes))
        );
        assert_eq!(
            parse_query("_HLS_skip=v2"),
            Ok(q(None, None, SkipRequest::V2))
        );
        assert_eq!(
            parse_query("_HLS_msn=18446744073709551615&_HLS_part=4294967295"),
            Ok(q(Some(u64::MAX), Some(u32::MAX), SkipRequest::No))
        );
        // Leading zeros are still a decimal-integer.
        assert_eq!(
            parse_query("_HLS_msn=007"),
            Ok(q(Some(7), None, SkipRequest::No))
        );
    }

    #[test]
    fn percent_encoded_keys_and_values() {
        assert_eq!(
            parse_query("%5FHLS%5Fmsn=%31%32&_HLS_part=%33&%5fHLS_skip=%59ES"),
            Ok(q(Some(12), Some(3), SkipRequest::Yes))
        );
    }

    #[test]
    fn every_error() {
        let long = format!("x={}", "a".repeat(MAX_QUERY_LEN));
        assert_eq!(parse_query(&long), Err(QueryError::TooLong));
        assert_eq!(
            parse_query("_HLS_msn=1&_HLS_msn=1"),
            Err(QueryError::Duplicate(MSN))
        );
        assert_eq!(
            parse_query("_HLS_msn=1&_HLS_part=1&%5FHLS_part=2"),
            Err(QueryError::Duplicate(PART))
        );
        assert_eq!(
            parse_query("_HLS_skip=YES&_HLS_skip=YES"),
            Err(QueryError::Duplicate(SKIP))
        );
        for bad in [
            "_HLS_msn=",
            "_HLS_msn",
            "_HLS_msn=-1",
            "_HLS_msn=+1",
            "_HLS_msn=%2B1",
            "_HLS_msn=1.0",
            "_HLS_msn= 1",
            "_HLS_msn=0x10",
            "_HLS_msn=18446744073709551616",
            "_HLS_msn=١",
        ] {
            assert_eq!(parse_query(bad), Err(QueryError::BadNumber(MSN)), "{bad}");
        }
        for bad in ["_HLS_msn=1&_HLS_part=", "_HLS_msn=1&_HLS_part=4294967296"] {
            assert_eq!(parse_query(bad), Err(QueryError::BadNumber(PART)), "{bad}");
        }
        for bad in [
            "_HLS_skip=yes",
            "_HLS_skip=NO",
            "_HLS_skip=",
            "_HLS_skip=V2",
        ] {
            assert_eq!(parse_query(bad), Err(QueryError::BadSkip), "{bad}");
        }
        assert_eq!(parse_query("_HLS_part=1"), Err(QueryError::PartWithoutMsn));
        assert_eq!(
            parse_query("_HLS_msn=%3"),
            Err(QueryError::BadEncoding(MSN))
        );
        assert_eq!(
            parse_query("_HLS_skip=%FF"),
            Err(QueryError::BadEncoding(SKIP))
        );
    }

    #[test]
    fn hostile_input_is_bounded() {
        let many = "_HLS_x=1&".repeat(MAX_QUERY_LEN / 9);
        assert_eq!(parse_query(&many), Ok(BlockingQuery::default()));
        let zeros = format!("_HLS_msn={}1", "0".repeat(MAX_QUERY_LEN - 20));
        assert_eq!(parse_query(&zeros), Ok(q(Some(1), None, SkipRequest::No)));
        let pct = "%".repeat(MAX_QUERY_LEN);
        assert_eq!(parse_query(&pct), Ok(BlockingQuery::default()));
    }
}
