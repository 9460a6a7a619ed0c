//! Every component the build produces is exercised here: the plugins load
//! and implement the world, the example passes the shared test vectors, and
//! the wrong-world component is refused. The SDMX plugin is exercised in
//! `sdmx.rs`.

use crate::common::{ferry, limits, plugin, repo, run, stderr, stdout};
use ferry::plugin::{CacheOutcome, RuntimeOptions};
use ferry_plugin_artifacts::{ALL, KESSEL_OUTBOX_RUST, MISBEHAVE};

#[tokio::test(flavor = "multi_thread")]
async fn every_built_component_is_checked_against_the_world() {
    for (name, path) in ALL {
        let result = plugin(path, &[], limits(2_000, 64)).await;
        match *name {
            // The two versions are exercised by reload.rs.
            "KESSEL_OUTBOX_RUST" | "MISBEHAVE" | "SDMX_STRUCTURES" | "VERSION_A" | "VERSION_B" => {
                if let Err(error) = result {
                    panic!("{name} ({path}) is refused: {error}");
                }
            }
            "WRONG_WORLD" => {
                let error = result.err().expect("a command is not a plugin").to_string();
                assert!(
                    error.contains("does not implement the ferry:plugin/plugin@0.1.0 world")
                        && error.contains("ferry:plugin/mapper@0.1.0"),
                    "{error}"
                );
            }
            other => panic!("{other} is built but no test says what it must do: add it here"),
        }
    }
}

#[test]
fn the_rust_kessel_plugin_passes_the_shared_vectors() {
    let vectors = repo().join("tests/vectors/kessel-outbox");
    let output = run(ferry()
        .args(["plugin", "test", KESSEL_OUTBOX_RUST, "--input"])
        .arg(vectors.join("events.jsonl"))
        .arg("--expect")
        .arg(vectors.join("expected.jsonl")));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("ok: 14 events match"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output).lines().count(), 14);
}

#[test]
fn a_result_that_differs_from_the_vectors_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = repo().join("tests/vectors/kessel-outbox");
    let expected = std::fs::read_to_string(vectors.join("expected.jsonl")).unwrap();
    let wrong = expected.replacen(r#""resource_id":"123""#, r#""resource_id":"999""#, 1);
    let wrong_path = dir.path().join("expected.jsonl");
    std::fs::write(&wrong_path, wrong).unwrap();
    let output = run(ferry()
        .args(["plugin", "test", KESSEL_OUTBOX_RUST, "--input"])
        .arg(vectors.join("events.jsonl"))
        .arg("--expect")
        .arg(&wrong_path));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("the results differ"), "{err}");
    assert!(
        err.contains(r#"-{"position":"events.jsonl:3""#) && err.contains(r#""resource_id":"999""#),
        "{err}"
    );
    assert!(err.contains(r#"+{"position":"events.jsonl:3""#), "{err}");
}

#[test]
fn a_restart_does_not_recompile() {
    let dir = tempfile::tempdir().unwrap();
    let options = || RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeOptions::default()
    };
    let path = std::path::Path::new(MISBEHAVE);
    let first = ferry::plugin::Runtime::new(options())
        .unwrap()
        .load(path)
        .unwrap();
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);
    // A new runtime is a restarted process: the artifact comes from disk.
    let second = ferry::plugin::Runtime::new(options())
        .unwrap()
        .load(path)
        .unwrap();
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(first.digest(), second.digest());
    assert!(second.load_time() < first.load_time());
}
