//! {{name}}: a ferry plugin.
//!
//! ferry calls `init` once per instance with the pipeline's plugin settings,
//! then `transform` with batches of change events in source order. Return
//! exactly one result per event: its outputs (an empty list skips it) or an
//! error. The host does the rest: ordering per key, retries, delivery.
//!
//! This starter sends each change on as a Kafka-style record: the event's
//! key as the record key, its `after` image as the value, and a tombstone
//! for a delete. Replace `map` with your own mapping.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::ferry::plugin::mapper::Guest;
use ferry::plugin::types::{ChangeEvent, Error, Header, Operation, Output, Payload, Record};

struct Plugin;

impl Guest for Plugin {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        // Settings come from `[pipelines.<name>.plugin.settings]`; return an
        // error to refuse a configuration. This starter needs none.
        let _ = settings;
        Ok(())
    }

    fn transform(events: Vec<ChangeEvent>) -> Vec<Result<Vec<Output>, Error>> {
        events.into_iter().map(map).collect()
    }
}

/// Maps one event. A mapping must be a pure function of the event (and the
/// settings): the same event may be given again after a restart.
fn map(event: ChangeEvent) -> Result<Vec<Output>, Error> {
    let value = match (event.op, event.after) {
        // A delete becomes a tombstone: no value.
        (Operation::Delete, _) => None,
        (_, Some(after)) => Some(after.into_bytes()),
        // `permanent`: this event can never be mapped; the pipeline's error
        // policy decides (halt, dead-letter or park). Use `retryable` for a
        // passing condition the host should retry.
        (_, None) => {
            return Err(Error::Permanent(format!(
                "event {} has no after",
                event.position
            )));
        }
    };
    let record = Record {
        // `None`: the pipeline's topic (or routing template) decides.
        topic: None,
        key: event.key.map(String::into_bytes),
        value,
        headers: vec![Header {
            name: "op".to_string(),
            value: op_name(event.op).to_string(),
        }],
    };
    Ok(vec![Output {
        // `None`: keep the event's key as the unit of order.
        key: None,
        payload: Payload::Record(record),
    }])
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::SnapshotRead => "snapshot-read",
        Operation::Message => "message",
    }
}

export!(Plugin);
