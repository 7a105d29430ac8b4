//! The GuestOS manager actor: the trust store (`ca_register`), installation (`push_guestos_config`),
//! removal and the catalog of installed GuestOSes. Other actors read the catalog and the trust
//! anchors through shared handles; every change goes through this actor.
//!
//! Trust store: `tokens/ca/<sha256 of the DER>.pem`, one CA certificate per file.

use std::{collections::HashSet, fs, path::PathBuf, sync::Arc};

use actix::{Actor, ActorFutureExt, Context, Handler, Message, MessageResult, ResponseActFuture, WrapFuture};
use openssl::x509::X509;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::{CatalogHandle, TrustHandle, board::StatusBoard, read, write};
use crate::{
    crypto, device,
    guestos::{self, Catalog, install},
    protocol::{
        pb::{ContainerTrust, DaemonToController, DeviceConfig, GuestOsConfig, InstallProgress},
        reply, text,
    },
    store::{self, DataDir, StoreError},
};

/// A GuestOS-manager request that failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestOsError {
    /// The certificate is not acceptable.
    #[error("certificate refused: {0}")]
    Certificate(#[source] crypto::CryptoError),
    /// The config does not parse or is not acceptable.
    #[error("GuestOS config refused: {0}")]
    Config(String),
    /// The signature or its chain does not verify.
    #[error("GuestOS signature refused: {0}")]
    Signature(#[source] crypto::CryptoError),
    /// A newer version is installed.
    #[error("{name} version {version} is older than the installed version {installed}")]
    Older {
        /// GuestOS name.
        name: String,
        /// The pushed version.
        version: u64,
        /// The newest installed version.
        installed: u64,
    },
    /// The same version is being installed by another request.
    #[error("{0} is being installed by another request")]
    Busy(String),
    /// Fetching or installing failed.
    #[error("installing {stem} failed: {source}")]
    Install {
        /// `<name>-<version>`.
        stem: String,
        /// The cause.
        #[source]
        source: install::InstallError,
    },
    /// Containers use the GuestOS.
    #[error("GuestOS {name} is used by container(s) {containers}; remove them first")]
    InUse {
        /// GuestOS name.
        name: String,
        /// Names of the containers.
        containers: String,
    },
    /// No such GuestOS.
    #[error("GuestOS {0:?} is not installed")]
    NotInstalled(String),
    /// The store could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The GuestOS manager.
pub struct GuestOsManager {
    data: DataDir,
    device: Arc<DeviceConfig>,
    catalog: CatalogHandle,
    trust: TrustHandle,
    board: Arc<StatusBoard>,
    installing: HashSet<String>,
}

impl GuestOsManager {
    /// A manager over the data directory's store and trust store, publishing into the handles.
    pub fn new(
        data: DataDir,
        device: Arc<DeviceConfig>,
        catalog: CatalogHandle,
        trust: TrustHandle,
        board: Arc<StatusBoard>,
    ) -> Self {
        GuestOsManager {
            data,
            device,
            catalog,
            trust,
            board,
            installing: HashSet::new(),
        }
    }

    fn ca_dir(&self) -> PathBuf {
        self.data.tokens_dir().join("ca")
    }

    /// Loads the trusted CAs from the trust store; unreadable files are logged and skipped.
    fn load_trust(&self) {
        let mut anchors = Vec::new();
        if let Ok(entries) = fs::read_dir(self.ca_dir()) {
            for e in entries.flatten() {
                let path = e.path();
                match guestos::read_regular(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| crypto::parse_ca_cert(&pem).map_err(|e| e.to_string()))
                {
                    Ok(ca) => anchors.push(ca),
                    Err(reason) => warn!(path = %path.display(), %reason, "ignoring trust store entry"),
                }
            }
        }
        info!(count = anchors.len(), "trusted CAs loaded");
        *write(&self.trust) = anchors;
    }

    /// Re-reads the installed GuestOSes, verifying each against the trust store when
    /// `signed_configs` is on (unverifiable ones are skipped, so they are never listed or used).
    fn rescan(&self) {
        let signed = self.device.signed_configs();
        let anchors = read(&self.trust).clone();
        let verify = |dir: &std::path::Path, stem: &str, conf: &[u8]| -> Result<ContainerTrust, String> {
            if !signed {
                return Ok(ContainerTrust::Unsigned);
            }
            let sig = guestos::read_regular(&dir.join(format!("{stem}.sig")))
                .map_err(|e| format!("signature: {e}"))?;
            let cert = guestos::read_regular(&dir.join(format!("{stem}.cert")))
                .map_err(|e| format!("certificate: {e}"))?;
            crypto::verify_signature(conf, &sig, &cert, &anchors)
                .map(|_| ContainerTrust::Signed)
                .map_err(|e| format!("signature does not verify: {e}"))
        };
        let (cat, errors) = Catalog::scan(&self.data.guestos_dir(), &verify);
        for (path, reason) in errors {
            warn!(path = %path.display(), %reason, "skipping GuestOS");
        }
        *write(&self.catalog) = cat;
    }

    /// Everything about a push that can be decided without I/O: the parsed config, where to fetch
    /// it from, and its signature status.
    fn check_push(
        &self,
        conf: &[u8],
        sig: &[u8],
        cert: &[u8],
    ) -> Result<Option<(GuestOsConfig, String)>, GuestOsError> {
        let cfg: GuestOsConfig = text::parse(conf).map_err(|e| GuestOsError::Config(e.to_string()))?;
        guestos::validate_config(&cfg, device::hosted(&self.device)).map_err(GuestOsError::Config)?;
        if self.device.signed_configs() {
            crypto::verify_signature(conf, sig, cert, &read(&self.trust)).map_err(GuestOsError::Signature)?;
        }
        let stem = guestos::stem(&cfg);
        let catalog = read(&self.catalog);
        if catalog.get(&cfg.name, cfg.version).is_some() {
            return Ok(None); // installed and complete already
        }
        if let Some(newest) = catalog
            .latest(&cfg.name)
            .filter(|n| n.config.version > cfg.version)
        {
            return Err(GuestOsError::Older {
                name: cfg.name.clone(),
                version: cfg.version,
                installed: newest.config.version,
            });
        }
        drop(catalog);
        if self.installing.contains(&stem) {
            return Err(GuestOsError::Busy(stem));
        }
        let base = cfg
            .update_base_url
            .clone()
            .or_else(|| self.device.update_base_url.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                GuestOsError::Config("no update_base_url in the GuestOS config or in device.conf".into())
            })?;
        install::check_base_url(&base).map_err(GuestOsError::Config)?;
        Ok(Some((cfg, base)))
    }
}

impl Actor for GuestOsManager {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let swept = install::sweep(&self.data.guestos_dir());
        if swept > 0 {
            info!(
                count = swept,
                "removed GuestOS installations interrupted by a crash"
            );
        }
        self.load_trust();
        self.rescan();
    }
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
        MessageResult(
            read(&self.catalog)
                .all()
                .iter()
                .map(|g| g.config.clone())
                .collect(),
        )
    }
}

