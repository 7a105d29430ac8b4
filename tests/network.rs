//! Container networking end to end (SPEC §7): real cmld, real `control`, the busybox GuestOS, veth
//! pairs made by cmld, and veth pairs made by the tests standing in for physical interfaces. Every
//! test daemon has its own interface-name prefix and subnet range (see `common::Daemon`); each test
//! checks that nothing of its daemon's is left on the host.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use cml::sys::netlink::Netlink;
use common::Daemon;

/// The interfaces of `c` from `control --json ifaces`: name → (mac, state, addresses).
fn ifaces(d: &Daemon, c: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "ifaces", c])).unwrap();
    v["ifaces"].as_array().unwrap().clone()
}

fn iface<'a>(list: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|i| i["name"] == name)
}

/// The IPv4 address (without prefix) of `eth0` inside `c`.
fn eth0_addr(d: &Daemon, c: &str) -> String {
    let list = ifaces(d, c);
    let eth0 = iface(&list, "eth0").unwrap_or_else(|| panic!("no eth0 in {list:?}"));
    eth0["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| !a.contains(':'))
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// The host interfaces whose name starts with the daemon's prefix.
fn own_host_links(d: &Daemon) -> Vec<String> {
    let prefix = format!("{}-", d.ifname_prefix());
    Netlink::open()
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn host_ping(addr: &str) -> bool {
    Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", addr])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn containers_get_stable_distinct_addresses_and_reach_their_host_side() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("a", "");
    d.create_container("b", "dns_server: \"198.51.100.53\"\n");
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    let (a, b) = (eth0_addr(&d, "a"), eth0_addr(&d, "b"));
    assert_ne!(a, b);
    let net16 = d
        .net_base()
        .rsplit_once('.')
        .unwrap()
        .0
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    assert!(a.starts_with(&format!("{net16}.")) && a.ends_with(".2"), "{a}");
    let list = ifaces(&d, "a");
    assert_eq!(iface(&list, "eth0").unwrap()["state"], "UP");
    assert!(iface(&list, "lo").is_some());
    // The host reaches each container; each container reaches its host side.
    assert!(host_ping(&a) && host_ping(&b));
    let gw = |x: &str| format!("{}.1", x.rsplit_once('.').unwrap().0);
    assert_eq!(d.sh("a", &format!("ping -c 1 -W 2 {}", gw(&a))).0, 0);
    assert_eq!(
        d.sh("a", "ip route | grep default").1.split_whitespace().nth(2),
        Some(gw(&a).as_str())
    );
    // DNS: the container's dns_server, bound over /etc/resolv.conf.
    assert_eq!(d.sh("b", "cat /etc/resolv.conf").1, "nameserver 198.51.100.53\n");
    assert_eq!(own_host_links(&d).len(), 2, "one host side per container");

    // Stable over stop/start (in the other order) and over a daemon restart.
    d.ok(&["stop", "a"]);
    d.ok(&["stop", "b"]);
    assert!(own_host_links(&d).is_empty(), "{:?}", own_host_links(&d));
    assert!(!host_ping(&a));
    d.ok(&["start", "b"]);
    d.ok(&["start", "a"]);
    assert_eq!((eth0_addr(&d, "a"), eth0_addr(&d, "b")), (a.clone(), b.clone()));
    d.ok(&["stop", "a"]);
    d.ok(&["stop", "b"]);
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    let d = d.restart();
    d.ok(&["start", "b"]);
    d.ok(&["start", "a"]);
    assert_eq!((eth0_addr(&d, "a"), eth0_addr(&d, "b")), (a, b));
    d.ok(&["stop", "a"]);
    d.ok(&["stop", "b"]);
    assert!(own_host_links(&d).is_empty());
}

static PAIRS: AtomicU32 = AtomicU32::new(0);

/// A veth pair made by the test, one end standing in for a physical interface; deleted on drop
/// (wherever its ends are: deleting the host end deletes both).
struct TestPair {
    name: String,
    peer: String,
}

impl TestPair {
    fn new() -> TestPair {
        let k = PAIRS.fetch_add(1, Ordering::Relaxed);
        let base = format!("p{}x{k}", std::process::id() % 100_000);
        let pair = TestPair {
            name: format!("{base}a"),
            peer: format!("{base}b"),
        };
        Netlink::open().unwrap().add_veth(&pair.name, &pair.peer).unwrap();
        pair
    }

    fn on_host(&self) -> bool {
        Netlink::open()
            .unwrap()
            .link_by_name(&self.name)
            .unwrap()
            .is_some()
    }
}

impl Drop for TestPair {
    fn drop(&mut self) {
        let nl = Netlink::open().unwrap();
        for n in [&self.name, &self.peer] {
            if let Ok(Some(l)) = nl.link_by_name(n) {
                let _ = nl.del_link(l.index);
            }
        }
    }
}

#[test]
fn physical_interfaces_move_in_and_back_out() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let phys = TestPair::new();
    d.create_container("c", "");
    d.create_container("other", "");
    // Only a running container takes interfaces.
    let out = d.control(&["assign_iface", "--iface", &phys.name, "c"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    d.ok(&["start", "c"]);
    d.ok(&["start", "other"]);

    // Run time: in, listed, out again (both argument orders).
    d.ok(&["assign_iface", "--iface", &phys.name, "c"]);
    assert!(!phys.on_host(), "moved out of the host");
    assert!(iface(&ifaces(&d, "c"), &phys.name).is_some());
    let out = d.control(&["assign_iface", "other", &format!("--iface={}", phys.name)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("assigned to container c"), "{err}");
    d.ok(&["unassign_iface", "c", &format!("--iface={}", phys.name)]);
    assert!(phys.on_host());
    assert!(iface(&ifaces(&d, "c"), &phys.name).is_none());

    // Errors: no such interface; not assigned; a container's own veth.
    let out = d.control(&["assign_iface", "--iface", "nosuchif0", "c"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the host has no interface nosuchif0"));
    let out = d.control(&["unassign_iface", "--iface", "eth0", "c"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a physical interface"));
    let host_side = format!("{}-0", d.ifname_prefix());
    let out = d.control(&["assign_iface", "--iface", &host_side, "other"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("virtual interface"));

    // A run-time assignment goes back to the host at stop (not destroyed with the namespace).
    d.ok(&["assign_iface", "--iface", &phys.name, "c"]);
    d.ok(&["stop", "c"]);
    assert!(phys.on_host(), "returned at stop");

    // --persistent: stored in the config, so the next start takes it in, and the stop gives it back.
    d.ok(&["start", "c"]);
    d.ok(&["assign_iface", "--iface", &phys.name, "c", "--persistent"]);
    assert!(
        d.ok(&["config", "c"])
            .contains(&format!("netif: \"{}\"", phys.name))
    );
    d.ok(&["stop", "c"]);
    assert!(phys.on_host());
    d.ok(&["start", "c"]);
    assert!(!phys.on_host());
    assert!(iface(&ifaces(&d, "c"), &phys.name).is_some());
    // Held by c: a start of another container that wants it is refused, naming c.
    d.ok(&["unassign_iface", "--iface", &phys.name, "c", "--persistent"]);
    assert!(!d.ok(&["config", "c"]).contains("netif"));
    assert!(phys.on_host());
    d.ok(&["stop", "c"]);
    d.ok(&["stop", "other"]);
    assert!(phys.on_host());
    assert!(own_host_links(&d).is_empty());
}

#[test]
fn persistent_assignment_is_refused_for_signed_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let f = common::fixture::busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = common::dev_daemon(&f.store_url());
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    d.ok(&["ca_register", &s(&f.root_ca)]);
    d.ok(&["push_guestos_config", &s(&f.conf), &s(&f.sig), &s(&f.cert)]);
    let conf = d.file(
        "signed.conf",
        "name: \"signed\"\nguest_os: \"busybox\"\nguestos_version: 1\ncolor: 1\ntoken_type: NONE\nuserns: false\n",
    );
    let sig = f.sign_file(std::path::Path::new(&conf));
    d.ok(&["create", &conf, &s(&sig), &s(&f.cert)]);
    d.ok(&["start", "signed"]);
    let phys = TestPair::new();
    let out = d.control(&["assign_iface", "--iface", &phys.name, "signed", "--persistent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signed config"));
    assert!(phys.on_host(), "nothing moved");
    // Without --persistent it works.
    d.ok(&["assign_iface", "--iface", &phys.name, "signed"]);
    assert!(!phys.on_host());
    d.ok(&["stop", "signed"]);
    assert!(phys.on_host());
}

#[test]
fn nat_uplink_adds_and_removes_a_masquerade_table() {
    if Command::new("nft").arg("--version").output().is_err() {
        panic!("nft is missing: install nftables (scripts/setup.sh)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.kill9();
    let conf_path = d.data.join("device.conf");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    conf.push_str("nat_uplink: true\n");
    std::fs::write(&conf_path, conf).unwrap();
    let d = d.restart();
    let uuid = d.create_container("natted", "");
    d.ok(&["start", "natted"]);
    let table = format!("cml_{}_{}", d.ifname_prefix(), uuid.replace('-', ""));
    let list = Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    let subnet = format!("{}.0/24", eth0_addr(&d, "natted").rsplit_once('.').unwrap().0);
    assert!(text.contains("masquerade") && text.contains(&subnet), "{text}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    d.ok(&["stop", "natted"]);
    let gone = Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the table is removed at stop");
    assert!(own_host_links(&d).is_empty());
}

#[test]
fn after_a_daemon_crash_assigned_interfaces_stay_claimed_and_return_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    let phys = TestPair::new();
    d.create_container("c", "");
    d.create_container("other", "");
    d.ok(&["start", "c"]);
    d.ok(&["assign_iface", "--iface", &phys.name, "c"]);
    d.kill9();
    let d = d.restart();
    assert_eq!(d.ok(&["state", "c"]), "RUNNING\n");
    d.ok(&["start", "other"]);
    let out = d.control(&["assign_iface", "--iface", &phys.name, "other"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("assigned to container c"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["stop", "c"]);
    assert!(
        phys.on_host(),
        "the monitor returns it although cmld was restarted"
    );
    d.ok(&["stop", "other"]);
    assert!(own_host_links(&d).is_empty());
}

#[test]
fn vnet_macs_are_generated_once_and_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container(
        "m",
        "vnet_configs {\n  if_name: \"net0\"\n  configure: true\n}\nvnet_configs {\n  if_name: \"net1\"\n  configure: false\n}\n",
    );
    let conf = d.ok(&["config", "m"]);
    let macs: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("if_mac: "))
        .map(|m| m.trim_matches('"'))
        .collect();
    assert_eq!(macs.len(), 2, "{conf}");
    d.ok(&["start", "m"]);
    let list = ifaces(&d, "m");
    let net0 = iface(&list, "net0").unwrap();
    assert_eq!(net0["mac"], macs[0]);
    assert_eq!(iface(&list, "net1").unwrap()["mac"], macs[1]);
    // Only the configured one has an IPv4 address and the default route.
    let v4 = |i: &serde_json::Value| {
        i["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| !a.as_str().unwrap().contains(':'))
            .count()
    };
    assert_eq!(v4(net0), 1);
    assert_eq!(v4(iface(&list, "net1").unwrap()), 0);
    assert!(d.sh("m", "ip route").1.contains("default via"));
    d.ok(&["stop", "m"]);
    assert_eq!(d.ok(&["config", "m"]), conf, "the MACs stay");
    assert!(own_host_links(&d).is_empty());
}
