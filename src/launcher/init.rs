//! The container's init process before it becomes the guest init: runs inside the new mount, uts,
//! ipc (and net) namespaces and never returns.
//!
//! Order (each step's failure is reported as `[step, error]` JSON on the report pipe, then exit):
//! make every mount private → a scratch tmpfs on the plan's root directory → the GuestOS mounts
//! under `<scratch>/rootfs`, root first (image directories idmapped with a user namespace) →
//! /proc (without a user namespace; see below), /sys (read-only), /sys/fs/cgroup (the container's
//! own cgroups), /dev (tmpfs with the allowed nodes, devpts, mqueue, shm), /run, /run/lock, the
//! machine ID → move into the container's v1 cgroups (after the mounts: the devices controller
//! would refuse the loop block devices) → report `M` and wait for the monitor (which attaches a v2
//! device filter) → new cgroup namespace
//! (rooted at the container's cgroup) → into the new root: pivot_root, or where cmld's root is the
//! initial rootfs a move onto `/` and chroot (see [`super::root`]) →
//! hostname → capability bounding set → exec. The report pipe is close-on-exec: EOF after `M`
//! without a message means the exec succeeded.
//!
//! Without a user namespace this process was cloned into a new pid namespace and is its pid 1.
//! With one, the pid namespace must belong to the user namespace (so the guest may reboot itself),
//! and a pid namespace belongs to the user namespace of the process that creates it: after the
//! hostname this process joins the user namespace (made by the monitor), creates the pid namespace,
//! forks the init into it, reports `P` + the init's pid, and exits; the monitor (a child
//! subreaper) inherits the init, mounts its /proc from inside the pid namespace and releases it.

use std::{
    io::{Read, Write},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
    sys::stat::{Mode, SFlag, makedev, mknod},
    unistd::{execve, sethostname, symlinkat},
};

use super::plan::{MountSource, StartPlan};
use crate::sys::{
    idmap::{self, UserNamespace},
    process,
};

type Step<T> = Result<T, (String, String)>;

fn at<T, E: std::fmt::Display>(step: &str, r: Result<T, E>) -> Step<T> {
    r.map_err(|e| (step.to_owned(), e.to_string()))
}

/// Runs the init sequence; never returns (exec, or exit after reporting the failed step). `userns`
/// is the container's user namespace (made by the monitor with the plan's mapping), if it has one.
pub fn run(
    plan: &StartPlan,
    loops: &[PathBuf],
    userns: Option<&UserNamespace>,
    go: OwnedFd,
    report: OwnedFd,
) -> ! {
    let mut report = std::fs::File::from(report);
    let mut go = std::fs::File::from(go);
    let err = match setup(plan, loops, userns, &mut report, &mut go) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = report.write_all(&serde_json::to_vec(&err).unwrap_or_default());
    process::exit_now(1)
}

