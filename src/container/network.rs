//! Container networking, daemon side (SPEC §7): per-container subnet offsets, the start-time plan of
//! a container's veth pairs and physical interfaces, and the claims that keep one physical
//! interface in one container at a time. The monitor carries the plan out (`launcher::network`);
//! the network actor moves interfaces at run time.
//!
//! Addresses: the daemon's `--net-base` (a /8../24) is cut into /24 subnets numbered by an offset N.
//! Every veth pair of a container takes one offset, assigned when the container is created (or at
//! the first start that needs more) and kept in `containers/<uuid>.net` — so addresses do not
//! depend on start order, survive restarts, and are unique among the daemon's containers. The host
//! side is `<net>.N.1/24`, the container side `<net>.N.2/24`. Host-side names are
//! `<ifname-prefix>-<N>`, so daemons with different prefixes never collide.

use std::{
    collections::HashMap,
    fs,
    net::Ipv4Addr,
    sync::{Mutex, PoisonError},
};

use crate::{
    daemon::NetBase,
    launcher::plan::{NetPlan, PnetPlan, VnetAddr, VnetPlan},
    protocol::pb::ContainerConfig,
    store::DataDir,
    sys::netlink::{self, Netlink},
};

/// Network settings of the daemon (command line and device.conf).
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// Where container subnets come from.
    pub base: NetBase,
    /// Prefix of host-side interface names.
    pub ifname_prefix: String,
    /// device.conf `host_dns`: the DNS server for containers without `dns_server`.
    pub host_dns: Option<String>,
    /// device.conf `nat_uplink`.
    pub nat: bool,
}

/// Who holds a physical interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceClaim {
    /// The container's UUID.
    pub uuid: String,
    /// The container's name.
    pub container: String,
    /// The interface's name on the host.
    pub name: String,
}

/// Offsets and interface claims of one daemon.
#[derive(Debug)]
pub struct Network {
    /// Settings.
    pub settings: NetSettings,
    /// Serialises offset allocation.
    offsets_lock: Mutex<()>,
    /// Physical interfaces in containers, by MAC.
    claims: Mutex<HashMap<String, IfaceClaim>>,
}

/// The name of the file with a container's subnet offsets.
const OFFSETS_EXT: &str = "net";

impl Network {
    /// A network with no claims.
    pub fn new(settings: NetSettings) -> Network {
        Network {
            settings,
            offsets_lock: Mutex::new(()),
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// How many subnets the base holds.
    fn capacity(&self) -> u32 {
        1 << (24 - u32::from(self.settings.base.prefix))
    }

    /// The number of offsets a config needs: one per veth pair.
    pub fn needed(cfg: &ContainerConfig) -> usize {
        if cfg.netns() {
            cfg.vnet_configs.len().max(1)
        } else {
            0
        }
    }

    /// The container's offsets, at least `count` of them: read from `containers/<uuid>.net`, the
    /// missing ones allocated (the lowest offsets no other container of this data dir holds) and
    /// written back atomically.
    pub fn offsets(&self, data: &DataDir, uuid: &uuid::Uuid, count: usize) -> Result<Vec<u32>, String> {
        let _alloc = self.offsets_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let path = data.container_file(uuid, OFFSETS_EXT);
        let mut own = read_offsets(&path);
        if own.len() >= count {
            return Ok(own);
        }
        let mut used = std::collections::HashSet::new();
        if let Ok(entries) = fs::read_dir(data.containers_dir()) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!(".{OFFSETS_EXT}"))
                {
                    used.extend(read_offsets(&e.path()));
                }
            }
        }
        let mut free = (0..self.capacity()).filter(|n| !used.contains(n));
        while own.len() < count {
            let n = free.next().ok_or_else(|| {
                format!(
                    "all {} subnets of {}/{} are taken",
                    self.capacity(),
                    self.settings.base.addr,
                    self.settings.base.prefix
                )
            })?;
            own.push(n);
        }
        let text = own.iter().map(u32::to_string).collect::<Vec<_>>().join("\n") + "\n";
        crate::store::atomic_write(&path, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        Ok(own)
    }

