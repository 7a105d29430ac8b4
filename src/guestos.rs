//! GuestOS domain: the catalog of installed GuestOS versions in `operatingsystems/`.
//!
//! Layout (SPEC §3): `operatingsystems/<name>-<version>/<name>-<version>.conf` (+ `.sig`, `.cert`
//! and the images, all inside that directory). Directories whose name starts with `.` are
//! installations in progress and are skipped. Signature verification and installation arrive with
//! the GuestOS manager's trust store; this module reads what is installed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::protocol::{pb::GuestOsConfig, text};

/// One installed GuestOS version.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestOs {
    /// Its config.
    pub config: GuestOsConfig,
    /// Its directory (`operatingsystems/<name>-<version>`).
    pub dir: PathBuf,
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

impl Catalog {
    /// Reads every installed GuestOS below `dir`. Unreadable or inconsistent entries are returned
    /// as (path, reason) next to the catalog instead of aborting the scan.
    pub fn scan(dir: &Path) -> (Catalog, Vec<(PathBuf, String)>) {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        let Ok(read) = fs::read_dir(dir) else {
            return (Catalog::default(), errors);
        };
        for entry in read.flatten() {
            let dirname = entry.file_name().to_string_lossy().into_owned();
            if dirname.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let conf = entry.path().join(format!("{dirname}.conf"));
            let loaded = fs::read(&conf)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|b| text::parse::<GuestOsConfig>(&b).map_err(|e| e.to_string()))
                .and_then(|c| {
                    if !valid_name(&c.name) {
                        Err(format!("invalid GuestOS name {:?}", c.name))
                    } else if format!("{}-{}", c.name, c.version) != dirname {
                        Err(format!(
                            "config names {}-{} but lives in {dirname}",
                            c.name, c.version
                        ))
                    } else {
                        Ok(c)
                    }
                });
            match loaded {
                Ok(config) => entries.push(GuestOs {
                    config,
                    dir: entry.path(),
                }),
                Err(e) => errors.push((conf, e)),
            }
        }
        entries.sort_by(|a, b| (&a.config.name, a.config.version).cmp(&(&b.config.name, b.config.version)));
        (Catalog { entries }, errors)
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
        let (cat, errors) = Catalog::scan(d.path());
        assert_eq!(cat.all().len(), 3);
        assert_eq!(cat.latest("busybox").unwrap().config.version, 3);
        assert!(cat.latest("nope").is_none());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn names_are_path_safe() {
        assert!(valid_name("debian-full_1.2"));
        for bad in ["", "..", ".x", "a/b", "-x", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
