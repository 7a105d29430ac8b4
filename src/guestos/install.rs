//! Installing a GuestOS version: fetch every shipped image from the update store, check its size and
//! SHA-256 while it streams, and move the complete set into place in one rename.
//!
//! Images are fetched from `<base>/operatingsystems/<hardware>/<name>-<version>/<image_file>.img`
//! (`file://` absolute paths, `http://`, `https://`) into a staging directory
//! `operatingsystems/.install-<name>-<version>-…` next to the store. Only when every image is
//! complete are the config, signature and certificate written there, everything fsynced, and the
//! directory renamed to `operatingsystems/<name>-<version>`. A failed or interrupted install leaves
//! at most a staging directory, which is deleted (and swept at daemon start); installed versions are
//! never touched.
//!
//! Progress is reported when an image starts, as its bytes arrive (see [`Throttle`]: every 1 % of
//! the total but at least 1 MiB, or every 100 ms, whichever comes first), and when it is complete
//! and verified; the last report has `done == total`.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use openssl::sha::Sha256;

use super::{image_mounts, stem};
use crate::{
    protocol::pb::GuestOsConfig,
    store::{self, StoreError},
};

/// Prefix of staging directories in the GuestOS store.
pub const STAGING_PREFIX: &str = ".install-";
/// Prefix of directories being removed.
pub const REMOVING_PREFIX: &str = ".remove-";

/// An installation that failed. Nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No usable base URL.
    #[error("{0}")]
    Url(String),
    /// An image could not be fetched.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// An image has the wrong size.
    #[error("image {image}: expected {expected} bytes, got {got}")]
    Size {
        /// The image file.
        image: String,
        /// `image_size` of the config.
        expected: u64,
        /// What arrived (at least).
        got: u64,
    },
    /// An image has the wrong hash.
    #[error("image {image}: SHA-256 {got} does not match the config's {expected}")]
    Hash {
        /// The image file.
        image: String,
        /// `image_sha2_256` of the config.
        expected: String,
        /// The hash of what arrived.
        got: String,
    },
    /// This version is installed already (a concurrent install won).
    #[error("{0} is already installed")]
    Exists(String),
    /// Writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Progress of an installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The image being fetched.
    pub image: String,
    /// Bytes of all images fetched so far.
    pub done: u64,
    /// Bytes of all images.
    pub total: u64,
}

/// Decides when the bytes fetched so far are worth a progress report: once `step` more bytes have
/// arrived since the last report (1 % of the total, at least 1 MiB), or once 100 ms have passed
/// (a slow download still moves). A local `file://` copy is fast enough that a timer alone
/// reported nothing between start and end.
#[derive(Debug)]
pub struct Throttle {
    step: u64,
    last_bytes: u64,
    last_time: Instant,
}

impl Throttle {
    /// Least number of bytes between two reports by size.
    pub const MIN_STEP: u64 = 1024 * 1024;
    /// Longest time between two reports while bytes arrive.
    pub const INTERVAL: Duration = Duration::from_millis(100);

    /// A throttle for an installation of `total` bytes, starting at `done`.
    pub fn new(total: u64, done: u64) -> Self {
        Throttle {
            step: (total / 100).max(Self::MIN_STEP),
            last_bytes: done,
            last_time: Instant::now(),
        }
    }

    /// Whether `done` bytes should be reported now (and if so, counts it as reported).
    pub fn due(&mut self, done: u64) -> bool {
        self.due_at(done, Instant::now())
    }

    fn due_at(&mut self, done: u64, now: Instant) -> bool {
        let by_size = done >= self.last_bytes.saturating_add(self.step);
        if by_size || now.saturating_duration_since(self.last_time) >= Self::INTERVAL {
            self.last_bytes = done;
            self.last_time = now;
            true
        } else {
            false
        }
    }
}

/// What to install.
pub struct Request<'a> {
    /// The GuestOS store (`operatingsystems/`).
    pub store: &'a Path,
    /// The parsed and validated config.
    pub config: &'a GuestOsConfig,
    /// The exact config bytes (what the signature covers).
    pub conf: &'a [u8],
    /// The signature file.
    pub sig: &'a [u8],
    /// The signer's certificate chain (PEM).
    pub cert: &'a [u8],
    /// The base URL of the update store.
    pub base_url: &'a str,
}

/// Checks that a base URL is one we fetch from: `file:///absolute`, `http://…`, `https://…`.
pub fn check_base_url(url: &str) -> Result<(), String> {
    if url.contains(['\0', '\n', '\r', ' ']) {
        return Err(format!(
            "update_base_url {url:?} contains whitespace or control characters"
        ));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "update_base_url {url:?}: file:// URLs must name an absolute path (file:///…)"
            ));
        }
        return Ok(());
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(format!(
        "update_base_url {url:?}: only file://, http:// and https:// are supported"
    ))
}

