//! The container runtime end to end: real containers from the busybox fixture GuestOS, started,
//! inspected with `control run`, frozen, limited, stopped — by the real cmld and `control`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::poll::poll;
use common::{Daemon, fixture::busybox_guestos};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host_ns(ns: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{ns}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn loops_backed_by(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_owned)
        .collect()
}

/// Nothing of a container is left: no cgroup below the daemon's parent, no loop device on its
/// own images, nothing in its run directory but the console log of its last run (kept for
/// `control logs` until the next start). (GuestOS images stay mounted, shared, while cmld runs.)
fn assert_clean(d: &Daemon, uuid: &str) {
    for dir in common::cgroup_dirs(&d.cgroup_parent) {
        assert!(
            !dir.join(uuid).exists(),
            "cgroup left: {}",
            dir.join(uuid).display()
        );
    }
    let left: Vec<String> = fs::read_dir(d.run.join(uuid))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.iter().all(|f| f == "console.log"), "run dir left: {left:?}");
    let own = d.data.join("containers");
    poll(Duration::from_secs(3), || loops_backed_by(&own).is_empty());
    assert_eq!(loops_backed_by(&own), Vec::<String>::new());
}

#[test]
fn a_container_starts_isolated_runs_commands_and_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container("box1", "");
    d.ok(&["start", "box1"]);
    assert_eq!(d.ok(&["state", "box1"]), "RUNNING\n");
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "state", "box1"])).unwrap();
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 1 && Path::new(&format!("/proc/{pid}")).exists(), "{st}");

    // pid 1 is the guest init; the hostname is the container name.
    let (code, out) = d.sh("box1", "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname");
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("/bin/sh -c trap"), "{out}");
    assert_eq!(lines.next(), Some("box1"));
    // New pid, mount, uts and ipc namespaces.
    for ns in ["pid", "mnt", "uts", "ipc"] {
        let (_, inside) = d.sh("box1", &format!("readlink /proc/1/ns/{ns}"));
        assert_ne!(inside.trim(), host_ns(ns), "{ns}");
        assert!(inside.starts_with(ns), "{inside}");
    }
    // The init and a `run` command are in the container's cgroup of every hierarchy (they move
    // themselves into the v1 ones): the host lists the init in each, and inside (a cgroup namespace
    // rooted at the container's cgroup) both see `/` everywhere; the monitor is in none.
    let dirs = common::cgroup_dirs(&d.cgroup_parent);
    assert!(!dirs.is_empty());
    for dir in &dirs {
        let procs = fs::read_to_string(dir.join(&uuid).join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{}: {procs}",
            dir.display()
        );
        let monitor = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ppid = monitor
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .unwrap()
            .trim();
        assert!(
            !procs.lines().any(|l| l == ppid),
            "the monitor joined {}",
            dir.display()
        );
    }
    let (_, out) = d.sh("box1", "cat /proc/1/cgroup /proc/self/cgroup");
    assert!(out.lines().count() >= 2 * dirs.len(), "{out}");
    for line in out.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert_eq!(path, "/", "outside the container's cgroup: {out}");
    }
    // Its own network namespace has lo, up (flags IFF_UP|IFF_LOOPBACK), and the default veth eth0.
    assert_eq!(
        d.sh("box1", "cat /sys/class/net/lo/flags; ls /sys/class/net").1,
        "0x9\neth0\nlo\n"
    );
    // The SHARED root is read-only; /data (a tmpfs EMPTY mount) is writable.
    let (code, out) = d.sh("box1", "touch /newfile 2>&1; echo rc=$?");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{code} {out}"
    );
    assert_eq!(d.sh("box1", "echo x > /data/f && cat /data/f").1, "x\n");
    // Without a user namespace the container cannot mount and has no CAP_SYS_ADMIN.
    let (code, _) = d.sh("box1", "mount -t tmpfs none /data 2>/dev/null");
    assert_ne!(code, 0, "mount must fail");
    let (_, status) = d.sh("box1", "grep CapBnd /proc/1/status");
    let bnd = u64::from_str_radix(status.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN in the bounding set: {status}");
    assert_eq!(bnd & (1 << 16), 0, "CAP_SYS_MODULE in the bounding set: {status}");
    assert_ne!(bnd & (1 << 22), 0, "CAP_SYS_BOOT stays: {status}");

    // run: exit codes propagate, with and without a pty.
    assert_eq!(d.sh("box1", "exit 0").0, 0);
    assert_eq!(d.sh("box1", "exit 3").0, 3);
    assert_eq!(d.sh("box1", "kill -9 $$").0, 137);
    let out = d.control(&["run", "box1", "sh", "-c", "echo with-a-pty; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stdout(&out).contains("with-a-pty"), "{}", stdout(&out));
    let out = d.control(&["run", "box1", "nopty", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));

    // A second start is refused; stop ends it by its own SIGTERM handling.
    let again = d.control(&["start", "box1"]);
    assert_eq!(again.status.code(), Some(1));
    d.ok(&["stop", "box1"]);
    assert_eq!(d.ok(&["state", "box1"]), "STOPPED\n");
    assert!(
        d.log_text().contains("code=Some(0)"),
        "graceful exit expected: {}",
        d.log_text()
    );
    assert!(!d.log_text().contains("stop timeout: SIGKILL"));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(d.control(&["stop", "box1"]).status.code(), Some(1));
    assert_clean(&d, &uuid);
    let out = d.control(&["run", "box1", "nopty", "true"]);
    assert_eq!(out.status.code(), Some(125));
    // The shared GuestOS image mount (and its loop device) goes with cmld.
    assert!(!loops_backed_by(&d.data).is_empty());
    let mut d = d;
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    poll(Duration::from_secs(3), || loops_backed_by(&d.data).is_empty());
    assert_eq!(loops_backed_by(&d.data), Vec::<String>::new());
}

#[test]
fn an_init_that_ignores_sigterm_is_killed_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container(
        "stubborn",
        "init_env: \"INIT=trap '' TERM; touch /run/ignoring\"\n",
    );
    d.ok(&["start", "stubborn"]);
    // RUNNING comes at exec; the guest ignores SIGTERM only once its script got that far.
    while d.sh("stubborn", "test -e /run/ignoring").0 != 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.ok(&["stop", "stubborn"]);
    assert_eq!(d.ok(&["state", "stubborn"]), "STOPPED\n");
    let log = d.log_text();
    assert!(
        log.contains("stop timeout: SIGKILL") && log.contains("signal=Some(9)"),
        "{log}"
    );
    assert_clean(&d, &uuid);
}

#[test]
fn ext4_data_persists_across_restarts_and_wipe_clears_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    let uuid = d.create_container("keeper", "");
    d.ok(&["start", "keeper"]);
    assert_eq!(d.sh("keeper", "echo persistent > /data/file; sync").0, 0);
    d.ok(&["stop", "keeper"]);
    assert!(d.data.join(format!("containers/{uuid}/data.img")).is_file());
    d.ok(&["start", "keeper"]);
    assert_eq!(d.sh("keeper", "cat /data/file").1, "persistent\n");
    // wipe stops the container and deletes its data; the next start has an empty volume.
    d.ok(&["wipe", "keeper"]);
    assert_eq!(d.ok(&["state", "keeper"]), "STOPPED\n");
    assert!(!d.data.join(format!("containers/{uuid}/data.img")).exists());
    d.ok(&["start", "keeper"]);
    assert_eq!(
        d.sh("keeper", "cat /data/file 2>/dev/null || echo gone").1,
        "gone\n"
    );
    // remove stops it and leaves nothing.
    d.ok(&["remove", "keeper"]);
    assert!(!d.data.join(format!("containers/{uuid}")).exists());
    assert_clean(&d, &uuid);
}

