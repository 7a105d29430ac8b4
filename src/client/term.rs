//! Terminal handling: reading a PIN with echo off, and raw mode for `run` with a PTY. Both are
//! guards that restore the saved settings on `Drop`, so every return path (including `?`) puts the
//! terminal back.
//!
//! `run` with a PTY also handles signals itself, in one thread ([`Signals`]): SIGWINCH becomes a
//! resize for the remote terminal, and SIGTERM, SIGHUP, SIGINT and SIGQUIT (which raw mode no longer
//! produces from the keyboard, but `kill` and a hung-up terminal still do) restore the terminal
//! before the process exits with 128+N — a guard's `Drop` does not run when a signal ends us.
//!
//! TODO: a signal arriving while echo is off (Ctrl-C at the PIN prompt) ends the process before the
//! guard runs; restore from a signal handler.

use std::io::{self, BufRead, IsTerminal, Write};
use std::os::fd::AsFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

use super::ClientError;

/// Restores stdin's terminal settings when dropped.
#[derive(Debug)]
pub struct TermGuard {
    saved: Termios,
}

impl TermGuard {
    /// Turns echo off on stdin (keeping the newline echo, as upstream does); `None` when stdin is
    /// not a terminal.
    pub fn echo_off() -> Result<Option<Self>, ClientError> {
        Self::modify(SetArg::TCSAFLUSH, |t| {
            t.local_flags.remove(LocalFlags::ECHO);
            t.local_flags.insert(LocalFlags::ECHONL);
        })
    }

    /// Puts stdin into raw mode (`cfmakeraw`: input, output and local flags); `None` when stdin is
    /// not a terminal.
    pub fn raw() -> Result<Option<Self>, ClientError> {
        Self::modify(SetArg::TCSADRAIN, termios::cfmakeraw)
    }

    /// The settings restored on `Drop`.
    pub fn saved(&self) -> &Termios {
        &self.saved
    }

    fn modify(when: SetArg, change: impl FnOnce(&mut Termios)) -> Result<Option<Self>, ClientError> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin).map_err(ClientError::Terminal)?;
        let mut changed = saved.clone();
        change(&mut changed);
        termios::tcsetattr(&stdin, when, &changed).map_err(ClientError::Terminal)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        // Nothing sensible to do if this fails: the terminal is gone or not ours any more.
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Stdin's terminal size (rows, columns); `None` when stdin is not a terminal or has no size set.
pub fn stdin_window_size() -> Option<(u16, u16)> {
    crate::sys::pty::window_size(io::stdin().as_fd())
        .ok()
        .filter(|&(rows, cols)| rows > 0 && cols > 0)
}

/// The signals `run` handles in its signal thread while it drives a remote terminal.
pub const RUN_SIGNALS: [Signal; 5] = [
    Signal::SIGWINCH,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
];

/// [`RUN_SIGNALS`] blocked in the calling thread, to be taken by [`Signals::spawn`]'s thread with
/// `sigwait`. Threads inherit the mask of the thread that creates them, so this must happen before
/// any other thread is spawned, or one of those could still receive the signals. Until `spawn`,
/// dropping it restores the previous mask; after it the signals stay blocked for good, and the
/// signal thread handles them until the process ends.
#[derive(Debug)]
pub struct Signals {
    set: SigSet,
    previous: Option<SigSet>,
}

impl Signals {
    /// Blocks [`RUN_SIGNALS`] in the calling thread (call it before spawning threads).
    pub fn block() -> Result<Self, ClientError> {
        let set: SigSet = RUN_SIGNALS.into_iter().collect();
        let previous = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(ClientError::Terminal)?;
        Ok(Self {
            set,
            previous: Some(previous),
        })
    }

    /// Starts the signal thread: SIGWINCH calls `on_resize`; any other of [`RUN_SIGNALS`] puts
    /// `restore` back on stdin (if given) and ends the process with 128+N, as a shell reports a
    /// command killed by signal N.
    pub fn spawn(mut self, restore: Option<Termios>, mut on_resize: impl FnMut() + Send + 'static) {
        self.previous = None;
        let set = self.set;
        std::thread::spawn(move || {
            loop {
                match set.wait() {
                    Ok(Signal::SIGWINCH) => on_resize(),
                    Ok(sig) => {
                        if let Some(t) = &restore {
                            // TCSANOW: never wait for output to drain on a terminal that may be gone.
                            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, t);
                        }
                        std::process::exit(128 + sig as i32);
                    }
                    // sigwait fails only for an invalid set; nothing is left to handle.
                    Err(_) => return,
                }
            }
        });
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.thread_set_mask();
        }
    }
}

/// Where PINs come from (the terminal or stdin in the binary, a script in tests).
pub trait PinSource {
    /// Shows `prompt` to the user and reads one PIN.
    fn read_pin(&mut self, prompt: &str) -> Result<String, ClientError>;
}

/// Reads PINs from stdin: prompt on stderr, echo off on a terminal, one line otherwise.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdinPin;

impl PinSource for StdinPin {
    fn read_pin(&mut self, prompt: &str) -> Result<String, ClientError> {
        let mut stderr = io::stderr();
        // The prompt is best effort: a closed stderr must not stop a scripted PIN.
        let _ = stderr.write_all(prompt.as_bytes());
        let _ = stderr.flush();
        let guard = TermGuard::echo_off()?;
        let mut line = String::new();
        let n = io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(ClientError::ReadPin)?;
        drop(guard);
        if n == 0 {
            return Err(ClientError::ReadPin(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stdin closed before a PIN was entered",
            )));
        }
        Ok(strip_newline(line))
    }
}

/// Removes one trailing `\n`, only if present (upstream always cut the last character).
pub fn strip_newline(mut line: String) -> String {
    if line.ends_with('\n') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_present_newline_is_stripped() {
        assert_eq!(strip_newline("1234\n".into()), "1234");
        assert_eq!(strip_newline("1234".into()), "1234");
        assert_eq!(strip_newline("\n".into()), "");
    }
}
