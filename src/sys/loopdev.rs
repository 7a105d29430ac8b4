//! Loop devices: attach an image file to a free `/dev/loopN`.
//!
//! Protocol (see loop(4)):
//! 1. `LOOP_CTL_GET_FREE` on `/dev/loop-control` returns the number of a free device, creating one if
//!    needed (devtmpfs creates the node).
//! 2. Open `/dev/loopN` and configure it in one step with `LOOP_CONFIGURE` (kernel ≥ 5.8): backing fd,
//!    flags and info at once, so there is no window in which a half-configured device is visible (the
//!    older `LOOP_SET_FD` + `LOOP_SET_STATUS64` pair has one).
//! 3. Two attaches racing for the same free number: `GET_FREE` hands both the same N and the loser's
//!    `LOOP_CONFIGURE` fails with `EBUSY`; it closes N and starts again at step 1.
//!
//! Every device is configured with `LO_FLAGS_AUTOCLEAR`: the kernel detaches it when the last holder
//! goes — our fd (closed when [`LoopDevice`] is dropped) and any mount of it. A caller therefore keeps the
//! `LoopDevice` until the mount holds the device, then drops it; an unmounted device vanishes on its own.
//! [`LoopDevice::detach`] clears a device explicitly (`LOOP_CLR_FD`) for the error path.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CLR_FD: libc::Ioctl = 0x4C01;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// How often an attach starts over after losing a race for a free device.
const MAX_ATTEMPTS: u32 = 200;

/// `struct loop_info64` from `linux/loop.h` (not in the libc crate).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `linux/loop.h`, the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The kernel copies exactly this many bytes; a layout mistake must not compile.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A loop device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The image could not be opened.
    #[error("open loop image {path}")]
    OpenImage {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `/dev/loop-control` could not be opened or `LOOP_CTL_GET_FREE` failed.
    #[error("get a free loop device from {LOOP_CONTROL}")]
    GetFree(#[source] io::Error),
    /// `/dev/loopN` could not be opened.
    #[error("open {path}")]
    OpenDevice {
        /// The device node.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `LOOP_CONFIGURE` failed for a reason other than a lost race.
    #[error("configure {device} with {image}")]
    Configure {
        /// The device node.
        device: PathBuf,
        /// The image.
        image: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every attempt lost the race for a free device.
    #[error("no free loop device for {image} after {MAX_ATTEMPTS} attempts (all busy)")]
    Exhausted {
        /// The image.
        image: PathBuf,
    },
    /// `LOOP_CLR_FD` failed.
    #[error("detach {device}")]
    Detach {
        /// The device node.
        device: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An attached loop device, held open. Dropping it closes the fd; the kernel then detaches the device
/// (autoclear) as soon as no mount uses it either.
#[derive(Debug)]
pub struct LoopDevice {
    file: File,
    number: u32,
}

fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

fn get_free() -> Result<u32, LoopError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(LOOP_CONTROL)
        .map_err(LoopError::GetFree)?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is valid for the duration of the call
    // (`control` lives until the end of this function).
    let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(LoopError::GetFree(io::Error::last_os_error()));
    }
    Ok(n.unsigned_abs())
}

fn open_device(path: &Path) -> Result<File, LoopError> {
    // devtmpfs creates the node for a device GET_FREE just added; allow it a moment.
    let mut tries = 0;
    loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(2));
            }
            Err(source) => {
                return Err(LoopError::OpenDevice {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

impl LoopDevice {
    /// Attaches `image` to a free loop device with autoclear (and read-only when `read_only`).
    pub fn attach(image: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
        let backing = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(|source| LoopError::OpenImage {
                path: image.to_path_buf(),
                source,
            })?;
        let mut flags = LO_FLAGS_AUTOCLEAR;
        if read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        for attempt in 0..MAX_ATTEMPTS {
            let number = get_free()?;
            let path = device_path(number);
            let file = match open_device(&path) {
                Ok(f) => f,
                // A device in auto-clear teardown (ENXIO), or a new one whose node devtmpfs has not
                // created yet (ENOENT): try again.
                Err(LoopError::OpenDevice { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENXIO | libc::ENOENT)) =>
                {
                    std::thread::sleep(std::time::Duration::from_micros(200 * u64::from(attempt.min(50))));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            };
            // Informational only (losetup shows it); truncated to LO_NAME_SIZE - 1 to keep the NUL.
            let name = image.as_os_str().as_encoded_bytes();
            let len = name.len().min(LO_NAME_SIZE - 1);
            info.lo_file_name[..len].copy_from_slice(&name[..len]);
            let config = LoopConfig {
                fd: backing.as_raw_fd().unsigned_abs(),
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: `file` is an open loop device; `config` is a fully initialised `struct loop_config`
            // (layout checked by the size asserts above) that outlives the call; the kernel only reads it.
            // `backing` stays open across the call (the kernel takes its own reference).
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
            if rc == 0 {
                tracing::debug!(device = %path.display(), image = %image.display(), read_only, "loop attached");
                return Ok(LoopDevice { file, number });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) {
                // Another attach took this number between GET_FREE and CONFIGURE (or an auto-clear
                // device is still being torn down): start over, after a short, growing pause so
                // many concurrent attachers spread out.
                std::thread::sleep(std::time::Duration::from_micros(200 * u64::from(attempt.min(50))));
                continue;
            }
            return Err(LoopError::Configure {
                device: path,
                image: image.to_path_buf(),
                source: err,
            });
        }
        Err(LoopError::Exhausted {
            image: image.to_path_buf(),
        })
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    /// N in `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Detaches the backing file now (`LOOP_CLR_FD`), for a device that was never mounted. If something
    /// else still holds the device the kernel only marks it autoclear and detaches it when that goes.
    pub fn detach(self) -> Result<(), LoopError> {
        // SAFETY: LOOP_CLR_FD takes no argument; `self.file` is an open loop device fd.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD) };
        if rc < 0 {
            return Err(LoopError::Detach {
                device: self.path(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for LoopDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
