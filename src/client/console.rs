//! `console` (attach to a container's console) and `logs` (print what it captured).
//!
//! `console` works like `run` with a PTY (see [`super::exec`]): the terminal goes into raw mode,
//! SIGWINCH becomes a resize, a stdin thread forwards input as `CONTAINER_EXEC_INPUT` — so ^C and
//! every other key go to the guest — and the main thread prints `EXEC_OUTPUT`. The daemon first
//! answers `CMD_OK` (attached) or a failure (not running; someone else is attached). Three ways out,
//! each restoring the terminal: the escape byte Ctrl-] ([`ESCAPE`]) typed on stdin detaches (the
//! stdin thread shuts the connection down; the guest keeps running); `EXEC_END` means the container
//! stopped; a lost connection (cmld gone) is an error (exit status 3). SIGTERM, SIGHUP, SIGINT and
//! SIGQUIT sent to `control` restore the terminal and exit 128+N. With a stdin that is not a
//! terminal nothing is changed, and its end stops only the input.
//!
//! `logs` prints the `EXEC_OUTPUT` bytes as they come until `EXEC_END` (at once without `-f`, at the
//! container's stop with `-f`); with `--json`, one document `{"log": TEXT}` at the end.

use std::io::{self, IsTerminal};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::exec::{FrameWriter, InputEnd, forward_input, resize_request, window_size};
use super::session::{Session, container_request};
use super::term::{Signals, TermGuard, stdin_window_size};
use super::{ClientError, OutputMode, format};
use crate::protocol::{
    codec::encode_frame,
    pb::{
        ControllerToDaemon,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
};

/// The byte that detaches from a console: Ctrl-] (as telnet and virsh).
pub const ESCAPE: u8 = 0x1d;

/// Attaches to the console of `container` until detached or the container stops.
pub fn attach(session: &mut Session<'_, UnixStream>, container: &str) -> Result<u8, ClientError> {
    let status = session.resolve(container)?;
    let terminal = io::stdin().is_terminal();
    // Blocked before any thread exists (see `Signals`).
    let signals = if terminal { Some(Signals::block()?) } else { None };
    let window = if terminal { stdin_window_size() } else { None };
    let reply = session.call(&console_request(&status.uuid, window))?;
    session.expect_response(&reply, &[Response::CmdOk])?;
    eprintln!(
        "control: attached to the console of {} (detach with Ctrl-])",
        status.name
    );
    let stream = session.stream().try_clone().map_err(ClientError::Send)?;
    let writer = FrameWriter::new(stream.try_clone().map_err(ClientError::Send)?);
    let raw = if terminal { TermGuard::raw()? } else { None };
    if let Some(signals) = signals {
        let resizer = writer.clone();
        signals.spawn(raw.as_ref().map(|g| g.saved().clone()), move || {
            if let Some(size) = stdin_window_size() {
                let mut w = resizer.clone();
                let _ = io::Write::write_all(&mut w, &encode_frame(&resize_request(size)));
            }
        });
    }
    let detached = Arc::new(AtomicBool::new(false));
    let flag = detached.clone();
    // Detached: it ends at the escape, EOF or when the socket closes; the process exits without
    // waiting for it.
    std::thread::spawn(move || {
        if forward_input(io::stdin(), writer, Some(ESCAPE)) == InputEnd::Escaped {
            flag.store(true, Ordering::SeqCst);
            // Ends the main thread's read; cmld sees the connection close and lets the console go.
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    let end = match console_output(session) {
        Ok(reason) => Ok(Some(reason)),
        Err(_) if detached.load(Ordering::SeqCst) => Ok(None),
        Err(e) => Err(e),
    };
    // The terminal is ours again before anything else is printed.
    drop(raw);
    match end? {
        None => eprintln!(
            "\r\ncontrol: detached from the console of {}; it keeps running",
            status.name
        ),
        Some(reason) => eprintln!("\r\ncontrol: console of {} closed: {reason}", status.name),
    }
    Ok(0)
}

/// `CONTAINER_CONSOLE`: attach to the console of container `uuid` with a terminal of `window`
/// (rows, cols). The daemon answers `CMD_OK` or a failure, then streams (see [`console_output`]).
pub fn console_request(uuid: &str, window: Option<(u16, u16)>) -> ControllerToDaemon {
    ControllerToDaemon {
        exec_window: window.map(window_size),
        ..container_request(Cmd::ContainerConsole, uuid)
    }
}

/// Reads an attached console's replies until its `EXEC_END`, writing the guest's output with
/// [`Session::write_out`]; returns the end's reason (the daemon's text, e.g. "the container stopped").
/// A lost connection, which is also how a detach ends, is an error.
pub fn console_output(session: &mut Session<'_, UnixStream>) -> Result<String, ClientError> {
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
            Ok(Code::ExecEnd) => return Ok(reply.exec_end_reason.unwrap_or_default()),
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

/// Prints the console log of `container` (the last `tail` lines; with `follow`, then new output
/// until the container stops).
pub fn logs<S: io::Read + io::Write>(
    session: &mut Session<'_, S>,
    container: &str,
    tail: Option<u32>,
    follow: bool,
) -> Result<u8, ClientError> {
    let status = session.resolve(container)?;
    let msg = ControllerToDaemon {
        logs_tail: tail,
        logs_follow: Some(follow),
        ..container_request(Cmd::ContainerLogs, &status.uuid)
    };
    session.send(&msg)?;
    let mut collected = Vec::new();
    loop {
        let reply = session.recv()?;
        match Code::try_from(reply.code) {
            Ok(Code::ExecOutput) => {
                let bytes = reply.exec_output.unwrap_or_default();
                match session.mode() {
                    OutputMode::Human => session.write_out(&bytes)?,
                    OutputMode::Json => collected.extend_from_slice(&bytes),
                    OutputMode::Proto => {}
                }
            }
            Ok(Code::ExecEnd) => {
                let log = String::from_utf8_lossy(&collected).into_owned();
                session.json(&json!({ "log": log }))?;
                return Ok(0);
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
