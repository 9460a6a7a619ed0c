//! Column values (their text output, with `DateStyle=ISO`,
//! `IntervalStyle=iso_8601`, `TimeZone=UTC` and `extra_float_digits=3`
//! pinned on the replication session) as JSON text, written by hand so
//! nothing passes through a float:
//!
//! - integers and `numeric` → JSON numbers, digit for digit (`NaN` and
//!   infinities → strings);
//! - `float4`/`float8` → JSON numbers with every digit Postgres prints
//!   (`NaN`, `Infinity` → strings);
//! - `bool` → `true`/`false`; `json`/`jsonb` → the JSON itself;
//! - arrays of those → JSON arrays (nested for multidimensional arrays);
//! - `bytea` → a string in Postgres' hex form (`\x0102`);
//! - everything else (text, uuid, timestamps, dates, intervals…) → the
//!   string Postgres prints.

use super::pgoutput::{Relation, Value};

/// How a type's text maps to JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Decimal,
    Float,
    Bool,
    Json,
    Text,
}

fn kind(type_oid: u32) -> Kind {
    match type_oid {
        20 | 21 | 23 | 26 => Kind::Integer, // int8, int2, int4, oid
        1700 => Kind::Decimal,              // numeric
        700 | 701 => Kind::Float,           // float4, float8
        16 => Kind::Bool,
        114 | 3802 => Kind::Json,
        _ => Kind::Text,
    }
}

/// The element type of an array type, for the common ones.
fn element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1028 => 26,
        1231 => 1700,
        1021 => 700,
        1022 => 701,
        1000 => 16,
        199 => 114,
        3807 => 3802,
        1009 | 1015 | 1014 | 2951 | 1115 | 1185 | 1182 | 1183 | 1187 | 1001 => 25,
        _ => return None,
    })
}

/// Appends `text` (a value of type `type_oid`) to `out` as JSON.
pub fn write_value(out: &mut String, type_oid: u32, text: &str) {
    if let Some(element) = element(type_oid) {
        match parse_array(text) {
            Some(array) => write_array(out, element, &array),
            None => write_string(out, text),
        }
        return;
    }
    write_scalar(out, kind(type_oid), text);
}

fn write_scalar(out: &mut String, kind: Kind, text: &str) {
    match kind {
        Kind::Integer => out.push_str(text),
        Kind::Decimal | Kind::Float if is_json_number(text) => out.push_str(text),
        Kind::Decimal | Kind::Float => write_string(out, text),
        Kind::Bool => out.push_str(if text == "t" { "true" } else { "false" }),
        Kind::Json => out.push_str(text),
        Kind::Text => write_string(out, text),
    }
}

/// Whether Postgres' text of a number is also a JSON number (`1.50`, `-3`,
/// `1e+20`), as opposed to `NaN`, `Infinity`, `.5`.
fn is_json_number(text: &str) -> bool {
    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    let bytes = text.as_bytes();
    let mut at = usize::from(bytes.first() == Some(&b'-'));
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    };
    let integer_start = at;
    let integer = digits(&mut at);
    if integer == 0 || (integer > 1 && bytes[integer_start] == b'0') {
        return false;
    }
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if digits(&mut at) == 0 {
            return false;
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if digits(&mut at) == 0 {
            return false;
        }
    }
    at == bytes.len()
}

fn write_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string serializes"));
}

/// A parsed array literal: elements or nested arrays; `None` is NULL.
#[derive(Debug, PartialEq)]
enum ArrayItem {
    Value(Option<String>),
    Array(Vec<ArrayItem>),
}

/// Parses Postgres' array output (`{1,2}`, `{{a,"b c"},{NULL,d}}`); `None`
/// for anything else (e.g. a lower bound prefix `[0:1]={…}`).
fn parse_array(text: &str) -> Option<Vec<ArrayItem>> {
    let mut chars = text.chars().peekable();
    let items = parse_level(&mut chars)?;
    chars.next().is_none().then_some(items)
}

fn parse_level(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Vec<ArrayItem>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(items);
    }
    loop {
        match chars.peek()? {
            '{' => items.push(ArrayItem::Array(parse_level(chars)?)),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                items.push(ArrayItem::Value(Some(value)));
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                items.push(ArrayItem::Value((value != "NULL").then_some(value)));
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => return Some(items),
            _ => return None,
        }
    }
}

fn write_array(out: &mut String, element: u32, items: &[ArrayItem]) {
    out.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        match item {
            ArrayItem::Value(None) => out.push_str("null"),
            ArrayItem::Value(Some(text)) => write_scalar(out, kind(element), text),
            ArrayItem::Array(inner) => write_array(out, element, inner),
        }
    }
    out.push(']');
}

/// A row image as a JSON object. Unchanged TOASTed values are left out
/// (their value was not sent); NULL is `null`.
pub fn row_json(relation: &Relation, values: &[Value]) -> String {
    let mut out = String::from("{");
    let mut first = true;
    for (column, value) in relation.columns.iter().zip(values) {
        if *value == Value::UnchangedToast {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(&mut out, &column.name);
        out.push(':');
        match value {
            Value::Null => out.push_str("null"),
            Value::Text(text) => write_value(&mut out, column.type_oid, text),
            Value::UnchangedToast => unreachable!(),
        }
    }
    out.push('}');
    out
}

/// The names of the columns whose unchanged TOASTed value was not sent.
pub fn unchanged_toast(relation: &Relation, values: &[Value]) -> Vec<String> {
    relation
        .columns
        .iter()
        .zip(values)
        .filter(|(_, value)| **value == Value::UnchangedToast)
        .map(|(column, _)| column.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(type_oid: u32, text: &str) -> String {
        let mut out = String::new();
        write_value(&mut out, type_oid, text);
        out
    }

    #[test]
    fn numbers_keep_every_digit() {
        assert_eq!(
            json(1700, "12345678901234567890.000000000001"),
            "12345678901234567890.000000000001"
        );
        assert_eq!(json(1700, "NaN"), "\"NaN\"");
        assert_eq!(json(701, "0.30000000000000004"), "0.30000000000000004");
        assert_eq!(json(701, "-Infinity"), "\"-Infinity\"");
        assert_eq!(json(701, "1e+100"), "1e+100");
        assert_eq!(json(20, "-9223372036854775808"), "-9223372036854775808");
    }

    #[test]
    fn other_types_map_as_documented() {
        assert_eq!(json(16, "t"), "true");
        assert_eq!(json(3802, r#"{"a": [1, 2]}"#), r#"{"a": [1, 2]}"#);
        assert_eq!(json(17, r"\x0102"), r#""\\x0102""#);
        assert_eq!(
            json(1184, "2026-11-24 10:00:00.123456+00"),
            "\"2026-11-24 10:00:00.123456+00\""
        );
        assert_eq!(json(1007, "{1,NULL,3}"), "[1,null,3]");
        assert_eq!(
            json(1009, r#"{a,"b \"c\"",NULL}"#),
            r#"["a","b \"c\"",null]"#
        );
        assert_eq!(json(1231, "{{1.5,2},{3,NaN}}"), r#"[[1.5,2],[3,"NaN"]]"#);
        assert_eq!(json(1007, "{}"), "[]");
        assert_eq!(json(1007, "[0:1]={1,2}"), "\"[0:1]={1,2}\"");
    }
}
