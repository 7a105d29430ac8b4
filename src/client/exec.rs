//! `run`: execute a command in a container and stream its I/O.
//!
//! Order on the connection: the main thread resolves the container and sends `CONTAINER_EXEC_CMD`;
//! from then on it only reads (`EXEC_OUTPUT`… then one `EXEC_END`), while background threads write
//! `CONTAINER_EXEC_INPUT` frames to a clone of the socket: the stdin thread sends input, the signal
//! thread (below) resizes. They share the clone behind a mutex held for a whole frame, so frames
//! can never interleave. The exit status is the command's, from `EXEC_END`'s `exec_end_reason`;
//! `run`'s own failures are 125.
//!
//! With a PTY and a terminal on stdin, our terminal drives the remote one: its size travels in
//! `CONTAINER_EXEC_CMD` (`exec_window`), it is put into raw mode (so ^C is byte 0x03, which the
//! remote pty turns into SIGINT for the command), and a signal thread sends a resize
//! (`CONTAINER_EXEC_INPUT` with `exec_window` and no input) on each SIGWINCH. The signals are
//! blocked before any thread exists (see [`Signals`]); SIGTERM, SIGHUP, SIGINT or SIGQUIT for
//! `control` itself restore the terminal and exit 128+N. On every other way out (the command's
//! end, a daemon error, a lost connection) the raw-mode guard's `Drop` restores it.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};

use super::session::{Session, container_request, request};
use super::term::{Signals, TermGuard, stdin_window_size};
use super::{ClientError, OutputMode, format};
use crate::protocol::{
    codec::encode_frame,
    pb::{ControllerToDaemon, WindowSize, controller_to_daemon::Command as Cmd, daemon_to_controller::Code},
};

/// Largest chunk of stdin sent in one `CONTAINER_EXEC_INPUT`.
pub const INPUT_CHUNK: usize = 4096;

/// Runs `argv` in `container` (with a PTY if `pty`) with our stdin as its input; returns the
/// command's exit status.
pub fn run(
    session: &mut Session<'_, UnixStream>,
    container: &str,
    pty: bool,
    argv: &[String],
) -> Result<u8, ClientError> {
    run_with_input(session, container, pty, argv, io::stdin())
}

/// [`run`] with `input` forwarded instead of stdin (the terminal is still put into raw mode when
/// `pty` is set and stdin is a terminal).
pub fn run_with_input(
    session: &mut Session<'_, UnixStream>,
    container: &str,
    pty: bool,
    argv: &[String],
    input: impl Read + Send + 'static,
) -> Result<u8, ClientError> {
    let status = session.resolve(container)?;
    if argv.is_empty() {
        return Err(ClientError::Internal("run without a command"));
    }
    // Our terminal drives the remote PTY only when stdin is one.
    let terminal = pty && io::stdin().is_terminal();
    // Blocked before the size is read (a SIGWINCH in between stays pending for the signal thread)
    // and before any thread is spawned.
    let signals = if terminal { Some(Signals::block()?) } else { None };
    let window = if terminal { stdin_window_size() } else { None };
    session.send(&exec_request(&status.uuid, argv, pty, window))?;
    let writer = FrameWriter::new(session.stream().try_clone().map_err(ClientError::Send)?);
    let raw = if terminal { TermGuard::raw()? } else { None };
    if let Some(signals) = signals {
        let resizer = writer.clone();
        signals.spawn(raw.as_ref().map(|g| g.saved().clone()), move || {
            send_resize(resizer.clone());
        });
    }
    // Detached: it ends at EOF (after telling the daemon, see `forward_stdin`) or when the socket
    // closes; the process exits without waiting for it.
    std::thread::spawn(move || forward_stdin(input, writer));
    let (code, message) = exec_output(session)?;
    if let Some(m) = message {
        eprintln!("control: {m}");
    }
    Ok(code)
}

/// `CONTAINER_EXEC_CMD`: run `argv` in the container `uuid`, with a pty of `window` (rows, cols)
/// if `pty`.
pub fn exec_request(
    uuid: &str,
    argv: &[String],
    pty: bool,
    window: Option<(u16, u16)>,
) -> ControllerToDaemon {
    ControllerToDaemon {
        exec_command: argv.first().cloned(),
        exec_args: argv.to_vec(),
        exec_pty: Some(pty),
        exec_window: window.map(window_size),
        ..container_request(Cmd::ContainerExecCmd, uuid)
    }
}

