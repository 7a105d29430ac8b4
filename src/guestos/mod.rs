//! GuestOS domain: config validation, the catalog of installed GuestOS versions in
//! `operatingsystems/`, and installation ([`install`]).
//!
//! Layout (SPEC §3): `operatingsystems/<name>-<version>/<name>-<version>.conf` with `.sig`, `.cert`
//! and the images `<image_file>.img`, all inside that directory. Directories whose name starts with
//! `.` are installations or removals in progress and are skipped; symlinks are never followed.

pub mod install;

use std::{
    fs,
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::protocol::{
    pb::{ContainerTrust, GuestOsConfig, GuestOsMount, guest_os_mount::Type as MountType},
    text,
};

/// One installed GuestOS version.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestOs {
    /// Its config.
    pub config: GuestOsConfig,
    /// Its directory (`operatingsystems/<name>-<version>`).
    pub dir: PathBuf,
    /// How its config verified: SIGNED (chain to a registered CA) or UNSIGNED (not checked, only
    /// with `signed_configs: false`).
    pub trust: ContainerTrust,
}

impl GuestOs {
    /// `<name>-<version>`, the directory and file stem.
    pub fn stem(&self) -> String {
        stem(&self.config)
    }
}

/// `<name>-<version>` of a config.
pub fn stem(cfg: &GuestOsConfig) -> String {
    format!("{}-{}", cfg.name, cfg.version)
}

/// Whether a mount of this type is backed by an image file shipped with the GuestOS.
pub fn ships_image(t: MountType) -> bool {
    match t {
        MountType::Shared
        | MountType::SharedRw
        | MountType::OverlayRo
        | MountType::BindFile
        | MountType::BindFileRw
        | MountType::StoreOnly
        | MountType::Flash => true,
        MountType::Empty
        | MountType::OverlayRw
        | MountType::Device
        | MountType::DeviceRw
        | MountType::Copy => false,
    }
}

/// The mounts (normal and setup) whose image comes with the GuestOS, each image file once.
pub fn image_mounts(cfg: &GuestOsConfig) -> Vec<&GuestOsMount> {
    let mut out: Vec<&GuestOsMount> = Vec::new();
    for m in cfg.mounts.iter().chain(&cfg.mounts_setup) {
        if ships_image(m.mount_type()) && !out.iter().any(|o| o.image_file == m.image_file) {
            out.push(m);
        }
    }
    out
}

/// The signal number of a GuestOS `stop_signal`: a name as `kill -l` prints it (`SIGTERM`,
/// `SIGPWR`, …) or `SIGRTMIN+N` (systemd guests stop cleanly on `SIGRTMIN+3`).
pub fn parse_stop_signal(name: &str) -> Result<i32, String> {
    if let Some(n) = name.strip_prefix("SIGRTMIN+") {
        let max = libc::SIGRTMAX() - libc::SIGRTMIN();
        return match n.parse::<i32>() {
            Ok(n) if (0..=max).contains(&n) => Ok(libc::SIGRTMIN() + n),
            _ => Err(format!("stop_signal {name:?}: SIGRTMIN+N needs 0 <= N <= {max}")),
        };
    }
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| format!("stop_signal {name:?} is not a signal name (e.g. SIGTERM, SIGRTMIN+3)"))
}

/// Checks a GuestOS config before it is installed: names, versions, image file names and mount
/// points are path-safe; image-backed mounts carry a size and a SHA-256; the URL scheme is one we
/// fetch from; in hosted mode, mount types that write physical devices are refused.
pub fn validate_config(cfg: &GuestOsConfig, hosted: bool) -> Result<(), String> {
    if !valid_name(&cfg.name) {
        return Err(format!(
            "name {:?} is not a valid GuestOS name ([A-Za-z0-9._+-], at most 64)",
            cfg.name
        ));
    }
    if !valid_file_name(&cfg.hardware) {
        return Err(format!("hardware {:?} is not a valid name", cfg.hardware));
    }
    if cfg.version == 0 {
        return Err("version must be at least 1".into());
    }
    if let Some(p) = &cfg.init_path {
        check_abs_path(p).map_err(|e| format!("init_path: {e}"))?;
    }
    if let Some(url) = &cfg.update_base_url {
        install::check_base_url(url)?;
    }
    if let Some(sig) = &cfg.stop_signal {
        parse_stop_signal(sig)?;
    }
    for (i, m) in cfg.mounts.iter().chain(&cfg.mounts_setup).enumerate() {
        let t = MountType::try_from(m.mount_type)
            .map_err(|_| format!("mount {i}: unknown mount_type {}", m.mount_type))?;
        if hosted
            && matches!(
                t,
                MountType::Flash | MountType::Device | MountType::DeviceRw | MountType::Copy
            )
        {
            return Err(format!(
                "mount {:?}: type {} writes or copies physical devices and is not available in hosted mode",
                m.mount_point,
                t.as_str_name()
            ));
        }
        if !valid_file_name(&m.image_file) {
            return Err(format!(
                "mount {:?}: image_file {:?} is not a valid file name",
                m.mount_point, m.image_file
            ));
        }
        check_abs_path(&m.mount_point).map_err(|e| format!("mount_point: {e}"))?;
        if ships_image(t) {
            if m.image_size.is_none() {
                return Err(format!(
                    "mount {:?}: image {:?} has no image_size",
                    m.mount_point, m.image_file
                ));
            }
            let sha = m.image_sha2_256.as_deref().unwrap_or_default();
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "mount {:?}: image {:?} needs image_sha2_256 (64 hex digits)",
                    m.mount_point, m.image_file
                ));
            }
        }
    }
    Ok(())
}

