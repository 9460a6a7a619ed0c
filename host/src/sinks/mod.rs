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
    /// Position of the event that produced it.
    pub position: Arc<str>,
    /// The ordering key: the output's own, else the event's.
    pub key: Option<String>,
    /// What to send.
    pub output: Output,
    /// Digest of the plugin version that produced it.
    pub plugin: Arc<str>,
}

/// Why a sink could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A passing failure (receiver unavailable, timeout): retry later.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// No retry can help (the receiver refuses the output).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

/// A running sink.
pub trait Sink: Send + Sync {
    /// Delivers `deliveries` in order, returning once all are acknowledged.
    /// After an error, any prefix of them may have been delivered: the
    /// engine retries them all, and receivers absorb the repeats.
    fn deliver<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>>;
}
