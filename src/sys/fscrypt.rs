//! fscrypt v2: per-directory encryption of a filesystem (ext4, f2fs) with keys held by the kernel.
//!
//! Order of operations (Documentation/filesystems/fscrypt.rst, "User API"):
//! 1. [`add_key`] — `FS_IOC_ADD_ENCRYPTION_KEY` on any file of the mounted filesystem puts a 64-byte raw
//!    master key into that filesystem's keyring. The kernel derives and returns the key's 16-byte
//!    identifier (a HKDF hash of the key), which names the key from then on. Our copy of the raw key in
//!    the ioctl buffer is zeroed as soon as the call returns.
//! 2. [`set_policy`] — `FS_IOC_SET_ENCRYPTION_POLICY` with a v2 policy naming that identifier, on an
//!    EMPTY directory. The key must already be added (step 1), otherwise the kernel refuses with
//!    `ENOKEY` (unless the caller has `CAP_FOWNER`: then it accepts the policy and the directory is
//!    locked from the start). Everything created below the directory afterwards inherits the policy. Setting the same
//!    policy again is a no-op (the kernel compares); a different one fails with `EEXIST`.
//! 3. Use the directory: names and contents are encrypted on disk, plaintext through the VFS.
//! 4. [`remove_key`] — `FS_IOC_REMOVE_ENCRYPTION_KEY` wipes the master key and evicts the cached
//!    plaintext inodes and dentries. Files still open keep the key alive: the kernel then reports
//!    [`Removal::FilesBusy`] and the key stays "incompletely removed" until those files are closed and
//!    the ioctl is called again. Callers therefore close files (and `syncfs`) before removing.
//!
//! [`policy_key`] and [`key_status`] are read-only queries that can be made at any time; neither needs
//! the key. Key operations (`add_key`, `remove_key`, `key_status`) take the filesystem's mountpoint (any
//! path on the filesystem works); the kernel keyring is per superblock, so an unmount drops all keys.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{Ordering, compiler_fence},
};

use nix::errno::Errno;

const FSCRYPT_POLICY_V2: u8 = 2;
const FSCRYPT_MODE_AES_256_XTS: u8 = 1;
const FSCRYPT_MODE_AES_256_CTS: u8 = 4;
const FSCRYPT_POLICY_FLAGS_PAD_32: u8 = 0x03;
const FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const FSCRYPT_KEY_IDENTIFIER_SIZE: usize = 16;
const FSCRYPT_KEY_DESCRIPTOR_SIZE: usize = 8;
/// The raw key size we use (`FSCRYPT_MAX_KEY_SIZE`): AES-256-XTS needs 64 bytes.
const RAW_KEY_SIZE: usize = 64;

const FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY: u32 = 0x1;
const FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS: u32 = 0x2;

const FSCRYPT_KEY_STATUS_ABSENT: u32 = 1;
const FSCRYPT_KEY_STATUS_PRESENT: u32 = 2;
const FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED: u32 = 3;

/// `struct fscrypt_policy_v1` (only its size matters: it is encoded in `FS_IOC_SET_ENCRYPTION_POLICY`,
/// and it is one arm of the `GET_ENCRYPTION_POLICY_EX` union).
#[repr(C)]
#[derive(Clone, Copy)]
struct PolicyV1 {
    version: u8,
    contents_encryption_mode: u8,
    filenames_encryption_mode: u8,
    flags: u8,
    master_key_descriptor: [u8; FSCRYPT_KEY_DESCRIPTOR_SIZE],
}

/// `struct fscrypt_policy_v2`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct PolicyV2 {
    version: u8,
    contents_encryption_mode: u8,
    filenames_encryption_mode: u8,
    flags: u8,
    reserved: [u8; 4],
    master_key_identifier: [u8; FSCRYPT_KEY_IDENTIFIER_SIZE],
}

/// The anonymous union in `struct fscrypt_get_policy_ex_arg`.
#[repr(C)]
#[derive(Clone, Copy)]
union PolicyUnion {
    version: u8,
    v1: PolicyV1,
    v2: PolicyV2,
}

