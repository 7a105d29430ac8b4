//! The per-container monitor: parent of the container's init, for the init's whole life.
//!
//! Order: attach loop devices → open the console pty (see [`super::console`]) → (with a user
//! namespace: create it, with the container's mapping) → clone the init into new namespaces and
//! its cgroup2 directory (it mounts, moves itself into its v1 cgroups, then waits) → attach a v2
//! device filter → let it go → (with a user namespace:
//! it forks the real init into a new pid namespace and reports its pid; mount that init's /proc and
//! let it go) → record `<run>/state` → the init execs the guest init (a close-on-exec report pipe
//! tells success from failure) → report `Started` (or `Failed`) to cmld → release the loop devices
//! (the mounts hold them; auto-clear detaches them when the namespace dies) → start the console
//! pump → wait for the init → drain the console into its log → remove the fscrypt keys of
//! encrypted volumes (held open since the mounts were made) and check the removal → write
//! `<run>/exit` → report `Exited` → exit.
//!
//! The monitor outlives cmld: it has no parent-death signal, ignores SIGPIPE, and keeps the exit
//! status in the run dir for a restarted cmld.

use std::{
    io::{Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{fs::OpenOptionsExt, net::UnixStream},
    },
};

use nix::{
    sched::CloneFlags,
    sys::wait::{WaitStatus, waitpid},
};

use super::{
    console, init, network,
    plan::{MonitorEvent, MountSource, RunState, StartPlan},
};
use crate::sys::{
    fdpass,
    fscrypt::{self, KeyIdentifier, Removal},
    idmap::UserNamespace,
    loopdev::LoopDevice,
    process::{self, Forked},
};

fn report(chan: &mut Option<UnixStream>, ev: &MonitorEvent) {
    if let Some(c) = chan {
        let mut line = serde_json::to_vec(ev).unwrap_or_default();
        line.push(b'\n');
        if c.write_all(&line).is_err() {
            *chan = None; // cmld is gone; the run dir still tells what happened
        }
    }
}

