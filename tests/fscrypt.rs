//! Kernel tests for `cml::sys::fscrypt`: a fresh ext4 image (`-O encrypt`) per test, on a loop device,
//! mounted on a temporary directory. They need root and a kernel with ext4 encryption. Every test owns
//! its image and mountpoint (so they run in parallel: fscrypt keyrings are per filesystem), and a guard
//! unmounts (the loop device then detaches itself, autoclear) also when the test panics.
#![allow(clippy::unwrap_used)]

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use cml::sys::{
    fscrypt::{self, FscryptError, KeyIdentifier, KeyStatus, Removal},
    loopdev::LoopDevice,
};
use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
};

const FILE_NAME: &str = "secret-name.txt";
const MARKER: &str = "PLAINTEXT-MARKER-5c1e0f7a-";

/// An ext4 image with encryption, mounted while `mounted`. Drop unmounts (lazily, as a last resort) and
/// removes the temporary directory.
struct EncryptedFs {
    /// Holds the image and the mountpoint; removed (by its own Drop) after ours has unmounted.
    _dir: tempfile::TempDir,
    image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl EncryptedFs {
    /// Creates, formats and mounts a 32 MiB image; `None` (with the reason printed) if the kernel has no
    /// ext4 encryption.
    fn new() -> Option<EncryptedFs> {
        if !Path::new("/sys/fs/ext4/features/encryption").exists() {
            eprintln!("skipping: kernel has no ext4 encryption (/sys/fs/ext4/features/encryption)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("cmltest-fscrypt")
            .tempdir()
            .unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        File::create(&image).unwrap().set_len(32 << 20).unwrap();
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "encrypt"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut fs = EncryptedFs {
            _dir: dir,
            image,
            mnt,
            mounted: false,
        };
        fs.mount();
        Some(fs)
    }

    fn mount(&mut self) {
        assert!(!self.mounted);
        let dev = LoopDevice::attach(&self.image, false).unwrap();
        mount(
            Some(&dev.path()),
            &self.mnt,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .unwrap();
        self.mounted = true;
        // The mount holds the device now; autoclear detaches it at unmount.
        drop(dev);
    }

    /// A synchronous unmount: afterwards every block is written to the image.
    fn unmount(&mut self) {
        assert!(self.mounted);
        let mut tries = 0;
        loop {
            match umount2(&self.mnt, MntFlags::empty()) {
                Ok(()) => break,
                Err(Errno::EBUSY) if tries < 50 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("umount {}: {e}", self.mnt.display()),
            }
        }
        self.mounted = false;
    }

    fn data(&self) -> PathBuf {
        self.mnt.join("data")
    }
}

impl Drop for EncryptedFs {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = umount2(&self.mnt, MntFlags::empty())
        {
            eprintln!("cleanup: umount {}: {e}; detaching lazily", self.mnt.display());
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
        // `_dir` (image and mountpoint) is removed by TempDir's own Drop after this.
    }
}

fn random_key() -> [u8; 64] {
    let mut key = [0u8; 64];
    File::open("/dev/urandom").unwrap().read_exact(&mut key).unwrap();
    key
}

fn plaintext() -> String {
    MARKER.repeat(400)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn write_file(path: &Path, content: &str) {
    let mut f = File::create(path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn names_and_contents_are_encrypted_at_rest_and_readable_with_the_key() {
    let Some(mut efs) = EncryptedFs::new() else { return };
    let key = random_key();
    let id = fscrypt::add_key(&efs.mnt, &key).unwrap();
    assert_ne!(id, KeyIdentifier([0; 16]));
    assert_eq!(fscrypt::key_status(&efs.mnt, &id).unwrap(), KeyStatus::Present);

    let data = efs.data();
    fs::create_dir(&data).unwrap();
    assert_eq!(fscrypt::policy_key(&data).unwrap(), None);
    fscrypt::set_policy(&data, &id).unwrap();
    // Idempotent: the same policy again is fine.
    fscrypt::set_policy(&data, &id).unwrap();
    assert_eq!(fscrypt::policy_key(&data).unwrap(), Some(id));
    // The root directory is not encrypted.
    assert_eq!(fscrypt::policy_key(&efs.mnt).unwrap(), None);

    write_file(&data.join(FILE_NAME), &plaintext());
    // Positive control for the image scan below: an unencrypted file does show up in the image.
    write_file(&efs.mnt.join("control.txt"), "CONTROL-MARKER-in-the-clear");
    // Idempotent also once the directory has content.
    fscrypt::set_policy(&data, &id).unwrap();
    assert_eq!(names(&data), vec![FILE_NAME.to_string()]);
    assert_eq!(fs::read_to_string(data.join(FILE_NAME)).unwrap(), plaintext());

    nix::unistd::sync();
    assert_eq!(fscrypt::remove_key(&efs.mnt, &id).unwrap(), Removal::Complete);
    assert_eq!(fscrypt::key_status(&efs.mnt, &id).unwrap(), KeyStatus::Absent);
    // Locked: the policy is still readable, the name is a no-key name, the content unreadable.
    assert_eq!(fscrypt::policy_key(&data).unwrap(), Some(id));
    let locked = names(&data);
    assert_eq!(locked.len(), 1);
    assert_ne!(locked[0], FILE_NAME);
    assert!(!locked[0].contains("secret"));
    let err = fs::read(data.join(&locked[0])).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");
    assert!(fs::read(data.join(FILE_NAME)).is_err());

    efs.unmount();
    let raw = fs::read(&efs.image).unwrap();
    assert!(
        count(&raw, b"CONTROL-MARKER-in-the-clear") > 0,
        "control file not in the image"
    );
    assert_eq!(count(&raw, MARKER.as_bytes()), 0, "plaintext in the image");
    assert_eq!(count(&raw, b"secret-name"), 0, "file name in the image");

    // A fresh mount has no keys.
    efs.mount();
    assert_eq!(fscrypt::key_status(&efs.mnt, &id).unwrap(), KeyStatus::Absent);
    let locked = names(&data);
    assert_eq!(locked.len(), 1);
    assert_ne!(locked[0], FILE_NAME);
    assert!(fs::read(data.join(&locked[0])).is_err());

    // The same key gives the same identifier and unlocks the directory again.
    assert_eq!(fscrypt::add_key(&efs.mnt, &key).unwrap(), id);
    assert_eq!(fscrypt::key_status(&efs.mnt, &id).unwrap(), KeyStatus::Present);
    assert_eq!(names(&data), vec![FILE_NAME.to_string()]);
    assert_eq!(fs::read_to_string(data.join(FILE_NAME)).unwrap(), plaintext());

    assert_eq!(fscrypt::remove_key(&efs.mnt, &id).unwrap(), Removal::Complete);
    efs.unmount();
}

#[test]
fn remove_while_a_file_is_open_reports_files_busy() {
    let Some(efs) = EncryptedFs::new() else { return };
    let id = fscrypt::add_key(&efs.mnt, &random_key()).unwrap();
    let data = efs.data();
    fs::create_dir(&data).unwrap();
    fscrypt::set_policy(&data, &id).unwrap();
    write_file(&data.join(FILE_NAME), &plaintext());
    nix::unistd::sync();

    let held = File::open(data.join(FILE_NAME)).unwrap();
    assert_eq!(fscrypt::remove_key(&efs.mnt, &id).unwrap(), Removal::FilesBusy);
    assert_eq!(
        fscrypt::key_status(&efs.mnt, &id).unwrap(),
        KeyStatus::IncompletelyRemoved
    );
    drop(held);
    assert_eq!(fscrypt::remove_key(&efs.mnt, &id).unwrap(), Removal::Complete);
    assert_eq!(fscrypt::key_status(&efs.mnt, &id).unwrap(), KeyStatus::Absent);
    assert_ne!(names(&data), vec![FILE_NAME.to_string()]);

    // Removing a key that is not there is an error naming the ioctl.
    let err = fscrypt::remove_key(&efs.mnt, &id).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::ENOKEY), "{err}");
    assert!(err.to_string().contains("FS_IOC_REMOVE_ENCRYPTION_KEY"), "{err}");
}

#[test]
fn set_policy_refuses_non_empty_dirs_foreign_policies_and_missing_keys() {
    let Some(efs) = EncryptedFs::new() else { return };
    let id = fscrypt::add_key(&efs.mnt, &random_key()).unwrap();

    // Not empty and not encrypted.
    let plain = efs.mnt.join("plain");
    fs::create_dir(&plain).unwrap();
    write_file(&plain.join("file"), "x");
    let err = fscrypt::set_policy(&plain, &id).unwrap_err();
    assert!(matches!(err, FscryptError::NotEmpty { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("FS_IOC_SET_ENCRYPTION_POLICY"), "{msg}");
    assert!(msg.contains(&plain.display().to_string()), "{msg}");
    assert!(msg.contains("not empty"), "{msg}");
    assert_eq!(fscrypt::policy_key(&plain).unwrap(), None);

    // Already encrypted with another key.
    let other = fscrypt::add_key(&efs.mnt, &random_key()).unwrap();
    assert_ne!(other, id);
    let data = efs.data();
    fs::create_dir(&data).unwrap();
    fscrypt::set_policy(&data, &id).unwrap();
    let err = fscrypt::set_policy(&data, &other).unwrap_err();
    assert!(matches!(err, FscryptError::PolicyMismatch { .. }), "{err:?}");
    assert_eq!(fscrypt::policy_key(&data).unwrap(), Some(id));

    // A key that was never added: refused with ENOKEY, except that the kernel lets CAP_FOWNER (root,
    // as here) set it anyway; the directory is then locked from the start.
    let empty = efs.mnt.join("empty");
    fs::create_dir(&empty).unwrap();
    let absent = KeyIdentifier([0x5a; 16]);
    match fscrypt::set_policy(&empty, &absent) {
        Ok(()) => {
            assert_eq!(fscrypt::policy_key(&empty).unwrap(), Some(absent));
            let err = File::create(empty.join("f")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");
        }
        Err(err) => {
            assert_eq!(err.errno(), Some(Errno::ENOKEY), "{err}");
            assert_eq!(fscrypt::policy_key(&empty).unwrap(), None);
        }
    }

    // A path that does not exist.
    let err = fscrypt::policy_key(&efs.mnt.join("missing")).unwrap_err();
    assert!(matches!(err, FscryptError::Open { .. }), "{err:?}");

    assert_eq!(fscrypt::remove_key(&efs.mnt, &id).unwrap(), Removal::Complete);
    assert_eq!(fscrypt::remove_key(&efs.mnt, &other).unwrap(), Removal::Complete);
}
