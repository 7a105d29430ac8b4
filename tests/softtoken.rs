//! The device softtoken and PINs, end to end: real cmld, real `control`.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Daemon;

fn response(out: &std::process::Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["response"].as_str().unwrap_or_default().to_owned()
}

/// `control --json start C --key=PIN`: (exit code, response name).
fn start(d: &Daemon, c: &str, pin: &str) -> (Option<i32>, String) {
    let out = d.control(&["--json", "start", c, &format!("--key={pin}")]);
    (out.status.code(), response(&out))
}

#[test]
fn pins_lockout_and_change_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    assert!(
        d.data.join("tokens/device.p12").is_file(),
        "the token is created on first start"
    );
    assert!(d.log_text().contains("default PIN"));
    d.create_container("plain", "");
    d.create_container("vault", "");
    let conf = d.file(
        "vault2.conf",
        "name: \"vault\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\n",
    );
    d.ok(&["update_config", "vault", &conf]);

    // A NONE container starts without a PIN.
    d.ok(&["start", "plain"]);
    // The right PIN starts a SOFT container (here from stdin, as a script would give it).
    let out = d.control_stdin(&["start", "vault"], "trustme\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.control(&["--json", "stop", "vault", "--key=nope"]);
    assert_eq!(
        (out.status.code(), response(&out).as_str()),
        (Some(1), "CONTAINER_STOP_PASSWD_WRONG")
    );
    d.ok(&["stop", "vault", "--key=trustme"]);

    // Wrong PINs: 2 × PASSWD_WRONG, then LOCKED — also for the right PIN, also after a restart.
    assert_eq!(
        start(&d, "vault", "bad1"),
        (Some(1), "CONTAINER_START_PASSWD_WRONG".into())
    );
    assert_eq!(
        start(&d, "vault", "bad2"),
        (Some(1), "CONTAINER_START_PASSWD_WRONG".into())
    );
    assert_eq!(
        start(&d, "vault", "bad3"),
        (Some(1), "CONTAINER_LOCKED_TILL_REBOOT".into())
    );
    assert_eq!(
        start(&d, "vault", "trustme"),
        (Some(1), "CONTAINER_LOCKED_TILL_REBOOT".into())
    );
    d.kill9();
    let d = d.restart();
    assert_eq!(
        start(&d, "vault", "trustme"),
        (Some(1), "CONTAINER_LOCKED_TILL_REBOOT".into())
    );
    // A reboot (a new kernel boot id, simulated through the documented test hook) unlocks.
    fs::write(d.data.join("tokens/boot_id.override"), "simulated-reboot-1\n").unwrap();
    assert_eq!(
        start(&d, "vault", "trustme"),
        (Some(0), "CONTAINER_START_OK".into())
    );
    d.ok(&["stop", "vault", "--key=trustme"]);

    // change_pin: the old PIN stops working, the new one works.
    let out = d.control_stdin(&["change_pin", "vault"], "trustme\n4321\n4321\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        start(&d, "vault", "trustme"),
        (Some(1), "CONTAINER_START_PASSWD_WRONG".into())
    );
    assert_eq!(start(&d, "vault", "4321"), (Some(0), "CONTAINER_START_OK".into()));
    d.ok(&["stop", "vault", "--key=4321"]);
    // A wrong current PIN is refused.
    let out = d.control_stdin(&["--json", "change_pin", "vault"], "wrong\n1\n1\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(response(&out), "CONTAINER_CHANGE_PIN_FAILED");
}

#[test]
fn a_damaged_token_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.create_soft("v");
    d.kill9();
    let token = d.data.join("tokens/device.p12");
    let bytes = fs::read(&token).unwrap();
    fs::write(&token, &bytes[..bytes.len() / 2]).unwrap();
    let d = d.restart();
    let out = d.control(&["start", "v", "--key=trustme"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("softtoken") && err.contains("device.p12"), "{err}");
    // The daemon is fine otherwise.
    d.ok(&["list"]);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_soft_container_volume_is_encrypted_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    let uuid = d.create_soft("safe");
    assert_eq!(d.status("safe")["cryptfs_mode"], "ENCRYPT_ONLY");
    d.ok(&["start", "safe", "--key=trustme"]);
    assert!(
        d.data.join(format!("keys/{uuid}.key")).is_file(),
        "the wrapped key is stored"
    );
    let marker = "CML-PLAINTEXT-MARKER-0123456789";
    let (code, _) = d.sh(
        "safe",
        &format!("for i in $(seq 200); do echo {marker}; done > /data/secret-file-name.txt; sync"),
    );
    assert_eq!(code, 0);
    d.ok(&["stop", "safe", "--key=trustme"]);
    // At rest: neither the content nor the file name is in the image.
    let image = fs::read(d.data.join(format!("containers/{uuid}/data.img"))).unwrap();
    assert!(
        !contains(&image, marker.as_bytes()),
        "plaintext found in the image"
    );
    assert!(
        !contains(&image, b"secret-file-name"),
        "file name found in the image"
    );
    // Back with the PIN.
    d.ok(&["start", "safe", "--key=trustme"]);
    let (_, out) = d.sh("safe", "head -1 /data/secret-file-name.txt");
    assert_eq!(out.trim(), marker);
    // wipe: the key and the data are gone; the next start has a fresh, empty volume and key.
    let old_key = fs::read(d.data.join(format!("keys/{uuid}.key"))).unwrap();
    d.ok(&["wipe", "safe"]);
    assert!(!d.data.join(format!("keys/{uuid}.key")).exists());
    d.ok(&["start", "safe", "--key=trustme"]);
    assert_eq!(d.sh("safe", "ls /data").1, "");
    assert_ne!(
        fs::read(d.data.join(format!("keys/{uuid}.key"))).unwrap(),
        old_key
    );
    d.ok(&["stop", "safe", "--key=trustme"]);
}

#[test]
fn require_pin_change_refuses_starts_until_the_pin_is_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.kill9();
    let conf_path = d.data.join("device.conf");
    let mut conf = fs::read_to_string(&conf_path).unwrap();
    conf.push_str("require_pin_change: true\n");
    fs::write(&conf_path, conf).unwrap();
    let d = d.restart();
    d.create_soft("v");
    assert_eq!(
        start(&d, "v", "trustme"),
        (Some(1), "CONTAINER_START_UNLOCK_FAILED".into())
    );
    d.ok(&[
        "create",
        &d.file(
            "n.conf",
            "name: \"n\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\nuserns: false\n",
        ),
    ]);
    d.ok(&["start", "n"]);
    let out = d.control_stdin(&["change_pin", "v"], "trustme\n5678\n5678\n");
    assert!(out.status.success());
    assert_eq!(start(&d, "v", "5678"), (Some(0), "CONTAINER_START_OK".into()));
}

