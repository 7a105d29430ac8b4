//! The cgroup v2 backend: one directory per container in the unified hierarchy.
//!
//! Creation: the needed controllers are enabled with `+ctrl` in `cgroup.subtree_control` of the
//! root and of every parent level (top-down: a level may only enable what its parent enabled), then
//! the container's directory gets `memory.max` (and `memory.swap.max` 0 where the kernel accounts
//! swap: a `ram_limit` caps RAM and swap together), `cpuset.cpus` and `pids.max`. Its device
//! program ([`bpf`](super::bpf)) is not made here: the container's monitor attaches it once the
//! init has mounted the container's volumes (from loop devices the rules deny), before any guest
//! code runs. The container's directory itself enables no controller: its init lives there, and a
//! cgroup with processes may not distribute domain controllers ("no internal processes"); a guest
//! that manages cgroups (systemd) moves itself down first and enables what it
//! needs in the subtree delegated to it.
//!
//! Freezing is `cgroup.freeze`, with `frozen 1` in `cgroup.events` once every task stopped; the
//! final kill of a stop is one write to `cgroup.kill` (Linux ≥ 5.14), which also reaches tasks
//! forked meanwhile and tasks of frozen cgroups.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Enables the controllers `on_v2` down to `<root>/<levels…>`, creates `leaf` and writes the limits.
pub(super) fn setup(
    root: &Path,
    levels: &[&str],
    leaf: &Path,
    on_v2: &[Controller],
    limits: &Limits,
    created: &mut Created,
) -> Result<(), CgroupError> {
    let enable: Vec<String> = on_v2
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
    created.mkdir(leaf, true)?;
    if on_v2.contains(&Controller::Cpuset)
        && let Some(cpus) = &limits.cpus
    {
        write_file(&leaf.join("cpuset.cpus"), cpus)?;
    }
    if on_v2.contains(&Controller::Memory)
        && let Some(bytes) = limits.memory_bytes
    {
        write_memory(&leaf.join("memory.max"), bytes)?;
        let swap = leaf.join("memory.swap.max");
        if swap.exists() {
            write_file(&swap, "0")?;
        }
    }
    if on_v2.contains(&Controller::Pids)
        && let Some(max) = limits.pids_max
    {
        write_file(&leaf.join("pids.max"), &max.to_string())?;
    }
    // The device filter comes later: see the module doc.
    Ok(())
}

/// Makes `rules` the container's device filter, replacing the one in force atomically.
pub(super) fn set_devices(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    Ok(apply_device_filter(dir, rules)?)
}

/// Freezes or thaws (`cgroup.freeze`).
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
}

/// Frozen once `cgroup.events` says so; freezing while only `cgroup.freeze` does.
pub(super) fn freezer_state(dir: &Path) -> Result<FreezerState, CgroupError> {
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

/// SIGKILLs everything in the cgroup and below with one write to `cgroup.kill`; `Ok(false)` on a
/// kernel without it (before 5.14).
pub(super) fn kill(dir: &Path) -> Result<bool, CgroupError> {
    let file = dir.join("cgroup.kill");
    if !file.exists() {
        return Ok(false);
    }
    write_file(&file, "1").map(|()| true)
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
        // options (e.g. nsdelegate), as `mount -o remount,favordynmods` does. The flags go in
        // `flags`; cgroup2 refuses them in the option string (EINVAL).
        let (flags, mut data) = remount_args(f[3]);
        data.push("favordynmods");
        let data = data.join(",");
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

/// A mount's options (`/proc/self/mounts`, fourth field) as remount(2) takes them: the generic
/// mount flags, and the rest — the file system's own options — for the option string.
fn remount_args(options: &str) -> (nix::mount::MsFlags, Vec<&str>) {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::MS_REMOUNT;
    let mut data = Vec::new();
    for o in options.split(',') {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            "rw" | "" => {}
            fs_option => data.push(fs_option),
        }
    }
    (flags, data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn remount_keeps_flags_apart_from_the_cgroup2_options() {
        use nix::mount::MsFlags;
        let (flags, data) = remount_args("rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot");
        assert_eq!(
            flags,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        assert_eq!(data, ["nsdelegate", "memory_recursiveprot"]);
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

        // Usage: memory.current, cpu.stat usage_usec, pids.current.
        assert_eq!(cg.usage(), Usage::default());
        fs::write(leaf.join("memory.current"), "8192\n").unwrap();
        fs::write(leaf.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        fs::write(leaf.join("pids.current"), "3\n").unwrap();
        assert_eq!(
            cg.usage(),
            Usage {
                memory_bytes: Some(8192),
                cpu_usec: Some(2500),
                pids: Some(3)
            }
        );

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
}
