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

/// The framing of the console socket: kind byte, 4-byte big-endian length, payload.
pub mod wire {
    /// Client → monitor, first frame: attach (payload: rows, cols as big-endian u16, optional).
    pub const ATTACH: u8 = b'A';
    /// Client → monitor, first frame: follow the log.
    pub const FOLLOW: u8 = b'F';
    /// Both ways: console bytes.
    pub const DATA: u8 = b'D';
    /// Client → monitor: a new window size (rows, cols as big-endian u16).
    pub const WINDOW: u8 = b'W';
    /// Monitor → client: attached.
    pub const OK: u8 = b'O';
    /// Monitor → client: refused (payload: the reason); the monitor closes the connection.
    pub const ERROR: u8 = b'E';
    /// Monitor → follower: the log so far has been sent.
    pub const SNAPSHOT_END: u8 = b'S';
    /// Largest payload accepted.
    pub const MAX_PAYLOAD: usize = 1 << 20;

    /// One frame.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + payload.len());
        v.push(kind);
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A window size payload.
    pub fn window(rows: u16, cols: u16) -> [u8; 4] {
        let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
        [r[0], r[1], c[0], c[1]]
    }

    /// Reads a window size payload.
    pub fn parse_window(p: &[u8]) -> Option<(u16, u16)> {
        match p {
            [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
            _ => None,
        }
    }

    /// Collects bytes and cuts them into frames.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        /// Adds received bytes.
        pub fn push(&mut self, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }

        /// The next complete frame, if there is one; `Err` for a payload above [`MAX_PAYLOAD`].
        pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, usize> {
            if self.buf.len() < 5 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_PAYLOAD {
                return Err(len);
            }
            if self.buf.len() < 5 + len {
                return Ok(None);
            }
            let kind = self.buf[0];
            let payload = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            Ok(Some((kind, payload)))
        }
    }
}

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
                Server {
                    master,
                    master_open: true,
                    listener: bind(&run_dir.join(SOCKET_FILE)).ok(),
                    stop: stop_r,
                    log,
                    clients: Vec::new(),
                    to_guest: Vec::new(),
                }
                .run()
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

/// The bounded log file (see the module documentation).
#[derive(Debug)]
pub struct LogRing {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    bound: u64,
}

impl LogRing {
    /// Starts an empty log at `path` bounded to `bound` bytes (0: the file stays empty).
    pub fn create(path: PathBuf, bound: u64) -> io::Result<LogRing> {
        let file = open_log(&path, true)?;
        Ok(LogRing {
            path,
            file: (bound > 0).then_some(file),
            size: 0,
            bound,
        })
    }

    /// A log that keeps nothing (its file could not be made).
    fn none(path: PathBuf) -> LogRing {
        LogRing {
            path,
            file: None,
            size: 0,
            bound: 0,
        }
    }

    /// Appends `data`; past the bound, keeps the newest half. Errors (a full file system) lose
    /// output, never block the guest.
    pub fn write(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else { return };
        if file.write_all(data).is_err() {
            return;
        }
        self.size += data.len() as u64;
        if self.size > self.bound {
            let _ = self.trim();
        }
    }

    fn trim(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let keep = (self.bound / 2).min(self.size);
        let mut buf = vec![0u8; keep as usize];
        file.read_exact_at(&mut buf, self.size - keep)?;
        // Start at a line if one starts in the first half of what is kept.
        if let Some(i) = buf[..buf.len() / 2].iter().position(|b| *b == b'\n') {
            buf.drain(..=i);
        }
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut t = open_log(&tmp, true)?;
            t.write_all(&buf)?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = Some(open_log(&self.path, false)?);
        self.size = buf.len() as u64;
        Ok(())
    }

    /// Everything in the log now.
    pub fn snapshot(&self) -> Vec<u8> {
        let Some(file) = self.file.as_ref() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; self.size as usize];
        match file.read_exact_at(&mut buf, 0) {
            Ok(()) => buf,
            Err(_) => Vec::new(),
        }
    }
}

fn open_log(path: &Path, truncate: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).append(true).create(true).mode(0o600);
    if truncate {
        // append + truncate is refused by std: truncate first.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        drop(f);
    }
    o.open(path)
}

