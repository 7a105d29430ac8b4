//! Test harness: a real `cmld` on a private data dir, socket and run dir, driven by the real
//! `control` binary or by raw frames. Each daemon also gets its own cgroup parent, interface-name
//! prefix and subnet so tests can run in parallel. The daemon is ended by PID on drop (also when
//! the test fails) and the temporary directory removed.

#![allow(dead_code, clippy::unwrap_used)]

pub mod fixture;
pub mod http;
pub mod poll;
pub mod terminal;
pub mod web;
pub mod webdriver;

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cml::protocol::{
    codec::{encode_frame, read_frame},
    pb::{ControllerToDaemon, DaemonToController},
};
use prost::Message;

pub const CMLD: &str = env!("CARGO_BIN_EXE_cmld");
pub const CONTROL: &str = env!("CARGO_BIN_EXE_control");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A GuestOS config without shipped images (a tmpfs root), placed directly into the store by
/// [`install_guestos`] for tests that exercise container configs only. Tests of GuestOS
/// installation use the real busybox fixture ([`fixture`]).
pub fn guestos_conf(name: &str, version: u64) -> String {
    format!(
        "name: \"{name}\"\nhardware: \"x86\"\nversion: {version}\ndescription {{\n  en: \"{name} test GuestOS\"\n}}\n\
         mounts {{\n  image_file: \"root\"\n  mount_point: \"/\"\n  fs_type: \"tmpfs\"\n  mount_type: EMPTY\n}}\n\
         mounts {{\n  image_file: \"data\"\n  mount_point: \"/data\"\n  fs_type: \"ext4\"\n  mount_type: EMPTY\n  \
         min_size: 10\n  max_size: 100\n  def_size: 16\n}}\n"
    )
}