/// Sums the sizes of the images an installation fetches.
pub fn total_bytes(cfg: &GuestOsConfig) -> u64 {
    image_mounts(cfg).iter().map(|m| m.image_size.unwrap_or(0)).sum()
}

/// Installs a GuestOS version (blocking). Returns its directory.
pub fn install(req: &Request<'_>, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, InstallError> {
    check_base_url(req.base_url).map_err(InstallError::Url)?;
    let name = stem(req.config);
    let target = req.store.join(&name);
    if target.exists() {
        return Err(InstallError::Exists(name));
    }
    let staging = req.store.join(format!(
        "{STAGING_PREFIX}{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    fs::create_dir(&staging).map_err(|e| StoreError {
        op: "create",
        path: staging.clone(),
        source: e,
    })?;
    let result = fill_staging(req, &name, &staging, progress).and_then(|()| {
        // The rename is the commit point; a version installed meanwhile makes it fail (ENOTEMPTY).
        fs::rename(&staging, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => {
                InstallError::Exists(name.clone())
            }
            _ => StoreError {
                op: "rename into place",
                path: target.clone(),
                source: e,
            }
            .into(),
        })?;
        store::sync_dir(req.store)?;
        Ok(target.clone())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn fill_staging(
    req: &Request<'_>,
    name: &str,
    staging: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    let total = total_bytes(req.config);
    let mut done = 0u64;
    let base = req.base_url.trim_end_matches('/');
    for m in image_mounts(req.config) {
        let file = format!("{}.img", m.image_file);
        let url = format!("{base}/operatingsystems/{}/{name}/{file}", req.config.hardware);
        let expected = m.image_size.unwrap_or(0);
        let dest = staging.join(&file);
        let mut throttle = Throttle::new(total, done);
        progress(Progress {
            image: file.clone(),
            done,
            total,
        });
        let got = fetch(&url, &dest, expected, &mut |n| {
            if throttle.due(done + n) {
                progress(Progress {
                    image: file.clone(),
                    done: done + n,
                    total,
                });
            }
        })?;
        if got.len != expected {
            return Err(InstallError::Size {
                image: file,
                expected,
                got: got.len,
            });
        }
        let want = m.image_sha2_256.clone().unwrap_or_default().to_ascii_lowercase();
        if got.sha256 != want {
            return Err(InstallError::Hash {
                image: file,
                expected: want,
                got: got.sha256,
            });
        }
        done += got.len;
        progress(Progress {
            image: file,
            done,
            total,
        });
    }
    for (ext, bytes) in [("conf", req.conf), ("sig", req.sig), ("cert", req.cert)] {
        let path = staging.join(format!("{name}.{ext}"));
        write_synced(&path, bytes).map_err(|e| StoreError {
            op: "write",
            path,
            source: e,
        })?;
    }
    store::sync_dir(staging)?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

struct Fetched {
    len: u64,
    sha256: String,
}

/// Streams `url` into `dest`, hashing as it goes, never accepting more than `limit` bytes.
fn fetch(url: &str, dest: &Path, limit: u64, on_bytes: &mut dyn FnMut(u64)) -> Result<Fetched, InstallError> {
    let fail = |reason: String| InstallError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let mut reader: Box<dyn Read> = if let Some(path) = url.strip_prefix("file://") {
        Box::new(File::open(path).map_err(|e| fail(e.to_string()))?)
    } else {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .build()
            .into();
        let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
        Box::new(resp.into_body().into_reader())
    };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| {
            InstallError::Store(StoreError {
                op: "create",
                path: dest.to_owned(),
                source: e,
            })
        })?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("after {len} bytes: {e}"))),
        };
        len += n as u64;
        if len > limit {
            return Err(InstallError::Size {
                image: file_name(dest),
                expected: limit,
                got: len,
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| {
            InstallError::Store(StoreError {
                op: "write",
                path: dest.to_owned(),
                source: e,
            })
        })?;
        on_bytes(len);
    }
    out.sync_all().map_err(|e| {
        InstallError::Store(StoreError {
            op: "sync",
            path: dest.to_owned(),
            source: e,
        })
    })?;
    let sha256 = hasher.finish().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Fetched { len, sha256 })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Deletes staging and removal directories an interrupted daemon left in the store.
pub fn sweep(store: &Path) -> usize {
    let Ok(entries) = fs::read_dir(store) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(STAGING_PREFIX) || n.starts_with(REMOVING_PREFIX)
        })
        .filter(|e| store::remove_tree_if_exists(&e.path()).is_ok())
        .count()
}

