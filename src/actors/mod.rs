//! actix actors: thin adapters that turn messages into calls on the domain (STYLE item 3).
//!
//! - [`acceptor::Acceptor`]: the control socket; one [`session::Session`] per connection.
//! - [`session::Session`]: decodes requests, dispatches them (one exhaustive `match`), replies in
//!   order.
//! - [`manager::Manager`]: owns one [`container::ContainerActor`] per container; create, remove,
//!   reload, lookup.
//! - [`guestos::GuestOsManager`]: the installed GuestOSes.
//! - [`board::StatusBoard`]: the status snapshot `list`/`state` are served from, so a busy
//!   container actor never delays them.

pub mod acceptor;
pub mod board;
pub mod console;
pub mod container;
pub mod exec;
pub mod guestos;
pub mod lifecycle;
pub mod manager;
pub mod network;
pub mod provisioning;
pub mod session;
pub mod token;

use std::sync::{Arc, RwLock};

use actix::Addr;

use crate::{guestos::Catalog, protocol::pb::DeviceConfig, store::DataDir};

/// Shared handle to the GuestOS catalog: written by the GuestOS manager, read for validation.
pub type CatalogHandle = Arc<RwLock<Catalog>>;

/// Shared handle to the trusted CA certificates: written by the GuestOS manager (`ca_register`),
/// read wherever a signature is verified.
pub type TrustHandle = Arc<RwLock<Vec<openssl::x509::X509>>>;

/// Reads a shared handle, ignoring poisoning (a panic aborts the daemon anyway).
pub fn read<T>(h: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    h.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a shared handle, ignoring poisoning.
pub fn write<T>(h: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    h.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every session needs to reach.
#[derive(Clone)]
pub struct Services {
    /// The data directory.
    pub data: DataDir,
    /// The device configuration loaded at start.
    pub device: Arc<DeviceConfig>,
    /// Status snapshot.
    pub board: Arc<board::StatusBoard>,
    /// The container manager.
    pub manager: Addr<manager::Manager>,
    /// The GuestOS manager.
    pub guestos: Addr<guestos::GuestOsManager>,
    /// Trusted CAs.
    pub trust: TrustHandle,
    /// Launcher, cgroup layout and runtime settings.
    pub rt: Arc<crate::container::runtime::Runtime>,
    /// The softtoken service.
    pub token: Addr<token::TokenActor>,
    /// The device identity and the provisioned state.
    pub provisioning: Addr<provisioning::ProvisioningActor>,
    /// The device is provisioned (the acceptor's policy applies); set once, never cleared.
    pub provisioned: Arc<std::sync::atomic::AtomicBool>,
}

impl Services {
    /// The runtime handle.
    pub fn manager_rt(&self) -> Arc<crate::container::runtime::Runtime> {
        self.rt.clone()
    }
}