fn write_file(path: &std::path::Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, data).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Runs the monitor; `fds` = `[channel]`. Returns the process exit code.
pub fn run(mut plan: StartPlan, fds: Vec<OwnedFd>) -> i32 {
    process::set_name("cml-monitor");
    let t0 = std::time::Instant::now();
    let mut timings: Vec<(String, u64)> = Vec::new();
    let mut mark = |step: &str| timings.push((step.to_owned(), t0.elapsed().as_micros() as u64));
    fdpass::ignore_sigpipe();
    // With a user namespace the init is forked by a child of ours that exits: it becomes ours.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut chan = fds.into_iter().next().map(UnixStream::from);
    // The monitor and the container's init hold nothing of cmld's terminal or log.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let fail = |chan: &mut Option<UnixStream>, step: &str, error: String| {
        report(
            chan,
            &MonitorEvent::Failed {
                step: step.into(),
                error,
            },
        );
        1
    };

    let mut loops = Vec::with_capacity(plan.images.len());
    for img in &plan.images {
        match LoopDevice::attach(&img.path, img.read_only) {
            Ok(l) => loops.push(l),
            Err(e) => {
                return fail(
                    &mut chan,
                    "attach loop device",
                    format!("{}: {e}", img.path.display()),
                );
            }
        }
    }
    let loop_paths: Vec<_> = loops.iter().map(LoopDevice::path).collect();
    mark("loop devices");

    // The console pty (the init's stdio and /dev/console), before the clone.
    let console = match console::Console::open(&mut plan) {
        Ok(c) => c,
        Err(e) => return fail(&mut chan, "open the console", e.to_string()),
    };

    let (go_r, go_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut chan, "create pipes", e.to_string()),
    };
    let (rep_r, rep_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut chan, "create pipes", e.to_string()),
    };
    // With a user namespace it exists before the init: the image binds are idmapped through it,
    // and the init joins it last (see `init`).
    let userns = match plan.userns.map(|m| UserNamespace::create(m.base, m.count)) {
        None => None,
        Some(Ok(ns)) => Some(ns),
        Some(Err(e)) => return fail(&mut chan, "create the user namespace", e),
    };
    let warnings = userns
        .as_ref()
        .map(|ns| not_idmappable(&plan, ns))
        .unwrap_or_default();
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if userns.is_none() {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if plan.netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // Without a user namespace this child becomes the init; with one it builds the root, forks the
    // init into a pid namespace of the user namespace's, and exits.
    // The init starts in its cgroup2 directory (and moves itself into its v1 cgroups after its
    // mounts).
    let cgroup_dir = match plan.cgroup_into.as_ref().map(|d| {
        nix::fcntl::open(
            d,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", d.display()))
    }) {
        None => None,
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => return fail(&mut chan, "open the container's cgroup", e),
    };
    let child = match process::fork_into_cgroup(flags, cgroup_dir.as_ref().map(std::os::fd::AsFd::as_fd)) {
        Ok(Forked::Child) => {
            drop(cgroup_dir);
            drop(go_w);
            drop(rep_r);
            drop(chan);
            init::run(&plan, &loop_paths, userns.as_ref(), go_r, rep_w)
        }
        Ok(Forked::Parent(pid)) => {
            drop(cgroup_dir);
            mark("clone");
            pid
        }
        Err(e) => return fail(&mut chan, "clone the init into new namespaces", e.to_string()),
    };
    // Only the init needs the volume key; the monitor forgets (and wipes) its copy.
    plan.volume_key = None;
    drop(go_r);
    drop(rep_w);

    // The init's pid once it is known (the builder's while there is none).
    let mut init_pid = child;
    let abort = |chan: &mut Option<UnixStream>, step: &str, error: String, init: nix::unistd::Pid| {
        for pid in [child, init] {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        fail(chan, step, error)
    };
    // The init mounts first, says `M`, and waits; anything else is its error report.
    let mut rep = std::fs::File::from(rep_r);
    let mut volumes = Vec::new();
    // Declared after `abort`'s captures: dropped (the network taken down) before any error return.
    let mut net: Option<network::Attached> = None;
    let mut first = [0u8; 1];
    let mut msg = Vec::new();
    match rep.read(&mut first) {
        Ok(1) if first[0] == b'M' => {
            mark("mounts");
            if let Some(f) = &plan.device_filter
                && let Err(e) = attach_device_filter(f)
            {
                return abort(&mut chan, "attach the device filter", e, init_pid);
            }
            mark("device filter");
            match EncryptedVolume::open_all(&plan, child) {
                Ok(v) => volumes = v,
                Err(e) => return abort(&mut chan, "hold the encrypted volumes", e, init_pid),
            }
            if let Some(n) = &plan.net {
                match network::setup(n, child.as_raw(), &plan.run_dir) {
                    Ok(a) => net = Some(a),
                    Err(e) => return abort(&mut chan, "set up the network", e, init_pid),
                }
            }
            mark("network");
            if nix::unistd::write(&go_w, b"g").is_err() {
                return abort(&mut chan, "release the init", "the init is gone".into(), init_pid);
            }
            if userns.is_some() {
                // The builder forks the init into the new pid namespace and reports its pid; its
                // /proc can only be mounted from inside that namespace.
                let mut p = [0u8; 5];
                match rep.read_exact(&mut p) {
                    Ok(()) if p[0] == b'P' => {
                        init_pid = nix::unistd::Pid::from_raw(i32::from_ne_bytes([p[1], p[2], p[3], p[4]]));
                        let _ = waitpid(child, None);
                        if let Err(e) = mount_proc_of(init_pid) {
                            return abort(&mut chan, "mount /proc", e, init_pid);
                        }
                        mark("proc");
                        if nix::unistd::write(&go_w, b"g").is_err() {
                            return abort(&mut chan, "release the init", "the init is gone".into(), init_pid);
                        }
                    }
                    _ => {
                        first[0] = 0;
                        msg.extend(p.iter().copied().take_while(|b| *b != 0));
                    }
                }
            }
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let state = RunState {
                monitor_pid: std::process::id() as i32,
                init_pid: init_pid.as_raw(),
                started,
            };
            write_file(
                &plan.run_dir.join("state"),
                &serde_json::to_vec(&state).unwrap_or_default(),
            );
        }
        Ok(1) => msg.push(first[0]),
        _ => {}
    }
    drop(go_w);
    // The init writes a JSON error and exits if a step fails; exec closes the pipe otherwise.
    let _ = rep.read_to_end(&mut msg);
    if !msg.is_empty() || first[0] != b'M' {
        let (step, error) = serde_json::from_slice::<(String, String)>(&msg)
            .unwrap_or_else(|_| ("start".into(), String::from_utf8_lossy(&msg).into_owned()));
        for pid in [child, init_pid] {
            let _ = waitpid(pid, None);
        }
        let _ = std::fs::remove_file(plan.run_dir.join("state"));
        return fail(&mut chan, &step, error);
    }
    mark("exec");
    let child = init_pid;
    report(
        &mut chan,
        &MonitorEvent::Started {
            init_pid: child.as_raw(),
            timings,
            warnings,
        },
    );
    drop(loops);
    // Exec'd: the monitor forks no more, so the console pump may run in a thread.
    let console = console.serve();
    // Do not reap the init before cmld holds a pidfd on it (a pid is only unambiguous while the
    // process or its zombie exists): wait for cmld's acknowledgement, bounded in case cmld is gone.
    if let Some(c) = chan.as_mut() {
        let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let mut ack = [0u8; 1];
        let _ = c.read(&mut ack);
    }

    let (code, signal) = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break (Some(c), None),
            Ok(WaitStatus::Signaled(_, s, _)) => break (None, Some(s as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break (None, None),
        }
    };
    // The console's last output goes into the log before anyone hears of the exit.
    console.finish();
    // Physical interfaces go back to the host before the network namespace is released.
    drop(net);
    // The container's processes are gone and its mount namespace with them: our descriptors are
    // the last users of the volumes, so the keys must come out completely. Exec helpers that joined
    // the mount namespace hold it until they have reaped their command and reported; give them a
    // moment before calling the key busy.
    EncryptedVolume::remove_keys(&mut volumes);
    let grace = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !volumes.is_empty() && std::time::Instant::now() < grace {
        std::thread::sleep(std::time::Duration::from_millis(20));
        EncryptedVolume::remove_keys(&mut volumes);
    }
    let keys_busy = !volumes.is_empty();
    let ev = MonitorEvent::Exited {
        code,
        signal,
        keys_busy,
    };
    let exit_file = plan.run_dir.join("exit");
    write_file(&exit_file, &serde_json::to_vec(&ev).unwrap_or_default());
    report(&mut chan, &ev);
    if keys_busy {
        // Someone outside holds files open below a volume: they stay readable until closed. Keep
        // the volume and retry until the key is gone, then say so.
        while !volumes.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(200));
            EncryptedVolume::remove_keys(&mut volumes);
        }
        let ev = MonitorEvent::Exited {
            code,
            signal,
            keys_busy: false,
        };
        write_file(&exit_file, &serde_json::to_vec(&ev).unwrap_or_default());
        report(&mut chan, &MonitorEvent::KeysRemoved);
    }
    0
}