/// Reads the replies to a sent [`exec_request`] until its `EXEC_END`, writing the command's output
/// with [`Session::write_out`]. Returns the command's exit status and the daemon's message beside
/// it (why the command could not run, e.g. 125 with "run: ..."); an end without a status is the
/// daemon's failure.
pub fn exec_output(session: &mut Session<'_, UnixStream>) -> Result<(u8, Option<String>), ClientError> {
    loop {
        let reply = session.recv()?;
        match Code::try_from(reply.code) {
            Ok(Code::ExecOutput) => {
                if session.mode() != OutputMode::Proto
                    && let Some(bytes) = &reply.exec_output
                {
                    session.write_out(bytes)?;
                }
            }
            Ok(Code::ExecEnd) => {
                let code = format::exec_exit_status(reply.exec_end_reason.as_deref());
                return match code {
                    Some(code) => Ok((code, reply.error_message.clone())),
                    None => Err(ClientError::Daemon {
                        reply: format::reply_name(&reply),
                        message: reply.error_message.clone().or(reply.exec_end_reason.clone()),
                    }),
                };
            }
            Ok(Code::Response) => return Err(session.failure(&reply)),
            _ => {
                return Err(ClientError::UnexpectedReply {
                    expected: "EXEC_OUTPUT or EXEC_END",
                    got: format::reply_name(&reply),
                });
            }
        }
    }
}

/// The wire form of a terminal size (rows, columns).
pub fn window_size((rows, cols): (u16, u16)) -> WindowSize {
    WindowSize {
        rows: Some(rows.into()),
        cols: Some(cols.into()),
    }
}

/// A resize for the open exec stream: `CONTAINER_EXEC_INPUT` with `exec_window` and no input.
pub fn resize_request(size: (u16, u16)) -> ControllerToDaemon {
    ControllerToDaemon {
        exec_window: Some(window_size(size)),
        ..request(Cmd::ContainerExecInput)
    }
}

/// Sends stdin's current terminal size (after a SIGWINCH). A failed write means the session is
/// over; the main thread sees that on its side of the socket.
fn send_resize(mut writer: impl Write) {
    if let Some(size) = stdin_window_size() {
        let _ = writer.write_all(&encode_frame(&resize_request(size)));
    }
}

/// The socket shared by the threads that write frames. Frames must be written with `write_all`,
/// which holds the lock for the whole frame (a plain `write` may be partial and interleave).
#[derive(Debug, Clone)]
pub struct FrameWriter(Arc<Mutex<UnixStream>>);