/// Removes an installed version: renamed out of sight first (so a crash never leaves half a
/// GuestOS listed), then deleted.
pub fn remove(store: &Path, stem: &str) -> Result<(), StoreError> {
    let dir = store.join(stem);
    let doomed = store.join(format!("{REMOVING_PREFIX}{stem}-{}", std::process::id()));
    fs::rename(&dir, &doomed).map_err(|e| StoreError {
        op: "remove",
        path: dir.clone(),
        source: e,
    })?;
    store::sync_dir(store)?;
    store::remove_tree_if_exists(&doomed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text;

    fn sha(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        h.finish().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn setup(image: &[u8], claimed: &[u8]) -> (tempfile::TempDir, GuestOsConfig, String) {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src/operatingsystems/x86/g-1");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("root.img"), image).unwrap();
        fs::create_dir_all(d.path().join("store")).unwrap();
        let cfg: GuestOsConfig = text::parse(
            format!(
                "name: \"g\" hardware: \"x86\" version: 1 description {{ en: \"d\" }} mounts {{ image_file: \"root\" \
                 mount_point: \"/\" fs_type: \"squashfs\" mount_type: SHARED image_size: {} image_sha2_256: \"{}\" }}",
                claimed.len(),
                sha(claimed)
            )
            .as_bytes(),
        )
        .unwrap();
        let url = format!("file://{}", d.path().join("src").display());
        (d, cfg, url)
    }

    #[test]
    fn installs_atomically_and_reports_progress() {
        let (d, cfg, url) = setup(b"image bytes", b"image bytes");
        let store = d.path().join("store");
        let req = Request {
            store: &store,
            config: &cfg,
            conf: b"conf",
            sig: b"sig",
            cert: b"cert",
            base_url: &url,
        };
        let mut seen = Vec::new();
        let dir = install(&req, &mut |p| seen.push(p)).unwrap();
        assert_eq!(fs::read(dir.join("root.img")).unwrap(), b"image bytes");
        assert_eq!(fs::read(dir.join("g-1.conf")).unwrap(), b"conf");
        assert_eq!(seen.last().unwrap().done, 11);
        assert!(matches!(install(&req, &mut |_| {}), Err(InstallError::Exists(_))));
        assert_eq!(fs::read_dir(&store).unwrap().count(), 1, "no staging left");
    }

    #[test]
    fn progress_is_reported_as_bytes_arrive() {
        // 5 MiB: more than one size step (1 MiB), so reports fall between start and end.
        let image: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let (d, cfg, url) = setup(&image, &image);
        let store = d.path().join("store");
        let req = Request {
            store: &store,
            config: &cfg,
            conf: b"c",
            sig: b"",
            cert: b"",
            base_url: &url,
        };
        let mut seen = Vec::new();
        install(&req, &mut |p| seen.push(p.done)).unwrap();
        let total = image.len() as u64;
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&total));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        let between = seen.iter().filter(|&&b| b > 0 && b < total).count();
        assert!(between >= 4, "{seen:?}");
    }

    #[test]
    fn the_throttle_reports_by_size_or_time() {
        let mut t = Throttle::new(1000 * Throttle::MIN_STEP, 0);
        let start = t.last_time;
        let step = 10 * Throttle::MIN_STEP;
        assert_eq!(t.step, step);
        assert!(!t.due_at(1, start));
        assert!(t.due_at(step, start));
        assert!(!t.due_at(step + 1, start));
        assert!(t.due_at(step + 2, start + Throttle::INTERVAL));
        let mut small = Throttle::new(10, 0);
        assert_eq!(small.step, Throttle::MIN_STEP);
        assert!(!small.due_at(10, small.last_time));
    }

    #[test]
    fn wrong_hash_or_size_installs_nothing() {
        for (served, claimed) in [
            (&b"image bytez"[..], &b"image bytes"[..]),
            (b"image bytes and more", b"image bytes"),
        ] {
            let (d, cfg, url) = setup(served, claimed);
            let store = d.path().join("store");
            let req = Request {
                store: &store,
                config: &cfg,
                conf: b"c",
                sig: b"",
                cert: b"",
                base_url: &url,
            };
            let err = install(&req, &mut |_| {}).unwrap_err();
            if served.len() == claimed.len() {
                assert!(matches!(err, InstallError::Hash { .. }), "{err}");
            } else {
                assert!(matches!(err, InstallError::Size { .. }), "{err}");
            }
            assert_eq!(fs::read_dir(&store).unwrap().count(), 0);
        }
    }

    #[test]
    fn base_urls() {
        assert!(check_base_url("file:///srv/store").is_ok());
        assert!(check_base_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_base_url("file://relative/x").is_err());
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("http://x/\0").is_err());
    }

    #[test]
    fn sweep_and_remove() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(".install-g-1-2-3/x")).unwrap();
        fs::create_dir_all(d.path().join("g-1")).unwrap();
        assert_eq!(sweep(d.path()), 1);
        remove(d.path(), "g-1").unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
