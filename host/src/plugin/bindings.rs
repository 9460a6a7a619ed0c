//! Rust types and glue generated from `wit/plugin.wit`.
//!
//! This is the only place `bindgen!` runs: the WIT records (`ChangeEvent`,
//! `Output`, ...) are the host's own event and output types, re-exported by
//! [`crate::event`], so events cross into the guest without conversion.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    additional_derives: [PartialEq, Eq],
});

pub use self::ferry::plugin::types;
pub use exports::ferry::plugin::mapper;
