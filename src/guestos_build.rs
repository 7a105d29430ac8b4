//! `cml-guestos build`: turns a root file system directory into a GuestOS, laid out as an
//! `update_base_url` store (SPEC §8):
//!
//! ```text
//! OUT/<name>-<version>.conf                                     GuestOSConfig, protobuf text
//! OUT/operatingsystems/<hardware>/<name>-<version>/root.img     the root image
//! ```
//!
//! The root image is a squashfs (`mksquashfs`, Debian squashfs-tools) or an ext4 image
//! (`mkfs.ext4 -d`, e2fsprogs). A read-only root cannot grow a mount point when the container
//! starts, so the image holds every mount point the config names plus `/proc`, `/sys`, `/dev`,
//! `/run` and `/tmp`, even when the source directory lacks them. The source directory is never
//! modified: squashfs gets the missing directories as pseudo definitions (`-p`), ext4 is built from
//! a temporary copy.
//!
//! The root file system is a directory, used as it is except that every file is owned by root in
//! a squashfs image (`-all-root`), or a tar archive (see [`tar_import`]), extracted into a private
//! temporary directory next to the image, whose numeric owners, modes, extended attributes, hard
//! links and device nodes the image keeps; the temporary directory is removed afterwards.
//!
//! Order of writes: the image is built under a temporary name next to its final place and renamed
//! when complete; the config, which names the image's size and hash, is written last (atomically),
//! so a config never describes an image that is not there. A stale `<conf>.sig` from an earlier
//! build is removed, since it cannot match the new config.

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

pub mod tar_import;

use crate::{
    crypto::{self, CryptoError},
    guestos,
    protocol::{
        pb::{GuestOsConfig, GuestOsMount, I18nString, guest_os_mount},
        text,
    },
    store::{self, StoreError},
};

/// Mount points every root image contains besides those the config names.
const SYSTEM_DIRS: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp"];

/// Largest `/data` size accepted (MiB), also the mount's `max_size`.
pub const MAX_DATA_SIZE: u32 = 16384;

/// How containers use the root image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootType {
    /// Read-only (`SHARED`).
    Shared,
    /// Read-only image with a per-container tmpfs upper layer (`SHARED_RW`).
    SharedRw,
}

/// File system of the root image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    /// squashfs via `mksquashfs`.
    Squashfs,
    /// ext4 via `mkfs.ext4 -d`.
    Ext4,
}

/// File system of the per-container `/data` mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFs {
    /// A tmpfs of `def_size` MiB (lost at stop).
    Tmpfs,
    /// A persistent per-container ext4 image.
    Ext4,
}

/// Where the root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// A directory (read only); its files are owned by root in a squashfs image.
    Dir(PathBuf),
    /// A tar archive (plain, gzip or zstd), imported with its owners, modes and attributes.
    Tar(PathBuf),
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The root file system.
    pub rootfs: RootfsSource,
    /// GuestOS name.
    pub name: String,
    /// GuestOS version (> 0).
    pub version: u64,
    /// Output directory (the store root).
    pub out: PathBuf,
    /// Hardware name (default `x86`).
    pub hardware: String,
    /// The container's init (default `/sbin/init`).
    pub init: String,
    /// Arguments of init.
    pub init_params: Vec<String>,
    /// Root mount type (default SHARED).
    pub root_type: RootType,
    /// Root image file system (default squashfs).
    pub root_fs: RootFs,
    /// `/data` file system (default tmpfs).
    pub data_fs: DataFs,
    /// `/data` default size in MiB (default 16).
    pub data_size: u32,
    /// Whether the guest reports readiness with `READY=1` (`feature_notify_ready`).
    pub notify: bool,
    /// The stop signal (`stop_signal`), checked here; SIGTERM when unset.
    pub stop_signal: Option<String>,
    /// Where the daemon fetches this GuestOS's images from.
    pub update_base_url: Option<String>,
    /// English description (default `<name> <version>`).
    pub description: Option<String>,
}

