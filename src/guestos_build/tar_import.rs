//! `cml-guestos build --rootfs-tar FILE`: a root file system from a tar archive (what `mmdebstrap`,
//! `docker export` and `podman export` write), plain, gzip or zstd — told apart by the first bytes,
//! not the file name.
//!
//! Kept from the archive: numeric owners (names are ignored), modes including setuid/setgid/sticky,
//! extended attributes (PAX `SCHILY.xattr.*`, as GNU tar `--xattrs`, Go's archive/tar and bsdtar
//! write them; e.g. `security.capability`), hard links, symlinks, character and block devices,
//! fifos, and modification times (PAX sub-second ones too). Not kept: ACLs (`SCHILY.acl.*`), access
//! times, owner names.
//!
//! Nothing is ever written outside the destination directory:
//! - Entry names and hard link targets are split into components. An absolute name (`/etc/x`) or a
//!   `..` component anywhere is refused with an error naming the entry — also `a/../b`, which would
//!   stay inside: no tool we know writes such names, and refusing is simpler to trust than resolving.
//!   (GNU tar strips a leading `/` instead; archives of root file systems have relative names.)
//! - Every directory on the way to an entry is opened one component at a time, relative to the one
//!   before, with `O_NOFOLLOW | O_DIRECTORY`: a component that is a symlink (say `link -> /etc`,
//!   placed earlier in the archive, then `link/passwd`) fails the lookup instead of being followed,
//!   and the entry is refused. No lookup ever starts from `/` or crosses `..`.
//! - The entry itself is created with `*at` calls in that directory that do not follow a final
//!   symlink: an existing non-directory of that name is unlinked first (a later entry replaces an
//!   earlier one, as with tar), files are created `O_CREAT | O_EXCL | O_NOFOLLOW`, metadata is set
//!   through the new file's descriptor or `AT_SYMLINK_NOFOLLOW`, and a hard link is made to the
//!   target's own inode (`linkat` without `AT_SYMLINK_FOLLOW`: a symlink is linked, not followed).
//!
//! Order per file, forced by the kernel: data, then owner (`chown` clears setuid/setgid and
//! `security.capability`), then mode, then extended attributes, then times. Directory times are set
//! last, deepest first, since creating entries inside a directory changes its time.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    io::{self, BufRead, BufReader, Read},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat},
    sys::{
        stat::{
            FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, mkdirat,
            mknodat, utimensat,
        },
        time::TimeSpec,
    },
    unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat},
};
use tar::EntryType;

use crate::sys::xattr;

/// A tar archive that could not be imported. Nothing outside the destination was written.
#[derive(Debug, thiserror::Error)]
pub enum TarImportError {
    /// The archive file cannot be read.
    #[error("cannot read {}", path.display())]
    Open {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive is compressed in a way we do not read.
    #[error("{0}")]
    Compression(String),
    /// The archive is malformed or cannot be decompressed.
    #[error("the archive is damaged or not a tar archive{}", after(.entry))]
    Archive {
        /// The last entry read before the problem.
        entry: Option<String>,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry that would reach outside the root, or that we cannot represent.
    #[error("entry {entry}: refused: {reason}")]
    Refused {
        /// The entry's name as in the archive (quoted).
        entry: String,
        /// Why.
        reason: String,
    },
    /// Creating an entry failed.
    #[error("entry {entry}: cannot {op}")]
    Extract {
        /// The entry's name as in the archive (quoted).
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn after(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" (after entry {e})"))
        .unwrap_or_default()
}

/// What an archive starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Tells the compression from the first bytes of the file.
fn detect(head: &[u8]) -> Result<Compression, TarImportError> {
    let unsupported = |what: &str, tool: &str| {
        Err(TarImportError::Compression(format!(
            "the archive is {what}-compressed; only plain, gzip and zstd tars are read \
             (decompress it first, e.g. {tool} -dc FILE > FILE.tar)"
        )))
    };
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => unsupported("xz", "xz"),
        [b'B', b'Z', b'h', ..] => unsupported("bzip2", "bzip2"),
        _ => Ok(Compression::None),
    }
}

/// What [`extract`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extracted {
    /// Entries extracted (PAX global headers not counted).
    pub entries: u64,
    /// Whether the archive had an entry for the root directory (`./`), which set its owner, mode
    /// and time.
    pub root_entry: bool,
}

