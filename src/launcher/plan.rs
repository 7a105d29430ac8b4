//! What the launcher's workers are asked to do: plain data, built by the daemon from the container
//! config and its GuestOS, serialised to the launcher.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a monitor needs to start one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartPlan {
    /// Container UUID (for names and logs).
    pub uuid: String,
    /// Hostname inside the container.
    pub hostname: String,
    /// Per-container runtime directory (`<run>/<uuid>`): state and exit files.
    pub run_dir: PathBuf,
    /// An empty directory on the host where the new mount namespace builds the root.
    pub root: PathBuf,
    /// Mounts in order; the first targets `/`.
    pub mounts: Vec<MountSpec>,
    /// Images the monitor attaches to loop devices (indices referenced by `MountSource::Loop`).
    pub images: Vec<ImageSpec>,
    /// Give the container its own network namespace.
    pub netns: bool,
    /// Interfaces the monitor sets up in that namespace (with `netns`).
    pub net: Option<NetPlan>,
    /// The `tasks` files of the container's v1 cgroups: the init moves itself into each (writes
    /// `0`) before anything else happens. A single thread moving itself is the one migration the
    /// kernel does without its global threadgroup lock, whose first writer after idle waits an
    /// RCU grace period (10–20 ms here); `cgroup.procs` with a pid would take it.
    #[serde(default)]
    pub cgroup_tasks: Vec<PathBuf>,
    /// The container's cgroup2 directory, if it has one: the init is cloned into it
    /// (`CLONE_INTO_CGROUP`), so no migration there at all.
    #[serde(default)]
    pub cgroup_into: Option<PathBuf>,
    /// Where the device controller is v2: the eBPF device filter the monitor attaches to the
    /// container's cgroup once the init has mounted the container's volumes (from loop devices the
    /// filter denies) and before any guest code runs — the point where a v1 init joins its cgroups.
    #[serde(default)]
    pub device_filter: Option<DeviceFilterPlan>,
    /// Character devices to create in `/dev`: (name, major, minor).
    pub devices: Vec<(String, u32, u32)>,
    /// Capabilities dropped from the bounding set (numbers as in linux/capability.h).
    pub drop_caps: Vec<u8>,
    /// argv of the init; argv[0] is the path.
    pub argv: Vec<String>,
    /// Environment of the init.
    pub env: Vec<String>,
    /// Host path of the notify socket to bind into the container as `/run/notify`, if any.
    pub notify_socket: Option<PathBuf>,
    /// Setup mode (the container's normal mounts are under `/setup`).
    pub setup: bool,
    /// User namespace: container uid/gid 0.. map to host `base`.. (`count` ids).
    pub userns: Option<IdMap>,
    /// The container's 64-byte volume key (hex) for its encrypted volumes, if it has one.
    pub volume_key: Option<SecretHex>,
    /// The container's cgroups as its guest sees them below `/sys/fs/cgroup`.
    #[serde(default)]
    pub cgroup_view: Vec<CgroupMount>,
    /// The guest's machine ID (32 hex digits), written into an empty `/etc/machine-id`.
    #[serde(default)]
    pub machine_id: String,
    /// How the init enters the root: pivot_root, or a move onto `/` and chroot where cmld's own
    /// root is the initial rootfs (decided once per cmld: [`super::root::HostRoot`]).
    #[serde(default)]
    pub root_switch: super::root::RootSwitch,
    /// The console: the log bound, and (filled in by the monitor) the pty slave.
    #[serde(default)]
    pub console: super::console::ConsolePlan,
}

/// A container's cgroup v2 device filter (see [`StartPlan::device_filter`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFilterPlan {
    /// The container's cgroup2 directory.
    pub cgroup: PathBuf,
    /// The rules in order, as `[deny ]c 1:3 rwm`.
    pub rules: Vec<String>,
}

/// One cgroup hierarchy bound into the guest's `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMount {
    /// Directory name below `/sys/fs/cgroup` (empty: `/sys/fs/cgroup` itself).
    pub name: String,
    /// The container's cgroup directory on the host.
    pub dir: PathBuf,
    /// The guest manages this hierarchy: bound writable and, with a user namespace, delegated to
    /// the container's root.
    pub writable: bool,
}

