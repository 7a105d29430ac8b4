//! Which hierarchy each controller uses on this host, read from `/proc/self/mountinfo` (see the
//! parent module's "Detection").

#[allow(clippy::wildcard_imports)]
use super::*;

/// Which hierarchy each controller uses on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    controllers: HashMap<Controller, Hierarchy>,
    v2_root: Option<PathBuf>,
    /// Every v1 hierarchy's mount point, also those that hold none of our controllers (`cpu`,
    /// `blkio`, the `name=systemd` one): a container gets its directory in each, so that a guest
    /// init sees its own subtree everywhere and nothing of the host's.
    pub(super) v1_roots: Vec<PathBuf>,
    /// The `name=systemd` hierarchy, the one a systemd guest writes on a v1 host.
    pub(super) v1_systemd: Option<PathBuf>,
    /// The v1 hierarchy of the `cpuacct` controller (not one cml limits with, but where a v1 host
    /// counts a cgroup's CPU time: [`ContainerCgroup::usage`](super::ContainerCgroup::usage)).
    pub(super) v1_cpuacct: Option<PathBuf>,
}

impl Layout {
    /// Detects the layout of this host from `/proc/self/mountinfo` and the v2 root's `cgroup.controllers`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        Ok(Layout::from_mountinfo(&mountinfo, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).ok()
        }))
    }

    /// Builds the layout from mountinfo text; `v2_controllers` returns the content of
    /// `cgroup.controllers` at a cgroup2 mount point (None when unreadable).
    pub fn from_mountinfo(mountinfo: &str, v2_controllers: impl Fn(&Path) -> Option<String>) -> Layout {
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            // id parent maj:min root mountpoint options [optional…] - fstype source superoptions
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            // A mount of a subtree (root != "/", e.g. inside a container) is not a hierarchy root.
            if pre[3] != "/" {
                continue;
            }
            let mount_point = crate::sys::mountinfo::unescape(pre[4]);
            match post[0] {
                "cgroup" => {
                    if !layout.v1_roots.contains(&mount_point) {
                        layout.v1_roots.push(mount_point.clone());
                    }
                    if post[2].split(',').any(|o| o == "name=systemd") {
                        layout.v1_systemd = Some(mount_point.clone());
                    }
                    if layout.v1_cpuacct.is_none() && post[2].split(',').any(|o| o == "cpuacct") {
                        layout.v1_cpuacct = Some(mount_point.clone());
                    }
                    for opt in post[2].split(',') {
                        if let Some(c) = Controller::all().into_iter().find(|c| c.name() == opt) {
                            layout
                                .controllers
                                .entry(c)
                                .or_insert_with(|| Hierarchy::V1(mount_point.clone()));
                        }
                    }
                }
                "cgroup2" if layout.v2_root.is_none() => layout.v2_root = Some(mount_point),
                _ => {}
            }
        }
        if let Some(root) = layout.v2_root.clone() {
            let listed = v2_controllers(&root).unwrap_or_default();
            let listed: Vec<&str> = listed.split_whitespace().collect();
            for c in Controller::all() {
                if !layout.controllers.contains_key(&c) && (c.implicit_on_v2() || listed.contains(&c.name()))
                {
                    layout.controllers.insert(c, Hierarchy::V2(root.clone()));
                }
            }
        }
        layout
    }

    /// Where `c` is used, if this host has it.
    pub fn hierarchy(&self, c: Controller) -> Option<&Hierarchy> {
        self.controllers.get(&c)
    }

    /// The cgroup2 mount point, if any (also on a hybrid host, where it may hold none of ours).
    pub fn v2_root(&self) -> Option<&Path> {
        self.v2_root.as_deref()
    }

    /// One line for the start-up log: `memory=v1 cpuset=v1 pids=v1 devices=v1 freezer=v1`.
    pub fn describe(&self) -> String {
        Controller::all()
            .iter()
            .map(|c| {
                let kind = match self.hierarchy(*c) {
                    Some(Hierarchy::V1(_)) => "v1",
                    Some(Hierarchy::V2(_)) => "v2",
                    None => "missing",
                };
                format!("{c}={kind}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sys::cgroup::testdata::{HYBRID, PURE_V2, v1};

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
        assert_eq!(l.v1_cpuacct, Some(PathBuf::from("/sys/fs/cgroup/cpuacct")));
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
}
