//! The device's identity (SPEC §9): an EC P-256 key pair and a UUID, created on the first start and
//! kept in `tokens/` (`device-id.key`, 0600; `device-id.uuid`), a CSR for them (subject
//! `CN=<device UUID>`), and the device certificate (`tokens/device.cert`) once one that matches the
//! key — and chains to a registered CA, when any is registered — has been pushed. Also the
//! provisioned marker (`<data>/provisioned`), which nothing in cmld removes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use openssl::x509::X509;

use crate::{crypto, store};

/// Why a provisioning step failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A key, CSR or certificate operation failed, or the certificate is not acceptable.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The identity files are damaged.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The device's key pair and UUID.
pub struct DeviceIdentity {
    dir: PathBuf,
    /// The device UUID.
    pub uuid: uuid::Uuid,
    key_pem: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// Loads the identity from `tokens_dir`, creating it (key first, then the UUID: the commit
    /// point) when it does not exist yet.
    pub fn load_or_create(tokens_dir: &Path) -> Result<DeviceIdentity, ProvisioningError> {
        let (key_path, uuid_path) = (
            tokens_dir.join("device-id.key"),
            tokens_dir.join("device-id.uuid"),
        );
        if !uuid_path.exists() {
            fs::create_dir_all(tokens_dir).map_err(|source| ProvisioningError::Io {
                path: tokens_dir.to_path_buf(),
                source,
            })?;
            let key = zeroize::Zeroizing::new(crypto::new_ec_key_pem()?);
            store::atomic_write(&key_path, &key, 0o600)?;
            store::atomic_write(&uuid_path, uuid::Uuid::new_v4().to_string().as_bytes(), 0o644)?;
        }
        let read = |p: &Path| {
            fs::read(p).map_err(|source| ProvisioningError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let text = read(&uuid_path)?;
        let uuid = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok())
            .ok_or_else(|| ProvisioningError::Damaged {
                path: uuid_path.clone(),
                reason: "not a UUID".into(),
            })?;
        let key_pem = zeroize::Zeroizing::new(read(&key_path)?);
        // Fails early (and names the file) if the key is damaged.
        crypto::csr_pem(&key_pem, &uuid.to_string()).map_err(|e| ProvisioningError::Damaged {
            path: key_path,
            reason: e.to_string(),
        })?;
        Ok(DeviceIdentity {
            dir: tokens_dir.to_path_buf(),
            uuid,
            key_pem,
        })
    }

    /// A PEM CSR for the device key, subject `CN=<device UUID>`.
    pub fn csr(&self) -> Result<Vec<u8>, ProvisioningError> {
        Ok(crypto::csr_pem(&self.key_pem, &self.uuid.to_string())?)
    }

    /// Where the device certificate is kept.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("device.cert")
    }

    /// Stores `pem` as the device certificate if its leaf's public key is the device key and, when
    /// `anchors` is not empty, it chains to one of them. Nothing is stored otherwise. Returns the
    /// certificate's subject.
    pub fn accept_cert(&self, pem: &[u8], anchors: &[X509]) -> Result<String, ProvisioningError> {
        crypto::check_key_matches_cert(&self.key_pem, pem)?;
        let subject = if anchors.is_empty() {
            crypto::subject_text(&crypto::parse_cert_chain(pem)?[0])
        } else {
            crypto::verify_cert_chain(pem, anchors)?
        };
        store::atomic_write(&self.cert_path(), pem, 0o644)?;
        Ok(subject)
    }
}
