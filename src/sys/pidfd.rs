//! Process file descriptors: a handle on a process that cannot be confused with a later process
//! that reuses its pid. Readable (poll) once the process has exited.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// An open pidfd.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// `pidfd_open(pid)`.
    pub fn open(pid: i32) -> nix::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the syscall returned a new, owned file descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(ret as RawFd) };
        Ok(PidFd { fd, pid })
    }

    /// The pid it refers to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `pidfd_send_signal` with a signal number (real-time signals included).
    pub fn signal(&self, sig: i32) -> nix::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo (NULL), flags 0.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if ret < 0 { Err(Errno::last()) } else { Ok(()) }
    }

    /// Waits (asynchronously) until the process has exited: a pidfd polls readable then.
    pub async fn wait_exited(&self) {
        let Ok(fd) = self.fd.try_clone() else { return };
        // SAFETY: `fd` is a fresh duplicate that the AsyncFd owns for its whole life; nothing else
        // closes or reuses it while it is registered.
        let registered =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        if let Ok(afd) = registered {
            let _ = afd.readable().await;
        }
    }

    /// Whether the process has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
