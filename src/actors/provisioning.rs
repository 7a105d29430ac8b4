//! The provisioning actor: the device identity (CSR, device certificate) and the provisioned state
//! (SPEC §9). It runs on its own thread (a `SyncArbiter`): key and certificate work and the marker's
//! fsync stay off the async arbiters. The policy that follows from the provisioned state is the
//! acceptor's ([`super::acceptor::allowed_when_provisioned`]); this actor only sets the flag.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use actix::{Actor, Handler, Message, SyncContext};
use tracing::info;

use super::{TrustHandle, read};
use crate::{provisioning::DeviceIdentity, store::DataDir};

/// The provisioning actor.
pub struct ProvisioningActor {
    identity: Arc<DeviceIdentity>,
    data: DataDir,
    trust: TrustHandle,
    provisioned: Arc<AtomicBool>,
}

impl ProvisioningActor {
    /// An actor for a loaded identity; `provisioned` is shared with the sessions.
    pub fn new(
        identity: Arc<DeviceIdentity>,
        data: DataDir,
        trust: TrustHandle,
        provisioned: Arc<AtomicBool>,
    ) -> ProvisioningActor {
        ProvisioningActor {
            identity,
            data,
            trust,
            provisioned,
        }
    }
}

impl Actor for ProvisioningActor {
    type Context = SyncContext<Self>;
}

/// A PEM CSR for the device key (refused once provisioned).
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, String>")]
pub struct PullCsr;

impl Handler<PullCsr> for ProvisioningActor {
    type Result = Result<Vec<u8>, String>;
    fn handle(&mut self, _: PullCsr, _: &mut SyncContext<Self>) -> Self::Result {
        if self.provisioned.load(Ordering::SeqCst) {
            return Err("the device is provisioned: no more CSRs".into());
        }
        self.identity.csr().map_err(|e| e.to_string())
    }
}

/// Store the device certificate (PEM, leaf first).
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct PushCert(pub Vec<u8>);

impl Handler<PushCert> for ProvisioningActor {
    type Result = Result<String, String>;
    fn handle(&mut self, PushCert(pem): PushCert, _: &mut SyncContext<Self>) -> Self::Result {
        if self.provisioned.load(Ordering::SeqCst) {
            return Err("the device is provisioned: its certificate cannot change".into());
        }
        let anchors = read(&self.trust).clone();
        let subject = self.identity.accept_cert(&pem, &anchors).map_err(|e| match e {
            crate::provisioning::ProvisioningError::Crypto(crate::crypto::CryptoError::KeyMismatch {
                subject,
            }) => {
                format!(
                    "certificate '{subject}' is not for this device: its public key is not the device key"
                )
            }
            other => other.to_string(),
        })?;
        info!(subject = %subject, "device certificate stored");
        Ok(subject)
    }
}

/// Mark the device provisioned: the marker is written (atomically, synced) before the flag is
/// set, so a crash cannot leave a provisioned-looking daemon without a marker.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetProvisioned;

impl Handler<SetProvisioned> for ProvisioningActor {
    type Result = Result<(), String>;
    fn handle(&mut self, _: SetProvisioned, _: &mut SyncContext<Self>) -> Self::Result {
        if !self.provisioned.load(Ordering::SeqCst) {
            crate::store::atomic_write(
                &self.data.provisioned_marker(),
                format!("{}\n", self.identity.uuid).as_bytes(),
                0o644,
            )
            .map_err(|e| e.to_string())?;
            self.provisioned.store(true, Ordering::SeqCst);
            info!(device = %self.identity.uuid, "device provisioned: the command set is restricted from now on");
        }
        Ok(())
    }
}
