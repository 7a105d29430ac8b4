//! A container's cgroup: one interface over the v1 and v2 backends, chosen per controller by the
//! host's [`Layout`].

#[allow(clippy::wildcard_imports)]
use super::*;

/// A container's cgroup: one directory per v1 hierarchy used, or one v2 directory (or both on a hybrid
/// host that splits controllers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The distinct directories, in creation order.
    dirs: Vec<PathBuf>,
    /// Controller → (its directory, whether it is v2).
    by_controller: HashMap<Controller, (PathBuf, bool)>,
    /// The v2 directory, when some controller of ours is on v2.
    v2_dir: Option<PathBuf>,
    /// The directory in the v1 `cpuacct` hierarchy, if the host has one.
    cpuacct_dir: Option<PathBuf>,
}

/// What a container's cgroup uses right now (see [`ContainerCgroup::usage`]); a figure the host
/// does not count (no such controller, unreadable file) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory charged to the cgroup, in bytes (page cache included, as the kernel counts it).
    pub memory_bytes: Option<u64>,
    /// CPU time of all its tasks so far, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Its tasks (threads included) right now.
    pub pids: Option<u32>,
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

impl ContainerCgroup {
    /// The container's paths in every hierarchy, without touching the file system.
    pub fn open(layout: &Layout, parent: &str, name: &str) -> ContainerCgroup {
        let mut cg = ContainerCgroup {
            dirs: Vec::new(),
            by_controller: HashMap::new(),
            v2_dir: None,
            cpuacct_dir: None,
        };
        for c in Controller::all() {
            let Some(h) = layout.hierarchy(c) else { continue };
            let mut dir = h.path().to_path_buf();
            dir.extend(parent_levels(parent));
            dir.push(name);
            if !cg.dirs.contains(&dir) {
                cg.dirs.push(dir.clone());
            }
            let v2 = matches!(h, Hierarchy::V2(_));
            if v2 {
                cg.v2_dir = Some(dir.clone());
            }
            cg.by_controller.insert(c, (dir, v2));
        }
        for root in &layout.v1_roots {
            let mut dir = root.clone();
            dir.extend(parent_levels(parent));
            dir.push(name);
            if layout.v1_cpuacct.as_ref() == Some(root) {
                cg.cpuacct_dir = Some(dir.clone());
            }
            if !cg.dirs.contains(&dir) {
                cg.dirs.push(dir);
            }
        }
        cg
    }

