//! Generates two things:
//! - the Kessel Inventory gRPC client from the project's own `.proto` files
//!   (`proto/` at the repository root), with the vendored `protoc` and its
//!   well-known types, so a build needs nothing installed;
//! - the table of scaffold files `ferry plugin new` writes: every file of
//!   `plugins/templates/<lang>/`, embedded in the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type BuildResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> BuildResult {
    let repository = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or("the host crate sits in the repository")?
        .to_path_buf();
    kessel_client(&repository.join("proto"))?;
    scaffolds(&repository.join("plugins/templates"))
}

fn kessel_client(root: &Path) -> BuildResult {
    let protos = [
        root.join("kessel/inventory/v1beta2/inventory_service.proto"),
        root.join("google/rpc/status.proto"),
        root.join("google/rpc/error_details.proto"),
    ];
    let includes = [root.to_path_buf(), protoc_bin_vendored::include_path()?];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

/// Languages with a scaffold, as `ferry plugin new --lang` names them.
const SCAFFOLD_LANGUAGES: &[&str] = &["rust", "js", "python", "c"];

/// What a template folder holds that is not part of the scaffold: build
/// outputs and installed tools of someone who built it in place.
const NOT_SCAFFOLD: &[&str] = &[
    "node_modules",
    "target",
    ".venv",
    "__pycache__",
    "plugin.wasm",
];

/// Writes `scaffolds.rs`: `(language, relative path, contents, executable)`
/// for every template file.
fn scaffolds(templates: &Path) -> BuildResult {
    println!("cargo:rerun-if-changed={}", templates.display());
    let mut table = String::from("pub(crate) const FILES: &[(&str, &str, &[u8], bool)] = &[\n");
    for lang in SCAFFOLD_LANGUAGES {
        let dir = templates.join(lang);
        let mut files = Vec::new();
        if dir.exists() {
            collect(&dir, &mut files)?;
        }
        files.sort();
        for file in files {
            let relative = file.strip_prefix(&dir)?.to_str().ok_or("a UTF-8 path")?;
            writeln!(
                table,
                "    ({lang:?}, {relative:?}, include_bytes!({:?}), {}),",
                file.display().to_string(),
                is_executable(&file)?
            )?;
        }
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("scaffolds.rs");
    std::fs::write(out, table)?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> BuildResult {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if NOT_SCAFFOLD.iter().any(|skip| name == *skip) {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        if entry.file_type()?.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> Result<bool, std::io::Error> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_: &Path) -> Result<bool, std::io::Error> {
    Ok(false)
}
