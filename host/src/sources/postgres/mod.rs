//! The Postgres source: logical replication (the streaming protocol, with
//! the built-in `pgoutput` plugin) of an outbox table, of logical messages,
//! or of listed tables.
//!
//! - `pgwire-replication` runs the replication connection: authentication,
//!   `START_REPLICATION`, keepalive replies and standby status updates, and
//!   decodes transaction boundaries and logical messages; `pgoutput.rs`
//!   decodes row changes; `values.rs` turns column values into JSON.
//! - A side connection (tokio-postgres) checks the database, creates the
//!   publication and the slot when missing, and moves the slot on at stop.
//!
//! Checkpoints: every transaction's items are followed by a
//! `TransactionEnd`; the slot's confirmed flush LSN is raised to a
//! transaction's end only when every item up to its `TransactionEnd` is
//! acknowledged (the low watermark). When nothing is pending, a keepalive's
//! WAL end is confirmed, so an idle or filtered-out stream never makes WAL
//! pile up.
//!
//! Reconnection: a lost connection (Postgres restarted, walsender
//! terminated) is retried with backoff, resuming from the slot. What was
//! already sent is not sent again: transactions up to the last one sent
//! whole are skipped, and a transaction cut in the middle resumes after
//! its last sent change. A slot in use by another host is waited for.

mod pgoutput;
mod resync;
mod snapshot;
mod values;

use crate::checkpoint::Watermark;
use crate::config::Problem;
use crate::event::{ChangeEvent, Header, Operation};
use crate::sources::{InvalidInput, Source, SourceContext, SourceItem};
use anyhow::{Context as _, bail};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use pgoutput::{Change, Decoded, Decoder, Relation, Value};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Microseconds from the Unix epoch to Postgres' (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Session settings that make value text stable whatever the server's
/// defaults (see `values.rs`).
const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=3";

/// `[pipelines.<name>.source] kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// A libpq-style connection string (`host=… port=… user=… password=…
    /// dbname=…` or `postgres://…`). The user needs the REPLICATION
    /// attribute (or superuser).
    pub connection: String,
    /// The logical replication slot (created with `pgoutput` if missing).
    pub slot: String,
    /// The publication (created if missing: for the outbox table, for the
    /// listed tables, or empty for messages).
    pub publication: String,
    /// `outbox`, `messages` or `tables`.
    pub mode: Mode,
    /// `outbox`: the outbox table (default `public.outbox`).
    #[serde(default = "default_outbox_table")]
    pub table: String,
    /// `messages`: the prefix of the logical messages to read.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `tables`: the tables to stream (`schema.table` or `table`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The column (outbox, tables) or top-level JSON field (messages)
    /// holding the tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `messages`: the top-level JSON field holding the ordering key.
    #[serde(default)]
    pub key: Option<String>,
    /// `tables`: `initial` (the default) first reads the tables' rows,
    /// consistently with the stream (an exported snapshot), when the slot is
    /// created; `never` streams changes only.
    #[serde(default)]
    pub snapshot: Option<SnapshotMode>,
    /// SQL run once, right after this source created its slot (the first
    /// start), on the source database; what it writes is streamed. The SDMX
    /// example publishes every structure this way.
    #[serde(default)]
    pub on_first_start: Option<String>,
    /// SQL `ferry resync` runs on the source database to publish the
    /// current state again through the stream (default: `on_first_start`).
    #[serde(default)]
    pub resync: Option<String>,
    /// How often, at most, the confirmed position is reported to Postgres,
    /// in milliseconds (default 200).
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
}

/// What the source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rows inserted into a Debezium-style outbox table.
    Outbox,
    /// `pg_logical_emit_message` messages with a prefix.
    Messages,
    /// Row changes of listed tables.
    Tables,
}

/// Whether the tables mode reads the tables' rows first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// When the slot is created.
    Initial,
    /// Changes only.
    Never,
}

fn default_outbox_table() -> String {
    "public.outbox".into()
}

fn default_status_interval_ms() -> u64 {
    200
}

