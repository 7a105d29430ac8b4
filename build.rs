//! Generates the protocol types with prost-build and a descriptor set for the text format, using
//! protox so that no `protoc` is needed; and stages cml-web's front-end libraries (pinned in
//! `src/web/ui/package-lock.json`, installed with `npm ci`) for embedding into the binary.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let files = [
        "proto/control.proto",
        "proto/container.proto",
        "proto/guestos.proto",
        "proto/device.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let set_path = out.join("cml_descriptor.bin");
    std::fs::write(&set_path, prost::Message::encode_to_vec(&fds))?;
    prost_build::Config::new().enable_type_names().compile_fds(fds)?;
    stage_ui_vendor(&out.join("ui-vendor"))
}

/// The files cml-web serves from the npm packages: (path under `node_modules`, name served).
const VENDOR: [(&str, &str); 3] = [
    ("@xterm/xterm/lib/xterm.js", "xterm.js"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.js", "addon-fit.js"),
];

/// Installs the pinned packages with `npm ci` when `node_modules` does not match the lockfile
/// (a stamp holds the lockfile it was made from), then copies the served files to `dest`. Runs
/// under a lock: several build scripts of this package (profiles, features) may run at once.
fn stage_ui_vendor(dest: &Path) -> Result<()> {
    let ui = Path::new("src/web/ui");
    let lock = ui.join("package-lock.json");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed={}", ui.join("package.json").display());
    let modules = ui.join("node_modules");
    let stamp = modules.join(".cml-lockfile");
    let wanted = fs::read(&lock)?;
    // Opened without truncating, so that the lock file's mtime stays put (it is no source).
    let guard = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ui.join(".npm-ci.lock"))?;
    guard.lock()?;
    if fs::read(&stamp).ok().as_deref() != Some(&wanted[..]) {
        let status = Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(ui)
            .status()
            .map_err(|e| {
                format!(
                    "cannot run npm ({e}): cml-web embeds its front-end libraries from the npm \
                     registry at build time; scripts/setup.sh installs npm"
                )
            })?;
        if !status.success() {
            return Err(format!("`npm ci` in {} failed ({status})", ui.display()).into());
        }
        fs::write(&stamp, &wanted)?;
    }
    fs::create_dir_all(dest)?;
    for (from, to) in VENDOR {
        let src = modules.join(from);
        fs::copy(&src, dest.join(to)).map_err(|e| format!("{}: {e}", src.display()))?;
    }
    Ok(())
}
