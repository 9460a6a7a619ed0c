//! Maps SDMX structure documents to SDMX structure messages, the way the
//! Fusion Registry's Kafka producer publishes them: the key is the
//! structure's URN, the value the whole structure (replace semantics), a
//! deletion is a tombstone.
//!
//! The input is a *structure document*: one JSON object per changed
//! maintainable structure, as `examples/sdmx-registry/schema.sql` emits it
//! with `pg_logical_emit_message` at commit (the Postgres source's
//! `messages` mode puts it in the event's `after`). The database builds the
//! whole structure inside the transaction that changed it, so the message is
//! consistent with that transaction even when only one code changed:
//!
//! ```json
//! {"action": "upsert", "class": "Codelist", "agency": "SDMX", "id": "CL_FREQ",
//!  "version": "1.0", "final": true, "names": {"en": "Frequency"},
//!  "access_group": "public",
//!  "items": [{"id": "A", "names": {"en": "Annual"}}]}
//! ```
//!
//! `class` is one of `AgencyScheme`, `Codelist`, `ConceptScheme` (with
//! `items`), `DataStructure` (with `dimensions`, `time_dimension`,
//! `attributes`, `measure`) and `Dataflow` (with `structure`); references
//! are `{"agency", "id", "version"}` (plus `"item"` for a concept).
//! `{"action": "delete", "class", "agency", "id", "version"}` is a deletion.
//!
//! Settings:
//! - `format`: `xml` (SDMX-ML 2.1, default) or `json` (SDMX-JSON 1.0);
//! - `sender`: the header's sender id (default `FERRY`);
//! - `test`: the header's `Test` flag (default `false`);
//! - `topic`: a topic template over `{agency}`, `{class}`, `{id}` and
//!   `{access_group}` (e.g. `sdmx.{access_group}`), so Kafka ACLs decide who
//!   sees which structures; unset leaves the topic to the pipeline.
//!
//! Every record carries the headers `content-type` (the media type),
//! `sdmx-urn`, `sdmx-action` and, when the source knows it,
//! `source-transaction`.

mod json;
mod model;
mod xml;

use ferry_plugin_sdk::{ChangeEvent, Error, Operation, Output, Plugin, Settings};
pub use model::{Action, Document};

/// Media type of an SDMX-ML 2.1 structure message.
pub const XML_MEDIA_TYPE: &str = "application/vnd.sdmx.structure+xml; version=2.1";
/// Media type of an SDMX-JSON 1.0 structure message.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.sdmx.structure+json; version=1.0.0";

/// The message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// The plugin: one per instance.
pub struct SdmxStructures {
    format: Format,
    sender: String,
    test: bool,
    topic: Option<String>,
}

/// What a message header says besides the structure.
pub struct Header<'a> {
    /// Unique per event and stable across replays.
    pub id: String,
    pub test: bool,
    /// RFC 3339.
    pub prepared: String,
    pub sender: &'a str,
}

impl Plugin for SdmxStructures {
    fn new(settings: &Settings) -> Result<Self, String> {
        const KNOWN: [&str; 4] = ["format", "sender", "test", "topic"];
        if let Some((name, _)) = settings.iter().find(|(name, _)| !KNOWN.contains(name)) {
            return Err(format!(
                "unknown setting `{name}`: this plugin knows {}",
                KNOWN.join(", ")
            ));
        }
        let format = match settings.get_or("format", "xml") {
            "xml" => Format::Xml,
            "json" => Format::Json,
            other => return Err(format!("format: {other:?} is neither \"xml\" nor \"json\"")),
        };
        let test = match settings.get_or("test", "false") {
            "true" => true,
            "false" => false,
            other => return Err(format!("test: {other:?} is neither true nor false")),
        };
        let sender = settings.get_or("sender", "FERRY").to_string();
        if !model::is_id(&sender) {
            return Err(format!(
                "sender: {sender:?} is not an SDMX id (letters, digits, _ @ $ -)"
            ));
        }
        let topic = settings.get("topic").map(str::to_string);
        if let Some(topic) = &topic {
            model::check_topic_template(topic).map_err(|error| format!("topic: {error}"))?;
        }
        Ok(SdmxStructures {
            format,
            sender,
            test,
            topic,
        })
    }

    fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error> {
        if event.op != Operation::Message {
            return Err(Error::permanent(format!(
                "expected a logical message carrying a structure document, got a {:?} event",
                event.op
            )));
        }
        let text = event
            .after
            .as_deref()
            .ok_or_else(|| Error::permanent("the message has no content"))?;
        let document = Document::parse(text).map_err(Error::permanent)?;
        let urn = document.urn();
        let topic = self
            .topic
            .as_ref()
            .map(|template| document.render_topic(template));
        let (value, action) = match document.action {
            Action::Delete => (None, "delete"),
            Action::Upsert => {
                let header = Header {
                    id: message_id(&event.position),
                    test: self.test,
                    prepared: prepared(event.commit_time),
                    sender: &self.sender,
                };
                let body = match self.format {
                    Format::Xml => xml::structure_message(&document, &header),
                    Format::Json => json::structure_message(&document, &header),
                };
                (Some(body.into_bytes()), "upsert")
            }
        };
        let media_type = match self.format {
            Format::Xml => XML_MEDIA_TYPE,
            Format::Json => JSON_MEDIA_TYPE,
        };
        let mut output = Output::record(topic, Some(urn.clone().into_bytes()), value)
            .with_key(urn.clone())
            .with_header("content-type", media_type)
            .with_header("sdmx-urn", urn)
            .with_header("sdmx-action", action);
        if let Some(transaction) = &event.transaction_id {
            output = output.with_header("source-transaction", transaction.clone());
        }
        Ok(vec![output])
    }
}

/// A message id (SDMX `IDType`) unique per event and stable across
/// replays: `F` and a hash of the event's position.
fn message_id(position: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let hash = position
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("F{hash:016X}")
}

/// The commit time (microseconds since the epoch) in RFC 3339, UTC; the
/// epoch when the source gave none (plugins have no clock, by design, so a
/// replay maps to the same message).
fn prepared(commit_time: Option<i64>) -> String {
    let micros = commit_time.unwrap_or(0);
    let seconds = micros.div_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

ferry_plugin_sdk::export_plugin!(SdmxStructures);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_are_rfc3339() {
        assert_eq!(prepared(None), "1970-01-01T00:00:00Z");
        assert_eq!(
            prepared(Some(1_763_856_000_000_000)),
            "2025-11-23T00:00:00Z"
        );
        assert_eq!(
            prepared(Some(951_782_400_000_000 + 3_723_000_000)),
            "2000-02-29T01:02:03Z"
        );
    }

    #[test]
    fn message_ids_are_sdmx_ids_and_stable() {
        let id = message_id("0/16B3748/0");
        assert_eq!(id, message_id("0/16B3748/0"));
        assert_ne!(id, message_id("0/16B3748/1"));
        assert!(model::is_id(&id));
    }
}
