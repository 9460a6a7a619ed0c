//! Integration tests of the host: the real `ferry` binary and runtime, real
//! components (built by `plugins/artifacts`), real files.
//!
//! One test binary holds every suite, so the suite links once.

mod admin;
mod cli;
mod common;
mod container;
mod engine;
mod file_pipeline;
mod kafka;
mod kessel;
mod kessel_outbox;
mod languages;
mod limits;
mod plugins;
mod postgres;
mod reload;
mod sdmx;
mod tansu;
#[path = "../support/wire.rs"]
mod wire;
