//! Builds the workspace's Rust guest plugins for `wasm32-wasip2` (each comes
//! out as a component), copies them to `target/plugins/`, and writes their
//! paths as constants for tests and benchmarks.
//!
//! The plugins are built by a nested `cargo build` with its own target
//! directory, as wasmtime's `test-programs` are: the outer build's flags,
//! wrappers and target are for the host, not for WebAssembly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, package, file stem of the component)
const PLUGINS: &[(&str, &str, &str)] = &[
    (
        "KESSEL_OUTBOX_RUST",
        "kessel-outbox-plugin",
        "kessel_outbox_plugin",
    ),
    (
        "SDMX_STRUCTURES",
        "sdmx-structures-plugin",
        "sdmx_structures_plugin",
    ),
    ("MISBEHAVE", "ferry-test-misbehave", "ferry_test_misbehave"),
    (
        "WRONG_WORLD",
        "ferry-test-wrong-world",
        "ferry_test_wrong_world",
    ),
    ("VERSION_A", "ferry-test-version-a", "ferry_test_version_a"),
    ("VERSION_B", "ferry-test-version-b", "ferry_test_version_b"),
];

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm-plugin";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.ancestors().nth(2).unwrap().to_path_buf();
    for watched in [
        "wit",
        "plugins/rust-sdk",
        "plugins/kessel-outbox",
        "plugins/sdmx",
        "plugins/testing",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Cargo.toml holds the `wasm-plugin` profile.
    for file in ["Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    check_target_installed();
    let target_root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let build_dir = target_root.join("wasm-plugins");
    let out = target_root.join("plugins");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--target-dir")
        .arg(&build_dir);
    for (_, package, _) in PLUGINS {
        command.args(["--package", package]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the guest plugins failed (see above)"
    );

    std::fs::create_dir_all(&out).unwrap();
    let mut constants = String::new();
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for (name, _, stem) in PLUGINS {
        let built = build_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{stem}.wasm"));
        let copy = out.join(format!("{stem}.wasm"));
        copy_if_changed(&built, &copy);
        constants.push_str(&format!(
            "/// The `{stem}` component.\npub const {name}: &str = {:?};\n",
            copy.display().to_string()
        ));
        all.push_str(&format!("    ({name:?}, {name}),\n"));
    }
    all.push_str("];\n");
    let generated = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("artifacts.rs");
    std::fs::write(generated, constants + &all).unwrap();
}

/// Fails early, with the fix, when the WebAssembly target is missing.
fn check_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8(sysroot.stdout).unwrap();
    let lib = Path::new(sysroot.trim()).join("lib/rustlib").join(TARGET);
    assert!(
        lib.exists(),
        "the {TARGET} target is not installed: run `rustup target add {TARGET}` (scripts/test does it)"
    );
}

/// Copies only when the content differs, so unchanged plugins keep their
/// modification time (and compiled-artifact cache entries stay valid).
fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        std::fs::write(to, new).unwrap();
    }
}
