//! The JSON Lines source: change events from a file or stdin, one per line
//! (format in `docs/events.md`). For plugin development, replays and the
//! quick start. It keeps no checkpoint: a file is read from its start.

use super::{InvalidInput, Source, SourceContext, SourceItem};
use crate::config::Problem;
use crate::event::jsonl;
use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// `source = { kind = "file", path = "events.jsonl" }`; `path = "-"` reads
/// stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
}

impl FileSourceConfig {
    pub(crate) fn check(&self) -> Vec<Problem> {
        if self.path == Path::new("-") {
            return Vec::new();
        }
        // Anything readable that is not a directory will do: a FIFO or a
        // character device streams events as well as a regular file.
        let message = match std::fs::metadata(&self.path) {
            Ok(metadata) if metadata.is_dir() => format!("{} is a directory", self.path.display()),
            Ok(_) => return Vec::new(),
            Err(_) => format!("no file at {}", self.path.display()),
        };
        vec![Problem {
            path: "path".into(),
            message,
        }]
    }
}

/// Reads one file (or stdin) to its end.
pub struct FileSource {
    config: FileSourceConfig,
}

impl FileSource {
    pub fn new(config: FileSourceConfig) -> Self {
        FileSource { config }
    }
}

/// The name events from `path` carry in their position: the file name, so a
/// moved file keeps its positions (and the identifiers derived from them).
pub fn position_prefix(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".to_string();
    }
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Source for FileSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        async move {
            let SourceContext {
                items, stop, stats, ..
            } = context;
            let path = &self.config.path;
            let prefix = position_prefix(path);
            let input: Box<dyn AsyncRead + Unpin + Send> = if path == Path::new("-") {
                Box::new(tokio::io::stdin())
            } else {
                Box::new(
                    tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            };
            stats.set_connected(true);
            let mut lines = BufReader::with_capacity(1 << 16, input).lines();
            let mut number = 0u64;
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line,
                    _ = stop.cancelled() => break,
                };
                let Some(line) = line.with_context(|| format!("cannot read {}", path.display()))?
                else {
                    break;
                };
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let position = || format!("{prefix}:{number}");
                let item = match jsonl::decode_event(&line, "file", position) {
                    Ok(event) => SourceItem::Event(event),
                    Err(error) => SourceItem::Invalid(InvalidInput {
                        position: position(),
                        raw: line,
                        error: format!("not a change event: {error}"),
                    }),
                };
                if items.send(item).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .boxed()
    }
}