/// Places a GuestOS config into a data directory, as an installed GuestOS.
pub fn install_guestos(data: &Path, name: &str, version: u64) {
    let dir = data.join("operatingsystems").join(format!("{name}-{version}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("{name}-{version}.conf")),
        guestos_conf(name, version),
    )
    .unwrap();
}

/// A minimal container config text.
pub fn container_conf(name: &str) -> String {
    format!("name: \"{name}\"\nguest_os: \"busybox\"\ncolor: 4278190335\ntoken_type: NONE\n")
}

pub struct Daemon {
    /// The daemon's cgroup parent (unique per daemon).
    pub cgroup_parent: String,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub run: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    seq: u32,
}

impl Daemon {
    /// A daemon on a fresh data dir with a development device.conf and the busybox GuestOS.
    pub fn start() -> Daemon {
        let d = Daemon::prepare();
        fs::write(
            d.data.join("device.conf"),
            "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n",
        )
        .unwrap();
        install_guestos(&d.data, "busybox", 1);
        d.spawn()
    }

    /// A data dir without device.conf or GuestOS; call [`Daemon::spawn`] after preparing it.
    pub fn prepare() -> Daemon {
        let dir = tempfile::Builder::new().prefix("cmlt").tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        Daemon {
            cgroup_parent: format!("cmltest{}-{seq}", std::process::id()),
            socket: dir.path().join("sock"),
            run: dir.path().join("run"),
            log: dir.path().join("cmld.log"),
            data,
            dir,
            child: None,
            seq,
        }
    }

    /// A number naming this daemon's network resources, distinct among the daemons of one test
    /// process (by `seq`) and, barring a clash of pids modulo 32, among concurrent test processes.
    fn net_key(&self) -> u32 {
        (std::process::id() % 32) * 32 + self.seq % 32
    }

    /// The daemon's `--ifname-prefix`.
    pub fn ifname_prefix(&self) -> String {
        format!("t{}", self.net_key())
    }

    /// The daemon's `--net-base`: a /20 of its own in 10.64.0.0/10 (16 container subnets).
    pub fn net_base(&self) -> String {
        let k = self.net_key();
        format!("10.{}.{}.0/20", 64 + k / 16, (k % 16) * 16)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(CMLD);
        c.arg("--data-dir")
            .arg(&self.data)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--ifname-prefix")
            .arg(self.ifname_prefix())
            .arg("--net-base")
            .arg(self.net_base())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        c
    }

    /// Starts cmld and waits until its socket answers.
    pub fn spawn(mut self) -> Daemon {
        self.child = Some(self.command().spawn().unwrap());
        self.wait_ready();
        self
    }

    /// Starts cmld as a systemd socket unit would: `systemd-socket-activate` binds the control
    /// socket and execs cmld (with `env` added) on the first connection, passing the listening
    /// socket as descriptor 3 with `LISTEN_PID`/`LISTEN_FDS`. Waits until the socket answers
    /// (that first connection starts cmld).
    pub fn spawn_socket_activated(mut self, env: &[(&str, &str)]) -> Daemon {
        let inner = self.command();
        let mut c = Command::new("systemd-socket-activate");
        c.arg("-l").arg(&self.socket);
        for (k, v) in env {
            c.arg("-E").arg(format!("{k}={v}"));
        }
        c.arg(inner.get_program()).args(inner.get_args());
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap(),
        );
        self.child = Some(c.spawn().unwrap());
        self.wait_ready();
        self
    }

    /// Runs cmld expecting it to exit (e.g. on a bad device.conf); returns its exit status and log.
    pub fn run_to_exit(&self) -> (std::process::ExitStatus, String) {
        let status = self.command().status().unwrap();
        (status, fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("cmld exited early ({st}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("cmld did not come up: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGKILL and reap the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (SIGTERM, SIGINT), waits for exit, returns the status.
    pub fn terminate(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        send_signal(c.id() as i32, sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("cmld did not exit on {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the daemon again on the same directories.
    pub fn restart(self) -> Daemon {
        assert!(self.child.is_none());
        self.spawn()
    }

    /// Runs the real `control` binary against this daemon.
    pub fn control(&self, args: &[&str]) -> Output {
        self.control_stdin(args, "")
    }

    pub fn control_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(CONTROL)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// Runs `control` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.control(args);
        assert!(
            out.status.success(),
            "control {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes a file into the test directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Creates a container through `control create` and returns its UUID.
    pub fn create(&self, name: &str) -> String {
        self.create_text(name, &container_conf(name))
    }

    /// Creates a container from config text (`name` names the file); asserts success and returns
    /// its UUID.
    pub fn create_text(&self, name: &str, text: &str) -> String {
        let f = self.file(
            &format!("{name}-{}.conf", SEQ.fetch_add(1, Ordering::Relaxed)),
            text,
        );
        let out = self.control(&["--json", "create", &f]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["uuid"].as_str().unwrap().to_owned()
    }

    pub fn connect(&self) -> Client {
        Client(UnixStream::connect(&self.socket).unwrap())
    }
}

fn send_signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// The cgroup directories a daemon with this parent may have created.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for ctrl in ["memory", "cpuset", "pids", "devices", "freezer", "unified"] {
        let p = Path::new("/sys/fs/cgroup").join(ctrl).join(parent);
        if p.exists() {
            dirs.push(p);
        }
    }
    dirs
}

/// Kills whatever is left in a daemon's cgroups and removes them: the safety net that keeps a
/// failed test from leaking containers.
pub fn sweep_cgroups(parent: &str) {
    for dir in cgroup_dirs(parent) {
        let children: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        for child in &children {
            let _ = fs::write(child.join("freezer.state"), "THAWED");
            for pid in fs::read_to_string(child.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    send_signal(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        for child in children {
            for _ in 0..100 {
                if fs::remove_dir(&child).is_ok() || !child.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        sweep_cgroups(&self.cgroup_parent);
        // A killed cmld leaves its shared GuestOS image mounts (a terminated one detaches them).
        if let Ok(entries) = fs::read_dir(self.run.join("images")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// A development daemon (signatures off, 2 s stop timeout) with the busybox fixture GuestOS built
/// into `tmp` (with `build_args` for `cml-guestos build`) and pushed from a `file://` store.
pub fn busybox_daemon(tmp: &Path, build_args: &[&str]) -> Daemon {
    let f = fixture::busybox_guestos(tmp, "busybox", 1, build_args);
    let d = dev_daemon(&f.store_url());
    let empty = d.file("empty", "");
    d.ok(&["push_guestos_config", f.conf.to_str().unwrap(), &empty, &empty]);
    d
}

/// A development daemon (signatures off, 2 s stop timeout) with the Debian GuestOS (`debian`:
/// systemd, SHARED_RW root, ext4 `/data`) installed.
pub fn debian_daemon() -> Daemon {
    let store = fixture::debian().unwrap().join("store");
    let d = dev_daemon(&format!("file://{}", store.display()));
    let empty = d.file("empty", "");
    let conf = store.join("debian-12.conf");
    d.ok(&["push_guestos_config", conf.to_str().unwrap(), &empty, &empty]);
    d
}

/// A running development daemon (signatures off, 2 s stop timeout) fetching GuestOS images from
/// `store_url`.
pub fn dev_daemon(store_url: &str) -> Daemon {
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!("signed_configs: false\nstop_timeout: 2\nupdate_base_url: \"{store_url}\"\n"),
    )
    .unwrap();
    d.spawn()
}

impl Daemon {
    /// Creates a container of the busybox GuestOS (no token, no user namespace) with `extra`
    /// config lines; returns its UUID.
    pub fn create_container(&self, name: &str, extra: &str) -> String {
        self.create_text(
            name,
            &format!(
                "name: \"{name}\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\nuserns: false\n{extra}"
            ),
        )
    }

    /// Creates a SOFT-token (encrypted) container of the busybox GuestOS without a user namespace;
    /// returns its UUID.
    pub fn create_soft(&self, name: &str) -> String {
        self.create_text(
            name,
            &format!("name: \"{name}\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\n"),
        )
    }

    /// `control run C nopty sh -c SCRIPT`: (exit code, stdout).
    pub fn sh(&self, c: &str, script: &str) -> (i32, String) {
        let out = self.control(&["run", c, "nopty", "sh", "-c", script]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `control --json state C` as JSON.
    pub fn status(&self, c: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "state", c])).unwrap()
    }
}

/// A raw protocol client speaking frames the way upstream's client does.
pub struct Client(pub UnixStream);

impl Client {
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, msg: &ControllerToDaemon) {
        self.send_raw(&encode_frame(msg));
    }

    /// Reads one reply frame (raw payload); `None` on EOF.
    pub fn recv_raw(&mut self) -> Option<Vec<u8>> {
        self.0.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        read_frame(&mut self.0).unwrap()
    }

    pub fn recv(&mut self) -> DaemonToController {
        DaemonToController::decode(self.recv_raw().expect("a reply").as_slice()).unwrap()
    }

    pub fn call(&mut self, msg: &ControllerToDaemon) -> DaemonToController {
        self.send(msg);
        self.recv()
    }

    /// True when the daemon closed the connection (EOF, or reset).
    pub fn is_closed(&mut self) -> bool {
        self.0.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}