/// `struct fscrypt_get_policy_ex_arg`.
#[repr(C)]
struct GetPolicyExArg {
    /// In: the size of `policy`; out: the size of the policy the kernel wrote.
    policy_size: u64,
    policy: PolicyUnion,
}

/// `struct fscrypt_key_specifier` (the union is represented by its largest arm, `__reserved[32]`).
#[repr(C)]
#[derive(Clone, Copy)]
struct KeySpecifier {
    kind: u32,
    reserved: u32,
    u: [u8; 32],
}

impl KeySpecifier {
    fn identifier(id: &KeyIdentifier) -> KeySpecifier {
        let mut u = [0u8; 32];
        u[..FSCRYPT_KEY_IDENTIFIER_SIZE].copy_from_slice(&id.0);
        KeySpecifier {
            kind: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER,
            reserved: 0,
            u,
        }
    }
}

/// `struct fscrypt_add_key_arg` without its flexible array member `raw[]`.
#[repr(C)]
struct AddKeyArgHeader {
    key_spec: KeySpecifier,
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
}

/// The buffer handed to `FS_IOC_ADD_ENCRYPTION_KEY`: the header followed directly by the raw key (the
/// flexible array `raw[]` starts at `sizeof(struct fscrypt_add_key_arg)`, checked below). Zeroed on drop,
/// so the key copy does not outlive the call even on an error path.
#[repr(C)]
struct AddKeyArg {
    header: AddKeyArgHeader,
    raw: [u8; RAW_KEY_SIZE],
}

impl Drop for AddKeyArg {
    fn drop(&mut self) {
        for b in self.raw.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into `self.raw`. A volatile write is
            // used so the compiler cannot drop the wipe of a buffer that is about to be freed.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        compiler_fence(Ordering::SeqCst);
    }
}

/// `struct fscrypt_remove_key_arg`.
#[repr(C)]
struct RemoveKeyArg {
    key_spec: KeySpecifier,
    removal_status_flags: u32,
    reserved: [u32; 5],
}

/// `struct fscrypt_get_key_status_arg`.
#[repr(C)]
struct GetKeyStatusArg {
    key_spec: KeySpecifier,
    reserved: [u32; 6],
    status: u32,
    status_flags: u32,
    user_count: u32,
    out_reserved: [u32; 13],
}

// The kernel copies exactly these sizes (and the ioctl numbers encode some of them): a layout mistake
// must not compile. Sizes from linux/fscrypt.h.
const _: () = assert!(std::mem::size_of::<PolicyV1>() == 12);
const _: () = assert!(std::mem::size_of::<PolicyV2>() == 24);
const _: () = assert!(std::mem::size_of::<GetPolicyExArg>() == 32);
const _: () = assert!(std::mem::size_of::<KeySpecifier>() == 40);
const _: () = assert!(std::mem::size_of::<AddKeyArgHeader>() == 80);
const _: () = assert!(std::mem::offset_of!(AddKeyArg, raw) == std::mem::size_of::<AddKeyArgHeader>());
const _: () = assert!(std::mem::size_of::<RemoveKeyArg>() == 64);
const _: () = assert!(std::mem::size_of::<GetKeyStatusArg>() == 128);

