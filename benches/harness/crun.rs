//! The crun peer of the benchmark table: sequential and concurrent start/stop of a busybox
//! container with crun, in the container shape our own runtime uses.
//!
//! # Mechanism
//!
//! crun 1.8 refuses this host's hybrid cgroup layout (`hugetlb` shows up in the otherwise empty
//! cgroup2 mount at `/sys/fs/cgroup/unified`). So every crun command runs in ONE private mount
//! namespace in which that mount is detached; nothing changes globally:
//!
//! 1. A holder process `unshare -m --propagation private -- /bin/sh -c 'umount
//!    /sys/fs/cgroup/unified; echo ok; exec cat'` creates the namespace. Once it has said `ok`, we
//!    open `/proc/<holder>/ns/mnt`, check in `/proc/<holder>/mountinfo` that the cgroup2 mount is
//!    gone, and let the holder exit (closing its stdin). Our open fd keeps the namespace alive.
//! 2. Every crun command is forked from this process and calls `setns(fd, CLONE_NEWNS)` between
//!    fork and exec (a single syscall; no `unshare`/`nsenter`/shell process per command).
//! 3. Timing is done here with [`Instant`] (CLOCK_MONOTONIC). Child exits are observed with
//!    pidfds, the guest's readiness with inotify, and everything is waited for in one `poll(2)`
//!    loop, so there is no busy polling and no sleeping inside a timed region.
//!
//! # What is measured
//!
//! * start: from spawning `crun run -d --pid-file … --bundle … <id>` until BOTH that command has
//!   exited successfully AND the guest has created `/ready/<id>` (a rw bind mount of a host
//!   directory; seen with an inotify `IN_CREATE` watch on that directory).
//! * stop: from spawning `crun kill <id> TERM` until `crun delete <id>` has exited successfully.
//!   In between, the guest init (which traps TERM and exits 0) is waited for with a pidfd opened on
//!   the pid from `--pid-file`. That is "kill + wait + delete", the honest stop for a
//!   TERM-handling guest: `crun delete -f` would SIGKILL it instead of letting it handle TERM.
//!   (peers.md: kill+wait+delete 14.9 ms against 16.9 ms for `delete -f` on this machine kind.)
//! * concurrent: N starts spawned at once, wall time until all N are running; then N stops
//!   spawned at once (each one kill → wait → delete as soon as its own previous step ends), wall
//!   time until all N are deleted.
//!
//! Each sequential cycle and each concurrent round is preceded by [`IDLE_BEFORE_START`] of idle
//! time, as in peers.md (the first cgroup-v1 attach after idle costs an RCU grace period).
//!
//! # Container shape
//!
//! The rootfs is a directory with Debian's static busybox and `sh`/`sleep` links, mounted
//! read-only. Namespaces: pid, mount, uts, ipc, network (crun brings up loopback only). Mounts are
//! crun's `crun spec` defaults (proc, /dev tmpfs, devpts, /dev/shm, mqueue, sysfs ro, cgroup ro),
//! plus a tmpfs at /tmp and the rw /ready bind mount. Capabilities, rlimits, masked and read-only
//! paths and the device cgroup rule are `crun spec`'s defaults. No cgroup namespace and no
//! `cgroupsPath`: crun then uses `/<id>` in every v1 hierarchy. Guest init:
//! `/bin/sh -c "trap 'exit 0' TERM; : > /ready/$NAME; while :; do sleep 3600 & wait; done"`.
//!
//! # Cleanup
//!
//! All files live in `<work>/cml-crun-<our pid>/`, container ids are `cml-crun-<our pid>-<n>`.
//! On every return path (success or error) each container not yet deleted gets `crun delete -f`;
//! if that fails its init is SIGKILLed through a pidfd (only a process whose cgroup is named after
//! our container), then its `/sys/fs/cgroup/*/<id>` directories and `/run/crun/<id>` are removed,
//! and finally `<work>/cml-crun-<our pid>/`. crun commands still running on an error path are
//! killed by pid and reaped. A SIGKILL/SIGINT of the whole process can of course not be cleaned up.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Figures for the peer, in milliseconds.
pub struct PeerFigures {
    /// `crun --version`, first line.
    pub version: String,
    /// One per run: spawning `crun run -d` until it has returned and the guest has signalled
    /// readiness.
    pub start_ms: Vec<f64>,
    /// One per run: spawning `crun kill <id> TERM` until the guest init has exited (pidfd) and
    /// `crun delete <id>` has returned ("kill + wait + delete"; not `delete -f`).
    pub stop_ms: Vec<f64>,
    /// `(N, wall ms of N concurrent starts until all running, wall ms of N concurrent stops)`.
    pub concurrent: Vec<(usize, f64, f64)>,
}

