//! Test fixture: a busybox-static GuestOS built, signed and laid out as an `update_base_url` store
//! by the real `cml-guestos` binary, with a development PKI to sign container configs too.
//!
//! Layout below the fixture directory `DIR`:
//!
//! ```text
//! DIR/pki/                      root-ca.cert/.key, signing.cert/.key (made once per DIR)
//! DIR/rootfs-<name>-<version>/  the busybox root file system
//! DIR/store/                    <name>-<version>.conf(.sig) and operatingsystems/x86/<name>-<version>/root.img
//! ```
//!
//! Serve `DIR/store` with `file://` ([`GuestOsFixture::store_url`]) or with `http::HttpStore`.
//! Several GuestOS versions can share one `DIR` (and so one store and one PKI).

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The `cml-guestos` binary under test.
pub const CML_GUESTOS: &str = env!("CARGO_BIN_EXE_cml-guestos");

/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into the fixture's `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "ls", "mount", "ps", "hostname", "kill", "true", "false", "id", "env",
    "reboot", "poweroff", "ip", "ping",
];

/// What the fixture's init runs (as pid 1, `sh -c`): exits on SIGTERM, runs the container's `INIT`
/// environment variable first when set (tests use it to ignore SIGTERM or start a busy loop),
/// prints `ready`, then waits until stopped.
pub const INIT_SCRIPT: &str = "trap 'exit 0' TERM; if [ -n \"$INIT\" ]; then eval \"$INIT\"; fi; echo ready; while :; do sleep 3600 & wait; done";

/// A built and signed GuestOS.
#[derive(Debug, Clone)]
pub struct GuestOsFixture {
    /// Holds everything.
    pub dir: PathBuf,
    /// The development PKI (`DIR/pki`).
    pub pki: PathBuf,
    /// The `update_base_url` store root: contains `operatingsystems/x86/...`.
    pub store: PathBuf,
    /// `store/<name>-<version>.conf`.
    pub conf: PathBuf,
    /// `conf` + `.sig`.
    pub sig: PathBuf,
    /// `pki/signing.cert` (the signer, as given to `push_guestos_config`).
    pub cert: PathBuf,
    /// `pki/root-ca.cert` (the CA to register with `ca_register`).
    pub root_ca: PathBuf,
    /// GuestOS name.
    pub name: String,
    /// GuestOS version.
    pub version: u64,
}

impl GuestOsFixture {
    /// `file://` URL of the store.
    pub fn store_url(&self) -> String {
        format!("file://{}", self.store.display())
    }

    /// The root image in the store.
    pub fn image(&self) -> PathBuf {
        self.store
            .join("operatingsystems/x86")
            .join(format!("{}-{}", self.name, self.version))
            .join("root.img")
    }

    /// Signs `file` with this fixture's PKI; returns `file.sig`.
    pub fn sign_file(&self, file: &Path) -> PathBuf {
        sign_file(&self.pki, file)
    }
}

fn run(args: &[&std::ffi::OsStr], what: &str) {
    let out = Command::new(CML_GUESTOS)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {CML_GUESTOS}: {e}"));
    assert!(
        out.status.success(),
        "cml-guestos {what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
}

/// The development PKI of `dir` (`dir/pki`), made on first use. Made in a temporary directory and
/// renamed into place, so concurrent callers all end up with the same, complete PKI.
pub fn pki(dir: &Path) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let pki = dir.join("pki");
    if pki.join("signing.cert").exists() {
        return pki;
    }
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let tmp = dir.join(format!(
        ".pki.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    run(&["dev-pki".as_ref(), tmp.as_os_str()], "dev-pki");
    if fs::rename(&tmp, &pki).is_err() {
        // Someone else was first (rename onto a non-empty directory fails): use theirs.
        fs::remove_dir_all(&tmp).unwrap();
        assert!(pki.join("signing.cert").exists(), "no PKI at {}", pki.display());
    }
    pki
}

/// Signs `file` with the signing key of the PKI directory `pki` (see [`pki`]); returns `file.sig`.
pub fn sign_file(pki: &Path, file: &Path) -> PathBuf {
    run(
        &[
            "sign".as_ref(),
            file.as_os_str(),
            "--key".as_ref(),
            pki.join("signing.key").as_os_str(),
            "--cert".as_ref(),
            pki.join("signing.cert").as_os_str(),
        ],
        "sign",
    );
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

/// Builds a root file system with Debian's static busybox in `/bin` and [`APPLETS`] linked to it.
pub fn busybox_rootfs(rootfs: &Path) {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (scripts/setup.sh)"
    );
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).unwrap();
    }
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| panic!("cannot copy {BUSYBOX}: {e}"));
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    // Something for cmld to bind the container's DNS server onto (the root is read-only).
    fs::write(rootfs.join("etc/resolv.conf"), "").unwrap();
}

/// Builds (with `cml-guestos build`) and signs a busybox GuestOS into `dir/store`. Its init is
/// `/bin/sh -c` [`INIT_SCRIPT`]. `extra_build_args` are appended to the build command (e.g.
/// `--notify`, `--update-base-url URL`, `--data-fs ext4`; not `--init`, which is set already).
pub fn busybox_guestos(dir: &Path, name: &str, version: u64, extra_build_args: &[&str]) -> GuestOsFixture {
    let pki = pki(dir);
    let rootfs = dir.join(format!("rootfs-{name}-{version}"));
    busybox_rootfs(&rootfs);
    let store = dir.join("store");
    let version_arg = version.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "build".as_ref(),
        "--rootfs".as_ref(),
        rootfs.as_os_str(),
        "--name".as_ref(),
        name.as_ref(),
        "--version".as_ref(),
        version_arg.as_ref(),
        "--out".as_ref(),
        store.as_os_str(),
        "--init".as_ref(),
        "/bin/sh".as_ref(),
        "--init-param".as_ref(),
        "-c".as_ref(),
        "--init-param".as_ref(),
        INIT_SCRIPT.as_ref(),
    ];
    args.extend(extra_build_args.iter().map(|a| std::ffi::OsStr::new(*a)));
    run(&args, "build");
    let conf = store.join(format!("{name}-{version}.conf"));
    assert!(conf.exists(), "build wrote no {}", conf.display());
    let sig = sign_file(&pki, &conf);
    GuestOsFixture {
        dir: dir.to_owned(),
        cert: pki.join("signing.cert"),
        root_ca: pki.join("root-ca.cert"),
        pki,
        store,
        conf,
        sig,
        name: name.to_owned(),
        version,
    }
}

/// The Debian 12 fixture of `scripts/debian-fixture.sh` (`rootfs/` and an unsigned `store/` with
/// `debian-12.conf`), built on first use and cached under `target/fixtures/debian-12`; parallel
/// callers wait on its lock.
pub fn debian() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/fixtures/debian-12");
    let out = Command::new(root.join("scripts/debian-fixture.sh"))
        .arg(CML_GUESTOS)
        .arg(&dir)
        .output()
        .map_err(|e| format!("scripts/debian-fixture.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/debian-fixture.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}
