//! The control socket's frame decoder on arbitrary byte streams, fed in chunks of the size the
//! first input byte names: it must yield exactly the complete frames, fail only on a length prefix
//! above the 64 MiB limit, keep memory proportional to the bytes received (never to the announced
//! length), and agree with the blocking reader `read_frame` that `control` uses.

#![no_main]

use std::io::Cursor;

use bytes::BytesMut;
use cml::protocol::{
    MAX_FRAME,
    codec::{FrameCodec, FrameError, read_frame},
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    let mut codec = FrameCodec;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut too_large = None;
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len }) => {
                    assert!(len > MAX_FRAME);
                    too_large = Some(len);
                    break 'feed;
                }
                Err(FrameError::Io(e)) => panic!("i/o error from an in-memory buffer: {e}"),
            }
        }
        assert!(
            buf.capacity() <= 2 * stream.len() + 64,
            "{} byte buffer for {} bytes of input",
            buf.capacity(),
            stream.len()
        );
    }
    if too_large.is_none() {
        // A truncated tail is an error at the end of the stream, never a frame.
        match codec.decode_eof(&mut buf) {
            Ok(None) => assert!(buf.is_empty()),
            Ok(Some(_)) => panic!("a frame out of a truncated tail"),
            Err(_) => assert!(!buf.is_empty()),
        }
    }

    let mut r = Cursor::new(stream);
    let mut read = Vec::new();
    let end = loop {
        match read_frame(&mut r) {
            Ok(Some(f)) => read.push(f),
            other => break other,
        }
    };
    assert_eq!(read.len(), frames.len());
    for (a, b) in read.iter().zip(&frames) {
        assert_eq!(&a[..], &b[..]);
    }
    match (end, too_large) {
        (Err(FrameError::TooLarge { len }), Some(want)) => assert_eq!(len, want),
        (Err(FrameError::TooLarge { len }), None) => panic!("read_frame refused {len}, decoder did not"),
        (_, Some(want)) => panic!("decoder refused {want}, read_frame did not"),
        (Ok(None) | Err(FrameError::Io(_)), None) => {}
        (Ok(Some(_)), None) => unreachable!(),
    }
});
