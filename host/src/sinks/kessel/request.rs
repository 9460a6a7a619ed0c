//! A plugin's Kessel output (request JSON in the public snake_case shape)
//! turned into the protobuf request, and the deterministic
//! `transaction_id`.
//!
//! The JSON is read strictly: an unknown or mistyped field is refused with
//! its path, rather than silently dropped from what Kessel receives. The
//! field names are the proto's (snake_case, as plugins are told to write
//! them); an enum is given by its name or its number, as in proto3 JSON.
//! What the values must look like (non-empty type, ...) is the server's to
//! say: its InvalidArgument message is the better one.

use super::proto::{
    DeleteResourceRequest, ReportResourceRequest, ReporterReference, RepresentationMetadata,
    ResourceReference, ResourceRepresentations, representation_metadata::IdempotencyKey,
};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Why an output is not a valid request. The text names the offending
/// field by its path in the request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(String);

/// What a report gets when its JSON leaves it out.
pub struct ReportDefaults<'a> {
    /// The pipeline's `write_visibility`, as the proto enum value.
    pub write_visibility: Option<i32>,
    /// Pipeline name, event position and output index: the basis of the
    /// derived `transaction_id`.
    pub pipeline: &'a str,
    pub position: &'a str,
    pub index: u32,
}

/// Parses a `kessel-report` request. A missing or empty `transaction_id`
/// is derived from the position (see [`transaction_id`]); a missing
/// `write_visibility` is the pipeline's.
pub fn report(
    json: &str,
    defaults: &ReportDefaults<'_>,
) -> Result<ReportResourceRequest, RequestError> {
    let request: ReportJson = parse(json)?;
    let mut representations = request
        .representations
        .map(|r| r.into_proto())
        .transpose()?;
    if let Some(metadata) = representations.as_mut().and_then(|r| r.metadata.as_mut()) {
        let given = matches!(&metadata.idempotency_key, Some(IdempotencyKey::TransactionId(id)) if !id.is_empty());
        if !given {
            metadata.idempotency_key = Some(IdempotencyKey::TransactionId(transaction_id(
                defaults.pipeline,
                defaults.position,
                defaults.index,
            )));
        }
    }
    Ok(ReportResourceRequest {
        inventory_id: request.inventory_id,
        r#type: request.resource_type.unwrap_or_default(),
        reporter_type: request.reporter_type.unwrap_or_default(),
        reporter_instance_id: request.reporter_instance_id.unwrap_or_default(),
        representations,
        write_visibility: request
            .write_visibility
            .map(|v| v.0)
            .or(defaults.write_visibility)
            .unwrap_or_default(),
    })
}

/// Parses a `kessel-delete` request.
pub fn delete(json: &str) -> Result<DeleteResourceRequest, RequestError> {
    let request: DeleteJson = parse(json)?;
    Ok(DeleteResourceRequest {
        reference: request.reference.map(|reference| ResourceReference {
            resource_type: reference.resource_type.unwrap_or_default(),
            resource_id: reference.resource_id.unwrap_or_default(),
            reporter: reference.reporter.map(|reporter| ReporterReference {
                r#type: reporter.reporter_type.unwrap_or_default(),
                instance_id: reporter.instance_id,
            }),
        }),
    })
}

