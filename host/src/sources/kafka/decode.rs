//! Kafka records → change events, per the source's `format`:
//!
//! - `debezium`: a Debezium change event (`before`, `after`, `op`, `source`,
//!   `transaction`), with or without the JSON converter's
//!   `{"schema": …, "payload": …}` wrapper, in the value and the key;
//! - `outbox`: the output of Debezium's outbox EventRouter: the payload as the
//!   value (an object, or a JSON string holding it), the aggregate id as the
//!   key, `id`, `operation`, `version`… as headers — the same event the
//!   Postgres source's outbox mode makes of the row;
//! - `raw`: any record: the value as `after` (JSON as is, other text as a
//!   JSON string), the key as the key.
//!
//! Every format: Kafka headers become event headers, the record timestamp
//! the commit time (unless the envelope knows better), the topic the origin.
//! A record that cannot be decoded becomes [`SourceItem::Invalid`], naming
//! its position and what is wrong, and meets the pipeline's error policy.

use crate::event::{ChangeEvent, Header, Operation};
use crate::sources::{InvalidInput, SourceItem};
use serde::Deserialize;
use serde_json::Value;

/// `format = "debezium" | "outbox" | "raw"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Debezium,
    Outbox,
    Raw,
}

/// What to do with a tombstone (a record with a null value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tombstones {
    /// Skip it (acknowledged at once). Debezium writes one after each delete
    /// event, for log compaction: the delete event already said it.
    Skip,
    /// Deliver it as a `delete` event with the record's key and no images.
    Deliver,
}

impl Format {
    /// The tombstone handling when the config says none.
    pub fn default_tombstones(self) -> Tombstones {
        match self {
            Format::Debezium => Tombstones::Skip,
            Format::Outbox | Format::Raw => Tombstones::Deliver,
        }
    }
}

/// One Kafka record, borrowed from the consumer.
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl RawRecord<'_> {
    /// `topic:partition:offset`: unique and stable across replays (`:` is
    /// not allowed in topic names).
    pub fn position(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// How records of one source are decoded.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub format: Format,
    pub tombstones: Tombstones,
    /// The header (or, for Debezium, row column) holding the tenant.
    pub tenant: Option<String>,
}

impl Decoder {
    /// The record's item, or `None` when there is nothing to deliver (a
    /// skipped tombstone).
    pub fn decode(&self, record: &RawRecord<'_>) -> Option<SourceItem> {
        let position = record.position();
        match self.try_decode(record, &position) {
            Ok(Some(event)) => Some(SourceItem::Event(event)),
            Ok(None) => None,
            Err(error) => Some(SourceItem::Invalid(InvalidInput {
                raw: raw_text(record),
                error: format!("the record at {position} ({:?}): {error}", self.format),
                position,
            })),
        }
    }

