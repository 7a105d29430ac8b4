//! A container's console: a pseudo-terminal held by its monitor, the init's stdio and the guest's
//! `/dev/console`; a bounded log of everything the guest wrote on it; and a small server through
//! which cmld attaches a user to it or follows the log.
//!
//! Order (monitor and init):
//! 1. Before the init is cloned, the monitor opens a pty pair on the host's devpts (`/dev/ptmx`,
//!    as systemd-nspawn does) with [`Console::open`]: the slave is chowned to the container's root
//!    when it has a user namespace, and the plan learns the slave ([`ConsolePlan::tty`]).
//! 2. The init, while it builds `/dev`, creates an empty `dev/console` and binds the slave onto it
//!    ([`bind_console`]); just before exec it becomes a session leader with the slave as its
//!    controlling terminal and stdin/stdout/stderr ([`attach_stdio`]).
//! 3. Once the init is exec'd (the monitor is single-threaded until then, since it forks), the
//!    monitor starts the pump thread ([`Console::serve`]). It starts `<run>/console.log` empty and
//!    binds `<run>/console.sock` — there, off the start's critical path; the pty buffers what the
//!    guest writes meanwhile — then runs one `poll(2)` loop over the master, the socket and its
//!    clients. It always drains the master — attached or not — so the guest never blocks on
//!    console output, and appends everything to the log.
//! 4. When the init has ended, [`Pump::finish`] closes the monitor's slave and reads the master to
//!    its end (`EIO` once no slave is open; the kernel hands out what was written first), so the
//!    log is complete before the monitor reports the exit. Then every client is closed: for cmld
//!    that end means "the container stopped".
//!
//! The monitor keeps a slave descriptor open for the whole run: without it, a guest that closes
//! every console descriptor for a moment (a getty re-opening it) would leave the master hung up.
//!
//! **The log** (`<run>/console.log`) is bounded by device.conf `console_log_kib`: when a write
//! takes it past the bound, its newest half is kept (from the first line start in it) and written
//! to `console.log.tmp`, which is renamed over the log — so a reader always sees a whole file, and
//! the cost is one copy of half the bound per half bound of output. `0` keeps no log (the console
//! is still drained). The log outlives the run: cmld's cleanup leaves it in the run directory until
//! the next start clears it.
//!
//! **The socket protocol** (`<run>/console.sock`, UNIX stream, only root can connect): frames of a
//! kind byte, a 4-byte big-endian length and the payload ([`wire`]). A client first sends `ATTACH`
//! (payload: rows and columns, 2 bytes each, or nothing) or `FOLLOW`:
//! - `ATTACH`: the monitor answers `OK` — or `ERROR` with a message and closes, when someone is
//!   attached already (one writer at a time). Then `DATA` flows both ways (console output to the
//!   client, the client's input to the guest) and `WINDOW` (rows, columns) resizes the terminal.
//! - `FOLLOW`: the monitor sends the log as it is (`DATA`), then `SNAPSHOT_END`, then every new
//!   output as `DATA` — consistent, since the monitor is the log's only writer.
//!
//! The monitor closes every client when the container ends. A client that does not read keeps at
//! most [`CLIENT_BUFFER`] bytes queued; past that it is dropped rather than slowing the guest.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd, RawFd},
        unix::{
            fs::{FileExt, PermissionsExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};

use super::plan::StartPlan;
use crate::sys::pty;

/// The log file in a container's run directory.
pub const LOG_FILE: &str = "console.log";
/// The console socket in a container's run directory.
pub const SOCKET_FILE: &str = "console.sock";
/// Default log bound (KiB), as device.conf `console_log_kib`.
pub const DEFAULT_LOG_KIB: u32 = 1024;
/// Output queued for one client at most before it is dropped.
pub const CLIENT_BUFFER: usize = 1 << 20;
/// Clients served at once (attached, following or not yet decided).
const MAX_CLIENTS: usize = 16;
/// Input queued for the guest at most; the attached client is not read while it is full.
const INPUT_BUFFER: usize = 64 * 1024;
/// How long the end of a run waits for the master's last bytes and for clients to take theirs.
const DRAIN: Duration = Duration::from_secs(1);
const FLUSH: Duration = Duration::from_millis(200);

/// What the plan says about the console.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConsolePlan {
    /// Bound of `console.log` in KiB (0: no log).
    pub log_kib: u32,
    /// The pty slave, filled in by the monitor right before it clones the init (not serialised):
    /// the descriptor is valid in the init, whose descriptor table is a copy of the monitor's.
    #[serde(skip)]
    pub tty: Option<ConsoleTty>,
}