/// An absolute path without `..`, empty components' tricks, or NUL.
fn check_abs_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        return Err(format!("{p:?} must be an absolute path"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain '..'"));
    }
    Ok(())
}

/// All installed GuestOS versions, sorted by name, then version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    entries: Vec<GuestOs>,
}

/// Whether `s` is acceptable as a GuestOS name: 1–64 of `[A-Za-z0-9._+-]`, not starting with `.`
/// or `-` (it becomes part of directory names).
pub fn valid_name(s: &str) -> bool {
    valid_file_name(s) && !s.starts_with('-')
}

/// Whether `s` is a safe single path component: 1–64 of `[A-Za-z0-9._+-]`, not starting with `.`.
pub fn valid_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// Reads a regular file, refusing symlinks (`O_NOFOLLOW`).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Checks that every shipped image of an installed GuestOS is a regular file of its `image_size`.
fn images_complete(cfg: &GuestOsConfig, dir: &Path) -> Result<(), String> {
    for m in image_mounts(cfg) {
        let path = dir.join(format!("{}.img", m.image_file));
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("image {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("image {} is not a regular file", path.display()));
        }
        if Some(meta.len()) != m.image_size {
            return Err(format!(
                "image {} has {} bytes, config says {:?}",
                path.display(),
                meta.len(),
                m.image_size
            ));
        }
    }
    Ok(())
}

/// Decides how an installed GuestOS config is trusted: given its directory, its stem and the exact
/// config bytes, returns its trust level or why it is not acceptable.
pub type Verifier<'a> = &'a dyn Fn(&Path, &str, &[u8]) -> Result<ContainerTrust, String>;

