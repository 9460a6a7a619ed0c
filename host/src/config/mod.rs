//! The TOML configuration: named pipelines, each a source, a plugin and a
//! sink.
//!
//! Config is plain data: it is parsed and checked here, and turned into
//! running parts by `SourceConfig::build`, `SinkConfig::build` and the
//! pipeline. [`Config::load`] reports every problem it finds at once, each
//! with the path of the offending key (`pipelines.demo.plugin.timeout_ms`).
//! Relative paths in the file are relative to the file's directory.

mod environment;

pub use environment::Environment;

use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub admin: AdminConfig,
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// `[admin]`: the admin HTTP server (metrics, health, status, reload). Off
/// unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to serve on, e.g. `127.0.0.1:9180`. Anyone who can reach it
    /// can reload plugins and resume parked keys: keep it on localhost or a
    /// private network.
    pub listen: Option<std::net::SocketAddr>,
}

impl AdminConfig {
    /// Reads only the `[admin]` table of the file at `path` (with the
    /// environment's overrides), without checking the pipelines.
    pub fn load(path: &Path) -> Result<AdminConfig, ConfigError> {
        let file = path.display().to_string();
        let fail = |problems| ConfigError {
            file: file.clone(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem {
                path: String::new(),
                message: format!("cannot read it: {e}"),
            }])
        })?;
        let mut problems = Problems::default();
        let mut table: toml::Table = text.parse().map_err(|error| {
            fail(vec![Problem {
                path: String::new(),
                message: format!("not valid TOML: {error}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Environment::process().apply(&mut table, base, &mut problems);
        let admin = match table.remove("admin") {
            Some(value) => problems.take("admin", value),
            None => Some(AdminConfig::default()),
        };
        match admin {
            Some(admin) if problems.0.is_empty() => Ok(admin),
            _ => Err(fail(problems.0)),
        }
    }
}

/// `[runtime]`: settings of the process-wide plugin runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Cache compiled plugins on disk (default true).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Where; default `$FERRY_CACHE_DIR`, `$XDG_CACHE_HOME/ferry/plugins` or
    /// `~/.cache/ferry/plugins`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache: true,
            cache_dir: None,
        }
    }
}

/// `[pipelines.<name>]`: one source, one plugin, one sink.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub plugin: PluginConfig,
    pub sink: SinkConfig,
    pub delivery: DeliveryConfig,
}

/// `[pipelines.<name>.plugin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Instances that may run batches at the same time (default 2).
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Longest one call may run, in milliseconds (default 2000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most memory one instance may use, in MiB (default 128).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Handed to the plugin's `init`, flattened to dotted names.
    #[serde(default)]
    pub settings: toml::Table,
    /// Reload the plugin when its file changes (default true). SIGHUP and
    /// the admin API reload it either way.
    #[serde(default = "yes")]
    pub watch: bool,
    /// How often the file is looked at, in milliseconds (default 250). A
    /// change is taken once the file has stayed the same for one interval,
    /// so a file written in place is not loaded half-written.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// The plugin's own test vectors: every version, the first included,
    /// must map `input` to `expect` (as `ferry plugin test --expect`) before
    /// it runs.
    pub vectors: Option<VectorsConfig>,
}

/// `[pipelines.<name>.plugin.vectors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsConfig {
    /// Change events, JSON Lines.
    pub input: PathBuf,
    /// The expected result of each event, JSON Lines.
    pub expect: PathBuf,
}

impl PluginConfig {
    /// The settings as `init` receives them.
    pub fn flat_settings(&self) -> Vec<(String, String)> {
        flatten_settings(&self.settings)
    }

    /// The runtime limits these settings describe.
    pub fn limits(&self) -> crate::plugin::Limits {
        crate::plugin::Limits {
            timeout: Duration::from_millis(self.timeout_ms),
            memory: (self.memory_mb as usize) << 20,
            instances: self.instances,
        }
    }
}

