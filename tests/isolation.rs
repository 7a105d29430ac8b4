//! Isolation seen from inside a container: what a guest's root must not be able to see or do to the
//! host. Each test starts its own cmld, proves that `control run` works in the container, and then
//! tries one way out — with and without a user namespace where the two differ. Every test runs
//! against two guests (the modules `busybox` and `debian`): the busybox fixture GuestOS (a
//! read-only squashfs root, a shell as init) and Debian 12 with systemd as init (a SHARED_RW root,
//! `scripts/debian-fixture.sh`), whose root owns more (its cgroup, its /dev, a writable root).

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Daemon;

/// Capability numbers of linux/capability.h.
const CAP_CHOWN: u32 = 0;
const CAP_LINUX_IMMUTABLE: u32 = 9;
const CAP_IPC_OWNER: u32 = 15;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_PACCT: u32 = 20;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_TIME: u32 = 25;
const CAP_LEASE: u32 = 28;
const CAP_AUDIT_CONTROL: u32 = 30;
const CAP_MAC_OVERRIDE: u32 = 32;
const CAP_MAC_ADMIN: u32 = 33;
const CAP_SYSLOG: u32 = 34;
const CAP_WAKE_ALARM: u32 = 35;
const CAP_BLOCK_SUSPEND: u32 = 36;

/// What every container's bounding set lacks (SPEC §4.2).
const ALWAYS_DROPPED: &[(u32, &str)] = &[
    (CAP_SYS_MODULE, "SYS_MODULE"),
    (CAP_SYS_RAWIO, "SYS_RAWIO"),
    (CAP_SYS_TIME, "SYS_TIME"),
    (CAP_SYS_PACCT, "SYS_PACCT"),
    (CAP_SYS_PTRACE, "SYS_PTRACE"),
    (CAP_LINUX_IMMUTABLE, "LINUX_IMMUTABLE"),
    (CAP_IPC_OWNER, "IPC_OWNER"),
    (CAP_LEASE, "LEASE"),
    (CAP_MAC_ADMIN, "MAC_ADMIN"),
    (CAP_MAC_OVERRIDE, "MAC_OVERRIDE"),
    (CAP_AUDIT_CONTROL, "AUDIT_CONTROL"),
    (CAP_SYSLOG, "SYSLOG"),
    (CAP_WAKE_ALARM, "WAKE_ALARM"),
    (CAP_BLOCK_SUSPEND, "BLOCK_SUSPEND"),
];

/// The guest a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guest {
    /// The busybox fixture: `sh -c` as init, tmpfs `/data`.
    Busybox,
    /// Debian 12 with systemd as init, ext4 `/data`.
    Debian,
}

impl Guest {
    fn os(self) -> &'static str {
        match self {
            Guest::Busybox => "busybox",
            Guest::Debian => "debian",
        }
    }
}

/// A daemon with the guest's GuestOS installed.
fn daemon(tmp: &tempfile::TempDir, g: Guest) -> Daemon {
    match g {
        Guest::Busybox => common::busybox_daemon(tmp.path(), &[]),
        Guest::Debian => common::debian_daemon(),
    }
}

/// Creates a container without a user namespace (plus `extra` config lines), starts it and proves
/// that `run` works in it; returns its UUID.
fn start_plain(d: &Daemon, g: Guest, name: &str, extra: &str) -> String {
    let os = g.os();
    let uuid = d.create_text(
        name,
        &format!("name: \"{name}\"\nguest_os: \"{os}\"\ncolor: 1\ntoken_type: NONE\nuserns: false\n{extra}"),
    );
    start(d, name);
    uuid
}

/// Creates a container with the default user namespace, starts it and proves that `run` works in
/// it; returns its UUID.
fn start_userns(d: &Daemon, g: Guest, name: &str) -> String {
    let os = g.os();
    let uuid = d.create_text(
        name,
        &format!("name: \"{name}\"\nguest_os: \"{os}\"\ncolor: 1\ntoken_type: NONE\n"),
    );
    start(d, name);
    uuid
}

/// Starts and waits for RUNNING (a systemd guest gets there with READY=1, after the reply).
fn start(d: &Daemon, name: &str) {
    d.ok(&["start", name]);
    common::poll::wait_for("RUNNING", || d.ok(&["state", name]) == "RUNNING\n");
    assert_eq!(
        d.sh(name, "echo ok"),
        (0, "ok\n".to_owned()),
        "run does not work in {name}"
    );
}