/// A container's interfaces: veth pairs, physical interfaces to move in, masquerading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// One veth pair each.
    pub vnets: Vec<VnetPlan>,
    /// Host interfaces moved into the container (and back at the end).
    pub pnets: Vec<PnetPlan>,
    /// Masquerade the configured vnets' subnets to the host's uplink (nftables table name).
    pub nat_table: Option<String>,
}

/// One veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetPlan {
    /// The host side's name (unique per daemon: the ifname prefix and the subnet offset).
    pub host: String,
    /// A host name reserved for the container side: it is created inside the container under
    /// `name` (no longer on the host first), so only a leftover of an older cmld can carry it;
    /// such a leftover is removed before the pair is made.
    pub peer: String,
    /// The container side's name inside (`if_name`).
    pub name: String,
    /// The container side's MAC.
    pub mac: String,
    /// Addresses and route, for `configure: true`.
    pub addr: Option<VnetAddr>,
}

/// Addresses of a configured veth pair: `host`/`prefix` on the host side, `container`/`prefix`
/// inside, and optionally the container's default route via `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetAddr {
    /// Host side address (`.1`).
    pub host: std::net::Ipv4Addr,
    /// Container side address (`.2`).
    pub container: std::net::Ipv4Addr,
    /// Prefix length (24).
    pub prefix: u8,
    /// The container's default route goes through this pair.
    pub default_route: bool,
}

/// A physical interface lent to a container: found by MAC, returned under its host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnetPlan {
    /// Its name on the host.
    pub name: String,
    /// Its MAC (lowercase).
    pub mac: String,
}

/// Key material in hex, wiped from memory when dropped and never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHex(pub String);

impl Drop for SecretHex {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(<redacted>)")
    }
}

impl SecretHex {
    /// Encodes key bytes.
    pub fn encode(bytes: &[u8]) -> SecretHex {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        SecretHex(s)
    }

    /// Decodes into a 64-byte key (wiped on drop).
    pub fn key64(&self) -> Option<zeroize::Zeroizing<[u8; 64]>> {
        let mut out = zeroize::Zeroizing::new([0u8; 64]);
        if self.0.len() != 128 {
            return None;
        }
        for (i, chunk) in self.0.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(out)
    }
}

/// A user namespace mapping: container ids `0..count` are host ids `base..base+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First host id.
    pub base: u32,
    /// Number of ids.
    pub count: u32,
}

/// An image file to attach to a loop device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The image.
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// One mount of the container's tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub target: String,
    /// What is mounted there.
    pub source: MountSource,
    /// Options passed to mount(2) as data (e.g. `mount_data` of the GuestOS).
    pub data: Option<String>,
}

/// Where a mount comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSource {
    /// The loop device of `images[index]`, with this filesystem type.
    Loop {
        /// Index into [`StartPlan::images`].
        index: usize,
        /// Filesystem type.
        fstype: String,
        /// Mount read-only.
        read_only: bool,
    },
    /// A host directory (a GuestOS image mounted once, read-only, for every container using it)
    /// bound read-only onto the target (SHARED).
    SharedDir {
        /// The host directory.
        source: PathBuf,
    },
    /// A shared read-only image directory with a tmpfs overlay on top (SHARED_RW).
    SharedOverlay {
        /// The host directory (lower layer).
        lower: PathBuf,
    },
    /// An EMPTY or OVERLAY_RW ext4 volume encrypted with fscrypt: the loop device of
    /// `images[index]` is mounted aside (at `vol<i>` of the scratch root, `i` the mount's index) and
    /// the container's key added to it. Its `data` directory (protected by a v2 policy) is bound
    /// onto the target (EMPTY), or holds the `upper/` and `work/` of an overlay on the target
    /// (OVERLAY_RW).
    EncryptedLoop {
        /// Index into [`StartPlan::images`].
        index: usize,
        /// Filesystem type (ext4).
        fstype: String,
        /// OVERLAY_RW: an overlay over the target instead of a bind mount.
        overlay: bool,
    },
    /// A fresh tmpfs of this many MiB.
    Tmpfs {
        /// Size limit in MiB.
        size_mb: u32,
    },
    /// OVERLAY_RO: a shared read-only image directory as an extra read-only layer over what the
    /// target already holds.
    OverlayRo {
        /// The host directory.
        layer: PathBuf,
    },
    /// OVERLAY_RW: a persistent upper layer (`upper/`, `work/` on the loop device of
    /// `images[index]`, read-write) over what the target already holds.
    OverlayRw {
        /// Index into [`StartPlan::images`].
        index: usize,
        /// Filesystem type of the image.
        fstype: String,
    },
    /// BIND_FILE(_RW): a host file bound onto a file in the container.
    BindFile {
        /// The host file.
        source: PathBuf,
        /// Bind read-only.
        read_only: bool,
    },
    /// Setup mode without `mounts_setup`: a tmpfs root holding the host's static busybox.
    BusyboxRoot {
        /// The host's static busybox.
        busybox: PathBuf,
    },
}

