//! The start plan of a container: what to mount, which limits, which init — built from its config
//! and GuestOS — and the host-side preparation and cleanup around it (run directory, cgroup,
//! per-container images). Blocking; the container actor runs it on the blocking pool.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    guestos::GuestOs,
    launcher::{
        Launcher,
        plan::{CgroupMount, DeviceFilterPlan, IdMap, ImageSpec, MountSource, MountSpec, StartPlan},
    },
    protocol::pb::{ContainerConfig, guest_os_mount::Type as MountType},
    store::DataDir,
    sys::cgroup::{self, ContainerCgroup, DeviceRule, Layout, Limits},
};

/// Daemon-wide runtime settings and handles.
pub struct Runtime {
    /// The launcher (forks monitors and exec helpers).
    pub launcher: Launcher,
    /// Which cgroup controllers are v1 / v2 on this host.
    pub layout: Layout,
    /// The daemon's runtime directory.
    pub run_dir: PathBuf,
    /// cgroup directory name under each controller.
    pub cgroup_parent: String,
    /// How long a guest gets between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    /// Bound of each container's console log in KiB (device.conf `console_log_kib`).
    pub console_log_kib: u32,
    /// Devices assigned exclusively (`assign_dev`) to a running container: rule → (uuid, name).
    pub claims: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
    /// Serialises user-namespace range allocation.
    pub id_lock: std::sync::Mutex<()>,
    /// Subnet offsets and physical interface claims.
    pub net: super::network::Network,
    /// GuestOS images mounted once for all containers.
    pub images: SharedImages,
    /// How containers enter their root on this host (pivot_root unless cmld's root is the
    /// initial rootfs).
    pub root_switch: crate::launcher::root::RootSwitch,
}

/// (image, its inode, file system type, mount options).
type ImageKey = (PathBuf, u64, String, Option<String>);

/// GuestOS images (SHARED, SHARED_RW, OVERLAY_RO: read-only by definition) mounted once, read-only,
/// below `<run>/images/`, and bound into every container that uses them. Compared with a loop device
/// and a mount per container start, this saves the attach and the mount, and — above all — the
/// page cache stays warm: a fresh squashfs mount would decompress the guest's init binary again
/// at every start. The mounts stay while cmld runs (a running container keeps its bind alive
/// anyway) and are detached at its exit; a leftover of a crashed cmld is detached at start.
#[derive(Debug)]
pub struct SharedImages {
    dir: PathBuf,
    /// (image, its inode, file system type, options) → mount point. The inode tells a GuestOS
    /// pushed again under the same name and version from the one mounted.
    mounted: std::sync::Mutex<std::collections::HashMap<ImageKey, PathBuf>>,
}

impl SharedImages {
    /// Images under `dir` (`<run>/images`); detaches whatever a previous cmld left there.
    pub fn new(dir: PathBuf) -> SharedImages {
        let images = SharedImages {
            dir,
            mounted: Default::default(),
        };
        images.detach_all();
        images
    }

    /// The mount point of `image` (mounted now if it is not yet).
    pub fn mount(&self, image: &Path, fstype: &str, data: Option<&str>) -> Result<PathBuf, String> {
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(image).map_err(|e| e.to_string())?);
        let key = (
            image.to_path_buf(),
            ino,
            fstype.to_owned(),
            data.map(str::to_owned),
        );
        let mut mounted = self
            .mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = mounted.get(&key) {
            return Ok(p.clone());
        }
        let name = openssl::sha::sha256(format!("{}\0{ino}\0{fstype}\0{data:?}", image.display()).as_bytes());
        let point = self
            .dir
            .join(name[..8].iter().map(|b| format!("{b:02x}")).collect::<String>());
        fs::create_dir_all(&point).map_err(|e| format!("{}: {e}", point.display()))?;
        let dev = crate::sys::loopdev::LoopDevice::attach(image, true).map_err(|e| e.to_string())?;
        let flags =
            nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID;
        nix::mount::mount(Some(&dev.path()), &point, Some(fstype), flags, data)
            .map_err(|e| format!("mount {} on {}: {e}", dev.path().display(), point.display()))?;
        // The mount holds the loop device now; auto-clear detaches it when the mount goes.
        drop(dev);
        mounted.insert(key, point.clone());
        Ok(point)
    }

    /// Detaches every image mount (lazily: containers that use one keep it until they end).
    pub fn detach_all(&self) {
        self.mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(e.path());
        }
    }
}

