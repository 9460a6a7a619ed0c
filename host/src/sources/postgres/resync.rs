//! `ferry resync`: publish the current state again, through the stream.
//!
//! The source runs the configured statement (`source.resync`, else
//! `on_first_start`) on a connection of its own, between two
//! non-transactional logical messages of the prefix `ferry.resync`:
//! `begin <id>` before, `end <id>` after. Postgres decodes the stream in
//! commit order and such messages where they are written, so every
//! transaction the statement commits comes between the two markers, and
//! everything committed before or after keeps its place: nothing missed,
//! nothing out of order. What the statement writes is streamed and
//! checkpointed like any change — a restart after a crash repeats only what
//! was not acknowledged (a statement that commits in chunks, like the SDMX
//! example's procedure, keeps that repeat small).
//!
//! Progress counts the events read between the markers (the resync's, and
//! any other change committed meanwhile) and those acknowledged; it is done
//! when every event up to the end marker is.

use super::Stream;
use crate::sources::{BulkProgress, SourceRequest};
use anyhow::Context as _;
use tokio_postgres::SimpleQueryMessage;

/// The prefix of the resync markers.
pub(super) const PREFIX: &str = "ferry.resync";

/// A resync asked of this source.
pub(super) struct Resync {
    id: String,
    /// The sequence number of the first item after the begin marker, once
    /// it was read.
    first: Option<u64>,
    /// Events read since the begin marker.
    read: u64,
    /// The sequence number after the end marker, once it was read.
    end: Option<u64>,
}

impl Stream {
    /// Serves an operator's request.
    pub(super) fn request(&mut self, request: SourceRequest) {
        let SourceRequest::Resync { reply } = request;
        let Some(sql) = self
            .config
            .resync
            .clone()
            .or_else(|| self.config.on_first_start.clone())
        else {
            let _ = reply.send(Err(format!(
                "pipeline {}: source.resync is not set (nor on_first_start): there is no statement that publishes the current state",
                self.pipeline
            )));
            return;
        };
        if let Some(running) = &self.resync {
            let _ = reply.send(Err(format!(
                "pipeline {}: resync {} is still under way",
                self.pipeline, running.id
            )));
            return;
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        let id = format!("{}-{started}", self.pipeline);
        self.resync = Some(Resync {
            id: id.clone(),
            first: None,
            read: 0,
            end: None,
        });
        tracing::info!(pipeline = %self.pipeline, resync = %id, "Resync: running source.resync.");
        let connection = self.config.connection.clone();
        let pipeline = self.pipeline.clone();
        tokio::spawn(async move {
            let result = run(&connection, &sql, &id).await;
            match &result {
                Ok(answer) => {
                    tracing::info!(%pipeline, resync = %id, answer = answer.as_deref().unwrap_or(""), "Resync: the statement ran; its output is being delivered.")
                }
                Err(error) => {
                    tracing::error!(%pipeline, resync = %id, error = %format!("{error:#}"), "Resync failed.")
                }
            }
            let _ = reply.send(result.map(|_| id).map_err(|error| format!("{error:#}")));
        });
    }

    /// A `ferry.resync` marker read from the stream.
    pub(super) fn resync_marker(&mut self, content: &[u8]) {
        let text = String::from_utf8_lossy(content);
        let Some((what, id)) = text.split_once(' ') else {
            return;
        };
        match what {
            // Another host's resync, or one asked before a restart, shows
            // its progress too.
            "begin" => {
                self.resync = Some(Resync {
                    id: id.to_string(),
                    first: Some(self.next_seq),
                    read: 0,
                    end: None,
                });
                self.context.stats.update_bulk(|bulk| {
                    *bulk = Some(BulkProgress {
                        kind: "resync".into(),
                        id: id.to_string(),
                        unit: "events".into(),
                        total: None,
                        read: 0,
                        delivered: 0,
                        done: false,
                    })
                });
            }
            "end" | "abort" => {
                let Some(resync) = self.resync.as_mut().filter(|r| r.id == id) else {
                    return;
                };
                if what == "abort" || resync.first.is_none() {
                    self.resync = None;
                    return;
                }
                resync.end = Some(self.next_seq);
                let total = resync.read;
                self.context.stats.update_bulk(|bulk| {
                    if let Some(bulk) = bulk.as_mut().filter(|b| b.id == id) {
                        bulk.total = Some(total);
                    }
                });
                self.bulk_acked();
            }
            _ => {}
        }
    }

    /// Counts an event sent while a resync's markers are open.
    pub(super) fn count_resync_item(&mut self) {
        let Some(resync) = &mut self.resync else {
            return;
        };
        if resync.first.is_none() || resync.end.is_some() {
            return;
        }
        resync.read += 1;
        let read = resync.read;
        self.context.stats.update_bulk(|bulk| {
            if let Some(bulk) = bulk {
                bulk.read = read;
            }
        });
    }

    /// A transaction ended while a resync's markers are open: its events
    /// count as delivered once it is acknowledged.
    pub(super) fn resync_chunk(&mut self, seq: u64) {
        if let Some(resync) = &self.resync
            && resync.first.is_some()
            && resync.end.is_none()
        {
            self.bulk_chunks.push_back((seq, resync.read));
        }
    }

    /// Counts the bulk read's chunks that are now acknowledged; a resync
    /// whose every event is acknowledged is done.
    pub(super) fn bulk_acked(&mut self) {
        let mut delivered = None;
        while let Some(&(seq, items)) = self.bulk_chunks.front() {
            if seq >= self.watermark.next() {
                break;
            }
            self.bulk_chunks.pop_front();
            delivered = Some(items);
        }
        let finished = self
            .resync
            .as_ref()
            .and_then(|resync| resync.end.map(|end| (end, resync.read)))
            .filter(|(end, _)| *end <= self.watermark.next());
        if let Some((_, total)) = finished {
            delivered = Some(total);
            let resync = self.resync.take().expect("checked");
            tracing::info!(pipeline = %self.pipeline, resync = %resync.id, events = total, "Resync delivered.");
        }
        // A finished resync set `delivered` too.
        let Some(items) = delivered else {
            return;
        };
        self.context.stats.update_bulk(|bulk| {
            if let Some(bulk) = bulk {
                bulk.delivered = items;
                bulk.done |= finished.is_some();
            }
        });
    }
}

/// Runs `sql` between the markers; the statement's last value, if any.
async fn run(connection: &str, sql: &str, id: &str) -> anyhow::Result<Option<String>> {
    let (client, driver) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
        .await
        .context("cannot connect to Postgres")?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    let mark =
        |what: &str| format!("SELECT pg_logical_emit_message(false, '{PREFIX}', '{what} {id}')");
    client.batch_execute(&mark("begin")).await?;
    let ran = client.simple_query(sql).await;
    let answer = match ran {
        Ok(messages) => messages
            .into_iter()
            .rev()
            .find_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            }),
        Err(error) => {
            let _ = client.batch_execute(&mark("abort")).await;
            return Err(error).context("source.resync failed");
        }
    };
    client.batch_execute(&mark("end")).await?;
    Ok(answer)
}
