//! The exec helper: runs one command inside a running container for `control run`.
//!
//! Order: open the container's v1 `tasks` and v2 `cgroup.procs` files (host paths, so before
//! entering its mount namespace) → enter its cgroup, ipc, uts, net, pid and mount namespaces (mount
//! last: it changes what paths mean) → fork, so the command is inside the pid namespace → the
//! command moves itself into the v1 cgroups and says so (or why not), the helper moves the command
//! (not itself) into the v2 cgroup and lets it go on → in the child: new
//! session, the terminal as controlling tty (pty mode), stdio from the passed descriptors,
//! capability bounding set, exec → the helper waits and reports the command's status on the
//! status descriptor as JSON.
//!
//! `fds` = `[stdin, stdout, stderr, status]` (3, 4, 5, 6 after the launcher arranged them).

use std::{
    io::{Read, Write},
    os::fd::OwnedFd,
};

use nix::{
    sched::{CloneFlags, setns},
    sys::wait::{WaitStatus, waitpid},
};

use super::plan::{ExecEvent, ExecPlan};
use crate::sys::process::{self, Forked};

fn report(status: &mut std::fs::File, ev: &ExecEvent) {
    let mut line = serde_json::to_vec(ev).unwrap_or_default();
    line.push(b'\n');
    let _ = status.write_all(&line);
}

/// One of the container's `cgroup.procs` files, opened before the helper enters the container's
/// namespaces (the kernel checks a migration against the opener's credentials and cgroup
/// namespace), and the one of the cgroup the init is in below it, if any.
struct CgroupJoin {
    path: std::path::PathBuf,
    procs: std::fs::File,
    below: Option<std::fs::File>,
}

impl CgroupJoin {
    fn open(procs: &std::path::Path, init_pid: i32) -> std::io::Result<CgroupJoin> {
        let open = |p: &std::path::Path| std::fs::OpenOptions::new().write(true).open(p);
        Ok(CgroupJoin {
            path: procs.to_path_buf(),
            procs: open(procs)?,
            below: init_cgroup_below(procs, init_pid).and_then(|d| open(&d.join("cgroup.procs")).ok()),
        })
    }

    /// Moves `pid` in. On cgroup v2 a guest that manages its cgroups (systemd) moves its
    /// processes below its root and enables controllers there, after which the root takes no
    /// process (`EBUSY`, "no internal processes"): then the command joins the cgroup its init is
    /// in, as `runc exec` does.
    fn add(&mut self, pid: i32) -> std::io::Result<()> {
        let pid = pid.to_string();
        match self.procs.write_all(pid.as_bytes()) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => match self.below.as_mut() {
                Some(below) => below.write_all(pid.as_bytes()),
                None => Err(e),
            },
            other => other,
        }
    }
}

/// The v2 cgroup directory of process `pid` when it is below the one `procs` belongs to.
fn init_cgroup_below(procs: &std::path::Path, pid: i32) -> Option<std::path::PathBuf> {
    let container = procs.parent()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_start_matches('/');
    // The cgroup2 mount root is the ancestor of the container's directory under which the init's
    // path (relative to our cgroup namespace, the host's) names a directory inside the container's.
    container
        .ancestors()
        .map(|root| root.join(rel))
        .find(|d| d.starts_with(container) && d != container && d.is_dir())
}

