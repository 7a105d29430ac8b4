//! Pseudo-terminal window sizes: `TIOCGWINSZ` / `TIOCSWINSZ` on a terminal descriptor.
//!
//! On a pty either side may be passed: the kernel applies both ioctls to the slave's settings.
//! Setting a size that differs from the current one sends SIGWINCH to the terminal's foreground
//! process group (which is how a resized `control run` reaches the command in the container).
//! Both calls are quick ioctls that never wait.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Sets the window size of the terminal `fd` (rows, columns; the pixel sizes are cleared).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points to a live,
    // initialised local of that type; `fd` is a descriptor borrowed for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    Errno::result(ret).map(drop)
}

/// The window size of the terminal `fd`: (rows, columns).
pub fn window_size(fd: BorrowedFd<'_>) -> nix::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a live
    // local of that type that we own exclusively; `fd` is a descriptor borrowed for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    Errno::result(ret).map(|_| (ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::AsFd;

    use nix::sys::termios::{LocalFlags, tcgetattr};

    use super::*;

    #[test]
    fn a_size_set_on_the_master_is_seen_on_both_sides() {
        let p = nix::pty::openpty(None, None).unwrap();
        set_window_size(p.master.as_fd(), 37, 101).unwrap();
        assert_eq!(window_size(p.slave.as_fd()).unwrap(), (37, 101));
        assert_eq!(window_size(p.master.as_fd()).unwrap(), (37, 101));
        set_window_size(p.slave.as_fd(), 10, 20).unwrap();
        assert_eq!(window_size(p.master.as_fd()).unwrap(), (10, 20));
    }

    #[test]
    fn openpty_applies_a_size_and_keeps_isig() {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = nix::pty::openpty(Some(&ws), None).unwrap();
        assert_eq!(window_size(p.slave.as_fd()).unwrap(), (24, 80));
        // A new pty's line discipline turns ^C into SIGINT: `control run` relies on that.
        let t = tcgetattr(&p.slave).unwrap();
        assert!(t.local_flags.contains(LocalFlags::ISIG));
        assert_eq!(
            t.control_chars[nix::sys::termios::SpecialCharacterIndices::VINTR as usize],
            3
        );
    }

    #[test]
    fn a_non_terminal_is_refused() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(window_size(f.as_fd()), Err(Errno::ENOTTY));
        assert_eq!(set_window_size(f.as_fd(), 1, 1), Err(Errno::ENOTTY));
    }
}
