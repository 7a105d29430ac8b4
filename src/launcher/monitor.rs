//! The per-container monitor: parent of the container's init, for the init's whole life.
//!
//! Order: attach loop devices → open the console pty (see [`super::console`]) → clone the init
//! into new namespaces (it waits) → put it into the container's cgroups → record `<run>/state` →
//! let it go → it builds the root and execs the guest init (a close-on-exec report pipe tells
//! success from failure) → report `Started` (or `Failed`) to cmld → release the loop devices (the
//! mounts hold them; auto-clear detaches them when the namespace dies) → start the console pump →
//! wait for the init → drain the console into its log → remove the fscrypt keys of encrypted
//! volumes (held open since the mounts were made) and check the removal → write `<run>/exit` →
//! report `Exited` → exit.
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
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if plan.netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let child = match process::fork_into(flags) {
        Ok(Forked::Child) => {
            drop(go_w);
            drop(rep_r);
            drop(chan);
            init::run(&plan, &loop_paths, go_r, rep_w)
        }
        Ok(Forked::Parent(pid)) => {
            mark("clone");
            pid
        }
        Err(e) => return fail(&mut chan, "clone the init into new namespaces", e.to_string()),
    };
    // Only the init needs the volume key; the monitor forgets (and wipes) its copy.
    plan.volume_key = None;
    drop(go_r);
    drop(rep_w);

    let abort = |chan: &mut Option<UnixStream>, step: &str, error: String| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
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
            for procs in &plan.cgroup_procs {
                if let Err(e) = std::fs::write(procs, child.as_raw().to_string()) {
                    return abort(
                        &mut chan,
                        "join the container's cgroups",
                        format!("{}: {e}", procs.display()),
                    );
                }
            }
            mark("cgroup attach");
            match EncryptedVolume::open_all(&plan, child) {
                Ok(v) => volumes = v,
                Err(e) => return abort(&mut chan, "hold the encrypted volumes", e),
            }
            if let Some(n) = &plan.net {
                match network::setup(n, child.as_raw(), &plan.run_dir) {
                    Ok(a) => net = Some(a),
                    Err(e) => return abort(&mut chan, "set up the network", e),
                }
            }
            mark("network");
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let state = RunState {
                monitor_pid: std::process::id() as i32,
                init_pid: child.as_raw(),
                started,
            };
            write_file(
                &plan.run_dir.join("state"),
                &serde_json::to_vec(&state).unwrap_or_default(),
            );
            if nix::unistd::write(&go_w, b"g").is_err() {
                return abort(&mut chan, "release the init", "the init is gone".into());
            }
            if let Some(map) = plan.userns {
                // The init has created its user namespace: write the mapping, then let it go on.
                match rep.read(&mut first) {
                    Ok(1) if first[0] == b'U' => {
                        let line = format!("0 {} {}\n", map.base, map.count);
                        for file in ["uid_map", "gid_map"] {
                            let path = format!("/proc/{}/{file}", child.as_raw());
                            if let Err(e) = std::fs::write(&path, &line) {
                                return abort(
                                    &mut chan,
                                    "write the user namespace mapping",
                                    format!("{path}: {e}"),
                                );
                            }
                        }
                        if nix::unistd::write(&go_w, b"u").is_err() {
                            return abort(&mut chan, "release the init", "the init is gone".into());
                        }
                        first[0] = b'M';
                    }
                    Ok(1) => msg.push(first[0]),
                    _ => {
                        first[0] = 0;
                        msg.extend_from_slice(
                            br#"["create user namespace","the init ended before it was mapped"]"#,
                        );
                    }
                }
            }
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
        let _ = waitpid(child, None);
        let _ = std::fs::remove_file(plan.run_dir.join("state"));
        return fail(&mut chan, &step, error);
    }
    mark("exec");
    report(
        &mut chan,
        &MonitorEvent::Started {
            init_pid: child.as_raw(),
            timings,
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
