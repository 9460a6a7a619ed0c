//! Change events and outputs.
//!
//! The types are the WIT records of `wit/plugin.wit` (generated once, in
//! [`crate::plugin::bindings`]): a source builds a [`ChangeEvent`] that is
//! lowered into the guest as it is, and the guest's [`Output`]s are what sinks
//! deliver. [`jsonl`] is their stable JSON Lines form.

pub mod jsonl;

use std::sync::Arc;

pub use crate::plugin::bindings::types::{
    ChangeEvent, Error as PluginError, Header, KesselDelete, KesselReport, Level, Operation,
    Output, Payload, Record,
};

impl Operation {
    /// The name used in JSON Lines and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::SnapshotRead => "snapshot_read",
            Operation::Message => "message",
        }
    }

    /// Parses a name written by [`Operation::as_str`].
    pub fn parse(name: &str) -> Option<Operation> {
        Some(match name {
            "create" => Operation::Create,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            "snapshot_read" => Operation::SnapshotRead,
            "message" => Operation::Message,
            _ => return None,
        })
    }
}

impl ChangeEvent {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

impl PluginError {
    /// Whether retrying the event may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PluginError::Retryable(_))
    }

    /// The plugin's message.
    pub fn message(&self) -> &str {
        match self {
            PluginError::Retryable(m) | PluginError::Permanent(m) => m,
        }
    }
}

impl Payload {
    /// The name of the payload kind, as in JSON Lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::KesselReport(_) => "kessel_report",
            Payload::KesselDelete(_) => "kessel_delete",
            Payload::Record(_) => "record",
        }
    }
}

/// A shared reference to one event of a batch: outputs keep their event
/// (for dead letters, routing and idempotency keys) without copying it.
#[derive(Clone)]
pub struct EventRef {
    batch: Arc<[ChangeEvent]>,
    index: usize,
}

impl EventRef {
    /// The `index`-th event of `batch`.
    pub fn new(batch: Arc<[ChangeEvent]>, index: usize) -> EventRef {
        assert!(index < batch.len(), "event index within its batch");
        EventRef { batch, index }
    }

    /// A reference to a lone event.
    pub fn single(event: ChangeEvent) -> EventRef {
        EventRef::new(Arc::from([event]), 0)
    }
}

impl std::ops::Deref for EventRef {
    type Target = ChangeEvent;

    fn deref(&self) -> &ChangeEvent {
        &self.batch[self.index]
    }
}

impl std::fmt::Debug for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}