/// The `transaction_id` of the `index`-th output of the event at
/// `position` in `pipeline`: `ferry-` and the SHA-256 (hex) of the three,
/// 70 characters.
///
/// The same output replayed gets the same id, so Kessel absorbs the replay;
/// two outputs never share one (Kessel dedupes ids across all resources,
/// so a shared id would silently drop a report). The fields are separated
/// by NUL, which a pipeline name cannot hold, and the index is last and
/// decimal, so no two triples hash the same input.
pub fn transaction_id(pipeline: &str, position: &str, index: u32) -> String {
    let mut hash = Sha256::new();
    hash.update(b"ferry kessel transaction_id v1\0");
    hash.update(pipeline.as_bytes());
    hash.update(b"\0");
    hash.update(position.as_bytes());
    hash.update(b"\0");
    hash.update(index.to_string().as_bytes());
    let digest: [u8; 32] = hash.finalize().into();
    let mut id = String::with_capacity(70);
    id.push_str("ferry-");
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

fn parse<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, RequestError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        if error.is_syntax() || error.is_eof() {
            RequestError(format!("not JSON: {error}"))
        } else if path == "." || path.is_empty() {
            RequestError(error.to_string())
        } else {
            RequestError(format!("`{path}`: {error}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| RequestError(format!("text after the request: {e}")))?;
    Ok(value)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a ReportResourceRequest object")]
struct ReportJson {
    #[serde(default)]
    inventory_id: Option<String>,
    #[serde(default, rename = "type")]
    resource_type: Option<String>,
    #[serde(default)]
    reporter_type: Option<String>,
    #[serde(default)]
    reporter_instance_id: Option<String>,
    #[serde(default)]
    representations: Option<RepresentationsJson>,
    #[serde(default)]
    write_visibility: Option<Visibility>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepresentationsJson {
    #[serde(default)]
    metadata: Option<MetadataJson>,
    #[serde(default)]
    common: Option<Map<String, Value>>,
    #[serde(default)]
    reporter: Option<Map<String, Value>>,
}

impl RepresentationsJson {
    fn into_proto(self) -> Result<ResourceRepresentations, RequestError> {
        let structure = |map: Option<Map<String, Value>>, path: &str| {
            map.map(|map| to_struct(map, path)).transpose()
        };
        Ok(ResourceRepresentations {
            metadata: self.metadata.map(|m| RepresentationMetadata {
                local_resource_id: m.local_resource_id.unwrap_or_default(),
                api_href: m.api_href.unwrap_or_default(),
                console_href: m.console_href,
                reporter_version: m.reporter_version,
                idempotency_key: m.transaction_id.map(IdempotencyKey::TransactionId),
            }),
            common: structure(self.common, "representations.common")?,
            reporter: structure(self.reporter, "representations.reporter")?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataJson {
    #[serde(default)]
    local_resource_id: Option<String>,
    #[serde(default)]
    api_href: Option<String>,
    #[serde(default)]
    console_href: Option<String>,
    #[serde(default)]
    reporter_version: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a DeleteResourceRequest object")]
struct DeleteJson {
    #[serde(default)]
    reference: Option<ReferenceJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceJson {
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    reporter: Option<ReporterJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReporterJson {
    #[serde(default, rename = "type")]
    reporter_type: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
}

/// A `WriteVisibility` as proto3 JSON gives it: the value's name or number.
struct Visibility(i32);

impl<'de> Deserialize<'de> for Visibility {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use super::proto::WriteVisibility;
        let known = "expected MINIMIZE_LATENCY, IMMEDIATE, WRITE_VISIBILITY_UNSPECIFIED or 0 to 2";
        match Value::deserialize(d)? {
            Value::String(name) => WriteVisibility::from_str_name(&name.to_ascii_uppercase())
                .map(|v| Visibility(v as i32))
                .ok_or_else(|| D::Error::custom(format!("unknown value {name:?}: {known}"))),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| WriteVisibility::try_from(*n).is_ok())
                .map(Visibility)
                .ok_or_else(|| D::Error::custom(format!("unknown value {n}: {known}"))),
            other => Err(D::Error::custom(format!(
                "invalid type: {}, {known}",
                json_type(&other)
            ))),
        }
    }
}

/// Integers up to this size (2^53) are exact in a double.
const MAX_EXACT: u64 = 1 << 53;

/// A JSON object as a `google.protobuf.Struct`. A Struct holds numbers as
/// doubles, so an integer it cannot hold exactly is refused (send it as a
/// string) rather than changed on its way to Kessel.
fn to_struct(map: Map<String, Value>, path: &str) -> Result<prost_types::Struct, RequestError> {
    let mut fields = std::collections::BTreeMap::new();
    for (name, value) in map {
        let inner = format!("{path}.{name}");
        let value = to_value(value, &inner)?;
        fields.insert(name, value);
    }
    Ok(prost_types::Struct { fields })
}

fn to_value(value: Value, path: &str) -> Result<prost_types::Value, RequestError> {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => {
            let exact = n
                .as_i64()
                .map(|i| i.unsigned_abs() <= MAX_EXACT)
                .or_else(|| n.as_u64().map(|u| u <= MAX_EXACT))
                .unwrap_or(true);
            match n.as_f64() {
                Some(f) if exact => Kind::NumberValue(f),
                _ => {
                    return Err(RequestError(format!(
                        "`{path}`: {n} does not fit a protobuf Struct number (a double) exactly; send it as a string"
                    )));
                }
            }
        }
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items
                .into_iter()
                .enumerate()
                .map(|(n, item)| to_value(item, &format!("{path}[{n}]")))
                .collect::<Result<_, _>>()?,
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map, path)?),
    };
    Ok(prost_types::Value { kind: Some(kind) })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    fn defaults() -> ReportDefaults<'static> {
        ReportDefaults {
            write_visibility: None,
            pipeline: "p",
            position: "events.jsonl:1",
            index: 0,
        }
    }

    const REPORT: &str = r#"{"type":"host","reporter_type":"hbi","reporter_instance_id":"redhat",
        "representations":{"metadata":{"local_resource_id":"h1","api_href":"https://a/h1",
        "console_href":"https://c/h1","reporter_version":"2.3"},
        "common":{"workspace_id":"ws-1"},
        "reporter":{"n":3,"ok":true,"tags":["a",null],"nested":{"x":1.5}}}}"#;

    #[test]
    fn maps_a_report_field_by_field() {
        let request = report(REPORT, &defaults()).unwrap();
        assert_eq!(request.r#type, "host");
        assert_eq!(request.reporter_type, "hbi");
        assert_eq!(request.reporter_instance_id, "redhat");
        assert_eq!(request.inventory_id, None);
        assert_eq!(request.write_visibility, 0);
        let representations = request.representations.unwrap();
        let metadata = representations.metadata.unwrap();
        assert_eq!(metadata.local_resource_id, "h1");
        assert_eq!(metadata.api_href, "https://a/h1");
        assert_eq!(metadata.console_href.as_deref(), Some("https://c/h1"));
        assert_eq!(metadata.reporter_version.as_deref(), Some("2.3"));
        assert_eq!(
            metadata.idempotency_key,
            Some(IdempotencyKey::TransactionId(transaction_id(
                "p",
                "events.jsonl:1",
                0
            )))
        );
        let common = representations.common.unwrap();
        assert_eq!(
            common.fields["workspace_id"].kind,
            Some(Kind::StringValue("ws-1".into()))
        );
        let reporter = representations.reporter.unwrap();
        assert_eq!(reporter.fields["n"].kind, Some(Kind::NumberValue(3.0)));
        assert_eq!(reporter.fields["ok"].kind, Some(Kind::BoolValue(true)));
        let Some(Kind::ListValue(tags)) = &reporter.fields["tags"].kind else {
            panic!("tags is a list");
        };
        assert_eq!(tags.values[0].kind, Some(Kind::StringValue("a".into())));
        assert_eq!(tags.values[1].kind, Some(Kind::NullValue(0)));
        let Some(Kind::StructValue(nested)) = &reporter.fields["nested"].kind else {
            panic!("nested is a struct");
        };
        assert_eq!(nested.fields["x"].kind, Some(Kind::NumberValue(1.5)));
    }

    #[test]
    fn keeps_a_given_transaction_id_and_write_visibility() {
        let json = r#"{"type":"host","write_visibility":"IMMEDIATE","representations":
            {"metadata":{"local_resource_id":"h1","transaction_id":"mine"}}}"#;
        let pipeline_default = ReportDefaults {
            write_visibility: Some(1),
            ..defaults()
        };
        let request = report(json, &pipeline_default).unwrap();
        assert_eq!(request.write_visibility, 2);
        let metadata = request.representations.unwrap().metadata.unwrap();
        assert_eq!(
            metadata.idempotency_key,
            Some(IdempotencyKey::TransactionId("mine".into()))
        );
        // The pipeline's visibility applies when the request has none; an
        // empty transaction id is no transaction id.
        let json = r#"{"type":"host","representations":{"metadata":{"local_resource_id":"h1","transaction_id":""}}}"#;
        let request = report(json, &pipeline_default).unwrap();
        assert_eq!(request.write_visibility, 1);
        let metadata = request.representations.unwrap().metadata.unwrap();
        assert_eq!(metadata.local_resource_id, "h1");
        assert_eq!(
            metadata.idempotency_key,
            Some(IdempotencyKey::TransactionId(transaction_id(
                "p",
                "events.jsonl:1",
                0
            )))
        );
        let request = report(r#"{"write_visibility":1}"#, &defaults()).unwrap();
        assert_eq!(request.write_visibility, 1);
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases = [
            (
                r#"{"type":"host","representations":{"metadata":{"api_href":3}}}"#,
                "`representations.metadata.api_href`: invalid type: integer `3`, expected a string",
            ),
            (
                r#"{"type":"host","representations":{"metadata":{"local_resource_id":"x","colour":"red"}}}"#,
                "`representations.metadata.colour`: unknown field `colour`",
            ),
            (r#"{"typo":"host"}"#, "`typo`: unknown field `typo`"),
            (
                r#"{"representations":{"common":"ws-1"}}"#,
                "`representations.common`: invalid type: string \"ws-1\", expected a map",
            ),
            (
                r#"{"write_visibility":"SOON"}"#,
                "`write_visibility`: unknown value \"SOON\"",
            ),
            (
                r#"{"representations":{"reporter":{"big":9007199254740993}}}"#,
                "`representations.reporter.big`: 9007199254740993 does not fit",
            ),
            (
                r#""text""#,
                "invalid type: string \"text\", expected a ReportResourceRequest object",
            ),
            ("host", "not JSON: expected value at line 1 column 1"),
            ("{} {}", "text after the request"),
        ];
        for (json, needle) in cases {
            let error = report(json, &defaults()).unwrap_err().to_string();
            assert!(error.starts_with(needle), "{json}: {error}");
        }
        let error = delete(
            r#"{"reference":{"resource_type":"host","reporter":{"type":"hbi","instance":"x"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("`reference.reporter.instance`: unknown field `instance`"),
            "{error}"
        );
    }

    #[test]
    fn maps_a_delete() {
        let request = delete(
            r#"{"reference":{"resource_type":"host","resource_id":"h1","reporter":{"type":"hbi","instance_id":"redhat"}}}"#,
        )
        .unwrap();
        let reference = request.reference.unwrap();
        assert_eq!(reference.resource_type, "host");
        assert_eq!(reference.resource_id, "h1");
        let reporter = reference.reporter.unwrap();
        assert_eq!(reporter.r#type, "hbi");
        assert_eq!(reporter.instance_id.as_deref(), Some("redhat"));
        assert!(delete("{}").unwrap().reference.is_none());
    }

    #[test]
    fn transaction_ids_are_deterministic_and_distinct() {
        let id = transaction_id("orders", "0/16B3748:3", 0);
        assert_eq!(id, transaction_id("orders", "0/16B3748:3", 0));
        assert_eq!(id.len(), 70);
        assert!(id.len() <= 128);
        assert!(id.starts_with("ferry-"));
        let others = [
            transaction_id("orders", "0/16B3748:3", 1),
            transaction_id("orders", "0/16B3748:4", 0),
            transaction_id("orders2", "0/16B3748:3", 0),
            // Moving text between the fields changes the id.
            transaction_id("orders", "0/16B3748:31", 0),
            transaction_id("orders", "0/16B3748:3\u{0}1", 0),
        ];
        for other in &others {
            assert_ne!(&id, other);
        }
        let mut all: Vec<&String> = others.iter().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), others.len());
    }
}