    fn try_decode(
        &self,
        record: &RawRecord<'_>,
        position: &str,
    ) -> Result<Option<ChangeEvent>, String> {
        let mut headers = Vec::with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            let value = match value {
                None => String::new(),
                Some(bytes) => std::str::from_utf8(bytes)
                    .map_err(|_| format!("header `{name}` is not UTF-8"))?
                    .to_string(),
            };
            headers.push(Header {
                name: (*name).to_string(),
                value,
            });
        }
        let mut event = ChangeEvent {
            source: "kafka".into(),
            op: Operation::Message,
            key: None,
            before: None,
            after: None,
            headers,
            tenant: None,
            origin: Some(record.topic.to_string()),
            transaction_id: None,
            position: position.to_string(),
            commit_time: record.timestamp_ms.map(|ms| ms.saturating_mul(1000)),
        };
        let Some(value) = record.value else {
            if self.tombstones == Tombstones::Skip {
                return Ok(None);
            }
            event.op = Operation::Delete;
            event.key = self.key(record)?;
            event.headers.push(Header {
                name: "ferry.tombstone".into(),
                value: "true".into(),
            });
            self.set_tenant(&mut event, None);
            return Ok(Some(event));
        };
        match self.format {
            Format::Raw => {
                event.key = self.key(record)?;
                event.after = Some(text_as_json(value, "value")?);
                self.set_tenant(&mut event, None);
            }
            Format::Outbox => {
                event.key = self.key(record)?;
                event.after = Some(outbox_payload(value)?);
                if let Some(key) = &event.key
                    && event.header("aggregateid").is_none()
                {
                    event.headers.push(Header {
                        name: "aggregateid".into(),
                        value: key.clone(),
                    });
                }
                if event.header("aggregatetype").is_none()
                    && let Some(kind) = record.topic.strip_prefix("outbox.event.")
                {
                    event.headers.push(Header {
                        name: "aggregatetype".into(),
                        value: kind.to_string(),
                    });
                }
                self.set_tenant(&mut event, None);
            }
            Format::Debezium => {
                let envelope: Value = serde_json::from_slice(value)
                    .map_err(|error| format!("the value is not JSON: {error}"))?;
                let envelope = unwrap_schema(envelope);
                let Value::Object(mut envelope) = envelope else {
                    return Err("the value is not a Debezium change event (not an object)".into());
                };
                let op = match envelope.get("op").and_then(Value::as_str) {
                    Some("c") => Operation::Create,
                    Some("u") => Operation::Update,
                    Some("d") => Operation::Delete,
                    Some("r") => Operation::SnapshotRead,
                    Some(other) => {
                        return Err(format!(
                            "unsupported Debezium op {other:?} (expected c, u, d or r)"
                        ));
                    }
                    None => return Err("no `op`: not a Debezium change event".into()),
                };
                event.op = op;
                let image = |value: Option<Value>| value.filter(|v| !v.is_null());
                let before = image(envelope.remove("before"));
                let after = image(envelope.remove("after"));
                if op == Operation::Delete && before.is_none() {
                    return Err("a delete without `before`".into());
                }
                if op != Operation::Delete && after.is_none() {
                    return Err(format!("a {} without `after`", op.as_str()));
                }
                let source = envelope.remove("source").unwrap_or(Value::Null);
                if let Some(origin) = debezium_origin(&source) {
                    event.origin = Some(origin);
                }
                event.transaction_id = envelope
                    .get("transaction")
                    .and_then(|t| t.get("id"))
                    .and_then(scalar_text)
                    .or_else(|| source.get("txId").and_then(scalar_text));
                if let Some(us) = source.get("ts_us").and_then(Value::as_i64) {
                    event.commit_time = Some(us);
                } else if let Some(ms) = source.get("ts_ms").and_then(Value::as_i64) {
                    event.commit_time = Some(ms.saturating_mul(1000));
                }
                event.key = match record.key {
                    Some(_) => self.key(record)?,
                    None => None,
                };
                let row = after.as_ref().or(before.as_ref()).cloned();
                event.before = before.map(|v| v.to_string());
                event.after = after.map(|v| v.to_string());
                self.set_tenant(&mut event, row.as_ref());
            }
        }
        Ok(Some(event))
    }

    /// The record key as an ordering key. Debezium and outbox keys are JSON
    /// (possibly schema-wrapped): a string or number is taken as its text, an
    /// object of one field as that field's, an object of several as a JSON
    /// array of their texts. Other keys must be UTF-8.
    fn key(&self, record: &RawRecord<'_>) -> Result<Option<String>, String> {
        let Some(bytes) = record.key else {
            return Ok(None);
        };
        let text = std::str::from_utf8(bytes).map_err(|_| "the key is not UTF-8".to_string())?;
        if self.format == Format::Raw {
            return Ok(Some(text.to_string()));
        }
        let Ok(json) = serde_json::from_str::<Value>(text) else {
            // An EventRouter key through the string converter: plain text.
            return Ok(Some(text.to_string()));
        };
        Ok(Some(match unwrap_schema(json) {
            Value::Object(fields) if fields.len() == 1 => {
                let (_, value) = fields.into_iter().next().expect("one field");
                scalar_text(&value).unwrap_or_else(|| value.to_string())
            }
            Value::Object(fields) => {
                let texts: Vec<Value> = fields
                    .values()
                    .map(|v| Value::String(scalar_text(v).unwrap_or_else(|| v.to_string())))
                    .collect();
                Value::Array(texts).to_string()
            }
            other => scalar_text(&other).unwrap_or_else(|| other.to_string()),
        }))
    }

    /// The tenant: the configured header, else (Debezium) the row's column.
    fn set_tenant(&self, event: &mut ChangeEvent, row: Option<&Value>) {
        let Some(name) = &self.tenant else { return };
        event.tenant = event
            .header(name)
            .map(str::to_string)
            .or_else(|| row.and_then(|row| row.get(name)).and_then(scalar_text));
    }
}

/// The JSON converter's `{"schema": …, "payload": …}` wrapper, removed.
fn unwrap_schema(value: Value) -> Value {
    match value {
        Value::Object(mut fields)
            if fields.len() == 2
                && fields.contains_key("schema")
                && fields.contains_key("payload") =>
        {
            fields.remove("payload").expect("checked")
        }
        other => other,
    }
}