/// Adds a CA certificate (PEM) to the trust store. Returns false when it was there already.
#[derive(Message)]
#[rtype(result = "Result<bool, GuestOsError>")]
pub struct RegisterCa(pub Vec<u8>);

impl Handler<RegisterCa> for GuestOsManager {
    type Result = Result<bool, GuestOsError>;

    fn handle(&mut self, RegisterCa(pem): RegisterCa, _: &mut Context<Self>) -> Self::Result {
        let ca: X509 = crypto::parse_ca_cert(&pem).map_err(GuestOsError::Certificate)?;
        let der = ca.to_der().map_err(|e| GuestOsError::Internal(e.to_string()))?;
        let name: String = openssl::sha::sha256(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.ca_dir().join(format!("{name}.pem"));
        if path.exists() {
            return Ok(false);
        }
        // A few hundred bytes, rarely: written on the actor's thread.
        fs::DirBuilder::new()
            .recursive(true)
            .create(self.ca_dir())
            .map_err(|e| StoreError {
                op: "create",
                path: self.ca_dir(),
                source: e,
            })?;
        let pem = ca.to_pem().map_err(|e| GuestOsError::Internal(e.to_string()))?;
        store::atomic_write(&path, &pem, 0o644)?;
        info!(subject = ?ca.subject_name(), file = %path.display(), "CA registered");
        write(&self.trust).push(ca);
        Ok(true)
    }
}

/// Verifies and installs a GuestOS version; progress goes to `progress` as
/// `GUESTOS_MGR_INSTALL_STARTED` replies. Returns `<name>-<version>`.
#[derive(Message)]
#[rtype(result = "Result<String, GuestOsError>")]
pub struct Push {
    /// The exact config bytes.
    pub conf: Vec<u8>,
    /// Signature over `conf`.
    pub sig: Vec<u8>,
    /// The signer's certificate chain (PEM).
    pub cert: Vec<u8>,
    /// Where progress replies go (the requesting session's reply queue).
    pub progress: UnboundedSender<DaemonToController>,
}

fn progress_reply(stem: &str, p: Option<&install::Progress>, total: u64) -> DaemonToController {
    DaemonToController {
        install_progress: Some(InstallProgress {
            guestos: Some(stem.to_owned()),
            image: p.map(|p| p.image.clone()),
            done_bytes: Some(p.map_or(0, |p| p.done)),
            total_bytes: Some(total),
        }),
        ..reply::response(crate::protocol::pb::daemon_to_controller::Response::GuestosMgrInstallStarted)
    }
}

impl Handler<Push> for GuestOsManager {
    type Result = ResponseActFuture<Self, Result<String, GuestOsError>>;

