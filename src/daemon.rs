//! The daemon: options, start-up, the control socket, and shutdown on SIGTERM/SIGINT.
//!
//! Start-up order: data directory and its lock → `device.conf` (created with defaults on first
//! start) → run directory → actix system → GuestOS catalog and container configs loaded → control
//! socket bound, or taken from a systemd socket unit (so no client sees a half-loaded daemon) →
//! `READY=1` → serve until SIGTERM/SIGINT → the containers stopped, unless systemd is restarting
//! cmld (then they keep running for the next cmld to adopt) → socket removed (unless systemd owns
//! it).

use std::{
    fs, io,
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use actix::Actor;
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use crate::{
    actors::{
        Services,
        acceptor::Acceptor,
        board::StatusBoard,
        guestos::GuestOsManager,
        manager::Manager,
        manager::{AutostartAll, ManagerContext, Reload, StopAll},
    },
    container::runtime::Runtime,
    device::{self, DeviceError},
    guestos::Catalog,
    launcher::Launcher,
    store::{DataDir, StoreError},
    sys::{cgroup::Layout, systemd},
};

/// Daemon settings (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory (`/var/lib/cml`).
    pub data_dir: PathBuf,
    /// Control socket (`/run/socket/cml-control`).
    pub socket: PathBuf,
    /// Runtime directory (`/run/cml`).
    pub run_dir: PathBuf,
    /// cgroup directory name under each controller (`cml`).
    pub cgroup_parent: String,
    /// Container subnets are /24s carved from this (`172.23.0.0/16`).
    pub net_base: NetBase,
    /// Prefix of host-side interface names.
    pub ifname_prefix: String,
}

/// An IPv4 network from which per-container /24 subnets are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetBase {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length (at most 24).
    pub prefix: u8,
}

impl std::str::FromStr for NetBase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR like 172.23.0.0/16"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        if !(8..=24).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} must be between /8 and /24 (one /24 per container)"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(addr) & !mask != 0 {
            return Err(format!("{s} has host bits set"));
        }
        Ok(NetBase { addr, prefix })
    }
}

/// Checks a cgroup parent name: one path component.
pub fn parse_cgroup_parent(s: &str) -> Result<String, String> {
    if crate::guestos::valid_file_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a single directory name"))
    }
}

/// Checks an interface-name prefix: it must leave room for an index within the 15-byte limit.
pub fn parse_ifname_prefix(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 8
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be 1 to 8 characters of [A-Za-z0-9_-]"))
    }
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory could not be prepared.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another daemon uses this data directory.
    #[error("data directory {0} is in use by another cmld")]
    Locked(PathBuf),
    /// `device.conf` is invalid.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The control socket could not be set up.
    #[error("control socket {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The launcher could not be started.
    #[error(transparent)]
    Launcher(crate::launcher::LauncherError),
    /// The device softtoken could not be opened or created.
    #[error("softtoken: {0}")]
    Token(String),
    /// The cgroup hierarchies could not be read.
    #[error("cgroups: {0}")]
    Cgroup(String),
    /// An I/O error elsewhere.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn take_lock(data: &DataDir) -> Result<Flock<fs::File>, DaemonError> {
    let path = data.root().join(".cmld.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DaemonError::Io {
            what: format!("open {}", path.display()),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| DaemonError::Locked(data.root().to_owned()))
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| DaemonError::Io {
            what: format!("create {}", path.display()),
            source,
        })
}