/// Extracts the tar archive `archive` into `dest`, an existing empty directory (see the module
/// documentation for what is kept and what is refused). Blocking.
pub fn extract(archive: &Path, dest: &Path) -> Result<Extracted, TarImportError> {
    let open_err = |source| TarImportError::Open {
        path: archive.to_owned(),
        source,
    };
    let mut input = BufReader::with_capacity(256 * 1024, File::open(archive).map_err(open_err)?);
    let reader: Box<dyn Read> = match detect(input.fill_buf().map_err(open_err)?)? {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(open_err)?),
    };
    let root = openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_err(e.into()))?;
    let mut x = Extractor {
        root,
        dir_times: Vec::new(),
        done: Extracted::default(),
    };
    let mut tar = tar::Archive::new(reader);
    let mut last: Option<String> = None;
    let entries = tar
        .entries()
        .map_err(|source| TarImportError::Archive { entry: None, source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| TarImportError::Archive {
            entry: last.clone(),
            source,
        })?;
        let name = quote(&entry.path_bytes());
        x.entry(&mut entry, &name)?;
        last = Some(name);
    }
    if x.done.entries == 0 {
        return Err(TarImportError::Archive {
            entry: None,
            source: io::Error::new(io::ErrorKind::InvalidData, "it has no entries"),
        });
    }
    x.finish()
}

/// An entry's name for messages: quoted and escaped, cut when long.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= 200 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(150).collect();
        format!("{head:?}… ({} bytes)", bytes.len())
    }
}

/// Components joined with `/` again (for messages).
fn joined(comps: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out
}

/// Splits an archive path into its components below the root: `.` and empty components are
/// dropped; absolute paths and `..` are refused. An empty result is the root itself.
fn components(path: &[u8]) -> Result<Vec<OsString>, String> {
    if path.first() == Some(&b'/') {
        return Err("absolute path (archives of a root file system have relative names)".into());
    }
    let mut out = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("the path has a '..' component".into()),
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// What every entry carries besides its data.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
    /// PAX sparse-file records (`GNU.sparse.*`), which the tar crate does not expand.
    pax_sparse: bool,
}

struct Extractor {
    root: OwnedFd,
    /// Directories and their times, in archive order (set in reverse at the end).
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
    done: Extracted,
}

