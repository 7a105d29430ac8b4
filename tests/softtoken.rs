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