/// `_IOC(dir, 'f', nr, size)` from asm-generic/ioctl.h (x86, arm, arm64, riscv; not mips/ppc/sparc).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'f' as u32) << 8) | nr
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOR('f', 19, struct fscrypt_policy_v1)` — the number encodes the v1 size; the kernel reads the
/// version byte first and then the size of that policy version.
const FS_IOC_SET_ENCRYPTION_POLICY: u32 = ioc(IOC_READ, 19, std::mem::size_of::<PolicyV1>());
/// `_IOWR('f', 22, __u8[9])`.
const FS_IOC_GET_ENCRYPTION_POLICY_EX: u32 = ioc(IOC_READ | IOC_WRITE, 22, 9);
/// `_IOWR('f', 23, struct fscrypt_add_key_arg)`.
const FS_IOC_ADD_ENCRYPTION_KEY: u32 = ioc(IOC_READ | IOC_WRITE, 23, std::mem::size_of::<AddKeyArgHeader>());
/// `_IOWR('f', 24, struct fscrypt_remove_key_arg)`.
const FS_IOC_REMOVE_ENCRYPTION_KEY: u32 = ioc(IOC_READ | IOC_WRITE, 24, std::mem::size_of::<RemoveKeyArg>());
/// `_IOWR('f', 26, struct fscrypt_get_key_status_arg)`.
const FS_IOC_GET_ENCRYPTION_KEY_STATUS: u32 =
    ioc(IOC_READ | IOC_WRITE, 26, std::mem::size_of::<GetKeyStatusArg>());

// Cross-check against the values the C headers expand to.
const _: () = assert!(FS_IOC_SET_ENCRYPTION_POLICY == 0x800c_6613);
const _: () = assert!(FS_IOC_GET_ENCRYPTION_POLICY_EX == 0xc009_6616);
const _: () = assert!(FS_IOC_ADD_ENCRYPTION_KEY == 0xc050_6617);
const _: () = assert!(FS_IOC_REMOVE_ENCRYPTION_KEY == 0xc040_6618);
const _: () = assert!(FS_IOC_GET_ENCRYPTION_KEY_STATUS == 0xc080_661a);

/// An fscrypt operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FscryptError {
    /// The directory or mountpoint could not be opened.
    #[error("open {path} for fscrypt")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{ioctl} on {path}")]
    Ioctl {
        /// The ioctl's name (`FS_IOC_…`).
        ioctl: &'static str,
        /// The file the ioctl was made on.
        path: PathBuf,
        /// The cause, with the errno.
        #[source]
        source: Errno,
    },
    /// `FS_IOC_SET_ENCRYPTION_POLICY` refused a directory that is not empty and not yet encrypted.
    #[error(
        "FS_IOC_SET_ENCRYPTION_POLICY on {path}: directory is not empty (ENOTEMPTY); only an empty directory can be encrypted"
    )]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// `FS_IOC_SET_ENCRYPTION_POLICY`: the directory is already encrypted with a different policy (or key).
    #[error(
        "FS_IOC_SET_ENCRYPTION_POLICY on {path}: directory already has a different encryption policy (EEXIST)"
    )]
    PolicyMismatch {
        /// The directory.
        path: PathBuf,
    },
    /// The directory is encrypted, but not with a v2 policy (a legacy v1 policy has no key identifier).
    #[error("FS_IOC_GET_ENCRYPTION_POLICY_EX on {path}: unsupported policy version {version} (want v2)")]
    UnsupportedPolicy {
        /// The directory.
        path: PathBuf,
        /// The policy version the kernel reported.
        version: u8,
    },
    /// The kernel reported a key status this module does not know.
    #[error("FS_IOC_GET_ENCRYPTION_KEY_STATUS on {path}: unknown key status {status}")]
    UnknownKeyStatus {
        /// The mountpoint.
        path: PathBuf,
        /// The raw status.
        status: u32,
    },
}

impl FscryptError {
    /// The errno of a failed ioctl, if that is what this is.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            FscryptError::Ioctl { source, .. } => Some(*source),
            FscryptError::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            FscryptError::NotEmpty { .. } => Some(Errno::ENOTEMPTY),
            FscryptError::PolicyMismatch { .. } => Some(Errno::EEXIST),
            FscryptError::UnsupportedPolicy { .. } | FscryptError::UnknownKeyStatus { .. } => None,
        }
    }
}

/// fscrypt key identifier (16 bytes) as the kernel returns it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyIdentifier(pub [u8; 16]);

impl fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

/// The outcome of [`remove_key`], from the kernel's removal status flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The key is gone and all files it unlocked are locked again.
    Complete,
    /// `FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY`: the key secret is wiped, but some files are still in
    /// use and stay unlocked; the key is "incompletely removed" until they are closed and `remove_key`
    /// is called again.
    FilesBusy,
    /// `FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS`: only this user's claim to the key was dropped;
    /// other users added it too, so it stays.
    OtherUsers,
}

/// The status of a key in a filesystem's keyring (`FS_IOC_GET_ENCRYPTION_KEY_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// The key is in the keyring.
    Present,
    /// The key is not in the keyring.
    Absent,
    /// The key was removed while files were in use; those files are still unlocked.
    IncompletelyRemoved,
}

