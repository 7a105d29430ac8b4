//! cmld under a service manager, on this host (which has no systemd as PID 1): the socket
//! activation and notification protocols as systemd speaks them. `systemd-socket-activate` (from
//! Debian's `systemd` package) binds the control socket and execs the real cmld on the first
//! connection with `LISTEN_PID`/`LISTEN_FDS`; the test is the `NOTIFY_SOCKET` and reads what cmld
//! sends. Restart detection, `Type=notify` and the watchdog under real systemd are checked in the
//! VM lab's `install` scenario (scripts/vm/install.sh), which installs the package.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use common::Daemon;

/// The datagrams received on `sock` until `want` is among them or `limit` passes.
fn messages_until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if got.last().is_some_and(|m| m == want) {
                break;
            }
        }
    }
    got
}

/// The `socket:[inode]` links among a process's descriptors.
fn socket_links(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

/// The children of a process (all its threads').
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let list = fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

#[test]
fn socket_activated_cmld_notifies_ready_pings_the_watchdog_and_keeps_the_socket_to_itself() {
    if !Path::new("/usr/bin/systemd-socket-activate").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-socket-activate is missing (scripts/setup.sh installs systemd)"
        );
        eprintln!("skipped: systemd-socket-activate is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let guestos = common::fixture::busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!(
            "signed_configs: false\nstop_timeout: 2\nupdate_base_url: \"{}\"\n",
            guestos.store_url()
        ),
    )
    .unwrap();
    let notify_path = d.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let d = d.spawn_socket_activated(&[
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ]);
    let pid = d.pid();

    // The first connection (the harness's readiness probe) started cmld; it served it.
    let got = messages_until(&notify, "READY=1", Duration::from_secs(20));
    assert_eq!(got.last().map(String::as_str), Some("READY=1"), "{got:?}");
    let log = d.log_text();
    assert!(log.contains("control socket from systemd"), "{log}");
    assert_eq!(d.ok(&["list"]).lines().count(), 1, "a header, no containers yet");

    // WATCHDOG=1 at least every 100 ms (half the interval).
    let start = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 64];
    while start.elapsed() < Duration::from_millis(700) {
        if let Ok(n) = notify.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in 700 ms");

    // The listening socket does not reach the launcher (nor the monitors and containers it forks).
    let listening = fs::read_link(format!("/proc/{pid}/fd/3"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(listening.starts_with("socket:"), "{listening}");
    let launcher = children(pid)
        .into_iter()
        .find(|c| fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "cml-launcher"))
        .expect("cmld has its launcher child");
    assert!(
        !socket_links(launcher).contains(&listening),
        "the launcher holds the listening socket {listening}: {:?}",
        socket_links(launcher)
    );

    // A container started, then SIGTERM: STOPPING=1; not a systemd service, so no restart is
    // pending and the container is stopped gracefully (SPEC §4.4). The socket file stays: it is
    // the socket unit's (here systemd-socket-activate's), not cmld's.
    let empty = d.file("empty", "");
    d.ok(&[
        "push_guestos_config",
        guestos.conf.to_str().unwrap(),
        &empty,
        &empty,
    ]);
    d.create_container("c1", "");
    d.ok(&["start", "c1"]);
    // Nor do systemd's variables reach what runs in a container.
    let (code, env) = d.sh("c1", "env; cat /proc/1/environ");
    assert_eq!(code, 0);
    for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"] {
        assert!(!env.contains(var), "{var} reached the container: {env}");
    }
    let mut d = d;
    let status = d.terminate(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let got = messages_until(&notify, "STOPPING=1", Duration::from_secs(1));
    assert_eq!(got.last().map(String::as_str), Some("STOPPING=1"), "{got:?}");
    let log = d.log_text();
    assert!(log.contains("containers stopped"), "{log}");
    assert!(log.contains("containers=1"), "{log}");
    assert!(d.socket.exists(), "cmld removed the socket file systemd owns");
}

#[test]
fn a_bound_socket_is_still_cmlds_own_without_activation() {
    let mut d = Daemon::start();
    assert!(!d.log_text().contains("control socket from systemd"));
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    assert!(!d.socket.exists(), "cmld removes the socket it bound");
}
