//! The network actor: moves physical interfaces into and out of running containers
//! (`assign_iface` / `unassign_iface`) and lists a container's interfaces (`ifaces`).
//!
//! It runs on its own thread (a `SyncArbiter`), because talking netlink inside a container's
//! network namespace means `setns()` on the calling thread for a moment ([`Netlink::open_in`]); the
//! async arbiters never change namespace. Start and stop are the monitor's business
//! (`launcher::network`); this actor keeps the run directory's `pnet.json` up to date, so the
//! monitor returns run-time assigned interfaces to the host too.

use std::{fs::File, path::PathBuf, sync::Arc};

use actix::{Actor, ActorFutureExt, AtomicResponse, Context, Handler, Message, SyncContext, WrapFuture};

use super::container::{ContainerActor, store_config};
use crate::{
    container::{Accepted, network::IfaceClaim, runtime::Runtime},
    launcher::{
        network::{read_pnets, write_pnets},
        plan::PnetPlan,
    },
    protocol::pb::ContainerPnetConfig,
    sys::netlink::{self, Link, Netlink},
};

/// The network actor.
pub struct NetworkActor {
    rt: Arc<Runtime>,
}

impl NetworkActor {
    /// An actor using the runtime's interface claims.
    pub fn new(rt: Arc<Runtime>) -> NetworkActor {
        NetworkActor { rt }
    }
}

impl Actor for NetworkActor {
    type Context = SyncContext<Self>;
}

/// Which running container.
#[derive(Debug, Clone)]
pub struct Target {
    /// UUID.
    pub uuid: String,
    /// Name (for messages).
    pub name: String,
    /// Host pid of its init.
    pub pid: i32,
    /// Its run directory (`pnet.json`).
    pub run_dir: PathBuf,
}

impl Target {
    fn netns(&self) -> Result<File, String> {
        File::open(format!("/proc/{}/ns/net", self.pid))
            .map_err(|e| format!("container {} has no network namespace to open: {e}", self.name))
    }
}

fn find(nl: &Netlink, iface: &str) -> Result<Option<Link>, String> {
    match netlink::normalize_mac(iface) {
        Some(mac) => nl.link_by_mac(&mac),
        None => nl.link_by_name(iface),
    }
    .map_err(|e| e.to_string())
}

/// Move a host interface (name or MAC) into a running container.
#[derive(Message)]
#[rtype(result = "Result<PnetPlan, String>")]
pub struct MoveIn {
    /// The container.
    pub target: Target,
    /// Interface name or MAC on the host.
    pub iface: String,
}

