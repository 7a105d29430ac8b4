//! The daemon side of `control console` and `control logs`: a bridge between a control connection
//! and the console socket of the container's monitor (`<run>/<uuid>/console.sock`, protocol in
//! [`crate::launcher::console`]), or the console log the monitor keeps.
//!
//! - `console`: `ATTACH` with the client's window size; the monitor's `OK` becomes `RESPONSE:
//!   CMD_OK`, its `ERROR` (someone is attached already) a `CMD_FAILED` with its message. Then the
//!   guest's output goes out as `EXEC_OUTPUT`, the client's `CONTAINER_EXEC_INPUT` (text and
//!   `exec_window` resizes) goes in as `DATA` / `WINDOW`, and when the monitor closes the socket
//!   (the container ended) one `EXEC_END` says so. The client detaches by closing its connection:
//!   the session ends, this future is dropped and with it the socket, which frees the console.
//! - `logs`: the log file (a stopped container's last run; it is replaced atomically, so a read
//!   is always a whole file), the last `tail` lines of it, as `EXEC_OUTPUT` chunks and one
//!   `EXEC_END`. With `follow` on a running container, the monitor sends the log and then new
//!   output (`FOLLOW`), so nothing is lost or repeated between the two; the stream ends when the
//!   container does.
//!
//! Because the monitor serves the socket and writes the log, both work the same after a cmld
//! restart.

use std::path::PathBuf;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::mpsc,
};
use tracing::{debug, info};
use uuid::Uuid;

use super::{Services, exec::Input};
use crate::{
    launcher::console::{self, wire},
    protocol::{
        pb::{DaemonToController, daemon_to_controller::Code},
        reply,
    },
};

/// Largest `EXEC_OUTPUT` payload sent.
const CHUNK: usize = 16 * 1024;

fn output(bytes: &[u8]) -> DaemonToController {
    DaemonToController {
        code: Code::ExecOutput as i32,
        exec_output: Some(bytes.to_vec()),
        ..Default::default()
    }
}

fn end(reason: &str) -> DaemonToController {
    DaemonToController {
        code: Code::ExecEnd as i32,
        exec_end_reason: Some(reason.to_owned()),
        ..Default::default()
    }
}

/// Why the console of an attached user ended when the container did.
pub const STOPPED: &str = "the container stopped";

/// Frames read from the monitor's socket.
struct Frames {
    sock: tokio::net::unix::OwnedReadHalf,
    frames: wire::Decoder,
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame; `None` when the monitor closed the socket (or broke the protocol).
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            match self.frames.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.sock.read(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.frames.push(&self.buf[..n]),
            }
        }
    }
}

/// The run directory and state of a container that exists, or why not.
fn run_dir(s: &Services, uuid: &Uuid) -> Result<(PathBuf, crate::container::State), String> {
    match s.board.get(uuid) {
        Some(e) => Ok((s.rt.run_dir.join(uuid.to_string()), e.state)),
        None => Err(format!("no container with UUID {uuid}")),
    }
}

