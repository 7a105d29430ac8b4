//! The container manager: owns the map UUID → container actor; creates, removes, reloads and looks
//! up containers. It never waits on a container actor while handling a message of its own, and all
//! file I/O runs on the blocking pool.

use std::{
    collections::HashMap,
    fs,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix::{
    Actor, ActorFutureExt, Addr, Context, Handler, Message, MessageResult, ResponseActFuture, WrapFuture,
};
use tracing::{info, warn};
use uuid::Uuid;

use super::{
    CatalogHandle, TrustHandle,
    board::{Entry, StatusBoard},
    container::{self, ContainerActor, ContainerError},
    guestos::{GuestOsManager, Rescan},
    read,
};
use crate::{
    container::{Accepted, ConfigError, State, accept, validate_against_catalog},
    guestos,
    protocol::{
        command::parse_uuid,
        pb::{ContainerConfig, ContainerTrust, DeviceConfig},
    },
    store::{self, DataDir, StoreError},
};

/// A manager request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The config is not acceptable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Files could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such container.
    #[error("no container with UUID {0}")]
    Unknown(Uuid),
    /// The container refused.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// An actor or task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Where the container manager's collaborators are.
#[derive(Clone)]
pub struct ManagerContext {
    /// The data directory.
    pub data: DataDir,
    /// device.conf.
    pub device: Arc<DeviceConfig>,
    /// Installed GuestOSes.
    pub catalog: CatalogHandle,
    /// Trusted CAs.
    pub trust: TrustHandle,
    /// Status snapshot.
    pub board: Arc<StatusBoard>,
    /// Launcher, cgroup layout and runtime settings.
    pub rt: Arc<crate::container::runtime::Runtime>,
    /// The network actor (run-time interface moves).
    pub net: actix::Addr<super::network::NetworkActor>,
}

/// The container manager.
pub struct Manager {
    ctx: ManagerContext,
    guestos: Addr<GuestOsManager>,
    containers: HashMap<Uuid, Addr<ContainerActor>>,
}

impl Manager {
    /// A manager with no containers yet (send [`Reload`] to load them from disk).
    pub fn new(ctx: ManagerContext, guestos: Addr<GuestOsManager>) -> Self {
        Manager {
            ctx,
            guestos,
            containers: HashMap::new(),
        }
    }

    fn add(&mut self, uuid: Uuid, accepted: Accepted, created: SystemTime) {
        let cfg = &accepted.config;
        let trust = read(&self.ctx.catalog)
            .latest(&cfg.guest_os)
            .map_or(ContainerTrust::Unsigned, |g| g.trust);
        self.ctx.board.insert(Entry {
            uuid,
            name: cfg.name.clone(),
            guestos: cfg.guest_os.clone(),
            state: State::Stopped,
            created,
            started: None,
            token_type: cfg.token_type() as i32,
            pid: 0,
            restart_count: 0,
            update_pending: false,
            trust,
            cryptfs: crate::container::cryptfs_mode(cfg),
            color: cfg.color,
            cgroup: None,
        });
        let actor = ContainerActor::new(uuid, accepted, self.ctx.clone()).start();
        self.containers.insert(uuid, actor);
    }
}

impl Actor for Manager {
    type Context = Context<Self>;
}

/// The actor of a container.
#[derive(Message)]
#[rtype(result = "Option<Addr<ContainerActor>>")]
pub struct Lookup(pub Uuid);

impl Handler<Lookup> for Manager {
    type Result = MessageResult<Lookup>;
    fn handle(&mut self, Lookup(uuid): Lookup, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.containers.get(&uuid).cloned())
    }
}

/// Creates a container from config text (and, for signed configs, its signature and certificate).
/// Returns its UUID, the stored config and the warnings for the client.
#[derive(Message)]
#[rtype(result = "Result<(Uuid, ContainerConfig, Vec<String>), ManagerError>")]
pub struct Create {
    /// The config as protobuf text.
    pub config: Vec<u8>,
    /// Signature and certificate chain (PEM), for a signed config.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
}

impl Handler<Create> for Manager {
    type Result = ResponseActFuture<Self, Result<(Uuid, ContainerConfig, Vec<String>), ManagerError>>;