/// `sh -c SCRIPT` in container `c` with stderr merged into stdout: (exit code, output).
fn sh(d: &Daemon, c: &str, script: &str) -> (i32, String) {
    d.sh(c, &format!("exec 2>&1; {script}"))
}

/// The host pid of a container's init.
fn init_pid(d: &Daemon, name: &str) -> i64 {
    d.status(name)["pid"].as_i64().unwrap()
}

/// A process on the host, killed by its pid when dropped (also when the test fails).
struct HostProcess(Child);

impl HostProcess {
    fn spawn(program: &str, args: &[&str]) -> HostProcess {
        HostProcess(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// The `Name:` field of a `/proc/<pid>/status` text, as a hexadecimal capability mask or the
/// whitespace-separated fields.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

fn cap_mask(status: &str, name: &str) -> u64 {
    u64::from_str_radix(status_field(status, name), 16).unwrap()
}

fn has_cap(mask: u64, cap: u32) -> bool {
    mask & (1u64 << cap) != 0
}

/// The container's cgroup directory of controller `ctrl` on the host.
fn cgroup_dir(d: &Daemon, ctrl: &str, uuid: &str) -> PathBuf {
    common::cgroup_dirs(&d.cgroup_parent)
        .into_iter()
        .find(|p| p.parent().and_then(|c| c.file_name()) == Some(ctrl.as_ref()))
        .unwrap_or_else(|| panic!("no {ctrl} cgroup for {}", d.cgroup_parent))
        .join(uuid)
}

fn host_processes_are_invisible(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    // A host process with an argument nothing in the container uses.
    let host = HostProcess::spawn("sleep", &["86399"]);
    assert!(PathBuf::from(format!("/proc/{}", host.pid())).exists());
    start_plain(&d, g, "pidbox", "");

    // The container's /proc lists its own processes only: its init is pid 1, and there are few
    // (a systemd guest runs a handful of services).
    let (code, pids) = sh(&d, "pidbox", "cd /proc && for p in [0-9]*; do echo $p; done");
    assert_eq!(code, 0);
    let pids: Vec<u32> = pids.lines().map(|l| l.parse().unwrap()).collect();
    assert!(pids.contains(&1), "{pids:?}");
    let few = if g == Guest::Busybox { 10 } else { 20 };
    assert!(
        pids.len() < few,
        "the container sees {} processes: {pids:?}",
        pids.len()
    );
    let (init, own) = match g {
        Guest::Busybox => ("/bin/sh\0-c\0trap", "sleep 3600"),
        Guest::Debian => ("/sbin/init\0", "/sbin/init"),
    };
    assert!(sh(&d, "pidbox", "cat /proc/1/cmdline").1.starts_with(init));
    // Neither ps nor /proc shows the host's sleep, and its pid cannot be signalled.
    let (code, ps) = sh(&d, "pidbox", "ps -o pid,args");
    assert_eq!(code, 0);
    assert!(ps.contains(own), "the container's own {own} is missing: {ps}");
    assert!(!ps.contains("86399"), "a host process is visible: {ps}");
    let (_, cmdlines) = sh(&d, "pidbox", "cat /proc/[0-9]*/cmdline");
    assert!(
        !cmdlines.contains("86399"),
        "a host process is visible: {cmdlines}"
    );
    let (code, _) = sh(&d, "pidbox", &format!("kill -0 {} 2>/dev/null", host.pid()));
    assert_ne!(code, 0, "the container can signal the host's pid {}", host.pid());
    // The host still sees it: the sleep was alive all along.
    assert!(PathBuf::from(format!("/proc/{}", host.pid())).exists());
    d.ok(&["stop", "pidbox"]);
}

fn mounting_is_refused_with_and_without_a_user_namespace(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "plain", "");
    start_userns(&d, g, "mapped");
    for c in ["plain", "mapped"] {
        // /tmp lies on the read-only root; a directory on the container's own tmpfs /run is
        // writable, so only the mount itself can fail there.
        let (code, out) = sh(&d, c, "mount -t tmpfs none /tmp");
        assert_ne!(code, 0, "{c}: mount on /tmp succeeded: {out}");
        let (code, out) = sh(&d, c, "mkdir -p /run/m && mount -t tmpfs none /run/m");
        assert_ne!(code, 0, "{c}: mount on /run/m succeeded: {out}");
        assert!(out.contains("permission denied"), "{c}: {out}");
        let (code, out) = sh(&d, c, "mount -o remount,rw /");
        assert_ne!(code, 0, "{c}: remounting the root rw succeeded: {out}");
        let (_, mounts) = sh(&d, c, "cat /proc/self/mounts");
        assert!(!mounts.contains(" /tmp "), "{c}: {mounts}");
        assert!(!mounts.contains(" /run/m "), "{c}: {mounts}");
    }
    d.ok(&["stop", "plain"]);
    d.ok(&["stop", "mapped"]);
}

fn dev_mem_and_dev_kmsg_are_absent_and_cannot_be_created(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "devbox", "");
    for dev in ["/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/port"] {
        assert_ne!(sh(&d, "devbox", &format!("test -e {dev}")).0, 0, "{dev} exists");
        let (code, out) = sh(&d, "devbox", &format!("cat {dev} | head -c 16"));
        assert!(out.contains("No such file"), "{dev}: {code} {out:?}");
    }
    // The container's root keeps CAP_MKNOD, and the device cgroup allows /dev/null's numbers: that
    // mknod works, so the refusals below are the device cgroup's.
    let (code, out) = sh(
        &d,
        "devbox",
        "mknod /dev/null2 c 1 3 && echo hi > /dev/null2 && echo made",
    );
    assert_eq!((code, out.as_str()), (0, "made\n"));
    for (node, minor) in [("mem", 1), ("kmem", 2), ("port", 4), ("kmsg", 11)] {
        for dir in ["/dev", "/run", "/data"] {
            let (code, out) = sh(&d, "devbox", &format!("mknod {dir}/{node} c 1 {minor}"));
            assert_ne!(code, 0, "mknod {dir}/{node} succeeded: {out}");
            assert!(out.contains("not permitted"), "mknod {dir}/{node}: {out}");
            assert_ne!(sh(&d, "devbox", &format!("test -e {dir}/{node}")).0, 0);
        }
    }
    d.ok(&["stop", "devbox"]);
}

fn host_devices_cannot_be_created_or_opened(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "plain", "");
    start_userns(&d, g, "mapped");
    for c in ["plain", "mapped"] {
        // A disk (sda), a loop device (the kind the container's own images are on), a tty.
        for (node, spec) in [("sda", "b 8 0"), ("loop0", "b 7 0"), ("tty1", "c 4 1")] {
            for dir in ["/dev", "/run", "/data"] {
                let (code, out) = sh(&d, c, &format!("mknod {dir}/{node} {spec}"));
                assert_ne!(code, 0, "{c}: mknod {dir}/{node} {spec} succeeded: {out}");
                assert_ne!(sh(&d, c, &format!("test -e {dir}/{node}")).0, 0);
            }
        }
    }
    // A node the container did not make (here the host puts one into its /dev) cannot be opened:
    // the device cgroup refuses with EPERM before any driver is asked.
    let node = format!("/proc/{}/root/dev/sda", init_pid(&d, "plain"));
    nix::sys::stat::mknod(
        node.as_str(),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(8, 0),
    )
    .unwrap();
    assert_eq!(
        sh(&d, "plain", "test -b /dev/sda && echo there"),
        (0, "there\n".to_owned())
    );
    let (code, out) = sh(&d, "plain", "head -c 1 /dev/sda");
    assert_ne!(code, 0, "reading /dev/sda succeeded: {out:?}");
    assert!(out.contains("not permitted"), "{out}");
    let (code, out) = sh(&d, "plain", "echo x >> /dev/sda");
    assert_ne!(code, 0, "writing /dev/sda succeeded: {out:?}");
    assert!(out.contains("not permitted"), "{out}");
    d.ok(&["stop", "plain"]);
    d.ok(&["stop", "mapped"]);
}

