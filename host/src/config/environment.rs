//! What the environment adds to a configuration file, before it is parsed:
//!
//! - **Overrides**: `FERRY__<KEY>__<KEY>…=<value>` sets the key at that path,
//!   e.g. `FERRY__PIPELINES__ORDERS__SINK__ENDPOINT=https://kessel:9000`.
//!   Each segment names a key of the file, matched without regard to case
//!   (a new key is taken in lowercase). The value is read as a TOML value
//!   (`500`, `true`, `["a", "b"]`) unless the file has a string there or it
//!   is not valid TOML: then it is a string.
//! - **References**: a string value that is exactly `${env:NAME}` becomes the
//!   value of the environment variable `NAME`, and `${file:PATH}` the
//!   contents of the file at `PATH` (relative to the configuration file;
//!   one trailing newline dropped) — for secrets mounted by Docker or
//!   Kubernetes. Missing variables and unreadable files are problems at the
//!   key's path; the values themselves are never shown.

use super::Problems;
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix of override variables.
const PREFIX: &str = "FERRY__";

/// Environment variables, captured once (or given, in tests).
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// The process's environment.
    pub fn process() -> Environment {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    /// Exactly these variables.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }

    /// Applies the overrides, then resolves references, in `table`.
    pub(super) fn apply(&self, table: &mut toml::Table, base: &Path, problems: &mut Problems) {
        for (name, value) in &self.vars {
            if let Some(path) = name.strip_prefix(PREFIX) {
                self.set(table, name, path, value, problems);
            }
        }
        self.resolve(table, "", base, problems);
    }

    fn set(
        &self,
        table: &mut toml::Table,
        variable: &str,
        path: &str,
        value: &str,
        problems: &mut Problems,
    ) {
        let segments: Vec<&str> = path.split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            problems.add(variable, "an override names keys separated by `__`");
            return;
        }
        let (last, parents) = segments.split_last().expect("split yields one segment");
        let mut current = table;
        let mut at = String::new();
        for segment in parents {
            let key = existing_key(current, segment);
            at = join(&at, &key);
            let entry = current
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => current = inner,
                _ => {
                    problems.add(
                        at,
                        format!("{variable} sets a key inside it, but it is not a table"),
                    );
                    return;
                }
            }
        }
        let key = existing_key(current, last);
        let new = match current.get(&key) {
            Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
            _ => toml_value(value),
        };
        current.insert(key, new);
    }

    /// Replaces `${env:…}` and `${file:…}` strings under `value`.
    fn resolve(&self, table: &mut toml::Table, at: &str, base: &Path, problems: &mut Problems) {
        for (key, value) in table.iter_mut() {
            let path = join(at, key);
            match value {
                toml::Value::Table(inner) => self.resolve(inner, &path, base, problems),
                toml::Value::Array(items) => {
                    for (index, item) in items.iter_mut().enumerate() {
                        let path = format!("{path}[{index}]");
                        match item {
                            toml::Value::Table(inner) => self.resolve(inner, &path, base, problems),
                            toml::Value::String(text) => {
                                self.reference(text, &path, base, problems)
                            }
                            _ => {}
                        }
                    }
                }
                toml::Value::String(text) => self.reference(text, &path, base, problems),
                _ => {}
            }
        }
    }

    fn reference(&self, text: &mut String, path: &str, base: &Path, problems: &mut Problems) {
        let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
            return;
        };
        if let Some(name) = inner.strip_prefix("env:") {
            match self.vars.get(name) {
                Some(value) => *text = value.clone(),
                None => problems.add(path, format!("the environment variable {name} is not set")),
            }
        } else if let Some(file) = inner.strip_prefix("file:") {
            let file = base.join(file);
            match std::fs::read_to_string(&file) {
                Ok(contents) => {
                    let contents = contents.strip_suffix('\n').unwrap_or(&contents);
                    *text = contents.strip_suffix('\r').unwrap_or(contents).to_string();
                }
                Err(error) => {
                    problems.add(path, format!("cannot read {}: {error}", file.display()))
                }
            }
        }
    }
}

/// The key of `table` that `segment` names, ignoring case; else `segment`
/// in lowercase.
fn existing_key(table: &toml::Table, segment: &str) -> String {
    table
        .keys()
        .find(|key| key.eq_ignore_ascii_case(segment))
        .cloned()
        .unwrap_or_else(|| segment.to_ascii_lowercase())
}

