//! The VM lab (`scripts/vm-lab.sh`): Debian's own kernel in qemu with pure cgroup v2 — the cgroup
//! layout this project's hybrid CI host cannot show — and a real cmld inside, checked by the
//! scenario scripts under `scripts/vm/`. One boot per scenario:
//!
//! - `hosted`: lifecycle, `run`, freeze, limits, device filtering, user namespace, veth and dummy
//!   interfaces, adoption after `kill -9`, isolation, the cgroup v2 files, start/stop timings;
//! - `device`: cmld built with the `device-mode` feature (`target/vm/cmld-device-mode`, made by
//!   `scripts/test.sh`) runs straight from the initramfs, `hostedmode: false`, data dir on a virtio
//!   disk: containers enter their root by a move + chroot and cannot leave it (`..`, a directory
//!   left outside a nested chroot, host mounts, host files), a hosted cmld there warns and works;
//!   `control reboot` stops the guest gracefully and reboots the VM, and the disk holds what the
//!   guest wrote;
//! - `debian`: the Debian 12 GuestOS with systemd as its init (`scripts/debian-fixture.sh`) boots
//!   to `running` in the cgroup subtree cml delegates to it, and stops — once after switch_root
//!   with the hosted cmld, once under the device-mode cmld straight from the initramfs;
//! - `install`: a Debian 12 host with systemd as pid 1 (`scripts/vm/systemd-host.sh`) installs cml's
//!   Debian package (two revisions made here by `scripts/package.sh` from the release binaries),
//!   uses the service, restarts and upgrades it with a container running, stops, removes and
//!   purges it.
//!
//! The lab runs the release binaries (the suite's `cargo build --release --bins`), so the test
//! refuses binaries older than the sources rather than test something else than the checkout. It
//! never passes silently: a missing qemu, a VM that does not report, or a timeout fails it, with
//! the lab's output (results, serial console, cmld's log) in the message. Each run has its own
//! directory (`target/vm/runs/<scenario>.XXXXXX`), so the runs go in parallel.

#![allow(clippy::unwrap_used)]

