//! `ferry run` with the file source and the file sink: order kept, bad input
//! named by file and line, nothing after a failure delivered, nothing before
//! it lost.

use crate::common::{ferry, json_lines, pipeline_config, repo, run, stderr, stdout, write};
use ferry_plugin_artifacts::{KESSEL_OUTBOX_RUST, MISBEHAVE, WRONG_WORLD};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A config running `plugin` over `events` into `out`, plus `extra` TOML for
/// the pipeline table.
fn config(dir: &Path, plugin: &str, events: &Path, out: &Path, extra: &str) -> PathBuf {
    pipeline_config(dir, plugin, events, out, extra, "")
}

/// Events for the misbehave plugin in `dir/events.jsonl`.
fn events_file(dir: &Path, keys: &[&str]) -> PathBuf {
    write(dir, "events.jsonl", &event_lines(keys))
}

/// The `value` of each record line the sink wrote.
fn values(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    json_lines(&text)
        .iter()
        .map(|line| line["record"]["value"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_quickstart_maps_kessel_outbox_events_to_stdout() {
    let config = repo().join("examples/quickstart/ferry.toml");
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    assert!(output.status.success(), "{}", stderr(&output));
    let mut lines = json_lines(&stdout(&output));
    // Keys are delivered concurrently; within a key, in source order.
    assert_per_key_order(&lines);
    lines.sort_by_key(line_number);
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let kind = ["kessel_report", "kessel_delete"]
                .into_iter()
                .find(|kind| line.get(*kind).is_some())
                .unwrap();
            (line["key"].as_str().unwrap(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("123", "kessel_report"),
            ("h-1", "kessel_report"),
            ("123", "kessel_delete"),
            // Row-form outbox events are keyed by their aggregate id.
            ("h-2", "kessel_report"),
            ("h-2", "kessel_delete"),
            ("124", "kessel_report"),
        ]
    );
    let digest = format!(
        "sha256:{}",
        &ferry::plugin::Digest::of(&std::fs::read(KESSEL_OUTBOX_RUST).unwrap()).hex()[..16]
    );
    for line in &lines {
        assert_eq!(line["pipeline"], "quickstart");
        assert_eq!(line["plugin"], Value::String(digest.clone()));
    }
    assert_eq!(lines[0]["position"], "events.jsonl:1");
    assert_eq!(
        lines[0]["kessel_report"]["representations"]["metadata"]["local_resource_id"],
        "123"
    );
}

/// The line number in a file-sink line's `position` (`events.jsonl:12`).
fn line_number(line: &Value) -> u64 {
    let position = line["position"].as_str().unwrap();
    position.rsplit(':').next().unwrap().parse().unwrap()
}

/// Within each key, positions increase.
fn assert_per_key_order(lines: &[Value]) {
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for line in lines {
        let key = line["key"].as_str().unwrap_or_default().to_string();
        let number = line_number(line);
        if let Some(previous) = last.insert(key.clone(), number) {
            assert!(
                previous < number,
                "key {key}: line {number} delivered after line {previous}"
            );
        }
    }
}

/// Runs `count` events over 7 keys through the misbehave plugin in batches
/// of 7 on 3 instances, with `extra` TOML for the pipeline table; returns
/// the sink's lines.
fn run_seven_keys(count: usize, extra: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..count).map(|i| format!("k{}", i % 7)).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let events = events_file(dir.path(), &keys);
    let out = dir.path().join("out.jsonl");
    let extra = format!("batch_size = 7\n{extra}");
    let config = pipeline_config(
        dir.path(),
        MISBEHAVE,
        &events,
        &out,
        &extra,
        "instances = 3",
    );
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    assert!(output.status.success(), "{}", stderr(&output));
    json_lines(&std::fs::read_to_string(&out).unwrap())
}

#[test]
fn per_key_order_is_kept_across_concurrent_batches_and_keys() {
    let lines = run_seven_keys(1000, "");
    assert_eq!(lines.len(), 1000, "every event delivered once");
    assert_per_key_order(&lines);
}

#[test]
fn total_ordering_keeps_source_order_across_keys() {
    let lines = run_seven_keys(500, "ordering = \"total\"");
    let values: Vec<&str> = lines
        .iter()
        .map(|line| line["record"]["value"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..500).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(values, expected);
}

/// Runs the misbehave plugin over `events` (JSON Lines) into a file sink,
/// expecting the pipeline to halt: returns its stderr and what was
/// delivered.
fn run_until_halt(events: &str, extra: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let events = write(dir.path(), "events.jsonl", events);
    let out = dir.path().join("out.jsonl");
    let config = config(dir.path(), MISBEHAVE, &events, &out, extra);
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    (stderr(&output), values(&out))
}

/// One create event per key, `after` = `{"n": i}`.
fn event_lines(keys: &[&str]) -> String {
    keys.iter()
        .enumerate()
        .map(|(n, key)| {
            format!("{{\"op\":\"create\",\"key\":\"{key}\",\"after\":{{\"n\":{n}}}}}\n")
        })
        .collect()
}

#[test]
fn a_malformed_line_halts_after_everything_before_it_is_delivered() {
    let mut events = event_lines(&["a", "b"]);
    events.push_str("{\"op\":\"create\",\"key\":\"c\",\"after\":{\"n\":2}\n");
    events.push_str("{\"op\":\"create\",\"key\":\"d\",\"after\":{\"n\":3}}\n");
    let (err, delivered) = run_until_halt(&events, "");
    assert!(
        err.contains("halted at events.jsonl:3: not a change event"),
        "{err}"
    );
    assert_eq!(delivered, [r#"{"n":0}"#, r#"{"n":1}"#]);
}

#[test]
fn a_permanent_plugin_error_halts_at_its_event() {
    let (err, delivered) = run_until_halt(&event_lines(&["a", "b", "fail", "c"]), "");
    assert!(
        err.contains("halted at events.jsonl:3: plugin error: asked to fail"),
        "{err}"
    );
    assert_eq!(delivered, [r#"{"n":0}"#, r#"{"n":1}"#]);
}

#[test]
fn a_trapping_event_halts_the_pipeline_with_the_trap() {
    let (err, delivered) = run_until_halt(&event_lines(&["a", "panic", "c"]), "");
    assert!(
        err.contains("halted at events.jsonl:2: the plugin trapped"),
        "{err}"
    );
    assert!(err.contains("asked to panic"), "{err}");
    assert_eq!(delivered, [r#"{"n":0}"#]);
}

#[test]
fn retryable_errors_are_retried_then_follow_the_policy() {
    let retry = "retry = { initial_ms = 10, max_ms = 40, max_attempts = 4 }";
    let (err, delivered) = run_until_halt(&event_lines(&["a", "retry", "c"]), retry);
    assert_eq!(
        err.matches("The plugin asked to retry an event").count(),
        3,
        "{err}"
    );
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    // The retries held back only their own key.
    assert_eq!(delivered, [r#"{"n":0}"#, r#"{"n":2}"#]);
}

#[test]
fn a_halted_pipeline_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = events_file(dir.path(), &["a", "b", "c"]);
    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"op\":\"create\",\"key\":\"fail\"}\n",
    );
    let (good_out, bad_out) = (
        dir.path().join("good.jsonl"),
        dir.path().join("bad-out.jsonl"),
    );
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.bad]
            source = {{ kind = "file", path = "{}" }}
            sink = {{ kind = "file", path = "{}" }}
            plugin = {{ path = "{MISBEHAVE}" }}
            [pipelines.good]
            source = {{ kind = "file", path = "{}" }}
            sink = {{ kind = "file", path = "{}" }}
            plugin = {{ path = "{MISBEHAVE}" }}
            "#,
            bad.display(),
            bad_out.display(),
            good.display(),
            good_out.display()
        ),
    );
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("pipeline=bad"),
        "{}",
        stderr(&output)
    );
    assert_eq!(values(&good_out).len(), 3);
}

#[test]
fn events_can_come_from_stdin() {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = config(dir.path(), MISBEHAVE, Path::new("-"), &out, "");
    let mut child = ferry()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "{{\"op\":\"create\",\"key\":\"a\",\"after\":{{\"n\":0}}}}"
    )
    .unwrap();
    writeln!(
        stdin,
        "{{\"op\":\"create\",\"key\":\"b\",\"after\":{{\"n\":1}}}}"
    )
    .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines[1]["position"], "stdin:2");
    assert_eq!(values(&out), [r#"{"n":0}"#, r#"{"n":1}"#]);
}

#[test]
fn run_refuses_a_component_of_another_world_and_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let events = events_file(dir.path(), &["a"]);
    let out = dir.path().join("out.jsonl");
    let config = config(dir.path(), WRONG_WORLD, &events, &out, "");
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("does not implement the ferry:plugin/plugin@0.1.0 world")
            && err.contains("no exported instance named `ferry:plugin/mapper@0.1.0`"),
        "{err}"
    );
    assert!(values(&out).is_empty());
}