/// The console's pty slave as the init finds it.
#[derive(Debug, Clone)]
pub struct ConsoleTty {
    /// Its descriptor (close-on-exec).
    pub fd: RawFd,
    /// Its host path (`/dev/pts/N`), for messages.
    pub path: PathBuf,
}

/// Why the console could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A step failed.
    #[error("{step}: {source}")]
    Io {
        /// What was done.
        step: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(step: impl Into<String>) -> impl FnOnce(io::Error) -> ConsoleError {
    let step = step.into();
    move |source| ConsoleError::Io { step, source }
}

mod log;
mod server;
pub mod wire;

pub use log::{LogRing, last_lines, read_log, tail_lines};
use server::Server;

/// The monitor's console, between [`Console::open`] and [`Console::serve`].
#[derive(Debug)]
pub struct Console {
    master: OwnedFd,
    slave: OwnedFd,
    run_dir: PathBuf,
    log_bound: u64,
}

impl Console {
    /// Opens the pty and tells `plan` (the init's copy of it) where the slave is. Called by the
    /// monitor before it clones the init; the log and the socket are made by the pump thread, off
    /// the start's critical path (the pty buffers what the guest writes meanwhile).
    pub fn open(plan: &mut StartPlan) -> Result<Console, ConsoleError> {
        let pair = pty::open_pair().map_err(io_at("open a pty on /dev/ptmx"))?;
        // A terminal without a size confuses full-screen programs; an attach sets the real one.
        let _ = pty::set_window_size(pair.master.as_fd(), 24, 80);
        if let Some(map) = plan.userns {
            // The container's root owns its console (a getty inside opens and chmods it).
            let id = Some(map.base);
            nix::unistd::fchown(
                &pair.slave,
                id.map(nix::unistd::Uid::from_raw),
                id.map(nix::unistd::Gid::from_raw),
            )
            .map_err(|e| ConsoleError::Io {
                step: format!("chown {} to the container's root", pair.slave_path.display()),
                source: e.into(),
            })?;
        }
        set_nonblocking(&pair.master).map_err(io_at("make the pty master non-blocking"))?;
        plan.console.tty = Some(ConsoleTty {
            fd: pair.slave.as_raw_fd(),
            path: pair.slave_path,
        });
        Ok(Console {
            master: pair.master,
            slave: pair.slave,
            run_dir: plan.run_dir.clone(),
            log_bound: u64::from(plan.console.log_kib) * 1024,
        })
    }

    /// Starts the pump thread, which starts an empty log and binds the socket first (without them,
    /// it still drains the console: the guest must never block on it). Only once the init is
    /// exec'd: the monitor must stay single-threaded while it forks.
    pub fn serve(self) -> Pump {
        let Console {
            master,
            slave,
            run_dir,
            log_bound,
        } = self;
        let (stop_r, stop_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => (Some(p.0), Some(p.1)),
            Err(_) => (None, None),
        };
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let log = LogRing::create(run_dir.join(LOG_FILE), log_bound)
                    .unwrap_or_else(|_| LogRing::none(run_dir.join(LOG_FILE)));
                Server::new(master, bind(&run_dir.join(SOCKET_FILE)).ok(), stop_r, log).run()
            })
            .ok();
        Pump {
            slave: Some(slave),
            stop: stop_w,
            thread,
        }
    }
}

