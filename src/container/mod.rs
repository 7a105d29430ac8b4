//! Container domain logic, free of actix: the state machine and config validation.

pub mod config;
pub mod network;
pub mod runtime;
pub mod state;

pub use config::{Accepted, ConfigError, accept, load_config, validate_against_catalog};
pub use state::State;

/// How a container's volumes are protected: SOFT-token containers get fscrypt (ENCRYPT_ONLY) on
/// their ext4 EMPTY volumes; others none.
pub fn cryptfs_mode(cfg: &crate::protocol::pb::ContainerConfig) -> crate::protocol::pb::CryptfsMode {
    use crate::protocol::pb::{ContainerTokenType, CryptfsMode};
    if cfg.token_type() == ContainerTokenType::Soft {
        CryptfsMode::EncryptOnly
    } else {
        CryptfsMode::NotImplemented
    }
}
