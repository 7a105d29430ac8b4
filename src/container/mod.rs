//! Container domain logic, free of actix: the state machine and config validation.

pub mod config;
pub mod state;

pub use config::{ConfigError, check_signature_policy, load_config, validate_against_catalog};
pub use state::State;