fn cpu_ticks(d: &Daemon, uuid: &str) -> u64 {
    let procs = fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/{}/{uuid}/cgroup.procs",
        d.cgroup_parent
    ))
    .unwrap();
    procs
        .lines()
        .filter_map(|p| fs::read_to_string(format!("/proc/{}/stat", p.trim())).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').unwrap().1;
            let f: Vec<&str> = after.split_whitespace().collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn freeze_stops_the_clock_and_ram_limit_contains_a_hog() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let busy = d.create_container(
        "busy",
        "init_env: \"INIT=(while :; do :; done) &\"\nram_limit: 32\n",
    );
    let bystander = d.create_container("bystander", "");
    d.ok(&["start", "busy"]);
    d.ok(&["start", "bystander"]);
    thread::sleep(Duration::from_millis(200));
    d.ok(&["freeze", "busy"]);
    assert_eq!(d.ok(&["state", "busy"]), "FROZEN\n");
    let t0 = cpu_ticks(&d, &busy);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(cpu_ticks(&d, &busy), t0, "CPU time advanced while frozen");
    d.ok(&["unfreeze", "busy"]);
    assert_eq!(d.ok(&["state", "busy"]), "RUNNING\n");
    let t1 = cpu_ticks(&d, &busy);
    thread::sleep(Duration::from_millis(500));
    assert!(
        cpu_ticks(&d, &busy) > t1,
        "CPU time did not advance after unfreeze"
    );

    // A memory hog inside the 32 MiB container is killed; the daemon and the others live on.
    let (code, _) = d.sh(
        "busy",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    assert_ne!(code, 0, "the hog survived");
    assert_eq!(d.ok(&["state", "bystander"]), "RUNNING\n");
    assert_eq!(d.sh("bystander", "echo alive").1, "alive\n");
    d.ok(&["stop", "busy"]);
    d.ok(&["stop", "bystander"]);
    assert_clean(&d, &busy);
    assert_clean(&d, &bystander);
}

#[test]
fn failed_starts_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    // An init that exits at once.
    let uuid = d.create_container("noinit", "init_env: \"INIT=exit 1\"\n");
    // The init exits at once: the start succeeds, then the container stops by itself.
    d.ok(&["start", "noinit"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.ok(&["state", "noinit"]) != "STOPPED\n" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.ok(&["state", "noinit"]), "STOPPED\n");
    assert_clean(&d, &uuid);

    // Missing image: the installed GuestOS lost its root image.
    let victim = d.create_container("victim", "");
    let img = d.data.join("operatingsystems/busybox-1/root.img");
    let saved = d.dir.path().join("root.img.saved");
    fs::rename(&img, &saved).unwrap();
    let out = d.control(&["start", "victim"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("check GuestOS images"), "{}", stderr(&out));
    assert_eq!(d.ok(&["state", "victim"]), "STOPPED\n");
    assert_clean(&d, &victim);
    fs::rename(&saved, &img).unwrap();

    // A cgroup limit the kernel refuses (a CPU this machine does not have).
    let cpus = d.create_container("nocpu", "assign_cpus: \"63\"\n");
    let out = d.control(&["start", "nocpu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("create cgroup") && stderr(&out).contains("cpuset.cpus"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.ok(&["state", "nocpu"]), "STOPPED\n");
    assert_clean(&d, &cpus);
}

#[test]
fn a_bad_init_path_fails_the_start_at_exec() {
    let tmp = tempfile::tempdir().unwrap();
    let f = busybox_guestos(tmp.path(), "broken", 1, &[]);
    // Rebuild its config with a missing init, re-using the image.
    let conf = fs::read_to_string(&f.conf)
        .unwrap()
        .replace("init_path: \"/bin/sh\"", "init_path: \"/sbin/nonexistent\"");
    assert!(conf.contains("/sbin/nonexistent"));
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!("signed_configs: false\nupdate_base_url: \"{}\"\n", f.store_url()),
    )
    .unwrap();
    let d = d.spawn();
    let conf_path = d.file("broken-1.conf", &conf);
    let empty = d.file("empty", "");
    let out = d.control(&["push_guestos_config", &conf_path, &empty, &empty]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = d.file(
        "c.conf",
        "name: \"c\"\nguest_os: \"broken\"\ncolor: 1\ntoken_type: NONE\nuserns: false\n",
    );
    let out = d.control(&["--json", "create", &conf]);
    let uuid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.control(&["start", "c"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exec init") && stderr(&out).contains("/sbin/nonexistent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.ok(&["state", "c"]), "STOPPED\n");
    assert_clean(&d, &uuid);
}

#[test]
fn twenty_containers_start_and_stop_concurrently() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let names: Vec<String> = (0..20).map(|i| format!("par{i}")).collect();
    let uuids: Vec<String> = names
        .iter()
        .map(|n| d.create_container(n, "netns: false\n"))
        .collect();
    thread::scope(|s| {
        for n in &names {
            let d = &d;
            s.spawn(move || d.ok(&["start", n]));
        }
    });
    let list = d.ok(&["list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(" RUNNING ")).count(),
        20,
        "{list}"
    );
    thread::scope(|s| {
        for n in &names {
            let d = &d;
            s.spawn(move || d.ok(&["stop", n]));
        }
    });
    let list = d.ok(&["list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(" STOPPED ")).count(),
        20,
        "{list}"
    );
    for u in &uuids {
        assert_clean(&d, u);
    }
}

#[test]
fn containers_outlive_a_killed_daemon_and_are_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container("survivor", "");
    d.ok(&["start", "survivor"]);
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "state", "survivor"])).unwrap();
    let pid = st["pid"].as_i64().unwrap();
    d.kill9();
    thread::sleep(Duration::from_millis(200));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with cmld"
    );
    let d = d.restart();
    assert_eq!(d.ok(&["state", "survivor"]), "RUNNING\n");
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "state", "survivor"])).unwrap();
    assert_eq!(st["pid"].as_i64(), Some(pid));
    assert_eq!(d.sh("survivor", "hostname").1, "survivor\n");
    d.ok(&["stop", "survivor"]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_clean(&d, &uuid);
}