fn setup(
    plan: &StartPlan,
    loops: &[PathBuf],
    userns: Option<&UserNamespace>,
    report: &mut std::fs::File,
    go: &mut std::fs::File,
) -> Step<std::convert::Infallible> {
    at(
        "make mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    let scratch = plan.root.as_path();
    // With a user namespace, fresh tmpfs mounts belong to the container's root.
    let owner = plan
        .userns
        .map(|m| format!(",uid={0},gid={0}", m.base))
        .unwrap_or_default();
    at(
        "mount scratch tmpfs",
        mount(
            Some("tmpfs"),
            scratch,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700,size=1m"),
        ),
    )?;
    let rootfs = scratch.join("rootfs");
    at("create rootfs directory", std::fs::create_dir(&rootfs))?;

    for (i, m) in plan.mounts.iter().enumerate() {
        let target = if m.target == "/" {
            rootfs.clone()
        } else {
            rootfs.join(m.target.trim_start_matches('/'))
        };
        let step = format!("mount {}", m.target);
        let data = m.data.as_deref();
        match &m.source {
            MountSource::Loop {
                index,
                fstype,
                read_only,
            } => {
                let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
                if *read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                at(
                    &step,
                    mount(Some(&loops[*index]), &target, Some(fstype.as_str()), flags, data),
                )?;
            }
            MountSource::EncryptedLoop {
                index,
                fstype,
                overlay: over,
            } => {
                let vol = scratch.join(format!("vol{i}"));
                at(&step, std::fs::create_dir(&vol))?;
                let flags = MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
                at(
                    &step,
                    mount(Some(&loops[*index]), &vol, Some(fstype.as_str()), flags, data),
                )?;
                let Some(key) = plan.volume_key.as_ref().and_then(|k| k.key64()) else {
                    return Err((step, "the container has no volume key".into()));
                };
                let id = at(&step, crate::sys::fscrypt::add_key(&vol, &key))?;
                drop(key);
                let dir = vol.join("data");
                if !dir.exists() {
                    at(&step, std::fs::create_dir(&dir))?;
                    if let Some(m) = plan.userns {
                        let (u, g) = (
                            nix::unistd::Uid::from_raw(m.base),
                            nix::unistd::Gid::from_raw(m.base),
                        );
                        at(&step, nix::unistd::chown(&dir, Some(u), Some(g)))?;
                    }
                }
                // Idempotent for the same key; another key's policy means the key is wrong.
                at(&step, crate::sys::fscrypt::set_policy(&dir, &id))?;
                if *over {
                    // upper/ and work/ inherit the policy: the overlay's writes are encrypted.
                    overlay_dirs(plan, &dir, &step)?;
                    at(&step, overlay(&target, &target, &dir))?;
                } else {
                    at(&step, bind(&dir, &target, None))?;
                }
            }
            MountSource::SharedDir { source } => {
                at(&step, bind_image(source, &target, userns))?;
            }
            MountSource::SharedOverlay { lower } => {
                let lower = &image_layer(scratch, i, lower, userns, &step)?;
                let rw = scratch.join(format!("rw{i}"));
                at(&step, std::fs::create_dir(&rw))?;
                at(
                    &step,
                    mount(
                        Some("tmpfs"),
                        &rw,
                        Some("tmpfs"),
                        MsFlags::MS_NODEV,
                        Some("mode=0755"),
                    ),
                )?;
                // upper/ is the overlay's root directory: the container's root must own it.
                overlay_dirs(plan, &rw, &step)?;
                at(&step, overlay(&target, lower, &rw))?;
            }
            MountSource::OverlayRo { layer } => {
                let layer = &image_layer(scratch, i, layer, userns, &step)?;
                // No upper: a read-only overlay, the image above what the target held.
                let opts = format!("lowerdir={}:{}", layer.display(), target.display());
                at(
                    &step,
                    mount(
                        Some("overlay"),
                        &target,
                        Some("overlay"),
                        MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
                        Some(opts.as_str()),
                    ),
                )?;
            }
            MountSource::OverlayRw { index, fstype } => {
                let layer = scratch.join(format!("rw{i}"));
                at(&step, std::fs::create_dir(&layer))?;
                at(
                    &step,
                    mount(
                        Some(&loops[*index]),
                        &layer,
                        Some(fstype.as_str()),
                        MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
                        data,
                    ),
                )?;
                overlay_dirs(plan, &layer, &step)?;
                at(&step, overlay(&target, &target, &layer))?;
            }
            MountSource::BindFile { source, read_only } => {
                if !target.exists() {
                    // A file in a writable mount (e.g. a tmpfs) can be created to bind onto.
                    if let Some(dir) = target.parent() {
                        at(&step, std::fs::create_dir_all(dir))?;
                    }
                    at(&step, std::fs::write(&target, b""))?;
                }
                at(
                    &step,
                    bind(source, &target, read_only.then_some(MsFlags::empty())),
                )?;
            }
            MountSource::BusyboxRoot { busybox } => {
                at(
                    &step,
                    mount(
                        Some("tmpfs"),
                        &target,
                        Some("tmpfs"),
                        MsFlags::MS_NODEV,
                        Some("size=64m,mode=0755"),
                    ),
                )?;
                for d in ["bin", "proc", "sys", "dev", "run", "tmp", "setup"] {
                    at(&step, std::fs::create_dir(target.join(d)))?;
                }
                at(&step, std::fs::copy(busybox, target.join("bin/busybox")))?;
                at(
                    &step,
                    symlinkat("busybox", nix::fcntl::AT_FDCWD, &target.join("bin/sh")),
                )?;
            }
            MountSource::Tmpfs { size_mb } => {
                let mut opts = format!("size={size_mb}m,mode=0755{}", owner);
                if let Some(d) = data {
                    opts.push(',');
                    opts.push_str(d);
                }
                at(
                    &step,
                    mount(
                        Some("tmpfs"),
                        &target,
                        Some("tmpfs"),
                        MsFlags::MS_NODEV,
                        Some(opts.as_str()),
                    ),
                )?;
            }
        }
    }

    let nosuid_dev_exec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if userns.is_none() {
        // We are the pid namespace's init: our /proc shows it. With a user namespace the pid
        // namespace does not exist yet (see the module doc): the monitor mounts /proc later.
        mount_proc(&rootfs.join("proc"))?;
    }
    at(
        "mount /sys",
        mount(
            Some("sysfs"),
            &rootfs.join("sys"),
            Some("sysfs"),
            nosuid_dev_exec | MsFlags::MS_RDONLY,
            None::<&str>,
        ),
    )?;
    mount_cgroups(plan, &rootfs.join("sys/fs/cgroup"))?;
    populate_dev(plan, &rootfs.join("dev"), &owner)?;
    at(
        "bind /dev/console",
        super::console::bind_console(plan, &rootfs.join("dev")),
    )?;
    at(
        "mount /run",
        mount(
            Some("tmpfs"),
            &rootfs.join("run"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            // systemd refuses to re-execute itself with less than 16 MiB free here.
            Some(format!("mode=0755,size=64m{owner}").as_str()),
        ),
    )?;
    // Debian's systemd treats /run/lock as an API file system it must mount (or find mounted).
    let lock = rootfs.join("run/lock");
    at("mount /run/lock", std::fs::create_dir(&lock))?;
    at(
        "mount /run/lock",
        mount(
            Some("tmpfs"),
            &lock,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size=5m{owner}").as_str()),
        ),
    )?;
    if let Some(sock) = &plan.notify_socket {
        let inner = rootfs.join("run/notify");
        at("bind the notify socket", std::fs::write(&inner, b""))?;
        at("bind the notify socket", bind(sock, &inner, None))?;
        if let Some(m) = plan.userns {
            // The guest's root sends READY=1 there.
            let (u, g) = (
                nix::unistd::Uid::from_raw(m.base),
                nix::unistd::Gid::from_raw(m.base),
            );
            at(
                "bind the notify socket",
                nix::unistd::chown(sock, Some(u), Some(g)),
            )?;
        }
    }

    machine_id(plan, &rootfs)?;

    // Mounted (the devices controller would refuse the loop block devices before): into the
    // container's v1 cgroups, each by this thread itself (see `StartPlan::cgroup_tasks`) — a
    // single-threaded process, so the whole of it moves, and what it forks (the init, with a user
    // namespace) is born there. Then the monitor attaches a v2 device filter, if any.
    for tasks in &plan.cgroup_tasks {
        at(
            "join the container's cgroups",
            std::fs::OpenOptions::new()
                .write(true)
                .open(tasks)
                .and_then(|mut f| f.write_all(b"0"))
                .map_err(|e| format!("{}: {e}", tasks.display())),
        )?;
    }
    at("join the container's cgroups", report.write_all(b"M"))?;
    let mut b = [0u8; 1];
    if !matches!(go.read(&mut b), Ok(1)) {
        process::exit_now(1); // the monitor is gone
    }
    at("create cgroup namespace", unshare(CloneFlags::CLONE_NEWCGROUP))?;

    super::root::enter(&rootfs, plan.root_switch)?;

    at("set hostname", sethostname(&plan.hostname))?;
    if plan.netns {
        at("bring lo up", crate::sys::netif::set_up("lo"))?;
    }
    if let Some(ns) = userns {
        // The user namespace comes last: the mount, uts, ipc, net and cgroup namespaces stay owned
        // by the host's, so the container's root (an unprivileged host uid) cannot mount, rename
        // the host or configure the network. The pid namespace is made now, inside it, and so
        // belongs to it: the guest may reboot(2) itself (the kernel checks CAP_SYS_BOOT over the
        // pid namespace's owner) and systemd's services may create namespaces of their own.
        at(
            "join the user namespace",
            nix::sched::setns(ns.fd(), CloneFlags::CLONE_NEWUSER),
        )?;
        let root_gid = nix::unistd::Gid::from_raw(0);
        let root_uid = nix::unistd::Uid::from_raw(0);
        at("become the container's root", nix::unistd::setgroups(&[]))?;
        at(
            "become the container's root",
            nix::unistd::setresgid(root_gid, root_gid, root_gid),
        )?;
        at(
            "become the container's root",
            nix::unistd::setresuid(root_uid, root_uid, root_uid),
        )?;
        at("create pid namespace", unshare(CloneFlags::CLONE_NEWPID))?;
        // The init is pid 1 of the new namespace; we report its pid and leave, and the monitor (a
        // child subreaper) becomes its parent. It waits until the monitor has mounted its /proc.
        match at("fork the init", process::fork())? {
            process::Forked::Parent(pid) => {
                let mut msg = b"P".to_vec();
                msg.extend_from_slice(&pid.as_raw().to_ne_bytes());
                let _ = report.write_all(&msg);
                process::exit_now(0)
            }
            process::Forked::Child => {
                if !matches!(go.read(&mut b), Ok(1)) {
                    process::exit_now(1); // the monitor is gone
                }
            }
        }
    }
    at("drop capabilities", super::drop_capabilities(&plan.drop_caps))?;
    // Last before exec: the console pty becomes our controlling terminal and stdio.
    at("attach the console", super::console::attach_stdio(plan))?;

    let argv = super::cstrings(&plan.argv);
    let env = super::cstrings(&plan.env);
    let Some(path) = argv.first() else {
        return Err(("exec init".into(), "empty init path".into()));
    };
    let e = execve(path, &argv, &env).map_err(|e| e.to_string()).unwrap_err();
    Err(("exec init".into(), format!("{}: {e}", plan.argv[0])))
}

/// Binds `source` onto `target` (recursively); with `read_only: Some(extra)` the bind is then
/// remounted read-only with the `extra` flags too — a bind mount has flags of its own, so a bind of
/// a read-only mount is not read-only by itself.
fn bind(source: &Path, target: &Path, read_only: Option<MsFlags>) -> nix::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if let Some(extra) = read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
    }
    Ok(())
}