impl BuildOptions {
    /// Options with every default filled in, for a root file system directory.
    pub fn new(rootfs: impl Into<PathBuf>, name: &str, version: u64, out: impl Into<PathBuf>) -> Self {
        BuildOptions {
            rootfs: RootfsSource::Dir(rootfs.into()),
            name: name.to_owned(),
            version,
            out: out.into(),
            hardware: "x86".into(),
            init: "/sbin/init".into(),
            init_params: Vec::new(),
            root_type: RootType::Shared,
            root_fs: RootFs::Squashfs,
            data_fs: DataFs::Tmpfs,
            data_size: 16,
            notify: false,
            stop_signal: None,
            update_base_url: None,
            description: None,
        }
    }
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOutput {
    /// `OUT/<name>-<version>.conf`.
    pub conf: PathBuf,
    /// `OUT/operatingsystems/<hardware>/<name>-<version>/root.img`.
    pub image: PathBuf,
    /// The config written to `conf`.
    pub config: GuestOsConfig,
}

/// A GuestOS build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The options are not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// An external tool is not installed.
    #[error("{tool} not found: install {package}")]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// An external tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// The program.
        tool: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the config failed.
    #[error("cannot write the GuestOS config")]
    Store(#[from] StoreError),
    /// Hashing the image failed.
    #[error("cannot hash the root image")]
    Hash(#[from] CryptoError),
    /// The root file system tar could not be imported.
    #[error("cannot import the root file system from {}", path.display())]
    Tar {
        /// The archive.
        path: PathBuf,
        /// The cause (names the entry).
        #[source]
        source: tar_import::TarImportError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn invalid(what: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// Builds the GuestOS described by `opts` (see the module documentation).
pub fn build(opts: &BuildOptions) -> Result<BuildOutput, BuildError> {
    validate(opts)?;
    let mut config = config_for(opts);
    let mount_points = required_dirs(&config);

    let ver = format!("{}-{}", opts.name, opts.version);
    let image_dir = opts.out.join("operatingsystems").join(&opts.hardware).join(&ver);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&image_dir)
        .map_err(io_err("create directory", &image_dir))?;
    let image = image_dir.join("root.img");
    let tmp = image_dir.join(format!("{}root.img.{}", store::TMP_PREFIX, unique()));
    let built = match &opts.rootfs {
        RootfsSource::Dir(dir) => make_image(opts.root_fs, dir, false, &tmp, &image_dir, &mount_points),
        RootfsSource::Tar(archive) => {
            // Private to this build (0700 until the archive's root entry, if any, says otherwise).
            let extracted = image_dir.join(format!("{}rootfs.{}", store::TMP_PREFIX, unique()));
            let result = fs::DirBuilder::new()
                .mode(0o700)
                .create(&extracted)
                .map_err(io_err("create directory", &extracted))
                .and_then(|()| import_tar(archive, &extracted))
                .and_then(|()| make_image(opts.root_fs, &extracted, true, &tmp, &image_dir, &mount_points));
            let cleanup = store::remove_tree_if_exists(&extracted).map_err(BuildError::from);
            result.and(cleanup)
        }
    }
    .and_then(|()| finish_image(&tmp, &image));
    let (size, sha) = match built {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let root = &mut config.mounts[0];
    root.image_size = Some(size);
    root.image_sha2_256 = Some(sha);

    let conf = opts.out.join(format!("{ver}.conf"));
    store::remove_if_exists(&opts.out.join(format!("{ver}.conf.sig")))?;
    store::atomic_write(&conf, text::print(&config).as_bytes(), 0o644)?;
    Ok(BuildOutput { conf, image, config })
}

fn validate(opts: &BuildOptions) -> Result<(), BuildError> {
    if !guestos::valid_name(&opts.name) {
        return Err(invalid(
            "name",
            format!(
                "{:?}: 1-64 of A-Z a-z 0-9 . _ + -, not starting with '.' or '-'",
                opts.name
            ),
        ));
    }
    if let Some(sig) = &opts.stop_signal {
        guestos::parse_stop_signal(sig).map_err(|e| invalid("stop-signal", e))?;
    }
    if !guestos::valid_file_name(&opts.hardware) {
        return Err(invalid(
            "hardware",
            format!(
                "{:?}: 1-64 of A-Z a-z 0-9 . _ + -, not starting with '.'",
                opts.hardware
            ),
        ));
    }
    if opts.version == 0 {
        return Err(invalid("version", "must be greater than 0"));
    }
    if !opts.init.starts_with('/') {
        return Err(invalid(
            "init",
            format!("{:?} is not an absolute path", opts.init),
        ));
    }
    if !(1..=MAX_DATA_SIZE).contains(&opts.data_size) {
        return Err(invalid(
            "data size",
            format!("{} MiB is not within 1..={MAX_DATA_SIZE}", opts.data_size),
        ));
    }
    if let Some(url) = &opts.update_base_url {
        let ok = ["file://", "http://", "https://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !ok {
            return Err(invalid(
                "update base URL",
                format!("{url:?}: expected file://, http:// or https://"),
            ));
        }
    }
    if opts.description.as_deref().is_some_and(str::is_empty) {
        return Err(invalid("description", "must not be empty"));
    }
    let (path, want_dir) = match &opts.rootfs {
        RootfsSource::Dir(p) => (p, true),
        RootfsSource::Tar(p) => (p, false),
    };
    let meta = fs::metadata(path).map_err(io_err("read root file system", path))?;
    if want_dir && !meta.is_dir() {
        return Err(invalid(
            "root file system",
            format!("{} is not a directory", path.display()),
        ));
    }
    if !want_dir && !meta.is_file() {
        return Err(invalid(
            "root file system tar",
            format!("{} is not a file", path.display()),
        ));
    }
    Ok(())
}

/// Extracts `archive` into the empty directory `dest`. The root directory keeps the archive's
/// root entry (`./`) if it has one; otherwise it is made root-owned 0755.
fn import_tar(archive: &Path, dest: &Path) -> Result<(), BuildError> {
    let fail = |source| BuildError::Tar {
        path: archive.to_owned(),
        source,
    };
    if !tar_import::extract(archive, dest).map_err(fail)?.root_entry {
        std::os::unix::fs::chown(dest, Some(0), Some(0)).map_err(io_err("chown", dest))?;
        fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err("chmod", dest))?;
    }
    Ok(())
}

/// Builds the image `img` from the directory `rootfs`. `imported`: a private directory made from a
/// tar, whose owners are kept and which may be changed (ext4 builds in place, without a copy).
fn make_image(
    fs_type: RootFs,
    rootfs: &Path,
    imported: bool,
    img: &Path,
    work_dir: &Path,
    dirs: &[PathBuf],
) -> Result<(), BuildError> {
    match fs_type {
        RootFs::Squashfs => make_squashfs(rootfs, img, dirs, imported),
        RootFs::Ext4 => make_ext4(rootfs, img, work_dir, dirs, imported),
    }
}

/// The config without image size and hash. The root mount is `mounts[0]`.
fn config_for(opts: &BuildOptions) -> GuestOsConfig {
    let root = GuestOsMount {
        image_file: "root".into(),
        mount_point: "/".into(),
        fs_type: match opts.root_fs {
            RootFs::Squashfs => "squashfs",
            RootFs::Ext4 => "ext4",
        }
        .into(),
        mount_type: match opts.root_type {
            RootType::Shared => guest_os_mount::Type::Shared,
            RootType::SharedRw => guest_os_mount::Type::SharedRw,
        } as i32,
        ..Default::default()
    };
    let data = GuestOsMount {
        image_file: "data".into(),
        mount_point: "/data".into(),
        fs_type: match opts.data_fs {
            DataFs::Tmpfs => "tmpfs",
            DataFs::Ext4 => "ext4",
        }
        .into(),
        mount_type: guest_os_mount::Type::Empty as i32,
        min_size: Some(1),
        max_size: Some(MAX_DATA_SIZE),
        def_size: Some(opts.data_size),
        ..Default::default()
    };
    GuestOsConfig {
        name: opts.name.clone(),
        hardware: opts.hardware.clone(),
        version: opts.version,
        mounts: vec![root, data],
        init_path: Some(opts.init.clone()),
        init_param: opts.init_params.clone(),
        description: I18nString {
            en: opts
                .description
                .clone()
                .unwrap_or_else(|| format!("{} {}", opts.name, opts.version)),
            ..Default::default()
        },
        update_base_url: opts.update_base_url.clone(),
        feature_notify_ready: opts.notify.then_some(true),
        stop_signal: opts.stop_signal.clone(),
        ..Default::default()
    }
}

/// Every directory the root image must contain, relative to its root, parents before children:
/// the config's mount points and [`SYSTEM_DIRS`].
fn required_dirs(config: &GuestOsConfig) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let points = config
        .mounts
        .iter()
        .chain(&config.mounts_setup)
        .map(|m| m.mount_point.as_str())
        .chain(SYSTEM_DIRS.iter().copied());
    for point in points {
        let mut rel = PathBuf::new();
        for c in Path::new(point).components() {
            if let Component::Normal(part) = c {
                rel.push(part);
                if !dirs.contains(&rel) {
                    dirs.push(rel.clone());
                }
            }
        }
    }
    dirs
}

/// Whether `rel` exists below `root` (as anything: a symlink such as `/run -> /var/run` is the
/// image author's choice and left alone).
fn exists_below(root: &Path, rel: &Path) -> bool {
    root.join(rel).symlink_metadata().is_ok()
}

/// `keep_owners`: the files keep their owners (a tar import); otherwise all are root's.
fn make_squashfs(rootfs: &Path, img: &Path, dirs: &[PathBuf], keep_owners: bool) -> Result<(), BuildError> {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(rootfs).arg(img).args(["-noappend", "-quiet", "-xattrs"]);
    if !keep_owners {
        cmd.arg("-all-root");
    }
    for dir in dirs.iter().filter(|d| !exists_below(rootfs, d)) {
        cmd.arg("-p").arg(format!("/{} d 755 0 0", dir.display()));
    }
    run(cmd, "mksquashfs", "squashfs-tools")
}

/// `in_place`: `rootfs` is a private directory that may get the missing mount points itself
/// (a tar import); otherwise it is copied first.
fn make_ext4(
    rootfs: &Path,
    img: &Path,
    work_dir: &Path,
    dirs: &[PathBuf],
    in_place: bool,
) -> Result<(), BuildError> {
    let staging = if in_place {
        rootfs.to_owned()
    } else {
        work_dir.join(format!("{}staging.{}", store::TMP_PREFIX, unique()))
    };
    let result = (|| {
        if !in_place {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&staging)
                .map_err(io_err("create directory", &staging))?;
            let mut cp = Command::new("cp");
            cp.arg("-a").arg(rootfs.join(".")).arg(&staging);
            run(cp, "cp", "coreutils")?;
        }
        for dir in dirs.iter().filter(|d| !exists_below(&staging, d)) {
            let path = staging.join(dir);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(io_err("create directory", &path))?;
        }
        let used = used_bytes(&staging)?;
        let size_mib = (used + used * 3 / 10 + (8 << 20)).div_ceil(1 << 20);
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-d"])
            .arg(&staging)
            .args(["-E", "root_owner=0:0"])
            .arg(img)
            .arg(format!("{size_mib}M"));
        run(mkfs, "mkfs.ext4", "e2fsprogs")
    })();
    if in_place {
        return result;
    }
    let cleanup = fs::remove_dir_all(&staging).map_err(io_err("remove directory", &staging));
    result.and(cleanup)
}

/// Bytes allocated below `dir` (blocks, so directories and block rounding count), not following
/// symlinks.
fn used_bytes(dir: &Path) -> Result<u64, BuildError> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("read directory", &d))? {
            let entry = entry.map_err(io_err("read directory", &d))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(io_err("stat", &entry.path()))?;
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Syncs the finished temporary image, hashes it and renames it into place: (size, sha256 hex).
fn finish_image(tmp: &Path, image: &Path) -> Result<(u64, String), BuildError> {
    let file = fs::File::open(tmp).map_err(io_err("open", tmp))?;
    file.sync_all().map_err(io_err("sync", tmp))?;
    let size = file.metadata().map_err(io_err("stat", tmp))?.len();
    let sha = crypto::sha256_file(tmp)?;
    fs::rename(tmp, image).map_err(io_err("rename into place", image))?;
    if let Some(dir) = image.parent() {
        store::sync_dir(dir)?;
    }
    Ok((size, sha))
}

/// Runs an external tool, mapping "not installed" and failure to clear errors.
fn run(mut cmd: Command, tool: &'static str, package: &'static str) -> Result<(), BuildError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => BuildError::ToolMissing { tool, package },
            _ => BuildError::Io {
                op: "run",
                path: PathBuf::from(tool),
                source: e,
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    Err(BuildError::ToolFailed {
        tool,
        status: out.status,
        stderr,
    })
}

/// A suffix that keeps temporary names of concurrent builds apart.
fn unique() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::create_dir(dir.path().join("proc")).unwrap();
        dir
    }

