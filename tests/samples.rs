//! The sample configs shipped in `config/` load with the same checks the daemon applies.

#![allow(clippy::unwrap_used)]

use std::{fs, path::Path};

use cml::{
    container::{load_config, validate_against_catalog},
    device::DEFAULT_DEVICE_CONF,
    guestos::Catalog,
    protocol::{
        pb::{ContainerTrust, DeviceConfig, GuestOsConfig},
        text,
    },
};

fn read(p: &str) -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap()
}

#[test]
fn sample_configs_load() {
    for f in ["config/device.conf", "config/device-dev.conf"] {
        text::parse::<DeviceConfig>(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let shipped: DeviceConfig = text::parse(&read("config/device.conf")).unwrap();
    let default: DeviceConfig = text::parse(DEFAULT_DEVICE_CONF.as_bytes()).unwrap();
    assert_eq!(
        shipped, default,
        "config/device.conf must match what cmld writes on first start"
    );
    assert!(shipped.signed_configs());

    // The GuestOS the sample containers name, as `cml-guestos build` would describe it (minus the
    // image, which the catalog would check).
    let os: GuestOsConfig = text::parse(
        b"name: \"demo-busybox\" hardware: \"x86\" version: 1 description { en: \"demo\" } \
          mounts { image_file: \"data\" mount_point: \"/data\" fs_type: \"tmpfs\" mount_type: EMPTY def_size: 16 }",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = store.path().join("demo-busybox-1");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("demo-busybox-1.conf"), text::print(&os)).unwrap();
    let (catalog, errors) = Catalog::scan(store.path(), &|_, _, _| Ok(ContainerTrust::Unsigned));
    assert!(errors.is_empty(), "{errors:?}");

    for f in [
        "config/containers/demo.conf",
        "config/containers/full-example.conf",
    ] {
        let cfg = load_config(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        validate_against_catalog(&cfg, &catalog, false).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let demo = load_config(&read("config/containers/demo.conf")).unwrap();
    assert_eq!(demo.color, 0x3366ffff);
}