/// Mounts the proc file system of the calling process's pid namespace at `dir`, with its host-wide
/// knobs read-only.
pub fn mount_proc(dir: &Path) -> Step<()> {
    let nosuid_dev_exec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    at(
        "mount /proc",
        mount(Some("proc"), dir, Some("proc"), nosuid_dev_exec, None::<&str>),
    )?;
    // The procfs files that change the host's kernel (sysctls, the sysrq trigger, IRQ affinity, …)
    // are not namespaced and only check file permissions, which a container root without a user
    // namespace passes: bind them read-only, as runc does with its readonlyPaths.
    for name in PROC_READ_ONLY {
        let path = dir.join(name);
        if !path.exists() {
            continue; // e.g. a kernel without sysrq
        }
        at(
            &format!("make /proc/{name} read-only"),
            bind(&path, &path, Some(nosuid_dev_exec)),
        )?;
    }
    Ok(())
}

/// Binds a shared GuestOS image directory (read-only) onto `target`; with a user namespace the bind
/// is idmapped, so the image's files belong to the container's root rather than to `nobody`.
fn bind_image(source: &Path, target: &Path, userns: Option<&UserNamespace>) -> nix::Result<()> {
    if let Some(ns) = userns {
        match idmap::bind_idmapped(source, target, ns.fd(), true) {
            // A file system without idmapped mounts (EINVAL): its files stay `nobody`'s.
            Err(nix::errno::Errno::EINVAL) => {}
            other => return other,
        }
    }
    bind(source, target, Some(MsFlags::MS_NODEV))
}

