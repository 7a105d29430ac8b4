//! Framing of the control socket: a 4-byte big-endian payload length, then the payload.
//!
//! The decoder yields raw payloads so the session can answer an undecodable message with
//! `CMD_FAILED`. A length prefix above [`MAX_FRAME`] is an error as soon as the prefix is seen: the
//! payload is never buffered, the session replies and closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::MAX_FRAME;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes exceeds the {max} byte limit", max = MAX_FRAME)]
    TooLarge {
        /// The announced payload length.
        len: usize,
    },
    /// The socket failed.
    #[error("socket i/o failed")]
    Io(#[from] std::io::Error),
}

/// Length-prefixed frame codec for the control socket (both directions).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge { len });
        }
        if src.len() < 4 + len {
            // No reserve for the announced length: memory grows only with bytes actually received,
            // so a peer that announces 64 MiB and sends little costs little.
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl<M: prost::Message> Encoder<M> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: M, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge { len });
        }
        dst.reserve(4 + len);
        dst.put_u32(len as u32);
        msg.encode(dst)
            .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
        Ok(())
    }
}

/// Encodes one message with its length prefix (for blocking clients).
pub fn encode_frame<M: prost::Message>(msg: &M) -> Vec<u8> {
    let payload = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads one length-prefixed payload from a blocking reader. `Ok(None)` on a clean EOF before the
/// prefix.
pub fn read_frame(r: &mut impl std::io::Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_for_more() {
        let mut c = FrameCodec;
        let mut b = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert!(c.decode(&mut b).unwrap().is_none());
        b.extend_from_slice(&[3, 0, 0]);
        assert_eq!(&c.decode(&mut b).unwrap().unwrap()[..], &[1, 2, 3]);
        assert!(c.decode(&mut b).unwrap().is_none());
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn zero_length_is_an_empty_frame() {
        let mut b = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(FrameCodec.decode(&mut b).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn oversize_prefix_fails_without_buffering() {
        let mut b = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        let err = FrameCodec.decode(&mut b).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len } if len == u32::MAX as usize));
        assert!(b.capacity() < 1024);
        let mut b = BytesMut::new();
        b.put_u32(MAX_FRAME as u32 + 1);
        assert!(FrameCodec.decode(&mut b).is_err());
        let mut b = BytesMut::new();
        b.put_u32(MAX_FRAME as u32);
        assert!(FrameCodec.decode(&mut b).unwrap().is_none());
    }
}
