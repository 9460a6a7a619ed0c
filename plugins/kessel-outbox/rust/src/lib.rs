//! Maps Kessel outbox events to Kessel Inventory requests.
//!
//! The outbox table of Kessel's "Report resources" guide holds
//! `id, aggregatetype, aggregateid, version, operation, payload`, where
//! `operation` names the API method (`ReportResource` or `DeleteResource`) and
//! `payload` is that method's request body (snake_case JSON). This plugin
//! accepts the outbox in both shapes a ferry source produces:
//!
//! - **outbox events** (Postgres `outbox` mode, Debezium's EventRouter on
//!   Kafka): the payload in `after`, `operation` and `version` as headers, the
//!   aggregate id as the event key;
//! - **outbox rows** (row CDC of the outbox table, logical messages carrying
//!   the whole row): the row as a JSON object in `after`. The output is then
//!   keyed by the row's `aggregateid`, so per-resource order holds.
//!
//! Deleted outbox rows (the guide's pruning in the same transaction) map to
//! nothing. The request's `transaction_id` is left to the host, which derives
//! it from the event position when the payload has none.
//!
//! Settings: `version` (default `v1beta2`): the outbox `version` this plugin
//! accepts; an event carrying another version is a permanent error.

use ferry_plugin_sdk::{ChangeEvent, Error, Operation, Output, Plugin, Settings, log};
use serde_json::Value;

/// The plugin: one per instance.
pub struct KesselOutbox {
    version: String,
}

/// A Kessel API method named by an outbox `operation`.
enum Method {
    Report,
    Delete,
}

impl Method {
    fn parse(operation: &str) -> Result<Method, Error> {
        match operation {
            "ReportResource" => Ok(Method::Report),
            "DeleteResource" => Ok(Method::Delete),
            other => Err(Error::permanent(format!(
                "unknown outbox operation {other:?}: expected ReportResource or DeleteResource"
            ))),
        }
    }

    fn output(self, request: String) -> Output {
        match self {
            Method::Report => Output::kessel_report(request),
            Method::Delete => Output::kessel_delete(request),
        }
    }
}

impl Plugin for KesselOutbox {
    fn new(settings: &Settings) -> Result<Self, String> {
        if let Some((name, _)) = settings.iter().find(|(name, _)| *name != "version") {
            return Err(format!(
                "unknown setting `{name}`: this plugin only knows `version`"
            ));
        }
        Ok(KesselOutbox {
            version: settings.get_or("version", "v1beta2").to_string(),
        })
    }

    fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error> {
        match event.op {
            // Pruning: the row was inserted and deleted; the insert carried
            // the event.
            Operation::Delete => Ok(Vec::new()),
            Operation::Update => {
                log::warn(&format!(
                    "outbox row at {} was updated; outbox rows are append-only, so the update is not sent",
                    event.position
                ));
                Ok(Vec::new())
            }
            Operation::Create | Operation::SnapshotRead | Operation::Message => {
                match event.header("operation").or_else(|| event.header("type")) {
                    Some(operation) => self.map_outbox_event(operation, &event),
                    None => self.map_outbox_row(&event),
                }
            }
        }
    }
}

impl KesselOutbox {
    /// An outbox event: headers name the operation, `after` is the payload.
    fn map_outbox_event(&self, operation: &str, event: &ChangeEvent) -> Result<Vec<Output>, Error> {
        let method = Method::parse(operation)?;
        self.check_version(event.header("version"))?;
        let payload = event
            .after
            .as_deref()
            .ok_or_else(|| Error::permanent("outbox event has no payload"))?;
        check_request_object(payload)?;
        Ok(vec![method.output(payload.to_string())])
    }

