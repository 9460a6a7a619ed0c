//! Sinks: where outputs are delivered.
//!
//! The delivery engine hands a sink [`Delivery`]s whose order per key it has
//! already settled; a sink returns once the receiver has acknowledged them,
//! or says whether a retry may help. A sink never imports a source.

pub mod file;
pub mod kafka;
pub mod kessel;

use crate::config::{Problem, resolve};
use crate::event::{EventRef, Output};
use crate::kafka::ConsumerLink;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// `[pipelines.<name>.sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON Lines to a file (appended) or, with `path = "-"`, stdout.
    File(file::FileSinkConfig),
    /// JSON Lines to stdout.
    Stdout,
    /// Kessel Inventory API v1beta2 (gRPC): ReportResource / DeleteResource.
    Kessel(Box<kessel::KesselSinkConfig>),
    /// Kafka records (idempotent; optionally one transaction per source
    /// transaction).
    Kafka(Box<kafka::KafkaSinkConfig>),
}

impl SinkConfig {
    /// Builds the sink for pipeline `pipeline`.
    pub async fn build(&self, pipeline: &str) -> anyhow::Result<Arc<dyn Sink>> {
        self.build_linked(pipeline, None).await
    }

    /// Builds the sink for a pipeline whose source is a Kafka consumer
    /// lending itself through `link`, when it is one.
    pub async fn build_linked(
        &self,
        pipeline: &str,
        link: Option<ConsumerLink>,
    ) -> anyhow::Result<Arc<dyn Sink>> {
        let sink = match self {
            SinkConfig::File(config) => file::FileSink::open(pipeline, &config.path).await?,
            SinkConfig::Stdout => file::FileSink::stdout(pipeline),
            SinkConfig::Kessel(config) => {
                return Ok(Arc::new(kessel::KesselSink::new(pipeline, config).await?));
            }
            SinkConfig::Kafka(config) => {
                return Ok(Arc::new(
                    kafka::KafkaSink::new(pipeline, config, link).await?,
                ));
            }
        };
        Ok(Arc::new(sink))
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match self {
            SinkConfig::File(config) => config.path = resolve(base, &config.path),
            SinkConfig::Stdout => {}
            SinkConfig::Kessel(config) => config.resolve_paths(base),
            SinkConfig::Kafka(_) => {}
        }
    }

    /// Problems that types alone cannot catch; paths relative to the sink.
    pub(crate) fn check(&self) -> Vec<Problem> {
        match self {
            SinkConfig::Kessel(config) => config.check(),
            SinkConfig::Kafka(config) => config.check(),
            SinkConfig::File(_) | SinkConfig::Stdout => Vec::new(),
        }
    }
}

/// One output to deliver, with the event it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The source sequence number of the event (engine bookkeeping).
    pub seq: u64,
    /// The event that produced the output: its `position` (unique per event
    /// and stable across replays) with `index` is the basis of deterministic
    /// idempotency keys; its headers and origin feed topic routing.
    pub event: EventRef,
    /// The output's index among its event's outputs.
    pub index: u32,
    /// The ordering key: the output's own, else the event's.
    pub key: Option<String>,
    /// What to send.
    pub output: Output,
    /// Digest of the plugin version that produced it (`sha256:` + 16 hex).
    pub plugin: Arc<str>,
}

impl Delivery {
    /// Position of the event that produced the output.
    pub fn position(&self) -> &str {
        &self.event.position
    }
}

/// Whether retrying a failed delivery may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing failure (receiver unavailable, timeout, throttled).
    Later,
    /// The receiver refuses the output; no retry can help.
    Never,
}

/// Why a sink could not deliver all of a slice of deliveries.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct SinkError {
    pub retry: Retry,
    /// How many deliveries, from the start of the slice, were delivered
    /// before the failure; the failed one is `deliveries[delivered]`.
    pub delivered: usize,
    pub error: anyhow::Error,
}

impl SinkError {
    /// A passing failure at `deliveries[delivered]`.
    pub fn retryable(delivered: usize, error: impl Into<anyhow::Error>) -> SinkError {
        SinkError {
            retry: Retry::Later,
            delivered,
            error: error.into(),
        }
    }

    /// A refusal of `deliveries[delivered]`.
    pub fn permanent(delivered: usize, error: impl Into<anyhow::Error>) -> SinkError {
        SinkError {
            retry: Retry::Never,
            delivered,
            error: error.into(),
        }
    }
}

/// A running sink.
pub trait Sink: Send + Sync {
    /// Delivers `deliveries` in order, returning once all are acknowledged
    /// by the receiver. The engine calls it concurrently for different
    /// ordering keys, never for two slices of the same key at once. On
    /// error, `SinkError::delivered` says how far it got; the engine retries
    /// from there (a receiver may see a delivery twice, and absorbs it by
    /// idempotency).
    fn deliver<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>>;

    /// How the engine must slice deliveries for this sink.
    fn grouping(&self) -> Grouping {
        Grouping::Key
    }
}

/// How a sink wants its deliveries sliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Slices of one unit of order (key, tenant); units go concurrently.
    Key,
    /// Whole source transactions, one at a time, in source order (a sink
    /// that writes each source transaction atomically, such as Kafka in
    /// transactional mode).
    SourceTransaction,
}