/// Restores a sysctl on drop, in case a container managed to change it.
struct SysctlGuard(&'static str, String);

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if fs::read_to_string(self.0).ok().as_deref() != Some(self.1.as_str()) {
            let _ = fs::write(self.0, &self.1);
        }
    }
}

fn proc_sys_and_sys_are_read_only(g: Guest) {
    // A global (not namespaced) sysctl any writer could change without a capability.
    const SYSCTL: &str = "/proc/sys/kernel/printk_ratelimit_burst";
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    let before = fs::read_to_string(SYSCTL).unwrap();
    let _restore = SysctlGuard(SYSCTL, before.clone());
    let other = before.trim().parse::<u32>().unwrap() + 1;
    start_plain(&d, g, "plain", "");
    start_userns(&d, g, "mapped");
    for c in ["plain", "mapped"] {
        // Readable, as a guest expects.
        assert_eq!(sh(&d, c, &format!("cat {SYSCTL}")), (0, before.clone()), "{c}");
        let (code, out) = sh(&d, c, &format!("echo {other} > {SYSCTL}"));
        assert_ne!(code, 0, "{c}: writing {SYSCTL} succeeded: {out}");
        assert_eq!(
            fs::read_to_string(SYSCTL).unwrap(),
            before,
            "{c} changed the host's {SYSCTL}"
        );
        // Another host-wide one.
        let (code, out) = sh(&d, c, "echo 1 > /proc/sys/vm/drop_caches");
        assert_ne!(code, 0, "{c}: writing vm/drop_caches succeeded: {out}");
        // The sysrq trigger (when the kernel has one): opened for writing only, appending
        // nothing, so nothing is triggered even if the open succeeded.
        if std::path::Path::new("/proc/sysrq-trigger").exists() {
            let (code, out) = sh(&d, c, ": >> /proc/sysrq-trigger");
            assert_ne!(code, 0, "{c}: /proc/sysrq-trigger is writable: {out}");
        }
        // /sys is read-only.
        let (code, out) = sh(&d, c, "echo change > /sys/kernel/uevent_helper");
        assert_ne!(code, 0, "{c}: writing /sys succeeded: {out}");
        let (code, out) = sh(&d, c, "mkdir /sys/fs/new");
        assert_ne!(code, 0, "{c}: mkdir in /sys succeeded: {out}");
        assert!(out.contains("Read-only file system"), "{c}: {out}");
        let (_, mounts) = sh(&d, c, "cat /proc/self/mounts");
        let sys = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/sys"))
            .unwrap_or_else(|| panic!("{c}: no /sys in {mounts}"));
        assert!(
            sys.split_whitespace().nth(3).unwrap().starts_with("ro"),
            "{c}: {sys}"
        );
        let proc_sys = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/proc/sys"))
            .unwrap_or_else(|| panic!("{c}: no /proc/sys mount in {mounts}"));
        assert!(
            proc_sys.split_whitespace().nth(3).unwrap().starts_with("ro"),
            "{c}: {proc_sys}"
        );
    }
    assert_eq!(fs::read_to_string(SYSCTL).unwrap(), before);
    d.ok(&["stop", "plain"]);
    d.ok(&["stop", "mapped"]);
}