/// The shared image directories of the plan whose file system the kernel cannot idmap: the init
/// binds them plainly, so their files appear as `nobody`'s in the container (see `init`).
fn not_idmappable(plan: &StartPlan, ns: &UserNamespace) -> Vec<String> {
    plan.mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::SharedDir { source }
            | MountSource::SharedOverlay { lower: source }
            | MountSource::OverlayRo { layer: source } => (!crate::sys::idmap::can_idmap(source, ns.fd()))
                .then(|| {
                    format!(
                        "the image at {} cannot be idmapped by this kernel (squashfs needs Linux 6.2): \
                         its files belong to nobody in the container, and a writable root over it is \
                         not writable by the container's root; build the GuestOS with --root-fs ext4",
                        m.target
                    )
                }),
            _ => None,
        })
        .collect()
}

/// Mounts `/proc` for an init that is pid 1 of a pid namespace owned by the container's user
/// namespace: proc shows the pid namespace of the process that mounts it, and the mount namespace
/// is the host's to change, so a helper of ours joins both — the pid namespace takes effect for
/// its children — and its child mounts.
fn mount_proc_of(init: nix::unistd::Pid) -> Result<(), String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let helper = match process::fork().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            drop(r);
            let result = (|| -> Result<(), String> {
                for (ns, flag) in [
                    ("pid", CloneFlags::CLONE_NEWPID),
                    ("mnt", CloneFlags::CLONE_NEWNS),
                ] {
                    let path = format!("/proc/{}/ns/{ns}", init.as_raw());
                    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                    nix::sched::setns(f, flag).map_err(|e| format!("join {path}: {e}"))?;
                }
                match process::fork().map_err(|e| format!("fork: {e}"))? {
                    Forked::Child => match init::mount_proc(std::path::Path::new("/proc")) {
                        Ok(()) => process::exit_now(0),
                        Err((step, e)) => {
                            let _ = nix::unistd::write(&w, format!("{step}: {e}").as_bytes());
                            process::exit_now(1)
                        }
                    },
                    Forked::Parent(pid) => match waitpid(pid, None) {
                        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                        _ => Err(String::new()),
                    },
                }
            })();
            if let Err(e) = &result {
                let _ = nix::unistd::write(&w, e.as_bytes());
            }
            process::exit_now(i32::from(result.is_err()))
        }
        Forked::Parent(pid) => pid,
    };
    drop(w);
    let mut msg = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut msg);
    match waitpid(helper, None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        _ => Err(if msg.is_empty() {
            "the helper failed".into()
        } else {
            msg
        }),
    }
}

