//! Interfaces, addresses and routes through rtnetlink (`NETLINK_ROUTE`), with a small synchronous API.
//!
//! The kernel interface (rtnetlink(7)): a `NETLINK_ROUTE` socket carries request messages
//! (`RTM_NEWLINK`, `RTM_SETLINK`, `RTM_DELLINK`, `RTM_GETLINK`, `RTM_NEWADDR`, `RTM_GETADDR`,
//! `RTM_NEWROUTE`), each answered by the kernel with an ACK or an `NLMSG_ERROR` carrying a negative
//! errno; `GET` requests with `NLM_F_DUMP` are answered by a stream of messages closed by `NLMSG_DONE`.
//! The `rtnetlink` crate builds and parses these messages; this module turns its async API into plain
//! blocking calls and its errors into ones that name the operation, the interface and the errno.
//!
//! Network namespaces: a netlink socket belongs to the network namespace its creator was in when it
//! called `socket(2)`, and keeps talking to that namespace for its whole life, whatever namespace the
//! thread is in later. [`Netlink::open_in`] uses this: it `setns(2)`es the calling thread into the
//! target namespace, opens the socket, and `setns(2)`es back (network namespaces can be entered by a
//! thread of a multi-threaded process, unlike mount namespaces). Interfaces move between namespaces
//! with `RTM_SETLINK` carrying `IFLA_NET_NS_FD` ([`Netlink::move_to_netns`]); the kernel renames the
//! interface on arrival if the same request carries `IFLA_IFNAME`, so a move never collides with an
//! interface of the same name in the target.
//!
//! Runtime: each [`Netlink`] owns a tokio current-thread runtime on which its rtnetlink connection task
//! is spawned; every method `block_on`s its request, which also drives the connection task. So a
//! [`Netlink`] must never be used from inside another tokio runtime (`block_on` would panic there):
//! it is meant for the single-threaded monitor process and for dedicated std threads of the daemon
//! (STYLE item 9).
//!
//! Errors: [`NetlinkError`] messages name the operation, the interface and the namespace (as
//! `net:[inode]`, the form `/proc/<pid>/ns/net` links show) and end with the errno. The errno is a
//! leaf fact, not a cause with its own chain, so it is part of the message rather than a `source`:
//! a log line that prints only the top error (`error = %e`) still carries it.

use std::{
    fmt,
    fs::File,
    io::{self, Read},
    net::{IpAddr, Ipv4Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};
use nix::{errno::Errno, sched::CloneFlags};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::runtime::Runtime;

/// The calling thread's network namespace, as procfs shows it.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// `IFNAMSIZ`: interface names are at most 15 bytes plus the terminating NUL.
const IFNAMSIZ: usize = 16;

/// One interface as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    /// The interface index (`ifi_index`), unique within its network namespace.
    pub index: u32,
    /// The interface name (`IFLA_IFNAME`).
    pub name: String,
    /// The hardware address (`IFLA_ADDRESS`) in lowercase `aa:bb:cc:dd:ee:ff` form, if the link has a
    /// 6-byte (Ethernet-like) one; `lo` reports `00:00:00:00:00:00`.
    pub mac: Option<String>,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub up: bool,
    /// The RFC 2863 operational state (`IFLA_OPERSTATE`): "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN",
    /// "NOTPRESENT", "TESTING", "DORMANT", or the number of a state this crate does not know.
    pub oper_state: String,
    /// The link kind (`IFLA_INFO_KIND`), e.g. "veth"; None for links without one (`lo`, physical NICs).
    pub kind: Option<String>,
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Addr {
    /// The index of the interface the address is on.
    pub index: u32,
    /// The address (`IFA_LOCAL` for IPv4, `IFA_ADDRESS` for IPv6).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// A netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The tokio runtime that drives the connection could not be built.
    #[error("build the tokio runtime for an rtnetlink connection: {errno}")]
    Runtime {
        /// The errno.
        errno: Errno,
    },
    /// The rtnetlink socket could not be opened.
    #[error("open an rtnetlink socket in {netns}: {errno}")]
    Socket {
        /// The namespace the socket was to be opened in.
        netns: String,
        /// The errno.
        errno: Errno,
    },
    /// [`Netlink::open_in`] could not save the thread's namespace, or could not enter the target.
    #[error("{step}: {errno}")]
    Netns {
        /// What was being done, with the namespaces involved.
        step: String,
        /// The errno.
        errno: Errno,
    },
    /// [`Netlink::open_in`] opened its socket (or failed to) but could not `setns` the thread back: the
    /// calling thread is left in the target namespace. Callers should treat this as fatal for the
    /// thread (or process).
    #[error(
        "restore the thread's network namespace {saved} after opening an rtnetlink socket in {netns}: \
         {errno}; the thread is left in {netns}"
    )]
    RestoreNetns {
        /// The namespace the thread was in before.
        saved: String,
        /// The namespace the thread is left in.
        netns: String,
        /// The errno.
        errno: Errno,
    },
    /// An interface name the kernel would refuse (checked before anything is sent).
    #[error("{op}: invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The operation.
        op: &'static str,
        /// The name as given.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A MAC address that does not parse (checked before anything is sent).
    #[error("{op}: invalid MAC address {mac:?} (want six hex bytes like aa:bb:cc:dd:ee:ff)")]
    InvalidMac {
        /// The operation.
        op: &'static str,
        /// The address as given.
        mac: String,
    },
    /// A prefix length longer than the address (checked before anything is sent).
    #[error("{op}: prefix length /{prefix} is too long for {addr}")]
    InvalidPrefix {
        /// The operation.
        op: &'static str,
        /// The address.
        addr: IpAddr,
        /// The prefix length as given.
        prefix: u8,
    },
    /// The kernel refused a request.
    #[error("{op} {target} in {netns}: {errno}")]
    Kernel {
        /// The operation, e.g. "rename".
        op: &'static str,
        /// What it was applied to, e.g. "interface 7 to eth0".
        target: String,
        /// The network namespace of the connection (`net:[inode]`).
        netns: String,
        /// The errno the kernel answered with.
        errno: Errno,
    },
    /// A request failed without an errno (the connection closed, or an answer did not parse).
    #[error("{op} {target} in {netns}: {message}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What it was applied to.
        target: String,
        /// The network namespace of the connection (`net:[inode]`).
        netns: String,
        /// rtnetlink's description of the failure.
        message: String,
    },
}

