//! The JSON Lines form of change events and outputs (see `docs/events.md`).
//!
//! This format is a stable contract: the file source reads it, the file sink
//! and `ferry plugin test` write it, and dead letters carry it.

use super::{ChangeEvent, Header, Operation, Output, Payload, Record};
use base64::Engine as _;
use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Why a line is not a change event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// A change event as written in JSON Lines. `before`/`after` stay raw JSON
/// text: they are handed to the plugin as text, so they are never re-encoded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine<'a> {
    #[serde(default)]
    source: Option<String>,
    op: String,
    #[serde(default, deserialize_with = "deserialize_key")]
    key: Option<String>,
    #[serde(default, borrow)]
    before: Option<&'a RawValue>,
    #[serde(default, borrow)]
    after: Option<&'a RawValue>,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    position: Option<String>,
    #[serde(default)]
    commit_time: Option<String>,
}

/// Keys are text; a number is accepted and kept as its JSON text.
fn deserialize_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(n @ Value::Number(_)) => Ok(Some(n.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "`key` must be a string or a number, not {other}"
        ))),
    }
}

/// Decodes one line. `position` is used when the line has none (the file
/// source passes `file:line`); `source` names the source kind.
pub fn decode_event(
    line: &str,
    source: &str,
    position: impl FnOnce() -> String,
) -> Result<ChangeEvent, DecodeError> {
    let line: EventLine<'_> = serde_json::from_str(line).map_err(|e| DecodeError(e.to_string()))?;
    let op = Operation::parse(&line.op).ok_or_else(|| {
        DecodeError(format!(
            "unknown op {:?}: expected create, update, delete, snapshot_read or message",
            line.op
        ))
    })?;
    let commit_time = line
        .commit_time
        .map(|text| {
            text.parse::<jiff::Timestamp>()
                .map(|t| t.as_microsecond())
                .map_err(|e| DecodeError(format!("`commit_time` {text:?} is not RFC 3339: {e}")))
        })
        .transpose()?;
    Ok(ChangeEvent {
        source: line.source.unwrap_or_else(|| source.to_string()),
        op,
        key: line.key,
        before: json_text(line.before),
        after: json_text(line.after),
        headers: decode_headers(line.headers)?,
        tenant: line.tenant,
        origin: line.origin,
        transaction_id: line.transaction_id,
        position: line.position.unwrap_or_else(position),
        commit_time,
    })
}

/// `null` is no image at all.
fn json_text(raw: Option<&RawValue>) -> Option<String> {
    raw.map(RawValue::get)
        .filter(|text| *text != "null")
        .map(str::to_string)
}

fn decode_headers(headers: Option<Map<String, Value>>) -> Result<Vec<Header>, DecodeError> {
    let mut decoded = Vec::new();
    for (name, value) in headers.into_iter().flatten() {
        let mut push = |value: Value| match value {
            Value::String(value) => {
                decoded.push(Header {
                    name: name.clone(),
                    value,
                });
                Ok(())
            }
            other => Err(DecodeError(format!(
                "header `{name}` must be a string or a list of strings, not {other}"
            ))),
        };
        match value {
            Value::Array(values) => values.into_iter().try_for_each(&mut push)?,
            value => push(value)?,
        }
    }
    Ok(decoded)
}

/// Encodes an event as one line (without the newline).
pub fn encode_event(event: &ChangeEvent) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        source: &'a str,
        op: &'static str,
        key: &'a Option<String>,
        before: Option<JsonOrText<'a>>,
        after: Option<JsonOrText<'a>>,
        headers: Headers<'a>,
        tenant: &'a Option<String>,
        origin: &'a Option<String>,
        transaction_id: &'a Option<String>,
        position: &'a str,
        commit_time: Option<String>,
    }
    let line = Line {
        source: &event.source,
        op: event.op.as_str(),
        key: &event.key,
        before: event.before.as_deref().map(JsonOrText::new),
        after: event.after.as_deref().map(JsonOrText::new),
        headers: Headers(&event.headers),
        tenant: &event.tenant,
        origin: &event.origin,
        transaction_id: &event.transaction_id,
        position: &event.position,
        commit_time: event.commit_time.map(format_micros),
    };
    serde_json::to_string(&line).expect("events serialize to JSON")
}

/// RFC 3339 text of a time in microseconds since the Unix epoch.
pub fn format_micros(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| micros.to_string())
}

/// Where an output came from, written beside it by the file sink.
#[derive(Serialize, Default)]
pub struct OutputContext<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<&'a str>,
    /// The plugin version that produced the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<&'a str>,
}

/// An output as JSON: `{"key": …, "kessel_report": {…}}`, with `context`
/// fields first when given.
#[derive(Serialize)]
pub struct OutputJson<'a> {
    #[serde(flatten)]
    context: OutputContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(flatten)]
    payload: PayloadJson<'a>,
}

