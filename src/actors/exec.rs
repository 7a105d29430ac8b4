//! The daemon side of `control run`: a pty (or pipes) for the command's stdio, an exec helper forked
//! by the launcher, and a stream of `EXEC_OUTPUT` replies ending with exactly one `EXEC_END`
//! whose `exec_end_reason` is the command's exit status. `EXEC_INPUT` frames of the same connection
//! are written to the command's stdin. With a pty, the window size of `CONTAINER_EXEC_CMD` is the
//! pty's initial size, and each resize (`Input::Resize`) is applied to the master, which makes the
//! kernel send SIGWINCH to the command; with pipes resizes are ignored. If the client goes away
//! first, the command's session gets SIGHUP, then SIGKILL — also when it leaves before the command
//! has started (see `Reaper`).
//!
//! The end of the client's input (`Input::Eof`, our `exec_input_eof`) closes our end of the
//! command's stdin pipe, so `control run C nopty cat < FILE` ends. A pty cannot be half-closed:
//! there, the terminal's EOF character is written instead, as a user would type it (see
//! [`crate::sys::pty::eof_input`]), once. Input after the end is dropped.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::unix::pipe,
    sync::mpsc,
};
use tracing::{debug, info};
use uuid::Uuid;

use super::{Services, lifecycle::ExecInfo, manager::Lookup};
use crate::{
    launcher::{
        Request,
        plan::{ExecEvent, ExecPlan},
    },
    protocol::pb::{DaemonToController, daemon_to_controller::Code},
};

fn end(code: i32, error: Option<String>) -> DaemonToController {
    DaemonToController {
        code: Code::ExecEnd as i32,
        exec_end_reason: Some(code.to_string()),
        error_message: error,
        ..Default::default()
    }
}

fn output(bytes: &[u8]) -> DaemonToController {
    DaemonToController {
        code: Code::ExecOutput as i32,
        exec_output: Some(bytes.to_vec()),
        ..Default::default()
    }
}

/// What the client sends into an open exec stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for the command's stdin.
    Data(String),
    /// The client's terminal changed size (rows, cols).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// The client's input has ended.
    Eof,
}

/// The exec helper's report lines (`ExecEvent` JSON).
type StatusLines = tokio::io::Lines<BufReader<tokio::net::UnixStream>>;

/// Kills the command's session if the stream ends before the command did.
///
/// The stream (this future) is dropped when the client goes away, at any await: also while the
/// launcher forks the helper, or before the helper's `Started` line was read. Then the PID is not
/// known yet, and the reaper keeps the status socket instead: on drop it hands it to a thread
/// that reads on (what was buffered first) until `Started`, and kills then; `Finished` or the end
/// of the socket (the helper never ran, or is gone) leave nothing to kill.
struct Reaper {
    pid: Option<i32>,
    status: Option<StatusLines>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill_session(pid);
        } else if let Some(status) = self.status.take() {
            kill_when_started(status);
        }
    }
}

/// SIGHUP to the command's session (its process group: the command called setsid), SIGKILL a
/// second later.
fn kill_session(pid: i32) {
    let pgrp = nix::unistd::Pid::from_raw(-pid);
    let _ = nix::sys::signal::kill(pgrp, nix::sys::signal::Signal::SIGHUP);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let _ = nix::sys::signal::kill(pgrp, nix::sys::signal::Signal::SIGKILL);
    });
}

