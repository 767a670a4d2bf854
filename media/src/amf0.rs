//! AMF0 (Action Message Format version 0): the value model, a depth-limited
//! decoder and an encoder, as used by RTMP command and data messages.
//!
//! Follows the "Action Message Format -- AMF 0" specification (Adobe, 2007).
//! Types that RTMP peers never need from us (references, typed objects, XML,
//! record sets, the AVM+ switch) are rejected rather than half-supported.

use bytes::{BufMut, Bytes, BytesMut};

/// Deepest nesting of objects / arrays the decoder accepts.
pub const MAX_DEPTH: usize = 16;

// Type markers, AMF0 spec section 2.1.
const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE-754 double (marker 0x00).
    Number(f64),
    /// Boolean (marker 0x01).
    Boolean(bool),
    /// UTF-8 string (marker 0x02); encoded as a long string if longer than 65535 bytes.
    String(String),
    /// Anonymous object (marker 0x03): properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    /// Null (marker 0x05).
    Null,
    /// Undefined (marker 0x06).
    Undefined,
    /// ECMA (associative) array (marker 0x08): properties in wire order.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Strict (dense) array (marker 0x0A).
    StrictArray(Vec<Amf0Value>),
    /// Date (marker 0x0B): milliseconds since the Unix epoch and a time zone
    /// field that the spec says is reserved (should be 0).
    Date {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        millis: f64,
        /// Reserved time-zone field, kept as sent.
        tz: i16,
    },
    /// Long UTF-8 string (marker 0x0C).
    LongString(String),
}

impl Amf0Value {
    /// The text of a `String` or `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Number`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of a `Boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The first property named `key` of an `Object` or `EcmaArray`.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Builds an `Object` from `(key, value)` pairs.
    pub fn object<K: Into<String>>(props: impl IntoIterator<Item = (K, Amf0Value)>) -> Self {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Builds a `String`.
    pub fn string(s: impl Into<String>) -> Self {
        Amf0Value::String(s.into())
    }
}

/// Why AMF0 input could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Amf0Error {
    /// The input ended in the middle of a value.
    #[error("AMF0 input is truncated")]
    Truncated,
    /// A type marker this decoder does not support (or that does not exist).
    #[error("unsupported AMF0 type marker {0:#04x}")]
    UnsupportedMarker(u8),
    /// A reference (marker 0x07); we never emit objects worth referencing, so
    /// a peer that sends one is not speaking to us.
    #[error("AMF0 references are not supported")]
    Reference,
    /// Objects / arrays nested deeper than [`MAX_DEPTH`].
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A string that is not valid UTF-8.
    #[error("AMF0 string is not valid UTF-8")]
    InvalidUtf8,
    /// An object-end marker where a value was expected.
    #[error("unexpected AMF0 object-end marker")]
    UnexpectedObjectEnd,
}

/// Decodes every value in `input`, in order.
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut reader = Reader { input, pos: 0 };
    let mut values = Vec::new();
    while reader.remaining() > 0 {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

/// Decodes one value from the start of `input`; returns it and the number of
/// bytes it used.
pub fn decode(input: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated)?;
        let bytes = self.input.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.array::<1>()?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Amf0Error> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Amf0Error::InvalidUtf8)
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| Amf0Error::Truncated)?;
        self.utf8(len)
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => Amf0Value::Number(self.f64()?),
            BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            STRING => Amf0Value::String(self.short_string()?),
            OBJECT => Amf0Value::Object(self.properties(depth, None)?),
            NULL => Amf0Value::Null,
            UNDEFINED => Amf0Value::Undefined,
            REFERENCE => return Err(Amf0Error::Reference),
            ECMA_ARRAY => {
                // The count is only a hint (spec 2.10); the object-end marker is
                // authoritative.
                let count = self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth, Some(count))?)
            }
            OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            STRICT_ARRAY => {
                let count = self.u32()?;
                let depth = Self::nest(depth)?;
                // Every element takes at least one byte, so the remaining input
                // bounds what a truthful count can be.
                let count = usize::try_from(count).map_err(|_| Amf0Error::Truncated)?;
                if count > self.remaining() {
                    return Err(Amf0Error::Truncated);
                }
                // Capped anyway: each element's in-memory form is larger than its
                // one-byte minimum on the wire.
                let mut items = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    items.push(self.value(depth)?);
                }
                Amf0Value::StrictArray(items)
            }
            DATE => {
                let millis = self.f64()?;
                let tz = i16::from_be_bytes(self.array()?);
                Amf0Value::Date { millis, tz }
            }
            LONG_STRING => Amf0Value::LongString(self.long_string()?),
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    fn nest(depth: usize) -> Result<usize, Amf0Error> {
        let next = depth + 1;
        if next > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        Ok(next)
    }

    /// Reads `key, value` pairs up to the empty-key + object-end terminator
    /// (spec 2.5). `ecma_count`: some encoders omit the terminator of an ECMA
    /// array at the very end of a message; accept that once `count` entries
    /// have been read.
    fn properties(
        &mut self,
        depth: usize,
        ecma_count: Option<u32>,
    ) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let depth = Self::nest(depth)?;
        let mut props = Vec::new();
        loop {
            if self.remaining() == 0 {
                if let Some(count) = ecma_count {
                    if u32::try_from(props.len()).is_ok_and(|n| n >= count) {
                        return Ok(props);
                    }
                }
            }
            let key = self.short_string()?;
            if key.is_empty() && self.peek() == Some(OBJECT_END) {
                self.pos += 1;
                return Ok(props);
            }
            let value = self.value(depth)?;
            props.push((key, value));
        }
    }
}

