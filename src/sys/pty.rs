//! Pseudo-terminal window sizes (`TIOCGWINSZ` / `TIOCSWINSZ`) and the end-of-input character.
//!
//! On a pty either side may be passed: the kernel applies both ioctls (and `tcgetattr`) to the
//! slave's settings. Setting a size that differs from the current one sends SIGWINCH to the
//! terminal's foreground process group (which is how a resized `control run` reaches the command
//! in the container). All calls are quick ioctls that never wait.

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

/// What to write to the master of `fd`'s pty so that the program reading the slave sees the end
/// of its input, as a user typing the terminal's EOF character (VEOF, normally ^D) would cause.
///
/// In canonical mode (ICANON) VEOF hands over the pending line without its newline; only a VEOF
/// at the start of a line makes `read` return 0. So when `line_pending` (the last byte written did
/// not end a line), VEOF is sent twice: once to deliver the partial line, once for the end.
/// Without ICANON the program reads VEOF as a byte and decides itself (a shell's line editor
/// ends on it): sent once. Empty when the terminal has no EOF character (VEOF disabled).
pub fn eof_input(fd: BorrowedFd<'_>, line_pending: bool) -> nix::Result<Vec<u8>> {
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices, tcgetattr};
    let t = tcgetattr(fd)?;
    let veof = t.control_chars[SpecialCharacterIndices::VEOF as usize];
    // _POSIX_VDISABLE is 0 on Linux.
    if veof == 0 {
        return Ok(Vec::new());
    }
    let times = if line_pending && t.local_flags.contains(LocalFlags::ICANON) {
        2
    } else {
        1
    };
    Ok(vec![veof; times])
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
    fn eof_input_ends_the_reader_in_canonical_mode() {
        use std::io::{Read, Write};
        let p = nix::pty::openpty(None, None).unwrap();
        assert_eq!(eof_input(p.master.as_fd(), false).unwrap(), vec![4]);
        assert_eq!(eof_input(p.master.as_fd(), true).unwrap(), vec![4, 4]);
        let mut master = std::fs::File::from(p.master);
        master.write_all(b"partial").unwrap();
        master
            .write_all(&eof_input(master.as_fd(), true).unwrap())
            .unwrap();
        let mut slave = std::fs::File::from(p.slave);
        let mut buf = [0u8; 64];
        assert_eq!(slave.read(&mut buf).unwrap(), 7, "the partial line");
        assert_eq!(slave.read(&mut buf).unwrap(), 0, "then the end of input");
    }

    #[test]
    fn a_non_terminal_is_refused() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(window_size(f.as_fd()), Err(Errno::ENOTTY));
        assert_eq!(set_window_size(f.as_fd(), 1, 1), Err(Errno::ENOTTY));
    }
}
