//! Test vectors: what a plugin must produce for given events.
//!
//! The result of mapping one event is one JSON line:
//! `{"position": …, "outputs": [ … ]}` or
//! `{"position": …, "error": {"kind": "permanent", "message": …}}`, where
//! `kind` is `retryable`, `permanent` or `crashed` (a trap or a limit). An
//! expected error without `message` matches any message, so vectors can be
//! shared by plugins in languages whose error texts differ.

use crate::event::jsonl::{self, OutputContext, OutputJson};
use crate::event::{ChangeEvent, PluginError};
use crate::plugin::{EventError, EventResult};
use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::path::Path;

/// The result line of one event.
pub fn result_line(event: &ChangeEvent, result: &EventResult) -> Value {
    match result {
        Ok(outputs) => {
            let outputs: Vec<Value> = outputs
                .iter()
                .map(|output| {
                    let json =
                        OutputJson::new(output, output.key.as_deref(), OutputContext::default());
                    serde_json::to_value(json).expect("outputs serialize to JSON")
                })
                .collect();
            json!({"position": event.position, "outputs": outputs})
        }
        Err(error) => {
            let (kind, message) = match error {
                EventError::Plugin(PluginError::Retryable(m)) => ("retryable", m.clone()),
                EventError::Plugin(PluginError::Permanent(m)) => ("permanent", m.clone()),
                EventError::Crashed(e) => ("crashed", e.to_string()),
            };
            json!({"position": event.position, "error": {"kind": kind, "message": message}})
        }
    }
}

/// Reads the events of a JSON Lines file; a line that is not an event is an
/// error naming the file and line.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<ChangeEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let prefix = crate::sources::file::position_prefix(path);
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let position = format!("{prefix}:{}", index + 1);
        let event = jsonl::decode_event(line, "file", || position.clone()).map_err(|e| {
            anyhow::anyhow!("{}:{}: not a change event: {e}", path.display(), index + 1)
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Reads expected result lines.
pub fn read_expected(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(value) => lines.push(value),
            Err(e) => bail!("{}:{}: not JSON: {e}", path.display(), index + 1),
        }
    }
    Ok(lines)
}

/// Compares results with expectations; `None` when they match, else a
/// unified diff (expected → actual), one compact JSON line per event.
pub fn compare(expected: &[Value], actual: &[Value]) -> Option<String> {
    let actual: Vec<Value> = actual
        .iter()
        .enumerate()
        .map(|(i, line)| match expected.get(i) {
            Some(expected) => without_unexpected_message(expected, line),
            None => line.clone(),
        })
        .collect();
    if expected == actual.as_slice() {
        return None;
    }
    let render =
        |lines: &[Value]| -> String { lines.iter().map(|line| format!("{line}\n")).collect() };
    let (expected, actual) = (render(expected), render(&actual));
    let diff = similar::TextDiff::from_lines(&expected, &actual);
    Some(
        diff.unified_diff()
            .context_radius(2)
            .header("expected", "actual")
            .to_string(),
    )
}

/// `actual` without its error message when `expected` has an error without
/// one.
fn without_unexpected_message(expected: &Value, actual: &Value) -> Value {
    let expects_message = expected
        .pointer("/error")
        .is_some_and(|error| error.get("message").is_some());
    let mut actual = actual.clone();
    if expected.get("error").is_some()
        && !expects_message
        && let Some(error) = actual.get_mut("error").and_then(Value::as_object_mut)
    {
        error.remove("message");
    }
    actual
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_without_message_matches_any_message() {
        let expected = [json!({"position": "a:1", "error": {"kind": "permanent"}})];
        let actual =
            [json!({"position": "a:1", "error": {"kind": "permanent", "message": "boom"}})];
        assert_eq!(compare(&expected, &actual), None);
    }

    #[test]
    fn a_difference_shows_as_a_diff() {
        let expected = [
            json!({"position": "a:1", "outputs": []}),
            json!({"position": "a:2", "error": {"kind": "permanent", "message": "x"}}),
        ];
        let actual = [
            json!({"position": "a:1", "outputs": []}),
            json!({"position": "a:2", "error": {"kind": "permanent", "message": "y"}}),
        ];
        let diff = compare(&expected, &actual).unwrap();
        assert!(
            diff.contains(r#"-{"position":"a:2","error":{"kind":"permanent","message":"x"}}"#),
            "{diff}"
        );
        assert!(
            diff.contains(r#"+{"position":"a:2","error":{"kind":"permanent","message":"y"}}"#),
            "{diff}"
        );
    }

    #[test]
    fn missing_and_extra_lines_do_not_match() {
        let one = [json!({"position": "a:1", "outputs": []})];
        assert!(compare(&one, &[]).is_some());
        assert!(compare(&[], &one).is_some());
    }
}