/// Appends the encoding of `value` to `out`.
///
/// Never fails: a `String` over 65535 bytes is written as a long string, and a
/// property key over 65535 bytes is cut at the last character boundary that fits.
pub fn encode(value: &Amf0Value, out: &mut BytesMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.put_u8(STRING);
                out.put_u16(len);
                out.put_slice(s.as_bytes());
            }
            Err(_) => put_long_string(s, out),
        },
        Amf0Value::Object(props) => {
            out.put_u8(OBJECT);
            put_properties(props, out);
        }
        Amf0Value::Null => out.put_u8(NULL),
        Amf0Value::Undefined => out.put_u8(UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            put_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(STRICT_ARRAY);
            // A count is meaningless past u32::MAX; such a value cannot come
            // from the wire, so write what fits.
            let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.put_u32(count);
            for item in items.iter().take(count as usize) {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, tz } => {
            out.put_u8(DATE);
            out.put_f64(*millis);
            out.put_i16(*tz);
        }
        Amf0Value::LongString(s) => put_long_string(s, out),
    }
}

/// Encodes `values` back to back.
pub fn encode_all(values: &[Amf0Value]) -> Bytes {
    let mut out = BytesMut::new();
    for value in values {
        encode(value, &mut out);
    }
    out.freeze()
}

fn put_long_string(s: &str, out: &mut BytesMut) {
    out.put_u8(LONG_STRING);
    let bytes = truncate_utf8(s, u32::MAX as usize);
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes.as_bytes());
}

