//! The data directory: its layout, and atomic file writes.
//!
//! Every file the daemon writes goes through [`atomic_write`]: a uniquely named temporary file in
//! the same directory, written and fsynced, renamed over the target, then the directory fsynced. A
//! crash at any instant leaves the old file or the new one, never a torn one. Temporary files that a
//! crash left behind start with [`TMP_PREFIX`] and are removed by [`remove_stale_temps`].

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use uuid::Uuid;

/// Prefix of temporary files written by [`atomic_write`].
pub const TMP_PREFIX: &str = ".cml-tmp.";

/// A file operation on the data directory failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct StoreError {
    /// What was being done (e.g. "write", "remove").
    pub op: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl StoreError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Paths inside the data directory (SPEC §3).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data directory rooted at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// Creates the directory tree if missing (mode 0700 for the root and key/token dirs).
    pub fn create(&self) -> Result<(), StoreError> {
        for (dir, mode) in [
            (self.root.clone(), 0o700),
            (self.containers_dir(), 0o700),
            (self.guestos_dir(), 0o755),
            (self.tokens_dir(), 0o700),
            (self.keys_dir(), 0o700),
        ] {
            match fs::DirBuilder::new().mode(mode).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::new("create directory", &dir, e)),
            }
        }
        Ok(())
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `device.conf`.
    pub fn device_conf(&self) -> PathBuf {
        self.root.join("device.conf")
    }
    /// The provisioned marker.
    pub fn provisioned_marker(&self) -> PathBuf {
        self.root.join("provisioned")
    }
    /// `containers/`.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    /// `operatingsystems/`.
    pub fn guestos_dir(&self) -> PathBuf {
        self.root.join("operatingsystems")
    }
    /// `tokens/`.
    pub fn tokens_dir(&self) -> PathBuf {
        self.root.join("tokens")
    }
    /// `keys/`.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// `containers/<uuid>.conf`.
    pub fn container_conf(&self, uuid: &Uuid) -> PathBuf {
        self.containers_dir().join(format!("{uuid}.conf"))
    }
    /// `containers/<uuid>.<ext>` (sig, cert, created).
    pub fn container_file(&self, uuid: &Uuid, ext: &str) -> PathBuf {
        self.containers_dir().join(format!("{uuid}.{ext}"))
    }
    /// `containers/<uuid>/`, the per-container images.
    pub fn container_images(&self, uuid: &Uuid) -> PathBuf {
        self.containers_dir().join(uuid.to_string())
    }
    /// `keys/<uuid>.key`.
    pub fn container_key(&self, uuid: &Uuid) -> PathBuf {
        self.keys_dir().join(format!("{uuid}.key"))
    }

    /// Deletes the temporary files a crash left in every directory the daemon writes atomically
    /// (the root, `containers/`, `keys/`, `tokens/`, `tokens/ca/`). Only while nothing writes:
    /// at start-up, under the data directory lock. Returns how many were removed.
    pub fn remove_stale_temps(&self) -> usize {
        [
            self.root.clone(),
            self.containers_dir(),
            self.keys_dir(),
            self.tokens_dir(),
            self.tokens_dir().join("ca"),
        ]
        .iter()
        .map(|dir| remove_stale_temps(dir))
        .sum()
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn temp_path(path: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!("{TMP_PREFIX}{}.{n}.{name}", std::process::id()))
}

fn write_temp(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, StoreError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(StoreError::new("write", path, e))
        }
    }
}

/// Fsyncs a directory so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::new("sync directory", dir, e))
}

/// Writes `data` to `path` atomically (see the module documentation), with file mode `mode`.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<(), StoreError> {
    atomic_write_all(&[(path, data)], mode)
}

/// Writes several files of one directory atomically each, renaming them in the given order and
/// fsyncing the directory once. The last file is the commit point: a crash before its rename leaves
/// it absent (or old), whatever happened to the earlier ones.
pub fn atomic_write_all(files: &[(&Path, &[u8])], mode: u32) -> Result<(), StoreError> {
    let mut temps = Vec::with_capacity(files.len());
    for (path, data) in files {
        match write_temp(path, data, mode) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                temps.iter().for_each(|t| drop(fs::remove_file(t)));
                return Err(e);
            }
        }
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            temps[i..].iter().for_each(|t| drop(fs::remove_file(t)));
            return Err(StoreError::new("rename into place", path, e));
        }
        let dir = parent_of(path);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().try_for_each(sync_dir)
}

/// Removes a file; a file that does not exist is not an error.
pub fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::new("remove", path, e)),
    }
}

/// Removes a directory tree; a missing directory is not an error. Symlinks are removed, never
/// followed.
pub fn remove_tree_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::new("inspect", path, e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| StoreError::new("remove", path, e)),
        Ok(_) => remove_if_exists(path),
    }
}

/// Deletes temporary files a crash left behind in `dir`. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.conf");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_are_removed_from_every_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let data = DataDir::new(d.path());
        data.create().unwrap();
        let ca = data.tokens_dir().join("ca");
        fs::create_dir_all(&ca).unwrap();
        let dirs = [
            d.path().to_owned(),
            data.containers_dir(),
            data.keys_dir(),
            data.tokens_dir(),
            ca,
        ];
        for dir in &dirs {
            fs::write(dir.join(format!("{TMP_PREFIX}1.2.x")), b"half").unwrap();
        }
        fs::write(data.tokens_dir().join("device.p12"), b"keep").unwrap();
        assert_eq!(data.remove_stale_temps(), dirs.len());
        assert!(data.tokens_dir().join("device.p12").exists());
    }

    #[test]
    fn stale_temps_are_removed() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(format!("{TMP_PREFIX}1.2.x.conf")), b"half").unwrap();
        fs::write(d.path().join("keep.conf"), b"x").unwrap();
        assert_eq!(remove_stale_temps(d.path()), 1);
        assert!(d.path().join("keep.conf").exists());
    }
}