impl NetlinkError {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Runtime { errno }
            | NetlinkError::Socket { errno, .. }
            | NetlinkError::Netns { errno, .. }
            | NetlinkError::RestoreNetns { errno, .. }
            | NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::InvalidName { .. }
            | NetlinkError::InvalidMac { .. }
            | NetlinkError::InvalidPrefix { .. } => Some(Errno::EINVAL),
            NetlinkError::Protocol { .. } => None,
        }
    }
}

/// The errno of an I/O error (EIO if it carries none, which syscall errors always do).
fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// `net:[inode]` for an open namespace file (the text `readlink /proc/<pid>/ns/net` shows).
fn netns_id(file: &File) -> String {
    match file.metadata() {
        Ok(meta) => format!("net:[{}]", meta.ino()),
        Err(_) => format!("netns fd {}", file.as_raw_fd()),
    }
}

/// A connection to rtnetlink in one network namespace; see the module documentation.
pub struct Netlink {
    // Declared before `rt`, so it is dropped first; dropping the runtime then drops the connection task
    // and closes the socket.
    handle: Handle,
    rt: Runtime,
    netns: String,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// Builds the current-thread runtime a [`Netlink`] runs on.
fn runtime() -> Result<Runtime, NetlinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetlinkError::Runtime { errno: io_errno(&e) })
}

/// Opens an rtnetlink socket in the calling thread's current network namespace and spawns its
/// connection task on `rt` (the socket registers with `rt`'s I/O driver, hence `enter`).
fn connect(rt: &Runtime) -> io::Result<Handle> {
    let _guard = rt.enter();
    let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
    rt.spawn(connection);
    Ok(handle)
}

