//! Control groups for containers: detect which controller lives where, create a container's cgroup with
//! its limits, move processes in, freeze, kill and remove.
//!
//! **Detection (SPEC §4.5b).** Per controller, from `/proc/self/mountinfo`: a controller mounted as a v1
//! hierarchy (`cgroup` mount whose super options name it) is used through v1. Otherwise it is used through
//! v2 when the cgroup2 root's `cgroup.controllers` lists it. A hybrid host (v1 controllers plus a cgroup2
//! mount at `/sys/fs/cgroup/unified` listing only `hugetlb`) therefore uses v1 for everything we need.
//! Two v2 "controllers" are never listed in `cgroup.controllers` because they are core features, not
//! controllers: the freezer (`cgroup.freeze`, every non-root cgroup, kernel ≥ 5.2) and the device filter
//! (eBPF). They count as v2 whenever a cgroup2 mount exists and they are not mounted as v1.
//!
//! **Creation order.** Per hierarchy: mkdir each level of `<parent>` that is missing, then
//! `<parent>/<name>`, then write the limits, all before any task joins:
//! - v1 cpuset: a cgroup without `cpuset.cpus` and `cpuset.mems` refuses tasks (`ENOSPC`), and a child's
//!   values must be a subset of its parent's, so each new parent level copies its parent's values and the
//!   container gets `cpus` (or the parent's) plus the parent's mems.
//! - v1 devices: `a` to `devices.deny` first (allowed only while the cgroup has no children), then the
//!   rules in order (allow → `devices.allow`, deny → `devices.deny`).
//! - v1 memory: `memory.limit_in_bytes`, read back (the kernel rounds down to a page).
//! - v2: one directory; the needed controllers are enabled with `+ctrl` in `cgroup.subtree_control` of
//!   the root and of every parent level (top-down: a level may only enable what its parent enabled), then
//!   `memory.max`, `cpuset.cpus`, `pids.max`. Devices are not enforced on v2 (needs an eBPF program): the
//!   caller logs [`v2_devices_not_enforced`].
//!
//! A failed create removes what that call created (container dirs, new parent levels) and returns the
//! step, the file and the errno. Removal retries `EBUSY` briefly: the last tasks of a killed container
//! linger in the cgroup for a moment after they are reaped.
//!
//! The v2 path cannot run on the hybrid CI host; its file writes are unit-tested against a temporary
//! directory laid out like a cgroup2 mount. In unit-test builds (`cfg(test)`) control files are created
//! when missing, since a plain directory has none; on cgroupfs the kernel provides them.

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

mod bpf;
mod devices;
mod layout;

pub use bpf::{
    AttachedProgram, BpfError, DEVICE_FILTER_NAME, Insn, apply_device_filter, device_filter_program,
    device_filters,
};
pub use devices::{DeviceRule, default_devices};
pub use layout::Layout;

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

/// A container's cgroup: one directory per v1 hierarchy used, or one v2 directory (or both on a hybrid
/// host that splits controllers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The distinct directories, in creation order.
    dirs: Vec<PathBuf>,
    /// Controller → (its directory, whether it is v2).
    by_controller: HashMap<Controller, (PathBuf, bool)>,
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

/// One hierarchy as a guest sees it below its `/sys/fs/cgroup` (see [`ContainerCgroup::guest_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCgroup {
    /// Directory name below `/sys/fs/cgroup` (empty: `/sys/fs/cgroup` itself).
    pub name: String,
    /// The container's cgroup directory on the host.
    pub dir: PathBuf,
    /// The guest may create cgroups and move its processes there.
    pub writable: bool,
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

impl ContainerCgroup {
    /// The container's paths in every hierarchy, without touching the file system.
    pub fn open(layout: &Layout, parent: &str, name: &str) -> ContainerCgroup {
        let mut cg = ContainerCgroup {
            dirs: Vec::new(),
            by_controller: HashMap::new(),
        };
        for c in Controller::all() {
            let Some(h) = layout.hierarchy(c) else { continue };
            let mut dir = h.path().to_path_buf();
            for level in parent_levels(parent) {
                dir.push(level);
            }
            dir.push(name);
            if !cg.dirs.contains(&dir) {
                cg.dirs.push(dir.clone());
            }
            cg.by_controller.insert(c, (dir, matches!(h, Hierarchy::V2(_))));
        }
        for root in &layout.v1_roots {
            let mut dir = root.clone();
            dir.extend(parent_levels(parent));
            dir.push(name);
            if !cg.dirs.contains(&dir) {
                cg.dirs.push(dir);
            }
        }
        cg
    }

