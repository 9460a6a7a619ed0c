//! Placeholder; see Cargo.toml.
