//! `run`: execute a command in a container and stream its I/O.
//!
//! Order on the connection: the main thread resolves the container and sends `CONTAINER_EXEC_CMD`;
//! from then on it only reads (`EXEC_OUTPUT`… then one `EXEC_END`), while a background thread owns
//! a clone of the socket and is its only writer, sending stdin as `CONTAINER_EXEC_INPUT` frames —
//! so frames from the two threads can never interleave. The exit status is the command's, from
//! `EXEC_END`'s `exec_end_reason`; `run`'s own failures are 125.
//!
//! TODO: pass the window size at start and on SIGWINCH.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::session::{Session, container_request, request};
use super::term::TermGuard;
use super::{ClientError, OutputMode, format};
use crate::protocol::{
    codec::encode_frame,
    pb::{ControllerToDaemon, controller_to_daemon::Command as Cmd, daemon_to_controller::Code},
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
    let Some(cmd) = argv.first() else {
        return Err(ClientError::Internal("run without a command"));
    };
    let msg = ControllerToDaemon {
        exec_command: Some(cmd.clone()),
        exec_args: argv.to_vec(),
        exec_pty: Some(pty),
        ..container_request(Cmd::ContainerExecCmd, &status.uuid)
    };
    session.send(&msg)?;
    let writer = session.stream().try_clone().map_err(ClientError::Send)?;
    // Raw mode only makes sense when our stdin drives the remote PTY.
    let _raw = if pty { TermGuard::raw()? } else { None };
    // Detached: it ends at EOF or when the socket closes; the process exits without waiting for it.
    // TODO: with a PTY and piped stdin, the remote side never sees an end of input.
    std::thread::spawn(move || forward_stdin(input, writer));
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
                return match (code, reply.error_message.clone()) {
                    (Some(code), message) => {
                        if let Some(m) = message {
                            eprintln!("control: {m}");
                        }
                        Ok(code)
                    }
                    (None, message) => Err(ClientError::Daemon {
                        reply: format::reply_name(&reply),
                        message: message.or(reply.exec_end_reason.clone()),
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

/// Copies `input` to the daemon as `CONTAINER_EXEC_INPUT` frames until EOF or a write error (the
/// session is over). The wire field is a string: invalid UTF-8 becomes U+FFFD, but a character
/// split between two reads is kept whole.
pub fn forward_stdin(mut input: impl Read, mut writer: impl Write) {
    let mut buf = vec![0u8; INPUT_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf[..INPUT_CHUNK - pending.len().min(3)]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let (text, rest) = split_utf8(&pending);
        pending = rest;
        if text.is_empty() {
            continue;
        }
        let msg = ControllerToDaemon {
            exec_input: Some(text),
            ..request(Cmd::ContainerExecInput)
        };
        if writer.write_all(&encode_frame(&msg)).is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending).into_owned();
        let msg = ControllerToDaemon {
            exec_input: Some(text),
            ..request(Cmd::ContainerExecInput)
        };
        let _ = writer.write_all(&encode_frame(&msg));
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
    fn stdin_is_forwarded_in_chunks() {
        let input: Vec<u8> = (0..10_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut wire = Vec::new();
        forward_stdin(input.as_slice(), &mut wire);
        let mut r = wire.as_slice();
        let mut got = String::new();
        while let Some(frame) = read_frame(&mut r).unwrap() {
            let msg = ControllerToDaemon::decode(frame.as_slice()).unwrap();
            assert_eq!(msg.command, Cmd::ContainerExecInput as i32);
            let chunk = msg.exec_input.unwrap();
            assert!(chunk.len() <= INPUT_CHUNK);
            got.push_str(&chunk);
        }
        assert_eq!(got.as_bytes(), input.as_slice());
    }
}