impl<'a> OutputJson<'a> {
    /// Wraps `output`; `key` is the output's effective ordering key.
    pub fn new(output: &'a Output, key: Option<&'a str>, context: OutputContext<'a>) -> Self {
        let payload = match &output.payload {
            Payload::KesselReport(r) => PayloadJson::KesselReport(JsonOrText::new(&r.request)),
            Payload::KesselDelete(d) => PayloadJson::KesselDelete(JsonOrText::new(&d.request)),
            Payload::Record(r) => PayloadJson::Record(RecordJson::new(r)),
        };
        OutputJson {
            context,
            key,
            payload,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum PayloadJson<'a> {
    KesselReport(JsonOrText<'a>),
    KesselDelete(JsonOrText<'a>),
    Record(RecordJson<'a>),
}

#[derive(Serialize)]
struct RecordJson<'a> {
    topic: &'a Option<String>,
    key: Option<BytesJson<'a>>,
    value: Option<BytesJson<'a>>,
    headers: Headers<'a>,
}

impl<'a> RecordJson<'a> {
    fn new(record: &'a Record) -> Self {
        RecordJson {
            topic: &record.topic,
            key: record.key.as_deref().map(BytesJson),
            value: record.value.as_deref().map(BytesJson),
            headers: Headers(&record.headers),
        }
    }
}

/// Text that should be JSON: embedded as JSON when it is, as a string when a
/// plugin produced something else (the sink will refuse it with a message).
#[derive(Serialize)]
#[serde(untagged)]
enum JsonOrText<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

impl<'a> JsonOrText<'a> {
    fn new(text: &'a str) -> Self {
        serde_json::from_str(text)
            .map(JsonOrText::Json)
            .unwrap_or(JsonOrText::Text(text))
    }
}

/// Bytes: a string when they are UTF-8, else `{"base64": "…"}`.
struct BytesJson<'a>(&'a [u8]);

impl Serialize for BytesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(self.0),
                )?;
                map.end()
            }
        }
    }
}

/// Headers as an object; a name that repeats gets a list of its values.
struct Headers<'a>(&'a [Header]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut names: Vec<&str> = Vec::with_capacity(self.0.len());
        for header in self.0 {
            if !names.contains(&header.name.as_str()) {
                names.push(&header.name);
            }
        }
        let mut map = s.serialize_map(Some(names.len()))?;
        for name in names {
            let values: Vec<&str> = self
                .0
                .iter()
                .filter(|h| h.name == name)
                .map(|h| h.value.as_str())
                .collect();
            match values.as_slice() {
                [one] => map.serialize_entry(name, one)?,
                many => map.serialize_entry(name, many)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_field() {
        let line = r#"{"source":"postgres","op":"update","key":"42","before":{"a":1},"after":{"a":2, "b":[1,2]},"headers":{"id":"7","multi":["x","y"]},"tenant":"acme","origin":"public.t","transaction_id":"744","position":"0/16B3748:1","commit_time":"2026-11-22T10:00:00.5Z"}"#;
        let event = decode_event(line, "file", || unreachable!()).unwrap();
        assert_eq!(event.source, "postgres");
        assert_eq!(event.op, Operation::Update);
        assert_eq!(event.key.as_deref(), Some("42"));
        assert_eq!(event.before.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(event.after.as_deref(), Some(r#"{"a":2, "b":[1,2]}"#));
        let headers: Vec<(&str, &str)> = event
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(headers, [("id", "7"), ("multi", "x"), ("multi", "y")]);
        assert_eq!(event.commit_time, Some(1_795_341_600_500_000));
        assert_eq!(event.position, "0/16B3748:1");
    }

    #[test]
    fn defaults_fill_what_a_line_leaves_out() {
        let event = decode_event(
            r#"{"op":"message","after":"plain text","key":7}"#,
            "file",
            || "events.jsonl:3".into(),
        )
        .unwrap();
        assert_eq!(event.source, "file");
        assert_eq!(event.key.as_deref(), Some("7"));
        assert_eq!(event.after.as_deref(), Some(r#""plain text""#));
        assert_eq!(event.before, None);
        assert_eq!(event.position, "events.jsonl:3");
    }

    #[test]
    fn round_trips_through_encode() {
        let line = r#"{"source":"file","op":"delete","key":"k","before":{"id":1},"after":null,"headers":{"h":["1","2"]},"tenant":null,"origin":"t","transaction_id":null,"position":"p","commit_time":"2026-11-22T10:00:00.000001Z"}"#;
        let event = decode_event(line, "file", || unreachable!()).unwrap();
        let again = decode_event(&encode_event(&event), "file", || unreachable!()).unwrap();
        assert_eq!(event, again);
    }

    #[test]
    fn refuses_bad_lines_with_the_reason() {
        let cases = [
            (r#"{"op":"create","aftre":{}}"#, "aftre"),
            (r#"{"op":"upsert"}"#, "upsert"),
            (r#"{"after":{}}"#, "op"),
            (r#"{"op":"create","headers":{"n":1}}"#, "header `n`"),
            (
                r#"{"op":"create","commit_time":"yesterday"}"#,
                "commit_time",
            ),
            (r#"{"op":"create","key":{"a":1}}"#, "key"),
            ("{not json", "key must be a string"),
        ];
        for (line, needle) in cases {
            let error = decode_event(line, "file", || "x:1".into())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{line}: {error}");
        }
    }

    #[test]
    fn outputs_encode_payloads_as_json() {
        let report = Output {
            key: Some("k".into()),
            payload: Payload::KesselReport(crate::event::KesselReport {
                request: r#"{"type":"host"}"#.into(),
            }),
        };
        let json = serde_json::to_string(&OutputJson::new(
            &report,
            report.key.as_deref(),
            OutputContext::default(),
        ))
        .unwrap();
        assert_eq!(json, r#"{"key":"k","kessel_report":{"type":"host"}}"#);

        let record = Output {
            key: None,
            payload: Payload::Record(Record {
                topic: None,
                key: Some(vec![0xff, 0x00]),
                value: None,
                headers: vec![Header {
                    name: "a".into(),
                    value: "b".into(),
                }],
            }),
        };
        let json = serde_json::to_string(&OutputJson::new(
            &record,
            None,
            OutputContext {
                pipeline: Some("p"),
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(
            json,
            r#"{"pipeline":"p","record":{"topic":null,"key":{"base64":"/wA="},"value":null,"headers":{"a":"b"}}}"#
        );
    }
}