/// Binds the control socket: mode 0660, group `cml-control` when that group exists. A stale socket
/// file is replaced; a live one (another daemon answers) is an error.
fn bind_socket(
    path: &Path,
    device: &crate::protocol::pb::DeviceConfig,
) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let err = |reason: String| DaemonError::Socket {
        path: path.to_owned(),
        reason,
    };
    if let Some(parent) = path.parent() {
        make_dir(parent, 0o755)?;
    }
    if fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another daemon is listening on it".into()));
        }
        fs::remove_file(path).map_err(|e| err(format!("cannot remove stale socket: {e}")))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    let mode = device.socket_mode() & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| err(e.to_string()))?;
    let owner = match device.socket_owner.as_deref() {
        Some(o) => Some(
            resolve_id(o, |n| {
                nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
            })
            .map_err(|e| err(format!("device.conf socket_owner: {e}")))?,
        ),
        None => None,
    };
    let group = match device.socket_group.as_deref() {
        Some(g) => Some(
            resolve_id(g, |n| {
                nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
            })
            .map_err(|e| err(format!("device.conf socket_group: {e}")))?,
        ),
        // Without a setting, the group `cml-control` if the host has one (as upstream).
        None => nix::unistd::Group::from_name("cml-control")
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    };
    if owner.is_some() || group.is_some() {
        nix::unistd::chown(
            path,
            owner.map(nix::unistd::Uid::from_raw),
            group.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| err(e.to_string()))?;
    }
    listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

/// A user or group given by name or number.
fn resolve_id(text: &str, by_name: impl Fn(&str) -> nix::Result<Option<u32>>) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    by_name(text)
        .map_err(|e| format!("{text:?}: {e}"))?
        .ok_or_else(|| format!("no such user or group {text:?}"))
}

/// Runs the daemon until SIGTERM or SIGINT. `sd` is what the service manager passed
/// ([`systemd::Manager::from_env`], taken before any thread or process started).
pub fn run(opts: Options, mut sd: systemd::Manager) -> Result<(), DaemonError> {
    // First, while cmld is single-threaded and holds no lock or socket a container must not inherit
    // (a listening socket from systemd is already open: the launcher closes what it inherits).
    let launcher = Launcher::spawn().map_err(DaemonError::Launcher)?;
    let data = DataDir::new(&opts.data_dir);
    data.create()?;
    let _lock = take_lock(&data)?;
    let stale = data.remove_stale_temps();
    if stale > 0 {
        info!(
            count = stale,
            "removed temporary files left by an interrupted write"
        );
    }
    let device = Arc::new(device::load_or_create(&data)?);
    if !device.signed_configs() {
        warn!(
            "device.conf has signed_configs: false — container configs and GuestOSes are NOT signature-checked (development setup)"
        );
    }
    make_dir(&opts.run_dir, 0o700)?;
    info!(
        data_dir = %opts.data_dir.display(),
        socket = %opts.socket.display(),
        run_dir = %opts.run_dir.display(),
        cgroup_parent = %opts.cgroup_parent,
        net_base = %format!("{}/{}", opts.net_base.addr, opts.net_base.prefix),
        ifname_prefix = %opts.ifname_prefix,
        hosted = device::hosted(&device),
        "cmld starting"
    );
    if device
        .cgroup_favordynmods
        .unwrap_or(!device::hosted(&device) && cfg!(feature = "device-mode"))
    {
        crate::sys::cgroup::favor_dynmods();
    }
    let layout = Layout::detect().map_err(|e| DaemonError::Cgroup(e.to_string()))?;
    info!(layout = %layout.describe(), "cgroup controllers");
    let root_switch = root_switch(device::hosted(&device));
    let rt = Arc::new(Runtime {
        launcher,
        layout,
        run_dir: opts.run_dir.clone(),
        cgroup_parent: opts.cgroup_parent.clone(),
        stop_timeout: std::time::Duration::from_secs(u64::from(device.stop_timeout())),
        console_log_kib: device.console_log_kib(),
        claims: Default::default(),
        id_lock: Default::default(),
        images: crate::container::runtime::SharedImages::new(opts.run_dir.join("images")),
        root_switch,
        net: crate::container::network::Network::new(crate::container::network::NetSettings {
            base: opts.net_base,
            ifname_prefix: opts.ifname_prefix.clone(),
            host_dns: device.host_dns.clone().filter(|d| !d.is_empty()),
            nat: device.nat_uplink(),
        }),
    });
    let activated = sd.take_listener();
    let socket_owned = activated.is_none();
    let sd = Arc::new(sd);
    let system = actix_rt::System::new();
    let result = system.block_on(serve(opts.clone(), data, device, rt.clone(), activated, sd));
    match result {
        Ok(Exit::ContainersStopped) | Err(_) => {
            crate::sys::cgroup::remove_parent_if_empty(&rt.layout, &rt.cgroup_parent);
            rt.images.detach_all();
        }
        // As after a crash: the shared images stay mounted for the running containers and the
        // next cmld, which adopts them.
        Ok(Exit::ContainersKept) => {}
    }
    if socket_owned {
        let _ = fs::remove_file(&opts.socket);
    }
    info!("cmld stopped");
    result.map(|_| ())
}