    fn handle(&mut self, msg: Push, _: &mut Context<Self>) -> Self::Result {
        let checked = self.check_push(&msg.conf, &msg.sig, &msg.cert);
        let (cfg, base) = match checked {
            Ok(Some(found)) => found,
            Ok(None) => {
                let stem = text::parse::<GuestOsConfig>(&msg.conf)
                    .map(|c| guestos::stem(&c))
                    .unwrap_or_default();
                info!(guestos = %stem, "already installed");
                return Box::pin(actix::fut::ready(Ok(stem)));
            }
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let stem = guestos::stem(&cfg);
        self.installing.insert(stem.clone());
        let total = install::total_bytes(&cfg);
        let _ = msg.progress.send(progress_reply(&stem, None, total));
        info!(guestos = %stem, url = %base, bytes = total, "installing");
        let store_dir = self.data.guestos_dir();
        let (task_stem, progress) = (stem.clone(), msg.progress);
        let work = actix_rt::task::spawn_blocking(move || {
            let req = install::Request {
                store: &store_dir,
                config: &cfg,
                conf: &msg.conf,
                sig: &msg.sig,
                cert: &msg.cert,
                base_url: &base,
            };
            install::install(&req, &mut |p| {
                let _ = progress.send(progress_reply(&task_stem, Some(&p), total));
            })
        });
        Box::pin(work.into_actor(self).map(move |res, act, _| {
            act.installing.remove(&stem);
            match res {
                Ok(Ok(_)) => {
                    act.rescan();
                    info!(guestos = %stem, "installed");
                    Ok(stem)
                }
                Ok(Err(source)) => {
                    warn!(guestos = %stem, error = %source, "install failed");
                    Err(GuestOsError::Install { stem, source })
                }
                Err(e) => Err(GuestOsError::Internal(e.to_string())),
            }
        }))
    }
}

/// Removes every installed version of a GuestOS, refused while a container uses it. Returns the
/// removed `<name>-<version>`s.
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, GuestOsError>")]
pub struct Remove(pub String);

impl Handler<Remove> for GuestOsManager {
    type Result = Result<Vec<String>, GuestOsError>;

    fn handle(&mut self, Remove(name): Remove, _: &mut Context<Self>) -> Self::Result {
        let users = self.board.users_of_guestos(&name);
        if !users.is_empty() {
            return Err(GuestOsError::InUse {
                name,
                containers: users.join(", "),
            });
        }
        let stems: Vec<String> = read(&self.catalog)
            .all()
            .iter()
            .filter(|g| g.config.name == name)
            .map(guestos::GuestOs::stem)
            .collect();
        if stems.is_empty() {
            return Err(GuestOsError::NotInstalled(name));
        }
        let store_dir = self.data.guestos_dir();
        let result = stems.iter().try_for_each(|s| install::remove(&store_dir, s));
        self.rescan();
        result?;
        info!(guestos = %name, versions = ?stems, "removed");
        Ok(stems)
    }
}