/// Opens a directory (or any file) read-only for an ioctl.
fn open(path: &Path) -> Result<File, FscryptError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| FscryptError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs an ioctl closure, retrying on `EINTR`.
fn ioctl_retry(mut call: impl FnMut() -> libc::c_int) -> Result<libc::c_int, Errno> {
    loop {
        match Errno::result(call()) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn ioctl_error(ioctl: &'static str, path: &Path, source: Errno) -> FscryptError {
    FscryptError::Ioctl {
        ioctl,
        path: path.to_path_buf(),
        source,
    }
}

/// Adds a 64-byte raw key to the filesystem containing `mountpoint` (FS_IOC_ADD_ENCRYPTION_KEY, v2
/// identifier key spec) and returns its identifier. The key buffer passed to the kernel is zeroed
/// afterwards.
pub fn add_key(mountpoint: &Path, key: &[u8; 64]) -> Result<KeyIdentifier, FscryptError> {
    let file = open(mountpoint)?;
    // Boxed so the only copy of the key we make lives at one heap address that the Drop impl wipes
    // (a stack value could be moved and leave copies behind).
    let mut arg = Box::new(AddKeyArg {
        header: AddKeyArgHeader {
            // Type IDENTIFIER with a zero identifier: "add a v2 key and tell me its identifier".
            key_spec: KeySpecifier {
                kind: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER,
                reserved: 0,
                u: [0; 32],
            },
            raw_size: RAW_KEY_SIZE as u32,
            key_id: 0,
            reserved: [0; 8],
        },
        raw: [0; RAW_KEY_SIZE],
    });
    arg.raw.copy_from_slice(key);
    let ptr: *mut AddKeyArg = &mut *arg;
    let result = ioctl_retry(|| {
        // SAFETY: `file` is an open fd on the target filesystem. `ptr` points to a live, fully
        // initialised `AddKeyArg`: the `fscrypt_add_key_arg` header (layout checked by the size asserts)
        // immediately followed by `raw_size` = 64 key bytes, which is exactly what the kernel reads. The
        // kernel writes back only `key_spec.u.identifier` inside the header. `arg` outlives the call.
        unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_ADD_ENCRYPTION_KEY as libc::Ioctl, ptr) }
    });
    let mut id = [0u8; FSCRYPT_KEY_IDENTIFIER_SIZE];
    id.copy_from_slice(&arg.header.key_spec.u[..FSCRYPT_KEY_IDENTIFIER_SIZE]);
    drop(arg); // wipes the raw key
    result.map_err(|e| ioctl_error("FS_IOC_ADD_ENCRYPTION_KEY", mountpoint, e))?;
    let id = KeyIdentifier(id);
    tracing::debug!(mountpoint = %mountpoint.display(), key = %id, "fscrypt key added");
    Ok(id)
}

/// The v2 policy we set: contents AES-256-XTS, filenames AES-256-CTS, padding 32.
fn policy_v2(key: &KeyIdentifier) -> PolicyV2 {
    PolicyV2 {
        version: FSCRYPT_POLICY_V2,
        contents_encryption_mode: FSCRYPT_MODE_AES_256_XTS,
        filenames_encryption_mode: FSCRYPT_MODE_AES_256_CTS,
        flags: FSCRYPT_POLICY_FLAGS_PAD_32,
        reserved: [0; 4],
        master_key_identifier: key.0,
    }
}