/// Idle time before each measured start (each sequential cycle, each concurrent round).
pub const IDLE_BEFORE_START: Duration = Duration::from_millis(300);

/// Longest a start or stop round may take before it is abandoned as failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where busybox-static puts its binary on Debian.
const BUSYBOX: &str = "/bin/busybox";

/// crun's state directory when run as root.
const CRUN_STATE: &str = "/run/crun";

/// Installs crun with apt-get when it is missing (returns Err with the reason if that fails),
/// builds an OCI bundle in `work` (a temp dir given by the caller) from a static-busybox rootfs
/// (Debian busybox-static at /bin/busybox), and measures `runs` sequential start/stop cycles after
/// one warm-up, plus one round for each N in `concurrency`.
///
/// Needs root. May be called from a multi-threaded process (the only code run between fork and
/// exec is `setns(2)`), but not concurrently with itself in the same process (names contain our
/// pid). It blocks the calling thread (sleeps, `poll(2)`) for about
/// `(runs + 1 + concurrency.len()) * 0.35 s`, so don't call it on an async executor thread. It
/// reaps its children with `waitpid` on their pids, so SIGCHLD must not be set to SIG_IGN and
/// nothing else in the process may reap all children (`waitpid(-1)`).
pub fn measure(work: &Path, runs: usize, concurrency: &[usize]) -> Result<PeerFigures, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the crun peer needs root".into());
    }
    let crun = ensure_crun()?;
    let mut bench = Bench::new(work, crun);
    let result = bench.setup().and_then(|()| bench.measure(runs, concurrency));
    let cleanup = bench.cleanup();
    match (result, cleanup) {
        (Ok(f), Ok(())) => Ok(f),
        (Ok(_), Err(c)) => Err(format!("crun: measured, but cleanup failed: {c}")),
        (Err(e), Ok(())) => Err(format!("crun: {e}")),
        (Err(e), Err(c)) => Err(format!("crun: {e}; cleanup also failed: {c}")),
    }
}

/// The path of `crun`, installed with apt-get if it is not on PATH.
fn ensure_crun() -> Result<PathBuf, String> {
    if let Some(p) = which("crun") {
        return Ok(p);
    }
    let apt = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "apt-get {}: {}: {}",
                args.join(" "),
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 1000)
            ))
        }
    };
    let install = ["install", "-y", "-q", "crun"];
    if let Err(first) = apt(&install) {
        // Maybe the package lists are missing or stale.
        apt(&["update", "-q"]).map_err(|e| format!("installing crun: {first}; then {e}"))?;
        apt(&install).map_err(|e| format!("installing crun: {e}"))?;
    }
    which("crun").ok_or_else(|| "apt-get installed crun, but it is not on PATH".into())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The last `max` bytes of `s` (at a char boundary), trimmed.
fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim().to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A spawned crun command and a pidfd on it. Dropping it kills it (by pid, if not yet reaped) and
/// reaps it.
struct Kid {
    child: Child,
    pidfd: OwnedFd,
    what: String,
}

