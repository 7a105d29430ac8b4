//! Control groups for containers: detect which controller lives where, create a container's cgroup with
//! its limits, move processes in, freeze, kill and remove — one interface ([`ContainerCgroup`]) over a
//! v1 backend ([`v1`]) and a v2 backend ([`v2`]), used per controller.
//!
//! **Detection (SPEC §4.5b).** Per controller, from `/proc/self/mountinfo`: a controller mounted as a v1
//! hierarchy (`cgroup` mount whose super options name it) is used through v1. Otherwise it is used through
//! v2 when the cgroup2 root's `cgroup.controllers` lists it. A hybrid host (v1 controllers plus a cgroup2
//! mount at `/sys/fs/cgroup/unified` listing only `hugetlb`) therefore uses v1 for everything we need.
//! Two v2 "controllers" are never listed in `cgroup.controllers` because they are core features, not
//! controllers: the freezer (`cgroup.freeze`, every non-root cgroup, kernel ≥ 5.2) and the device filter
//! (an eBPF program, [`bpf`]). They count as v2 whenever a cgroup2 mount exists and they are not
//! mounted as v1.
//!
//! **Creation order.** mkdir each level of `<parent>` that is missing, then `<parent>/<name>`, then
//! write the limits, all before any task joins (details in [`v1`] and [`v2`]). A failed create removes
//! what that call created (container dirs, new parent levels) and returns the step, the file and the
//! errno. Removal retries `EBUSY` briefly: the last tasks of a killed container linger in the cgroup
//! for a moment after they are reaped.
//!
//! On this project's CI host (hybrid) the v2 backend runs in the VM lab (`scripts/vm-lab.sh`); its
//! file writes are also unit-tested against a temporary directory laid out like a cgroup2 mount. In
//! unit-test builds (`cfg(test)`) control files are created when missing, since a plain directory has
//! none; on cgroupfs the kernel provides them.

use std::{
    collections::HashMap,
    fmt, fs,
    io::{self, Write},
    path::{Path, PathBuf},
    str::FromStr,
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The controllers cml uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// RAM limit.
    Memory,
    /// CPU assignment.
    Cpuset,
    /// Process count limit.
    Pids,
    /// Device node access.
    Devices,
    /// Freeze / thaw.
    Freezer,
}

impl Controller {
    /// Every controller, in a fixed order.
    pub fn all() -> [Controller; 5] {
        [
            Controller::Memory,
            Controller::Cpuset,
            Controller::Pids,
            Controller::Devices,
            Controller::Freezer,
        ]
    }

    /// The kernel's name for it (`memory`, …).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
        }
    }

    /// Core v2 features that `cgroup.controllers` never lists.
    fn implicit_on_v2(self) -> bool {
        matches!(self, Controller::Devices | Controller::Freezer)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a controller is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// A v1 hierarchy mount, e.g. `/sys/fs/cgroup/memory`.
    V1(PathBuf),
    /// The cgroup2 mount root.
    V2(PathBuf),
}

impl Hierarchy {
    /// The mount point.
    pub fn path(&self) -> &Path {
        match self {
            Hierarchy::V1(p) | Hierarchy::V2(p) => p,
        }
    }
}

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("read /proc/self/mountinfo")]
    Mountinfo(#[source] io::Error),
    /// A cgroupfs operation failed.
    #[error("{step}: {path}")]
    Io {
        /// What was being done (`mkdir`, `write cpuset.cpus`, …).
        step: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause, with the errno.
        #[source]
        source: io::Error,
    },
    /// The kernel holds a different value than the one written.
    #[error("{path}: wrote {wrote}, kernel has {read}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What we wrote.
        wrote: String,
        /// What we read back.
        read: String,
    },
    /// The container directory already exists (a leftover: `open` and `remove` it first).
    #[error("cgroup {path} already exists")]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// The operation needs a controller this host does not have.
    #[error("no {0} controller on this host")]
    NoController(Controller),
    /// A value read from a control file is not what the kernel documents.
    #[error("{path}: unexpected content {content:?}")]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// Its content.
        content: String,
    },
    /// The device filter (cgroup v2 eBPF program) could not be installed.
    #[error(transparent)]
    Devices(#[from] BpfError),
    /// A device rule is malformed.
    #[error("invalid device rule {rule:?}: {reason}")]
    DeviceRule {
        /// The rule as given.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl CgroupError {
    /// The errno of a failed syscall, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } | CgroupError::Mountinfo(source) => source.raw_os_error(),
            CgroupError::Devices(e) => e.errno(),
            _ => None,
        }
    }
}

fn io_err(step: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        step: step.into(),
        path: path.to_path_buf(),
        source,
    }
}
pub mod bpf;
mod container;
mod devices;
mod layout;
pub mod v1;
pub mod v2;

pub use bpf::{
    AttachedProgram, BpfError, DEVICE_FILTER_NAME, Insn, apply_device_filter, device_filter_program,
    device_filters,
};
pub use container::{ContainerCgroup, GuestCgroup, Usage};
pub use devices::{DeviceRule, default_devices};
pub use layout::Layout;
pub use v2::favor_dynmods;

