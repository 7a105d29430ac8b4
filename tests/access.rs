//! Access to the control socket: owner, group and mode from device.conf, and the SO_PEERCRED
//! allowlist, checked with an unprivileged user the test creates (and removes).

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    os::unix::{fs::MetadataExt, fs::PermissionsExt, process::CommandExt},
    process::{Command, Output},
};

use common::Daemon;

/// A system user made for the test; deleted on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cmlt{}u{seq}", std::process::id() % 1_000_000);
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// `control ARGS` as this user.
    fn control(&self, d: &Daemon, args: &[&str]) -> Output {
        Command::new(common::CONTROL)
            .arg("-s")
            .arg(&d.socket)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A daemon with extra device.conf lines, its socket reachable by everyone's path lookup.
fn daemon_with(extra: &str) -> Daemon {
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!("signed_configs: false\nstop_timeout: 2\n{extra}"),
    )
    .unwrap();
    // The test's temporary directory is 0700; the socket in it must be reachable to test its mode.
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d.spawn()
}

#[test]
fn socket_owner_group_and_mode_come_from_device_conf() {
    let user = TestUser::new();
    let d = daemon_with(&format!(
        "socket_owner: \"{0}\"\nsocket_group: \"{0}\"\nsocket_mode: 0600\n",
        user.name
    ));
    let meta = fs::metadata(&d.socket).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (user.uid, user.gid, 0o600)
    );
    // The owner may connect; root may too.
    let out = user.control(&d, &["list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.ok(&["list"]);
}

#[test]
fn peers_outside_the_allowlist_are_refused_before_any_command() {
    let user = TestUser::new();
    // Everyone may open the socket; only uid 0 and the listed ids are served.
    let d = daemon_with("socket_mode: 0666\nallowed_uids: 4242\n");
    let out = user.control(&d, &["list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("access denied: uid {}", user.uid)), "{err}");
    assert!(d.log_text().contains("connection refused"));
    // Root still is.
    d.ok(&["list"]);
    drop(d);

    // Listing the user's group lets it in.
    let d = daemon_with(&format!("socket_mode: 0666\nallowed_gids: {}\n", user.gid));
    let out = user.control(&d, &["list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