/// `schema.table`, with `public` when no schema is given.
fn qualified(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    }
}

/// Whether `name` can be used as a slot or publication name unquoted.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PostgresSourceConfig {
    /// Problems that types alone cannot catch; paths relative to the source.
    pub(crate) fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut add = |path: &str, message: String| {
            problems.push(Problem {
                path: path.into(),
                message,
            })
        };
        match self.connection.parse::<tokio_postgres::Config>() {
            Ok(config) => {
                if config.get_hosts().is_empty() {
                    add("connection", "names no host".into());
                }
            }
            // The parser's message does not echo the string (it may hold a
            // password).
            Err(error) => add("connection", format!("is not a connection string: {error}")),
        }
        for (path, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            if !is_identifier(name) {
                add(
                    path,
                    format!("{name:?} must be 1 to 63 lowercase letters, digits or underscores"),
                );
            }
        }
        match self.mode {
            Mode::Messages if self.prefix.as_deref().is_none_or(str::is_empty) => add(
                "prefix",
                "the messages mode needs the prefix to read".into(),
            ),
            Mode::Tables if self.tables.is_empty() => {
                add("tables", "the tables mode needs at least one table".into())
            }
            _ => {}
        }
        if self.snapshot == Some(SnapshotMode::Initial) && self.mode != Mode::Tables {
            add(
                "snapshot",
                "only the tables mode reads a snapshot (outbox and messages modes can publish existing state with on_first_start)".into(),
            );
        }
        if self.status_interval_ms == 0 {
            add("status_interval_ms", "must be at least 1".into());
        }
        problems
    }

    /// Whether the slot's creation comes with an initial snapshot.
    fn snapshots(&self) -> bool {
        self.mode == Mode::Tables && self.snapshot != Some(SnapshotMode::Never)
    }

    /// The tables the publication covers.
    fn published_tables(&self) -> Vec<String> {
        match self.mode {
            Mode::Outbox => vec![qualified(&self.table)],
            Mode::Tables => self.tables.iter().map(|t| qualified(t)).collect(),
            Mode::Messages => Vec::new(),
        }
    }
}

/// Streams changes from a replication slot.
pub struct PostgresSource {
    config: PostgresSourceConfig,
}

impl PostgresSource {
    pub fn new(config: PostgresSourceConfig) -> PostgresSource {
        PostgresSource { config }
    }
}

impl Source for PostgresSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        async move { Stream::new(self.config, context).run().await }.boxed()
    }
}

/// Why a session ended.
enum Ended {
    /// The pipeline stopped, or no longer takes items.
    Stopped,
    /// The connection was lost: reconnect.
    Lost(anyhow::Error),
}

/// The transaction being read.
struct Transaction {
    commit_lsn: Lsn,
    xid: u32,
    commit_time: i64,
    /// Changes and messages seen so far (the index of the next one).
    index: u64,
    /// Changes with a lower index were sent before a reconnection.
    resume_after: u64,
    /// Sent whole before a reconnection: skip it.
    skip: bool,
}

/// The source's state, kept across sessions.
struct Stream {
    config: PostgresSourceConfig,
    pipeline: Arc<str>,
    context: SourceContext,
    published: HashSet<String>,
    next_seq: u64,
    watermark: Watermark,
    /// (sequence number of a `TransactionEnd`, the transaction's end LSN),
    /// oldest first, not yet confirmed.
    ends: VecDeque<(u64, Lsn)>,
    /// The commit LSN of the last transaction sent whole.
    sent_through: Lsn,
    /// A transaction cut by a lost connection: its commit LSN and how many
    /// of its changes were sent.
    partial: Option<(Lsn, u64)>,
    /// The LSN last handed to the replication client as confirmed.
    confirmed: Lsn,
    /// The server's WAL end at the last keepalive (for the lag).
    wal_end: Lsn,
    /// The primary key columns of each streamed table (`schema.table`):
    /// the ordering key, whatever the replica identity.
    primary_keys: std::collections::HashMap<String, Vec<String>>,
    /// The slot is to be created (or created again) with an initial
    /// snapshot before streaming.
    snapshot_due: bool,
    /// A bulk read's chunks (snapshot chunks, a resync's transactions) not
    /// yet acknowledged: (sequence number of the chunk's `TransactionEnd`,
    /// items read up to it).
    bulk_chunks: VecDeque<(u64, u64)>,
    /// The resync under way.
    resync: Option<resync::Resync>,
}

