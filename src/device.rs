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

/// Disk and memory figures for `device_stats`: `disk_system*` of the root file system,
/// `disk_containers*` of the data directory's file system (bytes), memory from `/proc/meminfo`
/// (bytes).
pub fn stats(data_dir: &std::path::Path) -> crate::protocol::pb::DeviceStats {
    let disk = |p: &std::path::Path| {
        nix::sys::statvfs::statvfs(p).ok().map(|v| {
            let frag = v.fragment_size();
            let total = v.blocks() * frag;
            let free = v.blocks_available() * frag;
            let used = (v.blocks() - v.blocks_free()) * frag;
            (total, free, used)
        })
    };
    let (st, sf, su) = disk(std::path::Path::new("/")).unwrap_or_default();
    let containers = disk(data_dir);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    crate::protocol::pb::DeviceStats {
        disk_system: st,
        disk_system_free: sf,
        disk_system_used: su,
        disk_containers: containers.map(|c| c.0),
        disk_containers_free: containers.map(|c| c.1),
        disk_containers_used: containers.map(|c| c.2),
        mem_total: mem("MemTotal"),
        mem_free: mem("MemFree"),
        mem_available: mem("MemAvailable"),
    }
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
