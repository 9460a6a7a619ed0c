//! Sources: where change events come from.
//!
//! A source runs as its own task and sends [`SourceItem`]s, in source order,
//! into a bounded channel: when the pipeline falls behind, the channel fills
//! and the source waits (backpressure). Items are numbered in the order they
//! are sent, from 0; the engine acknowledges numbers whose outputs are all
//! delivered (or dealt with by the error policy), in any order, and a source
//! checkpoints only up to its low watermark ([`crate::checkpoint::Watermark`]).
//! A source never imports a sink.

pub mod file;
pub mod kafka;
pub mod postgres;

use crate::config::{Problem, resolve};
use crate::event::ChangeEvent;
use crate::kafka::ConsumerLink;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `[pipelines.<name>.source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// JSON Lines change events from a file or stdin.
    File(file::FileSourceConfig),
    /// Logical replication from Postgres: an outbox table, logical
    /// messages, or row changes.
    Postgres(Box<postgres::PostgresSourceConfig>),
    /// A Kafka consumer group: Debezium change events, outbox EventRouter
    /// output, or raw records.
    Kafka(Box<kafka::KafkaSourceConfig>),
}

impl SourceConfig {
    /// The `kind` it was configured with.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Kafka(_) => "kafka",
        }
    }

    /// Builds the source. A Kafka source lends its consumer to the sink
    /// through `link` (see [`crate::kafka::ConsumerLink`]).
    pub fn build(&self, link: &ConsumerLink) -> anyhow::Result<Box<dyn Source>> {
        match self {
            SourceConfig::File(config) => Ok(Box::new(file::FileSource::new(config.clone()))),
            SourceConfig::Postgres(config) => {
                Ok(Box::new(postgres::PostgresSource::new((**config).clone())))
            }
            SourceConfig::Kafka(config) => Ok(Box::new(kafka::KafkaSource::new(
                (**config).clone(),
                link.clone(),
            ))),
        }
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match self {
            SourceConfig::File(config) => config.path = resolve(base, &config.path),
            SourceConfig::Postgres(_) | SourceConfig::Kafka(_) => {}
        }
    }

    /// Problems that types alone cannot catch; paths relative to the source.
    pub(crate) fn check(&self) -> Vec<Problem> {
        match self {
            SourceConfig::File(config) => config.check(),
            SourceConfig::Postgres(config) => config.check(),
            SourceConfig::Kafka(config) => config.check(),
        }
    }
}

/// What a source sends, in source order.
#[derive(Debug)]
pub enum SourceItem {
    /// A change event, for the plugin.
    Event(ChangeEvent),
    /// Input that is not a change event. It keeps its place in the stream
    /// and gets the pipeline's error policy, like an event that fails.
    Invalid(InvalidInput),
    /// The end of a source transaction: every event since the previous end
    /// belongs to one transaction. Sources that know transaction
    /// boundaries send it (a sink writing each source transaction atomically
    /// needs it); others need not. It has a sequence number like any item.
    TransactionEnd,
}

/// Input a source could not decode.
#[derive(Debug, Clone)]
pub struct InvalidInput {
    /// Where it was (`events.jsonl:7`).
    pub position: String,
    /// The input as read.
    pub raw: String,
    /// Why it is not an event.
    pub error: String,
}

/// What a running source works with.
pub struct SourceContext {
    /// The pipeline the source feeds, for logs and metrics.
    pub pipeline: Arc<str>,
    /// Where items go, in source order. The n-th item sent (from 0) has
    /// sequence number n.
    pub items: mpsc::Sender<SourceItem>,
    /// Sequence numbers of items that are done: every output delivered, or
    /// the error policy applied. In any order, each number once.
    pub acks: mpsc::UnboundedReceiver<Vec<u64>>,
    /// Fires when the pipeline stops: stop reading, checkpoint what is
    /// acknowledged, return.
    pub stop: CancellationToken,
    /// Where the source reports its checkpoint and lag (status, metrics).
    pub stats: Arc<SourceStats>,
    /// Requests from operators. A source that serves none drops the
    /// receiver, and the requester is told it cannot.
    pub requests: mpsc::UnboundedReceiver<SourceRequest>,
}

/// An operator's request to a running source.
#[derive(Debug)]
pub enum SourceRequest {
    /// Publish the current state again (`ferry resync`). Answers, once the
    /// source has started it, the id its `BulkProgress` carries, or why it
    /// cannot.
    Resync {
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// A source's progress, as status and metrics show it.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// The last position checkpointed at the source (a confirmed LSN,
    /// committed offsets), as text.
    checkpoint: std::sync::Mutex<Option<String>>,
    /// How far the checkpoint is behind the source's end, in `lag_unit`s.
    pub lag: std::sync::atomic::AtomicU64,
    /// `bytes` (Postgres WAL) or `records` (Kafka); empty when the source
    /// has no notion of lag.
    lag_unit: std::sync::OnceLock<&'static str>,
    /// Connected to what it reads (a replication session, a consumer group,
    /// an open file): readiness.
    connected: std::sync::atomic::AtomicBool,
    /// The bulk read under way or last done (an initial snapshot, a
    /// resync), for progress bars.
    bulk: std::sync::Mutex<Option<BulkProgress>>,
}

/// How far a bulk read (an initial snapshot, a resync) has come.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkProgress {
    /// `snapshot` or `resync`.
    pub kind: String,
    /// Which one (a resync's id, a snapshot's LSN).
    pub id: String,
    /// What is counted: `rows`, `events`.
    pub unit: String,
    /// How many there are, when known.
    pub total: Option<u64>,
    /// Read from the source and sent into the pipeline.
    pub read: u64,
    /// Delivered by the sink (acknowledged).
    pub delivered: u64,
    /// Every item read and delivered.
    pub done: bool,
}

impl SourceStats {
    pub fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected
            .store(connected, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn checkpoint(&self) -> Option<String> {
        self.checkpoint.lock().unwrap().clone()
    }

    pub fn set_checkpoint(&self, position: impl Into<String>) {
        *self.checkpoint.lock().unwrap() = Some(position.into());
    }

    pub fn lag_unit(&self) -> Option<&'static str> {
        self.lag_unit.get().copied()
    }

    pub fn bulk(&self) -> Option<BulkProgress> {
        self.bulk.lock().unwrap().clone()
    }

    /// Updates the bulk read's progress (`None` starts none).
    pub fn update_bulk(&self, update: impl FnOnce(&mut Option<BulkProgress>)) {
        update(&mut self.bulk.lock().unwrap());
    }

    /// Records the lag, in `unit`s.
    pub fn set_lag(&self, lag: u64, unit: &'static str) {
        let _ = self.lag_unit.set(unit);
        self.lag.store(lag, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A running source.
pub trait Source: Send {
    /// Reads until the input ends or `stop` fires, sending items in order.
    /// Returns early, without error, when the item receiver is gone.
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, anyhow::Result<()>>;
}
