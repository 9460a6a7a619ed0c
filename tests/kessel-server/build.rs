//! Generates the test server from the same `.proto` files as the host's
//! client (`proto/` at the repository root), so both speak one schema.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .join("../../proto")
        .canonicalize()?;
    let protos = [
        root.join("kessel/inventory/v1beta2/inventory_service.proto"),
        root.join("google/rpc/status.proto"),
        root.join("google/rpc/error_details.proto"),
    ];
    let includes = [root.clone(), protoc_bin_vendored::include_path()?];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
