//! The GuestOS manager actor: owns the catalog of installed GuestOSes. Other actors read the
//! catalog through the shared [`CatalogHandle`] for validation; changes go through this actor.

use std::path::PathBuf;

use actix::{Actor, Context, Handler, Message, MessageResult};
use tracing::warn;

use super::CatalogHandle;
use crate::{guestos::Catalog, protocol::pb::GuestOsConfig};

/// The GuestOS manager.
pub struct GuestOsManager {
    dir: PathBuf,
    catalog: CatalogHandle,
}

impl GuestOsManager {
    /// A manager over `dir` (`operatingsystems/`) publishing into `catalog`.
    pub fn new(dir: PathBuf, catalog: CatalogHandle) -> Self {
        GuestOsManager { dir, catalog }
    }

    fn rescan(&self) {
        let (cat, errors) = Catalog::scan(&self.dir);
        for (path, reason) in errors {
            warn!(path = %path.display(), %reason, "skipping GuestOS");
        }
        *self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cat;
    }
}

impl Actor for GuestOsManager {
    type Context = Context<Self>;
}

/// Re-reads the installed GuestOSes from disk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rescan;

impl Handler<Rescan> for GuestOsManager {
    type Result = ();
    fn handle(&mut self, _: Rescan, _: &mut Context<Self>) {
        self.rescan();
    }
}

/// Every installed GuestOS config.
#[derive(Message)]
#[rtype(result = "Vec<GuestOsConfig>")]
pub struct List;

impl Handler<List> for GuestOsManager {
    type Result = MessageResult<List>;
    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        let cat = self
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        MessageResult(cat.all().iter().map(|g| g.config.clone()).collect())
    }
}