    fn handle(&mut self, msg: Create, _: &mut Context<Self>) -> Self::Result {
        let prepared = accept(
            &self.ctx.device,
            &msg.config,
            msg.signature,
            &read(&self.ctx.trust),
        )
        .and_then(|a| validate_against_catalog(&a.config, &read(&self.ctx.catalog), a.signed()).map(|_| a))
        .map(crate::container::network::with_macs);
        let (uuid, created, data) = (Uuid::new_v4(), SystemTime::now(), self.ctx.data.clone());
        let rt = self.ctx.rt.clone();
        let write = async move {
            let accepted = prepared?;
            let files = accepted.clone();
            actix_rt::task::spawn_blocking(move || {
                write_new_container(&data, &uuid, created, &files)?;
                // The subnets are the container's from now on (a failure here is retried at start).
                let needed = crate::container::network::Network::needed(&files.config);
                if let Err(e) = rt.net.offsets(&data, &uuid, needed) {
                    warn!(container = %uuid, error = %e, "no subnet for the container yet");
                }
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
            Ok(accepted)
        };
        Box::pin(write.into_actor(self).map(move |res: Result<Accepted, ManagerError>, act, _| {
            let accepted = res?;
            let (cfg, warnings) = (accepted.config.clone(), accepted.warnings.clone());
            info!(container = %uuid, name = %cfg.name, guestos = %cfg.guest_os, signed = accepted.signed(), "created");
            for w in &warnings {
                warn!(container = %uuid, warning = %w, "config accepted with a warning");
            }
            // A concurrent reload may have picked the new file up already.
            if !act.containers.contains_key(&uuid) {
                act.add(uuid, accepted, created);
            }
            Ok((uuid, cfg, warnings))
        }))
    }
}

/// Writes `<uuid>.created`, the signature and certificate of a signed config, then `<uuid>.conf`;
/// the config's rename is the commit point.
fn write_new_container(
    data: &DataDir,
    uuid: &Uuid,
    created: SystemTime,
    a: &Accepted,
) -> Result<(), StoreError> {
    let nanos = created
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    let (created_path, conf_path) = (data.container_file(uuid, "created"), data.container_conf(uuid));
    let (sig_path, cert_path) = (
        data.container_file(uuid, "sig"),
        data.container_file(uuid, "cert"),
    );
    let mut files: Vec<(&std::path::Path, &[u8])> = vec![(&created_path, nanos.as_bytes())];
    if let Some((sig, cert)) = &a.signature {
        files.push((&sig_path, sig));
        files.push((&cert_path, cert));
    }
    files.push((&conf_path, &a.text));
    store::atomic_write_all(&files, 0o600)
}

/// Removes a container and all its files.
#[derive(Message)]
#[rtype(result = "Result<(), ManagerError>")]
pub struct Remove(pub Uuid);

impl Handler<Remove> for Manager {
    type Result = ResponseActFuture<Self, Result<(), ManagerError>>;

    fn handle(&mut self, Remove(uuid): Remove, _: &mut Context<Self>) -> Self::Result {
        let actor = self.containers.get(&uuid).cloned();
        let work = async move {
            let actor = actor.ok_or(ManagerError::Unknown(uuid))?;
            // A running container is stopped (gracefully) first; "not running" is fine.
            if let Ok(Err(super::lifecycle::StopFailure::Cleanup(e))) =
                actor.send(super::lifecycle::Stop).await
            {
                return Err(ManagerError::Internal(format!("stopping before removal: {e}")));
            }
            actor
                .send(container::Remove)
                .await
                .map_err(|e| ManagerError::Internal(e.to_string()))??;
            Ok(())
        };
        Box::pin(
            work.into_actor(self)
                .map(move |res: Result<(), ManagerError>, act, _| {
                    if res.is_ok() {
                        act.containers.remove(&uuid);
                        act.ctx.board.remove(&uuid);
                    }
                    res
                }),
        )
    }
}

/// Re-reads the installed GuestOSes and every `containers/*.conf`: new files become containers,
/// stopped containers take their file's current content, stopped containers whose file is gone are
/// dropped. Running containers are left alone. Returns one line per file that could not be loaded.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct Reload {
    /// The daemon is starting: also remove what an interrupted write left behind (never done
    /// later, when a temporary file may belong to a write in progress).
    pub startup: bool,
}

struct Scanned {
    uuid: Uuid,
    created: SystemTime,
    config: Result<Accepted, String>,
}

impl Handler<Reload> for Manager {
    type Result = ResponseActFuture<Self, Vec<String>>;

