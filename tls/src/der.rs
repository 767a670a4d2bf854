//! The few DER steps the TLS code takes by hand: reading one tag-length-value, writing
//! one, and an OID's arcs. Enough to walk to a certificate's subject and to wrap a
//! PKCS#1 or SEC1 key into PKCS#8 ([`crate::pki`]); every read is bounds-checked and
//! answers `None` on malformed input (the inputs were verified, or are an operator's
//! key file).

/// One DER tag-length-value: (tag, contents, the bytes after it).
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `tag`, the definite length of `contents`, `contents`.
pub fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// The arcs of an OID's contents (`2.5.4.3` from `55 04 03`).
pub fn oid_arcs(oid: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return None;
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == oid.len() {
            return None;
        }
    }
    (!arcs.is_empty()).then_some(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_oids() {
        let long = vec![7u8; 300];
        let enc = encode(0x04, &long);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(tlv(&enc), Some((0x04, &long[..], &[][..])));
        assert_eq!(encode(0x05, &[]), vec![0x05, 0x00]);
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            oid_arcs(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
            Some(vec![1, 2, 840, 10045, 3, 1, 7])
        );
        assert_eq!(oid_arcs(&[0x86]), None);
        assert_eq!(tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
