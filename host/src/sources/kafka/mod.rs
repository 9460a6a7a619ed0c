//! The Kafka source: a consumer group over topics of Debezium change events,
//! outbox EventRouter output, or raw records (`decode.rs`).
//!
//! Offsets are committed by ferry, never automatically, and only past
//! records whose every output is delivered: per partition, the offset after
//! the longest prefix of acknowledged records ([`Progress`]). Commits go out
//! every `commit_interval_ms`, when a partition is revoked (for the
//! delivered part of what was read from it), and at stop. Several hosts in
//! one group share the partitions; with the cooperative-sticky assignor
//! (ferry's default) a rebalance moves only the partitions that change
//! owner. A record read from a partition that was revoked meanwhile is
//! dropped: its new owner reads it.
//!
//! Backpressure: when the pipeline does not take items for a second, the
//! assigned partitions are paused and the consumer keeps polling (so it
//! stays in the group however long the sink is down); they resume when
//! items flow again.

pub mod decode;

use super::{Source, SourceContext, SourceItem};
use crate::config::Problem;
use crate::kafka::{ConsumedOffsets, ConsumerLink, KafkaClientConfig};
use anyhow::Context as _;
use decode::{Decoder, Format, RawRecord, Tombstones};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `[pipelines.<name>.source] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    /// The consumer group (`group.id`).
    pub group_id: String,
    /// Topics to subscribe to (a name starting with `^` is a regex).
    pub topics: Vec<String>,
    /// How records are decoded: `debezium` (default), `outbox`, `raw`.
    #[serde(default)]
    pub format: Format,
    /// `skip` or `deliver` tombstones (default: `skip` for `debezium`, whose
    /// tombstones follow each delete event; `deliver` otherwise).
    #[serde(default)]
    pub tombstones: Option<Tombstones>,
    /// A header (or, for `debezium`, a column of the row) holding the tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How often delivered offsets are committed, in milliseconds (default
    /// 1000).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

fn default_commit_interval_ms() -> u64 {
    1000
}

impl KafkaSourceConfig {
    pub(crate) fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: &str| {
            problems.push(Problem {
                path: path.into(),
                message: message.into(),
            })
        };
        if self.client.bootstrap_servers.is_empty() {
            problem("bootstrap_servers", "must not be empty");
        }
        if self.group_id.is_empty() {
            problem("group_id", "must not be empty");
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            problem("topics", "must name at least one topic, none empty");
        }
        if self.commit_interval_ms == 0 {
            problem("commit_interval_ms", "must be at least 1");
        }
        for name in ["group.id", "enable.auto.commit", "enable.auto.offset.store"] {
            if self.client.properties.contains_key(name) {
                problem(
                    &format!("properties.{name}"),
                    "is set by ferry (use `group_id`; offsets are committed only after delivery)",
                );
            }
        }
        problems
    }

    fn decoder(&self) -> Decoder {
        Decoder {
            format: self.format,
            tombstones: self
                .tombstones
                .unwrap_or_else(|| self.format.default_tombstones()),
            tenant: self.tenant.clone(),
        }
    }
}

/// Reads a consumer group's partitions.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    link: ConsumerLink,
}

impl KafkaSource {
    /// A source lending its consumer to the pipeline's sink through `link`.
    pub fn new(config: KafkaSourceConfig, link: ConsumerLink) -> KafkaSource {
        KafkaSource { config, link }
    }
}

/// The consumer as a transactional sink sees it.
struct Lent {
    consumer: Arc<Consumer>,
    tracker: Arc<Mutex<Tracker>>,
}

impl ConsumedOffsets for Lent {
    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.tracker
            .lock()
            .expect("tracker")
            .assigned
            .contains(&(topic.to_string(), partition))
    }
}

/// Delivery progress of one assigned partition.
#[derive(Debug, Default)]
struct Progress {
    /// Offsets read and not yet committable, in order, with whether each
    /// is done (delivered, or needing no delivery).
    pending: VecDeque<(i64, bool)>,
    /// The offset to commit next: every record below it is done.
    done_below: Option<i64>,
    /// The offset last committed successfully.
    committed: Option<i64>,
}

impl Progress {
    fn settle(&mut self) {
        while let Some(&(offset, true)) = self.pending.front() {
            self.pending.pop_front();
            self.done_below = Some(offset + 1);
        }
    }

    /// The offset to commit, if it is ahead of the committed one.
    fn to_commit(&self) -> Option<i64> {
        self.done_below.filter(|next| Some(*next) > self.committed)
    }
}

type Partition = (String, i32);

/// What the source task and the consumer's callbacks (which run inside the
/// consumer's poll) share.
#[derive(Debug, Default)]
struct Tracker {
    assigned: HashSet<Partition>,
    progress: HashMap<Partition, Progress>,
    /// Sequence number of each item in flight → its record.
    in_flight: HashMap<u64, (Partition, i64)>,
    /// Where the committed offsets are shown (status).
    stats: Arc<crate::sources::SourceStats>,
}

impl Tracker {
    /// Records a record that was read; `seq` is its item's number, `None`
    /// when it needs no delivery. False when its partition is not assigned
    /// any more (the record is for its new owner).
    fn read(&mut self, partition: Partition, offset: i64, seq: Option<u64>) -> bool {
        if !self.assigned.contains(&partition) {
            return false;
        }
        let progress = self.progress.entry(partition.clone()).or_default();
        progress.pending.push_back((offset, seq.is_none()));
        progress.settle();
        if let Some(seq) = seq {
            self.in_flight.insert(seq, (partition, offset));
        }
        true
    }

    fn ack(&mut self, seq: u64) {
        let Some((partition, offset)) = self.in_flight.remove(&seq) else {
            return; // from a partition revoked since
        };
        let Some(progress) = self.progress.get_mut(&partition) else {
            return;
        };
        if let Ok(at) = progress.pending.binary_search_by_key(&offset, |(o, _)| *o) {
            progress.pending[at].1 = true;
            progress.settle();
        }
    }

    /// Offsets to commit for `partitions` (all when `None`).
    fn commits(&self, partitions: Option<&HashSet<Partition>>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (partition, progress) in &self.progress {
            if partitions.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            if let Some(next) = progress.to_commit() {
                let _ = list.add_partition_offset(&partition.0, partition.1, Offset::Offset(next));
            }
        }
        list
    }

    fn committed(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            let Offset::Offset(offset) = element.offset() else {
                continue;
            };
            let key = (element.topic().to_string(), element.partition());
            if let Some(progress) = self.progress.get_mut(&key)
                && progress.committed < Some(offset)
            {
                progress.committed = Some(offset);
            }
        }
        let mut committed: Vec<String> = self
            .progress
            .iter()
            .filter_map(|((topic, partition), progress)| {
                Some(format!("{topic}:{partition}:{}", progress.committed?))
            })
            .collect();
        committed.sort();
        self.stats.set_checkpoint(committed.join(","));
    }

    /// Forgets `partitions`; returns the offsets to commit for them first.
    fn revoke(&mut self, partitions: &HashSet<Partition>) -> TopicPartitionList {
        let commits = self.commits(Some(partitions));
        for partition in partitions {
            self.assigned.remove(partition);
            self.progress.remove(partition);
        }
        self.in_flight
            .retain(|_, (partition, _)| !partitions.contains(partition));
        commits
    }
}

fn partitions_of(list: &TopicPartitionList) -> HashSet<Partition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// The consumer's callbacks.
struct Callbacks {
    pipeline: Arc<str>,
    tracker: Arc<Mutex<Tracker>>,
    stats: Arc<crate::sources::SourceStats>,
}

impl ClientContext for Callbacks {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.stats.set_lag(lag.max(0) as u64, "records");
        let rtt_avg_us = statistics
            .brokers
            .values()
            .filter_map(|b| b.rtt.as_ref().map(|w| w.avg))
            .max()
            .unwrap_or(0);
        tracing::info!(
            pipeline = %self.pipeline,
            consumer_lag = lag,
            rx_bytes = statistics.rx_bytes,
            tx_bytes = statistics.tx_bytes,
            rtt_avg_us,
            "Kafka client statistics."
        );
    }
}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list);
        let commits = self.tracker.lock().expect("tracker").revoke(&partitions);
        tracing::info!(
            pipeline = %self.pipeline,
            partitions = partitions.len(),
            committing = commits.count(),
            "Partitions revoked; committing what was delivered from them."
        );
        if commits.count() > 0
            && !consumer.assignment_lost()
            && let Err(error) = consumer.commit(&commits, CommitMode::Sync)
        {
            tracing::warn!(pipeline = %self.pipeline, %error, "Could not commit the offsets of revoked partitions; their new owner reads the undelivered part again.");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                tracing::info!(pipeline = %self.pipeline, partitions = ?partitions, "Partitions assigned.");
                self.tracker
                    .lock()
                    .expect("tracker")
                    .assigned
                    .extend(partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(pipeline = %self.pipeline, %error, "Consumer group rebalance failed.");
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => self.tracker.lock().expect("tracker").committed(offsets),
            Err(error) => {
                tracing::warn!(pipeline = %self.pipeline, %error, "Offset commit failed; retried at the next interval.")
            }
        }
    }
}

type Consumer = StreamConsumer<Callbacks>;

/// How long the pipeline may refuse items before the partitions pause.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Records read form "source transactions" (what a transactional sink
/// writes as one Kafka transaction, its consumed offsets inside): a run of
/// records ends after this many, or when no record came for [`LINGER`].
const TRANSACTION_MAX_RECORDS: usize = 500;
const LINGER: Duration = Duration::from_millis(20);

impl Source for KafkaSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        async move {
            let SourceContext {
                pipeline,
                items,
                mut acks,
                stop,
                stats,
                ..
            } = context;
            let config = &self.config;
            let tracker = Arc::new(Mutex::new(Tracker {
                stats: stats.clone(),
                ..Tracker::default()
            }));
            let callbacks = Callbacks {
                pipeline: pipeline.clone(),
                tracker: tracker.clone(),
                stats: stats.clone(),
            };
            let consumer: Arc<Consumer> = Arc::new(
                config
                    .client
                    .client_config(
                        &[
                            ("partition.assignment.strategy", "cooperative-sticky"),
                            ("auto.offset.reset", "earliest"),
                            ("isolation.level", "read_committed"),
                        ],
                        &[
                            ("group.id", config.group_id.as_str()),
                            ("enable.auto.commit", "false"),
                            ("enable.auto.offset.store", "false"),
                        ],
                    )?
                    .create_with_context(callbacks)
                    .context("cannot create the Kafka consumer")?,
            );
            self.link.set(Arc::new(Lent {
                consumer: consumer.clone(),
                tracker: tracker.clone(),
            }));
            let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .with_context(|| format!("cannot subscribe to {topics:?}"))?;
            // Subscribed: the group protocol and broker reconnections are
            // librdkafka's from here on.
            stats.set_connected(true);
            tracing::info!(
                pipeline = %pipeline,
                group = %config.group_id,
                topics = ?topics,
                properties = ?config.client.redacted(),
                "Consuming."
            );

            let decoder = config.decoder();
            let mut next_seq = 0u64;
            let mut waiting: VecDeque<SourceItem> = VecDeque::new();
            let mut pause_at: Option<Instant> = None;
            let mut paused = false;
            // Records since the last transaction end, and when the last came.
            let mut open = 0usize;
            let mut last_read = Instant::now();
            let mut commit_tick =
                tokio::time::interval(Duration::from_millis(config.commit_interval_ms));
            commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Asynchronous: the commit callback records what succeeded.
            let commit = || {
                let list = tracker.lock().expect("tracker").commits(None);
                if list.count() == 0 {
                    return Ok(());
                }
                consumer.commit(&list, CommitMode::Async)
            };

            loop {
                let pause_deadline = async {
                    match pause_at {
                        Some(at) if !paused => tokio::time::sleep_until(at).await,
                        _ => std::future::pending().await,
                    }
                };
                let linger = async {
                    if open > 0 {
                        tokio::time::sleep_until(last_read + LINGER).await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    Some(seqs) = acks.recv() => {
                        let mut tracker = tracker.lock().expect("tracker");
                        for seq in seqs {
                            tracker.ack(seq);
                        }
                    }
                    _ = commit_tick.tick() => {
                        if let Err(error) = commit() {
                            tracing::warn!(pipeline = %pipeline, %error, "Offset commit failed; retried at the next interval.");
                        }
                    }
                    permit = items.reserve(), if !waiting.is_empty() => {
                        let Ok(permit) = permit else { break };
                        permit.send(waiting.pop_front().expect("not empty"));
                        if waiting.is_empty() {
                            pause_at = None;
                            if paused {
                                paused = false;
                                let assignment = consumer.assignment()?;
                                consumer.resume(&assignment).context("cannot resume consuming")?;
                                tracing::info!(pipeline = %pipeline, "The pipeline takes events again: partitions resumed.");
                            }
                        }
                    }
                    _ = linger => {
                        open = 0;
                        next_seq += 1;
                        waiting.push_back(SourceItem::TransactionEnd);
                    }
                    _ = pause_deadline => {
                        paused = true;
                        let assignment = consumer.assignment()?;
                        consumer.pause(&assignment).context("cannot pause consuming")?;
                        tracing::info!(pipeline = %pipeline, "The pipeline is behind: partitions paused until it catches up.");
                    }
                    message = consumer.recv(), if waiting.is_empty() || paused => {
                        let message = match message {
                            Ok(message) => message,
                            Err(error) => {
                                tracing::warn!(pipeline = %pipeline, %error, "Kafka consumer error.");
                                continue;
                            }
                        };
                        let headers = message.headers().map_or_else(Vec::new, |headers| {
                            headers.iter().map(|h| (h.key, h.value)).collect()
                        });
                        let record = RawRecord {
                            topic: message.topic(),
                            partition: message.partition(),
                            offset: message.offset(),
                            key: message.key(),
                            value: message.payload(),
                            headers,
                            timestamp_ms: message.timestamp().to_millis(),
                        };
                        let partition = (record.topic.to_string(), record.partition);
                        let decoded = decoder.decode(&record);
                        let seq = decoded.is_some().then_some(next_seq);
                        if !tracker.lock().expect("tracker").read(partition, record.offset, seq) {
                            continue;
                        }
                        last_read = Instant::now();
                        if let Some(item) = decoded {
                            next_seq += 1;
                            waiting.push_back(item);
                            open += 1;
                            if open == TRANSACTION_MAX_RECORDS {
                                open = 0;
                                next_seq += 1;
                                waiting.push_back(SourceItem::TransactionEnd);
                            }
                            pause_at.get_or_insert_with(|| Instant::now() + PAUSE_AFTER);
                            if paused {
                                // From a partition assigned while paused.
                                let assignment = consumer.assignment()?;
                                consumer.pause(&assignment).context("cannot pause consuming")?;
                            }
                        }
                    }
                }
            }

            // Stopping: the pipeline has delivered what it could; take its
            // last acknowledgements and commit them before leaving the group.
            while let Some(seqs) = acks.recv().await {
                let mut tracker = tracker.lock().expect("tracker");
                for seq in seqs {
                    tracker.ack(seq);
                }
            }
            let consumer_for_commit = consumer.clone();
            let tracker_for_commit = tracker.clone();
            tokio::task::spawn_blocking(move || {
                let list = tracker_for_commit.lock().expect("tracker").commits(None);
                if list.count() > 0 {
                    match consumer_for_commit.commit(&list, CommitMode::Sync) {
                        Ok(()) => tracker_for_commit.lock().expect("tracker").committed(&list),
                        Err(error) => tracing::warn!(%error, "Could not commit the last delivered offsets; they are read again at the next start."),
                    }
                }
                consumer_for_commit.unsubscribe();
            })
            .await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> Partition {
        ("t".to_string(), n)
    }

    fn offsets(list: &TopicPartitionList) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn commits_follow_the_delivered_prefix_of_each_partition() {
        let mut tracker = Tracker::default();
        tracker.assigned.extend([partition(0), partition(1)]);
        assert!(tracker.read(partition(0), 10, Some(0)));
        assert!(tracker.read(partition(0), 11, Some(1)));
        assert!(tracker.read(partition(1), 5, Some(2)));
        assert!(tracker.read(partition(0), 12, None)); // a skipped tombstone
        assert!(offsets(&tracker.commits(None)).is_empty());
        tracker.ack(1);
        assert!(
            offsets(&tracker.commits(None)).is_empty(),
            "10 is not delivered"
        );
        tracker.ack(2);
        assert_eq!(offsets(&tracker.commits(None)), [(1, 6)]);
        tracker.ack(0);
        let list = tracker.commits(None);
        assert_eq!(offsets(&list), [(0, 13), (1, 6)]);
        tracker.committed(&list);
        assert!(offsets(&tracker.commits(None)).is_empty());
    }

    #[test]
    fn a_revoked_partition_commits_its_delivered_part_and_is_forgotten() {
        let mut tracker = Tracker::default();
        tracker.assigned.extend([partition(0), partition(1)]);
        tracker.read(partition(0), 0, Some(0));
        tracker.read(partition(0), 1, Some(1));
        tracker.read(partition(1), 0, Some(2));
        tracker.ack(0);
        let revoked = HashSet::from([partition(0)]);
        assert_eq!(offsets(&tracker.revoke(&revoked)), [(0, 1)]);
        // Late news from the revoked partition changes nothing.
        tracker.ack(1);
        assert!(!tracker.read(partition(0), 2, Some(3)));
        tracker.ack(2);
        assert_eq!(offsets(&tracker.commits(None)), [(1, 1)]);
    }
}