impl Netlink {
    /// A connection in the calling thread's current network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let netns = match File::open(THREAD_NETNS) {
            Ok(f) => netns_id(&f),
            Err(_) => "the current network namespace".to_string(),
        };
        let rt = runtime()?;
        let handle = connect(&rt).map_err(|e| NetlinkError::Socket {
            netns: netns.clone(),
            errno: io_errno(&e),
        })?;
        Ok(Netlink { handle, rt, netns })
    }

    /// A connection whose socket lives in the network namespace `ns` (an open `/proc/<pid>/ns/net` or
    /// `/run/netns/<name>` file): the calling thread `setns()`es into `ns`, opens the socket, and
    /// `setns()`es back to the namespace it was in (saved first from `/proc/thread-self/ns/net`). The
    /// socket stays bound to `ns`. The thread's namespace is restored on error too; only if that
    /// restore itself fails ([`NetlinkError::RestoreNetns`]) is the thread left in `ns`.
    pub fn open_in(ns: &File) -> Result<Netlink, NetlinkError> {
        let netns = netns_id(ns);
        let rt = runtime()?;
        let connected = in_netns(ns, &netns, || connect(&rt))?;
        let handle = connected.map_err(|e| NetlinkError::Socket {
            netns: netns.clone(),
            errno: io_errno(&e),
        })?;
        Ok(Netlink { handle, rt, netns })
    }

    /// The network namespace of this connection, as `net:[inode]`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// All interfaces of the namespace (`RTM_GETLINK` dump).
    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(|e| self.error("list", "interfaces".to_string(), e))?;
        Ok(messages.iter().map(link_from_message).collect())
    }

    /// The interface called `name`, or None if there is none (`RTM_GETLINK` with `IFLA_IFNAME`).
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        check_ifname("look up interface", name)?;
        let result: Result<Vec<LinkMessage>, _> = self
            .rt
            .block_on(self.handle.link().get().match_name(name).execute().try_collect());
        match result {
            Ok(messages) => Ok(messages.first().map(link_from_message)),
            Err(e) if kernel_errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(self.error("look up", format!("interface {name}"), e)),
        }
    }

    /// The interface whose hardware address is `mac` (any case, `:` or `-` separated), or None.
    pub fn link_by_mac(&self, mac: &str) -> Result<Option<Link>, NetlinkError> {
        let wanted = normalize_mac(mac).ok_or_else(|| NetlinkError::InvalidMac {
            op: "look up interface by MAC",
            mac: mac.to_string(),
        })?;
        Ok(self
            .links()?
            .into_iter()
            .find(|l| l.mac.as_deref() == Some(wanted.as_str())))
    }

    /// All IPv4 and IPv6 addresses of all interfaces (`RTM_GETADDR` dump).
    pub fn addrs(&self) -> Result<Vec<Addr>, NetlinkError> {
        let messages: Vec<AddressMessage> = self
            .rt
            .block_on(self.handle.address().get().execute().try_collect())
            .map_err(|e| self.error("list", "addresses".to_string(), e))?;
        Ok(messages.iter().filter_map(addr_from_message).collect())
    }

    /// Creates a veth pair `name` <-> `peer` in this namespace (both down). Fails with `EEXIST` if
    /// either name is taken.
    pub fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        check_ifname("add veth", name)?;
        check_ifname("add veth", peer)?;
        let message = LinkVeth::new(name, peer).build();
        self.rt
            .block_on(self.handle.link().add(message).execute())
            .map_err(|e| self.error("add veth", format!("{name} (peer {peer})"), e))
    }

    /// Creates a veth pair whose `name` end is in this namespace and whose other end is born in the
    /// network namespace `ns` as `peer`, with hardware address `peer_mac` — one `RTM_NEWLINK`, as
    /// `ip link add NAME type veth peer name PEER address MAC netns NS` does. Unlike creating both
    /// ends here and moving one (an `RTM_SETLINK` with `IFLA_NET_NS_FD`, which waits for an RCU
    /// grace period: about 20 ms on this machine kind), nothing changes namespace. Both ends are
    /// down; a taken name fails with `EEXIST`.
    pub fn add_veth_into(
        &self,
        name: &str,
        peer: &str,
        peer_mac: &str,
        ns: &File,
    ) -> Result<(), NetlinkError> {
        check_ifname("add veth", name)?;
        check_ifname("add veth", peer)?;
        let mac = parse_mac(peer_mac).ok_or_else(|| NetlinkError::InvalidMac {
            op: "add veth",
            mac: peer_mac.to_string(),
        })?;
        // `ns` is borrowed for the whole call: the fd in the message stays valid until the kernel
        // has answered.
        let peer_msg = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let message = LinkVeth::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.rt
            .block_on(self.handle.link().add(message).execute())
            .map_err(|e| self.error("add veth", format!("{name} (peer {peer} in {})", netns_id(ns)), e))
    }

    /// Moves interface `index` into the network namespace `ns` (`IFLA_NET_NS_FD`), optionally renaming
    /// it in the same request (`IFLA_IFNAME`) so it cannot collide with an interface of the same name on
    /// arrival (without a rename, such a collision fails with `EEXIST`). The interface arrives down;
    /// its index stays the same if that index is free in `ns`.
    pub fn move_to_netns(&self, index: u32, ns: &File, new_name: Option<&str>) -> Result<(), NetlinkError> {
        let mut builder = LinkUnspec::new_with_index(index).setns_by_fd(ns.as_raw_fd());
        let mut target = format!("interface {index} to {}", netns_id(ns));
        if let Some(name) = new_name {
            check_ifname("move interface", name)?;
            builder = builder.name(name.to_string());
            target.push_str(&format!(" as {name}"));
        }
        // `ns` is borrowed for the whole call, so the fd in the message stays valid until the kernel
        // has answered.
        self.rt
            .block_on(self.handle.link().set(builder.build()).execute())
            .map_err(|e| self.error("move", target, e))
    }

    /// Renames interface `index` to `name`; a taken name fails with `EEXIST`. The interface must be
    /// down: kernels before 6.2 refuse to rename a running interface (`EBUSY`). Newer kernels allow it
    /// (commit bd039b5ea2a9, logging "renamed while UP"), but cml renames only down interfaces, so this
    /// works on both and no program sees a live interface change its name.
    pub fn rename(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        check_ifname("rename interface", name)?;
        let message = LinkUnspec::new_with_index(index).name(name.to_string()).build();
        self.set_link("rename", format!("interface {index} to {name}"), message)
    }

    /// Sets the hardware address of interface `index` (`IFLA_ADDRESS`); `mac` in any case, `:` or `-`
    /// separated. The kernel refuses multicast addresses (`EADDRNOTAVAIL`).
    pub fn set_mac(&self, index: u32, mac: &str) -> Result<(), NetlinkError> {
        let bytes = parse_mac(mac).ok_or_else(|| NetlinkError::InvalidMac {
            op: "set MAC",
            mac: mac.to_string(),
        })?;
        let message = LinkUnspec::new_with_index(index).address(bytes.to_vec()).build();
        self.set_link(
            "set MAC of",
            format!("interface {index} to {}", format_mac_bytes(&bytes)),
            message,
        )
    }

    /// Sets (`up`) or clears IFF_UP on interface `index`.
    pub fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let builder = LinkUnspec::new_with_index(index);
        let (builder, op) = if up {
            (builder.up(), "set up")
        } else {
            (builder.down(), "set down")
        };
        self.set_link(op, format!("interface {index}"), builder.build())
    }

    /// Adds `addr`/`prefix` to interface `index` (`RTM_NEWADDR`; for IPv4 the kernel also adds the
    /// subnet route once the interface is up). An address already there fails with `EEXIST`.
    pub fn add_addr(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(NetlinkError::InvalidPrefix {
                op: "add address",
                addr,
                prefix,
            });
        }
        self.rt
            .block_on(self.handle.address().add(index, addr, prefix).execute())
            .map_err(|e| self.error("add address", format!("{addr}/{prefix} to interface {index}"), e))
    }

    /// Adds an IPv4 default route via `gateway` to the main table (`RTM_NEWROUTE`, 0.0.0.0/0). The
    /// gateway must be reachable on the subnet of an address of an up interface (else `ENETUNREACH`);
    /// an existing default route fails with `EEXIST`.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let message = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build();
        self.rt
            .block_on(self.handle.route().add(message).execute())
            .map_err(|e| self.error("add default route", format!("via {gateway}"), e))
    }

    /// Deletes interface `index` (`RTM_DELLINK`; deleting one end of a veth pair deletes both). An
    /// interface that is already gone (`ENODEV`) is not an error.
    pub fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.rt.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(e) if kernel_errno(&e) == Some(Errno::ENODEV) => Ok(()),
            Err(e) => Err(self.error("delete", format!("interface {index}"), e)),
        }
    }

    /// Sends an `RTM_SETLINK`.
    fn set_link(&self, op: &'static str, target: String, message: LinkMessage) -> Result<(), NetlinkError> {
        self.rt
            .block_on(self.handle.link().set(message).execute())
            .map_err(|e| self.error(op, target, e))
    }

    /// Our error for a failed rtnetlink request.
    fn error(&self, op: &'static str, target: String, e: rtnetlink::Error) -> NetlinkError {
        match kernel_errno(&e) {
            Some(errno) => NetlinkError::Kernel {
                op,
                target,
                netns: self.netns.clone(),
                errno,
            },
            None => NetlinkError::Protocol {
                op,
                target,
                netns: self.netns.clone(),
                message: e.to_string(),
            },
        }
    }
}

