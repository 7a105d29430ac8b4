//! Process creation into new namespaces, and small process-wide settings.
//!
//! [`fork_into`] is `clone3(2)` used like `fork(2)`: the child continues from the call with a copy of
//! the parent's memory, already inside the requested new namespaces. Like `fork`, it must only be
//! called from a single-threaded process (the launcher and its workers are).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::{sched::CloneFlags, unistd::Pid};

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux ≥ 5.7): a clone3-only flag, beyond `CloneFlags`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks into new namespaces (`flags`: `CLONE_NEW*`); the child gets SIGCHLD semantics like `fork`.
pub fn fork_into(flags: CloneFlags) -> nix::Result<Forked> {
    fork_into_cgroup(flags, None)
}

/// [`fork_into`], the child starting in the cgroup2 directory `cgroup` (an fd of the directory)
/// instead of the caller's: no later move into the cgroup, so no cgroup attach lock to wait for.
pub fn fork_into_cgroup(flags: CloneFlags, cgroup: Option<BorrowedFd<'_>>) -> nix::Result<Forked> {
    let args = CloneArgs {
        flags: flags.bits() as u64 | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM or a new stack duplicates the calling process like fork(2);
    // `args` is a valid clone_args of the size passed. Callers are single-threaded (documented), so
    // the child's copy of memory has no lock held by another thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Plain `fork(2)`, for the launcher's helpers (single-threaded callers only).
pub fn fork() -> nix::Result<Forked> {
    fork_into(CloneFlags::empty())
}

/// Sets the calling thread's name as shown by `ps` (at most 15 bytes are kept).
pub fn set_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
    bytes.push(0);
    if let Ok(c) = std::ffi::CStr::from_bytes_with_nul(&bytes) {
        let _ = nix::sys::prctl::set_name(c);
    }
}

/// Ends the calling process at once (`_exit(2)`): no destructors, no atexit handlers, no stdio
/// flushing — what a forked child of a larger process must use.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Closes every file descriptor from `first` upwards (`close_range(2)`).
pub fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors of the calling process; callers own every fd
    // from `first` up (they moved what they keep below it).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);
    }
}

/// Closes every file descriptor from 3 upwards except `keep` (`close_range(2)` on both sides of
/// it): for a child forked from a process whose other descriptors it must not hold.
pub fn close_fds_except(keep: std::os::fd::RawFd) {
    let keep = u32::try_from(keep).unwrap_or(0);
    if keep > 3 {
        // SAFETY: closes only descriptors 3..keep-1 of the calling process, whose caller owns
        // every descriptor but `keep` and the standard three.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0);
        }
    }
    close_fds_from(keep.max(2) + 1);
}

/// Makes the terminal on `fd` the controlling terminal of the calling session leader (TIOCSCTTY).
pub fn set_controlling_tty(fd: i32) {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and changes only our session.
    unsafe {
        libc::ioctl(fd, libc::TIOCSCTTY, 0);
    }
}

/// Ignores `SIGCHLD` with `SA_NOCLDWAIT`: the kernel reaps the caller's children as they end
/// (they never become zombies, and `wait` finds none). For the launcher, whose workers outlive
/// their requests; each worker restores the default with [`default_sigchld`].
pub fn ignore_sigchld() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::SA_NOCLDWAIT, SigSet::empty());
    // SAFETY: SIG_IGN runs no handler code, so nothing async-signal-unsafe can run.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &act) };
}

/// Restores the default `SIGCHLD` disposition (children become zombies until waited for): an
/// ignored `SIGCHLD` would survive exec and break every `wait` in what runs next.
pub fn default_sigchld() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL runs no handler code.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &act) };
}