use std::{
    fs,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

/// Bound of one scenario, preparation included (the lab's own qemu timeout is 420 s).
const LIMIT: Duration = Duration::from_secs(600);

/// Bound of the install scenario: two packages, the systemd host's image at its first run, a boot
/// of systemd under TCG and two package installations (the lab's qemu timeout is 900 s there).
const INSTALL_LIMIT: Duration = Duration::from_secs(1200);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/release`: the test's own binaries are `<target>/debug/...` (or release).
fn release_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cmld"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("release")
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The newest modification time among the files the binaries are built from (not the npm
/// packages `build.rs` installs under `src/web/ui/node_modules`, nor hidden files such as its lock).
fn newest_source() -> (SystemTime, PathBuf) {
    fn walk(dir: &Path, best: &mut (SystemTime, PathBuf)) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == "node_modules" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, best);
            } else if mtime(&p) > best.0 {
                *best = (mtime(&p), p);
            }
        }
    }
    let r = root();
    let mut best = (SystemTime::UNIX_EPOCH, PathBuf::new());
    walk(&r.join("src"), &mut best);
    walk(&r.join("proto"), &mut best);
    for f in ["build.rs", "Cargo.toml", "Cargo.lock"] {
        let p = r.join(f);
        if mtime(&p) > best.0 {
            best = (mtime(&p), p);
        }
    }
    best
}

/// Panics unless `bin` exists and is not older than the sources.
fn require_fresh(bin: &Path, how: &str) {
    assert!(bin.exists(), "{} is missing: {how}", bin.display());
    let (newest, file) = newest_source();
    assert!(
        mtime(bin) >= newest,
        "{} is older than {}: {how}",
        bin.display(),
        file.display()
    );
}

/// Runs `scripts/vm-lab.sh SCENARIO ARGS`, bounded by [`LIMIT`]; panics with its whole output
/// unless it exits 0.
fn lab(scenario: &str, args: &[&str]) {
    lab_within(scenario, args, LIMIT);
}

/// [`lab`] with another bound.
fn lab_within(scenario: &str, args: &[&str], limit: Duration) {
    // One file per run: a scenario may run twice in one test process (debian does).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = std::env::temp_dir().join(format!("cml-vm-lab-{scenario}-{}-{n}.log", std::process::id()));
    let out = fs::File::create(&out_path).unwrap();
    let mut child = Command::new(root().join("scripts/vm-lab.sh"))
        .arg(scenario)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        // Its own process group, so a timeout ends qemu too.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run scripts/vm-lab.sh: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut text = String::new();
    fs::File::open(&out_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = fs::remove_file(&out_path);
    // The result lines, for the test log (cargo test shows them with --nocapture or on failure).
    for line in text.lines().filter(|l| l.starts_with("VMLAB ")) {
        println!("{line}");
    }
    match status {
        None => panic!(
            "the VM lab's {scenario} scenario took longer than {} s:\n{text}",
            limit.as_secs()
        ),
        Some(st) if !st.success() => panic!(
            "the VM lab's {scenario} scenario failed ({st}; exit 1: checks failed, 2: a tool or binary is missing, 3: the VM never reported):\n{text}"
        ),
        Some(_) => {
            assert!(
                text.contains("VMLAB DONE 0"),
                "the {scenario} scenario exited 0 without reporting `VMLAB DONE 0`:\n{text}"
            );
        }
    }
}

/// The release directory, once its binaries are checked to be fresh.
fn fresh_release_bins() -> PathBuf {
    let bin = release_dir();
    for b in ["cmld", "control", "cml-guestos"] {
        require_fresh(
            &bin.join(b),
            "the VM lab runs the release binaries: cargo build --release --locked --bins (scripts/test.sh does)",
        );
    }
    bin
}

#[test]
fn hosted_scenario_on_a_cgroup_v2_kernel() {
    let bin = fresh_release_bins();
    lab("hosted", &["--bin-dir", bin.to_str().unwrap()]);
}

#[test]
fn device_mode_from_the_initramfs_keeps_guests_in_their_root_and_reboot_keeps_their_data() {
    let bin = release_dir();
    let cmld = device_mode_cmld();
    // cmld: the hosted one the scenario also runs from the initramfs.
    for b in ["cmld", "control", "cml-guestos"] {
        require_fresh(
            &bin.join(b),
            "the VM lab runs the release binaries: cargo build --release --locked --bins (scripts/test.sh does)",
        );
    }
    lab(
        "device",
        &[
            "--bin-dir",
            bin.to_str().unwrap(),
            "--cmld",
            cmld.to_str().unwrap(),
        ],
    );
}

#[test]
fn systemd_guest_boots_in_its_delegated_cgroup_v2_subtree() {
    let bin = fresh_release_bins();
    lab("debian", &["--bin-dir", bin.to_str().unwrap()]);
}

/// The same systemd guest under the device-mode cmld running straight from the initramfs: its
/// root entered by a move + chroot, with and without a user namespace.
#[test]
fn systemd_guest_boots_under_a_device_mode_cmld_on_the_initial_rootfs() {
    let bin = fresh_release_bins();
    let cmld = device_mode_cmld();
    lab(
        "debian",
        &[
            "--bin-dir",
            bin.to_str().unwrap(),
            "--cmld",
            cmld.to_str().unwrap(),
            "--root",
            "initramfs",
        ],
    );
}

/// The `device-mode` cmld scripts/test.sh puts aside, refused when older than the sources.
fn device_mode_cmld() -> PathBuf {
    let cmld = root().join("target/vm/cmld-device-mode");
    require_fresh(
        &cmld,
        "scripts/test.sh builds it (cargo build --release --locked --features device-mode --bin cmld, copied to target/vm/cmld-device-mode)",
    );
    cmld
}

/// `scripts/package.sh --revision REVISION` on the release binaries of this target directory: the
/// path of the package it made (the last line it prints).
fn package(revision: u32) -> PathBuf {
    let target = release_dir().parent().unwrap().to_path_buf();
    // A directory of this run's own: cargo-deb empties <target>/debian when it makes the next
    // package, so package.sh copies it here under its lock.
    let keep = std::env::temp_dir().join(format!("cml-vm-lab-{}", std::process::id()));
    let out = Command::new(root().join("scripts/package.sh"))
        .args(["--revision", &revision.to_string(), "--out"])
        .arg(&keep)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/package.sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/package.sh --revision {revision} failed ({}):\n{stdout}",
        out.status
    );
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file() && deb.starts_with(&keep),
        "scripts/package.sh --revision {revision} printed no package path:\n{stdout}"
    );
    deb
}

#[test]
fn debian_package_installs_restarts_upgrades_and_purges_on_a_systemd_host() {
    let bin = fresh_release_bins();
    let old = package(1);
    let new = package(2);
    let result = std::panic::catch_unwind(|| {
        lab_within(
            "install",
            &[
                "--bin-dir",
                bin.to_str().unwrap(),
                "--deb",
                old.to_str().unwrap(),
                "--deb-new",
                new.to_str().unwrap(),
            ],
            INSTALL_LIMIT,
        )
    });
    let _ = fs::remove_file(&old);
    let _ = fs::remove_file(&new);
    if let Some(dir) = old.parent() {
        let _ = fs::remove_dir(dir);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