    /// Creates `<hierarchy>/<parent>/<name>` for every controller this host has and applies `limits`.
    /// On error, removes what it created and returns the error.
    pub fn create(
        layout: &Layout,
        parent: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<ContainerCgroup, CgroupError> {
        let cg = ContainerCgroup::open(layout, parent, name);
        let mut created = Created::default();
        match cg.setup(layout, parent, limits, &mut created) {
            Ok(()) => {
                tracing::debug!(dirs = ?cg.dirs, "cgroup created");
                Ok(cg)
            }
            Err(e) => {
                created.undo();
                Err(e)
            }
        }
    }

    fn setup(
        &self,
        layout: &Layout,
        parent: &str,
        limits: &Limits,
        created: &mut Created,
    ) -> Result<(), CgroupError> {
        let levels = parent_levels(parent);
        // v1: one pass per hierarchy (also those without a controller of ours: see `Layout`).
        for root in &layout.v1_roots {
            let on_this = |x: Controller| layout.hierarchy(x) == Some(&Hierarchy::V1(root.clone()));
            let mut dir = root.clone();
            for level in &levels {
                let up = dir.clone();
                dir.push(level);
                created.mkdir(&dir, false)?;
                if on_this(Controller::Cpuset) {
                    copy_cpuset_if_empty(&up, &dir)?;
                }
            }
            let parent_dir = dir.clone();
            let Some(leaf) = self.dirs.iter().find(|d| d.starts_with(root)).cloned() else {
                continue;
            };
            created.mkdir(&leaf, true)?;
            if on_this(Controller::Cpuset) {
                match &limits.cpus {
                    Some(cpus) => write_file(&leaf.join("cpuset.cpus"), cpus)?,
                    None => copy_file(&parent_dir, &leaf, "cpuset.cpus")?,
                }
                copy_file(&parent_dir, &leaf, "cpuset.mems")?;
            }
            if on_this(Controller::Memory) {
                if let Some(bytes) = limits.memory_bytes {
                    write_memory(&leaf.join("memory.limit_in_bytes"), bytes)?;
                }
            }
            if on_this(Controller::Pids) {
                if let Some(max) = limits.pids_max {
                    write_file(&leaf.join("pids.max"), &max.to_string())?;
                }
            }
            if on_this(Controller::Devices) {
                write_file(&leaf.join("devices.deny"), "a")?;
                for rule in &limits.devices {
                    let file = if rule.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write_file(&leaf.join(file), &rule.to_v1())?;
                }
            }
        }
        // v2: one directory for everything that is v2.
        if let Some(root) = layout.v2_root() {
            let v2: Vec<Controller> = Controller::all()
                .into_iter()
                .filter(|c| matches!(layout.hierarchy(*c), Some(Hierarchy::V2(_))))
                .collect();
            if !v2.is_empty() {
                self.setup_v2(root, &levels, &v2, limits, created)?;
            }
        }
        Ok(())
    }

    fn setup_v2(
        &self,
        root: &Path,
        levels: &[&str],
        v2: &[Controller],
        limits: &Limits,
        created: &mut Created,
    ) -> Result<(), CgroupError> {
        let enable: Vec<String> = v2
            .iter()
            .filter(|c| !c.implicit_on_v2())
            .map(|c| format!("+{}", c.name()))
            .collect();
        let enable = enable.join(" ");
        let mut dir = root.to_path_buf();
        if !enable.is_empty() {
            write_file(&dir.join("cgroup.subtree_control"), &enable)?;
        }
        for level in levels {
            dir.push(level);
            created.mkdir(&dir, false)?;
            if !enable.is_empty() {
                write_file(&dir.join("cgroup.subtree_control"), &enable)?;
            }
        }
        let Some((leaf, _)) = self.by_controller.values().find(|(_, is_v2)| *is_v2) else {
            return Ok(());
        };
        created.mkdir(leaf, true)?;
        if v2.contains(&Controller::Cpuset) {
            if let Some(cpus) = &limits.cpus {
                write_file(&leaf.join("cpuset.cpus"), cpus)?;
            }
        }
        if v2.contains(&Controller::Memory) {
            if let Some(bytes) = limits.memory_bytes {
                write_memory(&leaf.join("memory.max"), bytes)?;
            }
        }
        if v2.contains(&Controller::Pids) {
            if let Some(max) = limits.pids_max {
                write_file(&leaf.join("pids.max"), &max.to_string())?;
            }
        }
        // Devices on v2 need an eBPF program: not enforced (the caller logs v2_devices_not_enforced).
        Ok(())
    }

    /// Each directory's `cgroup.procs`.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The distinct directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// What a guest's `/sys/fs/cgroup` shows: for each hierarchy, the name of its directory there
    /// (the host's mount point name; empty for the single tree of a host without v1 hierarchies),
    /// the container's directory in it, and whether the guest may write it — only the hierarchy
    /// its init manages: `name=systemd` on a v1 host (the controllers' limits stay read-only, as
    /// systemd-nspawn does), or the container's delegated cgroup2 directory on a v2-only host.
    pub fn guest_view(&self, layout: &Layout) -> Vec<GuestCgroup> {
        let mut out = Vec::new();
        for root in &layout.v1_roots {
            let Some(dir) = self.dirs.iter().find(|d| d.starts_with(root)) else {
                continue;
            };
            out.push(GuestCgroup {
                name: root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                dir: dir.clone(),
                writable: layout.v1_systemd.as_ref() == Some(root),
            });
        }
        if let Some((dir, _)) = self.by_controller.values().find(|(_, v2)| *v2) {
            out.push(GuestCgroup {
                name: if layout.v1_roots.is_empty() {
                    String::new()
                } else {
                    "unified".into()
                },
                dir: dir.clone(),
                writable: true,
            });
        }
        out
    }

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for f in self.procs_files() {
            write_file(&f, &pid.to_string())?;
        }
        Ok(())
    }

