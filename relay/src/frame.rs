//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes of a
//! protobuf message. Works on any tokio byte stream (quinn's `SendStream`/`RecvStream`
//! implement the tokio traits). Lengths are checked before anything is allocated, so a
//! hostile peer cannot make us buffer more than the limit.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest control message (requests, replies, playlist states, object headers).
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Largest object (init segment, part or segment) carried after a header.
pub const MAX_OBJECT_LEN: u64 = 64 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed (reset, connection lost, ...).
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The length prefix or object length exceeds the limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Limit in force.
        max: u64,
    },
    /// The bytes are not the expected message.
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl FrameError {
    /// Whether the peer broke the protocol (as opposed to the transport failing).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::Decode(_) | Self::Truncated
        )
    }
}

/// Encodes `msg` as one frame.
pub fn encode<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_u32(len as u32);
    msg.encode(&mut buf).expect("buffer has the capacity");
    buf.freeze()
}

/// Writes one frame. Fails (without writing) if the message exceeds the control limit.
pub async fn write_msg<W, M>(w: &mut W, msg: &M) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    M: prost::Message,
{
    let len = msg.encoded_len();
    if len > MAX_CONTROL_MESSAGE {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_CONTROL_MESSAGE as u64,
        });
    }
    w.write_all(&encode(msg)).await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes. `Ok(None)` when the stream ended cleanly
/// before the frame began.
pub async fn read_msg<R, M>(r: &mut R, max: usize) -> Result<Option<M>, FrameError>
where
    R: AsyncRead + Unpin,
    M: prost::Message + Default,
{
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max as u64,
        });
    }
    let mut buf = vec![0u8; len];
    read_exact(r, &mut buf).await?;
    Ok(Some(M::decode(&buf[..])?))
}

/// Reads exactly `len` raw bytes (an object body), refusing lengths above `max`.
pub async fn read_body<R>(r: &mut R, len: u64, max: u64) -> Result<Bytes, FrameError>
where
    R: AsyncRead + Unpin,
{
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len as usize];
    read_exact(r, &mut buf).await?;
    Ok(Bytes::from(buf))
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Fetch, SubscribeReply};

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let msg = Fetch {
            stream: "s".into(),
            name: "seg-1.m4s".into(),
        };
        write_msg(&mut a, &msg).await.unwrap();
        write_msg(
            &mut a,
            &SubscribeReply {
                found: true,
                epoch: 0,
            },
        )
        .await
        .unwrap();
        drop(a);
        let got: Option<Fetch> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await.unwrap();
        assert_eq!(got, Some(msg));
        let got: Option<SubscribeReply> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await.unwrap();
        assert_eq!(
            got,
            Some(SubscribeReply {
                found: true,
                epoch: 0,
            })
        );
        let end: Option<SubscribeReply> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&(MAX_CONTROL_MESSAGE as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let r: Result<Option<Fetch>, _> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::TooLarge { .. })), "{r:?}");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        let r: Result<Option<Fetch>, _> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        let r: Result<Option<Fetch>, _> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let r: Result<Option<Fetch>, _> = read_msg(&mut b, MAX_CONTROL_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Decode(_))), "{r:?}");

        let r = read_body(&mut b, MAX_OBJECT_LEN + 1, MAX_OBJECT_LEN).await;
        assert!(matches!(r, Err(FrameError::TooLarge { .. })));
    }
}