/// Reads the rest of the helper's report on a thread of its own (the runtime may be going away
/// with the dropped stream) and kills the command once it has started.
fn kill_when_started(status: StatusLines) {
    let reader = status.into_inner();
    let buffered = reader.buffer().to_vec();
    let Ok(stream) = reader.into_inner().into_std() else {
        return;
    };
    std::thread::spawn(move || {
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let input = std::io::Read::chain(std::io::Cursor::new(buffered), stream);
        let lines = std::io::BufRead::lines(std::io::BufReader::new(input));
        for line in lines {
            let Ok(line) = line else { return };
            match serde_json::from_str::<ExecEvent>(&line) {
                Ok(ExecEvent::Started { pid }) => {
                    info!(pid, "the client left before the command started; killing it");
                    return kill_session(pid);
                }
                Ok(ExecEvent::Finished { .. }) => return,
                Err(_) => {}
            }
        }
    });
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Runs one `run` request to its `EXEC_END`, sending every reply to `out`.
pub async fn run(
    s: Services,
    uuid: Uuid,
    argv: Vec<String>,
    pty: bool,
    window: Option<(u16, u16)>,
    mut input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::UnboundedSender<DaemonToController>,
) {
    let plan = match s.manager.send(Lookup(uuid)).await.ok().flatten() {
        Some(actor) => match actor.send(ExecInfo { argv, pty }).await {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => return drop(out.send(end(125, Some(format!("run: {e}"))))),
            Err(e) => return drop(out.send(end(125, Some(format!("run: {e}"))))),
        },
        None => return drop(out.send(end(125, Some(format!("run: no container with UUID {uuid}"))))),
    };
    if let Err(e) = stream(s, plan, window, &mut input, &out).await {
        let _ = out.send(end(125, Some(format!("run: {e}"))));
    }
}

async fn stream(
    s: Services,
    plan: ExecPlan,
    window: Option<(u16, u16)>,
    input: &mut mpsc::UnboundedReceiver<Input>,
    out: &mpsc::UnboundedSender<DaemonToController>,
) -> io::Result<()> {
    // stdio for the command: one pty, or three pipes.
    // With a pty, `resize` is a master descriptor for window size changes. The pty keeps the
    // default line discipline (ISIG on): a ^C from the client's raw terminal arrives as byte 0x03
    // and becomes SIGINT for the command's foreground process group, as on a local terminal.
    let mut resize: Option<OwnedFd> = None;
    let (our_out, our_err, our_in, theirs): (OwnedFd, Option<OwnedFd>, OwnedFd, [OwnedFd; 3]) = if plan.pty {
        let size = window.map(|(rows, cols)| nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let p = nix::pty::openpty(size.as_ref(), None).map_err(io::Error::from)?;
        let master_in = p.master.try_clone()?;
        resize = Some(p.master.try_clone()?);
        let (s1, s2) = (p.slave.try_clone()?, p.slave.try_clone()?);
        (p.master, None, master_in, [p.slave, s1, s2])
    } else {
        // Close-on-exec: a program cmld runs meanwhile (mkfs) must not hold the write end of
        // stdin open, or the command would never read the end of its input. The launcher
        // receives its own copies.
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        (out_r, Some(err_r), in_w, [in_r, out_w, err_w])
    };
    let (status_ours, status_theirs) = std::os::unix::net::UnixStream::pair()?;
    status_ours.set_nonblocking(true)?;
    // From here on a dropped stream kills the command, whenever it starts (see `Reaper`).
    let mut reaper = Reaper {
        pid: None,
        status: Some(BufReader::new(tokio::net::UnixStream::from_std(status_ours)?).lines()),
    };
    let pty = plan.pty;
    let req = Request::Exec(plan);
    let rt = s.manager_rt();
    // The descriptors move into the blocking task: if this stream is dropped meanwhile, they must
    // stay open (and their numbers unused by anything else) until the launcher has passed them on.
    let spawned = actix_rt::task::spawn_blocking(move || {
        let fds = [
            theirs[0].as_raw_fd(),
            theirs[1].as_raw_fd(),
            theirs[2].as_raw_fd(),
            status_theirs.as_raw_fd(),
        ];
        let r = rt.launcher.request(&req, &fds);
        drop((theirs, status_theirs));
        r
    })
    .await
    .map_err(io::Error::other)?;
    spawned.map_err(io::Error::other)?;

    set_nonblocking(&our_out)?;
    set_nonblocking(&our_in)?;
    let mut reader = pipe::Receiver::from_owned_fd_unchecked(our_out)?;
    let mut err_reader = match our_err {
        Some(fd) => {
            set_nonblocking(&fd)?;
            Some(pipe::Receiver::from_owned_fd_unchecked(fd)?)
        }
        None => None,
    };
    let mut writer = Some(pipe::Sender::from_owned_fd_unchecked(our_in)?);
    // Resizes keep coming after a failed stdin write or the end of input, so the input stream
    // has its own flag.
    let mut input_open = true;
    // Input not yet taken by the command's stdin. It is written only as the pipe (or pty) takes
    // it, beside reading the output: a write that waited for a command that is itself waiting for
    // us to read its output would never end.
    let mut stdin_buf: Vec<u8> = Vec::new();
    // The client's input ended: stdin is closed once `stdin_buf` is written.
    let mut stdin_eof = false;
    // Whether the last input byte did not end a line (see `Input::Eof`).
    let mut line_pending = false;
    let mut buf = vec![0u8; 16 * 1024];
    let mut ebuf = vec![0u8; 16 * 1024];
    let (mut out_open, mut err_open) = (true, err_reader.is_some());
    let mut finished: Option<(i32, Option<String>)> = None;
    loop {
        if finished.is_some() && !out_open && !err_open {
            break;
        }
        tokio::select! {
            r = reader.read(&mut buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false, // EIO on a pty once the last slave closes
                Ok(n) => { let _ = out.send(output(&buf[..n])); }
            },
            r = async { match err_reader.as_mut() { Some(e) => e.read(&mut ebuf).await, None => Ok(0) } }, if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => { let _ = out.send(output(&ebuf[..n])); }
            },
            line = async {
                match reaper.status.as_mut() {
                    Some(status) => status.next_line().await,
                    None => std::future::pending().await,
                }
            }, if finished.is_none() => match line {
                Ok(Some(l)) => match serde_json::from_str::<ExecEvent>(&l) {
                    Ok(ExecEvent::Started { pid }) => reaper.pid = Some(pid),
                    Ok(ExecEvent::Finished { code, error }) => {
                        reaper.pid = None;
                        reaper.status = None;
                        finished = Some((code, error));
                        // The command is gone; output still buffered is drained below, then we end.
                        if plan_is_pty(&err_reader) { out_open = drain_pty(&mut reader, &mut buf, out).await; }
                    }
                    Err(_) => {}
                },
                _ => {
                    reaper.status = None;
                    finished = Some((125, Some("the exec helper ended without a status".into())));
                }
            },
            r = async { match writer.as_mut() { Some(w) => w.write(&stdin_buf).await, None => std::future::pending().await } },
                if !stdin_buf.is_empty() => match r {
                Ok(n) => {
                    stdin_buf.drain(..n);
                    if stdin_buf.is_empty() && stdin_eof { writer = None; }
                }
                // The command closed its stdin (EPIPE): what it did not read is dropped.
                Err(_) => { writer = None; stdin_buf.clear(); }
            },
            data = input.recv(), if input_open && stdin_buf.len() < MAX_STDIN_BUFFER => match data {
                Some(Input::Data(d)) => {
                    if writer.is_some() && !stdin_eof && !d.is_empty() {
                        stdin_buf.extend_from_slice(d.as_bytes());
                        line_pending = !d.ends_with('\n');
                    }
                }
                Some(Input::Eof) => {
                    if writer.is_some() && !stdin_eof {
                        stdin_eof = true;
                        // With a pty, the EOF character ends the input (the writer is only one of
                        // the master's descriptors); without, closing the pipe does.
                        if let (true, Some(fd)) = (pty, resize.as_ref()) {
                            match crate::sys::pty::eof_input(fd.as_fd(), line_pending) {
                                Ok(bytes) => stdin_buf.extend_from_slice(&bytes),
                                Err(e) => debug!(error = %e, "no EOF character for the exec pty"),
                            }
                        }
                        if stdin_buf.is_empty() { writer = None; }
                    }
                }
                Some(Input::Resize { rows, cols }) => {
                    // Pipes have no size: ignored without a pty. The ioctl never blocks; the kernel
                    // sends SIGWINCH to the command's foreground process group if the size changed.
                    if let Some(fd) = resize.as_ref()
                        && let Err(e) = crate::sys::pty::set_window_size(fd.as_fd(), rows, cols)
                    {
                        debug!(rows, cols, error = %e, "resize of the exec pty failed");
                    }
                }
                None => {
                    input_open = false;
                    writer = None;
                    stdin_buf.clear();
                }
            },
        }
    }
    let (code, error) = finished.unwrap_or((125, None));
    debug!(code, "exec ended");
    let _ = out.send(end(code, error));
    info!(code, "run finished");
    Ok(())
}

/// Most input held for a command that does not read it yet; more waits in the session's queue.
const MAX_STDIN_BUFFER: usize = 256 * 1024;

fn plan_is_pty(err_reader: &Option<pipe::Receiver>) -> bool {
    err_reader.is_none()
}

/// After the command ended, reads what is left in the pty without waiting for more (other
/// processes of the session may keep the slave open). Returns whether the reader stays open.
async fn drain_pty(
    reader: &mut pipe::Receiver,
    buf: &mut [u8],
    out: &mpsc::UnboundedSender<DaemonToController>,
) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(20), reader.read(buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let _ = out.send(output(&buf[..n]));
            }
            _ => return false,
        }
    }
}