fn the_control_socket_is_unreachable(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "sockbox", "");
    assert!(d.socket.exists());
    let sock = d.socket.display().to_string();
    let dir = d.socket.parent().unwrap().display().to_string();
    for path in [
        dir.as_str(),
        sock.as_str(),
        "/run/socket",
        "/run/socket/cml-control",
    ] {
        let (code, out) = sh(&d, "sockbox", &format!("ls {path}"));
        assert_ne!(code, 0, "{path} is visible: {out}");
        assert!(out.contains("No such file"), "{path}: {out}");
    }
    // Through /proc/<pid>/root: the container's /proc has only its own processes, whose root is the
    // container's.
    let (_, out) = sh(
        &d,
        "sockbox",
        &format!("for r in /proc/[0-9]*/root; do ls $r{sock} 2>/dev/null && echo $r; done; echo end"),
    );
    assert_eq!(out, "end\n", "the socket is reachable through /proc: {out}");
    assert_eq!(sh(&d, "sockbox", "ls /proc/1/root/"), sh(&d, "sockbox", "ls /"));
    d.ok(&["stop", "sockbox"]);
}

fn the_ram_limit_cannot_be_raised_from_inside(g: Guest) {
    const LIMIT: &str = "67108864\n";
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    let uuid = start_plain(&d, g, "capped", "ram_limit: 64\n");
    let host_limit = cgroup_dir(&d, "memory", &uuid).join("memory.limit_in_bytes");
    assert_eq!(fs::read_to_string(&host_limit).unwrap(), LIMIT);
    for file in [
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        &format!(
            "/sys/fs/cgroup/memory/{}/{uuid}/memory.limit_in_bytes",
            d.cgroup_parent
        ),
    ] {
        let (code, out) = sh(&d, "capped", &format!("echo 1073741824 > {file}"));
        assert_ne!(code, 0, "writing {file} succeeded: {out}");
        // busybox sh and dash say "nonexistent" differently.
        assert!(
            out.contains("Read-only file system")
                || out.contains("nonexistent directory")
                || out.contains("Directory nonexistent"),
            "{file}: {out}"
        );
    }
    // The guest sees its own cgroup (a systemd guest needs it), read-only: the file is its limit,
    // not the host's root cgroup's.
    assert_eq!(
        sh(&d, "capped", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"),
        (0, LIMIT.to_owned())
    );
    // Nor can it mount a cgroup hierarchy of its own to reach the file.
    let (code, out) = sh(
        &d,
        "capped",
        "mkdir -p /run/cg && mount -t cgroup -o memory cgroup /run/cg",
    );
    assert_ne!(code, 0, "mounting the memory cgroup succeeded: {out}");
    assert_eq!(fs::read_to_string(&host_limit).unwrap(), LIMIT);
    d.ok(&["stop", "capped"]);
}

fn dot_dot_stays_inside_the_container_root(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "dotdot", "");
    let host_hostname = fs::read_to_string("/etc/hostname").unwrap();
    assert!(!host_hostname.trim().is_empty());
    let (_, inside) = sh(&d, "dotdot", "cat /data/../../../../etc/hostname");
    assert_ne!(inside, host_hostname, "the host's /etc/hostname leaked");
    // That path is the container's /etc: the busybox fixture's has no hostname file (it holds
    // resolv.conf only), Debian's has its own.
    let (_, ids) = sh(&d, "dotdot", "ls -id /etc /data/../../../../etc | cut -d' ' -f1");
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    match g {
        Guest::Busybox => assert!(inside.contains("No such file"), "{inside}"),
        Guest::Debian => assert_eq!(inside, sh(&d, "dotdot", "cat /etc/hostname").1),
    }
    // `..` of the root, of a bind/volume mount and of a nested mount is the container's root.
    let root = sh(&d, "dotdot", "ls -a /");
    assert_eq!(root.0, 0);
    assert!(
        root.1.contains("data\n") && root.1.contains("proc\n"),
        "{}",
        root.1
    );
    for path in ["/..", "/../..", "/data/../../..", "/dev/pts/../../.."] {
        assert_eq!(sh(&d, "dotdot", &format!("ls -a {path}")), root, "{path}");
    }
    // Same inode as /, not just the same names.
    let (_, ids) = sh(
        &d,
        "dotdot",
        "ls -id / | cut -d' ' -f1; ls -id /data/../../.. | cut -d' ' -f1",
    );
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    d.ok(&["stop", "dotdot"]);
}