impl Extractor {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<(), TarImportError> {
        let refuse = |reason: String| TarImportError::Refused {
            entry: name.to_owned(),
            reason,
        };
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(()); // global PAX defaults (e.g. a creation time): nothing to extract
        }
        self.done.entries += 1;
        let path = entry.path_bytes().into_owned();
        let comps = components(&path).map_err(refuse)?;
        let meta = meta(entry).map_err(|source| TarImportError::Archive {
            entry: Some(name.to_owned()),
            source,
        })?;
        if meta.pax_sparse {
            return Err(refuse(
                "a PAX sparse file (GNU.sparse.*), which is not supported: create the archive without --sparse".into(),
            ));
        }
        let fail = |op| extract_error(name, op);
        // An old-style archive marks directories only by a trailing slash.
        let is_dir = matches!(kind, EntryType::Directory)
            || (matches!(kind, EntryType::Regular) && path.ends_with(b"/") && entry.size() == 0);
        let Some((file, parents)) = comps.split_last() else {
            if !is_dir {
                return Err(refuse("names the root directory but is not a directory".into()));
            }
            self.set_meta_fd(self.root.as_fd(), &meta, false, name)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            self.done.root_entry = true;
            return Ok(());
        };
        let parent = self.open_dir(parents, true, name)?;
        let file = file.as_os_str();
        if is_dir {
            let dir = match open_dir_at(&parent, file) {
                Ok(d) => d,
                Err(Errno::ENOENT) => {
                    mkdirat(&parent, file, Mode::from_bits_truncate(0o700))
                        .map_err(fail("create the directory"))?;
                    open_dir_at(&parent, file).map_err(fail("open the directory"))?
                }
                // Something else of that name (a file, a symlink): replaced.
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    unlinkat(&parent, file, UnlinkatFlags::NoRemoveDir).map_err(fail("replace"))?;
                    mkdirat(&parent, file, Mode::from_bits_truncate(0o700))
                        .map_err(fail("create the directory"))?;
                    open_dir_at(&parent, file).map_err(fail("open the directory"))?
                }
                Err(e) => return Err(fail("open the directory")(e)),
            };
            self.set_meta_fd(dir.as_fd(), &meta, false, name)?;
            self.dir_times.push((comps.clone(), meta.mtime));
            return Ok(());
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                make_room(&parent, file).map_err(fail("replace"))?;
                let fd = openat(
                    &parent,
                    file,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(fail("create the file"))?;
                let mut out = File::from(fd);
                io::copy(entry, &mut out).map_err(|source| TarImportError::Extract {
                    entry: name.to_owned(),
                    op: "write the file",
                    source,
                })?;
                self.set_meta_fd(out.as_fd(), &meta, true, name)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| refuse("a symbolic link without a target".into()))?;
                make_room(&parent, file).map_err(fail("replace"))?;
                symlinkat(OsStr::from_bytes(&target), &parent, file)
                    .map_err(fail("create the symbolic link"))?;
                self.set_meta_at(&parent, file, &meta, false, name)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("a hard link without a target".into()))?;
                let tcomps = components(&target)
                    .map_err(|r| refuse(format!("hard link target {}: {r}", quote(&target))))?;
                let Some((tfile, tparents)) = tcomps.split_last() else {
                    return Err(refuse("a hard link to the root directory".into()));
                };
                let tparent = self.open_dir(tparents, false, name)?;
                make_room(&parent, file).map_err(fail("replace"))?;
                linkat(&tparent, tfile.as_os_str(), &parent, file, AtFlags::empty())
                    .map_err(fail("create the hard link"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let num = |n: io::Result<Option<u32>>| n.ok().flatten();
                        let (Some(major), Some(minor)) = (
                            num(entry.header().device_major()),
                            num(entry.header().device_minor()),
                        ) else {
                            return Err(refuse("a device without valid major and minor numbers".into()));
                        };
                        let sflag = if matches!(kind, EntryType::Char) {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (sflag, libc::makedev(major, minor))
                    }
                };
                make_room(&parent, file).map_err(fail("replace"))?;
                mknodat(&parent, file, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(fail("create the device node or fifo"))?;
                self.set_meta_at(&parent, file, &meta, true, name)?;
            }
            other => {
                return Err(refuse(format!(
                    "unsupported entry type {:?}",
                    other.as_byte() as char
                )));
            }
        }
        Ok(())
    }

    /// Opens the directory `comps` below the root, one component at a time without following
    /// symlinks, creating missing ones (mode 0755, root-owned) when `create`.
    fn open_dir(&self, comps: &[OsString], create: bool, name: &str) -> Result<OwnedFd, TarImportError> {
        let mut cur = self.root.try_clone().map_err(|source| TarImportError::Extract {
            entry: name.to_owned(),
            op: "open the root directory",
            source,
        })?;
        for (i, c) in comps.iter().enumerate() {
            let prefix = || quote(&joined(&comps[..=i]));
            let next = match open_dir_at(&cur, c) {
                // Made as tar does for a directory the archive does not list: 0755 (whatever the
                // umask), owned by us.
                Err(Errno::ENOENT) if create => mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755))
                    .and_then(|()| open_dir_at(&cur, c))
                    .and_then(|d| fchmod(&d, Mode::from_bits_truncate(0o755)).map(|()| d)),
                r => r,
            };
            cur = next.map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => TarImportError::Refused {
                    entry: name.to_owned(),
                    reason: format!(
                        "{} is a symbolic link or not a directory; nothing is extracted through it",
                        prefix()
                    ),
                },
                e => TarImportError::Extract {
                    entry: name.to_owned(),
                    op: if create {
                        "create its directory"
                    } else {
                        "find the hard link's target"
                    },
                    source: io::Error::other(format!("{}: {e}", prefix())),
                },
            })?;
        }
        Ok(cur)
    }

    /// Owner, mode, extended attributes and (for files) times, through an open descriptor.
    fn set_meta_fd(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        meta: &Meta,
        times: bool,
        name: &str,
    ) -> Result<(), TarImportError> {
        let fail = |op| extract_error(name, op);
        fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
            .map_err(fail("set the owner"))?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777)).map_err(fail("set the mode"))?;
        for (key, value) in &meta.xattrs {
            xattr::fset(fd, key, value).map_err(|e| xattr_error(name, key, e))?;
        }
        if times {
            futimens(fd, &meta.mtime, &meta.mtime).map_err(fail("set the modification time"))?;
        }
        Ok(())
    }

    /// The same for a name in `dir` that cannot be opened for writing (symlink, device, fifo),
    /// never following it. Symlinks have no mode of their own.
    fn set_meta_at(
        &self,
        dir: &OwnedFd,
        file: &OsStr,
        meta: &Meta,
        mode: bool,
        name: &str,
    ) -> Result<(), TarImportError> {
        let fail = |op| extract_error(name, op);
        fchownat(
            dir,
            file,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(fail("set the owner"))?;
        if mode {
            // Not a symlink: we just made a node of this name in a directory only we write.
            fchmodat(
                dir,
                file,
                Mode::from_bits_truncate(meta.mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(fail("set the mode"))?;
        }
        for (key, value) in &meta.xattrs {
            xattr::set_at_nofollow(dir.as_fd(), file, key, value).map_err(|e| xattr_error(name, key, e))?;
        }
        utimensat(
            dir,
            file,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(fail("set the modification time"))
    }

    /// Sets the directories' times, deepest (latest in the archive) first.
    fn finish(self) -> Result<Extracted, TarImportError> {
        for (comps, mtime) in self.dir_times.iter().rev() {
            let name = quote(&joined(comps));
            let dir = self.open_dir(comps, false, &name)?;
            futimens(&dir, mtime, mtime).map_err(|e| TarImportError::Extract {
                entry: name.clone(),
                op: "set the modification time",
                source: e.into(),
            })?;
        }
        Ok(self.done)
    }
}

/// The error of syscall `op` on archive entry `entry`.
fn extract_error<'a>(entry: &'a str, op: &'static str) -> impl Fn(Errno) -> TarImportError + 'a {
    move |e: Errno| TarImportError::Extract {
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

fn xattr_error(entry: &str, key: &CString, e: Errno) -> TarImportError {
    TarImportError::Extract {
        entry: entry.to_owned(),
        op: "set an extended attribute",
        source: io::Error::other(format!("{}: {e}", key.to_string_lossy())),
    }
}

/// Opens `name` in `dir` as a directory, failing (ELOOP / ENOTDIR) rather than following a symlink.
fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
}

/// Removes what is in the way of a new non-directory `name` in `dir`: nothing, or a
/// non-directory (unlinked, never followed). A directory stays and fails the entry (EISDIR).
fn make_room(dir: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Err(Errno::EISDIR)
        }
        Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
    }
}

/// Owner, mode, time and extended attributes of an entry, with PAX records over the header.
fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{what} {v} is too large")))
    };
    // The tar crate applies PAX uid/gid to the header already.
    let (uid, gid) = (id(h.uid()?, "uid")?, id(h.gid()?, "gid")?);
    let mode = h.mode()?;
    let mut mtime = TimeSpec::new(i64::try_from(h.mtime()?).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    let mut pax_sparse = false;
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                if let Some(t) = pax_time(ext.value_bytes()) {
                    mtime = t;
                }
            } else if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                let attr = CString::new(attr).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "an extended attribute name with a NUL byte",
                    )
                })?;
                xattrs.push((attr, ext.value_bytes().to_vec()));
            } else if key.starts_with(b"GNU.sparse.") {
                pax_sparse = true;
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
        pax_sparse,
    })
}

