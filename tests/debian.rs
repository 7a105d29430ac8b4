//! A real distribution as the guest: Debian 12 with systemd as its init, built from this machine's
//! apt sources by `scripts/debian-fixture.sh` (once; cached under `target/fixtures/debian-12`),
//! booted with and without a user namespace. Each test drives a real `cmld` with the real `control`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{Daemon, debian_daemon, poll::wait_for};

/// Creates a Debian container (`userns` as given, no network namespace needed here).
fn create(d: &Daemon, name: &str, userns: bool) -> String {
    d.create_text(
        name,
        &format!("name: \"{name}\"\nguest_os: \"debian\"\ncolor: 1\ntoken_type: NONE\nuserns: {userns}\n"),
    )
}

/// `sh -c SCRIPT` in the container with stderr merged: (exit code, output).
fn sh(d: &Daemon, c: &str, script: &str) -> (i32, String) {
    d.sh(c, &format!("exec 2>&1; {script}"))
}

fn sh_ok(d: &Daemon, c: &str, script: &str) -> String {
    let (code, out) = sh(d, c, script);
    assert_eq!(code, 0, "{script}: {out}");
    out
}

/// Starts the container and waits for RUNNING, which a notify GuestOS reaches only through
/// systemd's READY=1 (the start replies at BOOTING).
fn start(d: &Daemon, c: &str) {
    d.ok(&["start", c]);
    wait_for("RUNNING (READY=1)", || d.ok(&["state", c]) == "RUNNING\n");
}

/// The first start, watched through `control events`: STARTING → BOOTING → RUNNING, the last
/// only when systemd reported READY=1.
fn start_watched(d: &Daemon, c: &str) {
    let mut events = Command::new(common::CONTROL)
        .args(["-s", d.socket.to_str().unwrap(), "events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the subscription", || d.log_text().contains("SUBSCRIBE_EVENTS"));
    start(d, c);
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let states: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(states, ["STARTING", "BOOTING", "RUNNING"], "{text}");
}

/// Test units, written after every start (the SHARED_RW root is a fresh tmpfs overlay each time):
/// a oneshot whose ExecStop writes a marker into the persistent /data, a sandboxed service
/// (PrivateTmp, ProtectSystem=strict, DynamicUser) that reports what it sees in the journal, and
/// one with PrivateTmp and ProtectSystem only.
const UNITS: &str = r#"
cat > /etc/systemd/system/marker.service <<'EOF'
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'date +%s > /data/stopped-marker'
[Install]
WantedBy=multi-user.target
EOF
cat > /etc/systemd/system/sandboxed.service <<'EOF'
[Service]
Type=oneshot
RemainAfterExit=yes
PrivateTmp=yes
ProtectSystem=strict
DynamicUser=yes
ExecStart=/bin/sh -c 'echo uid=$(id -u); touch /tmp/private-marker; if touch /usr/x 2>/dev/null; then echo usr-writable; else echo usr-read-only; fi'
EOF
cat > /etc/systemd/system/protected.service <<'EOF'
[Service]
Type=oneshot
RemainAfterExit=yes
PrivateTmp=yes
ProtectSystem=strict
ExecStart=/bin/true
EOF
systemctl daemon-reload
systemctl enable --now marker.service
"#;

fn boots_serves_and_stops(userns: bool) {
    let d = debian_daemon();
    let c = if userns { "deb-userns" } else { "deb-plain" };
    create(&d, c, userns);
    start_watched(&d, c);

    // systemd booted completely: no failed unit.
    let out = sh(&d, c, "systemctl is-system-running --wait").1;
    let failed = sh(&d, c, "systemctl --failed --no-legend --plain").1;
    assert_eq!(out, "running\n", "failed units: {failed}");
    // What a guest's systemd expects of its container.
    assert_eq!(sh_ok(&d, c, "cat /run/systemd/container"), "cml\n");
    assert_eq!(sh_ok(&d, c, "cat /proc/1/comm"), "systemd\n");
    assert!(sh_ok(&d, c, "ls /sys/fs/cgroup/systemd").contains("init.scope"));
    // journald has the boot.
    let journal = sh_ok(&d, c, "journalctl -b --no-pager");
    assert!(journal.contains("Startup finished"), "{journal}");
    // The root is writable by the container's root (SHARED_RW: a tmpfs over the image).
    sh_ok(&d, c, "touch /etc/cml-test && rm /etc/cml-test");
    if userns {
        // Image files belong to the container's root, not to `nobody`.
        assert_eq!(
            sh_ok(&d, c, "stat -c %U:%G /etc/passwd /"),
            "root:root\nroot:root\n"
        );
        assert_eq!(
            sh_ok(&d, c, "cat /proc/self/uid_map").split_whitespace().next(),
            Some("0")
        );
    }

    // Sandboxed services start.
    sh_ok(&d, c, UNITS);
    sh_ok(&d, c, "systemctl start protected.service");
    if userns {
        // With a user namespace the sandbox applies: a dynamic uid, /usr read-only, a private /tmp.
        sh_ok(&d, c, "systemctl start sandboxed.service");
        let out = sh_ok(&d, c, "journalctl -u sandboxed --no-pager -o cat");
        let uid: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("uid="))
            .unwrap_or_else(|| panic!("{out}"))
            .parse()
            .unwrap();
        assert!(uid >= 61184, "DynamicUser gave uid {uid}");
        assert!(out.contains("usr-read-only"), "{out}");
        assert_ne!(
            sh(&d, c, "test -e /tmp/private-marker").0,
            0,
            "PrivateTmp had no effect"
        );
    }

    // A graceful stop (SIGRTMIN+3): the unit's ExecStop ran.
    d.ok(&["stop", c]);
    assert_eq!(d.ok(&["state", c]), "STOPPED\n");
    start(&d, c);
    sh_ok(&d, c, "test -s /data/stopped-marker && rm /data/stopped-marker");

    // `systemctl poweroff` inside: STOPPED, and ExecStop ran again.
    sh_ok(&d, c, UNITS);
    sh(&d, c, "systemctl poweroff");
    wait_for("poweroff → STOPPED", || d.ok(&["state", c]) == "STOPPED\n");
    start(&d, c);
    sh_ok(&d, c, "test -s /data/stopped-marker");

    // `systemctl reboot` inside: REBOOTING → RUNNING with a new init.
    let before = d.status(c)["pid"].as_i64().unwrap();
    sh(&d, c, "systemctl reboot");
    wait_for("reboot → RUNNING again", || {
        let s = d.status(c);
        s["state"] == "RUNNING" && s["pid"].as_i64() != Some(before)
    });
    assert_eq!(sh(&d, c, "systemctl is-system-running --wait").1, "running\n");
    d.ok(&["stop", c]);
}

#[test]
fn debian_with_systemd_boots_serves_reboots_and_stops_in_a_user_namespace() {
    boots_serves_and_stops(true);
}

#[test]
fn debian_with_systemd_boots_serves_reboots_and_stops_without_a_user_namespace() {
    boots_serves_and_stops(false);
}