/// A string as itself, a number or boolean as its JSON text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `schema.table` (or `db.table`) from a Debezium `source` block.
fn debezium_origin(source: &Value) -> Option<String> {
    let table = source.get("table")?.as_str()?;
    let schema = source
        .get("schema")
        .and_then(Value::as_str)
        .or_else(|| source.get("db").and_then(Value::as_str));
    Some(match schema {
        Some(schema) => format!("{schema}.{table}"),
        None => table.to_string(),
    })
}

/// The outbox payload: the value unwrapped; a JSON string holding JSON (the
/// EventRouter without `expand.json.payload`) is that JSON.
fn outbox_payload(value: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_string())?;
    let json: Value =
        serde_json::from_str(text).map_err(|error| format!("the payload is not JSON: {error}"))?;
    match unwrap_schema(json) {
        Value::String(inner) => match serde_json::from_str::<serde::de::IgnoredAny>(&inner) {
            Ok(_) => Ok(inner),
            Err(_) => Ok(Value::String(inner).to_string()),
        },
        other => Ok(other.to_string()),
    }
}

/// A raw value as JSON text: JSON as is, other UTF-8 text as a JSON string.
fn text_as_json(bytes: &[u8], what: &str) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("the {what} is not UTF-8"))?;
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => Ok(text.to_string()),
        Err(_) => Ok(Value::String(text.to_string()).to_string()),
    }
}