impl Stream {
    fn new(config: PostgresSourceConfig, context: SourceContext) -> Stream {
        Stream {
            published: config.published_tables().into_iter().collect(),
            pipeline: context.pipeline.clone(),
            config,
            context,
            next_seq: 0,
            watermark: Watermark::starting_at(0),
            ends: VecDeque::new(),
            sent_through: Lsn::ZERO,
            partial: None,
            confirmed: Lsn::ZERO,
            wal_end: Lsn::ZERO,
            primary_keys: Default::default(),
            snapshot_due: false,
            bulk_chunks: VecDeque::new(),
            resync: None,
        }
    }

    async fn run(mut self) -> anyhow::Result<()> {
        // Problems of the database (no table, no privilege) end the
        // pipeline with a clear error at start; later, every failure is a
        // reason to reconnect.
        self.prepare()
            .await
            .context("the Postgres source cannot start")?;
        let mut backoff = Duration::from_millis(250);
        loop {
            let ended = if self.snapshot_due {
                self.snapshot_session().await
            } else {
                self.session(None).await
            };
            self.context.stats.set_connected(false);
            match ended {
                Ended::Stopped => break,
                Ended::Lost(error) => {
                    let in_use = format!("{error:#}").contains("is active for PID");
                    if in_use {
                        tracing::info!(
                            pipeline = %self.pipeline,
                            slot = %self.config.slot,
                            "The replication slot is in use by another process; waiting for it."
                        );
                    } else {
                        tracing::warn!(
                            pipeline = %self.pipeline,
                            error = %format!("{error:#}"),
                            retry_in_ms = backoff.as_millis() as u64,
                            "The replication connection to Postgres was lost; reconnecting."
                        );
                    }
                    if !self.wait(backoff).await {
                        break;
                    }
                    backoff = if in_use {
                        Duration::from_secs(2)
                    } else {
                        (backoff * 2).min(Duration::from_secs(10))
                    };
                }
            }
        }
        self.finish().await;
        Ok(())
    }

