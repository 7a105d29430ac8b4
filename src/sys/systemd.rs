//! cmld's side of the service manager: readiness and watchdog notifications (`sd_notify(3)`),
//! socket activation (`sd_listen_fds(3)`) and whether systemd is stopping cmld to restart it.
//!
//! Written on the documented protocols (a datagram to `$NOTIFY_SOCKET`; descriptors from 3 on
//! with `$LISTEN_PID`/`$LISTEN_FDS`), not on libsystemd: cmld links no library for them.
//! [`Manager::from_env`] takes the variables out of the environment before cmld starts any
//! process, so that neither the launcher nor a container inherits them.

use std::{
    env,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// What the service manager gave cmld at its start.
#[derive(Debug, Default)]
pub struct Manager {
    notify: Option<SocketAddr>,
    /// The interval systemd expects `WATCHDOG=1` within, when it is addressed to this process.
    watchdog: Option<Duration>,
    /// The listening socket of a socket unit (the first passed descriptor).
    listener: Option<OwnedFd>,
    /// Started as a systemd service (`$INVOCATION_ID` was set).
    service: bool,
}

impl Manager {
    /// Reads and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID`, `LISTEN_PID`/`LISTEN_FDS`/
    /// `LISTEN_FDNAMES` and `INVOCATION_ID`; takes the first passed descriptor when `LISTEN_PID` is
    /// this process (marked close-on-exec; further ones are closed).
    ///
    /// # Safety
    /// Changes the process environment: call it while the process has a single thread.
    pub unsafe fn from_env() -> Manager {
        let take = |name: &str| {
            let value = env::var_os(name);
            // SAFETY: the caller guarantees that no other thread reads or writes the environment.
            unsafe { env::remove_var(name) };
            value.and_then(|v| v.into_string().ok())
        };
        let me = std::process::id();
        let ours = |pid: Option<String>| pid.is_none_or(|p| p.parse::<u32>().ok() == Some(me));
        let notify = take("NOTIFY_SOCKET").and_then(|s| notify_address(&s));
        let watchdog_usec = take("WATCHDOG_USEC");
        let watchdog = if ours(take("WATCHDOG_PID")) {
            watchdog_usec
                .and_then(|u| u.parse::<u64>().ok())
                .filter(|&u| u > 0)
                .map(Duration::from_micros)
        } else {
            None
        };
        let listen_pid = take("LISTEN_PID");
        let listen_fds = take("LISTEN_FDS").and_then(|n| n.parse::<RawFd>().ok());
        take("LISTEN_FDNAMES");
        let listener = match (listen_pid, listen_fds) {
            (Some(pid), Some(n)) if n > 0 && pid.parse::<u32>().ok() == Some(me) => {
                for extra in LISTEN_FDS_START + 1..LISTEN_FDS_START + n {
                    // SAFETY: systemd passed these descriptors to this process; nothing else in
                    // it knows of them, so closing them cannot close someone else's descriptor.
                    unsafe { libc::close(extra) };
                }
                // SAFETY: descriptor 3 was passed to this process by the service manager
                // (LISTEN_PID is ours) and is owned by nothing else in it.
                let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
                let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
                Some(fd)
            }
            _ => None,
        };
        let service = take("INVOCATION_ID").is_some();
        Manager {
            notify,
            watchdog,
            listener,
            service,
        }
    }

    /// The socket unit's listening socket, once.
    pub fn take_listener(&mut self) -> Option<OwnedFd> {
        self.listener.take()
    }

    /// The interval to send [`Manager::watchdog_ping`] within, when systemd watches cmld.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Whether cmld runs as a systemd service.
    pub fn is_service(&self) -> bool {
        self.service
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=…`); without a notify socket it
    /// does nothing. Best effort: systemd not listening is no reason to fail.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.notify else { return };
        if let Ok(sock) = UnixDatagram::unbound()
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::debug!(error = %e, state, "sd_notify failed");
        }
    }

    /// `WATCHDOG=1`.
    pub fn watchdog_ping(&self) {
        self.notify("WATCHDOG=1");
    }

    /// Whether the service manager is stopping cmld as part of a restart of its unit (`systemctl
    /// restart`, a package upgrade's `deb-systemd-invoke restart`), as opposed to a stop (`systemctl
    /// stop`, shutdown, package removal). systemd keeps the unit's job of type `restart` while
    /// the stop half of it runs; `systemctl list-jobs` shows it. False when cmld is no service,
    /// its unit is unknown, or systemctl does not answer within two seconds.
    pub fn stopping_for_restart(&self) -> bool {
        if !self.service {
            return false;
        }
        let Some(unit) = own_unit(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()) else {
            return false;
        };
        match run_bounded(
            Command::new("systemctl").args(["list-jobs", "--no-legend", "--plain", "--no-pager"]),
            Duration::from_secs(2),
        ) {
            Some(out) => job_type(&out, &unit) == Some("restart"),
            None => false,
        }
    }
}

/// The address in `$NOTIFY_SOCKET`: a path, or an abstract name after `@`.
fn notify_address(value: &str) -> Option<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
        None if value.starts_with('/') => SocketAddr::from_pathname(Path::new(value)).ok(),
        None => None,
    }
}

/// The service unit a process belongs to, from its `/proc/PID/cgroup` (the v2 line, else systemd's
/// named v1 hierarchy): the last path component ending in `.service`.
fn own_unit(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.contains(".service"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    path.split('/')
        .rev()
        .find(|c| c.ends_with(".service"))
        .map(str::to_owned)
}

/// The type of `unit`'s job in `systemctl list-jobs --no-legend --plain` output (`JOB UNIT TYPE
/// STATE` per line).
fn job_type<'a>(list: &'a str, unit: &str) -> Option<&'a str> {
    list.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        let (_, u, t) = (cols.next()?, cols.next()?, cols.next()?);
        (u == unit).then_some(t)
    })
}

/// Runs a command with no input and returns its standard output if it succeeded within `limit`
/// (it is killed otherwise).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                std::io::Read::read_to_string(child.stdout.as_mut()?, &mut out).ok()?;
                return status.success().then_some(out);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_v2_line_or_systemds_hierarchy() {
        assert_eq!(
            own_unit("0::/system.slice/cmld.service\n").as_deref(),
            Some("cmld.service")
        );
        let hybrid =
            "12:memory:/system.slice/cmld.service\n1:name=systemd:/system.slice/cml-x.service\n0::/\n";
        assert_eq!(own_unit(hybrid).as_deref(), Some("cml-x.service"));
        assert_eq!(own_unit("0::/user.slice/user-0.slice/session-1.scope\n"), None);
    }

    #[test]
    fn the_job_type_is_read_by_unit() {
        let list = "123 cmld.service restart running\n124 cml-web.service start waiting\n";
        assert_eq!(job_type(list, "cmld.service"), Some("restart"));
        assert_eq!(job_type(list, "cml-web.service"), Some("start"));
        assert_eq!(job_type(list, "other.service"), None);
        assert_eq!(job_type("", "cmld.service"), None);
    }

    #[test]
    fn notify_addresses() {
        assert!(notify_address("/run/systemd/notify").is_some());
        let abs = notify_address("@/org/freedesktop/systemd1/notify").unwrap();
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        assert!(notify_address("relative").is_none());
    }
}
