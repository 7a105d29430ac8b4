//! The device softtoken (SPEC §5): an EC P-256 key in a PKCS#12 file protected by a passphrase
//! (the PIN), its lockout counter, and the wrapping of per-container master keys.
//!
//! # Files in the token directory
//! - `device.p12`: the token. Created by [`SoftToken::open_or_create`] with [`SoftToken::DEFAULT_PIN`]
//!   (a new EC P-256 key and a self-signed certificate `CN=cml softtoken`). An existing file is never
//!   overwritten, not even a damaged one: it holds the key every wrapped container key depends on.
//! - `lockout`: `{"boot_id": "...", "failures": N}`, the consecutive wrong PINs counted during the boot
//!   `boot_id`. Written atomically on every change, so a daemon restart does not reset it.
//! - `boot_id.override` (test hook): if this file exists its content (trimmed) is used as the boot id
//!   instead of `/proc/sys/kernel/random/boot_id`, so tests can simulate a reboot.
//!
//! # Lockout
//! [`SoftToken::unlock`] and [`SoftToken::change_pin`] first read the counter. Failures recorded under
//! another boot id do not count (a reboot clears the lock). With [`MAX_FAILURES`] failures the call
//! fails with [`TokenError::Locked`] without trying the PIN. Otherwise the PIN is tried: a wrong one
//! increments the counter (the attempt that reaches [`MAX_FAILURES`] already answers `Locked`), a right
//! one resets it to 0. A token file that is not even a PKCS#12 structure is [`TokenError::Corrupt`] and
//! is not counted: the structure is parsed first (no password needed), then the PIN checks the MAC and
//! decrypts. The read-modify-write of the counter is not locked against a concurrent caller: the
//! daemon's softtoken service is a singleton that serializes the calls.
//!
//! # Wrapped container key format (`keys/<uuid>.key`)
//! ```text
//! offset  size  content
//! 0       4     magic "CMLK"
//! 4       1     version = 1
//! 5       2     n = length of the ephemeral public key, big endian (65)
//! 7       n     ephemeral EC P-256 public key, uncompressed SEC1 point (0x04 || X || Y)
//! 7+n     72    the 64-byte master key wrapped with AES-256 key wrap (RFC 3394)
//! ```
//! The key-encryption key is `HKDF-SHA256(ikm = ECDH shared secret, salt = uuid bytes,
//! info = "cml container key v1")`, 32 bytes. Wrapping uses ECDH(ephemeral private, token public), so
//! anyone can wrap for the token, but unwrapping needs ECDH(token private, ephemeral public), i.e. the
//! unlocked token. The uuid in the salt binds a blob to its container. RFC 3394's integrity check makes
//! a wrong token, a wrong uuid or a tampered blob fail with [`TokenError::UnwrapFailed`].

