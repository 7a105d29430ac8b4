//! User namespaces made ahead of the process that will live in them, and idmapped bind mounts.
//!
//! A container with a user namespace needs it before its init exists: the GuestOS images are bound
//! into its root *idmapped* with the container's mapping (so the image's root-owned files belong to
//! the container's root, and a SHARED_RW overlay on top is writable by it), and the init joins it
//! later with `setns(2)`. [`UserNamespace::create`] forks a short-lived child into a new user
//! namespace, writes its `uid_map`/`gid_map` from outside (we are root in the parent namespace), and
//! keeps a descriptor of the namespace; the child exits at once, the descriptor keeps the namespace.
//!
//! [`bind_idmapped`] is the new mount API sequence: `open_tree(OPEN_TREE_CLONE)` detaches a copy of
//! the source mount, `mount_setattr(MOUNT_ATTR_IDMAP)` gives it the namespace's mapping, and
//! `move_mount` attaches it at the target. The file system must support idmapped mounts
//! (`FS_ALLOW_IDMAP`: ext4, squashfs, tmpfs, overlayfs … on this project's kernels); otherwise the
//! kernel answers `EINVAL` and the caller decides what to do.

use std::{
    ffi::CString,
    io::Read,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::{errno::Errno, sched::CloneFlags, sys::wait::waitpid};

use super::process::{self, Forked};

/// A user namespace held by a descriptor.
#[derive(Debug)]
pub struct UserNamespace {
    fd: OwnedFd,
}

impl UserNamespace {
    /// Creates a user namespace in which ids `0..count` are host ids `base..base+count` (uids and
    /// gids alike). Forks: single-threaded callers only.
    pub fn create(base: u32, count: u32) -> Result<UserNamespace, String> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let child = match process::fork_into(CloneFlags::CLONE_NEWUSER) {
            Ok(Forked::Child) => {
                // Wait until the parent has opened our namespace (it closes its end), then leave.
                drop(w);
                let mut b = [0u8; 1];
                let _ = std::fs::File::from(r).read(&mut b);
                process::exit_now(0)
            }
            Ok(Forked::Parent(pid)) => pid,
            Err(e) => return Err(format!("clone a user namespace: {e}")),
        };
        drop(r);
        let result = (|| {
            let line = format!("0 {base} {count}\n");
            for file in ["uid_map", "gid_map"] {
                let path = format!("/proc/{}/{file}", child.as_raw());
                std::fs::write(&path, &line).map_err(|e| format!("{path}: {e}"))?;
            }
            let path = format!("/proc/{}/ns/user", child.as_raw());
            std::fs::File::open(&path)
                .map(|f| UserNamespace { fd: f.into() })
                .map_err(|e| format!("{path}: {e}"))
        })();
        drop(w);
        let _ = waitpid(child, None);
        result
    }

    /// The namespace's descriptor (for `setns(2)` and `MOUNT_ATTR_IDMAP`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Whether the file system at `source` can be idmapped through `userns`: a detached copy of the
/// mount is given the mapping and thrown away; nothing is attached anywhere.
pub fn can_idmap(source: &Path, userns: BorrowedFd<'_>) -> bool {
    idmapped_tree(source, userns, false).is_ok()
}

/// Binds `source` onto `target`, idmapped through `userns`, without device nodes, read-only if
/// asked.
pub fn bind_idmapped(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    read_only: bool,
) -> nix::Result<()> {
    let tree = idmapped_tree(source, userns, read_only)?;
    let dst = cpath(target)?;
    let empty = c"";
    // SAFETY: move_mount attaches the detached tree of `tree` at `dst` (a NUL-terminated path that
    // outlives the call); both descriptors are valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached copy of the mount at `source` with `userns`'s mapping, without device nodes and
/// read-only if asked; `EINVAL` when its file system cannot be idmapped.
fn idmapped_tree(source: &Path, userns: BorrowedFd<'_>, read_only: bool) -> nix::Result<OwnedFd> {
    let src = cpath(source)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path that outlives the call and flags; it
    // returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just returned by open_tree and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ro = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | ro,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (a valid mount_attr of the size passed) and changes only the
    // detached tree behind `tree`, named by the empty path with AT_EMPTY_PATH.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(tree)
}
