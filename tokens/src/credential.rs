//! The one playback credential of a viewer request: where a token may be (a `/t/TOKEN/`
//! path or a `token` query parameter), and the rule that a request carries at most one,
//! spelled so that every reader (the token check, the admission webhook, a shared
//! cache) reads the same one.

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
    fn query_param_finds_a_named_value() {
        assert_eq!(query_param("a=1&token=x.y&b", "token"), Some("x.y"));
        assert_eq!(query_param("a=1", "token"), None);
    }
}
