//! The exec helper: runs one command inside a running container for `control run`.
//!
//! Order: join the container's cgroups (host paths, so before entering its mount namespace) → enter
//! its cgroup, ipc, uts, net, pid and mount namespaces (mount last: it changes what paths mean) →
//! fork, so the command is inside the pid namespace → in the child: new session, the terminal as
//! controlling tty (pty mode), stdio from the passed descriptors, capability bounding set, exec →
//! the helper waits and reports the command's status on the status descriptor as JSON.
//!
//! `fds` = `[stdin, stdout, stderr, status]` (3, 4, 5, 6 after the launcher arranged them).

use std::{io::Write, os::fd::OwnedFd};

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
    for procs in &plan.cgroup_procs {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            return fail(&mut status, 125, format!("join cgroup {}: {e}", procs.display()));
        }
    }
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
        Ok(Forked::Child) => exec_child(&plan, stdin, stdout, stderr),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return fail(&mut status, 125, format!("fork: {e}")),
    };
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
