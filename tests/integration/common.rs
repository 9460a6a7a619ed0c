//! Helpers shared by the suites.

use ferry::event::{ChangeEvent, Operation};
use ferry::plugin::{Limits, Plugin, PluginOptions, Runtime, RuntimeOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One compiled-artifact cache for the whole suite, so each component is
/// compiled once.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The `ferry` binary, with the suite's cache.
pub fn ferry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .env("FERRY_CACHE_DIR", cache_dir())
        .env("FERRY_LOG", "info")
        .env_remove("FERRY_LOG_FORMAT")
        .env_remove("FERRY_CONFIG");
    command
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("the command starts")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A runtime with the suite's cache.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir()),
        ..RuntimeOptions::default()
    })
    .unwrap()
}

/// Loads and prepares a component.
pub async fn plugin(
    path: &str,
    settings: &[(&str, &str)],
    limits: Limits,
) -> Result<Plugin, ferry::plugin::LoadError> {
    let path = PathBuf::from(path);
    let settings = settings
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let runtime = runtime();
        let component = runtime.load(&path)?;
        runtime.prepare(
            &component,
            PluginOptions {
                pipeline: "test".into(),
                settings,
                limits,
            },
        )
    })
    .await
    .unwrap()
}

/// Limits for tests: short deadline, small memory.
pub fn limits(timeout_ms: u64, memory_mb: usize) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        memory: memory_mb << 20,
        instances: 1,
    }
}

/// Events whose keys are `keys` (the misbehave plugin acts on the key) and
/// whose `after` is `{"n": index}`.
pub fn events(keys: &[&str]) -> Arc<[ChangeEvent]> {
    keys.iter()
        .enumerate()
        .map(|(n, key)| ChangeEvent {
            source: "test".into(),
            op: Operation::Create,
            key: Some(key.to_string()),
            before: None,
            after: Some(format!("{{\"n\":{n}}}")),
            headers: Vec::new(),
            tenant: None,
            origin: None,
            transaction_id: None,
            position: format!("test:{n}"),
            commit_time: None,
        })
        .collect()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `dir/ferry.toml`: one pipeline `test` running `plugin` over the
/// JSON Lines at `events` into the file `out`, with `extra` TOML for the
/// pipeline table and `plugin_extra` for the plugin table.
pub fn pipeline_config(
    dir: &Path,
    plugin: &str,
    events: &Path,
    out: &Path,
    extra: &str,
    plugin_extra: &str,
) -> PathBuf {
    write(
        dir,
        "ferry.toml",
        &format!(
            r#"
            [pipelines.test]
            source = {{ kind = "file", path = "{}" }}
            sink = {{ kind = "file", path = "{}" }}
            {extra}
            [pipelines.test.plugin]
            path = "{plugin}"
            timeout_ms = 1000
            {plugin_extra}
            "#,
            events.display(),
            out.display()
        ),
    )
}

/// Non-empty lines of a file, each parsed as JSON.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A database of its own for one test, dropped by [`TestDatabase::drop`].
pub struct TestDatabase {
    /// Its connection string.
    pub connection: String,
    name: String,
    admin: tokio_postgres::Client,
}

impl TestDatabase {
    /// Its name, unique to the test and the process; also a fine name for
    /// the test's replication slot and publication.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database (and its replication slots), closing any
    /// connection still open to it.
    pub async fn drop(self) {
        self.admin
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL",
                &[&self.name],
            )
            .await
            .unwrap();
        for _ in 0..50 {
            let dropped = self
                .admin
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                    &[&self.name],
                )
                .await;
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

/// Creates a fresh database named after `test` (and this process).
pub async fn fresh_database(test: &str) -> TestDatabase {
    let name = format!("ferry_{test}_{}", std::process::id());
    let (admin, driver) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(driver);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    TestDatabase {
        connection: format!("host=127.0.0.1 user=postgres dbname={name}"),
        name,
        admin,
    }
}

/// Starts `ferry run --config <config>` in the background, its log going
/// to `log` (piped only if the test reads it: an unread pipe fills up).
pub fn start_run(config: &Path, log: std::process::Stdio) -> std::process::Child {
    ferry()
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