/// A PAX time: decimal seconds since the epoch, optionally negative and with a fraction.
fn pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    Some(if !neg {
        TimeSpec::new(secs, nanos)
    } else if nanos == 0 {
        TimeSpec::new(-secs, 0)
    } else {
        TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(), Compression::Zstd);
        assert_eq!(detect(b"etc/\0\0\0").unwrap(), Compression::None);
        assert_eq!(detect(b"").unwrap(), Compression::None);
        let e = detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]).unwrap_err();
        assert!(e.to_string().contains("xz"), "{e}");
        assert!(detect(b"BZh91AY").is_err());
    }

    #[test]
    fn names_are_split_and_escapes_refused() {
        let c = |p: &str| components(p.as_bytes());
        assert_eq!(
            c("./etc//passwd").unwrap(),
            vec![OsString::from("etc"), "passwd".into()]
        );
        assert_eq!(c("./").unwrap(), Vec::<OsString>::new());
        assert_eq!(c("bin/").unwrap(), vec![OsString::from("bin")]);
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "a/../b"] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"1700000000"), Some(TimeSpec::new(1_700_000_000, 0)));
        assert_eq!(
            pax_time(b"1700000000.5"),
            Some(TimeSpec::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(pax_time(b"1.123456789123"), Some(TimeSpec::new(1, 123_456_789)));
        assert_eq!(pax_time(b"-1.25"), Some(TimeSpec::new(-2, 750_000_000)));
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(pax_time(b""), None);
    }
}
