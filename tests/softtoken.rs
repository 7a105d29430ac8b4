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
    let conf = d.file(
        "v.conf",
        "name: \"v\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\n",
    );
    d.ok(&["create", &conf]);
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
    let conf = d.file(
        "safe.conf",
        "name: \"safe\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\n",
    );
    let out = d.control(&["--json", "create", &conf]);
    let uuid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let c = d.file(
        "v.conf",
        "name: \"v\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: SOFT\nuserns: false\n",
    );
    d.ok(&["create", &c]);
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