    /// Waits `delay`, taking acknowledgements meanwhile; false when the
    /// pipeline stopped.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                _ = self.context.stop.cancelled() => return false,
                Some(acks) = self.context.acks.recv() => {
                    self.take_acks(acks);
                }
                Some(request) = self.context.requests.recv() => self.request(request),
            }
        }
    }

    /// A side connection to the source database.
    async fn side_connection(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, driver) =
            tokio_postgres::connect(&self.config.connection, tokio_postgres::NoTls)
                .await
                .context("cannot connect to Postgres")?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(client)
    }

    /// Checks the database and creates the publication and the slot when
    /// missing; on the slot's creation, runs `on_first_start`.
    async fn prepare(&mut self) -> anyhow::Result<()> {
        let client = self.side_connection().await?;
        let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
        if wal_level != "logical" {
            bail!(
                "wal_level is {wal_level:?}; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart Postgres)"
            );
        }
        let may_replicate: bool = client
            .query_one(
                "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await?
            .get(0);
        if !may_replicate {
            let user: String = client
                .query_one("SELECT current_user::text", &[])
                .await?
                .get(0);
            bail!(
                "the user {user:?} may not replicate: it needs the REPLICATION attribute (ALTER ROLE {user} REPLICATION)"
            );
        }
        let tables = self.config.published_tables();
        for table in &tables {
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
                .await?
                .get(0);
            if !exists {
                let key = if self.config.mode == Mode::Outbox {
                    "table"
                } else {
                    "tables"
                };
                bail!("source.{key}: there is no table {table} in the database");
            }
            let columns: Vec<String> = client
                .query(
                    "SELECT a.attname::text FROM pg_index i
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                     WHERE i.indrelid = to_regclass($1) AND i.indisprimary
                     ORDER BY array_position(i.indkey, a.attnum)",
                    &[table],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            self.primary_keys.insert(table.clone(), columns);
        }
        let publication = &self.config.publication;
        let has_publication = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await?
            .is_some();
        if !has_publication {
            let list: Vec<String> = tables
                .iter()
                .map(|table| {
                    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
                    format!("{}.{}", quote(schema), quote(name))
                })
                .collect();
            let sql = if list.is_empty() {
                format!("CREATE PUBLICATION {publication}")
            } else {
                format!(
                    "CREATE PUBLICATION {publication} FOR TABLE {}",
                    list.join(", ")
                )
            };
            if let Err(error) = client.batch_execute(&sql).await
                && !is_duplicate(&error)
            {
                return Err(error).context(format!("cannot create the publication {publication}"));
            }
            tracing::info!(pipeline = %self.pipeline, publication, "Created the publication.");
        }
        let slot = &self.config.slot;
        let existing = client
            .query_opt(
                "SELECT database::text, plugin::text, database = current_database() FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await?;
        if let Some(row) = &existing {
            let (database, plugin, here): (Option<String>, Option<String>, Option<bool>) =
                (row.get(0), row.get(1), row.get(2));
            if here != Some(true) || plugin.as_deref() != Some("pgoutput") {
                bail!(
                    "source.slot: the replication slot {slot} exists for database {} with plugin {}; this source needs a pgoutput slot of its own database (choose another name, or drop the slot)",
                    database.as_deref().unwrap_or("(none: a physical slot)"),
                    plugin.as_deref().unwrap_or("(none)"),
                );
            }
        }
        if self.config.snapshots() {
            // Created (or, after an interrupted snapshot, created again) by
            // the first session, which reads the snapshot.
            self.snapshot_due = existing.is_none() || self.snapshot_pending(&client).await?;
        } else if existing.is_none() {
            match client
                .query_one(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[slot],
                )
                .await
            {
                Ok(row) => {
                    let lsn: String = row.get(0);
                    tracing::info!(pipeline = %self.pipeline, slot, %lsn, "Created the replication slot: streaming starts here.");
                    if let Some(sql) = &self.config.on_first_start {
                        client.batch_execute(sql).await.context(
                            "source.on_first_start failed (it runs once, when the slot is created)",
                        )?;
                        tracing::info!(pipeline = %self.pipeline, "Ran on_first_start.");
                    }
                }
                // Another host created it first: it runs on_first_start.
                Err(error) if is_duplicate(&error) => {}
                Err(error) => {
                    return Err(error)
                        .context(format!("cannot create the replication slot {slot}"));
                }
            }
        }
        Ok(())
    }

    /// One replication connection, until it is lost or the pipeline stops;
    /// on `started`, a session that already started (after a snapshot).
    async fn session(&mut self, started: Option<ReplicationClient>) -> Ended {
        let connected = match started {
            Some(client) => Ok(client),
            None => self.connect().await,
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(error) => return Ended::Lost(error),
        };
        tracing::info!(
            pipeline = %self.pipeline,
            slot = %self.config.slot,
            confirmed_lsn = %self.confirmed,
            "Streaming from the replication slot."
        );
        self.context.stats.set_connected(true);
        let mut decoder = Decoder::default();
        let mut transaction: Option<Transaction> = None;
        let ended = loop {
            let event = tokio::select! {
                biased;
                _ = self.context.stop.cancelled() => break Ended::Stopped,
                Some(acks) = self.context.acks.recv() => {
                    if let Some(lsn) = self.take_acks(acks) {
                        client.update_applied_lsn(lsn);
                    }
                    continue;
                }
                Some(request) = self.context.requests.recv() => {
                    self.request(request);
                    continue;
                }
                event = client.recv() => event,
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => break Ended::Lost(anyhow::anyhow!("the replication stream ended")),
                Err(error) => break Ended::Lost(error.into()),
            };
            let result = match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    let resume_after = match self.partial {
                        Some((lsn, sent)) if lsn == final_lsn => sent,
                        _ => 0,
                    };
                    transaction = Some(Transaction {
                        commit_lsn: final_lsn,
                        xid,
                        commit_time: commit_time_micros + POSTGRES_EPOCH_MICROS,
                        index: 0,
                        resume_after,
                        skip: !self.sent_through.is_zero() && final_lsn <= self.sent_through,
                    });
                    Ok(())
                }
                ReplicationEvent::XLogData { data, .. } => match decoder.decode(&data) {
                    Ok(Decoded::Nothing) => Ok(()),
                    Ok(Decoded::Change(change)) => match transaction.as_mut() {
                        Some(transaction) => self.change(&decoder, transaction, change).await,
                        None => Err(anyhow::anyhow!("a change outside a transaction")),
                    },
                    Err(error) => Err(error.context("cannot decode the replication stream")),
                },
                ReplicationEvent::Message {
                    transactional,
                    lsn,
                    prefix,
                    content,
                } => match (transactional, transaction.as_mut()) {
                    (true, Some(transaction)) => self.message(transaction, &prefix, &content).await,
                    (true, None) => Err(anyhow::anyhow!(
                        "a transactional message outside a transaction"
                    )),
                    (false, _) if prefix == resync::PREFIX => {
                        self.resync_marker(&content);
                        Ok(())
                    }
                    (false, _) if self.config.prefix.as_deref() != Some(prefix.as_str()) => Ok(()),
                    (false, _) => {
                        // Alone in its own "transaction" at its own LSN.
                        let mut alone = Transaction {
                            commit_lsn: lsn,
                            xid: 0,
                            commit_time: 0,
                            index: 0,
                            resume_after: 0,
                            skip: !self.sent_through.is_zero() && lsn <= self.sent_through,
                        };
                        match self.message(&mut alone, &prefix, &content).await {
                            Ok(()) if !alone.skip => self.end_transaction(lsn, lsn).await,
                            other => other,
                        }
                    }
                },
                ReplicationEvent::Commit { lsn, end_lsn, .. } => match transaction.take() {
                    Some(transaction) if transaction.skip => Ok(()),
                    Some(_) => self.end_transaction(lsn, end_lsn).await,
                    None => Err(anyhow::anyhow!("a commit outside a transaction")),
                },
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    self.wal_end = wal_end;
                    if transaction.is_none()
                        && self.watermark.next() == self.next_seq
                        && wal_end > self.confirmed
                    {
                        // Nothing pending: what the server has sent holds
                        // nothing for us up to its WAL end.
                        self.confirmed = wal_end;
                        client.update_applied_lsn(wal_end);
                    }
                    self.report_progress();
                    Ok(())
                }
                ReplicationEvent::StoppedAt { .. } => Ok(()),
            };
            if let Err(error) = result {
                if self.context.items.is_closed() {
                    break Ended::Stopped;
                }
                break Ended::Lost(error);
            }
        };
        if let Some(transaction) = transaction.filter(|t| !t.skip && t.index > 0) {
            // Cut in the middle: resume after what was sent.
            let sent = transaction.index.max(transaction.resume_after);
            self.partial = Some((transaction.commit_lsn, sent));
        }
        let _ = client.shutdown().await;
        ended
    }

    async fn connect(&self) -> anyhow::Result<ReplicationClient> {
        ReplicationClient::connect(self.replication_config()?)
            .await
            .context("cannot start replication")
    }

    /// The replication connection's settings: the source's connection
    /// string, slot and publication, resuming from what was confirmed.
    fn replication_config(&self) -> anyhow::Result<ReplicationConfig> {
        let config: tokio_postgres::Config = self
            .config
            .connection
            .parse()
            .context("source.connection is not a connection string")?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let mut replication = ReplicationConfig::new(
            host,
            config.get_user().unwrap_or("postgres"),
            password,
            config.get_dbname().unwrap_or("postgres"),
            self.config.slot.clone(),
            self.config.publication.clone(),
        )
        .with_port(port)
        .with_start_lsn(Lsn::ZERO)
        .with_status_interval(Duration::from_millis(self.config.status_interval_ms))
        .with_wakeup_interval(Duration::from_secs(5))
        .with_options(SESSION_OPTIONS);
        if !self.confirmed.is_zero() {
            replication = replication.with_ack_lsn(self.confirmed);
        }
        replication.application_name = Some(format!("ferry:{}", self.pipeline));
        Ok(replication)
    }

    /// Sends `item`; an error when the pipeline no longer takes items.
    async fn send(&mut self, item: SourceItem) -> anyhow::Result<()> {
        let is_end = matches!(item, SourceItem::TransactionEnd);
        self.context
            .items
            .send(item)
            .await
            .map_err(|_| anyhow::anyhow!("the pipeline stopped taking items"))?;
        if !is_end {
            self.count_resync_item();
        }
        self.next_seq += 1;
        Ok(())
    }

    /// Ends a transaction: its `TransactionEnd` carries its end LSN.
    async fn end_transaction(&mut self, commit_lsn: Lsn, end_lsn: Lsn) -> anyhow::Result<()> {
        let seq = self.next_seq;
        self.send(SourceItem::TransactionEnd).await?;
        self.ends.push_back((seq, end_lsn));
        self.resync_chunk(seq);
        self.sent_through = commit_lsn;
        self.partial = None;
        Ok(())
    }

    /// Publishes the confirmed LSN and the slot's lag behind the server's
    /// WAL end.
    fn report_progress(&self) {
        let stats = &self.context.stats;
        if !self.confirmed.is_zero() {
            stats.set_checkpoint(self.confirmed.to_string());
        }
        let lag = self
            .wal_end
            .as_u64()
            .saturating_sub(self.confirmed.as_u64());
        stats.set_lag(if self.confirmed.is_zero() { 0 } else { lag }, "bytes");
    }

    /// Takes acknowledgements; returns the LSN to confirm if it moved.
    fn take_acks(&mut self, acks: Vec<u64>) -> Option<Lsn> {
        for seq in acks {
            self.watermark.ack(seq);
        }
        if !self.bulk_chunks.is_empty() {
            self.bulk_acked();
        }
        let mut confirm = None;
        while let Some(&(seq, lsn)) = self.ends.front() {
            if seq >= self.watermark.next() {
                break;
            }
            self.ends.pop_front();
            confirm = Some(lsn);
        }
        let lsn = confirm.filter(|lsn| *lsn > self.confirmed)?;
        self.confirmed = lsn;
        self.report_progress();
        tracing::debug!(
            pipeline = %self.pipeline,
            confirmed_lsn = %lsn,
            slot_lag_bytes = self.wal_end.as_u64().saturating_sub(lsn.as_u64()),
            "Confirmed a position to Postgres."
        );
        Some(lsn)
    }

    /// The stream has ended: take the last acknowledgements and move the
    /// slot to what they confirm (the replication connection may not have
    /// reported it before closing).
    async fn finish(&mut self) {
        while let Some(acks) = self.context.acks.recv().await {
            self.take_acks(acks);
        }
        if self.confirmed.is_zero() {
            return;
        }
        let Ok(client) = self.side_connection().await else {
            return;
        };
        let lsn = self.confirmed.to_string();
        for _ in 0..20 {
            match client
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&self.config.slot, &lsn],
                )
                .await
            {
                Ok(_) => break,
                // Behind the slot already: nothing to do.
                Err(error) if format!("{error:?}").contains("minimum is") => break,
                // The walsender has not released the slot yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tracing::info!(pipeline = %self.pipeline, confirmed_lsn = %lsn, "The replication slot is at the last delivered transaction.");
    }

    /// A row change of the transaction.
    async fn change(
        &mut self,
        decoder: &Decoder,
        transaction: &mut Transaction,
        change: Change,
    ) -> anyhow::Result<()> {
        let index = transaction.index;
        transaction.index += 1;
        if transaction.skip || index < transaction.resume_after {
            return Ok(());
        }
        let position = format!("{}:{index}", transaction.commit_lsn);
        let item = match change {
            Change::Truncate { relations } => {
                let names: Vec<String> = relations
                    .iter()
                    .filter_map(|oid| decoder.relation(*oid).ok().map(Relation::qualified))
                    .collect();
                tracing::warn!(
                    pipeline = %self.pipeline,
                    position,
                    tables = %names.join(", "),
                    "TRUNCATE is not streamed as events; consumers do not see the rows go."
                );
                None
            }
            Change::Insert { relation, new } => {
                let relation = decoder.relation(relation)?;
                match self.config.mode {
                    Mode::Outbox => Some(self.outbox_event(relation, &new, transaction, position)),
                    _ => Some(self.row_event(
                        relation,
                        Operation::Create,
                        None,
                        Some(&new),
                        transaction,
                        position,
                    )),
                }
            }
            Change::Update { relation, old, new } => {
                let relation = decoder.relation(relation)?;
                match self.config.mode {
                    // Outbox rows are append-only: an update is no event.
                    Mode::Outbox => None,
                    _ => Some(self.row_event(
                        relation,
                        Operation::Update,
                        old.as_deref(),
                        Some(&new),
                        transaction,
                        position,
                    )),
                }
            }
            Change::Delete { relation, old } => {
                let relation = decoder.relation(relation)?;
                match self.config.mode {
                    // The guide's pruning: the insert carried the event.
                    Mode::Outbox => None,
                    _ => Some(self.row_event(
                        relation,
                        Operation::Delete,
                        Some(&old),
                        None,
                        transaction,
                        position,
                    )),
                }
            }
        };
        match item {
            Some(item) => self.send(item).await,
            None => Ok(()),
        }
    }

    /// A logical message of the transaction.
    async fn message(
        &mut self,
        transaction: &mut Transaction,
        prefix: &str,
        content: &[u8],
    ) -> anyhow::Result<()> {
        let index = transaction.index;
        transaction.index += 1;
        if transaction.skip
            || index < transaction.resume_after
            || self.config.mode != Mode::Messages
            || self.config.prefix.as_deref() != Some(prefix)
        {
            return Ok(());
        }
        let position = format!("{}:{index}", transaction.commit_lsn);
        let invalid = |error: String| {
            SourceItem::Invalid(InvalidInput {
                position: position.clone(),
                raw: String::from_utf8_lossy(content).into_owned(),
                error,
            })
        };
        let item = match std::str::from_utf8(content) {
            Err(_) => invalid(format!("the message at {position} is not UTF-8 text")),
            Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Err(error) => invalid(format!("the message at {position} is not JSON: {error}")),
                Ok(json) => {
                    let field = |name: &Option<String>| {
                        name.as_ref().and_then(|name| match json.get(name)? {
                            serde_json::Value::String(text) => Some(text.clone()),
                            serde_json::Value::Null => None,
                            other => Some(other.to_string()),
                        })
                    };
                    SourceItem::Event(self.event(
                        Operation::Message,
                        field(&self.config.key),
                        None,
                        Some(text.to_string()),
                        Vec::new(),
                        field(&self.config.tenant),
                        prefix.to_string(),
                        transaction,
                        position,
                    ))
                }
            },
        };
        self.send(item).await
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        op: Operation,
        key: Option<String>,
        before: Option<String>,
        after: Option<String>,
        headers: Vec<Header>,
        tenant: Option<String>,
        origin: String,
        transaction: &Transaction,
        position: String,
    ) -> ChangeEvent {
        ChangeEvent {
            source: "postgres".into(),
            op,
            key,
            before,
            after,
            headers,
            tenant,
            origin: Some(origin),
            transaction_id: (transaction.xid != 0).then(|| transaction.xid.to_string()),
            position,
            commit_time: (transaction.commit_time != 0).then_some(transaction.commit_time),
        }
    }

    /// An outbox row: headers from its columns, the payload as `after`,
    /// `aggregateid` as the key.
    fn outbox_event(
        &self,
        relation: &Relation,
        row: &[Value],
        transaction: &Transaction,
        position: String,
    ) -> SourceItem {
        let origin = relation.qualified();
        if !self.published.contains(&origin) {
            return SourceItem::Invalid(InvalidInput {
                raw: values::row_json(relation, row),
                error: format!("a row of {origin}, which is not the outbox table, at {position}"),
                position,
            });
        }
        let mut headers = Vec::new();
        let mut key = None;
        let mut tenant = None;
        let mut payload: Option<(u32, &str)> = None;
        for (column, value) in relation.columns.iter().zip(row) {
            let Value::Text(text) = value else { continue };
            match column.name.as_str() {
                "payload" => payload = Some((column.type_oid, text)),
                name => {
                    if name == "aggregateid" {
                        key = Some(text.clone());
                    }
                    if self.config.tenant.as_deref() == Some(name) {
                        tenant = Some(text.clone());
                    }
                    headers.push(Header {
                        name: name.to_string(),
                        value: text.clone(),
                    });
                }
            }
        }
        let after = match payload {
            None => None,
            Some((type_oid, text)) => {
                let is_json_type = matches!(type_oid, 114 | 3802);
                if !is_json_type
                    && let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(text)
                {
                    let id = headers
                        .iter()
                        .find(|h| h.name == "id")
                        .map_or("(no id)", |h| h.value.as_str());
                    return SourceItem::Invalid(InvalidInput {
                        raw: values::row_json(relation, row),
                        error: format!(
                            "the payload of outbox row {id} at {position} is not JSON: {error}"
                        ),
                        position,
                    });
                }
                Some(text.to_string())
            }
        };
        SourceItem::Event(self.event(
            Operation::Message,
            key,
            None,
            after,
            headers,
            tenant,
            origin,
            transaction,
            position,
        ))
    }

    /// A row change: images as JSON objects, the replica identity (primary
    /// key) as the key.
    fn row_event(
        &self,
        relation: &Relation,
        op: Operation,
        old: Option<&[Value]>,
        new: Option<&[Value]>,
        transaction: &Transaction,
        position: String,
    ) -> SourceItem {
        let identity = new.or(old).unwrap_or_default();
        // The primary key; without one, the replica identity.
        let primary_key = self
            .primary_keys
            .get(&relation.qualified())
            .filter(|columns| !columns.is_empty());
        let key_values: Vec<&Value> = relation
            .columns
            .iter()
            .zip(identity)
            .filter(|(column, _)| match primary_key {
                Some(columns) => columns.contains(&column.name),
                None => column.key,
            })
            .map(|(_, value)| value)
            .collect();
        let key = match key_values.as_slice() {
            [] => None,
            [Value::Text(text)] => Some(text.clone()),
            values => {
                let mut out = String::from("[");
                for (n, value) in values.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    match value {
                        Value::Text(text) => {
                            out.push_str(&serde_json::to_string(text).unwrap_or_default())
                        }
                        _ => out.push_str("null"),
                    }
                }
                out.push(']');
                Some(out)
            }
        };
        let tenant = self.config.tenant.as_ref().and_then(|name| {
            let at = relation.columns.iter().position(|c| &c.name == name)?;
            match identity.get(at)? {
                Value::Text(text) => Some(text.clone()),
                _ => None,
            }
        });
        let mut headers = Vec::new();
        if let Some(new) = new {
            let unchanged = values::unchanged_toast(relation, new);
            if !unchanged.is_empty() {
                headers.push(Header {
                    name: "unchanged_toast".into(),
                    value: unchanged.join(","),
                });
            }
        }
        SourceItem::Event(self.event(
            op,
            key,
            old.map(|old| values::row_json(relation, old)),
            new.map(|new| values::row_json(relation, new)),
            headers,
            tenant,
            relation.qualified(),
            transaction,
            position,
        ))
    }
}

/// A name quoted as an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_duplicate(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT)
}
