//! The remaining mount types (OVERLAY_RO, OVERLAY_RW, BIND_FILE, BIND_FILE_RW) and setup mode, with
//! a GuestOS made from the busybox fixture plus extra images.

#![allow(clippy::unwrap_used)]

mod common;

use std::{fs, path::Path, process::Command};

use cml::crypto::sha256_file;
use common::{Daemon, fixture::busybox_guestos};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mount_entry(image: &str, point: &str, fs_type: &str, kind: &str, file: &Path) -> String {
    format!(
        "mounts {{\n  image_file: \"{image}\"\n  mount_point: \"{point}\"\n  fs_type: \"{fs_type}\"\n  mount_type: {kind}\n  \
         image_size: {}\n  image_sha2_256: \"{}\"\n}}\n",
        fs::metadata(file).unwrap().len(),
        sha256_file(file).unwrap()
    )
}

/// busybox-2: the fixture's root and /data, plus an OVERLAY_RO layer on /bin, an OVERLAY_RW /tmp,
/// and two files bound into /data.
fn daemon_with_extra_mounts(tmp: &Path) -> (Daemon, std::path::PathBuf) {
    let f = busybox_guestos(tmp, "busybox", 2, &[]);
    let dir = f.store.join("operatingsystems/x86/busybox-2");
    let layer = tmp.join("layer");
    fs::create_dir_all(&layer).unwrap();
    fs::write(layer.join("extra-tool"), "#!/bin/sh\necho from the overlay\n").unwrap();
    let st = Command::new("mksquashfs")
        .arg(&layer)
        .arg(dir.join("extra.img"))
        .args(["-noappend", "-all-root", "-quiet"])
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(dir.join("motd.img"), "welcome\n").unwrap();
    fs::write(dir.join("notes.img"), "original notes\n").unwrap();
    let mut conf = fs::read_to_string(&f.conf).unwrap();
    conf.push_str(&mount_entry(
        "extra",
        "/bin",
        "squashfs",
        "OVERLAY_RO",
        &dir.join("extra.img"),
    ));
    conf.push_str("mounts {\n  image_file: \"tmpup\"\n  mount_point: \"/tmp\"\n  fs_type: \"ext4\"\n  mount_type: OVERLAY_RW\n  def_size: 16\n}\n");
    conf.push_str(&mount_entry(
        "motd",
        "/data/motd",
        "none",
        "BIND_FILE",
        &dir.join("motd.img"),
    ));
    conf.push_str(&mount_entry(
        "notes",
        "/data/notes",
        "none",
        "BIND_FILE_RW",
        &dir.join("notes.img"),
    ));
    let d = common::dev_daemon(&f.store_url());
    let conf_path = d.file("busybox-2.conf", &conf);
    let empty = d.file("empty", "");
    let out = d.control(&["push_guestos_config", &conf_path, &empty, &empty]);
    assert!(out.status.success(), "{}", stderr(&out));
    (d, dir)
}

#[test]
fn overlay_and_bind_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, store_dir) = daemon_with_extra_mounts(tmp.path());
    let uuid = d.create_container("layered", "");
    d.ok(&["start", "layered"]);
    // OVERLAY_RO: the image's file appears beside the root's /bin; the layer is read-only.
    assert_eq!(
        d.sh(
            "layered",
            "cat /bin/extra-tool | tail -1; test -x /bin/busybox && echo base"
        )
        .1,
        "echo from the overlay\nbase\n"
    );
    assert_ne!(d.sh("layered", "touch /bin/new 2>/dev/null").0, 0);
    // OVERLAY_RW: /tmp is writable over the read-only root, and persists.
    assert_eq!(
        d.sh("layered", "echo kept > /tmp/state && cat /tmp/state").1,
        "kept\n"
    );
    // BIND_FILE: read-only; BIND_FILE_RW: writable, the container's own copy.
    assert_eq!(d.sh("layered", "cat /data/motd").1, "welcome\n");
    assert_ne!(d.sh("layered", "echo x > /data/motd").0, 0);
    assert_eq!(
        d.sh("layered", "echo changed > /data/notes && cat /data/notes").1,
        "changed\n"
    );
    d.ok(&["stop", "layered"]);
    d.ok(&["start", "layered"]);
    assert_eq!(d.sh("layered", "cat /tmp/state /data/notes").1, "kept\nchanged\n");
    d.ok(&["stop", "layered"]);
    // The GuestOS files are untouched; the upper layer lives in the container's own image.
    let installed = d.data.join("operatingsystems/busybox-2");
    assert_eq!(
        fs::read_to_string(installed.join("notes.img")).unwrap(),
        "original notes\n"
    );
    assert_eq!(
        fs::read(installed.join("extra.img")).unwrap(),
        fs::read(store_dir.join("extra.img")).unwrap()
    );
    assert!(d.data.join(format!("containers/{uuid}/tmpup.img")).is_file());
    assert!(d.data.join(format!("containers/{uuid}/notes.img")).is_file());
}

#[test]
fn a_soft_container_overlay_rw_layer_is_encrypted_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, _) = daemon_with_extra_mounts(tmp.path());
    let uuid = d.create_soft("sealed");
    d.ok(&["start", "sealed", "--key=trustme"]);
    let marker = "OVERLAY-PLAINTEXT-MARKER-6d2b";
    let script = format!("for i in $(seq 100); do echo {marker}; done > /tmp/overlay-secret-name; sync");
    assert_eq!(d.sh("sealed", &script).0, 0);
    d.ok(&["stop", "sealed", "--key=trustme"]);
    let image = fs::read(d.data.join(format!("containers/{uuid}/tmpup.img"))).unwrap();
    let has = |needle: &[u8]| image.windows(needle.len()).any(|w| w == needle);
    assert!(!has(marker.as_bytes()), "plaintext found in the overlay image");
    assert!(
        !has(b"overlay-secret-name"),
        "file name found in the overlay image"
    );
    d.ok(&["start", "sealed", "--key=trustme"]);
    assert_eq!(
        d.sh("sealed", "head -1 /tmp/overlay-secret-name").1,
        format!("{marker}\n")
    );
    d.ok(&["stop", "sealed", "--key=trustme"]);
}

#[test]
fn setup_mode_has_the_normal_root_under_setup() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, _) = daemon_with_extra_mounts(tmp.path());
    d.create_container("builder", "");
    d.ok(&["start", "builder", "--setup"]);
    assert_eq!(d.ok(&["state", "builder"]), "SETUP\n");
    // The root is a tmpfs with the host's busybox; the container's own mounts are under /setup.
    let (code, out) = d.sh(
        "builder",
        "test -x /bin/busybox && ls /setup/bin/extra-tool && cat /setup/data/motd",
    );
    assert_eq!((code, out.as_str()), (0, "/setup/bin/extra-tool\nwelcome\n"));
    // Setup mode keeps CAP_SYS_ADMIN: the user may mount.
    assert_eq!(
        d.sh(
            "builder",
            "mkdir -p /mnt && mount -t tmpfs none /mnt && echo mounted"
        )
        .1,
        "mounted\n"
    );
    d.ok(&["freeze", "builder"]);
    assert_eq!(d.ok(&["state", "builder"]), "FROZEN\n");
    d.ok(&["unfreeze", "builder"]);
    assert_eq!(d.ok(&["state", "builder"]), "SETUP\n");
    d.ok(&["stop", "builder"]);
    assert_eq!(d.ok(&["state", "builder"]), "STOPPED\n");
    d.ok(&["start", "builder"]);
    assert_eq!(d.ok(&["state", "builder"]), "RUNNING\n");
    d.ok(&["stop", "builder"]);
}