/// The classic way out of a chroot: a process in a nested jail whose working directory is still
/// outside it (busybox `nsenter -r JAIL -w /` opens `/` first and `fchdir`s to it after the chroot,
/// as a leftover directory descriptor would) climbs `..` as far as it goes and chroots there. It
/// must end in the container's root, with and without a user namespace (the VM lab's device
/// scenario runs the same escape where the root was entered by a move + chroot). Busybox only: the
/// jail needs a static shell.
#[test]
fn a_jail_left_by_its_working_directory_ends_in_the_container_root() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, Guest::Busybox);
    start_plain(&d, Guest::Busybox, "jailed", "");
    start_userns(&d, Guest::Busybox, "jailedns");
    for c in ["jailed", "jailedns"] {
        let root = sh(&d, c, "ls -a /");
        assert_eq!(root.0, 0, "{c}: {}", root.1);
        assert!(root.1.contains("data\n"), "{c}: {}", root.1);
        let escaped = sh(
            &d,
            c,
            "mkdir -p /data/jail/bin && cp /bin/busybox /data/jail/bin/busybox && \
             busybox nsenter -r/data/jail -w/ /bin/busybox sh -c \
             'cd ../../../../..; exec /bin/busybox chroot . /bin/busybox ls -a /'",
        );
        assert_eq!(escaped, root, "{c}: the escape reached another root");
        // The escape is real: the jail alone would show only bin.
        let jail = sh(&d, c, "busybox chroot /data/jail /bin/busybox ls -a /");
        assert_eq!(jail, (0, ".\n..\nbin\n".to_owned()), "{c}");
        d.ok(&["stop", c]);
    }
}

