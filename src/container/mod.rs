//! Container domain logic, free of actix: the state machine and config validation.

pub mod config;
pub mod runtime;
pub mod state;

pub use config::{Accepted, ConfigError, accept, load_config, validate_against_catalog};
pub use state::State;
