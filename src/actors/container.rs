//! One actor per container: owns its config and its state, and the files that belong to it.
//!
//! Start, stop and supervision arrive with the runtime; this actor already holds the state machine
//! ([`State::can_become`]) and publishes every change to the status board.

use actix::{Actor, ActorFutureExt, AtomicResponse, Context, Handler, Message, MessageResult, WrapFuture};
use tracing::info;
use uuid::Uuid;

use super::{manager::ManagerContext, read};
use crate::{
    container::{Accepted, ConfigError, State, validate_against_catalog},
    protocol::pb::ContainerConfig,
    store::{self, DataDir, StoreError},
};

/// A container request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The new config is not acceptable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing or deleting its files failed.
    #[error("container {uuid}: {source}")]
    Store {
        /// The container.
        uuid: Uuid,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The request is not possible in the current state.
    #[error("container {uuid} is {state}: {what}")]
    State {
        /// The container.
        uuid: Uuid,
        /// Its state.
        state: State,
        /// What was refused.
        what: &'static str,
    },
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The per-container actor.
pub struct ContainerActor {
    pub(super) uuid: Uuid,
    pub(super) ctx: ManagerContext,
    /// The config the current (or next) run uses.
    pub(super) config: Accepted,
    /// A stored config that waits for the next start.
    pub(super) pending: Option<Accepted>,
    pub(super) state: State,
    /// The running container, while there is one.
    pub(super) run: Option<super::lifecycle::Run>,
    /// Restarts by the supervisor since the last start by a user.
    pub(super) restarts: u32,
    /// Bumped by every user start or stop: a scheduled restart from an older epoch is dropped.
    pub(super) epoch: u64,
    /// The unwrapped volume key while the container runs (for supervisor restarts); zeroized
    /// when the last reference goes.
    pub(super) key: Option<std::sync::Arc<crate::softtoken::MasterKey>>,
}

impl ContainerActor {
    /// A stopped container with the given config (already on disk and on the board).
    pub fn new(uuid: Uuid, config: Accepted, ctx: ManagerContext) -> Self {
        ContainerActor {
            uuid,
            ctx,
            config,
            pending: None,
            state: State::Stopped,
            run: None,
            restarts: 0,
            epoch: 0,
            key: None,
        }
    }

    /// Moves to `to` through the state machine and publishes it. A transition the table does not
    /// allow is a bug: it is logged and refused.
    pub(super) fn set_state(&mut self, to: State) -> bool {
        if self.state == to {
            return true;
        }
        if !self.state.can_become(to) {
            tracing::error!(container = %self.uuid, from = ?self.state, ?to, "refused state transition");
            return false;
        }
        tracing::debug!(container = %self.uuid, from = ?self.state, ?to, "state");
        self.state = to;
        let (pid, started, cgroup) = match &self.run {
            Some(r) => (
                r.init.pid(),
                Some(r.started),
                Some(std::sync::Arc::new(r.cgroup.clone())),
            ),
            None => (0, None, None),
        };
        self.ctx.board.update(&self.uuid, |e| {
            e.state = to;
            e.pid = pid;
            e.started = started;
            e.cgroup = cgroup;
        });
        true
    }

    /// Takes a pending config once the container has stopped.
    pub(super) fn apply_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.apply(p);
        }
    }

    pub(super) fn stored_config(&self) -> &ContainerConfig {
        &self.pending.as_ref().unwrap_or(&self.config).config
    }

    /// Makes `cfg` the stored config: in effect at once when stopped, else at the next start.
    pub(super) fn apply(&mut self, cfg: Accepted) {
        if self.state.is_running() {
            self.pending = Some(cfg);
        } else {
            self.config = cfg;
            self.pending = None;
        }
        let c = &self.config.config;
        let (name, guestos, token, color) = (c.name.clone(), c.guest_os.clone(), c.token_type(), c.color);
        let cryptfs = crate::container::cryptfs_mode(c);
        let pending = self.pending.is_some();
        self.ctx.board.update(&self.uuid, |e| {
            e.name = name;
            e.guestos = guestos;
            e.color = color;
            e.token_type = token as i32;
            e.cryptfs = cryptfs;
            e.update_pending = pending;
        });
    }
}

impl Actor for ContainerActor {
    type Context = Context<Self>;
}

/// The stored config (the pending one when an update waits for the next start).
#[derive(Message)]
#[rtype(result = "ContainerConfig")]
pub struct GetConfig;

impl Handler<GetConfig> for ContainerActor {
    type Result = MessageResult<GetConfig>;
    fn handle(&mut self, _: GetConfig, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stored_config().clone())
    }
}

/// Replaces the config (accepted by [`crate::container::accept`]) and stores it atomically;
/// applied at once when stopped, at the next start otherwise.
#[derive(Message)]
#[rtype(result = "Result<ContainerConfig, ContainerError>")]
pub struct UpdateConfig(pub Accepted);

impl Handler<UpdateConfig> for ContainerActor {
    type Result = AtomicResponse<Self, Result<ContainerConfig, ContainerError>>;

    fn handle(&mut self, UpdateConfig(new): UpdateConfig, _: &mut Context<Self>) -> Self::Result {
        let new = crate::container::network::with_macs(new);
        let checked =
            validate_against_catalog(&new.config, &read(&self.ctx.catalog), new.signed()).map(|_| ());
        let (uuid, data, files) = (self.uuid, self.ctx.data.clone(), new.clone());
        let write = async move {
            checked?;
            actix_rt::task::spawn_blocking(move || store_config(&data, &uuid, &files))
                .await
                .map_err(|e| ContainerError::Internal(e.to_string()))?
                .map_err(|source| ContainerError::Store { uuid, source })
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(move |res, act, _| {
            res?;
            info!(container = %act.uuid, name = %new.config.name, signed = new.signed(), "config updated");
            let cfg = new.config.clone();
            act.apply(new);
            Ok(cfg)
        })))
    }
}