/// What a client of the console socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connected, first frame not seen yet.
    Pending,
    /// The one interactive user.
    Attached,
    /// Follows the log.
    Follower,
}

#[derive(Debug)]
struct Client {
    sock: UnixStream,
    role: Role,
    frames: wire::Decoder,
    out: Vec<u8>,
    /// Close once `out` is sent.
    closing: bool,
    dead: bool,
}

impl Client {
    fn queue(&mut self, frame: &[u8]) {
        if self.out.len() + frame.len() > CLIENT_BUFFER {
            self.dead = true; // it does not read: drop it rather than hold output for it
        } else {
            self.out.extend_from_slice(frame);
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.closing {
            self.dead = true;
        }
    }
}

/// The pump thread's state.
struct Server {
    master: OwnedFd,
    /// False once the master reported its end (`EIO`: no slave open any more).
    master_open: bool,
    /// `None` if the socket could not be bound: no attach, no follower, the log still works.
    listener: Option<UnixListener>,
    /// Readable when the run is over (`None` if the pipe could not be made: then the pump ends
    /// only with the process).
    stop: Option<OwnedFd>,
    log: LogRing,
    clients: Vec<Client>,
    /// Input for the guest not yet taken by the terminal.
    to_guest: Vec<u8>,
}

impl Server {
    fn run(mut self) {
        let mut draining: Option<Instant> = None;
        loop {
            if let Some(deadline) = draining
                && (!self.master_open || Instant::now() >= deadline)
            {
                break;
            }
            let timeout = match draining {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::from(left.as_millis().min(1000) as u16)
                }
                None => PollTimeout::NONE,
            };
            let (master_ev, listen_ev, stop_ev, client_ev) = match self.wait(timeout, draining.is_some()) {
                Some(ev) => ev,
                None => continue,
            };
            if master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.read_master();
            }
            if master_ev.contains(PollFlags::POLLOUT) {
                self.write_master();
            }
            if listen_ev.contains(PollFlags::POLLIN) {
                self.accept();
            }
            for (i, ev) in client_ev.into_iter().enumerate() {
                if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_client(i);
                }
                if ev.contains(PollFlags::POLLOUT) {
                    self.clients[i].flush();
                }
            }
            self.clients.retain(|c| !c.dead);
            if stop_ev.contains(PollFlags::POLLIN) && draining.is_none() {
                draining = Some(Instant::now() + DRAIN);
            }
        }
        // The last output goes to whoever is still connected, briefly; then every connection
        // closes, which tells cmld the container is gone.
        let until = Instant::now() + FLUSH;
        while Instant::now() < until && self.clients.iter().any(|c| !c.out.is_empty() && !c.dead) {
            let mut fds: Vec<PollFd<'_>> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(50u16));
            drop(fds);
            for c in &mut self.clients {
                c.flush();
            }
        }
    }

    /// One `poll(2)`: the events of the master, the listener, the stop pipe and each client, or
    /// `None` if it was interrupted.
    #[allow(clippy::type_complexity)]
    fn wait(
        &self,
        timeout: PollTimeout,
        draining: bool,
    ) -> Option<(PollFlags, PollFlags, PollFlags, Vec<PollFlags>)> {
        let none = PollFlags::empty();
        let mut master_flags = none;
        if self.master_open {
            master_flags |= PollFlags::POLLIN;
            if !self.to_guest.is_empty() {
                master_flags |= PollFlags::POLLOUT;
            }
        }
        let mut fds = vec![PollFd::new(self.master.as_fd(), master_flags)];
        let listen_at = self.listener.as_ref().map(|l| {
            fds.push(PollFd::new(
                l.as_fd(),
                if draining { none } else { PollFlags::POLLIN },
            ));
            fds.len() - 1
        });
        let stop_at = self.stop.as_ref().map(|s| {
            fds.push(PollFd::new(
                s.as_fd(),
                if draining { none } else { PollFlags::POLLIN },
            ));
            fds.len() - 1
        });
        let first_client = fds.len();
        for c in &self.clients {
            let mut f = none;
            let reads = !c.closing && (c.role != Role::Attached || self.to_guest.len() < INPUT_BUFFER);
            if reads {
                f |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.sock.as_fd(), f));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(_) => return None,
        }
        let ev = |fd: &PollFd<'_>| fd.revents().unwrap_or(none);
        Some((
            ev(&fds[0]),
            listen_at.map_or(none, |i| ev(&fds[i])),
            stop_at.map_or(none, |i| ev(&fds[i])),
            fds[first_client..].iter().map(ev).collect(),
        ))
    }

    fn read_master(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    // No slave is open any more: everything written has been read.
                    self.master_open = false;
                    return;
                }
                Ok(n) => self.output(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return, // EAGAIN: all read for now
            }
        }
    }

    fn output(&mut self, data: &[u8]) {
        self.log.write(data);
        let frame = wire::encode(wire::DATA, data);
        for c in &mut self.clients {
            if matches!(c.role, Role::Attached | Role::Follower) && !c.closing {
                c.queue(&frame);
            }
        }
    }

    fn write_master(&mut self) {
        while !self.to_guest.is_empty() {
            match nix::unistd::write(&self.master, &self.to_guest) {
                Ok(n) => {
                    self.to_guest.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.to_guest.clear();
                    return;
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        continue; // dropped: closed at once
                    }
                    self.clients.push(Client {
                        sock,
                        role: Role::Pending,
                        frames: wire::Decoder::default(),
                        out: Vec::new(),
                        closing: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.clients[i].sock.read(&mut buf) {
                Ok(0) => {
                    self.clients[i].dead = true;
                    break;
                }
                Ok(n) => self.clients[i].frames.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.clients[i].dead = true;
                    break;
                }
            }
        }
        loop {
            let frame = match self.clients[i].frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    self.clients[i].dead = true;
                    return;
                }
            };
            self.frame(i, frame);
        }
    }

    fn frame(&mut self, i: usize, (kind, payload): (u8, Vec<u8>)) {
        match (self.clients[i].role, kind) {
            (Role::Pending, wire::ATTACH) => {
                if self.clients.iter().any(|c| c.role == Role::Attached && !c.dead) {
                    let c = &mut self.clients[i];
                    c.queue(&wire::encode(
                        wire::ERROR,
                        b"someone is attached to this console already (one user at a time)",
                    ));
                    c.closing = true;
                    return;
                }
                if let Some((rows, cols)) = wire::parse_window(&payload) {
                    let _ = pty::set_window_size(self.master.as_fd(), rows, cols);
                }
                let c = &mut self.clients[i];
                c.role = Role::Attached;
                c.queue(&wire::encode(wire::OK, b""));
                c.flush();
            }
            (Role::Pending, wire::FOLLOW) => {
                let snapshot = self.log.snapshot();
                let c = &mut self.clients[i];
                c.role = Role::Follower;
                for chunk in snapshot.chunks(64 * 1024) {
                    c.queue(&wire::encode(wire::DATA, chunk));
                }
                c.queue(&wire::encode(wire::SNAPSHOT_END, b""));
                c.flush();
            }
            (Role::Attached, wire::DATA) => self.to_guest.extend_from_slice(&payload),
            (Role::Attached, wire::WINDOW) => {
                if let Some((rows, cols)) = wire::parse_window(&payload) {
                    let _ = pty::set_window_size(self.master.as_fd(), rows, cols);
                }
            }
            // A client that does not follow the protocol is dropped.
            _ => self.clients[i].dead = true,
        }
    }
}

/// The log of a container's console as it is now (its last run's, when it is stopped); empty
/// when there is none.
pub fn read_log(run_dir: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(run_dir.join(LOG_FILE)) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The last `n` lines of `log` (a last line without a newline counts).
pub fn tail_lines(log: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &log[log.len()..];
    }
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &log[i + 1..];
            }
        }
    }
    log
}

/// The last lines of a container's console log for a message: at most `lines` non-empty lines,
/// control characters (escape sequences, carriage returns) removed; `None` when the log is empty.
pub fn last_lines(run_dir: &Path, lines: usize) -> Option<String> {
    let f = File::open(run_dir.join(LOG_FILE)).ok()?;
    let len = f.metadata().ok()?.len();
    let take = len.min(4096);
    let mut buf = vec![0u8; take as usize];
    f.read_exact_at(&mut buf, len - take).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let cleaned: Vec<String> = text
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    Some(cleaned[cleaned.len().saturating_sub(lines)..].join("\n"))
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
            "mounts": [], "images": [], "netns": false, "net": null, "cgroup_procs": [],
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