    /// A whole outbox row in `after`.
    fn map_outbox_row(&self, event: &ChangeEvent) -> Result<Vec<Output>, Error> {
        let after = event.after.as_deref().ok_or_else(|| {
            Error::permanent("event is not an outbox event: no `operation` header and no row")
        })?;
        let row: Value = serde_json::from_str(after)
            .map_err(|e| Error::permanent(format!("outbox row is not JSON: {e}")))?;
        let field = |name: &str| row.get(name).filter(|v| !v.is_null());
        let operation = field("operation")
            .or_else(|| field("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::permanent("event is not an outbox event: no `operation` header or column")
            })?;
        let method = Method::parse(operation)?;
        self.check_version(field("version").and_then(Value::as_str))?;
        let aggregate_id = match field("aggregateid") {
            Some(Value::String(id)) => id.clone(),
            Some(id @ Value::Number(_)) => id.to_string(),
            _ => return Err(Error::permanent("outbox row has no `aggregateid`")),
        };
        let request = match field("payload") {
            // A `text` payload column holds the request as a JSON string.
            Some(Value::String(text)) => {
                check_request_object(text)?;
                text.clone()
            }
            Some(object @ Value::Object(_)) => object.to_string(),
            Some(_) => {
                return Err(Error::permanent(
                    "outbox payload is not a JSON object (the request body)",
                ));
            }
            None => return Err(Error::permanent("outbox row has no payload")),
        };
        Ok(vec![method.output(request).with_key(aggregate_id)])
    }

    fn check_version(&self, version: Option<&str>) -> Result<(), Error> {
        match version {
            Some(v) if v != self.version => Err(Error::permanent(format!(
                "unsupported outbox version {v:?}: this pipeline maps {:?}",
                self.version
            ))),
            _ => Ok(()),
        }
    }
}

/// A request body must be a JSON object; its fields are checked by the sink.
fn check_request_object(text: &str) -> Result<(), Error> {
    if !text.trim_start().starts_with('{') {
        return Err(Error::permanent(
            "outbox payload is not a JSON object (the request body)",
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| Error::permanent(format!("outbox payload is not valid JSON: {e}")))
}

ferry_plugin_sdk::export_plugin!(KesselOutbox);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::{Header, Payload};

    fn event(op: Operation, headers: &[(&str, &str)], after: Option<&str>) -> ChangeEvent {
        ChangeEvent {
            source: "test".into(),
            op,
            key: Some("123".into()),
            before: None,
            after: after.map(str::to_string),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            tenant: None,
            origin: Some("public.outbox".into()),
            transaction_id: None,
            position: "test:1".into(),
            commit_time: None,
        }
    }

    fn plugin() -> KesselOutbox {
        KesselOutbox::new(&Settings::default()).unwrap()
    }

    #[test]
    fn outbox_event_report_passes_the_payload_through() {
        let payload = r#"{"type":"customer","reporter_type":"my-reporter"}"#;
        let outputs = plugin()
            .map(event(
                Operation::Message,
                &[("operation", "ReportResource"), ("version", "v1beta2")],
                Some(payload),
            ))
            .unwrap();
        assert_eq!(outputs.len(), 1);
        assert!(outputs[0].key.is_none());
        match &outputs[0].payload {
            Payload::KesselReport(report) => assert_eq!(report.request, payload),
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn outbox_row_is_keyed_by_aggregate_id() {
        let row = r#"{"id":"456","aggregatetype":"customer","aggregateid":"123","version":"v1beta2","operation":"DeleteResource","payload":{"reference":{"resource_type":"customer","resource_id":"123"}}}"#;
        let outputs = plugin()
            .map(event(Operation::Create, &[], Some(row)))
            .unwrap();
        assert_eq!(outputs[0].key.as_deref(), Some("123"));
        assert!(matches!(outputs[0].payload, Payload::KesselDelete(_)));
    }

    #[test]
    fn pruned_rows_map_to_nothing() {
        let outputs = plugin().map(event(Operation::Delete, &[], None)).unwrap();
        assert!(outputs.is_empty());
    }

    #[test]
    fn bad_events_are_permanent_errors() {
        let cases = [
            event(
                Operation::Message,
                &[("operation", "Frobnicate")],
                Some("{}"),
            ),
            event(
                Operation::Message,
                &[("operation", "ReportResource")],
                Some("[1]"),
            ),
            event(
                Operation::Message,
                &[("operation", "ReportResource")],
                Some("{oops"),
            ),
            event(
                Operation::Message,
                &[("operation", "ReportResource"), ("version", "v1")],
                Some("{}"),
            ),
            event(Operation::Create, &[], Some(r#"{"aggregateid":"1"}"#)),
        ];
        for case in cases {
            let position = case.after.clone();
            match plugin().map(case) {
                Err(Error::Permanent(_)) => {}
                other => panic!("{position:?}: expected a permanent error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_settings_are_refused() {
        let settings = Settings::new(vec![("verison".into(), "v1".into())]);
        let error = KesselOutbox::new(&settings).err().unwrap();
        assert!(error.contains("verison"), "{error}");
    }
}
