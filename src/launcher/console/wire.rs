//! The framing of the console socket: kind byte, 4-byte big-endian length, payload.

/// Client → monitor, first frame: attach (payload: rows, cols as big-endian u16, optional).
pub const ATTACH: u8 = b'A';
/// Client → monitor, first frame: follow the log.
pub const FOLLOW: u8 = b'F';
/// Both ways: console bytes.
pub const DATA: u8 = b'D';
/// Client → monitor: a new window size (rows, cols as big-endian u16).
pub const WINDOW: u8 = b'W';
/// Monitor → client: attached.
pub const OK: u8 = b'O';
/// Monitor → client: refused (payload: the reason); the monitor closes the connection.
pub const ERROR: u8 = b'E';
/// Monitor → follower: the log so far has been sent.
pub const SNAPSHOT_END: u8 = b'S';
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A window size payload.
pub fn window(rows: u16, cols: u16) -> [u8; 4] {
    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
    [r[0], r[1], c[0], c[1]]
}

/// Reads a window size payload.
pub fn parse_window(p: &[u8]) -> Option<(u16, u16)> {
    match p {
        [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// Collects bytes and cuts them into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if there is one; `Err` for a payload above [`MAX_PAYLOAD`].
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, usize> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(len);
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}