impl Runtime {
    /// Claims `assign_dev` devices for a container; refused, naming the holder, when another
    /// container holds one of them. All or nothing.
    pub fn claim_devices(&self, uuid: &str, name: &str, rules: &[DeviceRule]) -> Result<(), StartError> {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in rules {
            if let Some((holder, holder_name)) = claims.get(&r.to_v1()).filter(|(u, _)| u != uuid) {
                return Err(StartError::at(
                    "assign devices",
                    format!(
                        "device {} is assigned to container {holder_name} ({holder})",
                        r.to_v1()
                    ),
                ));
            }
        }
        for r in rules {
            claims.insert(r.to_v1(), (uuid.to_owned(), name.to_owned()));
        }
        Ok(())
    }

    /// The container's user-namespace range: allocated once (the lowest free one) and kept in
    /// `containers/<uuid>.uid`. Container ids 0..65536 map to host ids `base..base+65536`, with
    /// `base` = 100000 + k × 65536.
    pub fn id_range(&self, data: &DataDir, uuid: &uuid::Uuid) -> Result<IdMap, StartError> {
        const FIRST: u32 = 100_000;
        const COUNT: u32 = 65_536;
        let step = "allocate the user namespace range";
        let _alloc = self
            .id_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = data.container_file(uuid, "uid");
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(base) = text.trim().parse::<u32>()
        {
            return Ok(IdMap { base, count: COUNT });
        }
        let mut used = std::collections::HashSet::new();
        if let Ok(entries) = fs::read_dir(data.containers_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".uid")
                    && let Some(b) = fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok())
                {
                    used.insert(b);
                }
            }
        }
        let base = (0u32..)
            .map(|k| FIRST + k * COUNT)
            .find(|b| !used.contains(b))
            .ok_or_else(|| StartError::at(step, "no free range"))?;
        crate::store::atomic_write(&path, base.to_string().as_bytes(), 0o600)
            .map_err(|e| StartError::at(step, e))?;
        Ok(IdMap { base, count: COUNT })
    }

    /// Releases a container's device and physical interface claims.
    pub fn release_devices(&self, uuid: &str) {
        self.net.release_all(uuid);
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (u, _)| u != uuid);
    }
}

/// A start that could not be prepared or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("start failed at step '{step}': {reason}")]
pub struct StartError {
    /// The step.
    pub step: String,
    /// Why.
    pub reason: String,
}

impl StartError {
    /// A failed step.
    pub fn at(step: &str, reason: impl std::fmt::Display) -> Self {
        StartError {
            step: step.into(),
            reason: reason.to_string(),
        }
    }
}

/// Capabilities every container loses (SPEC §4.2), as linux/capability.h numbers.
const ALWAYS_DROPPED: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_RAWIO,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_SYS_PACCT,
    caps::Capability::CAP_SYS_PTRACE,
    caps::Capability::CAP_LINUX_IMMUTABLE,
    caps::Capability::CAP_IPC_OWNER,
    caps::Capability::CAP_LEASE,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_AUDIT_CONTROL,
    caps::Capability::CAP_SYSLOG,
    caps::Capability::CAP_WAKE_ALARM,
    caps::Capability::CAP_BLOCK_SUSPEND,
];

