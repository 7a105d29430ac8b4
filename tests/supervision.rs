//! Supervision (restart policies, guest reboot, autostart) and device rules, against a real cmld.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Daemon;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

use common::poll::wait_for;

#[test]
fn on_failure_restarts_with_growing_delays_then_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container(
        "crashy",
        "init_env: \"INIT=sleep 0.2; exit 1\"\nrestart_policy: ON_FAILURE\nrestart_max: 3\n",
    );
    d.ok(&["start", "crashy"]);
    wait_for("the restart limit", || {
        d.log_text().contains("restart limit reached")
    });
    let st = d.status("crashy");
    assert_eq!(st["state"], "STOPPED");
    assert_eq!(st["restart_count"], 3);
    let log = d.log_text();
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("restarting per restart_policy"))
        .map(|l| {
            l.split("delay_ms=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(delays, [100, 200, 400], "{log}");
    // A start by the user resets the counter.
    d.ok(&["start", "crashy"]);
    assert_eq!(d.status("crashy")["restart_count"], 0);
    let _ = d.control(&["stop", "crashy"]);
}

#[test]
fn always_restarts_a_clean_exit_and_no_leaves_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container(
        "looper",
        "init_env: \"INIT=sleep 0.2; exit 0\"\nrestart_policy: ALWAYS\nrestart_max: 2\n",
    );
    d.create_container("oneshot", "init_env: \"INIT=exit 0\"\n");
    d.ok(&["start", "looper"]);
    d.ok(&["start", "oneshot"]);
    wait_for("two restarts", || {
        d.status("looper")["restart_count"] == 2 && d.status("looper")["state"] == "STOPPED"
    });
    wait_for("oneshot to stop", || d.status("oneshot")["state"] == "STOPPED");
    assert_eq!(d.status("oneshot")["restart_count"], 0);
}

#[test]
fn a_guest_reboot_restarts_the_container() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("rebooter", "");
    d.ok(&["start", "rebooter"]);
    let pid = d.status("rebooter")["pid"].as_i64().unwrap();
    let _ = d.control(&["run", "rebooter", "nopty", "reboot", "-f"]);
    wait_for("a new init", || {
        let st = d.status("rebooter");
        st["state"] == "RUNNING" && st["pid"].as_i64() != Some(pid)
    });
    assert!(d.log_text().contains("guest rebooted"));
    d.ok(&["stop", "rebooter"]);
}

#[test]
fn autostart_after_a_daemon_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("auto", "allow_autostart: true\n");
    d.create_container("pinned", "allow_autostart: true\n");
    // A SOFT-token container cannot be started without its PIN: left STOPPED.
    let conf = d.file("pinned2.conf", "name: \"pinned\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\nallow_autostart: true\n");
    d.ok(&["update_config", "pinned", &conf]);
    d.create_container("manual", "");
    assert!(d.terminate(nix::sys::signal::Signal::SIGTERM).success());
    let d = d.restart();
    wait_for("autostart", || d.status("auto")["state"] == "RUNNING");
    assert_eq!(d.status("pinned")["state"], "STOPPED");
    assert_eq!(d.status("manual")["state"], "STOPPED");
    assert!(d.log_text().contains("not autostarted"));
}

fn devices_list(d: &Daemon, uuid: &str) -> String {
    fs::read_to_string(format!(
        "/sys/fs/cgroup/devices/{}/{uuid}/devices.list",
        d.cgroup_parent
    ))
    .unwrap()
}

#[test]
fn device_rules_are_enforced_and_changed_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container("dev", "");
    d.ok(&["start", "dev"]);
    let write_null = || {
        d.control(&["run", "dev", "nopty", "sh", "-c", "echo x > /dev/null"])
            .status
            .code()
    };
    assert_eq!(write_null(), Some(0));
    d.ok(&["dev_access", "dev", "deny c 1:3 rwm"]);
    assert_ne!(write_null(), Some(0), "a denied device could be opened");
    d.ok(&["dev_access", "dev", "c 1:3 rwm"]);
    assert_eq!(write_null(), Some(0));
    let out = d.control(&["dev_access", "dev", "x 1:3 rwm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("malformed"), "{}", stderr(&out));

    assert!(!devices_list(&d, &uuid).contains("c 116:* rw"));
    d.ok(&["allow_audio", "dev"]);
    assert!(
        devices_list(&d, &uuid).contains("c 116:* rw"),
        "{}",
        devices_list(&d, &uuid)
    );
    d.ok(&["deny_audio", "dev"]);
    assert!(
        !devices_list(&d, &uuid).contains("c 116:*"),
        "{}",
        devices_list(&d, &uuid)
    );
    d.ok(&["stop", "dev"]);
    let out = d.control(&["allow_audio", "dev"]);
    assert_eq!(out.status.code(), Some(1), "refused while stopped");
}

#[test]
fn an_assigned_device_is_exclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("holder", "assign_dev: \"c 1:7 rwm\"\n");
    d.create_container("wanter", "assign_dev: \"c 1:7 rwm\"\n");
    d.ok(&["start", "holder"]);
    let out = d.control(&["start", "wanter"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("assigned to container holder"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.status("wanter")["state"], "STOPPED");
    d.ok(&["stop", "holder"]);
    d.ok(&["start", "wanter"]);
    d.ok(&["stop", "wanter"]);
}