/// The lower layer of an overlay from a shared image directory: the directory itself, or, with a
/// user namespace, an idmapped bind of it at `layer<i>` of the scratch root (overlayfs then shows
/// the image's files as the container root's, and its root can change them: copy-up).
fn image_layer(
    scratch: &Path,
    i: usize,
    source: &Path,
    userns: Option<&UserNamespace>,
    step: &str,
) -> Step<PathBuf> {
    if userns.is_none() {
        return Ok(source.to_path_buf());
    }
    let layer = scratch.join(format!("layer{i}"));
    at(step, std::fs::create_dir(&layer))?;
    at(step, bind_image(source, &layer, userns))?;
    Ok(layer)
}

/// The guest's `/sys/fs/cgroup`: a tmpfs holding the container's own directory of each hierarchy
/// (a cgroup2 host: the container's directory itself), read-only except the one its init manages,
/// which is handed to the container's root with a user namespace. The tmpfs is made read-only
/// last. Without this a systemd guest cannot start (it must find its own cgroup).
fn mount_cgroups(plan: &StartPlan, dir: &Path) -> Step<()> {
    let step = "mount /sys/fs/cgroup";
    if plan.cgroup_view.is_empty() {
        return Ok(());
    }
    let owner = plan.userns.map(|m| {
        (
            nix::unistd::Uid::from_raw(m.base),
            nix::unistd::Gid::from_raw(m.base),
        )
    });
    let delegate = |cg: &super::plan::CgroupMount| -> Step<()> {
        let Some((u, g)) = owner.filter(|_| cg.writable) else {
            return Ok(());
        };
        // The directory and the files that move processes and enable controllers (cgroup v2
        // delegation, cgroups(7)); resource limits stay the host's.
        at(step, nix::unistd::chown(&cg.dir, Some(u), Some(g)))?;
        for f in [
            "cgroup.procs",
            "tasks",
            "cgroup.threads",
            "cgroup.subtree_control",
            "cgroup.clone_children",
            "notify_on_release",
        ] {
            let path = cg.dir.join(f);
            if path.exists() {
                at(step, nix::unistd::chown(&path, Some(u), Some(g)))?;
            }
        }
        Ok(())
    };
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let [single] = plan.cgroup_view.as_slice()
        && single.name.is_empty()
    {
        delegate(single)?;
        let ro = (!single.writable).then_some(flags);
        return at(step, bind(&single.dir, dir, ro));
    }
    at(
        step,
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=64k"),
        ),
    )?;
    for cg in &plan.cgroup_view {
        let target = dir.join(&cg.name);
        at(step, std::fs::create_dir_all(&target))?;
        delegate(cg)?;
        at(step, bind(&cg.dir, &target, (!cg.writable).then_some(flags)))?;
        // A hierarchy of several controllers (`cpu,cpuacct`) is reached by each name too.
        if cg.name.contains(',') {
            for part in cg.name.split(',') {
                let _ = symlinkat(cg.name.as_str(), nix::fcntl::AT_FDCWD, &dir.join(part));
            }
        }
    }
    at(
        step,
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            Some("mode=0755,size=64k"),
        ),
    )
}

