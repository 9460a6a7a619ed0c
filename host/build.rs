//! Generates the Kessel Inventory gRPC client from the project's own
//! `.proto` files (`proto/` at the repository root), with the vendored
//! `protoc` and its well-known types, so a build needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or("the host crate sits in the repository")?
        .join("proto");
    let protos = [
        root.join("kessel/inventory/v1beta2/inventory_service.proto"),
        root.join("google/rpc/status.proto"),
        root.join("google/rpc/error_details.proto"),
    ];
    let includes = [root.clone(), protoc_bin_vendored::include_path()?];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
