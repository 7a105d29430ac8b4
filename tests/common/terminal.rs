//! A terminal for tests that drive `control` interactively (`run` with a pty, `console`): a pty
//! pair whose slave is `control`'s stdin, stdout and stderr, while the test reads and types on the
//! master.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    os::fd::{AsFd, OwnedFd},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::termios::{LocalFlags, Termios, tcgetattr},
};

use super::{CONTROL, Daemon};

/// Every wait on the terminal.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The test's terminal.
pub struct Terminal {
    /// The side the test reads and types on.
    pub master: OwnedFd,
    /// `control`'s side.
    pub slave: OwnedFd,
    /// Everything read from the master so far.
    pub seen: Vec<u8>,
}

impl Terminal {
    /// A new pty of `rows` × `cols`.
    pub fn open(rows: u16, cols: u16) -> Terminal {
        let p = nix::pty::openpty(None, None).unwrap();
        cml::sys::pty::set_window_size(p.slave.as_fd(), rows, cols).unwrap();
        Terminal {
            master: p.master,
            slave: p.slave,
            seen: Vec::new(),
        }
    }

    /// The terminal's current settings.
    pub fn settings(&self) -> Termios {
        tcgetattr(&self.slave).unwrap()
    }

    /// `control -s SOCKET ARGS…` with the slave as its stdin, stdout and stderr.
    pub fn control(&self, d: &Daemon, args: &[&str]) -> Child {
        Command::new(CONTROL)
            .arg("-s")
            .arg(&d.socket)
            .args(args)
            .stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .stdout(Stdio::from(self.slave.try_clone().unwrap()))
            .stderr(Stdio::from(self.slave.try_clone().unwrap()))
            .spawn()
            .unwrap()
    }

    /// Reads the master until `needle` shows up after byte `from` of [`Terminal::seen`] (panics
    /// after [`TIMEOUT`]); returns the index just past it.
    pub fn expect(&mut self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let hay = &self.seen[from.min(self.seen.len())..];
            if let Some(i) = hay.windows(needle.len()).position(|w| w == needle.as_bytes()) {
                return from + i + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} on the terminal within {TIMEOUT:?}; it shows {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::from(left.as_millis().min(1000) as u16);
            if poll(&mut fds, ms).unwrap() == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                // EIO: no slave is open any more (we keep one, so this means a bug).
                r => panic!(
                    "terminal read: {r:?}; it shows {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Types `bytes` on the terminal.
    pub fn type_bytes(&self, bytes: &[u8]) {
        assert_eq!(nix::unistd::write(&self.master, bytes).unwrap(), bytes.len());
    }

    /// What was shown so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until `control` has put the terminal into raw mode.
    pub fn wait_raw(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while self
            .settings()
            .local_flags
            .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG)
        {
            assert!(Instant::now() < deadline, "control never made the terminal raw");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits for `child` to exit (killing it after [`TIMEOUT`]).
pub fn wait(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("control did not exit within {TIMEOUT:?} ({what})");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