#[test]
fn after_a_daemon_crash_frozen_stays_frozen_and_a_dead_container_is_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    d.create_container("cold", "");
    let gone = d.create_soft("gone");
    d.ok(&["start", "cold"]);
    d.ok(&["start", "gone", "--key=trustme"]);
    d.ok(&["freeze", "cold"]);
    let gone_pid = d.status("gone")["pid"].as_i64().unwrap() as i32;
    let host_side = format!("{}-", d.ifname_prefix());
    let veths = || {
        cml::sys::netlink::Netlink::open()
            .unwrap()
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| l.name.starts_with(&host_side))
            .count()
    };
    assert_eq!(veths(), 2);
    d.kill9();
    // While cmld is down, the init of one container dies (we started it, through our daemon).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gone_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{gone_pid}")).exists()
    });
    let d = d.restart();
    // The frozen one is adopted FROZEN, and works as before.
    assert_eq!(d.ok(&["state", "cold"]), "FROZEN\n");
    d.ok(&["unfreeze", "cold"]);
    assert_eq!(d.sh("cold", "echo alive").1, "alive\n");
    d.ok(&["freeze", "cold"]);
    d.ok(&["stop", "cold"]);
    // The dead one is STOPPED, with nothing left: cgroup, run dir, loop devices, its veth (its
    // monitor took the network down and removed the volume key when the init died).
    assert_eq!(d.ok(&["state", "gone"]), "STOPPED\n");
    assert_clean(&d, &gone);
    assert_eq!(veths(), 0);
    // It starts again with its data.
    d.ok(&["start", "gone", "--key=trustme"]);
    d.ok(&["stop", "gone", "--key=trustme"]);
}

