//! Terminal handling: reading a PIN with echo off, and raw mode for `run` with a PTY. Both are
//! guards that restore the saved settings on `Drop`, so every return path (including `?`) puts the
//! terminal back.
//!
//! TODO: a signal arriving while echo is off (Ctrl-C at the PIN prompt) ends the process before the
//! guard runs; restore from a signal handler. Raw mode clears ISIG, so `run` is not affected.

use std::io::{self, BufRead, IsTerminal, Write};

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