/// The running pump: [`Pump::finish`] it once the init has ended.
#[derive(Debug)]
pub struct Pump {
    slave: Option<OwnedFd>,
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    /// Closes the monitor's slave, lets the pump read the master to its end (into the log, to the
    /// clients), closes every client and waits for the thread. Blocks at most about a second.
    pub fn finish(mut self) {
        self.slave = None;
        if let Some(stop) = self.stop.take() {
            let _ = nix::unistd::write(&stop, b"x");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The console socket: only root may connect (mode 0600), non-blocking.
fn bind(sock: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock)?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Init side, while `/dev` is built (before `pivot_root`): an empty `dev/console` with the pty
/// slave bound onto it. Without a console in the plan, nothing is done.
pub fn bind_console(plan: &StartPlan, dev: &Path) -> io::Result<()> {
    let Some(tty) = &plan.console.tty else {
        return Ok(());
    };
    let target = dev.join("console");
    std::fs::write(&target, b"")?;
    // By its path: a bind needs a source mount of the caller's mount namespace, and the
    // descriptor's mount is the host's (the monitor opened it there). The path must name the same
    // terminal as the descriptor (the same devpts instance behind /dev/ptmx).
    let same = nix::sys::stat::stat(&tty.path)
        .ok()
        .zip(borrowed_stat(tty.fd))
        .is_some_and(|(a, b)| a.st_rdev == b.st_rdev);
    if !same {
        return Err(io::Error::other(format!(
            "{} is not the console pty opened through /dev/ptmx",
            tty.path.display()
        )));
    }
    nix::mount::mount(
        Some(tty.path.as_path()),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        io::Error::other(format!(
            "bind {} onto {}: {e}",
            tty.path.display(),
            target.display()
        ))
    })
}

fn borrowed_stat(fd: RawFd) -> Option<nix::sys::stat::FileStat> {
    // fstat through /proc: the descriptor is ours, but a borrow of a raw number needs `unsafe`.
    nix::sys::stat::stat(format!("/proc/self/fd/{fd}").as_str()).ok()
}

/// Init side, just before exec: a new session with the console as controlling terminal, and the
/// console as stdin, stdout and stderr. Without a console in the plan, nothing is done.
pub fn attach_stdio(plan: &StartPlan) -> nix::Result<()> {
    match &plan.console.tty {
        Some(tty) => pty::become_stdio(tty.fd),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut bytes = wire::encode(wire::ATTACH, &wire::window(24, 80));
        bytes.extend(wire::encode(wire::DATA, b"hello"));
        let mut d = wire::Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(wire::parse_window(&got[0].1), Some((24, 80)));
        assert_eq!(got[1], (wire::DATA, b"hello".to_vec()));
        let mut d = wire::Decoder::default();
        d.push(&[wire::DATA, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb\n", 0), b"");
        assert_eq!(tail_lines(b"", 3), b"");
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut ring = LogRing::create(path.clone(), 4096).unwrap();
        for i in 0..2000 {
            ring.write(format!("line {i}\n").as_bytes());
            assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        }
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        assert!(text.ends_with("line 1999\n"), "{text}");
        // Whole lines, consecutive, and at least a quarter of the bound.
        assert!(text.starts_with("line "));
        let nums: Vec<u32> = text.lines().map(|l| l[5..].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(text.len() >= 1024);
        assert_eq!(ring.snapshot(), text.as_bytes());
        assert!(!dir.path().join("console.log.tmp").exists());
    }

    #[test]
    fn a_zero_bound_keeps_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        std::fs::write(&path, "old run\n").unwrap();
        let mut ring = LogRing::create(path.clone(), 0).unwrap();
        ring.write(b"x\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn last_lines_are_cleaned_for_a_message() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_lines(dir.path(), 3), None);
        std::fs::write(
            dir.path().join(LOG_FILE),
            "one\r\n\x1b[1mtwo\x1b[0m\r\n\nthree\r\nboom\r\n",
        )
        .unwrap();
        assert_eq!(last_lines(dir.path(), 3).unwrap(), "[1mtwo[0m\nthree\nboom");
    }

    #[test]
    fn the_pump_logs_output_serves_one_writer_and_drains_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = test_plan(dir.path());
        let console = Console::open(&mut plan).unwrap();
        assert!(plan.console.tty.is_some());
        // Stands in for the init: a copy of the slave.
        let guest = nix::unistd::dup(console.slave.as_fd()).unwrap();
        let pump = console.serve();
        nix::unistd::write(&guest, b"hello from the guest\n").unwrap();

        // A follower gets the log so far, then new output. (The pump binds the socket first.)
        let sock = dir.path().join(SOCKET_FILE);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut follower = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        follower.write_all(&wire::encode(wire::FOLLOW, b"")).unwrap();
        let mut f = Frames::new(follower.try_clone().unwrap());
        let mut snap = Vec::new();
        loop {
            let (k, p) = f.next();
            if k == wire::SNAPSHOT_END {
                break;
            }
            snap.extend(p);
        }
        assert!(String::from_utf8_lossy(&snap).contains("hello from the guest"));

        // One writer; a second one is refused with a message.
        let mut a = UnixStream::connect(dir.path().join(SOCKET_FILE)).unwrap();
        a.write_all(&wire::encode(wire::ATTACH, &wire::window(30, 100)))
            .unwrap();
        let mut af = Frames::new(a.try_clone().unwrap());
        assert_eq!(af.next().0, wire::OK);
        assert_eq!(pty::window_size(guest.as_fd()).unwrap(), (30, 100));
        let mut b = UnixStream::connect(dir.path().join(SOCKET_FILE)).unwrap();
        b.write_all(&wire::encode(wire::ATTACH, b"")).unwrap();
        let (k, msg) = Frames::new(b).next();
        assert_eq!(k, wire::ERROR);
        assert!(String::from_utf8_lossy(&msg).contains("attached"));

        // Input reaches the guest side of the terminal.
        a.write_all(&wire::encode(wire::DATA, b"typed\n")).unwrap();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("typed") {
            let mut fds = [PollFd::new(guest.as_fd(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
            let mut buf = [0u8; 64];
            let n = nix::unistd::read(&guest, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }

        // The end: the last output is read and logged, then the clients are closed.
        nix::unistd::write(&guest, b"last words\n").unwrap();
        drop(guest);
        pump.finish();
        let log = String::from_utf8(std::fs::read(dir.path().join(LOG_FILE)).unwrap()).unwrap();
        assert!(
            log.contains("hello from the guest") && log.contains("last words"),
            "{log:?}"
        );
        let mut rest = Vec::new();
        while let Some((_, p)) = f.try_next() {
            rest.extend(p);
        }
        assert!(String::from_utf8_lossy(&rest).contains("last words"));
    }

    fn test_plan(run_dir: &Path) -> StartPlan {
        serde_json::from_value(serde_json::json!({
            "uuid": "u", "hostname": "h", "run_dir": run_dir, "root": run_dir.join("root"),
            "mounts": [], "images": [], "netns": false, "net": null, "cgroup_tasks": [],
            "devices": [], "drop_caps": [], "argv": [], "env": [], "notify_socket": null,
            "setup": false, "userns": null, "volume_key": null,
            "console": {"log_kib": 64},
        }))
        .unwrap()
    }

    /// Reads frames from a socket (blocking, with a timeout).
    struct Frames(UnixStream, wire::Decoder);

    impl Frames {
        fn new(s: UnixStream) -> Self {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Frames(s, wire::Decoder::default())
        }

        fn next(&mut self) -> (u8, Vec<u8>) {
            self.try_next().expect("a frame")
        }

        /// The next frame, `None` at the end of the connection.
        fn try_next(&mut self) -> Option<(u8, Vec<u8>)> {
            loop {
                if let Some(f) = self.1.next_frame().unwrap() {
                    return Some(f);
                }
                let mut buf = [0u8; 4096];
                match self.0.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => self.1.push(&buf[..n]),
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
}