/// The limits a container's cgroup is created with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// RAM limit in bytes; None = unlimited.
    pub memory_bytes: Option<u64>,
    /// CPU list (`0-1`); None = the parent's.
    pub cpus: Option<String>,
    /// Maximum number of tasks; None = unlimited.
    pub pids_max: Option<u64>,
    /// The device allow-list, applied after denying everything: an empty list denies all devices, so
    /// callers start from [`default_devices`].
    pub devices: Vec<DeviceRule>,
}

/// Freezer state of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Running.
    Thawed,
    /// Freeze requested, not all tasks stopped yet.
    Freezing,
    /// All tasks stopped.
    Frozen,
}

/// Writes `value` to a control file with one write(2), as cgroupfs expects.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut f = fs::OpenOptions::new()
        .write(true)
        // See the module doc: a unit-test tempdir has no control files.
        .create(cfg!(test))
        .truncate(cfg!(test))
        .open(path)
        .map_err(|e| io_err(format!("open {name}"), path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| io_err(format!("write {name} {value:?}"), path, e))
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_err(format!("read {name}"), path, e))
}

/// The relative path components of a parent name (`cml` or `cml/containers`).
fn parent_levels(parent: &str) -> Vec<&str> {
    parent.split('/').filter(|s| !s.is_empty() && *s != ".").collect()
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// Writes a memory limit and checks the kernel kept it (modulo rounding down to a page).
fn write_memory(path: &Path, bytes: u64) -> Result<(), CgroupError> {
    write_file(path, &bytes.to_string())?;
    let read = read_file(path)?;
    let ok = read
        .parse::<u64>()
        .is_ok_and(|got| got <= bytes && bytes - got < page_size());
    if ok {
        Ok(())
    } else {
        Err(CgroupError::Mismatch {
            path: path.to_path_buf(),
            wrote: bytes.to_string(),
            read,
        })
    }
}

/// What one `create` call made, for the undo.
#[derive(Default)]
struct Created {
    dirs: Vec<PathBuf>,
}

impl Created {
    fn mkdir(&mut self, path: &Path, must_be_new: bool) -> Result<(), CgroupError> {
        match fs::create_dir(path) {
            Ok(()) => {
                self.dirs.push(path.to_path_buf());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if must_be_new {
                    Err(CgroupError::Exists {
                        path: path.to_path_buf(),
                    })
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(io_err("mkdir", path, e)),
        }
    }

    /// Removes what was created, deepest first; errors are logged, the create error is what matters.
    fn undo(self) {
        for dir in self.dirs.iter().rev() {
            if let Err(e) = rmdir_retry(dir) {
                tracing::warn!(error = %e, "cgroup cleanup after failed create");
            }
        }
    }
}

/// Removes a cgroup and the cgroups a guest made below it (deepest first); cgroupfs files go with
/// their directory.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    rmdir_retry(dir)
}

/// rmdir, retrying EBUSY for up to 100 ms; a missing directory is fine.
fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err("rmdir", dir, e)),
        }
    }
}
/// Removes `<hierarchy>/<parent>` (each level, deepest first) in every hierarchy when it has no children;
/// busy, non-empty or missing directories are left alone silently.
pub fn remove_parent_if_empty(layout: &Layout, parent: &str) {
    let levels = parent_levels(parent);
    let mut roots: Vec<&Path> = Controller::all()
        .iter()
        .filter_map(|c| layout.hierarchy(*c).map(Hierarchy::path))
        .chain(layout.v1_roots.iter().map(PathBuf::as_path))
        .collect();
    roots.dedup();
    let mut seen = Vec::new();
    for root in roots {
        if seen.contains(&root) {
            continue;
        }
        seen.push(root);
        for depth in (1..=levels.len()).rev() {
            let mut dir = root.to_path_buf();
            dir.extend(&levels[..depth]);
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTEMPTY | libc::EBUSY)
                    ) => {}
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "remove cgroup parent"),
            }
        }
    }
}
#[cfg(test)]
pub(crate) mod testdata {
    use super::Hierarchy;
    use std::path::PathBuf;

    /// A v1 hierarchy at `p`, as `Layout::hierarchy` returns it.
    pub fn v1(p: &str) -> Option<&'static Hierarchy> {
        Some(Box::leak(Box::new(Hierarchy::V1(PathBuf::from(p)))))
    }

    /// This CI host: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified listing only hugetlb.
    pub const HYBRID: &str = "\
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,mode=755
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A v2-only host (systemd's default since 247).
    pub const PURE_V2: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    /// v1 with co-mounted controllers and no devices hierarchy.
    pub const PURE_V1_COMOUNTED: &str = "\
30 22 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
31 22 0:27 / /sys/fs/cgroup/cpuset,memory rw shared:12 - cgroup cgroup rw,cpuset,memory
32 22 0:28 / /sys/fs/cgroup/pids rw shared:13 - cgroup cgroup rw,pids
33 22 0:29 / /sys/fs/cgroup/freezer rw shared:14 - cgroup cgroup rw,freezer
";
}