/// Everything an exec helper needs to run a command in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecPlan {
    /// Host pid of the container's init (whose namespaces are joined).
    pub init_pid: i32,
    /// The `cgroup.procs` file of the container's cgroup2 directory, if it has one: the helper
    /// moves the command there.
    pub cgroup_procs: Vec<PathBuf>,
    /// The `tasks` files of the container's v1 cgroups: the command moves itself into each (see
    /// [`StartPlan::cgroup_tasks`]), through descriptors the helper opened on the host.
    #[serde(default)]
    pub cgroup_tasks: Vec<PathBuf>,
    /// Capabilities dropped from the bounding set.
    pub drop_caps: Vec<u8>,
    /// argv; argv[0] is looked up in PATH.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// stdin is a terminal: become its session leader and take it as controlling terminal.
    pub pty: bool,
    /// The container has a user namespace: join it last and become its root.
    pub userns: bool,
}

/// What a monitor reports to the daemon, one JSON object per line on its channel, in this order:
/// `Started` or `Failed`, then (after `Started`) `Exited`, and — only when `Exited` said
/// `keys_busy` — `KeysRemoved` once the last busy file was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorEvent {
    /// The init was exec'd; its host pid.
    Started {
        /// Host pid of the init.
        init_pid: i32,
        /// Microseconds from the monitor's start to the end of each step, for the daemon's debug
        /// log (profiling the start path).
        #[serde(default)]
        timings: Vec<(String, u64)>,
        /// What the daemon should log as warnings (e.g. an image that could not be idmapped).
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// A start step failed; nothing of the container remains.
    Failed {
        /// The step.
        step: String,
        /// What went wrong.
        error: String,
    },
    /// The init ended.
    Exited {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal, when it was killed.
        signal: Option<i32>,
        /// The fscrypt key of an encrypted volume could not be removed completely: files below it
        /// are still open (held outside the container) and stay readable until they are closed.
        /// The monitor keeps retrying and reports `KeysRemoved` when done.
        #[serde(default)]
        keys_busy: bool,
    },
    /// After `Exited { keys_busy: true }`: the last busy file was closed and the key is gone.
    KeysRemoved,
}

/// The state file a monitor keeps in the run dir, so a restarted daemon can find the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// The monitor's pid.
    pub monitor_pid: i32,
    /// The init's host pid.
    pub init_pid: i32,
    /// Unix time (seconds) of the start.
    pub started: u64,
}

/// What an exec helper reports on its status channel, one JSON object per line: `Started` (unless
/// it failed before the fork), then `Finished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The command runs; its host pid.
    Started {
        /// Host pid of the command.
        pid: i32,
    },
    /// The command ended, or could not be run.
    Finished {
        /// Exit status as a shell reports it (128 + N for signal N); 125–127 for the helper's own
        /// errors.
        code: i32,
        /// The helper's own error, if it could not run the command.
        error: Option<String>,
    },
}

/// Creates or removes device nodes inside a running container (`allow_audio` / `deny_audio`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevNodesPlan {
    /// Host pid of the container's init (whose mount namespace is entered).
    pub init_pid: i32,
    /// Directory inside the container, e.g. `/dev/snd`.
    pub dir: String,
    /// Character devices: (file name, major, minor).
    pub nodes: Vec<(String, u32, u32)>,
    /// Create (true) or remove (false).
    pub create: bool,
}
