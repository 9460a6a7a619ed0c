//! Sinks: where outputs are delivered.
//!
//! The delivery engine hands a sink [`Delivery`]s whose order per key it has
//! already settled; a sink returns once the receiver has acknowledged them,
//! or says whether a retry may help. A sink never imports a source.

pub mod file;

use crate::config::{Problem, resolve};
use crate::event::Output;
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
}

impl SinkConfig {
    /// Builds the sink for pipeline `pipeline`.
    pub async fn build(&self, pipeline: &str) -> anyhow::Result<Arc<dyn Sink>> {
        let sink = match self {
            SinkConfig::File(config) => file::FileSink::open(pipeline, &config.path).await?,
            SinkConfig::Stdout => file::FileSink::stdout(pipeline),
        };
        Ok(Arc::new(sink))
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match self {
            SinkConfig::File(config) => config.path = resolve(base, &config.path),
            SinkConfig::Stdout => {}
        }
    }

    /// Problems that types alone cannot catch; paths relative to the sink.
    pub(crate) fn check(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// One output to deliver, with where it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Position of the event that produced it: unique per event and stable
    /// across replays (with `index`, the basis of deterministic idempotency
    /// keys).
    pub position: Arc<str>,
    /// The output's index among its event's outputs.
    pub index: u32,
    /// The ordering key: the output's own, else the event's.
    pub key: Option<String>,
    /// The event's tenant.
    pub tenant: Option<Arc<str>>,
    /// The event's source transaction; outputs of one source transaction
    /// are contiguous.
    pub transaction_id: Option<Arc<str>>,
    /// What to send.
    pub output: Output,
    /// Digest of the plugin version that produced it (`sha256:` + 16 hex).
    pub plugin: Arc<str>,
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
}
