//! What the server holds: resources, the log of applied calls, processed
//! transaction ids, injected faults, issued tokens and counters.

use crate::OAuthOptions;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One reporter's representation of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub resource_type: String,
    pub reporter_type: String,
    pub reporter_instance_id: String,
    pub local_resource_id: String,
    pub api_href: String,
    pub console_href: Option<String>,
    pub reporter_version: Option<String>,
    /// The latest `representations.common`, as JSON.
    pub common: Option<Value>,
    /// The latest `representations.reporter`, as JSON.
    pub reporter: Option<Value>,
    /// The transaction id of the latest report, if it had one.
    pub transaction_id: Option<String>,
    /// The latest report's `write_visibility` name.
    pub write_visibility: String,
    /// Soft-deleted (a later report brings it back).
    pub deleted: bool,
    /// Reports applied to it.
    pub reports: u64,
}

impl Resource {
    /// Type, reporter type, reporter instance and local id.
    pub fn key(&self) -> (String, String, String, String) {
        (
            self.resource_type.clone(),
            self.reporter_type.clone(),
            self.reporter_instance_id.clone(),
            self.local_resource_id.clone(),
        )
    }
}

/// One applied call.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `ReportResource` or `DeleteResource`.
    pub method: &'static str,
    /// `type` of a report, `reference.resource_type` of a delete.
    pub resource_type: String,
    /// `local_resource_id` of a report, `reference.resource_id` of a delete.
    pub local_resource_id: String,
    /// The report's transaction id.
    pub transaction_id: Option<String>,
    /// The request as received, in the public snake_case JSON shape
    /// (fields left at their default are left out).
    pub request: Value,
    /// When it was applied (for latency benchmarks).
    pub applied_at: std::time::SystemTime,
}

/// How a report whose `transaction_id` was already applied is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DuplicateAnswer {
    /// Success, nothing written (what Kessel does for a replay).
    #[default]
    Success,
    /// InvalidArgument with "NON-UNIQUE TRANSACTION ID" in the message.
    NonUniqueMessage,
    /// InvalidArgument with a generic message and the reason in a
    /// `google.rpc.ErrorInfo` detail.
    NonUniqueErrorInfo,
}

/// What the server counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls received (past auth).
    pub calls: u64,
    /// Reports and deletes applied.
    pub reports: u64,
    pub deletes: u64,
    /// Reports whose transaction id was already applied.
    pub duplicates: u64,
    /// Reports refused as concurrent duplicates (in flight at once).
    pub concurrent_duplicates: u64,
    /// Deletes of resources already deleted (success, nothing written).
    pub redundant_deletes: u64,
    /// Deletes answered NotFound.
    pub not_found: u64,
    /// Calls refused with InvalidArgument for breaking a rule.
    pub invalid: u64,
    /// Calls answered Unavailable by an injected fault.
    pub unavailable: u64,
    /// Calls refused with Unauthenticated.
    pub unauthenticated: u64,
    /// Tokens issued by the token endpoint.
    pub tokens_issued: u64,
    /// Token requests refused (bad credentials, bad grant).
    pub token_refusals: u64,
}

#[derive(Debug, Default)]
pub struct Faults {
    pub fail_next: u64,
    pub unavailable: bool,
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub struct State {
    pub resources: BTreeMap<(String, String, String, String), Resource>,
    pub log: Vec<LogEntry>,
    pub processed: HashSet<String>,
    pub in_flight: HashSet<String>,
    pub duplicate_answer: DuplicateAnswer,
    pub faults: Faults,
    /// Issued tokens and when they expire.
    pub tokens: HashMap<String, Instant>,
    pub counts: Counts,
}

/// The state and the fixed settings, shared by the servers and the handle.
pub struct Shared {
    state: Mutex<State>,
    pub oauth: Option<OAuthOptions>,
}

impl Shared {
    pub fn new(oauth: Option<OAuthOptions>) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            oauth,
        }
    }

    /// The state. A panic while it was held (a bug in a test) does not
    /// hide it from the rest of the test.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A `google.protobuf.Struct` as JSON; integral numbers become integers,
/// so a Struct compares equal to the JSON it was made from.
pub fn struct_to_json(value: &prost_types::Struct) -> Value {
    Value::Object(
        value
            .fields
            .iter()
            .map(|(name, value)| (name.clone(), value_to_json(value)))
            .collect(),
    )
}

fn value_to_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(inner)) => struct_to_json(inner),
    }
}
