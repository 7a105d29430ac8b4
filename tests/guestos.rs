//! GuestOS installation end to end: the real `cml-guestos` builds and signs a busybox GuestOS, the
//! real cmld verifies and installs it from a `file://` store or an HTTP server on 127.0.0.1, and the
//! real `control` drives it.

#![allow(clippy::unwrap_used)]

mod common;

use std::{fs, path::Path};

use common::{
    Daemon,
    fixture::{GuestOsFixture, busybox_guestos, sign_file},
    http::HttpStore,
};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A daemon with the shipped defaults (signatures required) fetching from `base_url`.
fn daemon(base_url: &str) -> Daemon {
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!(
            "hostedmode: true\nsigned_configs: true\ntpm_enabled: false\nupdate_base_url: \"{base_url}\"\n"
        ),
    )
    .unwrap();
    d.spawn()
}

fn file_url(store: &Path) -> String {
    format!("file://{}", store.display())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn push(d: &Daemon, f: &GuestOsFixture) -> std::process::Output {
    d.control(&["push_guestos_config", s(&f.conf), s(&f.sig), s(&f.cert)])
}

/// What is installed: entries of operatingsystems/ (staging directories included).
fn installed(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d.data.join("operatingsystems"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn signed_container(d: &Daemon, f: &GuestOsFixture, name: &str) -> String {
    let conf = d.file(
        &format!("{name}.conf"),
        &format!(
            "name: \"{name}\"\nguest_os: \"{}\"\nguestos_version: {}\ncolor: 1\ntoken_type: NONE\n",
            f.name, f.version
        ),
    );
    let sig = sign_file(&f.pki, Path::new(&conf));
    let out = d.control(&["--json", "create", &conf, s(&sig), s(&f.pki.join("signing.cert"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["uuid"].as_str().unwrap().to_owned()
}

#[test]
fn signed_guestos_installs_lists_survives_restart_and_backs_signed_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let f = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = daemon(&file_url(&f.store));

    // Before the CA is registered the push is refused.
    let out = push(&d, &f);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
    assert!(installed(&d).is_empty());

    d.ok(&["ca_register", s(&f.root_ca)]);
    d.ok(&["ca_register", s(&f.root_ca)]); // idempotent
    let out = push(&d, &f);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("busybox-1"),
        "progress is shown: {}",
        stderr(&out)
    );
    assert_eq!(installed(&d), vec!["busybox-1"]);
    let dir = d.data.join("operatingsystems/busybox-1");
    for file in ["busybox-1.conf", "busybox-1.sig", "busybox-1.cert", "root.img"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    assert_eq!(
        fs::read(dir.join("busybox-1.conf")).unwrap(),
        fs::read(&f.conf).unwrap()
    );
    let list = d.ok(&["list_guestos"]);
    assert!(list.lines().nth(1).unwrap().starts_with("busybox"), "{list}");

    // Pushing the same version again is a no-op success.
    assert!(push(&d, &f).status.success());

    // Signed container config: accepted, stored verbatim with its signature; unsigned refused.
    let uuid = signed_container(&d, &f, "signed");
    assert!(d.data.join(format!("containers/{uuid}.sig")).is_file());
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "state", "signed"])).unwrap();
    assert_eq!(st["trust_level"], "SIGNED");
    let unsigned = d.file(
        "u.conf",
        &common::container_conf("u").replace("busybox\"", "busybox\"\nguestos_version: 1"),
    );
    let out = d.control(&["create", &unsigned]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("signed_configs"), "{}", stderr(&out));
    // A signature over other bytes is refused.
    let other = d.file(
        "o.conf",
        "name: \"o\"\nguest_os: \"busybox\"\nguestos_version: 1\ncolor: 1\n",
    );
    let sig = sign_file(&f.pki, Path::new(&unsigned));
    let out = d.control(&["create", &other, s(&sig), s(&f.pki.join("signing.cert"))]);
    assert_eq!(out.status.code(), Some(1));

    // A restart re-verifies the store and the signed container config.
    let mut d = d;
    d.kill9();
    let d = d.restart();
    assert!(d.ok(&["list_guestos"]).contains("busybox"));
    assert_eq!(d.ok(&["state", "signed"]), "STOPPED\n");
}

#[test]
fn forged_inputs_are_refused_and_install_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let f = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = daemon(&file_url(&f.store));
    d.ok(&["ca_register", s(&f.root_ca)]);

    // One byte flipped in the config (a digit of the version, still valid text).
    let conf = fs::read_to_string(&f.conf).unwrap();
    let forged_conf = d.file("forged.conf", &conf.replace("version: 1", "version: 3"));
    let out = d.control(&["push_guestos_config", &forged_conf, s(&f.sig), s(&f.cert)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
    // One byte flipped in the signature (written as raw bytes).
    let mut sig = fs::read(&f.sig).unwrap();
    let mid = sig.len() / 2;
    sig[mid] ^= 0x01;
    let forged_sig = d.dir.path().join("forged.sig");
    fs::write(&forged_sig, &sig).unwrap();
    let out = d.control(&["push_guestos_config", s(&f.conf), s(&forged_sig), s(&f.cert)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(installed(&d).is_empty(), "{:?}", installed(&d));

    // One byte flipped in the image: the hash check fails, nothing is installed.
    let img = f.store.join("operatingsystems/x86/busybox-1/root.img");
    let mut b = fs::read(&img).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    fs::write(&img, &b).unwrap();
    let out = push(&d, &f);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    assert!(installed(&d).is_empty(), "{:?}", installed(&d));
    assert_eq!(d.ok(&["list_guestos"]).lines().count(), 1);

    // A certificate from a CA that was never registered.
    let other = tempfile::tempdir().unwrap();
    let g = busybox_guestos(other.path(), "busybox", 2, &[]);
    let out = d.control(&["push_guestos_config", s(&g.conf), s(&g.sig), s(&g.cert)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(installed(&d).is_empty());

    // ca_register refuses a certificate that is not a CA.
    let out = d.control(&["ca_register", s(&f.cert)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).to_lowercase().contains("ca"), "{}", stderr(&out));
}

#[test]
fn http_install_upgrade_and_a_dying_server() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let v2 = busybox_guestos(tmp.path(), "busybox", 2, &[]);
    let server = HttpStore::serve(&v1.store);
    let d = daemon(&server.url);
    d.ok(&["ca_register", s(&v1.root_ca)]);
    let out = push(&d, &v1);
    assert!(out.status.success(), "{}", stderr(&out));

    // v2 from a server that dies mid-download: FAILED, v1 still listed and usable.
    let dying = HttpStore::serve_truncating(&v2.store, 4096);
    let conf = fs::read_to_string(&v2.conf).unwrap();
    assert!(!conf.contains("update_base_url"));
    let d2 = {
        let mut d = d;
        d.kill9();
        fs::write(
            d.data.join("device.conf"),
            format!(
                "hostedmode: true\nsigned_configs: true\nupdate_base_url: \"{}\"\n",
                dying.url
            ),
        )
        .unwrap();
        d.restart()
    };
    let out = push(&d2, &v2);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("busybox-2"), "{}", stderr(&out));
    assert_eq!(installed(&d2), vec!["busybox-1"]);
    let list = d2.ok(&["list_guestos"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    signed_container(&d2, &v1, "still-works");

    // The same push from a healthy server upgrades: both versions are listed.
    let healthy = HttpStore::serve(&v2.store);
    let mut d3 = d2;
    d3.kill9();
    fs::write(
        d3.data.join("device.conf"),
        format!(
            "hostedmode: true\nsigned_configs: true\nupdate_base_url: \"{}\"\n",
            healthy.url
        ),
    )
    .unwrap();
    let d3 = d3.restart();
    let out = push(&d3, &v2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(installed(&d3), vec!["busybox-1", "busybox-2"]);
    assert_eq!(d3.ok(&["list_guestos"]).lines().count(), 3);
    // Pushing an installed version again is a no-op, even with a newer one beside it.
    let out = push(&d3, &v1);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn remove_guestos_is_refused_while_used() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let v2 = busybox_guestos(tmp.path(), "busybox", 2, &[]);
    let d = daemon(&file_url(&v1.store));
    d.ok(&["ca_register", s(&v1.root_ca)]);
    assert!(push(&d, &v1).status.success());
    let mut conf = fs::read(&v2.conf).unwrap();
    conf.extend_from_slice(format!("update_base_url: \"{}\"\n", file_url(&v2.store)).as_bytes());
    let conf2 = d.dir.path().join("v2.conf");
    fs::write(&conf2, conf).unwrap();
    let sig2 = sign_file(&v2.pki, &conf2);
    let out = d.control(&["push_guestos_config", s(&conf2), s(&sig2), s(&v2.cert)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let uuid = signed_container(&d, &v1, "user");
    let out = d.control(&["remove_guestos", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("user"), "{}", stderr(&out));
    assert_eq!(installed(&d).len(), 2);

    d.ok(&["remove", &uuid]);
    d.ok(&["remove_guestos", "busybox"]);
    assert!(installed(&d).is_empty(), "{:?}", installed(&d));
    assert_eq!(d.ok(&["list_guestos"]).lines().count(), 1);
    let out = d.control(&["remove_guestos", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn path_tricks_and_device_mounts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = daemon(&file_url(&f.store));
    d.ok(&["ca_register", s(&f.root_ca)]);
    let good = fs::read_to_string(&f.conf).unwrap();
    let cases = [
        ("name", good.replace("name: \"busybox\"", "name: \"../../evil\"")),
        (
            "image",
            good.replace("image_file: \"root\"", "image_file: \"../../../etc/passwd\""),
        ),
        (
            "url",
            format!("{good}update_base_url: \"file://relative/store\"\n"),
        ),
        ("nul", good.replace("name: \"busybox\"", "name: \"busy\\000box\"")),
        (
            "long",
            good.replace("name: \"busybox\"", &format!("name: \"{}\"", "b".repeat(300))),
        ),
        (
            "device",
            format!(
                "{good}mounts {{\n  image_file: \"disk\"\n  mount_point: \"/mnt\"\n  fs_type: \"ext4\"\n  mount_type: DEVICE\n}}\n"
            ),
        ),
    ];
    for (what, text) in cases {
        let conf = d.dir.path().join(format!("{what}.conf"));
        fs::write(&conf, text).unwrap();
        let sig = sign_file(&f.pki, &conf);
        let out = d.control(&["push_guestos_config", s(&conf), s(&sig), s(&f.cert)]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("refused"), "{what}: {}", stderr(&out));
    }
    assert!(installed(&d).is_empty(), "{:?}", installed(&d));
    assert!(!tmp.path().join("evil").exists());
}

#[test]
fn development_setup_accepts_unsigned_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let f = busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!(
            "signed_configs: false\nupdate_base_url: \"{}\"\n",
            file_url(&f.store)
        ),
    )
    .unwrap();
    let d = d.spawn();
    let empty = d.file("empty", "");
    let out = d.control(&["push_guestos_config", s(&f.conf), &empty, &empty]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.log_text().contains("NOT signature-checked"));
    let uuid = d.create("dev");
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "state", &uuid])).unwrap();
    assert_eq!(st["trust_level"], "UNSIGNED");
}

/// Install progress is real: over a `file://` store, the STARTED replies carry `done_bytes` that
/// grow while a multi-MiB image is copied, not only 0 before and the total after.
#[test]
fn push_reports_progress_while_the_image_arrives() {
    use cml::protocol::pb::{
        ControllerToDaemon,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    };
    let tmp = tempfile::tempdir().unwrap();
    // A busybox root plus 6 MiB that squashfs cannot compress.
    let rootfs = tmp.path().join("rootfs");
    common::fixture::busybox_rootfs(&rootfs);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(rootfs.join("noise"), noise).unwrap();
    let store = tmp.path().join("store");
    let out = std::process::Command::new(common::fixture::CML_GUESTOS)
        .args(["build", "--rootfs", s(&rootfs), "--name", "big", "--version", "1"])
        .args(["--out", s(&store), "--init", "/bin/sh"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let image = store.join("operatingsystems/x86/big-1/root.img");
    let total = fs::metadata(&image).unwrap().len();
    assert!(total > 6 * 1024 * 1024, "{total}");

    let d = common::dev_daemon(&file_url(&store));
    let mut c = d.connect();
    c.send(&ControllerToDaemon {
        command: Cmd::PushGuestosConfig as i32,
        guestos_config_file: Some(fs::read(store.join("big-1.conf")).unwrap()),
        guestos_config_signature: Some(Vec::new()),
        guestos_config_certificate: Some(Vec::new()),
        ..Default::default()
    });
    let mut done = Vec::new();
    let last = loop {
        let r = c.recv();
        if r.code != Code::Response as i32 || r.response != Some(Response::GuestosMgrInstallStarted as i32) {
            break r;
        }
        let p = r.install_progress.expect("STARTED carries install_progress");
        assert_eq!(p.total_bytes, Some(total));
        done.push(p.done_bytes.unwrap());
    };
    assert_eq!(
        last.response,
        Some(Response::GuestosMgrInstallCompleted as i32),
        "{last:?}"
    );
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "not increasing: {done:?}");
    assert!(
        done.iter().any(|&b| b > 0 && b < total),
        "nothing between 0 and {total}: {done:?}"
    );
    assert_eq!(done.last(), Some(&total), "{done:?}");
    assert_eq!(installed(&d), vec!["big-1"]);
}