/// Flattens nested tables with dots; strings stay as they are, anything else
/// becomes its TOML text.
pub fn flatten_settings(table: &toml::Table) -> Vec<(String, String)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
        for (name, value) in table {
            let name = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => walk(&name, inner, out),
                toml::Value::String(text) => out.push((name, text.clone())),
                other => out.push((name, other.to_string())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// The pipeline's own keys: how events are batched, retried and what
/// happens when one cannot be delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most events per plugin call (default 128).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The unit of order (default `key`).
    #[serde(default)]
    pub ordering: Ordering,
    /// Deliveries in flight at once, each for a different unit of order
    /// (default 64).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Events read but not yet delivered before reading pauses
    /// (backpressure; default 10000). Parked events do not count.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Parked events held in memory before the pipeline halts rather than
    /// grow without bound (default 10000).
    #[serde(default = "default_max_pending")]
    pub max_parked: usize,
    /// What to do with an event that can never be delivered (default halt).
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Where the `dead-letter` policy writes.
    #[serde(default)]
    pub dead_letter: Option<crate::dead_letter::DeadLetterConfig>,
    /// Backoff of retryable failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// On stop, how long to keep delivering what was read before giving up
    /// (what is left is not acknowledged, so it is read again; default
    /// 30000).
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_size: default_batch_size(),
            ordering: Ordering::default(),
            max_in_flight: default_max_in_flight(),
            max_pending: default_max_pending(),
            max_parked: default_max_pending(),
            on_error: ErrorPolicy::default(),
            dead_letter: None,
            retry: RetryConfig::default(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// What happens to an event that fails permanently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the pipeline with the error; the checkpoint stays before the
    /// event, nothing is skipped.
    #[default]
    Halt,
    /// Write the event, the error, the plugin digest and the attempts to the
    /// `dead_letter` destination, then go on.
    DeadLetter,
    /// Hold the event and every later event of its unit of order (key or
    /// tenant) until resumed; everything else goes on.
    Park,
}

/// What must stay in source order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// Events with the same tenant and key; different keys go concurrently.
    #[default]
    Key,
    /// All events of a tenant; different tenants go concurrently.
    Tenant,
    /// Everything: one event at a time, in source order.
    Total,
}

/// `[pipelines.<name>.retry]`: exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay, in milliseconds (default 100).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Longest delay, in milliseconds (default 30000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Attempts before a retryable failure is treated as permanent; 0 (the
    /// default) retries for ever.
    #[serde(default)]
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            max_attempts: 0,
        }
    }
}

pub(crate) fn yes() -> bool {
    true
}
fn default_instances() -> usize {
    2
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_memory_mb() -> u64 {
    128
}
fn default_watch_interval_ms() -> u64 {
    250
}
fn default_batch_size() -> usize {
    128
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
fn default_max_in_flight() -> usize {
    64
}
fn default_max_pending() -> usize {
    10_000
}
fn default_initial_ms() -> u64 {
    100
}
fn default_max_ms() -> u64 {
    30_000
}

/// One problem in a configuration, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{} has {count} problem{}:",
            self.file,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Collects problems while a configuration is read.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserializes `value` (found at `path`), recording a problem with the
    /// full key path if it does not fit `T`.
    fn take<T: for<'de> Deserialize<'de>>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(value) => Some(value),
            Err(error) => {
                let inner = error.path().to_string();
                let path = match inner.as_str() {
                    "." | "" => path.to_string(),
                    inner if path.is_empty() => inner.to_string(),
                    inner => format!("{path}.{inner}"),
                };
                self.add(path, error.into_inner().message().to_string());
                None
            }
        }
    }
}

impl Config {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                path: String::new(),
                message: format!("cannot read it: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_with(&text, base, &Environment::process())
            .map_err(|problems| ConfigError { file, problems })
    }

