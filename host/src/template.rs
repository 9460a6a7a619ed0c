//! Text templates over a change event: `outbox.event.{header:aggregatetype}`,
//! `{after:id}`, `{position}`.
//!
//! A template is parsed once, when the config is read, so a typo is a
//! config error and not a failure at the first event.
//!
//! Placeholders:
//! - `{source}`, `{origin}`, `{key}`, `{tenant}`, `{position}`,
//!   `{transaction_id}`: the event's fields of those names;
//! - `{header:NAME}`: the value of the event's header `NAME`;
//! - `{after:FIELD}`, `{before:FIELD}`: a top-level field of the row image
//!   (strings as they are, other JSON values as JSON text).
//!
//! `{{` and `}}` stand for literal braces.

use crate::event::ChangeEvent;
use std::fmt;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Source,
    Origin,
    Key,
    Tenant,
    Position,
    TransactionId,
    Header(String),
    After(String),
    Before(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Source => f.write_str("{source}"),
            Field::Origin => f.write_str("{origin}"),
            Field::Key => f.write_str("{key}"),
            Field::Tenant => f.write_str("{tenant}"),
            Field::Position => f.write_str("{position}"),
            Field::TransactionId => f.write_str("{transaction_id}"),
            Field::Header(name) => write!(f, "{{header:{name}}}"),
            Field::After(name) => write!(f, "{{after:{name}}}"),
            Field::Before(name) => write!(f, "{{before:{name}}}"),
        }
    }
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "unmatched `}}` at byte {} of {text:?} (write `}}}}` for a brace)",
                    text.len() - tail.len()
                ));
            }
            let Some(end) = tail.find('}') else {
                return Err(format!("unclosed `{{` in {text:?}"));
            };
            let field =
                parse_field(&tail[1..end]).map_err(|error| format!("{error} in {text:?}"))?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Field(field));
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Fills the template from `event`; the error names the placeholder the
    /// event has no value for.
    pub fn render(&self, event: &ChangeEvent) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => match value(field, event) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(format!(
                            "the event at {} has no value for {field} (template {:?})",
                            event.position, self.source
                        ));
                    }
                },
            }
        }
        Ok(out)
    }
}

fn parse_field(name: &str) -> Result<Field, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string)
    };
    Ok(match name {
        "source" => Field::Source,
        "origin" => Field::Origin,
        "key" => Field::Key,
        "tenant" => Field::Tenant,
        "position" => Field::Position,
        "transaction_id" => Field::TransactionId,
        _ => {
            if let Some(header) = named("header:") {
                Field::Header(header)
            } else if let Some(field) = named("after:") {
                Field::After(field)
            } else if let Some(field) = named("before:") {
                Field::Before(field)
            } else {
                return Err(format!(
                    "unknown placeholder {{{name}}} (known: source, origin, key, tenant, position, transaction_id, header:NAME, after:FIELD, before:FIELD)"
                ));
            }
        }
    })
}

fn value(field: &Field, event: &ChangeEvent) -> Option<String> {
    match field {
        Field::Source => Some(event.source.clone()),
        Field::Origin => event.origin.clone(),
        Field::Key => event.key.clone(),
        Field::Tenant => event.tenant.clone(),
        Field::Position => Some(event.position.clone()),
        Field::TransactionId => event.transaction_id.clone(),
        Field::Header(name) => event.header(name).map(str::to_string),
        Field::After(name) => image_field(event.after.as_deref()?, name),
        Field::Before(name) => image_field(event.before.as_deref()?, name),
    }
}

fn image_field(image: &str, name: &str) -> Option<String> {
    let image: serde_json::Value = serde_json::from_str(image).ok()?;
    match image.get(name)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Header, Operation};

    fn event() -> ChangeEvent {
        ChangeEvent {
            source: "pg".into(),
            op: Operation::Create,
            key: Some("42".into()),
            before: None,
            after: Some(r#"{"id":"e-1","n":7,"gone":null}"#.into()),
            headers: vec![Header {
                name: "aggregatetype".into(),
                value: "host".into(),
            }],
            tenant: None,
            origin: Some("public.outbox".into()),
            transaction_id: Some("771".into()),
            position: "0/16B3748/0".into(),
            commit_time: None,
        }
    }

    #[test]
    fn placeholders_are_filled_from_the_event() {
        let template =
            Template::parse("outbox.event.{header:aggregatetype}.{after:id}.{after:n}.{key}")
                .unwrap();
        assert_eq!(
            template.render(&event()).unwrap(),
            "outbox.event.host.e-1.7.42"
        );
        let braces = Template::parse("{{literal}} {position}").unwrap();
        assert_eq!(braces.render(&event()).unwrap(), "{literal} 0/16B3748/0");
    }

    #[test]
    fn a_missing_value_names_the_placeholder_and_the_event() {
        for text in ["{tenant}", "{after:gone}", "{before:id}", "{header:nope}"] {
            let error = Template::parse(text).unwrap().render(&event()).unwrap_err();
            assert!(error.contains(text), "{error}");
            assert!(error.contains("0/16B3748/0"), "{error}");
        }
    }

    #[test]
    fn mistakes_are_refused_when_parsed() {
        let cases = [
            ("{nope}", "unknown placeholder {nope}"),
            ("{header:}", "unknown placeholder {header:}"),
            ("a{key", "unclosed"),
            ("a}b", "unmatched"),
        ];
        for (text, expected) in cases {
            let error = Template::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
