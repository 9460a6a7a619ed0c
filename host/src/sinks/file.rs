//! The JSON Lines sink: one line per output, with the pipeline, the source
//! position and the plugin digest beside it (format in `docs/events.md`).

use super::{Delivery, Sink, SinkError};
use crate::event::jsonl::{OutputContext, OutputJson};
use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

/// `sink = { kind = "file", path = "out.jsonl" }`; `path = "-"` is stdout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
}

/// Appends output lines to a file or stdout; acknowledged once flushed.
pub struct FileSink {
    pipeline: String,
    out: Mutex<Box<dyn AsyncWrite + Unpin + Send>>,
}

impl FileSink {
    /// Appends to `path` (created if missing); `-` is stdout.
    pub async fn open(pipeline: &str, path: &Path) -> anyhow::Result<FileSink> {
        if path == Path::new("-") {
            return Ok(FileSink::stdout(pipeline));
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        Ok(FileSink {
            pipeline: pipeline.to_string(),
            out: Mutex::new(Box::new(file)),
        })
    }

    /// Writes to stdout.
    pub fn stdout(pipeline: &str) -> FileSink {
        FileSink {
            pipeline: pipeline.to_string(),
            out: Mutex::new(Box::new(tokio::io::stdout())),
        }
    }
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        async move {
            let mut buffer = Vec::with_capacity(deliveries.len() * 256);
            for delivery in deliveries {
                let context = OutputContext {
                    pipeline: Some(&self.pipeline),
                    position: Some(delivery.position()),
                    plugin: Some(&delivery.plugin),
                };
                let line = OutputJson::new(&delivery.output, delivery.key.as_deref(), context);
                serde_json::to_writer(&mut buffer, &line).expect("outputs serialize to JSON");
                buffer.push(b'\n');
            }
            let mut out = self.out.lock().await;
            // A partial write is retried whole: the file may then hold a
            // line twice (at least once), never a line missing.
            out.write_all(&buffer)
                .await
                .and(out.flush().await)
                .map_err(|e| SinkError::retryable(0, anyhow::Error::new(e).context("cannot write")))
        }
        .boxed()
    }
}