use std::{
    fmt, fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use openssl::{
    asn1::Asn1Time,
    bn::{BigNum, BigNumContext, MsbOption},
    cipher::Cipher,
    cipher_ctx::{CipherCtx, CipherCtxFlags},
    derive::Deriver,
    ec::{EcGroup, EcKey, EcPoint, PointConversionForm},
    error::ErrorStack,
    hash::MessageDigest,
    md::Md,
    nid::Nid,
    pkcs12::Pkcs12,
    pkey::{Id, PKey, Private, Public},
    pkey_ctx::PkeyCtx,
    x509::{X509, X509NameBuilder},
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::store::{self, StoreError};

/// File name of the token inside its directory.
pub const TOKEN_FILE: &str = "device.p12";
/// File name of the persisted lockout counter inside the token directory.
pub const LOCKOUT_FILE: &str = "lockout";
/// Test hook: if this file exists in the token directory its content is used as the boot id.
pub const BOOT_ID_OVERRIDE_FILE: &str = "boot_id.override";
/// Consecutive wrong PINs (within one boot) after which the token is locked until reboot.
pub const MAX_FAILURES: u32 = 3;

/// Friendly name of the key and certificate in the PKCS#12 file, also the certificate's CN.
const FRIENDLY_NAME: &str = "cml softtoken";
/// Where the kernel publishes the id of the current boot.
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Validity of the self-signed token certificate.
const CERT_DAYS: u32 = 3650;

/// Magic bytes at the start of a wrapped container key.
const BLOB_MAGIC: &[u8; 4] = b"CMLK";
/// Version of the wrapped container key format.
const BLOB_VERSION: u8 = 1;
/// HKDF info string of the key-encryption key.
const KEK_INFO: &[u8] = b"cml container key v1";
/// Length of an uncompressed SEC1 P-256 point.
const EC_POINT_LEN: usize = 65;
/// Length of a container master key (fscrypt AES-256-XTS).
pub const MASTER_KEY_LEN: usize = 64;
/// Length of the master key after RFC 3394 wrapping (8 bytes of integrity check value).
const WRAPPED_LEN: usize = MASTER_KEY_LEN + 8;
/// Length of the key-encryption key (AES-256).
const KEK_LEN: usize = 32;

/// A softtoken operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The PIN was wrong; `attempts_left` more wrong PINs are allowed before the lock.
    #[error("wrong pin ({attempts_left} attempts left)")]
    WrongPin {
        /// Wrong PINs still allowed in this boot before the token locks.
        attempts_left: u32,
    },
    /// Too many wrong PINs: locked until the machine reboots.
    #[error("softtoken locked till reboot after {MAX_FAILURES} wrong pins")]
    Locked,
    /// The PIN cannot be used (empty new PIN, or a NUL byte that the PKCS#12 code cannot take).
    #[error("invalid pin: {reason}")]
    InvalidPin {
        /// Why the PIN was refused.
        reason: &'static str,
    },
    /// The token file is damaged (not a PKCS#12 structure, or without an EC P-256 key).
    #[error("softtoken {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
        /// The openssl error, if there is one.
        #[source]
        source: Option<ErrorStack>,
    },
    /// A wrapped container key blob is malformed (magic, version or lengths).
    #[error("bad wrapped key file: {reason}")]
    BadKeyFile {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A well-formed wrapped key could not be unwrapped: another token, another uuid, or tampered.
    #[error("cannot unwrap the key of container {uuid} (other token, other container or tampered)")]
    UnwrapFailed {
        /// The container the key was meant for.
        uuid: String,
    },
    /// The lockout counter file exists but cannot be parsed.
    #[error("bad lockout state {}", path.display())]
    Lockout {
        /// The lockout file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading a file (token, lockout counter, boot id) failed.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the token directory failed.
    #[error("create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the token or the lockout counter failed.
    #[error("write softtoken state")]
    Write(#[source] StoreError),
    /// An openssl operation failed.
    #[error("openssl: {op}")]
    Openssl {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: ErrorStack,
    },
}

fn ossl(op: &'static str) -> impl FnOnce(ErrorStack) -> TokenError {
    move |source| TokenError::Openssl { op, source }
}

/// The device softtoken: an EC P-256 key in a PKCS#12 file protected by a passphrase (the PIN).
#[derive(Debug, Clone)]
pub struct SoftToken {
    path: PathBuf,
}

/// The persisted lockout counter (`dir/lockout`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct LockoutState {
    boot_id: String,
    failures: u32,
}

/// The result of trying a PIN on a well-formed token file.
enum Opened {
    Ok { key: PKey<Private>, cert: X509 },
    WrongPin,
}

impl SoftToken {
    /// The passphrase a new token is created with (upstream's default).
    pub const DEFAULT_PIN: &'static str = "trustme";

    /// Opens `dir/device.p12`, creating it with [`Self::DEFAULT_PIN`] (new EC P-256 key + self-signed
    /// cert CN=cml softtoken, friendly name) if missing. `dir` is created (mode 0700) if missing; the
    /// token is written atomically with mode 0600. An existing file is not checked here (a damaged one
    /// shows up as [`TokenError::Corrupt`] at unlock) and never overwritten.
    pub fn open_or_create(dir: &Path) -> Result<SoftToken, TokenError> {
        let path = dir.join(TOKEN_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok(SoftToken { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(TokenError::Read { path, source }),
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TokenError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let key = new_ec_key()?;
        let cert = self_signed_cert(&key)?;
        let der = Zeroizing::new(pkcs12_der(&key, &cert, Self::DEFAULT_PIN)?);
        store::atomic_write(&path, &der, 0o600).map_err(TokenError::Write)?;
        tracing::info!(path = %path.display(), "created device softtoken with the default pin");
        Ok(SoftToken { path })
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlocks with `pin`, enforcing the lockout (module doc): `Ok(Unlocked)`, or
    /// `Err(WrongPin { attempts_left })` / `Err(Locked)` / `Err(Corrupt { .. })` for a damaged file.
    pub fn unlock(&self, pin: &str) -> Result<Unlocked, TokenError> {
        let (key, _cert) = self.open_counted(pin)?;
        Ok(Unlocked { key })
    }

    /// Re-encrypts the same key (and certificate) under `new` (atomic write); requires the right `old`
    /// PIN, which counts toward the lockout like [`Self::unlock`]. Wrapped container keys stay valid.
    pub fn change_pin(&self, old: &str, new: &str) -> Result<(), TokenError> {
        check_pin(new)?;
        if new.is_empty() {
            return Err(TokenError::InvalidPin { reason: "empty" });
        }
        let (key, cert) = self.open_counted(old)?;
        let der = Zeroizing::new(pkcs12_der(&key, &cert, new)?);
        store::atomic_write(&self.path, &der, 0o600).map_err(TokenError::Write)?;
        tracing::info!(path = %self.path.display(), "softtoken pin changed");
        Ok(())
    }

    /// Whether the PIN is still [`Self::DEFAULT_PIN`]. Tries it without touching the lockout counter
    /// (a failure here is not an attempt, a success does not reset it); false if the file is
    /// unreadable or damaged.
    pub fn has_default_pin(&self) -> bool {
        matches!(self.try_pin(Self::DEFAULT_PIN), Ok(Opened::Ok { .. }))
    }

    /// Tries `pin` under the lockout rules and returns the key and certificate.
    fn open_counted(&self, pin: &str) -> Result<(PKey<Private>, X509), TokenError> {
        check_pin(pin)?;
        let dir = self.dir();
        let boot_id = current_boot_id(dir)?;
        let lockout_path = dir.join(LOCKOUT_FILE);
        let mut state = read_lockout(&lockout_path)?;
        let stored_failures = state.failures;
        if state.boot_id != boot_id {
            // Failures of an earlier boot do not count: a reboot lifts the lock.
            state = LockoutState { boot_id, failures: 0 };
        }
        if state.failures >= MAX_FAILURES {
            return Err(TokenError::Locked);
        }
        match self.try_pin(pin)? {
            Opened::Ok { key, cert } => {
                // Also rewrites a stale lock of an earlier boot, so the file shows the truth.
                if stored_failures != 0 {
                    state.failures = 0;
                    write_lockout(&lockout_path, &state)?;
                }
                Ok((key, cert))
            }
            Opened::WrongPin => {
                state.failures += 1;
                write_lockout(&lockout_path, &state)?;
                tracing::warn!(
                    path = %self.path.display(),
                    failures = state.failures,
                    "wrong softtoken pin"
                );
                if state.failures >= MAX_FAILURES {
                    Err(TokenError::Locked)
                } else {
                    Err(TokenError::WrongPin {
                        attempts_left: MAX_FAILURES - state.failures,
                    })
                }
            }
        }
    }

    /// Parses the token file (structure first, then `pin`), without any lockout bookkeeping.
    fn try_pin(&self, pin: &str) -> Result<Opened, TokenError> {
        check_pin(pin)?;
        let der = Zeroizing::new(fs::read(&self.path).map_err(|source| TokenError::Read {
            path: self.path.clone(),
            source,
        })?);
        let p12 =
            Pkcs12::from_der(&der).map_err(|source| self.corrupt("not a pkcs#12 file", Some(source)))?;
        // The structure is sound, so a failure now is the MAC check or the decryption: a wrong PIN.
        let Ok(parsed) = p12.parse2(pin) else {
            return Ok(Opened::WrongPin);
        };
        let key = parsed.pkey.ok_or_else(|| self.corrupt("no private key", None))?;
        let cert = parsed.cert.ok_or_else(|| self.corrupt("no certificate", None))?;
        let is_p256 = key
            .ec_key()
            .ok()
            .and_then(|ec| ec.group().curve_name())
            .is_some_and(|nid| nid == Nid::X9_62_PRIME256V1);
        if !is_p256 {
            return Err(self.corrupt("the key is not an EC P-256 key", None));
        }
        Ok(Opened::Ok { key, cert })
    }

    fn corrupt(&self, reason: &'static str, source: Option<ErrorStack>) -> TokenError {
        TokenError::Corrupt {
            path: self.path.clone(),
            reason,
            source,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Refuses PINs the PKCS#12 code cannot take (it panics on an interior NUL).
fn check_pin(pin: &str) -> Result<(), TokenError> {
    if pin.contains('\0') {
        return Err(TokenError::InvalidPin {
            reason: "contains a NUL byte",
        });
    }
    Ok(())
}

fn current_boot_id(dir: &Path) -> Result<String, TokenError> {
    let override_path = dir.join(BOOT_ID_OVERRIDE_FILE);
    let path = match fs::symlink_metadata(&override_path) {
        Ok(_) => override_path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => PathBuf::from(KERNEL_BOOT_ID),
        Err(source) => {
            return Err(TokenError::Read {
                path: override_path,
                source,
            });
        }
    };
    let text = fs::read_to_string(&path).map_err(|source| TokenError::Read { path, source })?;
    Ok(text.trim().to_owned())
}

fn read_lockout(path: &Path) -> Result<LockoutState, TokenError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Lockout {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LockoutState::default()),
        Err(source) => Err(TokenError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_lockout(path: &Path, state: &LockoutState) -> Result<(), TokenError> {
    // Serializing a struct of a string and an integer cannot fail; map it anyway rather than unwrap.
    let json = serde_json::to_vec(state).map_err(|source| TokenError::Lockout {
        path: path.to_owned(),
        source,
    })?;
    store::atomic_write(path, &json, 0o600).map_err(TokenError::Write)
}

fn p256() -> Result<EcGroup, TokenError> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl("load curve P-256"))
}

fn new_ec_key() -> Result<PKey<Private>, TokenError> {
    let group = p256()?;
    let ec = EcKey::generate(&group).map_err(ossl("generate EC key"))?;
    PKey::from_ec_key(ec).map_err(ossl("wrap EC key"))
}

fn self_signed_cert(key: &PKey<Private>) -> Result<X509, TokenError> {
    (|| -> Result<X509, ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, FRIENDLY_NAME)?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(key)?;
        let not_before = Asn1Time::days_from_now(0)?;
        let not_after = Asn1Time::days_from_now(CERT_DAYS)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.sign(key, MessageDigest::sha256())?;
        Ok(b.build())
    })()
    .map_err(ossl("create the softtoken certificate"))
}

fn pkcs12_der(key: &PKey<Private>, cert: &X509, pin: &str) -> Result<Vec<u8>, TokenError> {
    Pkcs12::builder()
        .name(FRIENDLY_NAME)
        .pkey(key)
        .cert(cert)
        .build2(pin)
        .and_then(|p12| p12.to_der())
        .map_err(ossl("build the pkcs#12 file"))
}

/// The unlocked token (holds the private key; drop it as soon as possible).
pub struct Unlocked {
    key: PKey<Private>,
}

impl fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unlocked").finish_non_exhaustive()
    }
}

impl Unlocked {
    /// Creates a fresh random 64-byte container master key (fscrypt AES-256-XTS needs 64 bytes) and
    /// its wrapped form (format in the module doc), bound to `uuid`.
    pub fn new_container_key(&self, uuid: &str) -> Result<(MasterKey, Vec<u8>), TokenError> {
        let mut master = MasterKey([0; MASTER_KEY_LEN]);
        openssl::rand::rand_bytes(&mut master.0).map_err(ossl("random master key"))?;

        let group = p256()?;
        let ephemeral = EcKey::generate(&group).map_err(ossl("generate ephemeral key"))?;
        let mut bn_ctx = BigNumContext::new().map_err(ossl("bignum context"))?;
        let point = ephemeral
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut bn_ctx)
            .map_err(ossl("encode ephemeral public key"))?;
        let ephemeral = PKey::from_ec_key(ephemeral).map_err(ossl("wrap ephemeral key"))?;

        let kek = kek(&ephemeral, &self.key, uuid)?;
        let wrapped = aes_wrap(&kek, &master.0)?;

        let point_len = u16::try_from(point.len()).map_err(|_| TokenError::BadKeyFile {
            reason: "ephemeral public key too long",
        })?;
        let mut blob = Vec::with_capacity(7 + point.len() + wrapped.len());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&point_len.to_be_bytes());
        blob.extend_from_slice(&point);
        blob.extend_from_slice(&wrapped);
        Ok((master, blob))
    }

    /// Unwraps a blob made by [`Self::new_container_key`] for the same `uuid` (and the same token).
    pub fn unwrap_container_key(&self, uuid: &str, blob: &[u8]) -> Result<MasterKey, TokenError> {
        let bad = |reason| TokenError::BadKeyFile { reason };
        let rest = blob.strip_prefix(BLOB_MAGIC).ok_or(bad("wrong magic"))?;
        let (&version, rest) = rest.split_first().ok_or(bad("truncated header"))?;
        if version != BLOB_VERSION {
            return Err(bad("unsupported version"));
        }
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(bad("truncated header"))?;
        let point_len = usize::from(u16::from_be_bytes(*len));
        if point_len != EC_POINT_LEN {
            return Err(bad("wrong ephemeral public key length"));
        }
        if rest.len() != point_len + WRAPPED_LEN {
            return Err(bad("wrong length"));
        }
        let (point, wrapped) = rest.split_at(point_len);

        let group = p256()?;
        let mut bn_ctx = BigNumContext::new().map_err(ossl("bignum context"))?;
        // oct2point rejects points that are not on the curve.
        let point = EcPoint::from_bytes(&group, point, &mut bn_ctx)
            .map_err(|_| bad("ephemeral public key is not a P-256 point"))?;
        let ephemeral: PKey<Public> = EcKey::from_public_key(&group, &point)
            .and_then(PKey::from_ec_key)
            .map_err(|_| bad("ephemeral public key is not a P-256 point"))?;

        let kek = kek(&self.key, &ephemeral, uuid)?;
        let mut master = MasterKey([0; MASTER_KEY_LEN]);
        aes_unwrap(&kek, wrapped, &mut master.0).map_err(|()| TokenError::UnwrapFailed {
            uuid: uuid.to_owned(),
        })?;
        Ok(master)
    }
}

/// KEK = HKDF-SHA256(ECDH(`ours`, `peer`), salt = uuid, info = [`KEK_INFO`]).
fn kek<T, U>(ours: &PKey<T>, peer: &PKey<U>, uuid: &str) -> Result<Zeroizing<[u8; KEK_LEN]>, TokenError>
where
    T: openssl::pkey::HasPrivate,
    U: openssl::pkey::HasPublic,
{
    let mut deriver = Deriver::new(ours).map_err(ossl("ecdh init"))?;
    deriver.set_peer(peer).map_err(ossl("ecdh peer key"))?;
    let secret = Zeroizing::new(deriver.derive_to_vec().map_err(ossl("ecdh derive"))?);

    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    (|| -> Result<(), ErrorStack> {
        let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
        ctx.derive_init()?;
        ctx.set_hkdf_md(Md::sha256())?;
        ctx.set_hkdf_key(&secret)?;
        ctx.set_hkdf_salt(uuid.as_bytes())?;
        ctx.add_hkdf_info(KEK_INFO)?;
        ctx.derive(Some(&mut kek[..]))?;
        Ok(())
    })()
    .map_err(ossl("hkdf"))?;
    Ok(kek)
}

/// RFC 3394 AES-256 key wrap of `key` (the EVP context copies the KEK and cleanses it when freed).
fn aes_wrap(kek: &[u8; KEK_LEN], key: &[u8; MASTER_KEY_LEN]) -> Result<Vec<u8>, TokenError> {
    (|| -> Result<Vec<u8>, ErrorStack> {
        let mut ctx = CipherCtx::new()?;
        ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
        ctx.encrypt_init(Some(Cipher::aes_256_wrap()), Some(kek), None)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        ctx.cipher_update_vec(key, &mut out)?;
        ctx.cipher_final_vec(&mut out)?;
        Ok(out)
    })()
    .map_err(ossl("aes key wrap"))
}

/// RFC 3394 AES-256 key unwrap into `out`; fails when the integrity check value does not match.
fn aes_unwrap(kek: &[u8; KEK_LEN], wrapped: &[u8], out: &mut [u8; MASTER_KEY_LEN]) -> Result<(), ()> {
    let mut plain = Zeroizing::new(Vec::with_capacity(WRAPPED_LEN + 16));
    (|| -> Result<(), ErrorStack> {
        let mut ctx = CipherCtx::new()?;
        ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
        ctx.decrypt_init(Some(Cipher::aes_256_wrap()), Some(kek), None)?;
        ctx.cipher_update_vec(wrapped, &mut plain)?;
        ctx.cipher_final_vec(&mut plain)?;
        Ok(())
    })()
    .map_err(|_| ())?;
    if plain.len() != MASTER_KEY_LEN {
        return Err(());
    }
    out.copy_from_slice(&plain);
    Ok(())
}

/// A 64-byte container master key, zeroized on drop. Its `Debug` does not show the bytes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// The key bytes (for fscrypt); do not copy them anywhere that outlives this value.
    pub fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> (tempfile::TempDir, SoftToken) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(BOOT_ID_OVERRIDE_FILE), "boot-1\n").unwrap();
        let tok = SoftToken::open_or_create(dir.path()).unwrap();
        (dir, tok)
    }

    fn set_boot(dir: &tempfile::TempDir, id: &str) {
        fs::write(dir.path().join(BOOT_ID_OVERRIDE_FILE), id).unwrap();
    }

    fn failures(dir: &tempfile::TempDir) -> u32 {
        read_lockout(&dir.path().join(LOCKOUT_FILE)).unwrap().failures
    }

    fn assert_wrong(r: Result<Unlocked, TokenError>, left: u32) {
        match r {
            Err(TokenError::WrongPin { attempts_left }) => assert_eq!(attempts_left, left),
            other => panic!("expected WrongPin({left}), got {other:?}"),
        }
    }

    fn assert_locked<T: fmt::Debug>(r: Result<T, TokenError>) {
        assert!(matches!(r, Err(TokenError::Locked)), "expected Locked, got {r:?}");
    }

    #[test]
    fn create_then_unlock_with_default_pin() {
        let (dir, tok) = token();
        let meta = fs::metadata(tok.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        tok.unlock(SoftToken::DEFAULT_PIN).unwrap();
        // Re-opening keeps the same file (no re-creation).
        let before = fs::read(tok.path()).unwrap();
        let again = SoftToken::open_or_create(dir.path()).unwrap();
        assert_eq!(fs::read(again.path()).unwrap(), before);
        let p12 = Pkcs12::from_der(&before).unwrap().parse2("trustme").unwrap();
        let cert = p12.cert.unwrap();
        assert!(crate::crypto::subject_text(&cert).contains("cml softtoken"));
    }

    #[test]
    fn lockout_after_three_failures_persists_until_reboot() {
        let (dir, tok) = token();
        assert_wrong(tok.unlock("nope"), 2);
        assert_wrong(tok.unlock("nope"), 1);
        assert_locked(tok.unlock("nope"));
        assert_locked(tok.unlock(SoftToken::DEFAULT_PIN));
        assert_locked(tok.change_pin(SoftToken::DEFAULT_PIN, "x"));
        // Persisted: a new handle (daemon restart) is still locked.
        let tok = SoftToken::open_or_create(dir.path()).unwrap();
        assert_locked(tok.unlock(SoftToken::DEFAULT_PIN));
        // A reboot lifts the lock; the correct pin works and resets the counter.
        set_boot(&dir, "boot-2");
        tok.unlock(SoftToken::DEFAULT_PIN).unwrap();
        assert_eq!(failures(&dir), 0);
        assert_wrong(tok.unlock("nope"), 2);
    }

    #[test]
    fn correct_pin_resets_counter() {
        let (dir, tok) = token();
        assert_wrong(tok.unlock("a"), 2);
        assert_wrong(tok.unlock("b"), 1);
        tok.unlock(SoftToken::DEFAULT_PIN).unwrap();
        assert_eq!(failures(&dir), 0);
        assert_wrong(tok.unlock("c"), 2);
        assert_wrong(tok.unlock("d"), 1);
        assert_locked(tok.unlock("e"));
    }

    #[test]
    fn change_pin() {
        let (_dir, tok) = token();
        assert!(tok.has_default_pin());
        let (key, blob) = tok.unlock("trustme").unwrap().new_container_key("u1").unwrap();
        assert_wrong(tok.change_pin("wrong", "1234").map(|()| unreachable!()), 2);
        tok.change_pin("trustme", "1234").unwrap();
        assert!(!tok.has_default_pin());
        assert_wrong(tok.unlock("trustme"), 2);
        let unlocked = tok.unlock("1234").unwrap();
        // The key is the same: wrapped keys stay valid.
        assert_eq!(
            unlocked.unwrap_container_key("u1", &blob).unwrap().bytes(),
            key.bytes()
        );
        assert!(matches!(
            tok.change_pin("1234", ""),
            Err(TokenError::InvalidPin { .. })
        ));
        assert!(matches!(tok.unlock("a\0b"), Err(TokenError::InvalidPin { .. })));
    }

    #[test]
    fn has_default_pin_does_not_count() {
        let (dir, tok) = token();
        tok.change_pin("trustme", "secret").unwrap();
        for _ in 0..5 {
            assert!(!tok.has_default_pin());
        }
        assert!(!dir.path().join(LOCKOUT_FILE).exists() || failures(&dir) == 0);
        tok.unlock("secret").unwrap();
    }

    #[test]
    fn wrapped_key_round_trip() {
        let (_dir, tok) = token();
        let unlocked = tok.unlock("trustme").unwrap();
        let (key, blob) = unlocked.new_container_key("uuid-x").unwrap();
        assert_eq!(&blob[..4], b"CMLK");
        assert_eq!(blob[4], 1);
        assert_eq!(blob.len(), 7 + 65 + 72);
        assert_ne!(key.bytes(), &[0u8; 64]);
        let (key2, blob2) = unlocked.new_container_key("uuid-x").unwrap();
        assert_ne!(key.bytes(), key2.bytes());
        assert_ne!(blob, blob2);
        assert_eq!(
            unlocked.unwrap_container_key("uuid-x", &blob).unwrap().bytes(),
            key.bytes()
        );
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn key_of_token_a_fails_with_token_b() {
        let (_a_dir, a) = token();
        let (_b_dir, b) = token();
        let (_, blob) = a.unlock("trustme").unwrap().new_container_key("u").unwrap();
        let r = b.unlock("trustme").unwrap().unwrap_container_key("u", &blob);
        assert!(matches!(r, Err(TokenError::UnwrapFailed { .. })), "{r:?}");
    }

    #[test]
    fn blob_for_other_uuid_fails() {
        let (_dir, tok) = token();
        let unlocked = tok.unlock("trustme").unwrap();
        let (_, blob) = unlocked.new_container_key("X").unwrap();
        let r = unlocked.unwrap_container_key("Y", &blob);
        assert!(matches!(r, Err(TokenError::UnwrapFailed { .. })), "{r:?}");
    }

    #[test]
    fn tampered_or_malformed_blob_fails() {
        let (_dir, tok) = token();
        let unlocked = tok.unlock("trustme").unwrap();
        let (_, blob) = unlocked.new_container_key("u").unwrap();
        // A flipped bit in the wrapped key or in the ephemeral point.
        for i in [blob.len() - 1, 7 + 65, 7 + 30] {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            let r = unlocked.unwrap_container_key("u", &t);
            assert!(
                matches!(
                    r,
                    Err(TokenError::UnwrapFailed { .. } | TokenError::BadKeyFile { .. })
                ),
                "byte {i}: {r:?}"
            );
        }
        let bad_file = |b: &[u8]| {
            let r = unlocked.unwrap_container_key("u", b);
            assert!(matches!(r, Err(TokenError::BadKeyFile { .. })), "{r:?}");
        };
        let mut t = blob.clone();
        t[0] = b'X';
        bad_file(&t);
        let mut t = blob.clone();
        t[4] = 2;
        bad_file(&t);
        let mut t = blob.clone();
        t[6] = 64;
        bad_file(&t);
        bad_file(&blob[..blob.len() - 1]);
        bad_file(&[blob.as_slice(), &[0]].concat());
        bad_file(&blob[..6]);
        bad_file(b"");
    }

    #[test]
    fn truncated_token_is_corrupt_and_not_counted() {
        let (dir, tok) = token();
        let der = fs::read(tok.path()).unwrap();
        fs::write(tok.path(), &der[..der.len() / 2]).unwrap();
        for _ in 0..4 {
            let r = tok.unlock("trustme");
            assert!(matches!(r, Err(TokenError::Corrupt { .. })), "{r:?}");
            let r = tok.unlock("wrong");
            assert!(matches!(r, Err(TokenError::Corrupt { .. })), "{r:?}");
        }
        assert!(!dir.path().join(LOCKOUT_FILE).exists());
        assert!(!tok.has_default_pin());
        fs::write(tok.path(), b"not der at all").unwrap();
        assert!(matches!(tok.unlock("trustme"), Err(TokenError::Corrupt { .. })));
        // Repaired file: unlocking works, nothing was counted.
        fs::write(tok.path(), &der).unwrap();
        tok.unlock("trustme").unwrap();
    }
}
