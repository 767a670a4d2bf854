//! Response bodies that hand already-built `Bytes` to hyper without copying: a single
//! buffer, or a list of buffers (a segment is the concatenation of its parts).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body made of zero or more shared buffers, sent in order.
///
/// The first buffer is held apart from the rest, so the common single-buffer body (a
/// playlist, a part) costs no allocation besides the response itself.
#[derive(Debug, Default, Clone)]
pub struct ChunksBody {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
    remaining: u64,
}

impl ChunksBody {
    /// One buffer.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            remaining: bytes.len() as u64,
            first: Some(bytes).filter(|b| !b.is_empty()),
            rest: VecDeque::new(),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Buffers sent back to back, without copying.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let mut chunks = chunks.into_iter().filter(|c| !c.is_empty());
        let first = chunks.next();
        let rest: VecDeque<Bytes> = chunks.collect();
        let remaining = first.iter().chain(&rest).map(|c| c.len() as u64).sum();
        Self {
            first,
            rest,
            remaining,
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl From<String> for ChunksBody {
    fn from(s: String) -> Self {
        Self::full(Bytes::from(s))
    }
}

impl From<&'static str> for ChunksBody {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl Body for ChunksBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.first.take() {
            Some(c) => Some(c),
            None => self.rest.pop_front(),
        };
        match next {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_are_sent_in_order_with_exact_size() {
        let body = ChunksBody::from_chunks([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"abcde");
    }

    #[tokio::test]
    async fn one_buffer_and_empty_bodies() {
        let b = Bytes::from_static(b"xyz");
        let body = ChunksBody::full(b.clone());
        assert_eq!((body.len(), body.is_end_stream()), (3, false));
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(collected, b);
        let empty = ChunksBody::full(Bytes::new());
        assert!(empty.is_empty() && empty.is_end_stream());
        let empty = ChunksBody::from_chunks([Bytes::new(), Bytes::new()]);
        assert!(empty.is_empty() && empty.is_end_stream());
        let collected = empty.collect().await.expect("infallible").to_bytes();
        assert!(collected.is_empty());
    }
}