/// Runs `f` with the calling thread in the network namespace `ns` (described as `netns` in errors),
/// then puts the thread back into the namespace it was in.
fn in_netns<T>(ns: &File, netns: &str, f: impl FnOnce() -> T) -> Result<T, NetlinkError> {
    // Saved as an fd, not a path: the path names whatever namespace the thread is in when it is
    // opened, so it must be opened before the first setns.
    let saved = File::open(THREAD_NETNS).map_err(|e| NetlinkError::Netns {
        step: format!("open {THREAD_NETNS} to save the thread's network namespace"),
        errno: io_errno(&e),
    })?;
    let saved_id = netns_id(&saved);
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(|errno| NetlinkError::Netns {
        step: format!("setns into network namespace {netns} (from {saved_id})"),
        errno,
    })?;
    // `f` only opens a socket and spawns a task; it does not panic, and the profiles abort on panic
    // anyway, so no unwinding guard is needed to get back.
    let out = f();
    nix::sched::setns(&saved, CloneFlags::CLONE_NEWNET).map_err(|errno| NetlinkError::RestoreNetns {
        saved: saved_id,
        netns: netns.to_string(),
        errno,
    })?;
    Ok(out)
}

/// The errno of a kernel NACK (`NLMSG_ERROR` carries it negated).
fn kernel_errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| Errno::from_raw(c.get().abs())),
        _ => None,
    }
}