/// Protects an EMPTY directory with a v2 policy (FS_IOC_SET_ENCRYPTION_POLICY): contents AES-256-XTS,
/// filenames AES-256-CTS, flags padding 32. A directory that already has this policy is Ok
/// (idempotent). The key must have been added with [`add_key`] first (else `ENOKEY`; a caller with
/// `CAP_FOWNER` is not checked, and gets a directory it cannot create files in until the key is added).
pub fn set_policy(dir: &Path, key: &KeyIdentifier) -> Result<(), FscryptError> {
    let file = open(dir)?;
    let policy = policy_v2(key);
    let result = ioctl_retry(|| {
        // SAFETY: `file` is an open fd; `policy` is a fully initialised `struct fscrypt_policy_v2` (size
        // asserted) that outlives the call. The kernel reads the version byte, then the v2 size; it
        // does not write.
        unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_SET_ENCRYPTION_POLICY as libc::Ioctl,
                &policy as *const PolicyV2,
            )
        }
    });
    match result {
        Ok(_) => {
            tracing::debug!(dir = %dir.display(), key = %key, "fscrypt policy set");
            Ok(())
        }
        Err(Errno::ENOTEMPTY) => Err(FscryptError::NotEmpty {
            path: dir.to_path_buf(),
        }),
        Err(Errno::EEXIST) => Err(FscryptError::PolicyMismatch {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(ioctl_error("FS_IOC_SET_ENCRYPTION_POLICY", dir, e)),
    }
}

/// The v2 policy's key identifier of a directory, or None if it is not encrypted
/// (FS_IOC_GET_ENCRYPTION_POLICY_EX). Works without the key.
pub fn policy_key(dir: &Path) -> Result<Option<KeyIdentifier>, FscryptError> {
    let file = open(dir)?;
    let mut arg = GetPolicyExArg {
        policy_size: std::mem::size_of::<PolicyUnion>() as u64,
        policy: PolicyUnion {
            v2: PolicyV2 {
                version: 0,
                contents_encryption_mode: 0,
                filenames_encryption_mode: 0,
                flags: 0,
                reserved: [0; 4],
                master_key_identifier: [0; FSCRYPT_KEY_IDENTIFIER_SIZE],
            },
        },
    };
    let ptr: *mut GetPolicyExArg = &mut arg;
    let result = ioctl_retry(|| {
        // SAFETY: `file` is an open fd; `ptr` points to a live `struct fscrypt_get_policy_ex_arg` (size
        // asserted) whose `policy_size` says how much room the union has; the kernel writes at most that
        // much policy plus the new `policy_size`. `arg` outlives the call.
        unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_GET_ENCRYPTION_POLICY_EX as libc::Ioctl,
                ptr,
            )
        }
    });
    match result {
        Ok(_) => {}
        // "not encrypted"
        Err(Errno::ENODATA) => return Ok(None),
        Err(e) => return Err(ioctl_error("FS_IOC_GET_ENCRYPTION_POLICY_EX", dir, e)),
    }
    // SAFETY: every arm of the union is plain bytes (any bit pattern is valid), and `v2`, the largest
    // arm, was fully initialised above; reading the leading version byte is always sound.
    let version = unsafe { arg.policy.version };
    if version != FSCRYPT_POLICY_V2 || arg.policy_size != std::mem::size_of::<PolicyV2>() as u64 {
        return Err(FscryptError::UnsupportedPolicy {
            path: dir.to_path_buf(),
            version,
        });
    }
    // SAFETY: as above, the union was fully initialised as `v2` and the kernel wrote a v2 policy.
    let v2 = unsafe { arg.policy.v2 };
    Ok(Some(KeyIdentifier(v2.master_key_identifier)))
}

