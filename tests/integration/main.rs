//! Integration tests of the host: the real `ferry` binary and runtime, real
//! components (built by `plugins/artifacts`), real files.
//!
//! One test binary holds every suite, so the suite links once.

mod cli;
mod common;
mod engine;
mod file_pipeline;
mod kafka;
mod kessel;
mod kessel_outbox;
mod languages;
mod limits;
mod plugins;
mod postgres;
mod sdmx;
mod tansu;