impl Handler<MoveIn> for NetworkActor {
    type Result = Result<PnetPlan, String>;
    fn handle(&mut self, MoveIn { target, iface }: MoveIn, _: &mut SyncContext<Self>) -> Self::Result {
        let net = &self.rt.net;
        if net.is_own_veth(&iface) {
            return Err(format!(
                "{iface} is the host side of a container's virtual interface"
            ));
        }
        let host = Netlink::open().map_err(|e| e.to_string())?;
        let Some(link) = find(&host, &iface)? else {
            return Err(match net.holder(&iface) {
                Some(c) => format!("{iface} is assigned to container {} ({})", c.container, c.uuid),
                None => format!("the host has no interface {iface}"),
            });
        };
        if link.index == 1 || link.name == "lo" {
            return Err("lo cannot be assigned".into());
        }
        let mac = link.mac.clone().ok_or_else(|| {
            format!(
                "{} has no MAC address; only interfaces with one can be assigned",
                link.name
            )
        })?;
        net.claim(
            &mac,
            IfaceClaim {
                uuid: target.uuid.clone(),
                container: target.name.clone(),
                name: link.name.clone(),
            },
        )?;
        let entry = PnetPlan {
            name: link.name.clone(),
            mac: mac.clone(),
        };
        let moved = target.netns().and_then(|ns| {
            host.move_to_netns(link.index, &ns, None)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = moved {
            net.release(&mac);
            return Err(e);
        }
        // Recorded so the monitor returns it to the host when the container ends.
        let mut list = read_pnets(&target.run_dir);
        list.retain(|p| p.mac != mac);
        list.push(entry.clone());
        write_pnets(&target.run_dir, &list).map_err(|e| format!("record {}: {e}", link.name))?;
        Ok(entry)
    }
}

/// Move a physical interface (its name inside, its host name, or its MAC) out of a running
/// container back to the host, under its host name.
#[derive(Message)]
#[rtype(result = "Result<PnetPlan, String>")]
pub struct MoveOut {
    /// The container.
    pub target: Target,
    /// Interface name or MAC.
    pub iface: String,
}

impl Handler<MoveOut> for NetworkActor {
    type Result = Result<PnetPlan, String>;
    fn handle(&mut self, MoveOut { target, iface }: MoveOut, _: &mut SyncContext<Self>) -> Self::Result {
        let ns = target.netns()?;
        let host_ns =
            File::open("/proc/self/ns/net").map_err(|e| format!("open the host's network namespace: {e}"))?;
        let inner = Netlink::open_in(&ns).map_err(|e| e.to_string())?;
        let mut list = read_pnets(&target.run_dir);
        let wanted = netlink::normalize_mac(&iface);
        let inside = inner.links().map_err(|e| e.to_string())?;
        let Some((link, entry)) = inside.iter().find_map(|l| {
            let entry = list.iter().find(|p| Some(&p.mac) == l.mac.as_ref())?;
            let hit = l.name == iface || entry.name == iface || wanted.as_ref() == l.mac.as_ref();
            hit.then(|| (l.clone(), entry.clone()))
        }) else {
            return Err(if inside.iter().any(|l| l.name == iface) {
                format!(
                    "{iface} is not a physical interface assigned to container {}",
                    target.name
                )
            } else {
                format!("container {} has no interface {iface}", target.name)
            });
        };
        let _ = inner.set_up(link.index, false);
        if inner
            .move_to_netns(link.index, &host_ns, Some(&entry.name))
            .is_err()
        {
            // Its host name was taken meanwhile: it comes back under its name inside.
            inner
                .move_to_netns(link.index, &host_ns, None)
                .map_err(|e| format!("move {} back to the host: {e}", link.name))?;
        }
        self.rt.net.release(&entry.mac);
        list.retain(|p| p.mac != entry.mac);
        write_pnets(&target.run_dir, &list).map_err(|e| format!("record {}: {e}", entry.name))?;
        Ok(entry)
    }
}

/// The interfaces inside a running container, one line each: `name mac state address/prefix…`
/// (`-` for no MAC).
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, String>")]
pub struct ListIfaces(pub Target);

impl Handler<ListIfaces> for NetworkActor {
    type Result = Result<Vec<String>, String>;
    fn handle(&mut self, ListIfaces(target): ListIfaces, _: &mut SyncContext<Self>) -> Self::Result {
        let inner = Netlink::open_in(&target.netns()?).map_err(|e| e.to_string())?;
        let links = inner.links().map_err(|e| e.to_string())?;
        let addrs = inner.addrs().map_err(|e| e.to_string())?;
        Ok(links
            .iter()
            .map(|l| {
                let mut line = format!(
                    "{} {} {}",
                    l.name,
                    l.mac.as_deref().unwrap_or("-"),
                    if l.up { l.oper_state.as_str() } else { "DOWN" }
                );
                for a in addrs.iter().filter(|a| a.index == l.index) {
                    line.push_str(&format!(" {}/{}", a.addr, a.prefix));
                }
                line
            })
            .collect())
    }
}

/// `assign_iface` (`assign: true`) or `unassign_iface` for a container; `persistent` also edits its
/// stored `net_ifaces` (refused for a signed config, which cmld cannot re-sign).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct AssignIface {
    /// Interface name or MAC.
    pub iface: String,
    /// Edit the stored config too.
    pub persistent: bool,
    /// Assign (true) or unassign (false).
    pub assign: bool,
}

impl ContainerActor {
    fn net_target(&self) -> Option<Target> {
        let run = self.run.as_ref().filter(|_| self.state.is_running())?;
        Some(Target {
            uuid: self.uuid.to_string(),
            name: self.config.config.name.clone(),
            pid: run.init.pid(),
            run_dir: run.run_dir.clone(),
        })
    }
}

/// `stored` with `net_ifaces` edited for `iface`: added (assign), or every entry naming it by the
/// given name, its host name or its MAC removed (unassign).
fn with_net_iface(mut a: Accepted, iface: &str, entry: &PnetPlan, assign: bool) -> Accepted {
    let list = &mut a.config.net_ifaces;
    if assign {
        if !list.iter().any(|p| p.netif == iface) {
            list.push(ContainerPnetConfig {
                netif: iface.to_owned(),
                mac_filter: Vec::new(),
            });
        }
    } else {
        list.retain(|p| {
            p.netif != iface
                && p.netif != entry.name
                && netlink::normalize_mac(&p.netif).as_deref() != Some(entry.mac.as_str())
        });
    }
    a.text = crate::protocol::text::print(&a.config).into_bytes();
    a
}

impl Handler<AssignIface> for ContainerActor {
    type Result = AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, msg: AssignIface, _: &mut Context<Self>) -> Self::Result {
        let refuse = |e: String| AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))));
        if !self.config.config.netns() {
            return refuse(format!(
                "container {} shares the host's network namespace (netns: false): there is nowhere to move an interface",
                self.config.config.name
            ));
        }
        let Some(target) = self.net_target() else {
            return refuse(format!(
                "container is {}: interfaces move only into and out of a running container",
                self.state
            ));
        };
        if msg.persistent && self.pending.as_ref().unwrap_or(&self.config).signed() {
            return refuse(
                "--persistent would change a signed config, which cmld cannot re-sign; assign without \
                 --persistent, or update the config with a new signature"
                    .into(),
            );
        }
        let net = self.ctx.net.clone();
        let (data, uuid) = (self.ctx.data.clone(), self.uuid);
        // The response is atomic: the stored config cannot change before this is done.
        let stored = self.pending.as_ref().unwrap_or(&self.config).clone();
        let work = async move {
            let AssignIface {
                iface,
                persistent,
                assign,
            } = msg;
            let request = iface.clone();
            let entry = if assign {
                net.send(MoveIn {
                    target,
                    iface: request,
                })
                .await
            } else {
                net.send(MoveOut {
                    target,
                    iface: request,
                })
                .await
            }
            .map_err(|e| e.to_string())??;
            if !persistent {
                return Ok(None);
            }
            let a = with_net_iface(stored, &iface, &entry, assign);
            let files = a.clone();
            actix_rt::task::spawn_blocking(move || store_config(&data, &uuid, &files))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the interface moved, but the config could not be stored: {e}"))?;
            Ok(Some(a))
        }
        .into_actor(self)
        .map(|res: Result<Option<Accepted>, String>, act, _| {
            if let Some(a) = res? {
                act.apply(a);
            }
            Ok(())
        });
        AtomicResponse::new(Box::pin(work))
    }
}

/// The interfaces inside the container (none while it is stopped).
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, String>")]
pub struct Ifaces;

impl Handler<Ifaces> for ContainerActor {
    type Result = actix::ResponseFuture<Result<Vec<String>, String>>;
    fn handle(&mut self, _: Ifaces, _: &mut Context<Self>) -> Self::Result {
        let target = self.net_target();
        let net = self.ctx.net.clone();
        Box::pin(async move {
            match target {
                Some(t) => net.send(ListIfaces(t)).await.map_err(|e| e.to_string())?,
                None => Ok(Vec::new()),
            }
        })
    }
}