    fn freezer(&self) -> Result<(&Path, bool), CgroupError> {
        self.by_controller
            .get(&Controller::Freezer)
            .map(|(d, v2)| (d.as_path(), *v2))
            .ok_or(CgroupError::NoController(Controller::Freezer))
    }

    /// Adds one device rule to a live cgroup (v1 `devices.allow` / `devices.deny`). On v2 the
    /// device controller is not enforced: returns [`CgroupError::NoController`].
    pub fn apply_device_rule(&self, rule: &DeviceRule) -> Result<(), CgroupError> {
        match self.by_controller.get(&Controller::Devices) {
            Some((dir, false)) => {
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&dir.join(file), &rule.to_v1())
            }
            _ => Err(CgroupError::NoController(Controller::Devices)),
        }
    }

    /// The device rules in effect (v1 `devices.list`), one per line.
    pub fn device_list(&self) -> Result<String, CgroupError> {
        match self.by_controller.get(&Controller::Devices) {
            Some((dir, false)) => read_file(&dir.join("devices.list")),
            _ => Err(CgroupError::NoController(Controller::Devices)),
        }
    }

    /// Requests a freeze; poll [`freezer_state`](Self::freezer_state) for `Frozen`.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (dir, false) => write_file(&dir.join("freezer.state"), "FROZEN"),
            (dir, true) => write_file(&dir.join("cgroup.freeze"), "1"),
        }
    }

    /// Thaws.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (dir, false) => write_file(&dir.join("freezer.state"), "THAWED"),
            (dir, true) => write_file(&dir.join("cgroup.freeze"), "0"),
        }
    }

    /// The current freezer state.
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match self.freezer()? {
            (dir, false) => {
                let path = dir.join("freezer.state");
                match read_file(&path)?.as_str() {
                    "THAWED" => Ok(FreezerState::Thawed),
                    "FREEZING" => Ok(FreezerState::Freezing),
                    "FROZEN" => Ok(FreezerState::Frozen),
                    other => Err(CgroupError::Unexpected {
                        path,
                        content: other.to_string(),
                    }),
                }
            }
            (dir, true) => {
                let events = read_file(&dir.join("cgroup.events"))?;
                if events.lines().any(|l| l.trim() == "frozen 1") {
                    return Ok(FreezerState::Frozen);
                }
                if read_file(&dir.join("cgroup.freeze"))? == "1" {
                    Ok(FreezerState::Freezing)
                } else {
                    Ok(FreezerState::Thawed)
                }
            }
        }
    }

    /// The processes in the cgroup (union over all directories, sorted); unreadable files count as empty.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| fs::read_to_string(f).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup (v2: `cgroup.kill` when the kernel has it). Does not wait;
    /// a few rounds catch children forked while signalling. A frozen cgroup is thawed afterwards so the
    /// killed tasks can die.
    pub fn kill_all(&self) {
        let kill_file = self
            .by_controller
            .values()
            .find(|(_, v2)| *v2)
            .map(|(d, _)| d.join("cgroup.kill"))
            .filter(|f| f.exists());
        if let Some(f) = kill_file {
            match write_file(&f, "1") {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "cgroup.kill failed, signalling each pid"),
            }
        }
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => tracing::warn!(pid, error = %e, "kill"),
                }
            }
        }
        if matches!(
            self.freezer_state(),
            Ok(FreezerState::Frozen | FreezerState::Freezing)
        ) {
            if let Err(e) = self.thaw() {
                tracing::warn!(error = %e, "thaw after kill");
            }
        }
    }

    /// Removes every directory (retrying `EBUSY` for up to 100 ms each). Tries all and returns the first
    /// error; directories that are already gone are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs.iter().rev() {
            if let Err(e) = rmdir_tree(dir) {
                tracing::warn!(error = %e, "cgroup remove");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn copy_file(from_dir: &Path, to_dir: &Path, name: &str) -> Result<(), CgroupError> {
    let value = read_file(&from_dir.join(name))?;
    write_file(&to_dir.join(name), &value)
}

/// A v1 cpuset directory with empty `cpuset.cpus`/`cpuset.mems` gets its parent's values.
fn copy_cpuset_if_empty(up: &Path, dir: &Path) -> Result<(), CgroupError> {
    for name in ["cpuset.cpus", "cpuset.mems"] {
        if read_file(&dir.join(name))?.is_empty() {
            copy_file(up, dir, name)?;
        }
    }
    Ok(())
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

/// The message the daemon logs once on a host whose devices controller is v2.
pub fn v2_devices_not_enforced() -> &'static str {
    "the devices controller is cgroup v2 on this host: device access rules need an eBPF program, \
     which cml does not implement; container device rules are NOT enforced by the cgroup \
     (only the nodes created in the container's /dev limit access)"
}

/// Remounts every cgroup2 mount of the host with `favordynmods` (device.conf
/// `cgroup_favordynmods`): the kernel then keeps its cgroup threadgroup lock out of the RCU fast
/// path, so the first attach after idle does not wait for a grace period (about 10 ms, measured on
/// this project's hosts). Host-wide, and only a reboot undoes it — hence the warning in the log.
/// Failures are logged, not fatal.
pub fn favor_dynmods() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] != "cgroup2" {
            continue;
        }
        if f[3].split(',').any(|o| o == "favordynmods") {
            tracing::info!(mount = f[1], "cgroup2 mount already has favordynmods");
            continue;
        }
        // A remount resets what it is not given: keep the mount's flags and the file system's
        // options (e.g. nsdelegate), as `mount -o remount,favordynmods` does.
        use nix::mount::MsFlags;
        let mut flags = MsFlags::MS_REMOUNT;
        for o in f[3].split(',') {
            flags |= match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        let data = format!("{},favordynmods", f[3]);
        let done = nix::mount::mount(None::<&str>, f[1], None::<&str>, flags, Some(data.as_str()));
        match done {
            Ok(()) => tracing::warn!(
                mount = f[1],
                "remounted the host's cgroup2 mount with favordynmods (device.conf cgroup_favordynmods): host-wide, until the next reboot"
            ),
            Err(e) => tracing::warn!(mount = f[1], error = %e, "cannot remount cgroup2 with favordynmods"),
        }
    }
}