/// Stores a config: a signed one with its signature and certificate (written before the config,
/// the commit point); an unsigned one after removing any old signature, so a crash never pairs a
/// new config with an old signature.
pub(super) fn store_config(data: &DataDir, uuid: &Uuid, a: &Accepted) -> Result<(), StoreError> {
    let (conf, sig_path, cert_path) = (
        data.container_conf(uuid),
        data.container_file(uuid, "sig"),
        data.container_file(uuid, "cert"),
    );
    match &a.signature {
        Some((sig, cert)) => {
            store::atomic_write_all(&[(&sig_path, sig), (&cert_path, cert), (&conf, &a.text)], 0o600)
        }
        None => {
            store::remove_if_exists(&sig_path)?;
            store::remove_if_exists(&cert_path)?;
            store::atomic_write(&conf, &a.text, 0o600)
        }
    }
}

/// A config re-read from disk by `reload`; taken only while stopped. Returns whether it was taken.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Reloaded(pub Accepted);

impl Handler<Reloaded> for ContainerActor {
    type Result = bool;
    fn handle(&mut self, Reloaded(cfg): Reloaded, _: &mut Context<Self>) -> bool {
        if self.state != State::Stopped {
            return false;
        }
        self.apply(cfg);
        true
    }
}

/// Deletes every file of the container; the actor stops afterwards.
#[derive(Message)]
#[rtype(result = "Result<(), ContainerError>")]
pub struct Remove;

impl Handler<Remove> for ContainerActor {
    type Result = AtomicResponse<Self, Result<(), ContainerError>>;

    fn handle(&mut self, _: Remove, _: &mut Context<Self>) -> Self::Result {
        let (uuid, data, state) = (self.uuid, self.ctx.data.clone(), self.state);
        // What outlived its last run (the console log) goes with it.
        let run_dir = self.ctx.rt.run_dir.join(uuid.to_string());
        let work = async move {
            if state.is_running() {
                // Stopping a running container first comes with the runtime.
                return Err(ContainerError::State {
                    uuid,
                    state,
                    what: "remove needs a stopped container",
                });
            }
            actix_rt::task::spawn_blocking(move || {
                remove_files(&data, &uuid)?;
                store::remove_tree_if_exists(&run_dir)
            })
            .await
            .map_err(|e| ContainerError::Internal(e.to_string()))?
            .map_err(|source| ContainerError::Store { uuid, source })
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|res, act, ctx| {
            if res.is_ok() {
                info!(container = %act.uuid, "removed");
                actix::ActorContext::stop(ctx);
            }
            res
        })))
    }
}

/// Deletes a container's files: data first, the config (the commit point) after, so a crash in
/// between leaves a container that can be removed again rather than orphaned data.
fn remove_files(data: &DataDir, uuid: &Uuid) -> Result<(), StoreError> {
    store::remove_tree_if_exists(&data.container_images(uuid))?;
    store::remove_if_exists(&data.container_key(uuid))?;
    for ext in ["sig", "cert", "uid", "net", "conf", "created"] {
        store::remove_if_exists(&data.container_file(uuid, ext))?;
    }
    store::sync_dir(&data.containers_dir())?;
    store::sync_dir(&data.keys_dir())
}

/// Deletes the container's data images and wrapped key (SPEC §4.5 wipe); config, name and UUID
/// stay. The container must be stopped.
#[derive(Message)]
#[rtype(result = "Result<(), ContainerError>")]
pub struct Wipe;

impl Handler<Wipe> for ContainerActor {
    type Result = AtomicResponse<Self, Result<(), ContainerError>>;

    fn handle(&mut self, _: Wipe, _: &mut Context<Self>) -> Self::Result {
        let (uuid, data, state) = (self.uuid, self.ctx.data.clone(), self.state);
        // A ZOMBIE whose volume key is still in use: its old volume lives on; a wipe (which makes
        // it STOPPED and so startable) waits until the files are closed.
        let keys_busy = state == State::Zombie
            && super::lifecycle::read_exit_file(&self.ctx.rt.run_dir.join(uuid.to_string()))
                .is_some_and(|i| i.keys_busy);
        let work = async move {
            if state.is_running() {
                return Err(ContainerError::State {
                    uuid,
                    state,
                    what: "wipe needs a stopped container",
                });
            }
            if keys_busy {
                return Err(ContainerError::State {
                    uuid,
                    state,
                    what: "wipe waits until the files held open on its encrypted volume are closed",
                });
            }
            actix_rt::task::spawn_blocking(move || {
                store::remove_tree_if_exists(&data.container_images(&uuid))?;
                store::remove_if_exists(&data.container_key(&uuid))
            })
            .await
            .map_err(|e| ContainerError::Internal(e.to_string()))?
            .map_err(|source| ContainerError::Store { uuid, source })
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|res, act, _| {
            if res.is_ok() {
                info!(container = %act.uuid, "wiped");
                if act.state == State::Zombie {
                    act.state = State::Stopped;
                    act.ctx.board.update(&act.uuid, |e| e.state = State::Stopped);
                }
            }
            res
        })))
    }
}