/// An encrypted volume the monitor holds open for the container's whole life, so that at the end it
/// can remove the fscrypt key itself and check that the removal was complete.
struct EncryptedVolume {
    /// The volume's root (unencrypted), opened through the init's mount namespace.
    root: std::fs::File,
    key: KeyIdentifier,
}

impl EncryptedVolume {
    /// Opens every encrypted volume of the plan where the init mounted it (`vol<i>` in its scratch
    /// root; called while the init waits after mounting, before `pivot_root` detaches the scratch
    /// root) and reads the key identifier from the `data` directory's policy.
    fn open_all(plan: &StartPlan, init: nix::unistd::Pid) -> Result<Vec<EncryptedVolume>, String> {
        let mut out = Vec::new();
        for (i, m) in plan.mounts.iter().enumerate() {
            if !matches!(m.source, MountSource::EncryptedLoop { .. }) {
                continue;
            }
            let scratch = plan.root.strip_prefix("/").unwrap_or(&plan.root);
            let path = std::path::Path::new(&format!("/proc/{}/root", init.as_raw()))
                .join(scratch)
                .join(format!("vol{i}"));
            let root = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let key = fscrypt::policy_key(&path.join("data"))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: the data directory is not encrypted", m.target))?;
            out.push(EncryptedVolume { root, key });
        }
        Ok(out)
    }

    /// Removes the keys; volumes whose key is gone are closed and dropped from the list, the rest
    /// (files busy, or an error) stay for another try.
    fn remove_keys(volumes: &mut Vec<EncryptedVolume>) {
        volumes.retain(|v| {
            let path = format!("/proc/self/fd/{}", v.root.as_raw_fd());
            match fscrypt::remove_key(std::path::Path::new(&path), &v.key) {
                Ok(Removal::Complete) => false,
                // Busy files, another user's claim or an error: only a later try can help (the
                // daemon shows the container as ZOMBIE meanwhile).
                Ok(Removal::FilesBusy | Removal::OtherUsers) | Err(_) => true,
            }
        });
    }
}

/// Attaches a container's cgroup v2 device filter (see `StartPlan::device_filter`).
fn attach_device_filter(f: &super::plan::DeviceFilterPlan) -> Result<(), String> {
    let rules = f
        .rules
        .iter()
        .map(|r| r.parse::<crate::sys::cgroup::DeviceRule>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    crate::sys::cgroup::apply_device_filter(&f.cgroup, &rules).map_err(|e| e.to_string())
}
