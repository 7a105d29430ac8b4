//! The softtoken service: the device token (`tokens/device.p12`) behind a single-threaded
//! `SyncArbiter`, so PIN checks — each costs the PKCS#12 key derivation — never run on the async
//! arbiter and the lockout counter is updated by one thread only.

use std::path::Path;

use actix::{Actor, Handler, Message, SyncContext};
use tracing::{info, warn};

use crate::softtoken::{SoftToken, TokenError};

/// The token service.
pub struct TokenActor {
    token: SoftToken,
}

/// Opens (or creates with the default PIN) the device token in `dir`, warning while its PIN is
/// still the default.
pub fn open_token(dir: &Path) -> Result<SoftToken, TokenError> {
    let token = SoftToken::open_or_create(dir)?;
    if token.has_default_pin() {
        warn!("the device softtoken still has the default PIN; change it with `control change_pin`");
    }
    Ok(token)
}

impl TokenActor {
    /// A service over an opened token.
    pub fn new(token: SoftToken) -> TokenActor {
        TokenActor { token }
    }
}

impl Actor for TokenActor {
    type Context = SyncContext<Self>;
}

/// Checks a PIN (counts toward the lockout like any unlock).
#[derive(Message)]
#[rtype(result = "Result<(), TokenError>")]
pub struct CheckPin(pub String);

impl Handler<CheckPin> for TokenActor {
    type Result = Result<(), TokenError>;
    fn handle(&mut self, CheckPin(pin): CheckPin, _: &mut SyncContext<Self>) -> Self::Result {
        self.token.unlock(&pin).map(drop)
    }
}

/// Changes the token PIN.
#[derive(Message)]
#[rtype(result = "Result<(), TokenError>")]
pub struct ChangePin {
    /// Current PIN.
    pub old: String,
    /// New PIN.
    pub new: String,
}

impl Handler<ChangePin> for TokenActor {
    type Result = Result<(), TokenError>;
    fn handle(&mut self, msg: ChangePin, _: &mut SyncContext<Self>) -> Self::Result {
        self.token.change_pin(&msg.old, &msg.new)?;
        info!("device softtoken PIN changed");
        Ok(())
    }
}

/// Unlocks the token with a PIN and returns a container's volume key: unwrapped from
/// `keys/<uuid>.key`, or — at the first start, or after a wipe removed it — a fresh one whose
/// wrapped form is stored atomically there.
#[derive(Message)]
#[rtype(result = "Result<crate::softtoken::MasterKey, TokenError>")]
pub struct ContainerKey {
    /// The PIN.
    pub pin: String,
    /// The container.
    pub uuid: String,
    /// `keys/<uuid>.key`.
    pub key_file: std::path::PathBuf,
}

impl Handler<ContainerKey> for TokenActor {
    type Result = Result<crate::softtoken::MasterKey, TokenError>;
    fn handle(&mut self, msg: ContainerKey, _: &mut SyncContext<Self>) -> Self::Result {
        let unlocked = self.token.unlock(&msg.pin)?;
        match std::fs::read(&msg.key_file) {
            Ok(blob) => unlocked.unwrap_container_key(&msg.uuid, &blob),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, blob) = unlocked.new_container_key(&msg.uuid)?;
                crate::store::atomic_write(&msg.key_file, &blob, 0o600).map_err(TokenError::Write)?;
                info!(container = %msg.uuid, "new volume key created");
                Ok(key)
            }
            Err(source) => Err(TokenError::Read {
                path: msg.key_file,
                source,
            }),
        }
    }
}

/// Whether the token still has its default PIN (not counted as an attempt).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct HasDefaultPin;

impl Handler<HasDefaultPin> for TokenActor {
    type Result = bool;
    fn handle(&mut self, _: HasDefaultPin, _: &mut SyncContext<Self>) -> bool {
        self.token.has_default_pin()
    }
}