/// The record as text, for dead letters: key and value, lossily.
fn raw_text(record: &RawRecord<'_>) -> String {
    let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
    serde_json::json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": text(record.key),
        "value": text(record.value),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> RawRecord<'a> {
        RawRecord {
            topic: "inventory.public.hosts",
            partition: 3,
            offset: 17,
            key: key.map(str::as_bytes),
            value: value.map(str::as_bytes),
            headers: vec![("trace", Some(b"abc".as_slice()))],
            timestamp_ms: Some(1_700_000_000_000),
        }
    }

    fn decoder(format: Format) -> Decoder {
        Decoder {
            format,
            tombstones: format.default_tombstones(),
            tenant: Some("org_id".into()),
        }
    }

    fn event(decoded: Option<SourceItem>) -> ChangeEvent {
        match decoded {
            Some(SourceItem::Event(event)) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn invalid(decoded: Option<SourceItem>) -> String {
        match decoded {
            Some(SourceItem::Invalid(invalid)) => invalid.error,
            other => panic!("not invalid: {other:?}"),
        }
    }

    const UPDATE: &str = r#"{"before":{"id":7,"name":"a","org_id":"o1"},"after":{"id":7,"name":"b","org_id":"o1"},
        "source":{"db":"inventory","schema":"public","table":"hosts","txId":771,"ts_ms":1700000000123},
        "op":"u","ts_ms":1700000000200}"#;

    #[test]
    fn debezium_with_and_without_the_schema_wrapper_decode_alike() {
        let bare =
            event(decoder(Format::Debezium).decode(&record(Some(r#"{"id":7}"#), Some(UPDATE))));
        let wrapped_value = format!(r#"{{"schema":{{"type":"struct"}},"payload":{UPDATE}}}"#);
        let wrapped_key = r#"{"schema":{"type":"struct"},"payload":{"id":7}}"#;
        let wrapped = event(
            decoder(Format::Debezium).decode(&record(Some(wrapped_key), Some(&wrapped_value))),
        );
        for event in [&bare, &wrapped] {
            assert_eq!(event.op, Operation::Update);
            assert_eq!(event.key.as_deref(), Some("7"));
            assert_eq!(event.origin.as_deref(), Some("public.hosts"));
            assert_eq!(event.transaction_id.as_deref(), Some("771"));
            assert_eq!(event.commit_time, Some(1_700_000_000_123_000));
            assert_eq!(event.tenant.as_deref(), Some("o1"));
            assert_eq!(event.position, "inventory.public.hosts:3:17");
            assert_eq!(event.header("trace"), Some("abc"));
            let after: Value = serde_json::from_str(event.after.as_deref().unwrap()).unwrap();
            assert_eq!(after["name"], "b");
            let before: Value = serde_json::from_str(event.before.as_deref().unwrap()).unwrap();
            assert_eq!(before["name"], "a");
        }
    }

    #[test]
    fn debezium_ops_map_and_tombstones_are_skipped_by_default() {
        let ops = [("c", Operation::Create), ("r", Operation::SnapshotRead)];
        for (op, expected) in ops {
            let value = format!(r#"{{"before":null,"after":{{"id":1}},"op":"{op}"}}"#);
            let decoded = decoder(Format::Debezium).decode(&record(None, Some(&value)));
            assert_eq!(event(decoded).op, expected);
        }
        let delete = r#"{"before":{"id":1},"after":null,"op":"d","transaction":{"id":"571:3"}}"#;
        let deleted =
            event(decoder(Format::Debezium).decode(&record(Some(r#"{"id":1}"#), Some(delete))));
        assert_eq!(deleted.op, Operation::Delete);
        assert_eq!(deleted.after, None);
        assert_eq!(deleted.transaction_id.as_deref(), Some("571:3"));
        assert!(
            decoder(Format::Debezium)
                .decode(&record(Some(r#"{"id":1}"#), None))
                .is_none()
        );
        let mut delivering = decoder(Format::Debezium);
        delivering.tombstones = Tombstones::Deliver;
        let tombstone = event(delivering.decode(&record(Some(r#"{"id":1}"#), None)));
        assert_eq!(tombstone.op, Operation::Delete);
        assert_eq!(tombstone.key.as_deref(), Some("1"));
        assert_eq!(tombstone.header("ferry.tombstone"), Some("true"));
    }

    #[test]
    fn composite_keys_are_arrays_of_texts() {
        let value = r#"{"after":{"a":1,"b":"x"},"op":"c"}"#;
        let decoded =
            decoder(Format::Debezium).decode(&record(Some(r#"{"a":1,"b":"x"}"#), Some(value)));
        assert_eq!(event(decoded).key.as_deref(), Some(r#"["1","x"]"#));
    }

    #[test]
    fn bad_debezium_records_name_their_position_and_problem() {
        let cases = [
            ("not json", "not JSON"),
            (r#"{"after":{"id":1}}"#, "no `op`"),
            (
                r#"{"after":{"id":1},"op":"x"}"#,
                "unsupported Debezium op \"x\"",
            ),
            (
                r#"{"before":null,"after":null,"op":"c"}"#,
                "a create without `after`",
            ),
            ("[1]", "not an object"),
        ];
        for (value, expected) in cases {
            let error = invalid(decoder(Format::Debezium).decode(&record(None, Some(value))));
            assert!(error.contains("inventory.public.hosts:3:17"), "{error}");
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn event_router_output_is_the_postgres_outbox_event() {
        let payload = r#"{"type":"host","reporter_type":"hbi"}"#;
        let mut router = record(Some("7f3a"), Some(payload));
        router.topic = "outbox.event.hbi.hosts";
        router.headers = vec![
            ("id", Some(b"e1".as_slice())),
            ("operation", Some(b"ReportResource".as_slice())),
            ("version", Some(b"v1beta2".as_slice())),
        ];
        let event = event(decoder(Format::Outbox).decode(&router));
        assert_eq!(event.op, Operation::Message);
        assert_eq!(event.key.as_deref(), Some("7f3a"));
        assert_eq!(event.after.as_deref(), Some(payload));
        assert_eq!(event.header("operation"), Some("ReportResource"));
        assert_eq!(event.header("version"), Some("v1beta2"));
        assert_eq!(event.header("aggregateid"), Some("7f3a"));
        assert_eq!(event.header("aggregatetype"), Some("hbi.hosts"));

        // The JSON converter: schema-wrapped key, payload as a JSON string.
        let wrapped = format!(
            r#"{{"schema":{{"type":"string"}},"payload":{}}}"#,
            Value::String(payload.into())
        );
        let key = r#"{"schema":{"type":"string"},"payload":"7f3a"}"#;
        let mut router = record(Some(key), Some(&wrapped));
        router.headers.clear();
        let event = self::event(decoder(Format::Outbox).decode(&router));
        assert_eq!(event.key.as_deref(), Some("7f3a"));
        assert_eq!(event.after.as_deref(), Some(payload));
    }

    #[test]
    fn raw_records_keep_json_and_quote_text() {
        let json = event(decoder(Format::Raw).decode(&record(Some("k"), Some(r#"{"a":1}"#))));
        assert_eq!(json.after.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(json.key.as_deref(), Some("k"));
        let text = event(decoder(Format::Raw).decode(&record(Some("k"), Some("hello"))));
        assert_eq!(text.after.as_deref(), Some(r#""hello""#));
        let tombstone = event(decoder(Format::Raw).decode(&record(Some("k"), None)));
        assert_eq!(tombstone.op, Operation::Delete);
        let mut binary = record(Some("k"), None);
        binary.value = Some(&[0xff, 0xfe]);
        assert!(invalid(decoder(Format::Raw).decode(&binary)).contains("not UTF-8"));
    }
}