/// A host process that holds a file of a container's encrypted volume open; killed (by its PID) when
/// dropped, also if the test fails.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_volume_file_held_open_outside_keeps_the_container_zombie_until_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    d.create_soft("held");
    d.ok(&["start", "held", "--key=trustme"]);
    assert_eq!(d.sh("held", "echo still-secret > /data/held.txt").0, 0);
    // Someone on the host opens the file through the container's root and keeps it open.
    let pid = d.status("held")["pid"].as_i64().unwrap();
    let file = fs::File::open(format!("/proc/{pid}/root/data/held.txt")).unwrap();
    let holder = Holder(
        std::process::Command::new("sleep")
            .arg("600")
            .stdin(file)
            .spawn()
            .unwrap(),
    );
    // The stop cannot remove the key completely: it says so, and the container is ZOMBIE.
    let out = d.control(&["stop", "held", "--key=trustme"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("held open outside the container"), "{err}");
    assert_eq!(d.ok(&["state", "held"]), "ZOMBIE\n");
    assert_eq!(
        start(&d, "held", "trustme").0,
        Some(1),
        "no start while the old volume lives"
    );
    let out = d.control(&["wipe", "held"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wipe waits"),
        "{out:?}"
    );
    // Closing the file lets the monitor finish the removal; the container becomes STOPPED.
    drop(holder);
    common::poll::wait_for("STOPPED after the file was closed", || {
        d.ok(&["state", "held"]) == "STOPPED\n"
    });
    d.ok(&["start", "held", "--key=trustme"]);
    assert_eq!(d.sh("held", "cat /data/held.txt").1, "still-secret\n");
    d.ok(&["stop", "held", "--key=trustme"]);
}

#[test]
fn a_stop_with_a_run_session_open_removes_the_key_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    d.create_soft("busy");
    for _ in 0..3 {
        d.ok(&["start", "busy", "--key=trustme"]);
        // A session inside, with its working directory and a file open on the encrypted volume.
        let session = Holder(
            std::process::Command::new(common::CONTROL)
                .arg("-s")
                .arg(&d.socket)
                .args([
                    "run",
                    "busy",
                    "nopty",
                    "sh",
                    "-c",
                    "cd /data && exec sleep 600 > /data/log",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        while d.sh("busy", "test -e /data/log").0 != 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The session's processes end with the container; the key comes out completely.
        d.ok(&["stop", "busy", "--key=trustme"]);
        assert_eq!(d.ok(&["state", "busy"]), "STOPPED\n");
        drop(session);
    }
}