    #[test]
    fn config_defaults() {
        let opts = BuildOptions::new("/r", "busybox", 3, "/o");
        let c = config_for(&opts);
        assert_eq!(c.init_path.as_deref(), Some("/sbin/init"));
        assert_eq!(c.description.en, "busybox 3");
        assert_eq!(c.feature_notify_ready, None);
        assert_eq!(c.mounts[0].mount_type, guest_os_mount::Type::Shared as i32);
        assert_eq!(c.mounts[0].fs_type, "squashfs");
        let data = &c.mounts[1];
        assert_eq!(data.mount_type, guest_os_mount::Type::Empty as i32);
        assert_eq!((data.fs_type.as_str(), data.def_size), ("tmpfs", Some(16)));
        assert!(data.min_size.unwrap() <= data.def_size.unwrap());
        // The printed config parses back to the same message.
        let back: GuestOsConfig = text::parse(text::print(&c).as_bytes()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn config_options() {
        let mut opts = BuildOptions::new("/r", "busybox", 3, "/o");
        opts.notify = true;
        opts.root_type = RootType::SharedRw;
        opts.root_fs = RootFs::Ext4;
        opts.data_fs = DataFs::Ext4;
        opts.data_size = 64;
        opts.init = "/bin/sh".into();
        opts.init_params = vec!["-c".into(), "echo ready".into()];
        opts.update_base_url = Some("http://127.0.0.1:1/store".into());
        opts.description = Some("test".into());
        let c = config_for(&opts);
        assert_eq!(c.feature_notify_ready, Some(true));
        assert_eq!(c.mounts[0].mount_type, guest_os_mount::Type::SharedRw as i32);
        assert_eq!(c.mounts[0].fs_type, "ext4");
        assert_eq!(c.mounts[1].fs_type, "ext4");
        assert_eq!(c.mounts[1].def_size, Some(64));
        assert_eq!(c.init_param, ["-c", "echo ready"]);
        assert_eq!(c.description.en, "test");
        let printed = text::print(&c);
        assert!(printed.contains("feature_notify_ready: true"), "{printed}");
    }

    #[test]
    fn required_dirs_parents_first() {
        let mut c = config_for(&BuildOptions::new("/r", "b", 1, "/o"));
        c.mounts.push(GuestOsMount {
            mount_point: "/mnt/a/b".into(),
            ..Default::default()
        });
        let dirs = required_dirs(&c);
        let pos = |s: &str| dirs.iter().position(|d| d == Path::new(s)).unwrap();
        assert!(pos("mnt") < pos("mnt/a") && pos("mnt/a") < pos("mnt/a/b"));
        for d in ["data", "proc", "sys", "dev", "run", "tmp"] {
            pos(d);
        }
        assert!(!dirs.iter().any(|d| d.as_os_str().is_empty()));
    }

    #[test]
    fn validation() {
        let root = rootfs();
        let out = tempfile::tempdir().unwrap();
        let check = |f: &dyn Fn(&mut BuildOptions), what: &str| {
            let mut o = BuildOptions::new(root.path(), "ok", 1, out.path());
            f(&mut o);
            let err = build(&o).unwrap_err();
            assert!(
                matches!(&err, BuildError::Invalid { what: w, .. } if *w == what),
                "{what}: {err}"
            );
        };
        check(&|o| o.name = "../x".into(), "name");
        check(&|o| o.name = String::new(), "name");
        check(&|o| o.name = "-x".into(), "name");
        check(&|o| o.hardware = "../x86".into(), "hardware");
        check(&|o| o.version = 0, "version");
        check(&|o| o.init = "sbin/init".into(), "init");
        check(&|o| o.data_size = 0, "data size");
        check(&|o| o.data_size = MAX_DATA_SIZE + 1, "data size");
        check(&|o| o.update_base_url = Some("ftp://x".into()), "update base URL");
        let mut o = BuildOptions::new(root.path().join("bin/hello"), "ok", 1, out.path());
        assert!(matches!(build(&o), Err(BuildError::Invalid { .. })));
        o.rootfs = RootfsSource::Dir(root.path().join("missing"));
        assert!(matches!(build(&o), Err(BuildError::Io { .. })));
        // Nothing was written.
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn squashfs_build() {
        let root = rootfs();
        let out = tempfile::tempdir().unwrap();
        let built = build(&BuildOptions::new(root.path(), "t", 2, out.path())).unwrap();
        assert_eq!(built.conf, out.path().join("t-2.conf"));
        assert_eq!(built.image, out.path().join("operatingsystems/x86/t-2/root.img"));
        let size = fs::metadata(&built.image).unwrap().len();
        assert_eq!(built.config.mounts[0].image_size, Some(size));
        let conf: GuestOsConfig = text::parse(&fs::read(&built.conf).unwrap()).unwrap();
        assert_eq!(conf, built.config);
        // The source tree was not touched; no temporary files are left.
        assert!(!root.path().join("data").exists());
        let left: Vec<_> = fs::read_dir(built.image.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
