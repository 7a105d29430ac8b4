//! How a container's init enters its root, the last mount step before the guest runs.
//!
//! **pivot_root** (every host that left its initramfs): `pivot_root(".", ".")` in the container's
//! root stacks the old root on it, and detaching that leaves the container's root mounted on the
//! mount namespace's root mount, with no host mount left in the namespace.
//!
//! **Move + chroot** (cmld's root is the initial rootfs, as on a device whose cmld runs from the
//! initramfs): `pivot_root(2)` refuses to move a mount that is attached to nothing (EINVAL), and the
//! initial rootfs is the root of every mount namespace copied from it. Then the container's root is
//! moved (`MS_MOVE`) onto `/` — the namespace's root mount, exactly where pivot_root leaves it — every
//! other mount of the namespace (the host's `/proc`, `/sys`, data disks, cmld's own run directory)
//! is detached, and the init `chroot`s into it. What keeps this as tight as pivot_root:
//! - `..` at the container's root: the kernel climbs from the root of a mount to its mount point
//!   only when that is a directory *inside* the parent mount; the container's root is mounted on the
//!   namespace root mount's own root, which is attached to nothing, so `..` stays — also for a
//!   process that escaped a nested chroot through a directory fd or a working directory left
//!   outside it. [`enter_by_move`] checks this shape before the chroot.
//! - No host mount stays in the container's namespace (they would be unreachable, but would pin
//!   the host's file systems and block devices), checked by re-reading mountinfo until none is left.
//! - No descriptor of the old root survives: mountinfo is read through a close-on-exec file that is
//!   closed before the chroot, and the init's working directory is the new root.
//! - The mount namespace is the init's own (unshared at clone) and every mount in it was made
//!   private first, so neither the move nor the detaching reaches the host.
//! - A process of the host is not visible to the guest (own pid namespace), so no
//!   `/proc/<pid>/root` leads to the host's root; `setns` into the container's mount namespace
//!   (`control run`, the monitor) lands on the topmost mount over the namespace root: the container's.
//!
//! What it costs: one read of mountinfo and one `umount2` per top-level host mount per start
//! (about as much as pivot_root's detach of the old root), and the namespace's root mount is the
//! host's rootfs super block itself, not an empty copy of it — out of reach as shown, but memory the
//! container's namespace holds a reference to.

use std::{
    collections::HashSet,
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    unistd::{chdir, chroot, pivot_root},
};
use serde::{Deserialize, Serialize};

use crate::sys::mountinfo::{self, Mount};

/// How the init enters the container's root (decided once per cmld from [`HostRoot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSwitch {
    /// `pivot_root(".", ".")` and detach the old root.
    #[default]
    Pivot,
    /// `MS_MOVE` onto `/`, detach every host mount, `chroot`.
    Move,
}

/// What cmld's own root is (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRoot {
    /// A mount attached to another one (the root after `switch_root`): pivot_root works.
    Mounted,
    /// The root mount of the mount namespace, attached to nothing — the initial rootfs when cmld
    /// runs from the initramfs (`fstype` is `rootfs`): pivot_root refuses it.
    NamespaceRoot {
        /// Its file system type.
        fstype: String,
    },
    /// Not a mount point (cmld runs in a chroot): pivot_root refuses it, and moving a container's
    /// root there would not be safe (`..` would climb out of the directory).
    NotAMountPoint,
}

impl HostRoot {
    /// Looks at this process's root: its mount ID (`statx` of `/`) found in mountinfo.
    pub fn detect() -> std::io::Result<HostRoot> {
        let id = mountinfo::mount_id(Path::new("/"))?;
        Ok(HostRoot::of(id, &mountinfo::read_self()?))
    }

    /// The root whose mount has ID `root_id`, among `mounts` (as listed from that root: a mount
    /// whose own mount point lies outside the root is not listed).
    pub fn of(root_id: u64, mounts: &[Mount]) -> HostRoot {
        match mounts
            .iter()
            .find(|m| m.id == root_id && m.mount_point == Path::new("/"))
        {
            None => HostRoot::NotAMountPoint,
            Some(m) if m.has_no_parent() => HostRoot::NamespaceRoot {
                fstype: m.fstype.clone(),
            },
            Some(_) => HostRoot::Mounted,
        }
    }

    /// The way containers enter their root on this host.
    pub fn switch(&self) -> RootSwitch {
        match self {
            HostRoot::NamespaceRoot { .. } => RootSwitch::Move,
            HostRoot::Mounted | HostRoot::NotAMountPoint => RootSwitch::Pivot,
        }
    }
}

/// Enters `rootfs` (a mount point in the init's own mount namespace, every mount private) the
/// given way; the working directory is the new `/` after it.
pub fn enter(rootfs: &Path, how: RootSwitch) -> Result<(), (String, String)> {
    match how {
        RootSwitch::Pivot => pivot(rootfs).map_err(|e| ("pivot_root".to_owned(), e)),
        RootSwitch::Move => enter_by_move(rootfs).map_err(|e| ("move the root".to_owned(), e)),
    }
}

fn pivot(rootfs: &Path) -> Result<(), String> {
    // The form runc uses, which needs no directory in a read-only root: the old root ends up
    // stacked on the new one and is detached at once.
    chdir(rootfs).map_err(|e| e.to_string())?;
    pivot_root(".", ".").map_err(|e| e.to_string())?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| e.to_string())?;
    chdir("/").map_err(|e| e.to_string())
}

