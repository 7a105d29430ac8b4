//! Container config validation, shared by `create`, `update_config`, `reload` and daemon start-up
//! (STYLE item 5: files and socket commands go through the same checks).
//!
//! [`load_config`] parses the text and checks everything that depends on the config alone;
//! [`validate_against_catalog`] checks what depends on the installed GuestOSes. Configs loaded from
//! disk at start-up pass only the first, so a container whose GuestOS disappeared stays visible (and
//! removable) instead of vanishing.

use std::{collections::HashSet, net::IpAddr};

use crate::{
    guestos::{self, Catalog, GuestOs},
    protocol::{
        pb::{ContainerConfig, ContainerTokenType, ContainerType, guest_os_mount::Type as MountType},
        text::{self, TextError},
    },
};

/// A container config that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text does not parse.
    #[error("config does not parse: {0}")]
    Text(#[from] TextError),
    /// A field has a value we refuse.
    #[error("field '{field}': {reason}")]
    Invalid {
        /// The field (path) concerned.
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

/// A value for an error message: quoted and escaped, and cut after 60 characters for long ones (a
/// message must not grow with a hostile input).
fn quoted(value: &str) -> String {
    if value.len() <= 80 {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(60).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest container name: the name becomes the container's hostname (HOST_NAME_MAX).
pub const MAX_NAME_LEN: usize = 64;

/// Required fields of a container config that may be missing (SPEC §3): upstream's own shipped
/// configs omit `color` and upstream's parser accepts them, so a missing `color` is 0, with a
/// warning. `name` and `guest_os` stay required.
const DEFAULTED_FIELDS: &[&str] = &["color"];

/// Parses and validates a container config, then fills in the fields upstream marks required
/// (`type`, `token_type`) so that what we store and send back is readable by upstream's parser.
pub fn load_config(input: &[u8]) -> Result<ContainerConfig, ConfigError> {
    load_config_with_warnings(input).map(|(cfg, _)| cfg)
}

/// [`load_config`], also returning a warning for each defaulted required field (see
/// [`DEFAULTED_FIELDS`]), for the reply to the client.
pub fn load_config_with_warnings(input: &[u8]) -> Result<(ContainerConfig, Vec<String>), ConfigError> {
    let (mut cfg, missing) = text::parse_lenient::<ContainerConfig>(input, DEFAULTED_FIELDS)?;
    validate_static(&cfg)?;
    cfg.r#type = Some(cfg.r#type() as i32);
    cfg.token_type = Some(cfg.token_type() as i32);
    let warnings = missing
        .iter()
        .map(|f| format!("the config has no {f}; using 0"))
        .collect();
    Ok((cfg, warnings))
}

fn validate_static(cfg: &ContainerConfig) -> Result<(), ConfigError> {
    check_name(&cfg.name)?;
    if !guestos::valid_name(&cfg.guest_os) {
        return Err(invalid(
            "guest_os",
            format!("{} is not a valid GuestOS name", quoted(&cfg.guest_os)),
        ));
    }
    if ContainerType::try_from(cfg.r#type.unwrap_or(ContainerType::Container as i32))
        != Ok(ContainerType::Container)
    {
        return Err(invalid(
            "type",
            "only CONTAINER is supported (KVM guests are not)",
        ));
    }
    match ContainerTokenType::try_from(cfg.token_type.unwrap_or(ContainerTokenType::Soft as i32)) {
        Ok(ContainerTokenType::None | ContainerTokenType::Soft) => {}
        Ok(ContainerTokenType::Usb | ContainerTokenType::Pkcs11) => {
            return Err(invalid(
                "token_type",
                "USB and PKCS11 tokens need hardware this device does not have; use SOFT or NONE",
            ));
        }
        Err(_) => return Err(invalid("token_type", "unknown token type")),
    }
    if cfg.usb_pin_entry() {
        return Err(invalid(
            "usb_pin_entry",
            "PIN entry on a USB pin pad needs hardware this device does not have",
        ));
    }
    if let Some(cpus) = &cfg.assign_cpus {
        check_cpu_list(cpus).map_err(|r| invalid("assign_cpus", r))?;
    }
    if let Some(dns) = &cfg.dns_server {
        dns.parse::<IpAddr>()
            .map_err(|_| invalid("dns_server", format!("{} is not an IP address", quoted(dns))))?;
    }
    for (i, env) in cfg.init_env.iter().enumerate() {
        match env.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains('\0') && !env.contains('\0') => {}
            _ => {
                return Err(invalid(
                    format!("init_env[{i}]"),
                    format!("{} is not NAME=VALUE", quoted(env)),
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, v) in cfg.vnet_configs.iter().enumerate() {
        check_ifname(&v.if_name).map_err(|r| invalid(format!("vnet_configs[{i}].if_name"), r))?;
        if !names.insert(v.if_name.as_str()) {
            return Err(invalid(
                format!("vnet_configs[{i}].if_name"),
                format!("{} is used twice", quoted(&v.if_name)),
            ));
        }
        if let Some(n) = &v.if_rootns_name {
            check_ifname(n).map_err(|r| invalid(format!("vnet_configs[{i}].if_rootns_name"), r))?;
        }
        if let Some(mac) = &v.if_mac
            && !valid_mac(mac)
        {
            return Err(invalid(
                format!("vnet_configs[{i}].if_mac"),
                format!("{} is not a MAC address", quoted(mac)),
            ));
        }
    }
    for (i, p) in cfg.net_ifaces.iter().enumerate() {
        if !valid_mac(&p.netif) {
            check_ifname(&p.netif).map_err(|r| invalid(format!("net_ifaces[{i}].netif"), r))?;
        }
    }
    for (i, s) in cfg.image_sizes.iter().enumerate() {
        if !guestos::valid_file_name(&s.image_name) {
            return Err(invalid(
                format!("image_sizes[{i}].image_name"),
                format!("{} is not a valid image name", quoted(&s.image_name)),
            ));
        }
        if let Some(f) = &s.image_file
            && !guestos::valid_file_name(f)
        {
            return Err(invalid(
                format!("image_sizes[{i}].image_file"),
                format!("{} is not a valid file name", quoted(f)),
            ));
        }
    }
    Ok(())
}

/// Checks a container name: 1 to 64 bytes, no whitespace, control characters or `/`.
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("name", format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            "name",
            format!("{} contains whitespace, a control character or '/'", quoted(name)),
        ));
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{} must be 1 to 15 bytes long", quoted(name)));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == ':')
        || name == "."
        || name == ".."
    {
        return Err(format!("{} is not a valid interface name", quoted(name)));
    }
    Ok(())
}

fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_cpu_list(s: &str) -> Result<(), String> {
    let bad = || format!("{} is not a CPU list like \"0-1,3\"", quoted(s));
    if s.is_empty() {
        return Err(bad());
    }
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
    }
    Ok(())
}

/// Checks a config against the installed GuestOSes and returns the version it will use: for a
/// `pinned` (signed) config exactly `guestos_version`, otherwise the newest installed version of its
/// `guest_os`, which must be at least `guestos_version` when set.
/// `image_sizes` must name EMPTY or OVERLAY_RW mounts and stay within their size limits.
pub fn validate_against_catalog<'a>(
    cfg: &ContainerConfig,
    catalog: &'a Catalog,
    pinned: bool,
) -> Result<&'a GuestOs, ConfigError> {
    let os = if pinned {
        // A signed config names the exact GuestOS version it was signed for.
        let want = cfg
            .guestos_version
            .ok_or_else(|| invalid("guestos_version", "a signed config must pin guestos_version"))?;
        catalog.get(&cfg.guest_os, want).ok_or_else(|| {
            invalid(
                "guestos_version",
                format!(
                    "version {want} of GuestOS {} is not installed",
                    quoted(&cfg.guest_os)
                ),
            )
        })?
    } else {
        catalog.latest(&cfg.guest_os).ok_or_else(|| {
            invalid(
                "guest_os",
                format!("GuestOS {} is not installed", quoted(&cfg.guest_os)),
            )
        })?
    };
    if let Some(want) = cfg.guestos_version
        && os.config.version < want
    {
        return Err(invalid(
            "guestos_version",
            format!(
                "version {want} of {:?} is not installed (newest: {})",
                cfg.guest_os, os.config.version
            ),
        ));
    }
    for (i, s) in cfg.image_sizes.iter().enumerate() {
        let mount = os
            .config
            .mounts
            .iter()
            .find(|m| {
                m.image_file == s.image_name
                    && matches!(m.mount_type(), MountType::Empty | MountType::OverlayRw)
            })
            .ok_or_else(|| {
                invalid(
                    format!("image_sizes[{i}].image_name"),
                    format!(
                        "GuestOS {:?} has no EMPTY or OVERLAY_RW mount named {:?}",
                        os.config.name, s.image_name
                    ),
                )
            })?;
        let (min, max) = (u64::from(mount.min_size()), u64::from(mount.max_size()));
        if s.image_size < min || s.image_size > max {
            return Err(invalid(
                format!("image_sizes[{i}].image_size"),
                format!(
                    "{} MiB is outside {min}..={max} MiB allowed by the GuestOS",
                    s.image_size
                ),
            ));
        }
    }
    Ok(os)
}

/// A container config accepted for storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The parsed, validated config (with `type` and `token_type` filled in).
    pub config: ContainerConfig,
    /// The bytes to store: the exact signed bytes for a signed config (the signature covers them),
    /// else the config printed in classic text syntax.
    pub text: Vec<u8>,
    /// Signature and certificate chain (PEM) of a signed config.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
    /// What the client should be told although the config was accepted (a defaulted field).
    pub warnings: Vec<String>,
}

impl Accepted {
    /// Whether the config is signed (and so pins its GuestOS version and cannot be rewritten).
    pub fn signed(&self) -> bool {
        self.signature.is_some()
    }
}

/// Parses, validates and signature-checks a container config from a client or from disk.
///
/// A signature, when given, must verify over the exact bytes with a certificate chaining to one of
/// `anchors`; with `signed_configs: true` in device.conf a signature is required.
pub fn accept(
    device: &crate::protocol::pb::DeviceConfig,
    bytes: &[u8],
    signature: Option<(Vec<u8>, Vec<u8>)>,
    anchors: &[openssl::x509::X509],
) -> Result<Accepted, ConfigError> {
    let (config, warnings) = load_config_with_warnings(bytes)?;
    match &signature {
        Some((sig, cert)) => {
            crate::crypto::verify_signature(bytes, sig, cert, anchors)
                .map_err(|e| invalid("signature", format!("the config's signature is not valid: {e}")))?;
        }
        None if device.signed_configs() => {
            return Err(invalid(
                "signature",
                "device.conf has signed_configs: true, so container configs must be signed (CONFIG SIG CERT)",
            ));
        }
        None => {}
    }
    let text = if signature.is_some() {
        bytes.to_vec()
    } else {
        text::print(&config).into_bytes()
    };
    Ok(Accepted {
        config,
        text,
        signature,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<ContainerConfig, ConfigError> {
        load_config(format!("name: \"c1\"\nguest_os: \"busybox\"\ncolor: 0\n{extra}").as_bytes())
    }

    #[test]
    fn defaults_are_made_explicit() {
        let c = cfg("").unwrap();
        assert_eq!(c.r#type, Some(ContainerType::Container as i32));
        assert_eq!(c.token_type, Some(ContainerTokenType::Soft as i32));
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        for (extra, field) in [
            ("type: KVM", "type"),
            ("token_type: USB", "token_type"),
            ("usb_pin_entry: true", "usb_pin_entry"),
            ("assign_cpus: \"1-0\"", "assign_cpus"),
            ("dns_server: \"x\"", "dns_server"),
            ("init_env: \"NOEQUALS\"", "init_env[0]"),
            (
                "vnet_configs { if_name: \"a/b\" configure: true }",
                "vnet_configs[0].if_name",
            ),
            (
                "vnet_configs { if_name: \"e\" configure: true if_mac: \"zz\" }",
                "vnet_configs[0].if_mac",
            ),
            (
                "image_sizes { image_name: \"../x\" image_size: 10 }",
                "image_sizes[0].image_name",
            ),
        ] {
            match cfg(extra) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        assert!(load_config(b"name: \"a b\" guest_os: \"x\" color: 0").is_err());
        assert!(load_config(b"name: \"\" guest_os: \"x\" color: 0").is_err());
        assert!(load_config(b"name: \"a\" guest_os: \"../x\" color: 0").is_err());
    }

    #[test]
    fn a_missing_color_is_zero_with_a_warning() {
        let (c, w) = load_config_with_warnings(b"name: \"a\" guest_os: \"x\"").unwrap();
        assert_eq!(c.color, 0);
        assert_eq!(w, vec!["the config has no color; using 0".to_owned()]);
        let (_, w) = load_config_with_warnings(b"name: \"a\" guest_os: \"x\" color: 3").unwrap();
        assert!(w.is_empty());
        for (text, field) in [("guest_os: \"x\"", "name"), ("name: \"a\"", "guest_os")] {
            match load_config(text.as_bytes()) {
                Err(ConfigError::Text(e)) => assert_eq!(e.field.as_deref(), Some(field), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn cpu_lists() {
        assert!(check_cpu_list("0").is_ok());
        assert!(check_cpu_list("0-1,3").is_ok());
        assert!(check_cpu_list("").is_err());
        assert!(check_cpu_list("a").is_err());
    }
}