    /// Parses and checks `text`, without the environment; relative paths are
    /// taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        Config::parse_with(text, base, &Environment::from_pairs([]))
    }

    /// Parses and checks `text` with the overrides and references of `env`
    /// (see [`Environment`]).
    pub fn parse_with(text: &str, base: &Path, env: &Environment) -> Result<Config, Vec<Problem>> {
        let mut problems = Problems::default();
        let mut table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(error) => {
                problems.add("", format!("not valid TOML: {error}"));
                return Err(problems.0);
            }
        };
        env.apply(&mut table, base, &mut problems);
        // A key whose reference could not be resolved is reported once:
        // not again for holding the unresolved `${…}` text.
        let unresolved: std::collections::HashSet<String> =
            problems.0.iter().map(|p| p.path.clone()).collect();
        let from_environment = problems.0.len();

        let runtime = match table.remove("runtime") {
            Some(value) => problems.take("runtime", value).unwrap_or_default(),
            None => RuntimeConfig::default(),
        };
        let admin = match table.remove("admin") {
            Some(value) => problems.take("admin", value).unwrap_or_default(),
            None => AdminConfig::default(),
        };
        let mut pipelines = BTreeMap::new();
        match table.remove("pipelines") {
            Some(toml::Value::Table(entries)) => {
                for (name, value) in entries {
                    let path = format!("pipelines.{name}");
                    if let Some(pipeline) = parse_pipeline(&path, value, &mut problems) {
                        pipelines.insert(name, pipeline);
                    }
                }
            }
            Some(_) => problems.add("pipelines", "must be a table of named pipelines"),
            None => {}
        }
        for name in table.keys() {
            problems.add(
                name,
                "unknown key: expected `runtime`, `admin` or `pipelines`",
            );
        }
        if pipelines.is_empty() && problems.0.is_empty() {
            problems.add("pipelines", "no pipeline is defined");
        }

        let mut config = Config {
            runtime,
            admin,
            pipelines,
        };
        config.resolve_paths(base);
        config.check(&mut problems);
        let mut index = 0;
        problems.0.retain(|problem| {
            index += 1;
            index <= from_environment || !unresolved.contains(&problem.path)
        });
        if problems.0.is_empty() {
            Ok(config)
        } else {
            Err(problems.0)
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = &mut self.runtime.cache_dir {
            *dir = resolve(base, dir);
        }
        for pipeline in self.pipelines.values_mut() {
            pipeline.plugin.path = resolve(base, &pipeline.plugin.path);
            if let Some(vectors) = &mut pipeline.plugin.vectors {
                vectors.input = resolve(base, &vectors.input);
                vectors.expect = resolve(base, &vectors.expect);
            }
            if let Some(dead_letter) = &mut pipeline.delivery.dead_letter {
                dead_letter.resolve_paths(base);
            }
            pipeline.source.resolve_paths(base);
            pipeline.sink.resolve_paths(base);
        }
    }

    /// Checks what types alone cannot say.
    fn check(&self, problems: &mut Problems) {
        for (name, pipeline) in &self.pipelines {
            let at = |key: &str| format!("pipelines.{name}.{key}");
            if !valid_name(name) {
                problems.add(
                    format!("pipelines.{name}"),
                    "a pipeline name may only hold letters, digits, `-` and `_`",
                );
            }
            let plugin = &pipeline.plugin;
            if !plugin.path.is_file() {
                problems.add(
                    at("plugin.path"),
                    format!("no plugin file at {}", plugin.path.display()),
                );
            }
            if let Some(vectors) = &plugin.vectors {
                for (key, file) in [("input", &vectors.input), ("expect", &vectors.expect)] {
                    if !file.is_file() {
                        problems.add(
                            at(&format!("plugin.vectors.{key}")),
                            format!("no file at {}", file.display()),
                        );
                    }
                }
            }
            let delivery = &pipeline.delivery;
            for (key, value) in [
                ("plugin.instances", plugin.instances as u64),
                ("plugin.timeout_ms", plugin.timeout_ms),
                ("plugin.memory_mb", plugin.memory_mb),
                ("plugin.watch_interval_ms", plugin.watch_interval_ms),
                ("batch_size", delivery.batch_size as u64),
                ("max_in_flight", delivery.max_in_flight as u64),
                ("max_pending", delivery.max_pending as u64),
                ("max_parked", delivery.max_parked as u64),
                ("retry.initial_ms", delivery.retry.initial_ms),
            ] {
                if value == 0 {
                    problems.add(at(key), "must be at least 1");
                }
            }
            if delivery.retry.max_ms < delivery.retry.initial_ms {
                problems.add(at("retry.max_ms"), "must not be less than retry.initial_ms");
            }
            match (&delivery.on_error, &delivery.dead_letter) {
                (ErrorPolicy::DeadLetter, None) => problems.add(
                    at("dead_letter"),
                    "missing: on_error = \"dead-letter\" needs a destination",
                ),
                (_, Some(dead_letter)) => {
                    for problem in dead_letter.check() {
                        problems.add(
                            at(&format!("dead_letter.{}", problem.path)),
                            problem.message,
                        );
                    }
                }
                _ => {}
            }
            for problem in pipeline.source.check() {
                problems.add(at(&format!("source.{}", problem.path)), problem.message);
            }
            for problem in pipeline.sink.check() {
                problems.add(at(&format!("sink.{}", problem.path)), problem.message);
            }
        }
    }
}