impl FrameWriter {
    /// Shares `stream` for writing.
    pub fn new(stream: UnixStream) -> Self {
        Self(Arc::new(Mutex::new(stream)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnixStream> {
        // A writer that panicked mid-frame leaves nothing to repair here: the daemon will see a
        // broken frame either way.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// Copies `input` to the daemon as `CONTAINER_EXEC_INPUT` frames until EOF or a write error (the
/// session is over). The wire field is a string: invalid UTF-8 becomes U+FFFD, but a character
/// split between two reads is kept whole.
///
/// At the end of `input` (or when it cannot be read any more) one last `CONTAINER_EXEC_INPUT`
/// with our `exec_input_eof` tells the daemon: without a pty it closes the command's stdin, with
/// one it types the terminal's EOF character. (A terminal in raw mode never reads as ended: its ^D
/// is forwarded as a byte.) Upstream's daemon ignores the field.
pub fn forward_stdin(input: impl Read, mut writer: impl Write) {
    if forward_input(input, &mut writer, None) == InputEnd::Ended {
        let _ = writer.write_all(&encode_frame(&eof_request()));
    }
}

/// How [`forward_input`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEnd {
    /// The input ended (EOF, or it could not be read any more).
    Ended,
    /// The escape byte was typed.
    Escaped,
    /// Writing to the daemon failed: the session is over.
    Closed,
}

/// Copies `input` as [`forward_stdin`] does, without the end-of-input message, stopping at the
/// first `escape` byte (which is not sent).
pub fn forward_input(mut input: impl Read, mut writer: impl Write, escape: Option<u8>) -> InputEnd {
    let mut buf = vec![0u8; INPUT_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut escaped = false;
    loop {
        let mut n = match input.read(&mut buf[..INPUT_CHUNK - pending.len().min(3)]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(at) = escape.and_then(|e| buf[..n].iter().position(|b| *b == e)) {
            n = at;
            escaped = true;
        }
        pending.extend_from_slice(&buf[..n]);
        let (text, rest) = split_utf8(&pending);
        pending = rest;
        if !text.is_empty() && writer.write_all(&encode_frame(&input_request(text))).is_err() {
            return InputEnd::Closed;
        }
        if escaped {
            return InputEnd::Escaped;
        }
    }
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending).into_owned();
        if writer.write_all(&encode_frame(&input_request(text))).is_err() {
            return InputEnd::Closed;
        }
    }
    InputEnd::Ended
}

/// Input for the open exec (or console) stream: `CONTAINER_EXEC_INPUT` with `exec_input`.
pub fn input_request(text: String) -> ControllerToDaemon {
    ControllerToDaemon {
        exec_input: Some(text),
        ..request(Cmd::ContainerExecInput)
    }
}

/// The end of the client's input: `CONTAINER_EXEC_INPUT` with `exec_input_eof` and no input.
pub fn eof_request() -> ControllerToDaemon {
    ControllerToDaemon {
        exec_input_eof: Some(true),
        ..request(Cmd::ContainerExecInput)
    }
}

/// Splits `bytes` into lossy UTF-8 text and an incomplete character at the end (kept for the next
/// read; at most 3 bytes).
pub fn split_utf8(bytes: &[u8]) -> (String, Vec<u8>) {
    let mut cut = bytes.len();
    // An incomplete sequence at the end: a lead byte within the last 3 bytes whose sequence
    // does not fit.
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        let len = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            0x80..=0xbf => continue,
            _ => break,
        };
        if len > back && std::str::from_utf8(&bytes[bytes.len() - back..]).is_err() {
            cut = bytes.len() - back;
        }
        break;
    }
    (
        String::from_utf8_lossy(&bytes[..cut]).into_owned(),
        bytes[cut..].to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::protocol::codec::read_frame;

    #[test]
    fn split_keeps_an_incomplete_character() {
        let s = "aé€😀".as_bytes();
        assert_eq!(split_utf8(s), ("aé€😀".to_owned(), vec![]));
        let (t, r) = split_utf8(&s[..s.len() - 1]);
        assert_eq!(t, "aé€");
        assert_eq!(r, s[s.len() - 4..s.len() - 1].to_vec());
        let (t, r) = split_utf8(&[b'a', 0xc3]);
        assert_eq!((t.as_str(), r), ("a", vec![0xc3]));
        let (t, r) = split_utf8(&[b'a', 0xff]);
        assert_eq!((t.as_str(), r), ("a\u{fffd}", vec![]));
    }

    #[test]
    fn a_resize_is_exec_input_with_a_window_and_no_input() {
        let msg = resize_request((37, 101));
        assert_eq!(msg.command, Cmd::ContainerExecInput as i32);
        assert_eq!(msg.exec_input, None);
        let w = msg.exec_window.unwrap();
        assert_eq!((w.rows, w.cols), (Some(37), Some(101)));
        // The daemon decodes it as a resize without input.
        let decoded = crate::protocol::command::Command::try_from(msg).unwrap();
        assert_eq!(
            decoded,
            crate::protocol::command::Command::ExecInput {
                input: String::new(),
                window: Some((37, 101)),
                eof: false,
            }
        );
    }

    #[test]
    fn the_end_of_input_is_exec_input_with_eof_and_no_input() {
        let msg = eof_request();
        assert_eq!((msg.exec_input.as_deref(), msg.exec_window), (None, None));
        let decoded = crate::protocol::command::Command::try_from(msg).unwrap();
        assert_eq!(
            decoded,
            crate::protocol::command::Command::ExecInput {
                input: String::new(),
                window: None,
                eof: true,
            }
        );
    }

    #[test]
    fn frames_of_two_writers_do_not_interleave() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let w = FrameWriter::new(a);
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        if t == 0 {
                            send_frame(w.clone(), &resize_request((1, 2)));
                        } else {
                            forward_stdin(&[b'x'; 3 * INPUT_CHUNK][..], w.clone());
                        }
                    }
                })
            })
            .collect();
        let reader = std::thread::spawn(move || {
            let (mut resizes, mut bytes, mut eofs) = (0, 0, 0);
            while let Some(frame) = read_frame(&mut b).unwrap() {
                let msg = ControllerToDaemon::decode(frame.as_slice()).unwrap();
                match (msg.exec_input, msg.exec_input_eof) {
                    (Some(i), None) => bytes += i.len(),
                    (None, Some(true)) => eofs += 1,
                    (None, None) => resizes += 1,
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            (resizes, bytes, eofs)
        });
        for t in threads {
            t.join().unwrap();
        }
        drop(w);
        assert_eq!(reader.join().unwrap(), (50, 50 * 3 * INPUT_CHUNK, 50));
    }

    fn send_frame(mut w: FrameWriter, msg: &ControllerToDaemon) {
        w.write_all(&encode_frame(msg)).unwrap();
    }

    #[test]
    fn stdin_is_forwarded_in_chunks() {
        let input: Vec<u8> = (0..10_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut wire = Vec::new();
        forward_stdin(input.as_slice(), &mut wire);
        let mut r = wire.as_slice();
        let mut got = String::new();
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut r).unwrap() {
            frames.push(ControllerToDaemon::decode(frame.as_slice()).unwrap());
        }
        // The last frame says the input ended, and only that.
        assert_eq!(frames.pop(), Some(eof_request()));
        for msg in frames {
            assert_eq!(msg.command, Cmd::ContainerExecInput as i32);
            assert_eq!(msg.exec_input_eof, None);
            let chunk = msg.exec_input.unwrap();
            assert!(chunk.len() <= INPUT_CHUNK);
            got.push_str(&chunk);
        }
        assert_eq!(got.as_bytes(), input.as_slice());
    }
}