impl Catalog {
    /// Reads every installed GuestOS below `dir`, checking each with `verify` and checking that its
    /// images are complete. Entries that fail are returned as (path, reason) next to the catalog.
    pub fn scan(dir: &Path, verify: Verifier<'_>) -> (Catalog, Vec<(PathBuf, String)>) {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        let Ok(read) = fs::read_dir(dir) else {
            return (Catalog::default(), errors);
        };
        for entry in read.flatten() {
            let dirname = entry.file_name().to_string_lossy().into_owned();
            // DirEntry::file_type does not follow symlinks: a symlinked directory is skipped.
            if dirname.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let gos_dir = entry.path();
            let conf = gos_dir.join(format!("{dirname}.conf"));
            let loaded = read_regular(&conf)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|bytes| {
                    let c = text::parse::<GuestOsConfig>(&bytes).map_err(|e| e.to_string())?;
                    validate_config(&c, false)?;
                    if stem(&c) != dirname {
                        return Err(format!("config names {} but lives in {dirname}", stem(&c)));
                    }
                    images_complete(&c, &gos_dir)?;
                    let trust = verify(&gos_dir, &dirname, &bytes)?;
                    Ok((c, trust))
                });
            match loaded {
                Ok((config, trust)) => entries.push(GuestOs {
                    config,
                    dir: gos_dir,
                    trust,
                }),
                Err(e) => errors.push((conf, e)),
            }
        }
        entries.sort_by(|a, b| (&a.config.name, a.config.version).cmp(&(&b.config.name, b.config.version)));
        (Catalog { entries }, errors)
    }

    /// A specific installed version.
    pub fn get(&self, name: &str, version: u64) -> Option<&GuestOs> {
        self.entries
            .iter()
            .find(|g| g.config.name == name && g.config.version == version)
    }

    /// The newest installed version named `name`.
    pub fn latest(&self, name: &str) -> Option<&GuestOs> {
        self.entries.iter().rev().find(|g| g.config.name == name)
    }

    /// Every installed version.
    pub fn all(&self) -> &[GuestOs] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(root: &Path, name: &str, ver: u64) {
        let d = root.join(format!("{name}-{ver}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("{name}-{ver}.conf")),
            format!("name: \"{name}\"\nhardware: \"x86\"\nversion: {ver}\ndescription {{ en: \"test\" }}\n"),
        )
        .unwrap();
    }

    #[test]
    fn scan_finds_versions_and_reports_bad_entries() {
        let d = tempfile::tempdir().unwrap();
        install(d.path(), "busybox", 1);
        install(d.path(), "busybox", 3);
        install(d.path(), "other", 2);
        fs::create_dir_all(d.path().join("broken-1")).unwrap();
        fs::write(d.path().join("broken-1/broken-1.conf"), "name: ").unwrap();
        fs::create_dir_all(d.path().join(".partial-1")).unwrap();
        let (cat, errors) = Catalog::scan(d.path(), &|_, _, _| Ok(ContainerTrust::Unsigned));
        assert_eq!(cat.all().len(), 3);
        assert_eq!(cat.latest("busybox").unwrap().config.version, 3);
        assert!(cat.latest("nope").is_none());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn symlinked_guestos_dirs_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let real = tempfile::tempdir().unwrap();
        install(real.path(), "evil", 1);
        std::os::unix::fs::symlink(real.path().join("evil-1"), d.path().join("evil-1")).unwrap();
        install(d.path(), "good", 1);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("good-1/good-1.conf.x")).unwrap();
        let (cat, _) = Catalog::scan(d.path(), &|_, _, _| Ok(ContainerTrust::Unsigned));
        assert!(cat.latest("evil").is_none());
        assert!(cat.latest("good").is_some());
        // A symlinked config file is refused too.
        fs::remove_file(d.path().join("good-1/good-1.conf")).unwrap();
        std::os::unix::fs::symlink(
            real.path().join("evil-1/evil-1.conf"),
            d.path().join("good-1/good-1.conf"),
        )
        .unwrap();
        let (cat, errors) = Catalog::scan(d.path(), &|_, _, _| Ok(ContainerTrust::Unsigned));
        assert!(cat.latest("good").is_none());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn configs_are_validated_for_path_safety() {
        let base = |extra: &str| {
            text::parse::<GuestOsConfig>(
                format!("name: \"g\" hardware: \"x86\" version: 1 description {{ en: \"d\" }} {extra}")
                    .as_bytes(),
            )
            .unwrap()
        };
        let sha = "0".repeat(64);
        assert!(validate_config(&base(""), true).is_ok());
        let ok = format!(
            "mounts {{ image_file: \"root\" mount_point: \"/\" fs_type: \"squashfs\" mount_type: SHARED image_size: 1 image_sha2_256: \"{sha}\" }}"
        );
        assert!(validate_config(&base(&ok), true).is_ok());
        for bad in [
            format!(
                "mounts {{ image_file: \"../root\" mount_point: \"/\" fs_type: \"x\" mount_type: SHARED image_size: 1 image_sha2_256: \"{sha}\" }}"
            ),
            "mounts { image_file: \"root\" mount_point: \"/\" fs_type: \"x\" mount_type: SHARED }"
                .to_string(),
            "mounts { image_file: \"d\" mount_point: \"/../x\" fs_type: \"x\" mount_type: EMPTY }"
                .to_string(),
            "mounts { image_file: \"d\" mount_point: \"x\" fs_type: \"x\" mount_type: EMPTY }".to_string(),
            "mounts { image_file: \"d\" mount_point: \"/dev/sda\" fs_type: \"x\" mount_type: DEVICE }"
                .to_string(),
            "update_base_url: \"ftp://x\"".to_string(),
            "init_path: \"sbin/init\"".to_string(),
        ] {
            assert!(validate_config(&base(&bad), true).is_err(), "{bad}");
        }
        let mut c = base("");
        c.name = "../x".into();
        assert!(validate_config(&c, true).is_err());
        c.name = "x\0y".into();
        assert!(validate_config(&c, true).is_err());
    }

    #[test]
    fn names_are_path_safe() {
        assert!(valid_name("debian-full_1.2"));
        for bad in ["", "..", ".x", "a/b", "-x", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