/// Connects to the console socket and sends the first frame.
async fn connect(
    dir: &std::path::Path,
    first: Vec<u8>,
) -> std::io::Result<(Frames, tokio::net::unix::OwnedWriteHalf)> {
    // The monitor binds the socket right after the init's exec, beside the start's reply: a
    // request that follows a start at once may be a moment early.
    let path = dir.join(console::SOCKET_FILE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let sock = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let (r, mut w) = sock.into_split();
    w.write_all(&first).await?;
    Ok((
        Frames {
            sock: r,
            frames: wire::Decoder::default(),
            buf: vec![0u8; CHUNK],
        },
        w,
    ))
}

/// Runs one `console` request until the container stops or the client goes away.
pub async fn attach(
    s: Services,
    uuid: Uuid,
    window: Option<(u16, u16)>,
    mut input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::UnboundedSender<DaemonToController>,
) {
    let (dir, state) = match run_dir(&s, &uuid) {
        Ok(d) => d,
        Err(e) => return drop(out.send(reply::failed(e))),
    };
    if !state.is_running() {
        return drop(out.send(reply::failed(format!(
            "console: container is {state}, not running (`control logs` shows what its console printed)"
        ))));
    }
    let hello = wire::encode(
        wire::ATTACH,
        &window
            .map(|(r, c)| wire::window(r, c).to_vec())
            .unwrap_or_default(),
    );
    let (mut from, mut to) = match connect(&dir, hello).await {
        Ok(c) => c,
        Err(e) => {
            return drop(out.send(reply::failed(format!(
                "console: cannot reach the console of container {uuid} (is it still starting?): {e}"
            ))));
        }
    };
    match from.next().await {
        Some((wire::OK, _)) => {
            let _ = out.send(reply::ok());
        }
        Some((wire::ERROR, why)) => {
            return drop(out.send(reply::failed(format!(
                "console: {}",
                String::from_utf8_lossy(&why)
            ))));
        }
        _ => return drop(out.send(reply::failed(format!("console: {STOPPED}")))),
    }
    info!(container = %uuid, "console attached");
    let mut input_open = true;
    loop {
        tokio::select! {
            frame = from.next() => match frame {
                Some((wire::DATA, bytes)) => {
                    for chunk in bytes.chunks(CHUNK) {
                        let _ = out.send(output(chunk));
                    }
                }
                Some(_) => {}
                None => {
                    let _ = out.send(end(STOPPED));
                    break;
                }
            },
            i = input.recv(), if input_open => {
                let frame = match i {
                    Some(Input::Data(text)) => wire::encode(wire::DATA, text.as_bytes()),
                    Some(Input::Resize { rows, cols }) => wire::encode(wire::WINDOW, &wire::window(rows, cols)),
                    // The end of one user's input does not end the guest's console.
                    Some(Input::Eof) => continue,
                    None => {
                        input_open = false;
                        continue;
                    }
                };
                if to.write_all(&frame).await.is_err() {
                    debug!(container = %uuid, "console input: the monitor is gone");
                    input_open = false;
                }
            }
        }
    }
    info!(container = %uuid, "console closed: the container stopped");
}

/// Runs one `logs` request to its `EXEC_END`.
pub async fn logs(
    s: Services,
    uuid: Uuid,
    tail: Option<u32>,
    follow: bool,
    out: mpsc::UnboundedSender<DaemonToController>,
) {
    let (dir, state) = match run_dir(&s, &uuid) {
        Ok(d) => d,
        Err(e) => return drop(out.send(reply::failed(e))),
    };
    let send_tail = |log: &[u8]| {
        let shown = match tail {
            Some(n) => console::tail_lines(log, n as usize),
            None => log,
        };
        for chunk in shown.chunks(CHUNK) {
            let _ = out.send(output(chunk));
        }
    };
    if follow
        && state.is_running()
        && let Ok((mut from, _to)) = connect(&dir, wire::encode(wire::FOLLOW, b"")).await
    {
        // The monitor sends the log so far, then what comes next, until the container ends.
        let mut snapshot = Vec::new();
        let mut live = false;
        while let Some((kind, bytes)) = from.next().await {
            match (live, kind) {
                (false, wire::DATA) => snapshot.extend_from_slice(&bytes),
                (false, wire::SNAPSHOT_END) => {
                    send_tail(&snapshot);
                    snapshot = Vec::new();
                    live = true;
                }
                (true, wire::DATA) => {
                    for chunk in bytes.chunks(CHUNK) {
                        let _ = out.send(output(chunk));
                    }
                }
                _ => {}
            }
        }
        if !live {
            send_tail(&snapshot);
        }
        let _ = out.send(end("0"));
        return;
    }
    let path = dir.clone();
    match actix_rt::task::spawn_blocking(move || console::read_log(&path)).await {
        Ok(Ok(log)) => {
            send_tail(&log);
            let _ = out.send(end("0"));
        }
        Ok(Err(e)) => {
            let _ = out.send(reply::failed(format!(
                "logs: cannot read {}: {e}",
                dir.join(console::LOG_FILE).display()
            )));
        }
        Err(e) => {
            let _ = out.send(reply::failed(format!("logs: {e}")));
        }
    }
}
