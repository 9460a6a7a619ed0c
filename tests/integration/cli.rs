//! `ferry plugin check`/`test` and `ferry config check` as a user runs them.

use crate::common::{ferry, repo, run, stderr, stdout, write};
use ferry_plugin_artifacts::{KESSEL_OUTBOX_RUST, WRONG_WORLD};
use sha2::{Digest, Sha256};

#[test]
fn check_prints_digest_exports_and_imports() {
    let output = run(ferry().args(["plugin", "check", KESSEL_OUTBOX_RUST]));
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    let digest: String = Sha256::digest(std::fs::read(KESSEL_OUTBOX_RUST).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out.contains(&format!("digest:  sha256:{digest}")), "{out}");
    assert!(
        out.contains("implements ferry:plugin/plugin@0.1.0"),
        "{out}"
    );
    assert!(
        out.contains("  ferry:plugin/mapper@0.1.0.transform\n"),
        "{out}"
    );
    assert!(out.contains("  ferry:plugin/mapper@0.1.0.init\n"), "{out}");
    assert!(out.contains("  ferry:plugin/host@0.1.0\n"), "{out}");
}

#[test]
fn check_refuses_what_is_not_a_plugin_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.wasm", "hello");
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (text.display().to_string(), "is not a WebAssembly file"),
        (
            core.display().to_string(),
            "is a core WebAssembly module, not a component",
        ),
        (
            WRONG_WORLD.to_string(),
            "does not implement the ferry:plugin/plugin@0.1.0 world",
        ),
        (
            dir.path().join("missing.wasm").display().to_string(),
            "cannot read plugin",
        ),
    ];
    for (path, needle) in cases {
        let output = run(ferry().args(["plugin", "check", &path]));
        assert_eq!(output.status.code(), Some(1), "{path}");
        let err = stderr(&output);
        assert!(err.contains(needle) && err.contains(&path), "{path}: {err}");
    }
}

#[test]
fn test_names_the_line_of_a_malformed_event() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "events.jsonl",
        "{\"op\":\"create\",\"key\":\"a\",\"after\":{}}\n{\"op\":\"create\",\"after\":{\n",
    );
    let output = run(ferry()
        .args(["plugin", "test", KESSEL_OUTBOX_RUST, "--input"])
        .arg(&input));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("{}:2: not a change event", input.display())),
        "{err}"
    );
}

#[test]
fn config_check_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ferry.toml",
        r#"
        [pipelines.one]
        source = { kind = "file", path = "missing.jsonl" }
        sink = { kind = "stdout" }
        plugin = { path = "missing.wasm", timeout_ms = 0 }
        "#,
    );
    let output = run(ferry().args(["config", "check", "--config"]).arg(&config));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    for needle in [
        "has 3 problems",
        "pipelines.one.plugin.path: no plugin file",
        "pipelines.one.plugin.timeout_ms: must be at least 1",
        "pipelines.one.source.path: no file at",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }

    let quickstart = repo().join("examples/quickstart/ferry.toml");
    let output = run(ferry()
        .args(["config", "check", "--config"])
        .arg(&quickstart));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("is valid: 1 pipeline (quickstart)"));
}

/// The container example takes its addresses from the environment, and
/// the plugin path from an override; without them, each missing variable
/// is one problem at its key.
#[test]
fn config_check_applies_the_environment() {
    let example = repo().join("examples/container/ferry.toml");
    let output = run(ferry().args(["config", "check", "--config"]).arg(&example));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    for needle in [
        "has 4 problems",
        "pipelines.inventory.source.connection: the environment variable INVENTORY_DATABASE is not set",
        "pipelines.inventory.sink.endpoint: the environment variable KESSEL_ENDPOINT is not set",
        "pipelines.inventory.dead_letter.bootstrap_servers: the environment variable KAFKA_BOOTSTRAP_SERVERS is not set",
        "pipelines.inventory.plugin.path: no plugin file at /plugins/kessel_outbox_plugin.wasm",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }

    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host=db user=ferry password=s3cret\n").unwrap();
    let output = run(ferry()
        .args(["config", "check", "--config"])
        .arg(&example)
        .env(
            "FERRY__PIPELINES__INVENTORY__PLUGIN__PATH",
            KESSEL_OUTBOX_RUST,
        )
        .env(
            "FERRY__PIPELINES__INVENTORY__SOURCE__CONNECTION",
            format!("${{file:{}}}", secret.path().display()),
        )
        .env("KESSEL_ENDPOINT", "http://kessel:9000")
        .env("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("is valid: 1 pipeline (inventory)"));
    assert!(!stdout(&output).contains("s3cret") && !stderr(&output).contains("s3cret"));
}