    /// The network address of subnet `n`.
    pub fn subnet(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.settings.base.addr) + (n << 8))
    }

    /// The host-side name of the veth pair with offset `n`.
    pub fn host_ifname(&self, n: u32) -> String {
        format!("{}-{n}", self.settings.ifname_prefix)
    }

    /// Whether `name` looks like the host side of one of this daemon's veth pairs.
    pub fn is_own_veth(&self, name: &str) -> bool {
        name.strip_prefix(&self.settings.ifname_prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|r| !r.is_empty() && r.trim_end_matches('c').chars().all(|c| c.is_ascii_digit()))
    }

    /// Who holds the interface with this MAC or host name, if anyone.
    pub fn holder(&self, name_or_mac: &str) -> Option<IfaceClaim> {
        let mac = netlink::normalize_mac(name_or_mac);
        let claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims
            .iter()
            .find(|(m, c)| Some(m.as_str()) == mac.as_deref() || c.name == name_or_mac)
            .map(|(_, c)| c.clone())
    }

    /// Claims a physical interface for a container; refused, naming the holder, if another
    /// container holds it.
    pub fn claim(&self, mac: &str, claim: IfaceClaim) -> Result<(), String> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = claims.get(mac).filter(|c| c.uuid != claim.uuid) {
            return Err(format!(
                "interface {} ({mac}) is assigned to container {} ({})",
                c.name, c.container, c.uuid
            ));
        }
        claims.insert(mac.to_owned(), claim);
        Ok(())
    }

    /// Releases one interface.
    pub fn release(&self, mac: &str) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(mac);
    }

    /// Releases every interface a container holds.
    pub fn release_all(&self, uuid: &str) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, c| c.uuid != uuid);
    }

    /// Plans a start's network: veth pairs from `vnet_configs` (or one configured `eth0`), physical
    /// interfaces from `net_ifaces` (found on the host by name or MAC, and claimed). On error
    /// nothing stays claimed.
    pub fn plan(&self, data: &DataDir, uuid: &uuid::Uuid, cfg: &ContainerConfig) -> Result<NetPlan, String> {
        let offsets = self.offsets(data, uuid, Self::needed(cfg))?;
        let default_vnet = crate::protocol::pb::ContainerVnetConfig {
            if_name: "eth0".into(),
            configure: true,
            if_rootns_name: None,
            if_mac: None,
        };
        let vnets_cfg: Vec<_> = if cfg.vnet_configs.is_empty() {
            vec![default_vnet]
        } else {
            cfg.vnet_configs.clone()
        };
        let mut vnets = Vec::new();
        let mut routed = false;
        for (i, (v, n)) in vnets_cfg.iter().zip(offsets).enumerate() {
            let net = u32::from(self.subnet(n));
            let addr = v.configure.then(|| {
                let default_route = !routed;
                routed = true;
                VnetAddr {
                    host: Ipv4Addr::from(net + 1),
                    container: Ipv4Addr::from(net + 2),
                    prefix: 24,
                    default_route,
                }
            });
            let host = v.if_rootns_name.clone().unwrap_or_else(|| self.host_ifname(n));
            vnets.push(VnetPlan {
                peer: format!("{}-{n}c", self.settings.ifname_prefix),
                host,
                name: v.if_name.clone(),
                mac: v
                    .if_mac
                    .as_deref()
                    .and_then(netlink::normalize_mac)
                    .unwrap_or_else(|| derived_mac(uuid, i)),
                addr,
            });
        }
        let mut pnets = Vec::new();
        if !cfg.net_ifaces.is_empty() {
            let host = Netlink::open().map_err(|e| e.to_string())?;
            let uuid_s = uuid.to_string();
            for (i, p) in cfg.net_ifaces.iter().enumerate() {
                let found = match netlink::normalize_mac(&p.netif) {
                    Some(mac) => host.link_by_mac(&mac),
                    None => host.link_by_name(&p.netif),
                }
                .map_err(|e| e.to_string());
                let link = match found {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        self.release_all(&uuid_s);
                        return Err(match self.holder(&p.netif) {
                            Some(c) => format!(
                                "net_ifaces[{i}]: {} is assigned to container {} ({})",
                                p.netif, c.container, c.uuid
                            ),
                            None => format!("net_ifaces[{i}]: the host has no interface {}", p.netif),
                        });
                    }
                    Err(e) => {
                        self.release_all(&uuid_s);
                        return Err(e);
                    }
                };
                let mac = link.mac.clone().unwrap_or_default();
                let claim = IfaceClaim {
                    uuid: uuid_s.clone(),
                    container: cfg.name.clone(),
                    name: link.name.clone(),
                };
                if let Err(e) = self.claim(&mac, claim) {
                    self.release_all(&uuid_s);
                    return Err(format!("net_ifaces[{i}]: {e}"));
                }
                pnets.push(PnetPlan { name: link.name, mac });
            }
        }
        let nat_table = (self.settings.nat && vnets.iter().any(|v| v.addr.is_some())).then(|| {
            format!(
                "cml_{}_{}",
                self.settings.ifname_prefix.replace('-', "_"),
                uuid.simple()
            )
        });
        Ok(NetPlan {
            vnets,
            pnets,
            nat_table,
        })
    }

    /// The DNS server a container gets: its `dns_server`, else device.conf `host_dns`.
    pub fn dns_server(&self, cfg: &ContainerConfig) -> Option<String> {
        cfg.dns_server
            .clone()
            .or_else(|| self.settings.host_dns.clone())
            .filter(|s| !s.is_empty())
    }
}