/// Runs the helper; returns its own exit code.
pub fn run(plan: ExecPlan, fds: Vec<OwnedFd>) -> i32 {
    process::set_name("cml-exec");
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr), Some(status)) =
        (fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return 125;
    };
    let mut status = std::fs::File::from(status);
    let fail = |status: &mut std::fs::File, code: i32, error: String| {
        report(
            status,
            &ExecEvent::Finished {
                code,
                error: Some(error),
            },
        );
        code
    };
    // Only the command joins the container's cgroups, never this helper: a v2 guest may enable
    // controllers in its root cgroup only while no process of ours sits there.
    let mut joins = Vec::with_capacity(plan.cgroup_procs.len());
    for procs in &plan.cgroup_procs {
        match CgroupJoin::open(procs, plan.init_pid) {
            Ok(j) => joins.push(j),
            Err(e) => return fail(&mut status, 125, format!("join cgroup {}: {e}", procs.display())),
        }
    }
    let mut tasks = Vec::with_capacity(plan.cgroup_tasks.len());
    for path in &plan.cgroup_tasks {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(f) => tasks.push((path.clone(), f)),
            Err(e) => return fail(&mut status, 125, format!("join cgroup {}: {e}", path.display())),
        }
    }
    // The command waits until it is in them; it says when it is in the v1 ones.
    let (go_r, go_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut status, 125, format!("pipe: {e}")),
    };
    let (joined_r, joined_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut status, 125, format!("pipe: {e}")),
    };
    // Open every namespace first: once in the container's mount namespace, /proc is its own.
    let mut namespaces = vec![
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    if plan.userns {
        // Last: after it we have no power over the host-owned namespaces joined before.
        namespaces.push(("user", CloneFlags::CLONE_NEWUSER));
    }
    let mut opened = Vec::with_capacity(namespaces.len());
    for (ns, flag) in namespaces {
        match std::fs::File::open(format!("/proc/{}/ns/{ns}", plan.init_pid)) {
            Ok(f) => opened.push((ns, flag, f)),
            Err(e) => {
                return fail(
                    &mut status,
                    125,
                    format!("open the container's {ns} namespace: {e}"),
                );
            }
        }
    }
    for (ns, flag, f) in opened {
        if let Err(e) = setns(f, flag) {
            return fail(
                &mut status,
                125,
                format!("enter the container's {ns} namespace: {e}"),
            );
        }
    }
    if plan.userns {
        let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
        let root = nix::unistd::setgroups(&[])
            .and_then(|()| nix::unistd::setresgid(g, g, g))
            .and_then(|()| nix::unistd::setresuid(u, u, u));
        if let Err(e) = root {
            return fail(&mut status, 125, format!("become the container's root: {e}"));
        }
    }
    if let Err(e) = nix::unistd::chdir("/") {
        return fail(&mut status, 125, format!("chdir /: {e}"));
    }
    let child = match process::fork() {
        Ok(Forked::Child) => {
            drop((go_w, joined_r));
            let mut joined = std::fs::File::from(joined_w);
            for (path, mut f) in tasks {
                if let Err(e) = f.write_all(b"0") {
                    let _ = write!(joined, "join cgroup {}: {e}", path.display());
                    process::exit_now(125);
                }
            }
            let _ = joined.write_all(b"j");
            drop(joined);
            let mut go = [0u8; 1];
            if nix::unistd::read(&go_r, &mut go) != Ok(1) {
                process::exit_now(125);
            }
            exec_child(&plan, stdin, stdout, stderr)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return fail(&mut status, 125, format!("fork: {e}")),
    };
    drop((go_r, joined_w, tasks));
    let mut said = Vec::new();
    let _ = std::fs::File::from(joined_r).read_to_end(&mut said);
    if said != b"j" {
        let _ = waitpid(child, None);
        let why = if said.is_empty() {
            "the command is gone before it started".to_owned()
        } else {
            String::from_utf8_lossy(&said).into_owned()
        };
        return fail(&mut status, 125, why);
    }
    for j in &mut joins {
        if let Err(e) = j.add(child.as_raw()) {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            return fail(&mut status, 125, format!("join cgroup {}: {e}", j.path.display()));
        }
    }
    drop(joins);
    if nix::unistd::write(&go_w, b"g") != Ok(1) {
        let _ = waitpid(child, None);
        return fail(&mut status, 125, "the command is gone before it started".into());
    }
    drop(go_w);
    report(&mut status, &ExecEvent::Started { pid: child.as_raw() });
    drop((stdin, stdout, stderr));
    let code = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 125,
        }
    };
    report(&mut status, &ExecEvent::Finished { code, error: None });
    0
}

fn exec_child(plan: &ExecPlan, stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> ! {
    // A new session: its own process group (the daemon signals it as a whole), and with a pty the
    // terminal's controlling session.
    let _ = nix::unistd::setsid();
    if nix::unistd::dup2_stdin(&stdin).is_err()
        || nix::unistd::dup2_stdout(&stdout).is_err()
        || nix::unistd::dup2_stderr(&stderr).is_err()
    {
        process::exit_now(126);
    }
    if plan.pty {
        crate::sys::process::set_controlling_tty(0);
    }
    drop((stdin, stdout, stderr));
    if super::drop_capabilities(&plan.drop_caps).is_err() {
        process::exit_now(126);
    }
    let argv = super::cstrings(&plan.argv);
    let env = super::cstrings(&plan.env);
    let Some(cmd) = argv.first() else {
        process::exit_now(127)
    };
    let err = nix::unistd::execvpe(cmd, &argv, &env).map_or_else(|e| e, |never| match never {});
    let _ = writeln!(std::io::stderr(), "cml: cannot run {}: {err}", plan.argv[0]);
    process::exit_now(if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    })
}