/// `value` read as a TOML value, or as a string when it is not one.
fn toml_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, SinkConfig};
    use super::*;

    /// A pipeline with a Kessel sink, its plugin file and dir.
    fn kessel_config(dir: &Path) -> String {
        std::fs::write(dir.join("plugin.wasm"), b"").unwrap();
        std::fs::write(dir.join("events.jsonl"), b"").unwrap();
        r#"
        [pipelines.Orders]
        source = { kind = "file", path = "events.jsonl" }
        plugin = { path = "plugin.wasm" }
        batch_size = 16
        [pipelines.Orders.sink]
        kind = "kessel"
        endpoint = "http://127.0.0.1:9000"
        "#
        .to_string()
    }

    #[test]
    fn overrides_set_keys_by_path_ignoring_case() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment::from_pairs([
            ("FERRY__PIPELINES__ORDERS__BATCH_SIZE", "64"),
            (
                "FERRY__PIPELINES__ORDERS__SINK__ENDPOINT",
                "http://kessel:9001",
            ),
            ("FERRY__PIPELINES__ORDERS__PLUGIN__TIMEOUT_MS", "500"),
            ("FERRY__ADMIN__LISTEN", "127.0.0.1:9180"),
            ("OTHER__PIPELINES__ORDERS__BATCH_SIZE", "1"),
        ]);
        let config = Config::parse_with(&kessel_config(dir.path()), dir.path(), &env).unwrap();
        let orders = &config.pipelines["Orders"];
        assert_eq!(orders.delivery.batch_size, 64);
        assert_eq!(orders.plugin.timeout_ms, 500);
        let SinkConfig::Kessel(kessel) = &orders.sink else {
            panic!("a Kessel sink");
        };
        assert_eq!(kessel.endpoint, "http://kessel:9001");
        assert_eq!(config.admin.listen, Some("127.0.0.1:9180".parse().unwrap()));
    }

    #[test]
    fn references_read_secrets_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("endpoint.txt"), "http://from-file:9000\n").unwrap();
        let text = kessel_config(dir.path()).replace(
            "endpoint = \"http://127.0.0.1:9000\"",
            "endpoint = \"${file:endpoint.txt}\"",
        );
        let config = Config::parse_with(&text, dir.path(), &Environment::from_pairs([])).unwrap();
        let SinkConfig::Kessel(kessel) = &config.pipelines["Orders"].sink else {
            panic!("a Kessel sink");
        };
        assert_eq!(kessel.endpoint, "http://from-file:9000");

        // An override may hold a reference too.
        let env = Environment::from_pairs([
            (
                "FERRY__PIPELINES__ORDERS__SINK__ENDPOINT",
                "${env:KESSEL_URL}",
            ),
            ("KESSEL_URL", "http://from-env:9000"),
        ]);
        let config = Config::parse_with(&text, dir.path(), &env).unwrap();
        let SinkConfig::Kessel(kessel) = &config.pipelines["Orders"].sink else {
            panic!("a Kessel sink");
        };
        assert_eq!(kessel.endpoint, "http://from-env:9000");
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let text = kessel_config(dir.path())
            .replace(
                "endpoint = \"http://127.0.0.1:9000\"",
                "endpoint = \"${env:MISSING_URL}\"\nnot_a_key = 1",
            )
            .replace(
                "batch_size = 16",
                "batch_size = 16\nsettings_file = \"${file:nowhere}\"",
            );
        let env = Environment::from_pairs([
            ("FERRY__PIPELINES__ORDERS__BATCH_SIZE__X", "s3cret"),
            ("FERRY__PIPELINES____SINK", "1"),
        ]);
        let problems: Vec<String> = Config::parse_with(&text, dir.path(), &env)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for expected in [
            "pipelines.Orders.sink.endpoint: the environment variable MISSING_URL is not set",
            "pipelines.Orders.settings_file: cannot read",
            "pipelines.Orders.batch_size: FERRY__PIPELINES__ORDERS__BATCH_SIZE__X sets a key inside it, but it is not a table",
            "FERRY__PIPELINES____SINK: an override names keys separated by `__`",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        assert!(
            problems.iter().all(|p| !p.contains("s3cret")),
            "{problems:#?}"
        );
    }
}