/// How [`serve`] ended.
enum Exit {
    /// Every container was stopped (SPEC §4.4).
    ContainersStopped,
    /// systemd restarts cmld: the containers keep running for the next cmld to adopt.
    ContainersKept,
}

async fn serve(
    opts: Options,
    data: DataDir,
    device: Arc<crate::protocol::pb::DeviceConfig>,
    rt: Arc<Runtime>,
    activated: Option<std::os::fd::OwnedFd>,
    sd: Arc<systemd::Manager>,
) -> Result<Exit, DaemonError> {
    // Before the socket exists: a SIGTERM from a client that saw the socket must be handled.
    let io_err = |source| DaemonError::Io {
        what: "install signal handlers".into(),
        source,
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io_err)?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(io_err)?;
    let catalog = Arc::new(RwLock::new(Catalog::default()));
    let trust = Arc::new(RwLock::new(Vec::new()));
    let board = Arc::new(StatusBoard::default());
    // Started first: it loads the trust store and the catalog the containers are checked against.
    let guestos = GuestOsManager::new(
        data.clone(),
        device.clone(),
        catalog.clone(),
        trust.clone(),
        board.clone(),
    )
    .start();
    let ctx = ManagerContext {
        data: data.clone(),
        device: device.clone(),
        catalog,
        trust: trust.clone(),
        board: board.clone(),
        rt: rt.clone(),
        net: {
            let rt = rt.clone();
            actix::SyncArbiter::start(1, move || crate::actors::network::NetworkActor::new(rt.clone()))
        },
    };
    let rt_handle = rt;
    let manager = Manager::new(ctx, guestos.clone()).start();
    let problems = manager.send(Reload { startup: true }).await.unwrap_or_default();
    let _ = manager.send(AutostartAll).await;
    info!(
        containers = board.uuids().len(),
        unreadable = problems.len(),
        "containers loaded"
    );

    let std_listener = match activated {
        Some(fd) => {
            if device.socket_owner.is_some() || device.socket_group.is_some() || device.socket_mode.is_some()
            {
                warn!(
                    "device.conf's socket_owner/socket_group/socket_mode do not apply to a socket from systemd: set SocketUser=/SocketGroup=/SocketMode= in cmld.socket"
                );
            }
            activated_listener(fd).map_err(|reason| DaemonError::Socket {
                path: opts.socket.clone(),
                reason,
            })?
        }
        None => bind_socket(&opts.socket, &device)?,
    };
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(|e| DaemonError::Socket {
        path: opts.socket.clone(),
        reason: e.to_string(),
    })?;
    let softtoken = crate::actors::token::open_token(&data.tokens_dir())
        .map_err(|e| DaemonError::Token(e.to_string()))?;
    // One thread: PIN checks are serialised (the lockout counter) and off the async arbiter.
    let token = actix::SyncArbiter::start(1, move || {
        crate::actors::token::TokenActor::new(softtoken.clone())
    });
    let identity = Arc::new(
        crate::provisioning::DeviceIdentity::load_or_create(&data.tokens_dir())
            .map_err(|e| DaemonError::Token(format!("device identity: {e}")))?,
    );
    let provisioned = Arc::new(std::sync::atomic::AtomicBool::new(
        data.provisioned_marker().exists(),
    ));
    info!(
        device = %identity.uuid,
        provisioned = provisioned.load(std::sync::atomic::Ordering::SeqCst),
        "device identity"
    );
    let provisioning = {
        let (identity, data, trust, provisioned) =
            (identity.clone(), data.clone(), trust.clone(), provisioned.clone());
        actix::SyncArbiter::start(1, move || {
            crate::actors::provisioning::ProvisioningActor::new(
                identity.clone(),
                data.clone(),
                trust.clone(),
                provisioned.clone(),
            )
        })
    };
    let _acceptor = Acceptor::start(
        listener,
        Services {
            rt: rt_handle.clone(),
            data,
            device,
            board: board.clone(),
            manager: manager.clone(),
            guestos,
            trust,
            token,
            provisioning,
            provisioned,
        },
    );
    info!(socket = %opts.socket.display(), "ready");
    sd.notify("READY=1");
    if let Some(interval) = sd.watchdog() {
        // On this event loop: if it hangs, the pings stop and systemd restarts cmld.
        let sd = sd.clone();
        let every = interval / 2;
        info!(interval_ms = interval.as_millis() as u64, "systemd watchdog");
        actix_rt::spawn(async move {
            loop {
                sd.watchdog_ping();
                actix_rt::time::sleep(every).await;
            }
        });
    }

    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    sd.notify("STOPPING=1");
    let restart = {
        let sd = sd.clone();
        tokio::task::spawn_blocking(move || sd.stopping_for_restart())
            .await
            .unwrap_or(false)
    };
    if restart {
        info!(
            containers = board.running_count(),
            "systemd restarts cmld: the running containers keep running for the next cmld to adopt"
        );
        return Ok(Exit::ContainersKept);
    }
    // SPEC §4.4: stop every container gracefully, then exit.
    let stopped = manager.send(StopAll).await.unwrap_or(0);
    info!(containers = stopped, "containers stopped");
    Ok(Exit::ContainersStopped)
}