#[test]
fn daemon_sigterm_stops_every_container() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    let a = d.create_container("a", "");
    d.ok(&["start", "a"]);
    let pid = serde_json::from_str::<serde_json::Value>(&d.ok(&["--json", "state", "a"])).unwrap()["pid"]
        .as_i64()
        .unwrap();
    let st = d.terminate(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_clean(&d, &a);
    assert!(
        common::cgroup_dirs(&d.cgroup_parent).is_empty(),
        "cgroup parent left"
    );
}

#[test]
fn a_notify_guest_is_booting_until_it_reports_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--notify"]);
    let uuid = d.create_container("notifier", "");
    // The start replies once the guest is RUNNING; meanwhile it is BOOTING.
    let mut start = std::process::Command::new(common::CONTROL)
        .arg("-s")
        .arg(&d.socket)
        .args(["start", "notifier"])
        .spawn()
        .unwrap();
    common::poll::wait_for("BOOTING", || d.ok(&["state", "notifier"]) == "BOOTING\n");
    // The guest init has NOTIFY_SOCKET and the socket.
    let (_, out) = d.sh(
        "notifier",
        "tr '\\0' '\\n' < /proc/1/environ | grep NOTIFY; test -S /run/notify && echo socket",
    );
    assert_eq!(out, "NOTIFY_SOCKET=/run/notify\nsocket\n");
    // READY=1 on the socket (sent from the host side here; busybox has no sd_notify).
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    assert!(
        start.try_wait().unwrap().is_none(),
        "start replied before READY=1"
    );
    sock.send_to(b"STATUS=up\nREADY=1\n", d.run.join(&uuid).join("notify"))
        .unwrap();
    assert!(start.wait().unwrap().success());
    assert_eq!(d.ok(&["state", "notifier"]), "RUNNING\n");
    d.ok(&["stop", "notifier"]);
    assert_clean(&d, &uuid);
}