fn enter_by_move(rootfs: &Path) -> Result<(), String> {
    let keep = mountinfo::mount_id(rootfs).map_err(|e| format!("statx {}: {e}", rootfs.display()))?;
    chdir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("MS_MOVE onto /: {e}"))?;
    // Still rooted in the host's root (the move does not change it): host paths resolve there.
    detach_host_mounts(keep)?;
    chroot(".").map_err(|e| format!("chroot: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Detaches every mount of this namespace but its root and the subtree of `keep` (the container's
/// root, just moved onto `/`), top-level ones first (a lazy detach takes the mounts below along),
/// until mountinfo lists none; then checks the container's root sits on the namespace root.
fn detach_host_mounts(keep: u64) -> Result<(), String> {
    // Opened once, close-on-exec, closed on return: the host's /proc goes in the first round, and
    // the file keeps listing from the root it was opened under.
    let mut f = std::fs::File::open("/proc/self/mountinfo").map_err(|e| format!("open mountinfo: {e}"))?;
    for _round in 0..32 {
        let mut text = String::new();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_string(&mut text))
            .map_err(|e| format!("read mountinfo: {e}"))?;
        let mounts = mountinfo::parse(&text);
        let host = host_mounts(&mounts, keep);
        if host.is_empty() {
            return check_shape(&mounts, keep);
        }
        let ids: HashSet<u64> = host.iter().map(|m| m.id).collect();
        for m in host.iter().filter(|m| !ids.contains(&m.parent)) {
            if m.mount_point == Path::new("/") {
                return Err(format!(
                    "mount {} ({}) is stacked on the host's / and cannot be detached",
                    m.id, m.fstype
                ));
            }
            // A path names the topmost mount there: stacked ones go in later rounds.
            match umount2(&m.mount_point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
                Err(e) => return Err(format!("detach {}: {e}", m.mount_point.display())),
            }
        }
    }
    Err("host mounts are still attached after 32 rounds of detaching".into())
}

/// The mounts of a listing that are neither the namespace root nor in `keep`'s subtree.
fn host_mounts(mounts: &[Mount], keep: u64) -> Vec<&Mount> {
    let mut kept = HashSet::from([keep]);
    // Parents come before children in mountinfo, but not always (a moved mount keeps its place):
    // grow the set until it is closed.
    loop {
        let before = kept.len();
        for m in mounts {
            if kept.contains(&m.parent) && !m.has_no_parent() {
                kept.insert(m.id);
            }
        }
        if kept.len() == before {
            break;
        }
    }
    mounts
        .iter()
        .filter(|m| !m.has_no_parent() && !kept.contains(&m.id))
        .collect()
}

/// The container's root must be mounted on the namespace root's own root: then `..` from it goes
/// nowhere (see the module docs).
fn check_shape(mounts: &[Mount], keep: u64) -> Result<(), String> {
    let root = mounts.iter().find(|m| m.id == keep);
    let ok = root.is_some_and(|r| {
        r.mount_point == Path::new("/")
            && mounts
                .iter()
                .any(|p| p.id == r.parent && p.has_no_parent() && p.mount_point == Path::new("/"))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the container's root (mount {keep}) is not on the namespace's root after the move: {root:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITRAMFS: &str = "1 1 0:2 / / rw - rootfs rootfs rw\n\
        20 1 0:20 / /proc rw - proc proc rw\n\
        21 1 0:21 / /sys rw - sysfs sysfs rw\n\
        22 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
        23 1 0:5 / /dev rw - devtmpfs devtmpfs rw\n";

    const SWITCHED: &str = "24 1 0:23 / / rw - tmpfs newroot rw\n\
        25 24 0:20 / /proc rw - proc proc rw\n";

    #[test]
    fn the_initial_rootfs_is_moved_onto_and_a_mounted_root_pivoted() {
        let m = mountinfo::parse(INITRAMFS);
        let r = HostRoot::of(1, &m);
        assert_eq!(
            r,
            HostRoot::NamespaceRoot {
                fstype: "rootfs".into()
            }
        );
        assert_eq!(r.switch(), RootSwitch::Move);
        let m = mountinfo::parse(SWITCHED);
        assert_eq!(HostRoot::of(24, &m), HostRoot::Mounted);
        assert_eq!(HostRoot::of(24, &m).switch(), RootSwitch::Pivot);
        // A chroot: the mount holding the root is not listed.
        assert_eq!(HostRoot::of(7, &m), HostRoot::NotAMountPoint);
    }

    #[test]
    fn this_hosts_root_left_the_initramfs() {
        // The test hosts switch_root out of their initramfs (the VM lab covers the other case).
        assert_eq!(HostRoot::detect().unwrap(), HostRoot::Mounted);
    }

    #[test]
    fn host_mounts_are_everything_but_the_namespace_root_and_the_kept_subtree() {
        // The container's root 40 moved onto /, its /proc (41) and /dev (42, with 43 below).
        let text = format!(
            "{INITRAMFS}40 1 0:40 / / rw - overlay overlay rw\n\
             41 40 0:41 / /proc rw - proc proc rw\n\
             43 42 0:43 / /dev/pts rw - devpts devpts rw\n\
             42 40 0:42 / /dev rw - tmpfs tmpfs rw\n"
        );
        let m = mountinfo::parse(&text);
        let ids: Vec<u64> = host_mounts(&m, 40).iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![20, 21, 22, 23]);
        assert!(check_shape(&m, 40).is_ok());
        // Moved somewhere else than onto the namespace root: refused.
        let m = mountinfo::parse(&format!("{SWITCHED}40 24 0:40 / / rw - overlay overlay rw\n"));
        assert!(check_shape(&m, 40).is_err());
    }
}
