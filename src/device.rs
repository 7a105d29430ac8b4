//! Device-wide settings: `device.conf`, created with defaults on first start.

use crate::{
    protocol::{pb::DeviceConfig, text},
    store::{self, DataDir},
};

/// The `device.conf` written on first start: hosted mode, signatures required (SPEC §3: a
/// development setup turns `signed_configs` off explicitly).
pub const DEFAULT_DEVICE_CONF: &str = "\
# cml device configuration (protobuf text, DeviceConfig in proto/device.proto).
# Written with defaults on the daemon's first start; edit and restart cmld to change.
hostedmode: true
signed_configs: true
tpm_enabled: false
";

/// `device.conf` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The file is not valid DeviceConfig text.
    #[error("{path}:{source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and what.
        #[source]
        source: text::TextError,
    },
    /// The file could not be read or created.
    #[error("cannot read or create device.conf")]
    Store(#[from] store::StoreError),
}

/// Reads `device.conf`, creating it with [`DEFAULT_DEVICE_CONF`] when it does not exist.
pub fn load_or_create(data: &DataDir) -> Result<DeviceConfig, DeviceError> {
    let path = data.device_conf();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            store::atomic_write(&path, DEFAULT_DEVICE_CONF.as_bytes(), 0o600)?;
            DEFAULT_DEVICE_CONF.as_bytes().to_vec()
        }
        Err(e) => {
            return Err(store::StoreError {
                op: "read",
                path,
                source: e,
            }
            .into());
        }
    };
    text::parse(&bytes).map_err(|source| DeviceError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// Whether the device runs in hosted mode (an absent `hostedmode` means hosted, SPEC §3).
pub fn hosted(cfg: &DeviceConfig) -> bool {
    cfg.hostedmode.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_created_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let data = DataDir::new(d.path());
        let cfg = load_or_create(&data).unwrap();
        assert!(hosted(&cfg));
        assert!(cfg.signed_configs());
        assert!(data.device_conf().exists());
        std::fs::write(data.device_conf(), "signed_configs: nope\n").unwrap();
        let e = load_or_create(&data).unwrap_err().to_string();
        assert!(e.contains("1:17"), "{e}");
    }
}
