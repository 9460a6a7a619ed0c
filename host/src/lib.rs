//! ferry: streams changes out of a service's database, maps each through a
//! WebAssembly plugin, and delivers the result in order per key, at least
//! once, made idempotent.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod admin;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod event;
pub mod kafka;
pub mod notify;
pub mod pg;
pub mod pipeline;
pub mod plugin;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod template;
pub mod vectors;