    fn handle(&mut self, msg: Reload, _: &mut Context<Self>) -> Self::Result {
        let (guestos, ctx, startup) = (self.guestos.clone(), self.ctx.clone(), msg.startup);
        let scan = async move {
            if let Err(e) = guestos.send(Rescan).await {
                warn!(error = %e, "GuestOS rescan failed");
            }
            actix_rt::task::spawn_blocking(move || scan_containers(&ctx, startup))
                .await
                .unwrap_or_default()
        };
        Box::pin(scan.into_actor(self).map(move |scanned, act, _| {
            let mut problems = Vec::new();
            let mut seen = Vec::with_capacity(scanned.len());
            for s in scanned {
                seen.push(s.uuid);
                match s.config {
                    Err(e) => problems.push(e),
                    Ok(accepted) => match act.containers.get(&s.uuid) {
                        Some(actor) => actor.do_send(container::Reloaded(accepted)),
                        None => {
                            act.add(s.uuid, accepted, s.created);
                            if startup && let Some(actor) = act.containers.get(&s.uuid) {
                                actor.do_send(super::lifecycle::Adopt);
                            }
                        }
                    },
                }
            }
            let gone: Vec<Uuid> = act
                .containers
                .keys()
                .filter(|u| !seen.contains(u))
                .filter(|u| act.ctx.board.get(u).is_some_and(|e| e.state == State::Stopped))
                // Created while the scan ran: its file exists now.
                .filter(|u| !act.ctx.data.container_conf(u).exists())
                .copied()
                .collect();
            for uuid in gone {
                info!(container = %uuid, "config file gone; dropping the stopped container");
                act.containers.remove(&uuid);
                act.ctx.board.remove(&uuid);
            }
            for p in &problems {
                warn!(problem = %p, "container config not loaded");
            }
            problems
        }))
    }
}

/// Reads and checks a stored config: a `.sig` next to it (or `signed_configs: true`) means it must
/// verify, as at create.
fn load_stored(ctx: &ManagerContext, uuid: &Uuid) -> Result<Accepted, String> {
    let conf_path = ctx.data.container_conf(uuid);
    let bytes = guestos::read_regular(&conf_path).map_err(|e| format!("cannot read: {e}"))?;
    let sig_path = ctx.data.container_file(uuid, "sig");
    let signature = match guestos::read_regular(&sig_path) {
        Ok(sig) => {
            let cert = guestos::read_regular(&ctx.data.container_file(uuid, "cert"))
                .map_err(|e| format!("signature without certificate: {e}"))?;
            Some((sig, cert))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", sig_path.display())),
    };
    accept(&ctx.device, &bytes, signature, &read(&ctx.trust)).map_err(|e| e.to_string())
}

/// Reads every container config from disk (blocking). At start-up, temporary files and `.created`
/// markers that a crash left without a config are removed.
fn scan_containers(ctx: &ManagerContext, startup: bool) -> Vec<Scanned> {
    let dir = ctx.data.containers_dir();
    if startup {
        let stale = store::remove_stale_temps(&dir);
        if stale > 0 {
            info!(
                count = stale,
                "removed temporary files left by an interrupted write"
            );
        }
    }
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Some(uuid) = parse_uuid(stem).filter(|u| u.to_string() == stem) else {
            continue;
        };
        match ext {
            "conf" => {}
            "created" | "sig" | "cert" => {
                if startup && !ctx.data.container_conf(&uuid).exists() {
                    let _ = store::remove_if_exists(&entry.path());
                }
                continue;
            }
            _ => continue,
        }
        let config = load_stored(ctx, &uuid).map_err(|e| format!("{}: {e}", entry.path().display()));
        // A small regular file only: a planted symlink, FIFO or device is not read.
        let created_path = ctx.data.container_file(&uuid, "created");
        let created = fs::symlink_metadata(&created_path)
            .ok()
            .filter(|m| m.is_file() && m.len() <= 64)
            .and_then(|_| fs::read_to_string(&created_path).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| UNIX_EPOCH + Duration::from_nanos(n))
            .or_else(|| entry.metadata().and_then(|m| m.modified()).ok())
            .unwrap_or(UNIX_EPOCH);
        out.push(Scanned {
            uuid,
            created,
            config,
        });
    }
    out
}

/// Stops every running container (daemon shutdown); returns how many were stopped.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct StopAll;

impl Handler<StopAll> for Manager {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, _: StopAll, _: &mut Context<Self>) -> Self::Result {
        let actors: Vec<_> = self.containers.values().cloned().collect();
        let work = async move {
            let stops = actors.iter().map(|a| a.send(super::lifecycle::Stop));
            futures::future::join_all(stops)
                .await
                .into_iter()
                .filter(|r| matches!(r, Ok(Ok(()))))
                .count()
        };
        Box::pin(work.into_actor(self))
    }
}

/// `wipe_device`: removes every container (each stopped gracefully first, as `remove` does).
/// GuestOSes, CAs, the device identity and certificate and the softtoken stay. Returns how many were
/// removed; the first failure ends the wipe.
#[derive(Message)]
#[rtype(result = "Result<usize, ManagerError>")]
pub struct WipeAll;

impl Handler<WipeAll> for Manager {
    type Result = ResponseActFuture<Self, Result<usize, ManagerError>>;

    fn handle(&mut self, _: WipeAll, ctx: &mut Context<Self>) -> Self::Result {
        let addr = actix::AsyncContext::address(ctx);
        let uuids: Vec<Uuid> = self.containers.keys().copied().collect();
        let work = async move {
            for uuid in &uuids {
                addr.send(Remove(*uuid))
                    .await
                    .map_err(|e| ManagerError::Internal(e.to_string()))??;
            }
            Ok(uuids.len())
        };
        Box::pin(work.into_actor(self))
    }
}

/// Asks every container to autostart (daemon start-up; each decides by its config).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AutostartAll;

impl Handler<AutostartAll> for Manager {
    type Result = ();
    fn handle(&mut self, _: AutostartAll, _: &mut Context<Self>) {
        for actor in self.containers.values() {
            actor.do_send(super::lifecycle::Autostart);
        }
    }
}