impl Kid {
    /// Reaps the (exited) command; Err unless it exited with 0.
    fn finish(&mut self) -> Result<(), String> {
        let st = self
            .child
            .wait()
            .map_err(|e| format!("{}: wait: {e}", self.what))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("`{}` failed ({st})", self.what))
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        // Both are no-ops once the child has been waited for (std remembers its status).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, a signal number, no siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; returns which are readable
/// (all false on timeout or EINTR).
fn poll_in(fds: &[RawFd], timeout: Duration) -> Result<Vec<bool>, String> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfds` is a valid, initialised array of `pfds.len()` pollfd structs.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(format!("poll: {e}"));
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// A stop in progress.
enum Stop {
    Killing(Kid),
    WaitingGuest,
    Deleting(Kid),
    Done,
}

/// One measurement session: its directory, namespace, inotify watch and live containers.
struct Bench {
    crun: PathBuf,
    /// `<work>/cml-crun-<pid>`.
    dir: PathBuf,
    dir_created: bool,
    /// The private mount namespace without the cgroup2 mount.
    ns: Option<OwnedFd>,
    /// Non-blocking inotify fd watching `<dir>/ready` for IN_CREATE.
    inotify: Option<File>,
    /// stderr of every crun command (and of the guests), appended.
    log: Option<File>,
    /// Containers that may exist (from just before `crun run`) until deleted, with a pidfd on the
    /// guest init once known.
    live: HashMap<String, Option<OwnedFd>>,
    /// Whether [`CRUN_STATE`] existed before we ran crun (if not, we remove it when empty).
    state_root_existed: bool,
    seq: usize,
    cleaned: bool,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

impl Bench {
    fn new(work: &Path, crun: PathBuf) -> Bench {
        Bench {
            crun,
            dir: work.join(format!("cml-crun-{}", std::process::id())),
            dir_created: false,
            ns: None,
            inotify: None,
            log: None,
            live: HashMap::new(),
            state_root_existed: Path::new(CRUN_STATE).exists(),
            seq: 0,
            cleaned: false,
        }
    }

    fn ready_dir(&self) -> PathBuf {
        self.dir.join("ready")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.dir.join("bundles").join(name)
    }

    /// Builds the rootfs, the log, the inotify watch and the namespace.
    fn setup(&mut self) -> Result<(), String> {
        let err = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
        if !self.dir.is_absolute() {
            return Err(format!("work dir {} is not absolute", self.dir.display()));
        }
        if !Path::new(BUSYBOX).is_file() {
            return Err(format!("{BUSYBOX} is missing (apt-get install busybox-static)"));
        }
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).map_err(|e| err("remove stale", &self.dir, e))?;
        }
        fs::create_dir_all(&self.dir).map_err(|e| err("create", &self.dir, e))?;
        self.dir_created = true;

        let rootfs = self.rootfs();
        for d in ["bin", "proc", "sys", "dev", "tmp", "run", "etc", "root", "ready"] {
            let p = rootfs.join(d);
            fs::create_dir_all(&p).map_err(|e| err("create", &p, e))?;
        }
        let bb = rootfs.join("bin/busybox");
        fs::copy(BUSYBOX, &bb).map_err(|e| err("copy busybox to", &bb, e))?;
        for applet in ["sh", "sleep"] {
            let l = rootfs.join("bin").join(applet);
            symlink("busybox", &l).map_err(|e| err("symlink", &l, e))?;
        }
        for d in [self.ready_dir(), self.dir.join("bundles")] {
            fs::create_dir_all(&d).map_err(|e| err("create", &d, e))?;
        }
        let log = self.dir.join("crun.log");
        self.log = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| err("open", &log, e))?,
        );

        // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(format!("inotify_init1: {}", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let inotify = unsafe { File::from_raw_fd(fd) };
        let ready = std::ffi::CString::new(self.ready_dir().into_os_string().into_encoded_bytes())
            .map_err(|e| format!("ready dir: {e}"))?;
        // SAFETY: `inotify` is an inotify fd and `ready` a NUL-terminated path that outlives the
        // call.
        let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), ready.as_ptr(), libc::IN_CREATE) };
        if wd < 0 {
            return Err(format!("inotify_add_watch: {}", io::Error::last_os_error()));
        }
        self.inotify = Some(inotify);

        self.ns = Some(private_namespace()?);
        Ok(())
    }

    fn measure(&mut self, runs: usize, concurrency: &[usize]) -> Result<PeerFigures, String> {
        let out = self
            .command(&["--version"])?
            .stdout(Stdio::piped())
            .output()
            .map_err(|e| format!("crun --version: {e}"))?;
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !out.status.success() || version.is_empty() {
            return Err(format!("crun --version failed: {}", out.status));
        }

        let mut figures = PeerFigures {
            version,
            start_ms: Vec::with_capacity(runs),
            stop_ms: Vec::with_capacity(runs),
            concurrent: Vec::with_capacity(concurrency.len()),
        };
        for run in 0..=runs {
            std::thread::sleep(IDLE_BEFORE_START);
            let (start, names) = self.start(1)?;
            let stop = self.stop(&names)?;
            if run > 0 {
                figures.start_ms.push(ms(start));
                figures.stop_ms.push(ms(stop));
            }
        }
        for &n in concurrency {
            std::thread::sleep(IDLE_BEFORE_START);
            let (start, names) = self.start(n)?;
            let stop = self.stop(&names)?;
            figures.concurrent.push((n, ms(start), ms(stop)));
        }
        Ok(figures)
    }

    fn ns_fd(&self) -> Result<RawFd, String> {
        self.ns
            .as_ref()
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| "no private mount namespace".to_string())
    }

    /// A crun command that enters the private mount namespace between fork and exec; stdin and
    /// stdout are /dev/null, stderr goes to the log.
    fn command(&self, args: &[&str]) -> Result<Command, String> {
        let ns = self.ns_fd()?;
        let log = self
            .log
            .as_ref()
            .ok_or("no log")?
            .try_clone()
            .map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new(&self.crun);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let enter = move || -> io::Result<()> {
            // SAFETY: setns(2) on an fd we keep open; it is async-signal-safe and touches no
            // memory of the parent.
            if unsafe { libc::setns(ns, libc::CLONE_NEWNS) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY: the hook runs in the forked child before exec and only calls setns(2).
        unsafe {
            cmd.pre_exec(enter);
        }
        Ok(cmd)
    }

    fn spawn(&self, args: &[&str]) -> Result<Kid, String> {
        let what = format!("crun {}", args.join(" "));
        let child = self.command(args)?.spawn().map_err(|e| format!("{what}: {e}"))?;
        let pidfd = match pidfd_open(child.id() as i32) {
            Ok(fd) => fd,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("pidfd_open({what}): {e}"));
            }
        };
        Ok(Kid { child, pidfd, what })
    }

    fn log_tail(&self) -> String {
        let path = self.dir.join("crun.log");
        let mut s = String::new();
        if let Ok(mut f) = File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(1500)));
            let _ = f.read_to_string(&mut s);
        }
        tail(&s, 1500)
    }

    /// Reads all queued inotify events: the names created in the ready dir, and whether the queue
    /// overflowed.
    fn drain_inotify(&self) -> Result<(Vec<String>, bool), String> {
        let mut f = self.inotify.as_ref().ok_or("no inotify")?;
        let mut names = Vec::new();
        let mut overflow = false;
        let mut buf = [0u8; 8192];
        loop {
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read inotify: {e}")),
            };
            let mut off = 0;
            // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }
            while off + 16 <= n {
                let word = |i: usize| {
                    let b = &buf[off + i..off + i + 4];
                    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                };
                let mask = word(4);
                let len = word(12) as usize;
                let name = &buf[(off + 16).min(n)..(off + 16 + len).min(n)];
                let name = name.split(|&c| c == 0).next().unwrap_or_default();
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    overflow = true;
                } else if !name.is_empty() {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
                off += 16 + len;
            }
        }
        Ok((names, overflow))
    }

    fn config(&self, name: &str) -> serde_json::Value {
        let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        serde_json::json!({
            "ociVersion": "1.0.0",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": [
                    "/bin/sh", "-c",
                    "trap 'exit 0' TERM; : > /ready/$NAME; while :; do sleep 3600 & wait; done"
                ],
                "env": ["PATH=/bin", format!("NAME={name}")],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "inheritable": [],
                    "permitted": caps, "ambient": caps
                },
                "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
                "noNewPrivileges": true
            },
            "root": { "path": self.rootfs(), "readonly": true },
            "hostname": "crun",
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] },
                { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                  "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
                { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "nodev", "mode=1777"] },
                { "destination": "/ready", "type": "bind", "source": self.ready_dir(),
                  "options": ["rbind", "rw"] }
            ],
            "linux": {
                "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
                "namespaces": [
                    { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                    { "type": "uts" }, { "type": "mount" }
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        })
    }

    /// Starts `n` containers at once; returns the wall time until all are running, and their ids.
    fn start(&mut self, n: usize) -> Result<(Duration, Vec<String>), String> {
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            self.seq += 1;
            let name = format!("cml-crun-{}-{}", std::process::id(), self.seq);
            let bundle = self.bundle(&name);
            fs::create_dir_all(&bundle).map_err(|e| format!("create {}: {e}", bundle.display()))?;
            let cfg = bundle.join("config.json");
            fs::write(&cfg, self.config(&name).to_string())
                .map_err(|e| format!("write {}: {e}", cfg.display()))?;
            names.push(name);
        }
        let bundles: Vec<(String, String)> = names
            .iter()
            .map(|n| {
                let b = self.bundle(n);
                (b.display().to_string(), b.join("pid").display().to_string())
            })
            .collect();
        self.drain_inotify()?;
        let inotify = self.inotify.as_ref().ok_or("no inotify")?.as_raw_fd();
        let mut pending: HashSet<String> = names.iter().cloned().collect();
        let mut kids: Vec<Kid> = Vec::with_capacity(n);

        let t0 = Instant::now();
        for (name, (bundle, pidfile)) in names.iter().zip(&bundles) {
            self.live.insert(name.clone(), None);
            kids.push(self.spawn(&["run", "-d", "--pid-file", pidfile, "--bundle", bundle, name])?);
        }
        let (mut t_exit, mut t_ready) = (t0, t0);
        let deadline = t0 + ROUND_TIMEOUT;
        while !kids.is_empty() || !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "start of {n}: timed out; not returned: {}, not ready: {pending:?}; crun log: {}",
                    kids.len(),
                    self.log_tail()
                ));
            }
            let mut fds = vec![inotify];
            fds.extend(kids.iter().map(|k| k.pidfd.as_raw_fd()));
            let ready = poll_in(&fds, left)?;
            let now = Instant::now();
            if ready[0] {
                let (created, overflow) = self.drain_inotify()?;
                for c in created {
                    if pending.remove(&c) {
                        t_ready = now;
                    }
                }
                if overflow {
                    let dir = self.ready_dir();
                    let before = pending.len();
                    pending.retain(|p| !dir.join(p).exists());
                    if pending.len() != before {
                        t_ready = now;
                    }
                }
            }
            for i in (0..kids.len()).rev() {
                if ready[i + 1] {
                    let mut kid = kids.swap_remove(i);
                    kid.finish()
                        .map_err(|e| format!("{e}; crun log: {}", self.log_tail()))?;
                    t_exit = now;
                }
            }
        }
        let elapsed = t_exit.max(t_ready) - t0;

        // Untimed: the guests' pids, as pidfds for the stop.
        for (name, (_, pidfile)) in names.iter().zip(&bundles) {
            let pid: i32 = fs::read_to_string(pidfile)
                .map_err(|e| format!("read {pidfile}: {e}"))?
                .trim()
                .parse()
                .map_err(|e| format!("parse {pidfile}: {e}"))?;
            let fd = pidfd_open(pid).map_err(|e| format!("pidfd_open({name} init {pid}): {e}"))?;
            self.live.insert(name.clone(), Some(fd));
        }
        Ok((elapsed, names))
    }

    /// Stops the running containers `names` at once (kill TERM → guest exit → delete, each as
    /// soon as its own previous step is done); returns the wall time until all are deleted.
    fn stop(&mut self, names: &[String]) -> Result<Duration, String> {
        let mut guests: Vec<RawFd> = Vec::with_capacity(names.len());
        for name in names {
            match self.live.get(name) {
                Some(Some(fd)) => guests.push(fd.as_raw_fd()),
                _ => return Err(format!("stop {name}: no pidfd on its init")),
            }
        }
        let mut state: Vec<Stop> = Vec::with_capacity(names.len());

        let t0 = Instant::now();
        for name in names {
            state.push(Stop::Killing(self.spawn(&["kill", name, "TERM"])?));
        }
        let mut t_end = t0;
        let deadline = t0 + ROUND_TIMEOUT;
        loop {
            let mut fds = Vec::with_capacity(names.len());
            let mut idx = Vec::with_capacity(names.len());
            for (i, s) in state.iter().enumerate() {
                let fd = match s {
                    Stop::Killing(k) | Stop::Deleting(k) => k.pidfd.as_raw_fd(),
                    Stop::WaitingGuest => guests[i],
                    Stop::Done => continue,
                };
                fds.push(fd);
                idx.push(i);
            }
            if fds.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "stop of {}: timed out; crun log: {}",
                    names.len(),
                    self.log_tail()
                ));
            }
            let ready = poll_in(&fds, left)?;
            let now = Instant::now();
            for (&i, _) in idx.iter().zip(&ready).filter(|(_, r)| **r) {
                let name = &names[i];
                state[i] = match std::mem::replace(&mut state[i], Stop::Done) {
                    Stop::Killing(mut k) => {
                        k.finish()
                            .map_err(|e| format!("{e}; crun log: {}", self.log_tail()))?;
                        Stop::WaitingGuest
                    }
                    Stop::WaitingGuest => Stop::Deleting(self.spawn(&["delete", name])?),
                    Stop::Deleting(mut k) => {
                        k.finish()
                            .map_err(|e| format!("{e}; crun log: {}", self.log_tail()))?;
                        self.live.remove(name);
                        t_end = now;
                        Stop::Done
                    }
                    Stop::Done => Stop::Done,
                };
            }
        }
        let elapsed = t_end - t0;

        // Untimed tidying.
        for name in names {
            let _ = fs::remove_dir_all(self.bundle(name));
            let _ = fs::remove_file(self.ready_dir().join(name));
        }
        Ok(elapsed)
    }

    /// Removes every trace of the session; safe to call more than once.
    fn cleanup(&mut self) -> Result<(), String> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        let mut errs = Vec::new();
        let mut live: Vec<(String, Option<OwnedFd>)> = self.live.drain().collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, pidfd) in live {
            if let Err(e) = self.remove_container(&name, pidfd) {
                errs.push(e);
            }
        }
        if !self.state_root_existed {
            // Only if empty: another crun user may have created state meanwhile.
            let _ = fs::remove_dir(CRUN_STATE);
        }
        self.ns = None;
        self.inotify = None;
        self.log = None;
        if self.dir_created
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            errs.push(format!("remove {}: {e}", self.dir.display()));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Force-deletes one container and whatever it left behind.
    fn remove_container(&self, name: &str, pidfd: Option<OwnedFd>) -> Result<(), String> {
        let mut deleted = false;
        if let Ok(mut cmd) = self.command(&["delete", "-f", name])
            && let Ok(mut child) = cmd.spawn()
        {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        deleted = st.success();
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let mut errs = Vec::new();
        if !deleted {
            // Kill the init ourselves, but only if it is provably this container's.
            let pidfd = pidfd.or_else(|| {
                let pid: i32 = fs::read_to_string(self.bundle(name).join("pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let fd = pidfd_open(pid).ok()?;
                let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
                cg.lines().any(|l| l.ends_with(&format!("/{name}"))).then_some(fd)
            });
            if let Some(fd) = pidfd
                && pidfd_kill(&fd).is_ok()
            {
                let _ = poll_in(&[fd.as_raw_fd()], Duration::from_secs(5));
            }
            let state = Path::new(CRUN_STATE).join(name);
            if state.exists()
                && let Err(e) = fs::remove_dir_all(&state)
            {
                errs.push(format!("remove {}: {e}", state.display()));
            }
        }
        for cg in cgroup_dirs(name) {
            if let Err(e) = rmdir_tree(&cg) {
                errs.push(format!("rmdir {}: {e}", cg.display()));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("{name}: {}", errs.join(", ")))
        }
    }
}

/// Creates the private mount namespace without `/sys/fs/cgroup/unified` and returns an fd on it.
fn private_namespace() -> Result<OwnedFd, String> {
    let mut holder = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            "umount /sys/fs/cgroup/unified 2>/dev/null; echo ok; exec cat >/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let result = (|| {
        let pid = holder.id();
        let mut line = String::new();
        let stdout = holder.stdout.take().ok_or("unshare: no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("unshare: {e}"))?;
        if line.trim() != "ok" {
            return Err("unshare -m failed".to_string());
        }
        let ns: OwnedFd = File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| format!("open /proc/{pid}/ns/mnt: {e}"))?
            .into();
        let ours = fs::metadata("/proc/self/ns/mnt").map_err(|e| format!("stat mnt ns: {e}"))?;
        let theirs = fs::metadata(format!("/proc/{pid}/ns/mnt")).map_err(|e| format!("stat mnt ns: {e}"))?;
        use std::os::unix::fs::MetadataExt;
        if ours.ino() == theirs.ino() {
            return Err("unshare did not create a mount namespace".into());
        }
        let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(|e| format!("read mountinfo: {e}"))?;
        if mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"))
        {
            return Err("could not unmount /sys/fs/cgroup/unified in the private namespace".into());
        }
        Ok(ns)
    })();
    drop(holder.stdin.take()); // cat sees EOF and the holder exits
    if result.is_err() {
        let _ = holder.kill();
    }
    let _ = holder.wait();
    result
}

/// The cgroup directories crun may have made for `name`: `/<name>` in every hierarchy.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    let direct = root.join(name);
    if direct.is_dir() {
        dirs.push(direct);
    }
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path().join(name);
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    dirs
}

/// rmdir a cgroup and its children, children first; retries briefly while processes die.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}