fn read_offsets(path: &std::path::Path) -> Vec<u32> {
    fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// A stable locally administered MAC for veth `index` of a container (used when the config names
/// none and cannot be rewritten, e.g. a signed config or the default `eth0`).
pub fn derived_mac(uuid: &uuid::Uuid, index: usize) -> String {
    let mut input = uuid.as_bytes().to_vec();
    input.extend_from_slice(&(index as u64).to_le_bytes());
    let digest = openssl::sha::sha256(&input);
    let mut b = [0u8; 6];
    b.copy_from_slice(&digest[..6]);
    b[0] = (b[0] & 0xfe) | 0x02;
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Fills in a generated MAC for every `vnet_configs` entry without `if_mac` in an unsigned config
/// (at create and update, so the MAC is stored once and stays). A signed config is left as it is:
/// its veths get [`derived_mac`]s.
pub fn with_macs(mut a: crate::container::Accepted) -> crate::container::Accepted {
    if a.signed() {
        return a;
    }
    let mut changed = false;
    for v in &mut a.config.vnet_configs {
        if v.if_mac.is_none() {
            v.if_mac = Some(netlink::random_mac());
            changed = true;
        }
    }
    if changed {
        a.text = crate::protocol::text::print(&a.config).into_bytes();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(base: &str) -> Network {
        Network::new(NetSettings {
            base: base.parse().unwrap(),
            ifname_prefix: "t7".into(),
            host_dns: None,
            nat: false,
        })
    }

    #[test]
    fn offsets_are_stable_unique_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().to_path_buf());
        std::fs::create_dir_all(data.containers_dir()).unwrap();
        let net = network("10.9.0.0/23");
        let (a, b, c) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(net.offsets(&data, &a, 1).unwrap(), vec![0]);
        assert_eq!(net.offsets(&data, &b, 1).unwrap(), vec![1]);
        assert_eq!(net.offsets(&data, &a, 1).unwrap(), vec![0], "stable");
        let e = net.offsets(&data, &c, 1).unwrap_err();
        assert!(e.contains("all 2 subnets of 10.9.0.0/23 are taken"), "{e}");
        std::fs::remove_file(data.container_file(&a, "net")).unwrap();
        assert_eq!(net.offsets(&data, &c, 1).unwrap(), vec![0], "freed by removal");
        assert_eq!(net.subnet(1), Ipv4Addr::new(10, 9, 1, 0));
        assert_eq!(net.host_ifname(12), "t7-12");
        assert!(net.is_own_veth("t7-12") && net.is_own_veth("t7-3c"));
        assert!(!net.is_own_veth("t71-2") && !net.is_own_veth("t7-") && !net.is_own_veth("eth0"));
    }

    #[test]
    fn claims_name_the_holder() {
        let net = network("10.9.0.0/16");
        let claim = |u: &str| IfaceClaim {
            uuid: u.into(),
            container: format!("c-{u}"),
            name: "veth9".into(),
        };
        net.claim("02:00:00:00:00:01", claim("a")).unwrap();
        net.claim("02:00:00:00:00:01", claim("a")).unwrap();
        let e = net.claim("02:00:00:00:00:01", claim("b")).unwrap_err();
        assert!(e.contains("assigned to container c-a (a)"), "{e}");
        assert_eq!(net.holder("veth9").unwrap().uuid, "a");
        assert_eq!(net.holder("02:00:00:00:00:01").unwrap().uuid, "a");
        net.release_all("a");
        assert!(net.holder("veth9").is_none());
    }

    #[test]
    fn derived_macs_are_stable_local_unicast() {
        let u = uuid::Uuid::new_v4();
        let m = derived_mac(&u, 0);
        assert_eq!(m, derived_mac(&u, 0));
        assert_ne!(m, derived_mac(&u, 1));
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
    }
}
