//! Paths of the workspace's guest plugins, built for `wasm32-wasip2` by this
//! crate's build script. Tests and benchmarks depend on this crate, so
//! `cargo test` always runs against freshly built components; every plugin
//! listed in `ALL` must be exercised by a test (`tests/integration/plugins.rs`
//! checks each one against the world).

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
