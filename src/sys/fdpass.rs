//! Passing file descriptors over UNIX sockets (`SCM_RIGHTS`), and arranging a forked worker's
//! descriptor table.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Most descriptors accepted with one message.
pub const MAX_FDS: usize = 8;

/// Sends one datagram with descriptors attached.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock, &[IoSlice::new(data)], cmsgs, MsgFlags::empty(), None)
}

/// Receives one datagram and the descriptors attached to it (close-on-exec).
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in our table for us alone.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// In a freshly forked worker: moves `fds` to 3, 4, … (close-on-exec) and closes every other
/// descriptor above 2, so the worker holds nothing it did not ask for.
pub fn keep_only(fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    // First out of the way (≥ 1000), so moving into 3.. cannot clobber one of them.
    let high: Vec<RawFd> = fds
        .iter()
        .filter_map(|fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1000)).ok())
        .collect();
    drop(fds);
    let mut out = Vec::with_capacity(high.len());
    for (i, fd) in high.iter().enumerate() {
        let target = 3 + i as RawFd;
        // SAFETY: dup3 onto a descriptor number this single-threaded worker is about to own.
        if unsafe { libc::dup3(*fd, target, libc::O_CLOEXEC) } >= 0 {
            // SAFETY: dup3 succeeded, so `target` is an open descriptor owned by nobody else.
            out.push(unsafe { OwnedFd::from_raw_fd(target) });
        }
    }
    // Closes the copies at ≥ 1000 and everything else inherited.
    super::process::close_fds_from(3 + out.len() as u32);
    out
}

/// Ignores SIGPIPE in the calling process (workers report over sockets whose reader may be gone).
pub fn ignore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installing SIG_IGN runs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}
