//! The tables mode's initial snapshot: every row of the streamed tables as
//! it stood when the slot was created, then the stream from that point on.
//!
//! The slot is created on a replication session with `EXPORT_SNAPSHOT`;
//! a `REPEATABLE READ` transaction on a second connection imports that
//! snapshot, so the rows it reads are exactly the database at the slot's
//! consistent point: a change committed before it is in the rows, one
//! committed after it is in the stream, and none is in both. The
//! replication session stays open (holding the slot, so a second host
//! waits) while the rows are read and delivered, then starts streaming.
//!
//! Rows come out as `snapshot_read` events, keyed by primary key like
//! changes, at positions `<consistent point>:snapshot:<n>`, in chunks that
//! each end like a source transaction.
//!
//! A snapshot interrupted before every row was delivered (a crash, a stop)
//! must not leave a slot that streams on without it. While it is under way
//! the publication's comment says so; a start that finds the comment drops
//! the slot and does the snapshot again. The comment is removed once every
//! row is acknowledged.

use super::pgoutput::{Column, Relation, Value};
use super::{Ended, SESSION_OPTIONS, Stream, Transaction, quote};
use crate::event::Operation;
use crate::sources::{BulkProgress, SourceItem};
use anyhow::Context as _;
use pgwire_replication::{Lsn, ReplicationClient};
use tokio_postgres::SimpleQueryMessage;

/// Rows fetched at a time; each fetch is one chunk.
const CHUNK_ROWS: usize = 1000;

impl Stream {
    /// The publication's comment while a snapshot for this slot is under way.
    fn snapshot_marker(&self) -> String {
        format!(
            "ferry: the initial snapshot of slot {} is not yet delivered",
            self.config.slot
        )
    }

    /// Whether a snapshot for this slot was started and not finished.
    pub(super) async fn snapshot_pending(
        &self,
        client: &tokio_postgres::Client,
    ) -> anyhow::Result<bool> {
        let comment: Option<String> = client
            .query_one(
                "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
                &[&self.config.publication],
            )
            .await?
            .get(0);
        Ok(comment.as_deref() == Some(self.snapshot_marker().as_str()))
    }

    /// Creates the slot with a snapshot, delivers the snapshot's rows, then
    /// streams.
    pub(super) async fn snapshot_session(&mut self) -> Ended {
        match self.snapshot().await {
            Ok(Some(client)) => {
                self.snapshot_due = false;
                self.session(Some(client)).await
            }
            Ok(None) => Ended::Stopped,
            Err(error) => Ended::Lost(error),
        }
    }

