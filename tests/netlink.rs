//! Kernel tests for `cml::sys::netlink`. They need root and a real kernel (veth, network namespaces).
//!
//! Tests run in parallel (with each other and with other test binaries), so every test names its
//! interfaces with its own prefix (`nlt` + pid + a two-digit counter) and works in network namespaces
//! of its own. A namespace is made by a short-lived thread that `unshare(CLONE_NEWNET)`s and opens
//! `/proc/thread-self/ns/net`: the open file alone keeps the namespace alive, and the kernel deletes
//! it, with every interface in it (and their veth peers elsewhere), when the file is closed. Host-side
//! veths are deleted by a Drop guard, also when a test fails.
#![allow(clippy::unwrap_used)]

#[path = "common/poll.rs"]
mod poll_util;
use poll_util::poll;

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use cml::sys::netlink::{Link, Netlink, NetlinkError, normalize_mac, random_mac};
use nix::{errno::Errno, sched::CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A prefix no other test (or test process) uses; all prefixes have the same length, so none is a
/// prefix of another. With a 7-digit pid plus a one-letter suffix a name is at most 13 bytes.
fn unique_prefix() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 100, "too many prefixes for the fixed-width counter");
    format!("nlt{}{n:02}", std::process::id())
}

/// A new, empty network namespace, held open by the returned file.
fn new_netns() -> File {
    thread::spawn(|| {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
        File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap()
}

/// The inode of the calling thread's network namespace.
fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// The host's (the test thread's) network namespace, opened.
fn host_netns() -> File {
    File::open("/proc/thread-self/ns/net").unwrap()
}

/// The host links whose names start with `prefix`.
fn host_links_with(prefix: &str) -> Vec<Link> {
    let nl = Netlink::open().unwrap();
    nl.links()
        .unwrap()
        .into_iter()
        .filter(|l| l.name.starts_with(prefix))
        .collect()
}

/// Waits until no host link starts with `prefix` (a namespace is torn down asynchronously after its
/// last reference is gone, and its veths with it).
fn assert_no_links_left(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = host_links_with(prefix);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "links left behind: {left:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// On drop: deletes every host interface whose name starts with the test's prefix (by index, after
/// matching the name, so an index reused by someone else is never touched).
struct VethGuard {
    prefix: String,
}

impl VethGuard {
    fn new() -> VethGuard {
        VethGuard {
            prefix: unique_prefix(),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

impl Drop for VethGuard {
    fn drop(&mut self) {
        let Ok(nl) = Netlink::open() else { return };
        let Ok(links) = nl.links() else { return };
        for link in links.iter().filter(|l| l.name.starts_with(&self.prefix)) {
            if let Err(e) = nl.del_link(link.index) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn by_name(nl: &Netlink, name: &str) -> Link {
    nl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no interface {name}"))
}

/// Waits for interface `name` to reach the operational state `want`.
fn wait_oper_state(nl: &Netlink, name: &str, want: &str) {
    let reached = poll(Duration::from_secs(5), || by_name(nl, name).oper_state == want);
    assert!(reached, "{name} is not {want}: {:?}", by_name(nl, name));
}

/// `ip` output in the namespace of an fd of this process (nsenter opens `/proc/<pid>/fd/<n>`).
fn ip_in(ns: &File, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        ))
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn veth_lifecycle_across_namespaces() {
    let guard = VethGuard::new();
    let (a, b, back) = (guard.name("a"), guard.name("b"), guard.name("c"));
    let host = Netlink::open().unwrap();

    // Create: both ends in the host, veth, down.
    host.add_veth(&a, &b).unwrap();
    let links = host.links().unwrap();
    for name in [&a, &b] {
        let link = links.iter().find(|l| &l.name == name).unwrap();
        assert_eq!(link.kind.as_deref(), Some("veth"), "{link:?}");
        assert!(!link.up, "{link:?}");
        assert_eq!(link.oper_state, "DOWN", "{link:?}");
        assert!(link.mac.as_deref().and_then(normalize_mac).is_some(), "{link:?}");
    }
    let link_a = by_name(&host, &a);
    let link_b = by_name(&host, &b);
    assert_eq!(host.link_by_name(&guard.name("z")).unwrap(), None);

    // Move `a` into a fresh namespace as eth0 (a name the test cannot own in the host).
    let ns = new_netns();
    host.move_to_netns(link_a.index, &ns, Some("eth0")).unwrap();
    assert_eq!(host.link_by_name(&a).unwrap(), None);

    let inner = Netlink::open_in(&ns).unwrap();
    assert_ne!(inner.netns(), host.netns());
    let eth0 = by_name(&inner, "eth0");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert!(!eth0.up);
    let names: Vec<String> = inner.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"lo".to_string()) && names.contains(&"eth0".to_string()),
        "{names:?}"
    );

    // Configure it there.
    let mac = random_mac();
    inner.set_mac(eth0.index, &mac.to_uppercase()).unwrap();
    let found = inner.link_by_mac(&mac.to_uppercase().replace(':', "-")).unwrap();
    assert_eq!(found.as_ref().map(|l| l.index), Some(eth0.index));
    assert_eq!(found.and_then(|l| l.mac), Some(mac.clone()));
    assert_eq!(host.link_by_mac(&mac).unwrap(), None);

    inner.set_up(eth0.index, true).unwrap();
    let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    inner.add_addr(eth0.index, v4, 24).unwrap();
    inner.add_addr(eth0.index, v6, 64).unwrap();
    inner.add_default_route(Ipv4Addr::new(198, 51, 100, 1)).unwrap();

    let eth0 = by_name(&inner, "eth0");
    assert!(eth0.up);
    // The peer in the host is down, so there is no carrier (the kernel's linkwatch updates the
    // operational state asynchronously, hence the polls).
    wait_oper_state(&inner, "eth0", "LOWERLAYERDOWN");
    let addrs = inner.addrs().unwrap();
    for (addr, prefix) in [(v4, 24), (v6, 64)] {
        assert!(
            addrs
                .iter()
                .any(|x| x.index == eth0.index && x.addr == addr && x.prefix == prefix),
            "{addr}/{prefix} missing from {addrs:?}"
        );
    }
    assert!(
        host.addrs().unwrap().iter().all(|x| x.addr != v4),
        "the address leaked into the host namespace"
    );
    let routes = ip_in(&ns, &["-4", "route", "show", "default"]);
    assert!(routes.contains("default via 198.51.100.1 dev eth0"), "{routes}");
    // A second default route is refused: the first one is really there.
    let e = inner
        .add_default_route(Ipv4Addr::new(198, 51, 100, 1))
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");

    // Carrier once the peer is up.
    host.set_up(link_b.index, true).unwrap();
    wait_oper_state(&inner, "eth0", "UP");

    // Back to the host under another name; the kernel takes it down on the way.
    inner
        .move_to_netns(eth0.index, &host_netns(), Some(&back))
        .unwrap();
    assert_eq!(inner.link_by_name("eth0").unwrap(), None);
    let returned = by_name(&host, &back);
    assert_eq!(returned.kind.as_deref(), Some("veth"));
    assert_eq!(returned.mac.as_deref(), Some(mac.as_str()));
    assert!(!returned.up);

    // Deleting one end deletes the pair; deleting again is fine.
    host.del_link(returned.index).unwrap();
    assert_eq!(host.link_by_name(&back).unwrap(), None);
    assert_eq!(host.link_by_name(&b).unwrap(), None);
    host.del_link(returned.index).unwrap();

    drop(inner);
    drop(ns);
    assert_no_links_left(&guard.prefix);
}

#[test]
fn open_in_restores_the_thread_namespace() {
    let guard = VethGuard::new();
    let before = thread_netns_inode();
    let ns = new_netns();
    let ns_inode = ns.metadata().unwrap().ino();
    assert_ne!(before, ns_inode);

    let inner = Netlink::open_in(&ns).unwrap();
    assert_eq!(thread_netns_inode(), before);
    assert_eq!(inner.netns(), format!("net:[{ns_inode}]"));

    // The socket stays in `ns`: a veth made through it is there, not in the host.
    inner.add_veth(&guard.name("a"), &guard.name("b")).unwrap();
    assert_eq!(thread_netns_inode(), before);
    let names: Vec<String> = inner.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(names.contains(&guard.name("a")), "{names:?}");
    assert!(host_links_with(&guard.prefix).is_empty());

    // A failed open_in (not a namespace file) leaves the thread where it was, and says what failed.
    let not_ns = File::open("/dev/null").unwrap();
    let e = Netlink::open_in(&not_ns).unwrap_err();
    assert!(matches!(e, NetlinkError::Netns { .. }), "{e:?}");
    assert!(e.to_string().contains("setns"), "{e}");
    assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");
    assert_eq!(thread_netns_inode(), before);

    // Also from another thread, and several connections at once.
    let other = ns.try_clone().unwrap();
    let from_thread = thread::spawn(move || {
        let before = thread_netns_inode();
        let nl = Netlink::open_in(&other).unwrap();
        assert_eq!(thread_netns_inode(), before);
        nl.links().unwrap().len()
    })
    .join()
    .unwrap();
    assert_eq!(from_thread, names.len());

    drop(inner);
    drop(ns);
    assert_no_links_left(&guard.prefix);
}

#[test]
fn a_veth_end_is_born_in_another_namespace_named_and_addressed() {
    let guard = VethGuard::new();
    let (a, b) = (guard.name("a"), guard.name("b"));
    let host = Netlink::open().unwrap();
    let ns = new_netns();
    let inner = Netlink::open_in(&ns).unwrap();

    host.add_veth_into(&a, "eth0", "02:00:00:aa:bb:cc", &ns).unwrap();
    // One end here, the other only there: named, with its address, never on the host.
    assert_eq!(by_name(&host, &a).kind.as_deref(), Some("veth"));
    let eth0 = by_name(&inner, "eth0");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(eth0.mac.as_deref(), Some("02:00:00:aa:bb:cc"));
    assert!(host.links().unwrap().iter().all(|l| !l.name.starts_with(&b)));
    // A taken name inside fails, clearly, and leaves nothing behind on the host.
    let e = host
        .add_veth_into(&b, "eth0", "02:00:00:aa:bb:cd", &ns)
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
    assert!(e.to_string().contains(&b), "{e}");
    assert_eq!(host.link_by_name(&b).unwrap(), None);
    // A bad MAC is refused before the kernel is asked.
    assert!(host.add_veth_into(&b, "eth1", "not-a-mac", &ns).is_err());
    // Deleting the host end takes the inner end with it.
    host.del_link(by_name(&host, &a).index).unwrap();
    assert!(poll(Duration::from_secs(2), || inner
        .link_by_name("eth0")
        .unwrap()
        .is_none()));

    drop(inner);
    drop(ns);
    assert_no_links_left(&guard.prefix);
}

#[test]
fn move_without_rename_collides_and_with_rename_does_not() {
    let guard = VethGuard::new();
    let (a, b, c, d) = (guard.name("a"), guard.name("b"), guard.name("c"), guard.name("d"));
    let host = Netlink::open().unwrap();
    let ns = new_netns();
    let inner = Netlink::open_in(&ns).unwrap();

    host.add_veth(&a, &b).unwrap();
    // An interface called `a` already waits in the namespace.
    inner.add_veth(&a, &c).unwrap();
    let link_a = by_name(&host, &a);

    let e = host.move_to_netns(link_a.index, &ns, None).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("interface {}", link_a.index)), "{text}");
    // The failed move left it in the host.
    assert_eq!(by_name(&host, &a).index, link_a.index);

    host.move_to_netns(link_a.index, &ns, Some(&d)).unwrap();
    assert_eq!(by_name(&inner, &d).kind.as_deref(), Some("veth"));
    assert_eq!(host.link_by_name(&a).unwrap(), None);

    drop(inner);
    drop(ns);
    assert_no_links_left(&guard.prefix);
}

#[test]
fn rename_and_set_down() {
    let guard = VethGuard::new();
    let (a, b, r) = (guard.name("a"), guard.name("b"), guard.name("r"));
    let ns = new_netns();
    let nl = Netlink::open_in(&ns).unwrap();
    nl.add_veth(&a, &b).unwrap();
    let link = by_name(&nl, &a);

    nl.rename(link.index, &r).unwrap();
    assert_eq!(nl.link_by_name(&a).unwrap(), None);
    assert_eq!(by_name(&nl, &r).index, link.index);

    nl.set_up(link.index, true).unwrap();
    assert!(by_name(&nl, &r).up);
    nl.set_up(link.index, false).unwrap();
    assert!(!by_name(&nl, &r).up);

    // Renaming onto a taken name.
    let e = nl.rename(link.index, &b).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
    assert!(e.to_string().contains(&b), "{e}");

    drop(nl);
    drop(ns);
    assert_no_links_left(&guard.prefix);
}

#[test]
fn errors_are_clear() {
    let guard = VethGuard::new();
    let (a, b, c) = (guard.name("a"), guard.name("b"), guard.name("c"));
    let host = Netlink::open().unwrap();

    // An index no interface has.
    let missing = 0x7fff_fff0;
    let e = host.rename(missing, &c).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENODEV), "{e}");
    let text = e.to_string();
    assert!(text.contains("rename"), "{text}");
    assert!(text.contains(&format!("interface {missing}")), "{text}");
    assert!(text.contains("ENODEV"), "{text}");
    assert!(text.contains(host.netns()), "{text}");

    let e = host.set_up(missing, true).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENODEV), "{e}");
    // Deleting what is not there is not an error.
    host.del_link(missing).unwrap();

    // A taken name.
    host.add_veth(&a, &b).unwrap();
    let e = host.add_veth(&a, &c).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
    let text = e.to_string();
    assert!(text.contains("add veth") && text.contains(&a), "{text}");
    assert!(text.contains("EEXIST"), "{text}");
    assert_eq!(host.link_by_name(&c).unwrap(), None);

    // Refused before anything is sent.
    let e = host.add_veth("this-name-is-too-long", &c).unwrap_err();
    assert!(matches!(e, NetlinkError::InvalidName { .. }), "{e:?}");
    assert!(e.to_string().contains("this-name-is-too-long"), "{e}");
    let link = by_name(&host, &a);
    let e = host.set_mac(link.index, "02:00:00:00:00").unwrap_err();
    assert!(matches!(e, NetlinkError::InvalidMac { .. }), "{e:?}");
    let e = host.link_by_mac("zz").unwrap_err();
    assert!(matches!(e, NetlinkError::InvalidMac { .. }), "{e:?}");
    let e = host
        .add_addr(link.index, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 33)
        .unwrap_err();
    assert!(matches!(e, NetlinkError::InvalidPrefix { .. }), "{e:?}");
    // The kernel refuses a multicast MAC.
    let e = host.set_mac(link.index, "01:00:5e:00:00:01").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EADDRNOTAVAIL), "{e}");

    host.del_link(link.index).unwrap();
    assert_no_links_left(&guard.prefix);
}