/// The capabilities a container's bounding set loses.
pub fn dropped_caps(userns: bool) -> Vec<u8> {
    let mut v: Vec<u8> = ALWAYS_DROPPED.iter().map(|c| c.index()).collect();
    if !userns {
        // Without a user namespace, CAP_SYS_ADMIN would be the host's: no mounting.
        v.push(caps::Capability::CAP_SYS_ADMIN.index());
    }
    v
}

/// Device nodes created in every container's /dev (the default allow-list; ptmx is a symlink to
/// the container's own devpts instance).
pub const DEVICE_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("fuse", 10, 229),
    ("net/tun", 10, 200),
];

/// Default pids limit of a container.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// Everything prepared on the host for one start; undone by [`Prepared::cleanup`].
pub struct Prepared {
    /// The plan for the launcher.
    pub plan: StartPlan,
    /// The container's cgroup.
    pub cgroup: ContainerCgroup,
}

impl Prepared {
    /// Removes what [`prepare`] created: the cgroup (after killing what is left in it) and the run
    /// directory. Collects every error.
    pub fn cleanup(&self) -> Vec<String> {
        cleanup(&self.cgroup, &self.plan.run_dir)
    }
}

/// Removes a container's cgroup and run directory (also for an adopted container) — all but its
/// console log, see [`clear_run_dir`].
pub fn cleanup(cg: &ContainerCgroup, run_dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    // After a normal exit nothing is left (the pid namespace died with its init): the kernel's
    // rmdir says so. Only when some directory is still busy are its processes hunted down.
    if !cg.remove_if_empty() {
        cg.kill_all();
        if let Err(e) = cg.remove() {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = clear_run_dir(run_dir) {
        errors.push(format!("remove {}: {e}", run_dir.display()));
    }
    errors
}

/// Files of a run directory that outlive the run: the console log stays readable (`control logs`)
/// until the next start clears the directory, also across a cmld restart.
pub const KEPT_AFTER_RUN: &[&str] = &[crate::launcher::console::LOG_FILE];

/// Empties a run directory except for [`KEPT_AFTER_RUN`]; an empty log is removed too, and the
/// directory with it when nothing is left.
pub fn clear_run_dir(run_dir: &Path) -> std::io::Result<()> {
    let entries = match fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut kept = false;
    for e in entries {
        let e = e?;
        let path = e.path();
        let keep = e
            .file_name()
            .to_str()
            .is_some_and(|n| KEPT_AFTER_RUN.contains(&n))
            && e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0);
        if keep {
            kept = true;
        } else if e.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    if !kept {
        match fs::remove_dir(run_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a run directory holds more than what outlives a run (see [`KEPT_AFTER_RUN`]): the
/// traces of a run or of a start.
pub fn run_dir_in_use(run_dir: &Path) -> bool {
    fs::read_dir(run_dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_none_or(|n| !KEPT_AFTER_RUN.contains(&n))
        })
    })
}

fn size_of_empty(cfg: &ContainerConfig, m: &crate::protocol::pb::GuestOsMount) -> u32 {
    cfg.image_sizes
        .iter()
        .find(|s| s.image_name == m.image_file)
        .map(|s| u32::try_from(s.image_size).unwrap_or(u32::MAX))
        .unwrap_or_else(|| m.def_size())
}

/// Creates a per-container ext4 image on first use: a sparse file of `size_mb` MiB, formatted.
fn ensure_ext4_image(path: &Path, size_mb: u32, owner: Option<u32>, encrypt: bool) -> Result<(), StartError> {
    if path.exists() {
        return Ok(());
    }
    let step = "create the data image";
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| StartError::at(step, format!("{}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("img.new");
    // A leftover of a start a crash interrupted: its mkfs may still be running. Unlinked first, it
    // finishes on a file no one sees; a truncate would let it write into ours.
    let _ = fs::remove_file(&tmp);
    let f = fs::File::create(&tmp).map_err(|e| StartError::at(step, format!("{}: {e}", tmp.display())))?;
    f.set_len(u64::from(size_mb) * 1024 * 1024)
        .map_err(|e| StartError::at(step, e))?;
    drop(f);
    let mut mkfs = Command::new("mkfs.ext4");
    if encrypt {
        // fscrypt support; the container's data directory gets a v2 policy at start.
        mkfs.args(["-O", "encrypt"]);
    }
    let out = mkfs
        .args(["-q", "-F", "-E"])
        .arg(match owner {
            // The volume's root belongs to the container's root (its user namespace maps it there).
            Some(id) => format!("lazy_itable_init=1,lazy_journal_init=1,root_owner={id}:{id}"),
            None => "lazy_itable_init=1,lazy_journal_init=1".to_owned(),
        })
        .arg(&tmp)
        .output()
        .map_err(|e| StartError::at(step, format!("mkfs.ext4: {e} (install e2fsprogs)")))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(StartError::at(
            step,
            format!("mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    fs::rename(&tmp, path).map_err(|e| StartError::at(step, e))
}

fn init_argv(os: &GuestOs) -> Vec<String> {
    let mut argv = vec![os.config.init_path().to_owned()];
    argv.extend(os.config.init_param.iter().cloned());
    argv
}

/// Turns GuestOS mounts into mount steps and the images to attach.
struct Planner<'a> {
    /// Mounted GuestOS images.
    shared: &'a SharedImages,
    /// Host uid/gid owning new volumes (the container's mapped root), with a user namespace.
    owner: Option<u32>,
    /// Encrypt EMPTY and OVERLAY_RW ext4 volumes (the container has a volume key).
    encrypt: bool,
    data: &'a DataDir,
    uuid: uuid::Uuid,
    cfg: &'a ContainerConfig,
    os: &'a GuestOs,
    mounts: Vec<MountSpec>,
    images: Vec<ImageSpec>,
}

impl Planner<'_> {
    /// A GuestOS image, checked against its declared size.
    fn guestos_image(&self, m: &crate::protocol::pb::GuestOsMount) -> Result<PathBuf, StartError> {
        let path = self.os.dir.join(format!("{}.img", m.image_file));
        let size = fs::metadata(&path)
            .map(|md| md.len())
            .map_err(|e| StartError::at("check GuestOS images", format!("{}: {e}", path.display())))?;
        if Some(size) != m.image_size {
            return Err(StartError::at(
                "check GuestOS images",
                format!(
                    "{} has {size} bytes, the GuestOS says {:?}",
                    path.display(),
                    m.image_size
                ),
            ));
        }
        Ok(path)
    }

    /// A GuestOS image mounted read-only once for all containers (see [`SharedImages`]).
    fn shared(&self, m: &crate::protocol::pb::GuestOsMount) -> Result<PathBuf, StartError> {
        let image = self.guestos_image(m)?;
        self.shared
            .mount(&image, &m.fs_type, m.mount_data.as_deref())
            .map_err(|e| StartError::at("mount GuestOS image", format!("{}: {e}", image.display())))
    }

    /// The per-container image of a mount (`containers/<uuid>/<file>.img`).
    fn own_image(&self, m: &crate::protocol::pb::GuestOsMount) -> PathBuf {
        let file = self
            .cfg
            .image_sizes
            .iter()
            .find(|s| s.image_name == m.image_file)
            .and_then(|s| s.image_file.clone())
            .unwrap_or_else(|| m.image_file.clone());
        self.data.container_images(&self.uuid).join(format!("{file}.img"))
    }

    fn attach(&mut self, path: PathBuf, read_only: bool) -> usize {
        self.images.push(ImageSpec { path, read_only });
        self.images.len() - 1
    }

    /// Plans `list` (parents before children) with every target under `prefix`.
    fn plan(&mut self, list: &[crate::protocol::pb::GuestOsMount], prefix: &str) -> Result<(), StartError> {
        let mut sorted: Vec<_> = list.iter().collect();
        sorted.sort_by_key(|m| {
            if m.mount_point == "/" {
                0
            } else {
                m.mount_point.matches('/').count()
            }
        });
        if prefix.is_empty() && sorted.first().is_none_or(|m| m.mount_point != "/") {
            return Err(StartError::at(
                "resolve GuestOS",
                format!("GuestOS {} has no mount for /", self.os.stem()),
            ));
        }
        for m in sorted {
            let t = m.mount_type();
            let source = match t {
                MountType::Shared => MountSource::SharedDir {
                    source: self.shared(m)?,
                },
                MountType::SharedRw => MountSource::SharedOverlay {
                    lower: self.shared(m)?,
                },
                MountType::OverlayRo => MountSource::OverlayRo {
                    layer: self.shared(m)?,
                },
                MountType::Empty if m.fs_type.starts_with("tmpfs") => MountSource::Tmpfs {
                    size_mb: size_of_empty(self.cfg, m),
                },
                MountType::Empty | MountType::OverlayRw => {
                    let path = self.own_image(m);
                    ensure_ext4_image(&path, size_of_empty(self.cfg, m), self.owner, self.encrypt)?;
                    let index = self.attach(path, false);
                    if self.encrypt {
                        MountSource::EncryptedLoop {
                            index,
                            fstype: "ext4".into(),
                            overlay: t == MountType::OverlayRw,
                        }
                    } else if t == MountType::Empty {
                        MountSource::Loop {
                            index,
                            fstype: "ext4".into(),
                            read_only: false,
                        }
                    } else {
                        MountSource::OverlayRw {
                            index,
                            fstype: "ext4".into(),
                        }
                    }
                }
                MountType::BindFile => MountSource::BindFile {
                    source: self.guestos_image(m)?,
                    read_only: true,
                },
                MountType::BindFileRw => {
                    // The container writes its own copy, never the shared GuestOS file.
                    let own = self.own_image(m);
                    if !own.exists() {
                        let step = "copy the bind file";
                        let src = self.guestos_image(m)?;
                        if let Some(dir) = own.parent() {
                            fs::create_dir_all(dir).map_err(|e| StartError::at(step, e))?;
                        }
                        let tmp = own.with_extension("img.new");
                        fs::copy(&src, &tmp).map_err(|e| StartError::at(step, e))?;
                        if let Some(id) = self.owner {
                            let (u, g) = (
                                Some(nix::unistd::Uid::from_raw(id)),
                                Some(nix::unistd::Gid::from_raw(id)),
                            );
                            nix::unistd::chown(&tmp, u, g).map_err(|e| StartError::at(step, e))?;
                        }
                        fs::rename(&tmp, &own).map_err(|e| StartError::at(step, e))?;
                    }
                    MountSource::BindFile {
                        source: own,
                        read_only: false,
                    }
                }
                MountType::StoreOnly => continue,
                other @ (MountType::Flash | MountType::Device | MountType::DeviceRw | MountType::Copy) => {
                    return Err(StartError::at(
                        "plan mounts",
                        format!(
                            "mount type {} ({}) is not available in hosted mode",
                            other.as_str_name(),
                            m.mount_point
                        ),
                    ));
                }
            };
            let target = if m.mount_point == "/" && !prefix.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}{}", m.mount_point)
            };
            self.mounts.push(MountSpec {
                target,
                source,
                data: m.mount_data.clone(),
            });
        }
        Ok(())
    }
}

/// The file in a container's run directory that lists its device rules in force, in order, one
/// per line (`[deny ]c 1:3 rwm`): the v2 device program is made from the whole list, so a rule
/// added at run time (also after cmld restarted and adopted the container) needs the others.
fn device_rules_file(run_dir: &Path) -> PathBuf {
    run_dir.join("devices")
}

/// Records the device rules of a running container (see [`device_rules_file`]).
pub fn save_device_rules(run_dir: &Path, rules: &[DeviceRule]) -> std::io::Result<()> {
    let text: String = rules.iter().map(|r| format!("{r}\n")).collect();
    let file = device_rules_file(run_dir);
    let tmp = file.with_extension("new");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, &file)
}

/// The device rules a running container was given (see [`device_rules_file`]).
pub fn load_device_rules(run_dir: &Path) -> Result<Vec<DeviceRule>, String> {
    let file = device_rules_file(run_dir);
    let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            l.parse::<DeviceRule>()
                .map_err(|e| format!("{}:{}: {e}", file.display(), i + 1))
        })
        .collect()
}