#[test]
fn control_events_sees_every_state_of_a_start_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container("watched", "");
    let mut events = std::process::Command::new(common::CONTROL)
        .args(["-s", d.socket.to_str().unwrap(), "events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut json_events = std::process::Command::new(common::CONTROL)
        .args(["-s", d.socket.to_str().unwrap(), "events", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both subscriptions are in place once the daemon has logged both requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log_text().matches("SUBSCRIBE_EVENTS").count() < 2 {
        assert!(Instant::now() < deadline, "subscriptions did not arrive");
        thread::sleep(Duration::from_millis(10));
    }
    d.ok(&["start", "watched"]);
    d.ok(&["stop", "watched"]);
    // Events are written as they happen; give the two clients a moment to print the last one.
    thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = json_events.kill();
    let out = events.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let states: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&uuid))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[1], "watched", "{l}");
            f[3]
        })
        .collect();
    assert_eq!(
        states,
        ["STARTING", "BOOTING", "RUNNING", "SHUTDOWN", "STOPPED"],
        "{text}"
    );
    let out = json_events.wait_with_output().unwrap();
    let docs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 5, "{docs:?}");
    assert_eq!(docs[2]["state"], "RUNNING");
    assert_eq!(docs[2]["uuid"], uuid.as_str());
}

#[test]
fn a_user_namespace_maps_container_root_to_an_unprivileged_range() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    let uuid = d.create_text(
        "mapped",
        "name: \"mapped\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\n",
    );
    d.ok(&["start", "mapped"]);
    let base: u32 = fs::read_to_string(d.data.join(format!("containers/{uuid}.uid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(base >= 100_000);
    let (_, map) = d.sh("mapped", "cat /proc/1/uid_map /proc/1/gid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(
        fields,
        ["0", &base.to_string(), "65536", "0", &base.to_string(), "65536"],
        "{map}"
    );
    assert_eq!(d.sh("mapped", "id -u").1, "0\n");
    // A file container root creates on its volume is owned by the mapped uid on the host.
    assert_eq!(
        d.sh("mapped", "echo mine > /data/owned && cat /data/owned").1,
        "mine\n"
    );
    let pid =
        serde_json::from_str::<serde_json::Value>(&d.ok(&["--json", "state", "mapped"])).unwrap()["pid"]
            .as_i64()
            .unwrap();
    let meta = fs::metadata(format!("/proc/{pid}/root/data/owned")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), base);
    // Container root has no power over the host-owned namespaces: no mount, no hostname change.
    assert_ne!(d.sh("mapped", "mount -t tmpfs none /tmp 2>/dev/null").0, 0);
    assert_ne!(d.sh("mapped", "hostname other 2>/dev/null").0, 0);
    // The range stays the container's across restarts.
    d.ok(&["stop", "mapped"]);
    d.ok(&["start", "mapped"]);
    assert!(
        d.sh("mapped", "cat /proc/1/uid_map")
            .1
            .contains(&base.to_string())
    );
    assert_eq!(d.sh("mapped", "cat /data/owned").1, "mine\n");
    d.ok(&["stop", "mapped"]);
    assert_clean(&d, &uuid);
}

#[test]
fn a_shared_rw_root_is_writable_and_forgets_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--root-type", "shared_rw"]);
    let uuid = d.create_container("scratchpad", "");
    d.ok(&["start", "scratchpad"]);
    assert_eq!(
        d.sh("scratchpad", "echo note > /newfile && cat /newfile").1,
        "note\n"
    );
    d.ok(&["stop", "scratchpad"]);
    d.ok(&["start", "scratchpad"]);
    assert_eq!(
        d.sh("scratchpad", "cat /newfile 2>/dev/null || echo gone").1,
        "gone\n"
    );
    d.ok(&["stop", "scratchpad"]);
    assert_clean(&d, &uuid);
}