/// Starts the cgroup attach lock's RCU grace period early, off the start's critical path.
///
/// Moving a process between cgroups takes the kernel's global cgroup threadgroup lock for writing;
/// the first writer after idle waits for an RCU grace period (about 10 ms here) before it gets the
/// lock, and writers shortly after it do not. A start calls this (from a blocking thread) as soon
/// as the request arrives: it moves the calling process into the cgroup it already is in, in one
/// v1 hierarchy — a no-op that pays the grace period — while the daemon prepares and the monitor
/// clones and mounts; the monitor's real attach then finds the lock's fast path ready. Nothing to
/// do on a v2-only host (where `CLONE_INTO_CGROUP` could avoid the attach altogether).
pub fn warm_attach_lock(layout: &Layout) {
    let Some(Hierarchy::V1(root)) = [Controller::Freezer, Controller::Pids, Controller::Memory]
        .iter()
        .find_map(|c| layout.hierarchy(*c).filter(|h| matches!(h, Hierarchy::V1(_))))
    else {
        return;
    };
    let Some(ctrl) = root.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == ctrl)
            .then(|| path.trim_start_matches('/').to_owned())
    }) else {
        return;
    };
    let procs = root.join(path).join("cgroup.procs");
    // Only where that file lists us (a cgroup namespace could make the path lie): then moving
    // there changes nothing.
    let me = std::process::id().to_string();
    if fs::read_to_string(&procs).is_ok_and(|t| t.lines().any(|l| l == me)) {
        let _ = fs::write(&procs, "0");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// This CI host: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified listing only hugetlb.
    const HYBRID: &str = "\
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

    const PURE_V2: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    const PURE_V1_COMOUNTED: &str = "\
30 22 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
31 22 0:27 / /sys/fs/cgroup/cpuset,memory rw shared:12 - cgroup cgroup rw,cpuset,memory
32 22 0:28 / /sys/fs/cgroup/pids rw shared:13 - cgroup cgroup rw,pids
33 22 0:29 / /sys/fs/cgroup/freezer rw shared:14 - cgroup cgroup rw,freezer
";

    fn v1(p: &str) -> Option<&Hierarchy> {
        Some(Box::leak(Box::new(Hierarchy::V1(PathBuf::from(p)))))
    }

    #[test]
    fn hybrid_host_uses_v1_for_everything() {
        let seen = std::cell::RefCell::new(Vec::new());
        let l = Layout::from_mountinfo(HYBRID, |root| {
            seen.borrow_mut().push(root.to_path_buf());
            Some("hugetlb\n".into())
        });
        assert_eq!(seen.into_inner(), vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(l.v2_root(), Some(Path::new("/sys/fs/cgroup/unified")));
        for c in Controller::all() {
            let expect = format!("/sys/fs/cgroup/{}", c.name());
            assert_eq!(l.hierarchy(c), v1(&expect), "{c}");
        }
        assert_eq!(l.describe(), "memory=v1 cpuset=v1 pids=v1 devices=v1 freezer=v1");
    }

    #[test]
    fn hybrid_host_would_use_v2_for_a_controller_only_on_v2() {
        // Same host, but memory not mounted as v1 and enabled in the v2 root.
        let mi: String = HYBRID
            .lines()
            .filter(|l| !l.contains("rw,memory"))
            .map(|l| format!("{l}\n"))
            .collect();
        let l = Layout::from_mountinfo(&mi, |_| Some("hugetlb memory".into()));
        assert_eq!(
            l.hierarchy(Controller::Memory),
            Some(&Hierarchy::V2("/sys/fs/cgroup/unified".into()))
        );
        assert_eq!(l.hierarchy(Controller::Pids), v1("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn pure_v2() {
        let l = Layout::from_mountinfo(PURE_V2, |_| {
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
        });
        for c in Controller::all() {
            assert_eq!(
                l.hierarchy(c),
                Some(&Hierarchy::V2("/sys/fs/cgroup".into())),
                "{c}"
            );
        }
        assert_eq!(l.describe(), "memory=v2 cpuset=v2 pids=v2 devices=v2 freezer=v2");
    }

    #[test]
    fn v2_controller_not_enabled_is_missing() {
        let l = Layout::from_mountinfo(PURE_V2, |_| Some("cpu memory".into()));
        assert_eq!(l.hierarchy(Controller::Cpuset), None);
        assert_eq!(l.hierarchy(Controller::Pids), None);
        assert_eq!(
            l.describe(),
            "memory=v2 cpuset=missing pids=missing devices=v2 freezer=v2"
        );
    }

    #[test]
    fn pure_v1_comounted_and_missing_devices() {
        let l = Layout::from_mountinfo(PURE_V1_COMOUNTED, |_| panic!("no v2 mount"));
        assert_eq!(
            l.hierarchy(Controller::Memory),
            v1("/sys/fs/cgroup/cpuset,memory")
        );
        assert_eq!(
            l.hierarchy(Controller::Cpuset),
            v1("/sys/fs/cgroup/cpuset,memory")
        );
        assert_eq!(l.hierarchy(Controller::Devices), None);
        assert_eq!(l.v2_root(), None);
        assert_eq!(
            l.describe(),
            "memory=v1 cpuset=v1 pids=v1 devices=missing freezer=v1"
        );
        // One directory for the co-mounted pair; one in cpu,cpuacct too, which holds none of ours.
        let cg = ContainerCgroup::open(&l, "cml", "c1");
        assert_eq!(cg.dirs().len(), 4);
        assert!(
            cg.dirs()
                .contains(&PathBuf::from("/sys/fs/cgroup/cpuset,memory/cml/c1"))
        );
        assert!(
            cg.dirs()
                .contains(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/cml/c1"))
        );
        // Without a name=systemd hierarchy the guest may write none of them.
        let view = cg.guest_view(&l);
        assert_eq!(view.len(), 4);
        assert!(view.iter().all(|g| !g.writable));
        assert!(view.iter().any(|g| g.name == "cpu,cpuacct"));
    }

    #[test]
    fn subtree_mounts_are_ignored_and_paths_unescaped() {
        let mi = "\
40 31 0:37 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory
42 31 0:39 / /mnt/odd\\777 rw - cgroup cgroup rw,pids
";
        let l = Layout::from_mountinfo(mi, |_| None);
        assert_eq!(l.hierarchy(Controller::Memory), v1("/mnt/my cgroups"));
        assert_eq!(l.hierarchy(Controller::Pids), v1("/mnt/odd\\777"));
    }

    #[test]
    fn open_paths() {
        let l = Layout::from_mountinfo(HYBRID, |_| Some("hugetlb".into()));
        let cg = ContainerCgroup::open(&l, "cml/containers", "x");
        // The five controllers' hierarchies, then cpu, cpuacct, blkio and name=systemd.
        assert_eq!(cg.dirs().len(), 9);
        assert_eq!(
            cg.dirs()[0],
            PathBuf::from("/sys/fs/cgroup/memory/cml/containers/x")
        );
        assert_eq!(
            cg.procs_files()[4],
            PathBuf::from("/sys/fs/cgroup/freezer/cml/containers/x/cgroup.procs")
        );
        assert!(
            cg.dirs()
                .contains(&PathBuf::from("/sys/fs/cgroup/systemd/cml/containers/x"))
        );
        // The guest sees each hierarchy under its host name; only name=systemd is writable, and
        // the cgroup2 mount (holding none of ours) is not shown.
        let view = cg.guest_view(&l);
        assert_eq!(view.len(), 9);
        let writable: Vec<&str> = view
            .iter()
            .filter(|g| g.writable)
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(writable, ["systemd"]);
        assert!(!view.iter().any(|g| g.name == "unified"));
    }

    #[test]
    fn a_pure_v2_host_delegates_the_single_tree() {
        let l = Layout::from_mountinfo(PURE_V2, |_| Some("cpuset cpu memory pids".into()));
        let cg = ContainerCgroup::open(&l, "cml", "x");
        let view = cg.guest_view(&l);
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].name, "");
        assert!(view[0].writable);
    }

    #[test]
    fn device_rules_parse() {
        let r: DeviceRule = "c 116:* rw".parse().unwrap();
        assert_eq!(
            r,
            DeviceRule {
                allow: true,
                kind: 'c',
                major: Some(116),
                minor: None,
                access: "rw".into()
            }
        );
        assert_eq!(r.to_v1(), "c 116:* rw");
        let r: DeviceRule = "deny b 8:0 rwm".parse().unwrap();
        assert!(!r.allow);
        assert_eq!(r.to_v1(), "b 8:0 rwm");
        assert_eq!(r.to_string(), "deny b 8:0 rwm");
        assert_eq!("  c *:*   m ".parse::<DeviceRule>().unwrap().to_v1(), "c *:* m");
        assert_eq!("a *:* rwm".parse::<DeviceRule>().unwrap().to_v1(), "a *:* rwm");
        for bad in [
            "",
            "deny",
            "c 116 rw",
            "x 1:3 rw",
            "c 1:3",
            "c 1:3 rwx",
            "c 1:3 rr",
            "c a:3 r",
            "c -1:3 r",
            "c 1:3 r extra",
            "allow c 1:3 r",
            "c 99999999999:1 r",
            "a 1:3 rwm",
            "deny deny c 1:3 r",
        ] {
            let err = bad.parse::<DeviceRule>().unwrap_err();
            assert!(matches!(err, CgroupError::DeviceRule { .. }), "{bad}");
            assert!(err.to_string().contains("invalid device rule"), "{err}");
        }
    }

    #[test]
    fn default_devices_are_the_safe_set() {
        let v1: Vec<String> = default_devices().iter().map(DeviceRule::to_v1).collect();
        assert_eq!(
            v1,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:229 rwm",
                "c 10:200 rwm"
            ]
        );
        assert!(default_devices().iter().all(|r| r.allow));
    }

    fn v2_tempdir_layout(controllers: &'static str) -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let mi = format!(
            "25 22 0:24 / {} rw,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            tmp.path().display()
        );
        let l = Layout::from_mountinfo(&mi, |_| Some(controllers.to_string()));
        (tmp, l)
    }

    #[test]
    fn v2_create_writes_limits_into_one_dir() {
        let (tmp, l) = v2_tempdir_layout("cpuset cpu io memory pids");
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpus: Some("0-1".into()),
            pids_max: Some(50),
            devices: default_devices(),
        };
        let cg = ContainerCgroup::create(&l, "cml", "c1", &limits).unwrap();
        let root = tmp.path();
        let leaf = root.join("cml/c1");
        assert_eq!(cg.dirs(), std::slice::from_ref(&leaf));
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&root.join("cgroup.subtree_control")),
            "+memory +cpuset +pids"
        );
        assert_eq!(
            read(&root.join("cml/cgroup.subtree_control")),
            "+memory +cpuset +pids"
        );
        assert_eq!(read(&leaf.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&leaf.join("cpuset.cpus")), "0-1");
        assert_eq!(read(&leaf.join("pids.max")), "50");
        // No v1 files, no devices files on v2.
        assert!(!leaf.join("devices.allow").exists());
        assert!(!leaf.join("memory.limit_in_bytes").exists());

        cg.attach(1234).unwrap();
        assert_eq!(read(&leaf.join("cgroup.procs")), "1234");
        assert_eq!(cg.pids(), vec![1234]);

        cg.freeze().unwrap();
        assert_eq!(read(&leaf.join("cgroup.freeze")), "1");
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Freezing);
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
        cg.thaw().unwrap();
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(read(&leaf.join("cgroup.freeze")), "0");
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

        // A second create of the same container refuses (leftover must be removed first).
        let err = ContainerCgroup::create(&l, "cml", "c1", &limits).unwrap_err();
        assert!(matches!(err, CgroupError::Exists { .. }), "{err}");
    }

    #[test]
    fn v2_without_limits_writes_no_limit_files() {
        let (tmp, l) = v2_tempdir_layout("memory pids");
        let cg = ContainerCgroup::create(&l, "p", "c", &Limits::default()).unwrap();
        let leaf = tmp.path().join("p/c");
        assert_eq!(cg.dirs(), std::slice::from_ref(&leaf));
        assert_eq!(fs::read_dir(&leaf).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        cg.remove().unwrap();
        assert!(!leaf.exists());
        // A real cgroupfs directory's control files vanish with it; the tempdir's do not.
        fs::remove_file(tmp.path().join("p/cgroup.subtree_control")).unwrap();
        remove_parent_if_empty(&l, "p");
        assert!(!tmp.path().join("p").exists());
    }

    #[test]
    fn v2_failed_create_removes_what_it_created() {
        let (tmp, l) = v2_tempdir_layout("memory");
        let leaf = tmp.path().join("p/c");
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            ..Limits::default()
        };
        // Pre-create nothing; make the subtree_control of the root a directory so the first write fails.
        fs::create_dir(tmp.path().join("cgroup.subtree_control")).unwrap();
        let err = ContainerCgroup::create(&l, "p", "c", &limits).unwrap_err();
        assert!(err.to_string().contains("cgroup.subtree_control"), "{err}");
        assert!(err.errno().is_some());
        assert!(!leaf.exists());
        assert!(!tmp.path().join("p").exists());
    }

    #[test]
    fn freeze_without_freezer_is_an_error() {
        let l = Layout::from_mountinfo(
            "32 22 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
            |_| None,
        );
        let cg = ContainerCgroup::open(&l, "cml", "c");
        let err = cg.freeze().unwrap_err();
        assert_eq!(err.to_string(), "no freezer controller on this host");
    }
}
