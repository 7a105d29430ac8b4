//! Extended attributes (`security.capability`, `user.*`, …) of files being written, and reading
//! them back.
//!
//! Setting goes through an open descriptor (`fsetxattr`) or, for names that cannot be opened for
//! writing (symlinks, device nodes, fifos), through the name inside an open directory: the path
//! `/proc/self/fd/<dir>/<name>` with `lsetxattr`, so the directory is the one held open (no path
//! above it is looked up again) and the last component is never followed. Order matters to callers:
//! the kernel drops `security.capability` when a file's owner changes or it is written, so set it
//! after `chown` and after the data.

use std::{
    ffi::{CStr, CString, OsStr},
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::errno::Errno;

fn cstring(bytes: &[u8]) -> nix::Result<CString> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// Sets attribute `name` to `value` on the open file `fd`.
pub fn fset(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `name` is a NUL-terminated string and `value` a live slice whose pointer and length
    // are passed together; the kernel only reads them during the call. `fd` is borrowed for it.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// Sets attribute `name` to `value` on `entry` (one path component) of the open directory `dir`,
/// without following `entry` if it is a symlink.
pub fn set_at_nofollow(dir: BorrowedFd<'_>, entry: &OsStr, name: &CStr, value: &[u8]) -> nix::Result<()> {
    if entry.is_empty() || entry.as_bytes().contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(entry.as_bytes());
    let path = cstring(&path)?;
    // SAFETY: `path` and `name` are NUL-terminated strings and `value` a live slice whose pointer
    // and length are passed together; the kernel only reads them during the call.
    let ret = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// The value of attribute `name` of `path` (not following a final symlink); `None` if it has none.
pub fn get_nofollow(path: &Path, name: &str) -> nix::Result<Option<Vec<u8>>> {
    let path = cstring(path.as_os_str().as_bytes())?;
    let name = cstring(name.as_bytes())?;
    loop {
        // SAFETY: a size query: with a null buffer and size 0 the kernel writes nothing; the
        // strings are NUL-terminated and live for the call.
        let len = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        let len = match Errno::result(len) {
            Ok(n) => n as usize,
            Err(Errno::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; len];
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own mutably for
        // the call; the strings are NUL-terminated and live for the call.
        let got =
            unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(got) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            // The value grew between the two calls: ask again.
            Err(Errno::ERANGE) => continue,
            Err(Errno::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn set_on_a_file_and_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        match fset(f.as_fd(), c"user.cml.a", b"one") {
            // A file system without user xattrs (tmpfs before 6.6): nothing to check here.
            Err(Errno::EOPNOTSUPP) => return,
            r => r.unwrap(),
        }
        assert_eq!(get_nofollow(&file, "user.cml.a").unwrap(), Some(b"one".to_vec()));
        let d = std::fs::File::open(dir.path()).unwrap();
        set_at_nofollow(d.as_fd(), OsStr::new("f"), c"user.cml.b", b"two").unwrap();
        assert_eq!(get_nofollow(&file, "user.cml.b").unwrap(), Some(b"two".to_vec()));
        assert_eq!(get_nofollow(&file, "user.cml.none").unwrap(), None);
        assert_eq!(
            set_at_nofollow(d.as_fd(), OsStr::new("../f"), c"user.cml.c", b""),
            Err(Errno::EINVAL)
        );
    }
}