fn put_properties(props: &[(String, Amf0Value)], out: &mut BytesMut) {
    for (key, value) in props {
        let key = truncate_utf8(key, usize::from(u16::MAX));
        out.put_u16(u16::try_from(key.len()).unwrap_or(u16::MAX));
        out.put_slice(key.as_bytes());
        encode(value, out);
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Amf0Value> {
        vec![
            Amf0Value::string("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([
                ("app", Amf0Value::string("live")),
                ("flashVer", Amf0Value::string("FMLE/3.0")),
                ("fpad", Amf0Value::Boolean(false)),
                ("nested", Amf0Value::object([("x", Amf0Value::Null)])),
            ]),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::EcmaArray(vec![
                ("width".into(), Amf0Value::Number(1920.0)),
                ("encoder".into(), Amf0Value::string("obs")),
            ]),
            Amf0Value::StrictArray(vec![Amf0Value::Number(-0.5), Amf0Value::Boolean(true)]),
            Amf0Value::Date {
                millis: 1.7e12,
                tz: -60,
            },
            Amf0Value::LongString("long".into()),
            Amf0Value::object(Vec::<(String, Amf0Value)>::new()),
            Amf0Value::object([("", Amf0Value::Number(3.0))]),
        ]
    }

    #[test]
    fn round_trip_every_type() {
        let values = sample();
        let bytes = encode_all(&values);
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn decode_reports_consumed_length() {
        let bytes = encode_all(&[Amf0Value::string("ab"), Amf0Value::Null]);
        let (value, used) = decode(&bytes).unwrap();
        assert_eq!(value, Amf0Value::string("ab"));
        assert_eq!(used, 5);
    }

    #[test]
    fn known_wire_bytes() {
        // Spec 2.4 / 2.2: string marker, u16 BE length, bytes; number marker + f64 BE.
        let bytes = encode_all(&[Amf0Value::string("ab"), Amf0Value::Number(1.0)]);
        assert_eq!(
            &bytes[..],
            &[2, 0, 2, b'a', b'b', 0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]
        );
        let obj = encode_all(&[Amf0Value::object([("a", Amf0Value::Null)])]);
        assert_eq!(&obj[..], &[3, 0, 1, b'a', 5, 0, 0, 9]);
    }

    #[test]
    fn helpers() {
        let values = sample();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[8].as_str(), Some("long"));
        assert_eq!(values[1].as_f64(), Some(1.0));
        assert_eq!(values[0].as_f64(), None);
        assert_eq!(
            values[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert_eq!(
            values[2].get("fpad").and_then(Amf0Value::as_bool),
            Some(false)
        );
        assert_eq!(
            values[5].get("width").and_then(Amf0Value::as_f64),
            Some(1920.0)
        );
        assert_eq!(values[2].get("missing"), None);
        assert_eq!(values[1].get("app"), None);
    }

    #[test]
    fn long_strings_switch_marker() {
        let s = "x".repeat(70_000);
        let bytes = encode_all(&[Amf0Value::String(s.clone())]);
        assert_eq!(bytes[0], LONG_STRING);
        assert_eq!(decode_all(&bytes).unwrap(), vec![Amf0Value::LongString(s)]);
    }

    #[test]
    fn long_keys_truncate_on_char_boundary() {
        let key = "é".repeat(40_000); // 80_000 bytes
        let bytes = encode_all(&[Amf0Value::object([(key, Amf0Value::Null)])]);
        let decoded = decode_all(&bytes).unwrap();
        let Amf0Value::Object(props) = &decoded[0] else {
            panic!("not an object: {decoded:?}");
        };
        assert_eq!(props[0].0.len(), 65_534);
    }

    #[test]
    fn ecma_array_without_terminator_at_end_is_accepted() {
        let mut bytes = vec![ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'a', NULL];
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Null)])]
        );
        // But an object needs one.
        bytes[0] = OBJECT;
        bytes.drain(1..5);
        assert_eq!(decode_all(&bytes), Err(Amf0Error::Truncated));
    }

    #[test]
    fn every_truncation_is_an_error() {
        // ECMA arrays are left out: their terminator is optional at the end of input.
        let values: Vec<_> = sample()
            .into_iter()
            .filter(|v| !matches!(v, Amf0Value::EcmaArray(_)))
            .collect();
        let bytes = encode_all(&values);
        // Cutting inside the stream must fail, except at value boundaries.
        let mut boundaries = vec![0];
        let mut pos = 0;
        while pos < bytes.len() {
            pos += decode(&bytes[pos..]).unwrap().1;
            boundaries.push(pos);
        }
        for cut in 0..bytes.len() {
            let result = decode_all(&bytes[..cut]);
            if boundaries.contains(&cut) {
                assert!(result.is_ok(), "cut {cut}");
            } else {
                assert!(result.is_err(), "cut {cut} decoded: {result:?}");
            }
        }
    }

    #[test]
    fn rejections() {
        assert_eq!(decode_all(&[REFERENCE, 0, 1]), Err(Amf0Error::Reference));
        assert_eq!(decode_all(&[0x10]), Err(Amf0Error::UnsupportedMarker(0x10)));
        assert_eq!(decode_all(&[0x04]), Err(Amf0Error::UnsupportedMarker(0x04)));
        assert_eq!(
            decode_all(&[OBJECT_END]),
            Err(Amf0Error::UnexpectedObjectEnd)
        );
        assert_eq!(
            decode_all(&[STRING, 0, 2, 0xFF, 0xFE]),
            Err(Amf0Error::InvalidUtf8)
        );
        // A strict array that claims more elements than bytes remain.
        assert_eq!(
            decode_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, NULL]),
            Err(Amf0Error::Truncated)
        );
        // A long string that claims 4 GiB.
        assert_eq!(
            decode_all(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
    }

    #[test]
    fn depth_is_limited() {
        let mut nested = Amf0Value::Null;
        for _ in 0..MAX_DEPTH {
            nested = Amf0Value::StrictArray(vec![nested]);
        }
        let ok = encode_all(std::slice::from_ref(&nested));
        assert_eq!(decode_all(&ok).unwrap(), vec![nested.clone()]);
        let too_deep = encode_all(&[Amf0Value::object([("k", nested)])]);
        assert_eq!(decode_all(&too_deep), Err(Amf0Error::TooDeep));
        // Deeply nested garbage fails fast instead of recursing.
        let bomb = [OBJECT, 0, 1, b'k'].repeat(100_000);
        assert_eq!(decode_all(&bomb), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encode_all(&sample());
        let mut decoded_some = 0;
        for round in 0..5_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                valid.to_vec()
            } else {
                (0..(next() % 64)).map(|_| (next() % 16) as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            if decode_all(&buf).is_ok() {
                decoded_some += 1;
            }
        }
        assert!(decoded_some > 0);
    }
}