    /// The snapshot and the slot: `None` when the pipeline stopped first.
    async fn snapshot(&mut self) -> anyhow::Result<Option<ReplicationClient>> {
        let side = self.side_connection().await?;
        let slot = self.config.slot.clone();
        let publication = quote(&self.config.publication);
        let exists = side
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .is_some();
        if exists {
            if !self.snapshot_pending(&side).await? {
                // Another host created it and delivered its snapshot.
                self.snapshot_due = false;
                return self.connect().await.map(Some);
            }
            // Fails while the slot is in use: the host doing the snapshot
            // is alive, and this one waits.
            side.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .context("cannot drop the slot of an interrupted snapshot")?;
            tracing::warn!(
                pipeline = %self.pipeline,
                slot,
                "The initial snapshot was interrupted before it was delivered: the slot is created again and the snapshot read again."
            );
        }
        side.batch_execute(&format!(
            "COMMENT ON PUBLICATION {publication} IS '{}'",
            self.snapshot_marker()
        ))
        .await
        .context("cannot mark the publication while the snapshot is under way (the user must own the publication)")?;

        let mut replication = ReplicationClient::connect_gated(self.replication_config()?)
            .await
            .context("cannot open a replication session")?;
        let rows = replication
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput EXPORT_SNAPSHOT"
            ))
            .await
            .with_context(|| format!("cannot create the replication slot {slot}"))?;
        let text = |column: usize| {
            rows.first()
                .and_then(|row| row.get(column).cloned().flatten())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .context("CREATE_REPLICATION_SLOT answered no snapshot")
        };
        let consistent = Lsn::parse(&text(1)?).context("CREATE_REPLICATION_SLOT's LSN")?;
        let snapshot_name = text(2)?;
        tracing::info!(
            pipeline = %self.pipeline,
            slot,
            lsn = %consistent,
            "Created the replication slot; reading the tables as they stand there."
        );

        if !self.read_snapshot(&snapshot_name, consistent).await? {
            return Ok(None);
        }
        if let Some(sql) = &self.config.on_first_start {
            side.batch_execute(sql)
                .await
                .context("source.on_first_start failed (it runs once, when the slot is created)")?;
        }
        side.batch_execute(&format!("COMMENT ON PUBLICATION {publication} IS NULL"))
            .await?;
        replication.start().await?;
        replication
            .wait_started()
            .await
            .context("cannot start replication")?;
        Ok(Some(replication))
    }

    /// Reads every row of the snapshot `name` and waits until all are
    /// delivered; false when the pipeline stopped first.
    async fn read_snapshot(&mut self, name: &str, consistent: Lsn) -> anyhow::Result<bool> {
        let mut config: tokio_postgres::Config = self.config.connection.parse()?;
        config.options(SESSION_OPTIONS);
        let (client, driver) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("cannot connect to Postgres")?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
            ))
            .await
            .context("cannot import the slot's snapshot")?;
        let tables = self.config.published_tables();
        let mut total = 0;
        for table in &tables {
            let (schema, table_name) = table.split_once('.').unwrap_or(("public", table));
            let count: i64 = client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {}.{}",
                        quote(schema),
                        quote(table_name)
                    ),
                    &[],
                )
                .await?
                .get(0);
            total += count as u64;
        }
        self.context.stats.update_bulk(|bulk| {
            *bulk = Some(BulkProgress {
                kind: "snapshot".into(),
                id: consistent.to_string(),
                unit: "rows".into(),
                total: Some(total),
                read: 0,
                delivered: 0,
                done: false,
            })
        });
        let started = std::time::Instant::now();
        let snapshot_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as i64);
        let transaction = Transaction {
            commit_lsn: consistent,
            xid: 0,
            commit_time: snapshot_time,
            index: 0,
            resume_after: 0,
            skip: false,
        };
        let mut read = 0u64;
        let mut reported = std::time::Instant::now();
        for table in &tables {
            let relation = snapshot_relation(&client, table).await?;
            let columns: Vec<String> = relation.columns.iter().map(|c| quote(&c.name)).collect();
            client
                .batch_execute(&format!(
                    "DECLARE ferry_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}.{}",
                    columns.join(", "),
                    quote(&relation.schema),
                    quote(&relation.name)
                ))
                .await?;
            loop {
                let fetched = client
                    .simple_query(&format!("FETCH {CHUNK_ROWS} FROM ferry_snapshot"))
                    .await
                    .with_context(|| format!("cannot read {table}"))?;
                let mut rows = 0;
                for message in fetched {
                    let SimpleQueryMessage::Row(row) = message else {
                        continue;
                    };
                    let values: Vec<Value> = (0..relation.columns.len())
                        .map(|at| match row.get(at) {
                            Some(text) => Value::Text(text.to_string()),
                            None => Value::Null,
                        })
                        .collect();
                    let position = format!("{consistent}:snapshot:{read}");
                    let item = self.row_event(
                        &relation,
                        Operation::SnapshotRead,
                        None,
                        Some(&values),
                        &transaction,
                        position,
                    );
                    if self.context.stop.is_cancelled() {
                        return Ok(false);
                    }
                    self.send(item).await?;
                    read += 1;
                    rows += 1;
                }
                if rows == 0 {
                    break;
                }
                // Each chunk ends like a transaction (sinks that write
                // source transactions atomically write a chunk at a time).
                let seq = self.next_seq;
                self.send(SourceItem::TransactionEnd).await?;
                self.ends.push_back((seq, consistent));
                self.bulk_chunks.push_back((seq, read));
                self.context.stats.update_bulk(|bulk| {
                    if let Some(bulk) = bulk {
                        bulk.read = read;
                    }
                });
                while let Ok(acks) = self.context.acks.try_recv() {
                    self.take_acks(acks);
                }
                if reported.elapsed() >= std::time::Duration::from_secs(2) {
                    reported = std::time::Instant::now();
                    self.log_snapshot_progress(started);
                }
            }
            client.batch_execute("CLOSE ferry_snapshot").await?;
        }
        client.batch_execute("COMMIT").await?;
        drop(client);
        // Delivered before the stream starts, so an interrupted snapshot is
        // never mistaken for a finished one.
        while self.watermark.next() < self.next_seq {
            tokio::select! {
                _ = self.context.stop.cancelled() => return Ok(false),
                Some(acks) = self.context.acks.recv() => { self.take_acks(acks); }
            }
        }
        self.context.stats.update_bulk(|bulk| {
            if let Some(bulk) = bulk {
                bulk.done = true;
            }
        });
        self.log_snapshot_progress(started);
        Ok(true)
    }

    fn log_snapshot_progress(&self, started: std::time::Instant) {
        let Some(bulk) = self.context.stats.bulk() else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            pipeline = %self.pipeline,
            read = bulk.read,
            delivered = bulk.delivered,
            total = bulk.total.unwrap_or(0),
            rows_per_second = (bulk.delivered as f64 / seconds) as u64,
            done = bulk.done,
            "Initial snapshot."
        );
    }
}

/// A table's columns as the stream's relation messages describe them.
async fn snapshot_relation(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<Relation> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::oid,
                    coalesce(a.attnum = ANY(i.indkey), false)
             FROM pg_attribute a
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .with_context(|| format!("cannot read the columns of {table}"))?;
    Ok(Relation {
        schema: schema.to_string(),
        name: name.to_string(),
        columns: rows
            .iter()
            .map(|row| Column {
                name: row.get(0),
                type_oid: row.get(1),
                key: row.get(2),
            })
            .collect(),
    })
}