/// The listening socket a systemd socket unit passed: it must be a listening UNIX stream socket.
fn activated_listener(fd: std::os::fd::OwnedFd) -> Result<std::os::unix::net::UnixListener, String> {
    use nix::sys::socket::{SockType, UnixAddr, getsockname, getsockopt, sockopt};
    let unix = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(&fd)).is_ok();
    let stream = getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    if !(unix && stream && listening) {
        return Err(
            "the descriptor systemd passed is no listening UNIX stream socket (cmld.socket needs ListenStream=)"
                .into(),
        );
    }
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    info!("control socket from systemd (socket activation)");
    Ok(listener)
}

/// How containers will enter their root, from what cmld's own root is (logged: a hosted cmld on
/// the initial rootfs is unusual enough for a warning, a device's cmld runs from there by design).
fn root_switch(hosted: bool) -> crate::launcher::root::RootSwitch {
    use crate::launcher::root::{HostRoot, RootSwitch};
    let root = match HostRoot::detect() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot tell what cmld's root is; containers enter theirs with pivot_root");
            return RootSwitch::Pivot;
        }
    };
    match &root {
        HostRoot::Mounted => {}
        HostRoot::NamespaceRoot { fstype } => {
            let msg = "cmld's root is the root mount of its namespace (the initial rootfs), which \
                       pivot_root cannot move: containers enter their root with MS_MOVE + chroot";
            if hosted {
                warn!(fstype = %fstype, "{msg}");
            } else {
                info!(fstype = %fstype, "{msg}");
            }
        }
        HostRoot::NotAMountPoint => warn!(
            "cmld's root is not a mount point (a chroot?): pivot_root will refuse to start \
             containers; bind-mount the root directory onto itself first"
        ),
    }
    root.switch()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_base_parsing() {
        assert_eq!("172.23.0.0/16".parse::<NetBase>().unwrap().prefix, 16);
        assert!("172.23.0.1/16".parse::<NetBase>().is_err());
        assert!("172.23.0.0/25".parse::<NetBase>().is_err());
        assert!("foo".parse::<NetBase>().is_err());
        assert!(parse_ifname_prefix("cmlt1").is_ok());
        assert!(parse_ifname_prefix("toolongname").is_err());
        assert!(parse_cgroup_parent("../x").is_err());
    }
}