/// Our view of an `RTM_NEWLINK` message.
fn link_from_message(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        up: message.header.flags.contains(LinkFlags::Up),
        oper_state: "UNKNOWN".to_string(),
        kind: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice())
                    .ok()
                    .map(|b| format_mac_bytes(&b))
            }
            LinkAttribute::OperState(state) => link.oper_state = state.to_string(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Our view of an `RTM_NEWADDR` message: `IFA_LOCAL` is the interface's own address (on
/// point-to-point links `IFA_ADDRESS` is the peer's); IPv6 sends only `IFA_ADDRESS`.
fn addr_from_message(message: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    local.or(address).map(|addr| Addr {
        index: message.header.index,
        addr,
        prefix: message.header.prefix_len,
    })
}

/// Refuses names the kernel's `dev_valid_name()` refuses: empty, longer than 15 bytes, "." or "..",
/// or containing '/', ':' or whitespace.
fn check_ifname(op: &'static str, name: &str) -> Result<(), NetlinkError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() >= IFNAMSIZ {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are reserved")
    } else if name.contains(['/', ':', '\0']) || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetlinkError::InvalidName {
            op,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Lowercase colon form of six bytes.
fn format_mac_bytes(bytes: &[u8; 6]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// Six bytes from "aa:bb:cc:dd:ee:ff" or "AA-BB-CC-DD-EE-FF" (one separator throughout, two hex
/// digits per byte).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let separator = if s.contains(':') { ':' } else { '-' };
    let mut bytes = [0u8; 6];
    let mut parts = s.split(separator);
    for byte in bytes.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(bytes)
}

/// Normalises a MAC string ("AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff") to lowercase colon form; None if
/// it is not six hex bytes with one separator (`:` or `-`) throughout.
pub fn normalize_mac(s: &str) -> Option<String> {
    parse_mac(s).map(|b| format_mac_bytes(&b))
}

/// Turns six random bytes into a locally administered unicast MAC: bit 0 of the first byte
/// (multicast) cleared, bit 1 (locally administered) set.
fn local_unicast(mut bytes: [u8; 6]) -> [u8; 6] {
    bytes[0] = (bytes[0] & !0x01) | 0x02;
    bytes
}

/// A random locally administered unicast MAC ("x2:..", "x6:..", "xa:..", "xe:.." — multicast bit
/// clear, local bit set) in lowercase colon form, from OpenSSL's CSPRNG or else `/dev/urandom`.
///
/// # Panics
/// If neither source of randomness works (the system is then unusable for key handling as well).
pub fn random_mac() -> String {
    let mut bytes = [0u8; 6];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if let Err(e) = read {
            panic!("no randomness for a MAC address: OpenSSL RAND_bytes and /dev/urandom ({e}) failed");
        }
    }
    format_mac_bytes(&local_unicast(bytes))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use netlink_packet_route::link::{InfoKind, State};

    use super::*;

    #[test]
    fn normalize_mac_accepts_both_separators_and_cases() {
        assert_eq!(
            normalize_mac("AA-BB-CC-0d-0E-ff").as_deref(),
            Some("aa:bb:cc:0d:0e:ff")
        );
        assert_eq!(
            normalize_mac("02:00:5e:10:00:01").as_deref(),
            Some("02:00:5e:10:00:01")
        );
        assert_eq!(
            normalize_mac("02:00:5E:10:00:01").as_deref(),
            Some("02:00:5e:10:00:01")
        );
    }

    #[test]
    fn normalize_mac_rejects_malformed() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "aa:bb:cc:dd:ee:fff",
            "aa:bb:cc:dd:ee:gg",
            "aa-bb:cc:dd:ee:ff",
            "aabbccddeeff",
            "aa:bb:cc:dd:ee:ff:",
            "+a:bb:cc:dd:ee:ff",
            " aa:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_mac_is_local_unicast_and_normalized() {
        let a = random_mac();
        assert_eq!(normalize_mac(&a).as_deref(), Some(a.as_str()));
        for _ in 0..64 {
            let mac = random_mac();
            let first = parse_mac(&mac).map(|b| b[0]);
            assert_eq!(first.map(|b| b & 0x03), Some(0x02), "{mac}");
        }
        assert_ne!(a, random_mac());
    }

    #[test]
    fn local_unicast_sets_and_clears_the_right_bits() {
        assert_eq!(local_unicast([0xff; 6])[0], 0xfe);
        assert_eq!(local_unicast([0x00; 6])[0], 0x02);
        assert_eq!(local_unicast([0x01, 1, 2, 3, 4, 5]), [0x02, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn ifname_rules_follow_dev_valid_name() {
        for good in ["eth0", "veth-ab_c.1", "abcdefghijklmno"] {
            assert!(check_ifname("t", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0b",
        ] {
            let e = check_ifname("t", bad).err();
            assert!(matches!(e, Some(NetlinkError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn link_from_message_reads_the_attributes() {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        message.attributes = vec![
            LinkAttribute::IfName("veth0".to_string()),
            LinkAttribute::Address(vec![0x02, 0xAB, 0, 0, 0, 1]),
            LinkAttribute::OperState(State::LowerLayerDown),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        assert_eq!(
            link_from_message(&message),
            Link {
                index: 7,
                name: "veth0".to_string(),
                mac: Some("02:ab:00:00:00:01".to_string()),
                up: true,
                oper_state: "LOWERLAYERDOWN".to_string(),
                kind: Some("veth".to_string()),
            }
        );
    }

    #[test]
    fn link_from_message_without_optional_attributes() {
        let mut message = LinkMessage::default();
        message.header.index = 3;
        message.attributes = vec![
            LinkAttribute::IfName("tun0".to_string()),
            // Not an Ethernet address: not reported as a MAC.
            LinkAttribute::Address(vec![10, 0, 0, 1]),
        ];
        let link = link_from_message(&message);
        assert_eq!(link.mac, None);
        assert_eq!(link.kind, None);
        assert!(!link.up);
        assert_eq!(link.oper_state, "UNKNOWN");
    }

    #[test]
    fn addr_from_message_prefers_local() {
        let mut message = AddressMessage::default();
        message.header.index = 4;
        message.header.prefix_len = 32;
        message.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        ];
        assert_eq!(
            addr_from_message(&message),
            Some(Addr {
                index: 4,
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                prefix: 32
            })
        );

        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        message.header.prefix_len = 64;
        message.attributes = vec![AddressAttribute::Address(v6)];
        assert_eq!(
            addr_from_message(&message).map(|a| (a.addr, a.prefix)),
            Some((v6, 64))
        );

        message.attributes.clear();
        assert_eq!(addr_from_message(&message), None);
    }

    #[test]
    fn netlink_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Netlink>();
    }

    #[test]
    fn errors_name_operation_target_and_errno() {
        let e = NetlinkError::Kernel {
            op: "rename",
            target: "interface 7 to eth0".to_string(),
            netns: "net:[4026531840]".to_string(),
            errno: Errno::ENODEV,
        };
        let text = e.to_string();
        assert!(text.contains("rename interface 7 to eth0"), "{text}");
        assert!(text.contains("net:[4026531840]"), "{text}");
        assert!(text.contains("ENODEV"), "{text}");
        assert_eq!(e.errno(), Some(Errno::ENODEV));
    }
}
