//! Pseudo-terminals: window sizes (`TIOCGWINSZ` / `TIOCSWINSZ`), a new pair on the host's devpts
//! ([`open_pair`], for a container's console), and taking a terminal as controlling terminal and
//! stdio ([`become_stdio`]), and the end-of-input character.
//!
//! On a pty either side may be passed: the kernel applies both ioctls (and `tcgetattr`) to the
//! slave's settings. Setting a size that differs from the current one sends SIGWINCH to the
//! terminal's foreground process group (which is how a resized `control run` reaches the command
//! in the container). All calls are quick ioctls that never wait.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;

/// A pseudo-terminal pair. Both descriptors are close-on-exec; the slave was opened with
/// `O_NOCTTY`, so it is nobody's controlling terminal yet.
#[derive(Debug)]
pub struct PtyPair {
    /// The master side.
    pub master: OwnedFd,
    /// The slave side.
    pub slave: OwnedFd,
    /// The slave's path in the devpts instance behind `/dev/ptmx` (`/dev/pts/N`).
    pub slave_path: PathBuf,
}

/// Opens a new pair on the host's devpts through `/dev/ptmx` (as systemd-nspawn does for a
/// container's console): unlocks it and opens the slave with `TIOCGPTPEER`, which needs no path
/// lookup and so always finds the devpts instance the master belongs to.
pub fn open_pair() -> std::io::Result<PtyPair> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which points to a live local;
    // `master` is an open pty master.
    let ret = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK,
            &unlock as *const libc::c_int,
        )
    };
    Errno::result(ret)?;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, which points to a live local
    // we own exclusively.
    let ret = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTN,
            &mut number as *mut libc::c_uint,
        )
    };
    Errno::result(ret)?;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument and returns a new descriptor
    // (or -1); no memory is passed.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(PtyPair {
        master,
        slave,
        slave_path: PathBuf::from(format!("/dev/pts/{number}")),
    })
}

/// Makes the terminal `fd` the calling process's controlling terminal and its stdin, stdout and
/// stderr: a new session first (unless the caller leads one already), then `TIOCSCTTY` (without
/// stealing: the terminal must not be another session's), then `dup2` onto 0, 1 and 2. `fd` itself
/// stays open (close-on-exec descriptors vanish at the next exec).
pub fn become_stdio(fd: RawFd) -> nix::Result<()> {
    // EPERM: already a process group (and so possibly session) leader; TIOCSCTTY tells.
    let _ = nix::unistd::setsid();
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and changes only the calling
    // process's session; `fd` is a descriptor the caller keeps open for the call.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    Errno::result(ret)?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which the caller hands over to the terminal
        // (whatever they were is closed by dup2); `fd` is open.
        let ret = unsafe { libc::dup2(fd, target) };
        Errno::result(ret)?;
    }
    Ok(())
}

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
    fn a_new_pair_has_a_devpts_slave_that_is_not_a_controlling_terminal() {
        let p = open_pair().unwrap();
        assert!(p.slave_path.starts_with("/dev/pts/"), "{:?}", p.slave_path);
        // Same terminal: a size set on the master shows on the slave.
        set_window_size(p.master.as_fd(), 24, 80).unwrap();
        assert_eq!(window_size(p.slave.as_fd()).unwrap(), (24, 80));
        // Bytes written on the slave come out of the master.
        nix::unistd::write(&p.slave, b"x").unwrap();
        let mut b = [0u8; 8];
        assert_eq!(nix::unistd::read(&p.master, &mut b).unwrap(), 1);
        // Close-on-exec both.
        for fd in [&p.master, &p.slave] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn a_non_terminal_is_refused() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(window_size(f.as_fd()), Err(Errno::ENOTTY));
        assert_eq!(set_window_size(f.as_fd(), 1, 1), Err(Errno::ENOTTY));
    }
}
