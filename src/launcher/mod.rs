//! The launcher: a single-threaded process forked from cmld before its async runtime starts. All
//! namespace work happens in processes forked from it, never on an actix/tokio thread (a
//! multi-threaded process cannot enter a mount namespace, and forking one is unsafe).
//!
//! Protocol (one `SOCK_SEQPACKET` socketpair, strictly request → reply, one at a time):
//!
//! 1. cmld sends a [`Request`] as one JSON datagram, with file descriptors attached (`SCM_RIGHTS`):
//!    - `Start`: `[channel]` — one end of a socketpair cmld keeps the other end of;
//!    - `Exec`: `[stdin, stdout, stderr, status]`.
//! 2. The launcher forks the worker (it ignores `SIGCHLD` with `SA_NOCLDWAIT`, so the kernel
//!    reaps workers as they end; a worker outlives the launcher, re-parented to init); the worker
//!    restores `SIGCHLD`, calls `setsid`, keeps exactly the passed descriptors (as 3, 4, …) and
//!    runs [`monitor::run`] or [`exec::run`].
//! 3. The launcher replies with one [`Reply`] datagram: the worker's pid, or why it could not fork.
//!
//! From then on the worker talks to cmld directly over the passed descriptors (see
//! [`plan::MonitorEvent`], [`plan::ExecStatus`]). No worker gets a parent-death signal: containers
//! outlive cmld. The launcher exits when cmld's end of the socket closes.

pub mod console;
pub mod exec;
pub mod init;
pub mod monitor;
pub mod network;
pub mod plan;
pub mod root;

use std::{
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::Mutex,
};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};
use serde::{Deserialize, Serialize};

use crate::sys::{
    fdpass,
    process::{self, Forked},
};

/// A request to the launcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Start a container's monitor (fds: `[channel]`).
    Start(Box<plan::StartPlan>),
    /// Run a command in a container (fds: `[stdin, stdout, stderr, status]`).
    Exec(plan::ExecPlan),
    /// Create or remove device nodes in a container (fds: `[status]`; the worker writes `ok` or
    /// the error there).
    DevNodes(plan::DevNodesPlan),
}

/// The launcher's reply to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The worker runs; its pid.
    Spawned {
        /// Pid of the worker (monitor or exec helper).
        pid: i32,
    },
    /// Nothing was started.
    Failed {
        /// Why.
        error: String,
    },
}

/// The launcher could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// Creating the launcher failed.
    #[error("cannot start the launcher: {0}")]
    Spawn(nix::Error),
    /// Talking to the launcher failed (it died?).
    #[error("launcher i/o: {0}")]
    Io(nix::Error),
    /// The launcher sent something that is not a reply.
    #[error("launcher protocol: {0}")]
    Protocol(String),
    /// The launcher could not start the worker.
    #[error("launcher: {0}")]
    Refused(String),
}

/// cmld's handle on the launcher.
pub struct Launcher {
    sock: Mutex<OwnedFd>,
}

const MAX_DATAGRAM: usize = 256 * 1024;

impl Launcher {
    /// Forks the launcher. Must be called while cmld is still single-threaded (before the actix
    /// runtime or any other thread starts), and before cmld opens files a worker must not inherit.
    pub fn spawn() -> Result<Launcher, LauncherError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(LauncherError::Spawn)?;
        match process::fork().map_err(LauncherError::Spawn)? {
            Forked::Child => {
                drop(ours);
                // Nothing the daemon was given (a socket unit's listening socket) stays open in
                // the launcher and the monitors it forks.
                process::close_fds_except(theirs.as_raw_fd());
                process::set_name("cml-launcher");
                serve(theirs)
            }
            Forked::Parent(_) => {
                drop(theirs);
                Ok(Launcher {
                    sock: Mutex::new(ours),
                })
            }
        }
    }

    /// Sends a request with its descriptors and waits for the reply (blocking; call it from a
    /// blocking task). Returns the worker's pid.
    pub fn request(&self, req: &Request, fds: &[RawFd]) -> Result<i32, LauncherError> {
        let sock = self
            .sock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Zeroizing: a start request carries the container's volume key.
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(req).map_err(|e| LauncherError::Protocol(e.to_string()))?,
        );
        fdpass::send_with_fds(sock.as_raw_fd(), &bytes, fds).map_err(LauncherError::Io)?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(LauncherError::Io)?,
            }
        };
        if n == 0 {
            return Err(LauncherError::Protocol("the launcher is gone".into()));
        }
        match serde_json::from_slice(&buf[..n]).map_err(|e| LauncherError::Protocol(e.to_string()))? {
            Reply::Spawned { pid } => Ok(pid),
            Reply::Failed { error } => Err(LauncherError::Refused(error)),
        }
    }
}

