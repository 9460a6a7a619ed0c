//! Dead letters: events that can never be delivered, written aside with
//! everything needed to understand and replay them, so the pipeline can go
//! on without losing them.
//!
//! A dead letter is one JSON object: the pipeline, the event's position,
//! key and tenant, the error, the attempts made, the digest of the plugin
//! version, the time, and the original event in its JSON Lines form
//! (`event`) — or, for input that never became an event, the raw input
//! (`input`). When a sink refused one output, that output is included too
//! (`output`). Destinations: a JSON Lines file, a Kafka topic (keyed by the
//! event key), or a Postgres table.

use crate::config::{Problem, resolve};
use crate::event::EventRef;
use crate::event::jsonl::{self, OutputContext, OutputJson};
use crate::kafka::KafkaClientConfig;
use crate::pg::Reconnecting;
use crate::sinks::Delivery;
use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// `[pipelines.<name>.dead_letter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeadLetterConfig {
    /// Append JSON Lines to a file.
    File { path: PathBuf },
    /// Produce to a topic (idempotent producer), keyed by the event key.
    Kafka {
        #[serde(flatten)]
        client: KafkaClientConfig,
        topic: String,
    },
    /// Insert into a table, created when missing.
    Postgres {
        /// A connection string (`postgres://…` or `host=… user=…`).
        connection: String,
        /// `schema.table` or `table` (default `ferry_dead_letters`).
        #[serde(default = "default_table")]
        table: String,
    },
}

fn default_table() -> String {
    "ferry_dead_letters".to_string()
}

impl DeadLetterConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let DeadLetterConfig::File { path } = self {
            *path = resolve(base, path);
        }
    }

    pub(crate) fn check(&self) -> Vec<Problem> {
        match self {
            DeadLetterConfig::Postgres { table, .. }
                if !table.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }) =>
            {
                vec![Problem {
                    path: "table".into(),
                    message: "must be `table` or `schema.table` of letters, digits and `_`".into(),
                }]
            }
            DeadLetterConfig::Kafka { topic, .. } if topic.is_empty() => vec![Problem {
                path: "topic".into(),
                message: "must not be empty".into(),
            }],
            _ => Vec::new(),
        }
    }

    /// Opens the destination.
    pub async fn build(&self) -> anyhow::Result<Arc<dyn DeadLetters>> {
        Ok(match self {
            DeadLetterConfig::File { path } => Arc::new(FileDeadLetters::open(path).await?),
            DeadLetterConfig::Kafka { client, topic } => Arc::new(KafkaDeadLetters {
                producer: crate::kafka::idempotent_producer(client, &[])?,
                topic: topic.clone(),
            }),
            DeadLetterConfig::Postgres { connection, table } => {
                Arc::new(PostgresDeadLetters::connect(connection, table).await?)
            }
        })
    }
}

/// What failed.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An event the plugin could not map.
    Event(EventRef),
    /// Input that is not an event.
    Input(String),
    /// An output a sink refused.
    Output(Delivery),
}

/// One event that could not be delivered.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub pipeline: Arc<str>,
    pub position: String,
    pub key: Option<String>,
    pub tenant: Option<String>,
    pub error: String,
    pub attempts: u32,
    /// Digest of the plugin version involved, when one was.
    pub plugin: Option<Arc<str>>,
    pub subject: Subject,
}

impl DeadLetter {
    /// The JSON object written to every destination.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            pipeline: &'a str,
            position: &'a str,
            key: Option<&'a str>,
            tenant: Option<&'a str>,
            error: &'a str,
            attempts: u32,
            plugin: Option<&'a str>,
            failed_at: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            event: Option<Box<RawValue>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            output: Option<OutputJson<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            input: Option<&'a str>,
        }
        let raw_event = |event: &EventRef| {
            RawValue::from_string(jsonl::encode_event(event)).expect("events encode as JSON")
        };
        let (event, output, input) = match &self.subject {
            Subject::Event(event) => (Some(raw_event(event)), None, None),
            Subject::Input(raw) => (None, None, Some(raw.as_str())),
            Subject::Output(delivery) => (
                Some(raw_event(&delivery.event)),
                Some(OutputJson::new(
                    &delivery.output,
                    delivery.key.as_deref(),
                    OutputContext::default(),
                )),
                None,
            ),
        };
        let json = Json {
            pipeline: &self.pipeline,
            position: &self.position,
            key: self.key.as_deref(),
            tenant: self.tenant.as_deref(),
            error: &self.error,
            attempts: self.attempts,
            plugin: self.plugin.as_deref(),
            failed_at: jiff::Timestamp::now().to_string(),
            event,
            output,
            input,
        };
        serde_json::to_string(&json).expect("dead letters serialize to JSON")
    }
}

/// A dead-letter destination.
pub trait DeadLetters: Send + Sync {
    /// Writes `letter`, returning once the destination has it.
    fn write<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Appends dead letters to a JSON Lines file.
pub struct FileDeadLetters {
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl FileDeadLetters {
    pub async fn open(path: &Path) -> anyhow::Result<FileDeadLetters> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("cannot open {} for dead letters", path.display()))?;
        Ok(FileDeadLetters {
            file: tokio::sync::Mutex::new(file),
        })
    }
}

impl DeadLetters for FileDeadLetters {
    fn write<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let mut line = letter.to_json();
            line.push('\n');
            let mut file = self.file.lock().await;
            file.write_all(line.as_bytes()).await?;
            file.flush().await?;
            Ok(())
        }
        .boxed()
    }
}

/// Produces dead letters to a Kafka topic.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters for KafkaDeadLetters {
    fn write<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let value = letter.to_json();
            let mut record = FutureRecord::<str, str>::to(&self.topic).payload(&value);
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map(drop)
                .map_err(|(error, _)| {
                    anyhow::Error::new(error).context(format!(
                        "cannot write the dead letter to topic {}",
                        self.topic
                    ))
                })
        }
        .boxed()
    }
}

/// Inserts dead letters into a Postgres table, reconnecting after a
/// Postgres restart.
pub struct PostgresDeadLetters {
    postgres: Reconnecting,
    insert: String,
}

impl PostgresDeadLetters {
    /// Connects once, creating the table if it is missing, so a wrong
    /// connection string or table name fails at start.
    pub async fn connect(connection: &str, table: &str) -> anyhow::Result<PostgresDeadLetters> {
        let postgres = Reconnecting::new(connection, "dead letters");
        postgres
            .client()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    id bigserial PRIMARY KEY,
                    pipeline text NOT NULL,
                    position text NOT NULL,
                    key text,
                    error text NOT NULL,
                    letter jsonb NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )"
            ))
            .await
            .with_context(|| format!("cannot create the dead-letter table {table}"))?;
        let insert = format!(
            "INSERT INTO {table} (pipeline, position, key, error, letter) VALUES ($1, $2, $3, $4, $5::text::jsonb)"
        );
        Ok(PostgresDeadLetters { postgres, insert })
    }
}

impl DeadLetters for PostgresDeadLetters {
    fn write<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let json = letter.to_json();
            self.postgres
                .client()
                .await?
                .execute(
                    &self.insert,
                    &[
                        &&*letter.pipeline,
                        &letter.position,
                        &letter.key,
                        &letter.error,
                        &json,
                    ],
                )
                .await
                .context("cannot insert the dead letter")?;
            Ok(())
        }
        .boxed()
    }
}
