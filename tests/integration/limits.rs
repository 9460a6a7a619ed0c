//! The sandbox's limits, each tested both ways: a plugin that breaks one
//! fails only the event it was given (and says which limit), the next batch
//! runs on a fresh instance, and a plugin within the limits is undisturbed.

use crate::common::{events, limits, plugin};
use ferry::event::{Payload, PluginError};
use ferry::plugin::{CallError, EventError, EventResult};
use ferry_plugin_artifacts::MISBEHAVE;
use std::time::Duration;

/// The `after` the misbehave plugin echoed, or the error.
fn echoed(result: &EventResult) -> Result<String, EventError> {
    let outputs = result.clone()?;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    match &outputs[0].payload {
        Payload::Record(record) => Ok(String::from_utf8(record.value.clone().unwrap()).unwrap()),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_plugin_hits_the_deadline_and_fails_only_its_event() {
    let plugin = plugin(MISBEHAVE, &[], limits(300, 64)).await.unwrap();
    let results = plugin.transform(events(&["a", "loop", "b"])).await;
    assert_eq!(echoed(&results[0]), Ok(r#"{"n":0}"#.into()));
    assert_eq!(
        results[1],
        Err(EventError::Crashed(CallError::Deadline(
            Duration::from_millis(300)
        )))
    );
    assert_eq!(echoed(&results[2]), Ok(r#"{"n":2}"#.into()));
    let message = results[1].clone().unwrap_err().to_string();
    assert!(message.contains("time limit of 300 ms"), "{message}");

    let next = plugin.transform(events(&["c"])).await;
    assert_eq!(echoed(&next[0]), Ok(r#"{"n":0}"#.into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_within_its_time_limit_is_not_interrupted() {
    let plugin = plugin(MISBEHAVE, &[], limits(300, 64)).await.unwrap();
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for _ in 0..5 {
        let results = plugin.transform(events(&keys)).await;
        assert!(results.iter().all(Result::is_ok));
    }
    // Instances are reused across batches: only the first was created.
    assert_eq!(plugin.instantiations(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hungry_plugin_hits_the_cap_and_fails_only_its_event() {
    let plugin = plugin(MISBEHAVE, &[], limits(5_000, 32)).await.unwrap();
    let results = plugin.transform(events(&["a", "hog", "b"])).await;
    assert!(echoed(&results[0]).is_ok());
    match &results[1] {
        Err(EventError::Crashed(CallError::Memory(message))) => {
            assert!(message.contains("memory cap of 32 MiB"), "{message}")
        }
        other => panic!("expected the memory cap, got {other:?}"),
    }
    assert!(echoed(&results[2]).is_ok());
    let created = plugin.instantiations();
    assert!(created >= 2, "the failed instance was replaced ({created})");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_within_its_memory_cap_is_not_disturbed() {
    let plugin = plugin(MISBEHAVE, &[], limits(5_000, 32)).await.unwrap();
    let results = plugin.transform(events(&["grow:8", "grow:16", "x"])).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(plugin.instantiations(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_plugin_traps_and_fails_only_its_event() {
    let plugin = plugin(MISBEHAVE, &[], limits(2_000, 64)).await.unwrap();
    let results = plugin.transform(events(&["a", "panic", "b"])).await;
    assert!(echoed(&results[0]).is_ok());
    match &results[1] {
        Err(EventError::Crashed(CallError::Trap(message))) => {
            // The guest's panic message (its stderr) explains the trap.
            assert!(message.contains("asked to panic at test:1"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(echoed(&results[2]).is_ok());
    let next = plugin.transform(events(&["c"])).await;
    assert!(echoed(&next[0]).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_errors_reach_the_host_as_the_plugin_said() {
    let plugin = plugin(MISBEHAVE, &[], limits(2_000, 64)).await.unwrap();
    let results = plugin.transform(events(&["retry", "fail", "skip"])).await;
    assert_eq!(
        results[0],
        Err(EventError::Plugin(PluginError::Retryable(
            "asked to retry".into()
        )))
    );
    assert!(results[0].clone().unwrap_err().is_retryable());
    assert_eq!(
        results[1],
        Err(EventError::Plugin(PluginError::Permanent(
            "asked to fail".into()
        )))
    );
    assert!(!results[1].clone().unwrap_err().is_retryable());
    assert_eq!(results[2], Ok(vec![]));
    // A typed error is not a trap: the instance lives on.
    assert_eq!(plugin.instantiations(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_error_refuses_the_plugin_with_its_message() {
    let error = plugin(MISBEHAVE, &[("fail_init", "true")], limits(2_000, 64))
        .await
        .err()
        .expect("init refuses");
    assert_eq!(
        error.to_string(),
        "the plugin refused its settings: fail_init is set"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_reach_init() {
    let plugin = plugin(MISBEHAVE, &[("tag", "v2")], limits(2_000, 64))
        .await
        .unwrap();
    let results = plugin.transform(events(&["a"])).await;
    let outputs = results[0].clone().unwrap();
    let Payload::Record(record) = &outputs[0].payload else {
        panic!("expected a record")
    };
    assert_eq!(record.headers[0].name, "tag");
    assert_eq!(record.headers[0].value, "v2");
}