fn user_namespace_root_is_an_unprivileged_uid_on_the_host(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    let uuid = start_userns(&d, g, "mapped");
    assert_eq!(sh(&d, "mapped", "id -u; id -g"), (0, "0\n0\n".to_owned()));
    let status = fs::read_to_string(format!("/proc/{}/status", init_pid(&d, "mapped"))).unwrap();
    for field in ["Uid", "Gid"] {
        let ids: Vec<u32> = status_field(&status, field)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 4, "{field}: {ids:?}");
        assert!(ids.iter().all(|&id| id >= 100_000), "init {field}: {ids:?}");
    }
    // So is every process of the container, including one started with `run`.
    let run = HostProcess::spawn(
        common::CONTROL,
        &[
            "-s",
            d.socket.to_str().unwrap(),
            "run",
            "mapped",
            "nopty",
            "sleep",
            "30",
        ],
    );
    let procs = cgroup_dir(&d, "pids", &uuid).join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let found = fs::read_to_string(&procs)
            .unwrap()
            .lines()
            .find(|p| fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == "sleep\x0030\0"))
            .map(str::to_owned);
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "the run's sleep did not appear");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap();
    let uid: u32 = status_field(&status, "Uid")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uid >= 100_000, "a run process has host uid {uid}");
    drop(run);
    d.ok(&["stop", "mapped"]);
}

fn check_bounding_set(d: &Daemon, c: &str, userns: bool) {
    for who in ["self", "1"] {
        let (code, status) = sh(d, c, &format!("cat /proc/{who}/status"));
        assert_eq!(code, 0);
        let bnd = cap_mask(&status, "CapBnd");
        for (cap, name) in ALWAYS_DROPPED {
            assert!(!has_cap(bnd, *cap), "{c} /proc/{who}: {name} in CapBnd {bnd:#x}");
            assert!(
                !has_cap(cap_mask(&status, "CapEff"), *cap),
                "{c} /proc/{who}: {name} in CapEff"
            );
            assert!(
                !has_cap(cap_mask(&status, "CapPrm"), *cap),
                "{c} /proc/{who}: {name} in CapPrm"
            );
        }
        // SYS_ADMIN goes only without a user namespace; SYS_BOOT (SPEC §4.2) and CHOWN stay,
        // which shows the mask is read right rather than simply empty.
        assert_eq!(
            has_cap(bnd, CAP_SYS_ADMIN),
            userns,
            "{c} /proc/{who}: SYS_ADMIN {bnd:#x}"
        );
        if !userns {
            assert!(
                !has_cap(cap_mask(&status, "CapEff"), CAP_SYS_ADMIN),
                "{c}: SYS_ADMIN effective"
            );
        }
        assert!(has_cap(bnd, CAP_SYS_BOOT), "{c} /proc/{who}: {bnd:#x}");
        assert!(has_cap(bnd, CAP_CHOWN), "{c} /proc/{who}: {bnd:#x}");
    }
}

fn the_spec_capabilities_are_dropped(g: Guest) {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp, g);
    start_plain(&d, g, "plain", "");
    start_userns(&d, g, "mapped");
    check_bounding_set(&d, "plain", false);
    check_bounding_set(&d, "mapped", true);
    d.ok(&["stop", "plain"]);
    d.ok(&["stop", "mapped"]);
}

/// Each test once per guest: `busybox::NAME` and `debian::NAME`.
macro_rules! each_guest {
    ($($test:ident),* $(,)?) => {
        mod busybox {
            $(#[test]
            fn $test() {
                super::$test(super::Guest::Busybox);
            })*
        }
        mod debian {
            $(#[test]
            fn $test() {
                super::$test(super::Guest::Debian);
            })*
        }
    };
}

each_guest!(
    host_processes_are_invisible,
    mounting_is_refused_with_and_without_a_user_namespace,
    dev_mem_and_dev_kmsg_are_absent_and_cannot_be_created,
    host_devices_cannot_be_created_or_opened,
    proc_sys_and_sys_are_read_only,
    the_control_socket_is_unreachable,
    the_ram_limit_cannot_be_raised_from_inside,
    dot_dot_stays_inside_the_container_root,
    user_namespace_root_is_an_unprivileged_uid_on_the_host,
    the_spec_capabilities_are_dropped,
);
