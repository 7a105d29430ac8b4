//! The monitor's part of container networking: it sets the container's interfaces up while the
//! init waits (after the cgroups, before the root is built) and takes them down after the init has
//! ended — physical interfaces back to the host **before** the network namespace dies (a veth end
//! in a dying namespace dies with it), veth pairs deleted, the masquerade table removed.
//!
//! The monitor keeps the namespace alive past the init with an open `/proc/<init>/ns/net` and a
//! netlink socket inside it. Which physical interfaces are inside is kept in `<run>/pnet.json`:
//! written here at start, updated by cmld's network actor for `assign_iface`/`unassign_iface`.

use std::{fs::File, path::Path, process::Command};

use super::plan::{NetPlan, PnetPlan};
use crate::sys::netlink::Netlink;

/// The file (in the container's run directory) listing the physical interfaces inside.
pub const PNET_FILE: &str = "pnet.json";

/// Reads the physical interfaces listed in a run directory.
pub fn read_pnets(run_dir: &Path) -> Vec<PnetPlan> {
    std::fs::read(run_dir.join(PNET_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the list of physical interfaces inside, atomically.
pub fn write_pnets(run_dir: &Path, pnets: &[PnetPlan]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(pnets).map_err(std::io::Error::other)?;
    crate::store::atomic_write(&run_dir.join(PNET_FILE), &bytes, 0o600).map_err(std::io::Error::other)
}

/// A container's network while it lives.
/// Dropping it takes the network down (see [`Attached::teardown`]).
pub struct Attached {
    plan: NetPlan,
    /// How many of the plan's veth pairs this run created (only those are deleted).
    created: std::cell::Cell<usize>,
    run_dir: std::path::PathBuf,
    /// The container's network namespace (kept open so it outlives the init).
    ns: File,
    /// The host's network namespace.
    hostns: File,
    host: Netlink,
    inner: Netlink,
}

/// Sets up `plan` for the init `pid`. On error what was done is undone, and the error says which
/// step failed.
pub fn setup(plan: &NetPlan, pid: i32, run_dir: &Path) -> Result<Attached, String> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("open the container's network namespace: {e}"))?;
    let hostns =
        File::open("/proc/self/ns/net").map_err(|e| format!("open the host's network namespace: {e}"))?;
    let host = Netlink::open().map_err(|e| e.to_string())?;
    let inner = Netlink::open_in(&ns).map_err(|e| e.to_string())?;
    let attached = Attached {
        plan: plan.clone(),
        created: std::cell::Cell::new(0),
        run_dir: run_dir.to_path_buf(),
        ns,
        hostns,
        host,
        inner,
    };
    // On error, dropping `attached` undoes what was done.
    attached.bring_up(run_dir)?;
    Ok(attached)
}

impl Attached {
    fn bring_up(&self, run_dir: &Path) -> Result<(), String> {
        let err = |what: &str, e: crate::sys::netlink::NetlinkError| format!("{what}: {e}");
        for (i, v) in self.plan.vnets.iter().enumerate() {
            // A veth leftover of a crashed run would block the names (anything else with the name
            // is not ours: the creation below then fails and says so).
            for name in [&v.host, &v.peer] {
                if let Ok(Some(old)) = self.host.link_by_name(name)
                    && old.kind.as_deref() == Some("veth")
                {
                    let _ = self.host.del_link(old.index);
                }
            }
            // The container's end is born in its namespace, named and addressed (no move).
            self.host
                .add_veth_into(&v.host, &v.name, &v.mac, &self.ns)
                .map_err(|e| err(&format!("create veth pair {} / {}", v.host, v.name), e))?;
            self.created.set(i + 1);
            let hostside = self
                .host
                .link_by_name(&v.host)
                .map_err(|e| err("find the veth host side", e))?
                .ok_or_else(|| format!("veth {} vanished", v.host))?;
            let inside = self
                .inner
                .link_by_name(&v.name)
                .map_err(|e| err("find the container side", e))?
                .ok_or_else(|| format!("{} did not arrive in the container", v.name))?;
            if let Some(a) = v.addr {
                self.host
                    .add_addr(hostside.index, a.host.into(), a.prefix)
                    .map_err(|e| err(&format!("address {} on {}", a.host, v.host), e))?;
                self.inner
                    .add_addr(inside.index, a.container.into(), a.prefix)
                    .map_err(|e| err(&format!("address {} on {}", a.container, v.name), e))?;
            }
            self.host
                .set_up(hostside.index, true)
                .map_err(|e| err(&format!("bring {} up", v.host), e))?;
            self.inner
                .set_up(inside.index, true)
                .map_err(|e| err(&format!("bring {} up", v.name), e))?;
            if let Some(a) = v.addr.filter(|a| a.default_route) {
                self.inner
                    .add_default_route(a.host)
                    .map_err(|e| err(&format!("default route via {}", a.host), e))?;
            }
        }
        for p in &self.plan.pnets {
            let link = self
                .host
                .link_by_mac(&p.mac)
                .map_err(|e| err("find the interface", e))?
                .ok_or_else(|| format!("interface {} ({}) is gone from the host", p.name, p.mac))?;
            self.host
                .move_to_netns(link.index, &self.ns, None)
                .map_err(|e| err(&format!("move {} into the container", p.name), e))?;
        }
        write_pnets(run_dir, &self.plan.pnets).map_err(|e| format!("record the physical interfaces: {e}"))?;
        if let Some(table) = &self.plan.nat_table {
            nat_up(table, &self.plan)?;
        }
        Ok(())
    }

    /// Physical interfaces back to the host under their host names (or their current name if that
    /// is taken meanwhile), veth pairs deleted, the masquerade table removed. Best effort: every
    /// step is tried.
    fn teardown(&self) {
        let mut pnets = read_pnets(&self.run_dir);
        for p in &self.plan.pnets {
            if !pnets.iter().any(|q| q.mac == p.mac) {
                pnets.push(p.clone());
            }
        }
        for p in &pnets {
            if let Ok(Some(link)) = self.inner.link_by_mac(&p.mac) {
                let _ = self.inner.set_up(link.index, false);
                if self
                    .inner
                    .move_to_netns(link.index, &self.hostns, Some(&p.name))
                    .is_err()
                {
                    let _ = self.inner.move_to_netns(link.index, &self.hostns, None);
                }
            }
        }
        for v in &self.plan.vnets[..self.created.get()] {
            for name in [&v.host, &v.peer] {
                if let Ok(Some(link)) = self.host.link_by_name(name)
                    && link.kind.as_deref() == Some("veth")
                {
                    let _ = self.host.del_link(link.index);
                }
            }
        }
        if let Some(table) = &self.plan.nat_table {
            nat_down(table);
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (device.conf nat_uplink needs nftables: apt-get install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Masquerades the configured subnets of the plan to anywhere else, in a table of its own, and
/// turns on IPv4 forwarding.
fn nat_up(table: &str, plan: &NetPlan) -> Result<(), String> {
    let mut rules = String::new();
    for v in &plan.vnets {
        if let Some(a) = v.addr {
            let net = u32::from(a.host) & (u32::MAX << (32 - u32::from(a.prefix)));
            let net = format!("{}/{}", std::net::Ipv4Addr::from(net), a.prefix);
            rules.push_str(&format!("    ip saddr {net} ip daddr != {net} masquerade\n"));
        }
    }
    // `table …; delete table …` first: replaces a leftover of a crashed run, in one transaction.
    let script = format!(
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
    );
    nft(&script).map_err(|e| format!("set up masquerading: {e}"))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enable IPv4 forwarding: {e}"))
}

fn nat_down(table: &str) {
    let _ = nft(&format!("table ip {table}\ndelete table ip {table}\n"));
}