fn parse_pipeline(
    path: &str,
    value: toml::Value,
    problems: &mut Problems,
) -> Option<PipelineConfig> {
    let toml::Value::Table(mut table) = value else {
        problems.add(path, "must be a table");
        return None;
    };
    let mut section = |key: &str| {
        let value = table.remove(key);
        if value.is_none() {
            problems.add(format!("{path}.{key}"), "missing");
        }
        value
    };
    let (source, plugin, sink) = (section("source"), section("plugin"), section("sink"));
    let source = source.and_then(|v| problems.take(&format!("{path}.source"), v));
    let plugin = plugin.and_then(|v| problems.take(&format!("{path}.plugin"), v));
    let sink = sink.and_then(|v| problems.take(&format!("{path}.sink"), v));
    let delivery = problems.take(path, toml::Value::Table(table));
    Some(PipelineConfig {
        source: source?,
        plugin: plugin?,
        sink: sink?,
        delivery: delivery?,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `path` taken from `base` when relative; `-` (stdin/stdout) stays.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || path == Path::new("-") {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_file() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn reads_a_minimal_pipeline_with_defaults() {
        let plugin = plugin_file();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
        let text = format!(
            r#"
            [pipelines.demo]
            source = {{ kind = "file", path = "events.jsonl" }}
            sink = {{ kind = "stdout" }}
            plugin = {{ path = "{}", settings = {{ version = "v1beta2", nested = {{ n = 3 }} }} }}
            "#,
            plugin.path().display()
        );
        let config = Config::parse(&text, dir.path()).unwrap();
        let demo = &config.pipelines["demo"];
        assert_eq!(demo.delivery.batch_size, 128);
        assert_eq!(demo.delivery.on_error, ErrorPolicy::Halt);
        assert_eq!(demo.plugin.instances, 2);
        assert_eq!(
            demo.plugin.flat_settings(),
            [
                ("nested.n".to_string(), "3".to_string()),
                ("version".to_string(), "v1beta2".to_string())
            ]
        );
        let SourceConfig::File(file) = &demo.source else {
            panic!("a file source");
        };
        assert_eq!(file.path, dir.path().join("events.jsonl"));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = r#"
            unknown_top = 1
            [pipelines.one]
            batch_size = 0
            bogus = true
            source = { kind = "file", path = "x", extra = 1 }
            sink = { kind = "carrier-pigeon" }
            plugin = { path = "/nonexistent.wasm", timeout_ms = "soon" }
            [pipelines.two]
            source = { kind = "file", path = "x" }
            sink = { kind = "stdout" }
        "#;
        let problems = Config::parse(text, Path::new(".")).unwrap_err();
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        let expect = [
            "pipelines.one.source: unknown field `extra`",
            "pipelines.one.sink.kind: unknown variant `carrier-pigeon`",
            "pipelines.one.plugin.timeout_ms: invalid type: string \"soon\"",
            "pipelines.one.bogus: unknown field `bogus`",
            "pipelines.two.plugin: missing",
            "unknown_top: unknown key",
        ];
        for needle in expect {
            assert!(
                text.iter().any(|p| p.starts_with(needle)),
                "no problem starting with {needle:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn checks_values_after_parsing() {
        let text = r#"
            [pipelines."bad name"]
            batch_size = 0
            source = { kind = "file", path = "x" }
            sink = { kind = "stdout" }
            plugin = { path = "/nonexistent.wasm", instances = 0 }
        "#;
        let problems = Config::parse(text, Path::new(".")).unwrap_err();
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        for needle in [
            "pipelines.bad name: a pipeline name",
            "pipelines.bad name.plugin.path: no plugin file",
            "pipelines.bad name.plugin.instances: must be at least 1",
            "pipelines.bad name.batch_size: must be at least 1",
        ] {
            assert!(
                text.iter().any(|p| p.starts_with(needle)),
                "no problem starting with {needle:?} in {text:#?}"
            );
        }
    }
}