/// The `DevNodes` worker: enters the container's mount namespace and creates or removes the nodes.
fn dev_nodes(plan: &plan::DevNodesPlan, fds: Vec<OwnedFd>) -> i32 {
    let result = (|| -> Result<(), String> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", plan.init_pid)).map_err(|e| e.to_string())?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
        let dir = std::path::Path::new(&plan.dir);
        if plan.create {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        for (name, major, minor) in &plan.nodes {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            if plan.create {
                let dev = nix::sys::stat::makedev(u64::from(*major), u64::from(*minor));
                let mode = nix::sys::stat::Mode::from_bits_truncate(0o660);
                nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, mode, dev)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        if !plan.create {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    })();
    let msg = match &result {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    if let Some(status) = fds.into_iter().next() {
        let _ = nix::unistd::write(&status, msg.as_bytes());
    }
    i32::from(result.is_err())
}

/// argv / environment strings for exec(2); a string with a NUL byte cannot be passed and is dropped.
fn cstrings(list: &[String]) -> Vec<std::ffi::CString> {
    list.iter()
        .filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok())
        .collect()
}

/// Drops capabilities (numbers as in linux/capability.h) from the bounding set and clears the
/// ambient and inheritable sets, so nothing exec'd next can gain them.
fn drop_capabilities(list: &[u8]) -> Result<(), caps::errors::CapsError> {
    for c in caps::all().into_iter().filter(|c| list.contains(&c.index())) {
        caps::drop(None, caps::CapSet::Bounding, c)?;
    }
    caps::clear(None, caps::CapSet::Ambient)?;
    caps::clear(None, caps::CapSet::Inheritable)
}

fn send_reply(sock: &OwnedFd, reply: &Reply) {
    if let Ok(bytes) = serde_json::to_vec(reply) {
        let _ = nix::sys::socket::send(sock.as_raw_fd(), &bytes, MsgFlags::empty());
    }
}

/// The launcher's loop: one request at a time until cmld goes away.
fn serve(sock: OwnedFd) -> ! {
    fdpass::ignore_sigpipe();
    // Workers are children of the launcher, reaped by the kernel as they end (no zombies, and no
    // second fork per request to hand them to init).
    process::ignore_sigchld();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, fds) = match fdpass::recv_with_fds(sock.as_raw_fd(), &mut buf) {
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => process::exit_now(0),
        };
        if n == 0 {
            process::exit_now(0); // cmld closed its end
        }
        let reply = match serde_json::from_slice::<Request>(&buf[..n]) {
            Ok(req) => spawn_worker(req, fds),
            Err(e) => Reply::Failed {
                error: format!("malformed request: {e}"),
            },
        };
        send_reply(&sock, &reply);
    }
}

/// Forks the worker. Returns the reply for cmld.
fn spawn_worker(req: Request, fds: Vec<OwnedFd>) -> Reply {
    match process::fork() {
        Err(e) => Reply::Failed {
            error: format!("fork: {e}"),
        },
        Ok(Forked::Child) => {
            // The launcher ignores SIGCHLD (see `serve`); a worker waits for its own children,
            // and what it execs must not inherit an ignored SIGCHLD either.
            process::default_sigchld();
            let _ = nix::unistd::setsid();
            let fds = fdpass::keep_only(fds);
            let code = match req {
                Request::Start(plan) => monitor::run(*plan, fds),
                Request::Exec(plan) => exec::run(plan, fds),
                Request::DevNodes(plan) => dev_nodes(&plan, fds),
            };
            process::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => {
            drop(fds);
            Reply::Spawned { pid: pid.as_raw() }
        }
    }
}