/// Removes the key (FS_IOC_REMOVE_ENCRYPTION_KEY) and reports the kernel's removal status flags. Close
/// (and sync) files below directories protected by the key first, else the result is
/// [`Removal::FilesBusy`]; calling again after they are closed finishes the removal.
pub fn remove_key(mountpoint: &Path, key: &KeyIdentifier) -> Result<Removal, FscryptError> {
    let file = open(mountpoint)?;
    let mut arg = RemoveKeyArg {
        key_spec: KeySpecifier::identifier(key),
        removal_status_flags: 0,
        reserved: [0; 5],
    };
    let ptr: *mut RemoveKeyArg = &mut arg;
    ioctl_retry(|| {
        // SAFETY: `file` is an open fd on the filesystem; `ptr` points to a live, fully initialised
        // `struct fscrypt_remove_key_arg` (size asserted); the kernel writes `removal_status_flags`.
        unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_REMOVE_ENCRYPTION_KEY as libc::Ioctl, ptr) }
    })
    .map_err(|e| ioctl_error("FS_IOC_REMOVE_ENCRYPTION_KEY", mountpoint, e))?;
    // OTHER_USERS wins: then the kernel did not try to remove the key at all, so FILES_BUSY is meaningless.
    let removal = if arg.removal_status_flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS != 0 {
        Removal::OtherUsers
    } else if arg.removal_status_flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0 {
        Removal::FilesBusy
    } else {
        Removal::Complete
    };
    tracing::debug!(mountpoint = %mountpoint.display(), key = %key, ?removal, "fscrypt key removed");
    Ok(removal)
}

/// FS_IOC_GET_ENCRYPTION_KEY_STATUS: Present / Absent / IncompletelyRemoved.
pub fn key_status(mountpoint: &Path, key: &KeyIdentifier) -> Result<KeyStatus, FscryptError> {
    let file = open(mountpoint)?;
    let mut arg = GetKeyStatusArg {
        key_spec: KeySpecifier::identifier(key),
        reserved: [0; 6],
        status: 0,
        status_flags: 0,
        user_count: 0,
        out_reserved: [0; 13],
    };
    let ptr: *mut GetKeyStatusArg = &mut arg;
    ioctl_retry(|| {
        // SAFETY: `file` is an open fd on the filesystem; `ptr` points to a live, fully initialised
        // `struct fscrypt_get_key_status_arg` (size asserted); the kernel writes its output fields.
        unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_GET_ENCRYPTION_KEY_STATUS as libc::Ioctl,
                ptr,
            )
        }
    })
    .map_err(|e| ioctl_error("FS_IOC_GET_ENCRYPTION_KEY_STATUS", mountpoint, e))?;
    match arg.status {
        FSCRYPT_KEY_STATUS_PRESENT => Ok(KeyStatus::Present),
        FSCRYPT_KEY_STATUS_ABSENT => Ok(KeyStatus::Absent),
        FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED => Ok(KeyStatus::IncompletelyRemoved),
        status => Err(FscryptError::UnknownKeyStatus {
            path: mountpoint.to_path_buf(),
            status,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_formats_as_hex() {
        let id = KeyIdentifier([
            0x00, 0x01, 0x0a, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0,
        ]);
        assert_eq!(id.to_string(), "00010aff102030405060708090a0b0c0");
        assert_eq!(
            format!("{id:?}"),
            "KeyIdentifier(00010aff102030405060708090a0b0c0)"
        );
    }

    #[test]
    fn key_specifier_carries_identifier() {
        let id = KeyIdentifier([7; 16]);
        let spec = KeySpecifier::identifier(&id);
        assert_eq!(spec.kind, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER);
        assert_eq!(&spec.u[..16], &[7; 16]);
        assert_eq!(&spec.u[16..], &[0; 16]);
    }

    #[test]
    fn policy_is_aes256_pad32() {
        let p = policy_v2(&KeyIdentifier([1; 16]));
        assert_eq!(
            (
                p.version,
                p.contents_encryption_mode,
                p.filenames_encryption_mode,
                p.flags
            ),
            (2, 1, 4, 3)
        );
    }
}
