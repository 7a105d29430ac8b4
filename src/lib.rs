//! cml — a container management layer for Linux devices and hosts, the successor of trust|me /
//! GyroidOS CML.
//!
//! The library holds everything; the binaries in `src/bin/` only parse arguments, set up logging and
//! map the top-level error to an exit code. Dependencies point one way:
//! `protocol` (the wire edge) → `actors` (thin actix adapters) → domain (`container`, `guestos`,
//! `device`) → `store` (files on disk).

pub mod actors;
pub mod cli_assets;
pub mod client;
pub mod container;
pub mod crypto;
pub mod daemon;
pub mod device;
pub mod guestos;
pub mod guestos_build;
pub mod launcher;
pub mod protocol;
pub mod provisioning;
pub mod softtoken;
pub mod store;
pub mod sys;
pub mod web;