/// Prepares a start: checks the GuestOS images, creates per-container images on first use, the run
/// directory and the cgroup, and builds the plan. On error nothing it created remains.
pub fn prepare(
    rt: &Runtime,
    data: &DataDir,
    uuid: &str,
    cfg: &ContainerConfig,
    os: &GuestOs,
    setup: bool,
    key: Option<&crate::softtoken::MasterKey>,
) -> Result<Prepared, StartError> {
    let uuid_v = uuid::Uuid::parse_str(uuid).map_err(|e| StartError::at("resolve container", e))?;
    let idmap = if cfg.userns() {
        Some(rt.id_range(data, &uuid_v)?)
    } else {
        None
    };
    let mut planner = Planner {
        shared: &rt.images,
        owner: idmap.map(|m| m.base),
        encrypt: key.is_some(),
        data,
        uuid: uuid_v,
        cfg,
        os,
        mounts: Vec::new(),
        images: Vec::new(),
    };
    let keepalive = "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done";
    let argv = if setup {
        // Setup mode: `mounts_setup` (or a tmpfs with the host's static busybox) is the root and the
        // container's normal mounts go under /setup.
        let argv = if os.config.mounts_setup.is_empty() {
            let busybox = PathBuf::from("/bin/busybox");
            if !busybox.is_file() {
                return Err(StartError::at(
                    "setup root",
                    "the GuestOS has no mounts_setup and the host has no static busybox (install busybox-static)",
                ));
            }
            planner.mounts.push(MountSpec {
                target: "/".into(),
                source: MountSource::BusyboxRoot { busybox },
                data: None,
            });
            vec!["/bin/sh".to_owned(), "-c".to_owned(), keepalive.to_owned()]
        } else {
            planner.plan(&os.config.mounts_setup, "")?;
            init_argv(os)
        };
        planner.plan(&os.config.mounts, "/setup")?;
        argv
    } else {
        planner.plan(&os.config.mounts, "")?;
        init_argv(os)
    };
    let Planner { mounts, images, .. } = planner;

    let run_dir = rt.run_dir.join(uuid);
    let _ = fs::remove_dir_all(&run_dir);
    let root = run_dir.join("root");
    fs::create_dir_all(&root)
        .map_err(|e| StartError::at("create the run directory", format!("{}: {e}", root.display())))?;

    let mut devices = cgroup::default_devices();
    let parse = |field: &str, rule: &String| {
        rule.parse::<DeviceRule>().map_err(|e| {
            let _ = fs::remove_dir_all(&run_dir);
            StartError::at("device rules", format!("{field} {rule:?}: {e}"))
        })
    };
    for rule in &cfg.allow_dev {
        devices.push(parse("allow_dev", rule)?);
    }
    let assigned = cfg
        .assign_dev
        .iter()
        .map(|r| parse("assign_dev", r))
        .collect::<Result<Vec<_>, _>>()?;
    if let Err(e) = rt.claim_devices(uuid, &cfg.name, &assigned) {
        let _ = fs::remove_dir_all(&run_dir);
        return Err(e);
    }
    devices.extend(assigned);
    let limits = Limits {
        memory_bytes: (cfg.ram_limit() > 0).then(|| u64::from(cfg.ram_limit()) * 1024 * 1024),
        cpus: cfg.assign_cpus.clone(),
        pids_max: Some(DEFAULT_PIDS_MAX),
        devices,
    };
    let t_cg = std::time::Instant::now();
    let cg = ContainerCgroup::create(&rt.layout, &rt.cgroup_parent, uuid, &limits).map_err(|e| {
        let _ = fs::remove_dir_all(&run_dir);
        rt.release_devices(uuid);
        StartError::at("create cgroup", e)
    })?;
    tracing::debug!(us = t_cg.elapsed().as_micros() as u64, "cgroup create timing");
    if let Err(e) = save_device_rules(&run_dir, &limits.devices) {
        let _ = cleanup(&cg, &run_dir);
        rt.release_devices(uuid);
        return Err(StartError::at("record the device rules", e));
    }

    let net = if cfg.netns() {
        match rt.net.plan(data, &uuid_v, cfg) {
            Ok(n) => Some(n),
            Err(e) => {
                let _ = cleanup(&cg, &run_dir);
                rt.release_devices(uuid);
                return Err(StartError::at("plan the network", e));
            }
        }
    } else {
        None
    };
    let mut mounts = mounts;
    if let Some(dns) = rt.net.dns_server(cfg).filter(|_| cfg.netns()) {
        // Bound read-only over the guest's /etc/resolv.conf (created when /etc is writable).
        let file = run_dir.join("resolv.conf");
        if let Err(e) = fs::write(&file, format!("nameserver {dns}\n")) {
            let _ = cleanup(&cg, &run_dir);
            rt.release_devices(uuid);
            return Err(StartError::at("write resolv.conf", e));
        }
        mounts.push(MountSpec {
            target: "/etc/resolv.conf".into(),
            source: MountSource::BindFile {
                source: file,
                read_only: true,
            },
            data: None,
        });
    }

    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "container=cml".to_owned(),
        // systemd takes the machine ID from here when the image's /etc/machine-id is empty.
        format!("container_uuid={uuid}"),
    ];
    env.extend(os.config.init_env.iter().cloned());
    env.extend(cfg.init_env.iter().cloned());
    let notify_socket = os.config.feature_notify_ready().then(|| run_dir.join("notify"));
    if notify_socket.is_some() {
        env.push("NOTIFY_SOCKET=/run/notify".into());
    }
    let plan = StartPlan {
        uuid: uuid.to_owned(),
        hostname: cfg.name.clone(),
        run_dir,
        root,
        mounts,
        images,
        netns: cfg.netns(),
        net,
        // No migration that takes the kernel's global threadgroup lock: the init is cloned into
        // its cgroup2 directory and moves itself into its v1 cgroups.
        cgroup_tasks: cg.v1_tasks_files(),
        cgroup_into: cg.v2_dir().map(Path::to_path_buf),
        device_filter: cg.v2_devices_dir().map(|dir| DeviceFilterPlan {
            cgroup: dir.to_path_buf(),
            rules: limits.devices.iter().map(ToString::to_string).collect(),
        }),
        devices: DEVICE_NODES
            .iter()
            .map(|(n, a, b)| ((*n).to_owned(), *a, *b))
            .collect(),
        // In setup mode SYS_ADMIN is kept (SPEC §4.2): the user sets the container up.
        drop_caps: dropped_caps(cfg.userns() || setup),
        argv,
        env,
        notify_socket,
        setup,
        userns: idmap,
        volume_key: key.map(|k| crate::launcher::plan::SecretHex::encode(k.bytes())),
        cgroup_view: cg
            .guest_view(&rt.layout)
            .into_iter()
            .map(|g| CgroupMount {
                name: g.name,
                dir: g.dir,
                writable: g.writable,
            })
            .collect(),
        machine_id: uuid_v.simple().to_string(),
        root_switch: rt.root_switch,
        console: crate::launcher::console::ConsolePlan {
            log_kib: rt.console_log_kib,
            tty: None,
        },
    };
    Ok(Prepared { plan, cgroup: cg })
}
