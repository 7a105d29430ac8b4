//! `/proc/<pid>/mountinfo` read as a list of mounts, and the mount ID of a path (`statx`).
//!
//! A line is `id parent maj:min root mountpoint options [optional…] - fstype source superoptions`
//! (proc(5)); paths are octal-escaped (`\040` for a space). Only mounts reachable from the reading
//! process's root are listed, and mount points are relative to that root.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

/// One mount of a mountinfo listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's ID (unique in the system while it is mounted).
    pub id: u64,
    /// The ID of the mount it is attached to; equal to `id` for the root of a mount namespace,
    /// which has no parent.
    pub parent: u64,
    /// The directory of the file system mounted here (`/` unless a bind of a subtree).
    pub root: PathBuf,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBuf,
    /// File system type (`rootfs` for the initial root file system).
    pub fstype: String,
    /// Super block options (the field after the source).
    pub super_options: String,
}

impl Mount {
    /// The root of its mount namespace: attached to nothing.
    pub fn has_no_parent(&self) -> bool {
        self.id == self.parent
    }
}

/// Parses mountinfo text; lines that do not have the format are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 5 || post.len() < 3 {
        return None;
    }
    Some(Mount {
        id: pre[0].parse().ok()?,
        parent: pre[1].parse().ok()?,
        root: unescape(pre[3]),
        mount_point: unescape(pre[4]),
        fstype: post[0].to_owned(),
        super_options: post[2].to_owned(),
    })
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_self() -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Undoes the octal escapes (`\040` for space, …) mountinfo uses in paths.
pub fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // At most \377: the first digit is 0-3, so the value fits a byte.
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The ID of the mount `path` is on (as mountinfo's first field), from `statx(STATX_MNT_ID)`
/// (Linux 5.8).
pub fn mount_id(path: &Path) -> io::Result<u64> {
    let c =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero `statx` is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `stx` is a writable statx the
    // kernel fills.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gave no mount ID (Linux 5.8 or later needed)",
        ));
    }
    Ok(stx.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_with_escapes_and_optional_fields() {
        let m = parse(
            "1 1 0:2 / / rw - rootfs rootfs rw,size=1004k\n\
             22 1 0:21 / /proc rw,nosuid shared:5 master:1 - proc proc rw\n\
             30 22 0:40 /sub /mnt/a\\040b ro - ext4 /dev/vda ro\n\
             garbage\n",
        );
        assert_eq!(m.len(), 3);
        assert!(m[0].has_no_parent());
        assert_eq!(m[0].fstype, "rootfs");
        assert_eq!(m[1].mount_point, Path::new("/proc"));
        assert!(!m[1].has_no_parent());
        assert_eq!(m[2].mount_point, Path::new("/mnt/a b"));
        assert_eq!(m[2].root, Path::new("/sub"));
        assert_eq!(m[2].super_options, "ro");
    }

    #[test]
    fn the_mount_id_of_proc_is_in_mountinfo() {
        let id = mount_id(Path::new("/proc")).unwrap();
        let m = read_self().unwrap();
        assert!(
            m.iter().any(|m| m.id == id && m.fstype == "proc"),
            "{id} not a proc mount in {m:?}"
        );
    }
}
