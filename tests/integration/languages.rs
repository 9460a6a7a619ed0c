//! Plugins in other languages: each example is built by its own script (with
//! the toolchain `scripts/setup` installs) and must pass the shared vectors;
//! each `ferry plugin new` scaffold must build and pass its own vectors
//! unchanged. A missing toolchain fails the test with the build's message.

use crate::common::{ferry, repo, run, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `plugins/kessel-outbox/<lang>` with its `build` script into the
/// target directory and returns the component's path.
fn build_kessel_outbox(lang: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("languages")
        .join(format!("kessel_outbox_{lang}.wasm"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let script = repo()
        .join("plugins/kessel-outbox")
        .join(lang)
        .join("build");
    let output = run(Command::new(&script).arg(&out));
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        stdout(&output),
        stderr(&output)
    );
    assert!(
        out.exists(),
        "{} wrote no {}",
        script.display(),
        out.display()
    );
    out
}

/// `ferry plugin test` of a component against the Kessel outbox vectors.
fn passes_kessel_vectors(component: &Path) {
    let vectors = repo().join("tests/vectors/kessel-outbox");
    let output = run(ferry()
        .args(["plugin", "test"])
        .arg(component)
        .arg("--input")
        .arg(vectors.join("events.jsonl"))
        .arg("--expect")
        .arg(vectors.join("expected.jsonl")));
    assert!(
        output.status.success(),
        "{} does not pass the vectors:\n{}",
        component.display(),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("ok: 14 events match"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_javascript_kessel_plugin_passes_the_shared_vectors() {
    passes_kessel_vectors(&build_kessel_outbox("js"));
}

#[test]
fn the_python_kessel_plugin_passes_the_shared_vectors() {
    passes_kessel_vectors(&build_kessel_outbox("python"));
}

#[test]
fn the_c_kessel_plugin_passes_the_shared_vectors() {
    passes_kessel_vectors(&build_kessel_outbox("c"));
}

/// The C example's JSON reader, natively, under the address and undefined
/// behaviour sanitizers: it parses untrusted payloads with bounds checks of
/// its own.
#[test]
fn the_c_json_reader_passes_its_tests_under_sanitizers() {
    let dir = repo().join("plugins/kessel-outbox/c");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("json_test");
    let output = run(Command::new("cc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsanitize=address,undefined",
        ])
        .arg(dir.join("json_test.c"))
        .arg(dir.join("json.c"))
        .arg("-o")
        .arg(&binary));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(&mut Command::new(&binary));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
}

/// `ferry plugin new --lang <lang>` into a fresh directory, then the
/// scaffold's own `test` script, unchanged, with this build of ferry.
fn scaffold_builds_and_passes(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join(format!("my-{lang}-plugin"));
    let output = run(ferry()
        .args(["plugin", "new", "--lang", lang])
        .arg(&project));
    assert!(output.status.success(), "{}", stderr(&output));
    for file in ["README.md", "build", "test", "wit/plugin.wit"] {
        assert!(project.join(file).exists(), "the scaffold has no {file}");
    }
    let output = run(Command::new(project.join("test"))
        .current_dir(&project)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .env("FERRY_CACHE_DIR", crate::common::cache_dir()));
    assert!(
        output.status.success(),
        "the {lang} scaffold's test failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("ok: 6 events match"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_rust_scaffold_builds_and_passes_its_vectors() {
    scaffold_builds_and_passes("rust");
}

#[test]
fn the_javascript_scaffold_builds_and_passes_its_vectors() {
    scaffold_builds_and_passes("js");
}

#[test]
fn the_python_scaffold_builds_and_passes_its_vectors() {
    scaffold_builds_and_passes("python");
}

#[test]
fn the_c_scaffold_builds_and_passes_its_vectors() {
    scaffold_builds_and_passes("c");
}