/// An empty `/etc/machine-id` (how Debian's images ship) gets the container's machine ID, so every
/// start of the container has the same one: written when `/etc` is writable, else bound read-only
/// from the run dir. A missing file or `uninitialized` (first boot wanted) is left to the guest.
fn machine_id(plan: &StartPlan, rootfs: &Path) -> Step<()> {
    let step = "write /etc/machine-id";
    let path = rootfs.join("etc/machine-id");
    let empty = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if !empty || plan.machine_id.is_empty() {
        return Ok(());
    }
    let line = format!("{}\n", plan.machine_id);
    match std::fs::write(&path, &line) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            let file = plan.run_dir.join("machine-id");
            at(step, std::fs::write(&file, &line))?;
            at(step, bind(&file, &path, Some(MsFlags::empty())))
        }
        Err(e) => Err((step.into(), e.to_string())),
    }
}

/// Entries of `/proc` bound read-only over themselves (runc's `readonlyPaths`).
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Creates `upper/` and `work/` in a persistent overlay layer when missing, owned by the container's
/// root when it has a user namespace.
fn overlay_dirs(plan: &StartPlan, layer: &Path, step: &str) -> Step<()> {
    for d in ["upper", "work"] {
        let dir = layer.join(d);
        if !dir.exists() {
            at(step, std::fs::create_dir(&dir))?;
        }
        if let Some(m) = plan.userns {
            let (u, g) = (
                nix::unistd::Uid::from_raw(m.base),
                nix::unistd::Gid::from_raw(m.base),
            );
            at(step, nix::unistd::chown(&dir, Some(u), Some(g)))?;
        }
    }
    Ok(())
}

/// A writable overlay on `target`: `lower` below, `layer/upper` and `layer/work` (which exist) above.
fn overlay(target: &Path, lower: &Path, layer: &Path) -> nix::Result<()> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        layer.join("upper").display(),
        layer.join("work").display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
}

fn populate_dev(plan: &StartPlan, dev: &Path, owner: &str) -> Step<()> {
    let step = "populate /dev";
    at(
        step,
        mount(
            Some("tmpfs"),
            dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            // Owned by the container's root: a guest creates links and directories in its /dev.
            Some(format!("mode=0755,size=64k{owner}").as_str()),
        ),
    )?;
    for (name, major, minor) in &plan.devices {
        let path = dev.join(name);
        if let Some(parent) = path.parent() {
            at(step, std::fs::create_dir_all(parent))?;
        }
        at(
            step,
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(u64::from(*major), u64::from(*minor)),
            ),
        )?;
        // mknod honours the umask; make the mode exact.
        at(
            step,
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                &path,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::fs::remove_file(dev.join(link));
        at(step, symlinkat(target, nix::fcntl::AT_FDCWD, &dev.join(link)))?;
    }
    at(step, std::fs::create_dir(dev.join("pts")))?;
    at(
        "mount /dev/pts",
        mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
    )?;
    // POSIX message queues of the container's ipc namespace (systemd's dev-mqueue.mount finds it
    // mounted; the guest could not mount it itself).
    at(step, std::fs::create_dir(dev.join("mqueue")))?;
    at(
        "mount /dev/mqueue",
        mount(
            Some("mqueue"),
            &dev.join("mqueue"),
            Some("mqueue"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;
    at(step, std::fs::create_dir(dev.join("shm")))?;
    at(
        "mount /dev/shm",
        mount(
            Some("tmpfs"),
            &dev.join("shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size=64m{owner}").as_str()),
        ),
    )?;
    Ok(())
}