    /// Memory, CPU time and task count, read from at most three small control files (this runs
    /// for every status request of a running container): v1 `memory.usage_in_bytes`,
    /// `cpuacct.usage` (ns) and `pids.current`; v2 `memory.current`, `cpu.stat` `usage_usec`
    /// (present in every cgroup2 directory, with or without the cpu controller) and
    /// `pids.current`. Whatever cannot be read is `None`.
    pub fn usage(&self) -> Usage {
        let number = |path: PathBuf| read_file(&path).ok().and_then(|s| s.parse::<u64>().ok());
        let memory_bytes = self.by_controller.get(&Controller::Memory).and_then(|(dir, v2)| {
            number(dir.join(if *v2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            }))
        });
        let pids = self
            .by_controller
            .get(&Controller::Pids)
            .and_then(|(dir, _)| number(dir.join("pids.current")))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let cpu_usec = match (&self.cpuacct_dir, &self.v2_dir) {
            (Some(dir), _) => number(dir.join("cpuacct.usage")).map(|ns| ns / 1000),
            (None, Some(dir)) => read_file(&dir.join("cpu.stat")).ok().and_then(|stat| {
                stat.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            }),
            (None, None) => None,
        };
        Usage {
            memory_bytes,
            cpu_usec,
            pids,
        }
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
            let on_this: Vec<Controller> = Controller::all()
                .into_iter()
                .filter(|c| layout.hierarchy(*c) == Some(&Hierarchy::V1(root.clone())))
                .collect();
            let leaf = self.dirs.iter().find(|d| d.starts_with(root));
            v1::setup(
                root,
                &levels,
                leaf.map(PathBuf::as_path),
                &on_this,
                limits,
                created,
            )?;
        }
        // v2: one directory for everything that is v2.
        if let (Some(root), Some(leaf)) = (layout.v2_root(), &self.v2_dir) {
            let on_v2: Vec<Controller> = Controller::all()
                .into_iter()
                .filter(|c| matches!(layout.hierarchy(*c), Some(Hierarchy::V2(_))))
                .collect();
            v2::setup(root, &levels, leaf, &on_v2, limits, created)?;
        }
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

    /// The `tasks` files of its v1 directories (a thread writes `0` there to move itself).
    pub fn v1_tasks_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|d| Some(*d) != self.v2_dir.as_ref())
            .map(|d| d.join("tasks"))
            .collect()
    }

    /// The container's cgroup2 directory, if some controller of ours (or the host's only
    /// hierarchy) is v2.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.v2_dir.as_deref()
    }

    /// The container's cgroup2 directory when the device controller is v2: its device filter is
    /// an eBPF program attached there ([`apply_device_filter`]), not made by [`create`](Self::create).
    pub fn v2_devices_dir(&self) -> Option<&Path> {
        match self.by_controller.get(&Controller::Devices) {
            Some((dir, true)) => Some(dir),
            _ => None,
        }
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
        if let Some(dir) = &self.v2_dir {
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

    fn controller(&self, c: Controller) -> Result<(&Path, bool), CgroupError> {
        self.by_controller
            .get(&c)
            .map(|(d, v2)| (d.as_path(), *v2))
            .ok_or(CgroupError::NoController(c))
    }

    /// Installs the device rules of a container created with `rules` (v1: those rules; v2: the
    /// list the program is made from) plus `rule`, at run time: v1 writes one `devices.allow` /
    /// `devices.deny` line; v2 replaces the container's device program atomically with one made
    /// from `rules` followed by `rule`.
    pub fn add_device_rule(&self, rules: &[DeviceRule], rule: &DeviceRule) -> Result<(), CgroupError> {
        match self.controller(Controller::Devices)? {
            (dir, false) => v1::write_device_rule(dir, rule),
            (dir, true) => {
                let mut all = rules.to_vec();
                all.push(rule.clone());
                v2::set_devices(dir, &all)
            }
        }
    }

    /// Requests a freeze; poll [`freezer_state`](Self::freezer_state) for `Frozen`.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.controller(Controller::Freezer)? {
            (dir, false) => v1::set_frozen(dir, true),
            (dir, true) => v2::set_frozen(dir, true),
        }
    }

    /// Thaws.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.controller(Controller::Freezer)? {
            (dir, false) => v1::set_frozen(dir, false),
            (dir, true) => v2::set_frozen(dir, false),
        }
    }

    /// The current freezer state.
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match self.controller(Controller::Freezer)? {
            (dir, false) => v1::freezer_state(dir),
            (dir, true) => v2::freezer_state(dir),
        }
    }

    /// The processes in the cgroup and the cgroups a guest made below it (union over all
    /// directories, sorted); unreadable files count as empty.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            procs_below(dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup (v2: `cgroup.kill` when the kernel has it). Does not wait;
    /// a few rounds catch children forked while signalling. A frozen cgroup is thawed afterwards so the
    /// killed tasks can die.
    pub fn kill_all(&self) {
        if let Some(dir) = &self.v2_dir {
            match v2::kill(dir) {
                Ok(true) => return,
                Ok(false) => {}
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
        ) && let Err(e) = self.thaw()
        {
            tracing::warn!(error = %e, "thaw after kill");
        }
    }

    /// Removes every directory if none has a process or a cgroup below it (the kernel refuses
    /// such an rmdir with `EBUSY`): one rmdir each, the fast path of a stop. `false`: something
    /// is left (some directories may be gone already); [`kill_all`](Self::kill_all) and
    /// [`remove`](Self::remove) finish the job.
    pub fn remove_if_empty(&self) -> bool {
        self.dirs.iter().rev().all(|dir| match fs::remove_dir(dir) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        })
    }

    /// Removes every directory and what a guest made below it (retrying `EBUSY` for up to 100 ms
    /// each). Tries all and returns the first error; directories that are already gone are fine.
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

/// Appends the pids in `dir`'s `cgroup.procs` and in every cgroup below it.
fn procs_below(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                procs_below(&e.path(), pids);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sys::cgroup::testdata::{HYBRID, PURE_V1_COMOUNTED, PURE_V2, v1};

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
    fn v1_usage_reads_memory_cpuacct_and_pids() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().display();
        let mi = format!(
            "32 31 0:29 / {t}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / {t}/memory rw - cgroup cgroup rw,memory\n\
             39 31 0:36 / {t}/pids rw - cgroup cgroup rw,pids\n"
        );
        let l = Layout::from_mountinfo(&mi, |_| None);
        let cg = ContainerCgroup::open(&l, "cml", "c");
        for d in cg.dirs() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(tmp.path().join("memory/cml/c/memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(tmp.path().join("cpu,cpuacct/cml/c/cpuacct.usage"), "3000000\n").unwrap();
        fs::write(tmp.path().join("pids/cml/c/pids.current"), "2\n").unwrap();
        assert_eq!(
            cg.usage(),
            Usage {
                memory_bytes: Some(4096),
                cpu_usec: Some(3000),
                pids: Some(2)
            }
        );
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
