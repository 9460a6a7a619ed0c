//! The Kafka sink: a plugin's `record` outputs as Kafka records, with an
//! idempotent producer always, and optionally transactions: one source
//! transaction (a Postgres commit) = one Kafka transaction.
//!
//! Topic: the record's own, else the sink's `topic` template over the event
//! (`outbox.event.{header:aggregatetype}`). Key, value (`None` = tombstone)
//! and headers as the plugin says.
//!
//! Transactional mode (`transactional = true`): the engine hands the sink
//! whole source transactions, one at a time, in source order
//! ([`Grouping::SourceTransaction`]); each becomes one Kafka transaction.
//! With `separate_tombstones = true` (the default in this mode), a source
//! transaction mixing deletions (tombstones) with additions is written as
//! consecutive Kafka transactions, each holding only one kind, in source
//! order — a consumer never sees a delete commit atomically with an add
//! (the Fusion Registry's rule). A restarted host uses the same
//! `transactional.id` (default `ferry-<pipeline>`), which fences the
//! previous one. Records of an aborted transaction are invisible to
//! `read_committed` consumers on Apache Kafka.

use super::{Delivery, Grouping, Sink, SinkError};
use crate::config::Problem;
use crate::event::Payload;
use crate::kafka::{
    ConsumerLink, KafkaClientConfig, idempotent_producer, is_retryable, parse_position,
};
use crate::template::Template;
use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// `[pipelines.<name>.sink] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    /// The topic of records whose output names none: a template over the
    /// event (see `template.rs`), e.g. `outbox.event.{header:aggregatetype}`.
    #[serde(default)]
    pub topic: Option<String>,
    /// One Kafka transaction per source transaction.
    #[serde(default)]
    pub transactional: bool,
    /// The producer's `transactional.id` (default `ferry-<pipeline>`):
    /// stable, so a restarted host fences its predecessor.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// In transactional mode, never commit a tombstone in the same Kafka
    /// transaction as a non-tombstone (default true).
    #[serde(default = "crate::config::yes")]
    pub separate_tombstones: bool,
    /// A header naming the plugin version that produced each record
    /// (default `ferry-plugin`, value `sha256:` + 16 hex); `""` leaves it out.
    #[serde(default = "default_digest_header")]
    pub digest_header: String,
    /// Longest a send or a transaction step may take, in milliseconds
    /// (default 30000); an overrun is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_digest_header() -> String {
    "ferry-plugin".to_string()
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl KafkaSinkConfig {
    pub(crate) fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.client.bootstrap_servers.is_empty() {
            problems.push(Problem {
                path: "bootstrap_servers".into(),
                message: "must not be empty".into(),
            });
        }
        if let Some(topic) = &self.topic
            && let Err(error) = Template::parse(topic)
        {
            problems.push(Problem {
                path: "topic".into(),
                message: error,
            });
        }
        if self.transactional_id.is_some() && !self.transactional {
            problems.push(Problem {
                path: "transactional_id".into(),
                message: "needs transactional = true".into(),
            });
        }
        problems
    }
}

/// Produces records to Kafka.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: Option<Template>,
    transactional: bool,
    separate_tombstones: bool,
    /// Header carrying the plugin digest; `None` for none.
    digest_header: Option<String>,
    timeout: Duration,
    /// The producer's largest record (`message.max.bytes`), for errors.
    max_bytes: String,
    /// The pipeline's Kafka source, when it is one: its consumed offsets
    /// commit inside each transaction.
    link: Option<ConsumerLink>,
}

impl KafkaSink {
    /// The sink of pipeline `pipeline`; `link` when its source is a Kafka
    /// consumer.
    pub async fn new(
        pipeline: &str,
        config: &KafkaSinkConfig,
        link: Option<ConsumerLink>,
    ) -> anyhow::Result<KafkaSink> {
        let problems = config.check();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("the kafka sink is misconfigured: {}", list.join("; "));
        }
        // Behind a Postgres slot one host is active at a time: one id per
        // pipeline fences a restarted host's predecessor. Behind a consumer
        // group several hosts run at once: one id per host, and the group's
        // generation (sent with the offsets) fences a host that lost its
        // partitions.
        let transactional_id = config.transactional_id.clone().unwrap_or_else(|| {
            if link.is_some() {
                format!("ferry-{pipeline}-{}", crate::kafka::host_name())
            } else {
                format!("ferry-{pipeline}")
            }
        });
        let mut extra = Vec::new();
        if config.transactional {
            extra.push(("transactional.id", transactional_id.as_str()));
        }
        let producer = idempotent_producer(&config.client, &extra)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        if config.transactional {
            let producer = producer.clone();
            tokio::task::spawn_blocking(move || producer.init_transactions(timeout))
                .await?
                .with_context(|| {
                    format!("cannot initialise Kafka transactions for transactional.id {transactional_id}")
                })?;
        }
        Ok(KafkaSink {
            producer,
            topic: config
                .topic
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            transactional: config.transactional,
            separate_tombstones: config.separate_tombstones,
            digest_header: Some(config.digest_header.clone()).filter(|name| !name.is_empty()),
            timeout,
            max_bytes: config
                .client
                .properties
                .get("message.max.bytes")
                .cloned()
                .unwrap_or_else(|| "1000000".into()),
            link: config.transactional.then_some(link).flatten(),
        })
    }

    /// Sends `deliveries` (pipelined), waiting for every acknowledgement;
    /// on failure, says which one failed.
    async fn send_all(
        &self,
        deliveries: &[Delivery],
        include: impl Fn(usize) -> bool,
    ) -> Result<(), (usize, KafkaError, String)> {
        let mut pending = Vec::with_capacity(deliveries.len());
        for (at, delivery) in deliveries.iter().enumerate() {
            if !include(at) {
                continue;
            }
            let Payload::Record(record) = &delivery.output.payload else {
                unreachable!("checked by `records`")
            };
            let topic = self.topic_of(delivery).expect("checked by `records`");
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
            for header in &record.headers {
                headers = headers.insert(Header {
                    key: &header.name,
                    value: Some(header.value.as_bytes()),
                });
            }
            if let Some(name) = &self.digest_header {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(delivery.plugin.as_bytes()),
                });
            }
            let mut future_record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).headers(headers);
            if let Some(key) = &record.key {
                future_record = future_record.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                future_record = future_record.payload(value.as_slice());
            }
            match self.producer.send_result(future_record) {
                Ok(future) => pending.push((at, topic, future)),
                Err((error, _)) => return Err((at, error, topic)),
            }
        }
        for (at, topic, future) in pending {
            match tokio::time::timeout(self.timeout, future).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((error, _)))) => return Err((at, error, topic)),
                Ok(Err(_canceled)) => {
                    return Err((at, KafkaError::Canceled, topic));
                }
                Err(_elapsed) => {
                    return Err((
                        at,
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        topic,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The topic of a delivery's record.
    fn topic_of(&self, delivery: &Delivery) -> anyhow::Result<String> {
        let Payload::Record(record) = &delivery.output.payload else {
            anyhow::bail!(
                "output {} of the event at {} is a {}; the kafka sink delivers only record outputs",
                delivery.index,
                delivery.position(),
                delivery.output.payload.kind()
            );
        };
        if let Some(topic) = &record.topic {
            return Ok(topic.clone());
        }
        match &self.topic {
            Some(template) => template.render(&delivery.event).map_err(anyhow::Error::msg),
            None => anyhow::bail!(
                "output {} of the event at {} names no topic and the sink has no `topic`",
                delivery.index,
                delivery.position()
            ),
        }
    }

    /// The failure of `deliveries[at]`, as a sink error counting `done`
    /// deliveries as delivered.
    fn failure(
        &self,
        deliveries: &[Delivery],
        done: usize,
        at: usize,
        error: KafkaError,
        topic: &str,
    ) -> SinkError {
        let delivery = &deliveries[at];
        let context = format!(
            "output {} of the event at {} to topic {topic}",
            delivery.index,
            delivery.position()
        );
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            let size = match &delivery.output.payload {
                Payload::Record(record) => {
                    record.value.as_ref().map_or(0, Vec::len)
                        + record.key.as_ref().map_or(0, Vec::len)
                }
                _ => 0,
            };
            return SinkError::permanent(
                done,
                anyhow::anyhow!(
                    "{context}: the record of {size} bytes is larger than Kafka accepts (the producer's message.max.bytes is {}; the topic's max.message.bytes may be lower)",
                    self.max_bytes
                ),
            );
        }
        let error = anyhow::Error::new(error).context(context);
        if is_retryable_error(&error) {
            SinkError::retryable(done, error)
        } else {
            SinkError::permanent(done, error)
        }
    }

    /// One Kafka transaction holding `deliveries`.
    async fn transaction(
        &self,
        deliveries: &[Delivery],
        done: usize,
        all: &[Delivery],
    ) -> Result<(), SinkError> {
        let (owned, offsets) = self.consumed(deliveries);
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction())
            .await
            .map_err(|error| self.step_failure(done, "begin", error))?;
        let timeout = self.timeout;
        if let Err((at, error, topic)) = self.send_all(deliveries, |at| owned[at]).await {
            let producer = self.producer.clone();
            let _ = blocking(move || producer.abort_transaction(timeout)).await;
            return Err(self.failure(all, done, done + at, error, &topic));
        }
        if let Some((offsets, group)) = offsets {
            let producer = self.producer.clone();
            if let Err(error) =
                blocking(move || producer.send_offsets_to_transaction(&offsets, &group, timeout))
                    .await
            {
                let producer = self.producer.clone();
                let _ = blocking(move || producer.abort_transaction(timeout)).await;
                return Err(self.step_failure(done, "send the consumed offsets to", error));
            }
        }
        // librdkafka's contract: a commit that failed without requiring an
        // abort is retried as a commit (a new transaction cannot begin
        // while it is pending); otherwise the transaction is aborted and
        // the whole of it is retried.
        let mut attempt = 0;
        loop {
            let producer = self.producer.clone();
            let error = match blocking(move || producer.commit_transaction(timeout)).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let commit_again = match &error {
                KafkaError::Transaction(error) => !error.is_fatal() && !error.txn_requires_abort(),
                _ => false,
            };
            attempt += 1;
            if commit_again && attempt < COMMIT_ATTEMPTS {
                tracing::debug!(%error, attempt, "Committing the Kafka transaction again.");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                continue;
            }
            let producer = self.producer.clone();
            if let Err(abort) = blocking(move || producer.abort_transaction(timeout)).await {
                // The producer is unusable: a restart recreates it, and
                // `init_transactions` aborts what is left open.
                return Err(SinkError::permanent(
                    done,
                    anyhow::anyhow!(
                        "cannot commit a Kafka transaction ({error}), nor abort it ({abort}): the producer must be recreated"
                    ),
                ));
            }
            return Err(self.step_failure(done, "commit", error));
        }
    }

    /// With a Kafka source: which deliveries come from partitions this host
    /// still owns (the others are its new owner's to redo: they are
    /// skipped, not sent), and the offsets to commit in the transaction
    /// (after the last record of each partition) with the group's metadata.
    fn consumed(
        &self,
        deliveries: &[Delivery],
    ) -> (
        Vec<bool>,
        Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    ) {
        let Some(consumer) = self.link.as_ref().and_then(ConsumerLink::get) else {
            return (vec![true; deliveries.len()], None);
        };
        let mut owned = Vec::with_capacity(deliveries.len());
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for delivery in deliveries {
            let Some((topic, partition, offset)) = parse_position(&delivery.event.position) else {
                owned.push(true);
                continue;
            };
            let owns = consumer.owns(topic, partition);
            if owns {
                let slot = next.entry((topic, partition)).or_default();
                *slot = (*slot).max(offset + 1);
            } else {
                tracing::info!(
                    position = %delivery.event.position,
                    "Not sending an output of a record whose partition was revoked: its new owner reads it again."
                );
            }
            owned.push(owns);
        }
        let group = consumer.group_metadata();
        let offsets = group.filter(|_| !next.is_empty()).map(|group| {
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset));
            }
            (list, group)
        });
        (owned, offsets)
    }

    fn step_failure(&self, done: usize, step: &str, error: KafkaError) -> SinkError {
        let retry = is_retryable(&error);
        let error = anyhow::Error::new(error).context(format!("cannot {step} a Kafka transaction"));
        if retry {
            SinkError::retryable(done, error)
        } else {
            SinkError::permanent(done, error)
        }
    }
}

/// Commits of one transaction before it is aborted and retried whole.
const COMMIT_ATTEMPTS: u64 = 5;

fn is_retryable_error(error: &anyhow::Error) -> bool {
    error.downcast_ref::<KafkaError>().is_none_or(is_retryable)
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking(
    call: impl FnOnce() -> Result<(), KafkaError> + Send + 'static,
) -> Result<(), KafkaError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// The Kafka transactions of one source transaction whose outputs are
/// tombstones where `tombstones` says: one, or with `separate`,
/// consecutive runs holding only tombstones or only other records, in
/// order.
#[allow(clippy::single_range_in_vec_init)]
fn transaction_runs(tombstones: &[bool], separate: bool) -> Vec<Range<usize>> {
    if !separate || tombstones.is_empty() {
        return vec![0..tombstones.len()];
    }
    let mut runs = Vec::new();
    let mut start = 0;
    for at in 1..=tombstones.len() {
        if at == tombstones.len() || tombstones[at] != tombstones[start] {
            runs.push(start..at);
            start = at;
        }
    }
    runs
}

fn is_tombstone(delivery: &Delivery) -> bool {
    matches!(&delivery.output.payload, Payload::Record(record) if record.value.is_none())
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        async move {
            // Refuse what cannot be sent before sending anything.
            for (at, delivery) in deliveries.iter().enumerate() {
                if let Err(error) = self.topic_of(delivery) {
                    return Err(SinkError::permanent(at, error));
                }
            }
            if !self.transactional {
                return self
                    .send_all(deliveries, |_| true)
                    .await
                    .map_err(|(at, error, topic)| self.failure(deliveries, at, at, error, &topic));
            }
            let tombstones: Vec<bool> = deliveries.iter().map(is_tombstone).collect();
            for run in transaction_runs(&tombstones, self.separate_tombstones) {
                self.transaction(&deliveries[run.clone()], run.start, deliveries)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn grouping(&self) -> Grouping {
        if self.transactional {
            Grouping::SourceTransaction
        } else {
            Grouping::Key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn deletions_never_share_a_kafka_transaction_with_additions() {
        let (t, f) = (true, false);
        assert_eq!(transaction_runs(&[f, f, t, f], true), [0..2, 2..3, 3..4]);
        assert_eq!(transaction_runs(&[t, t], true), [0..2]);
        assert_eq!(transaction_runs(&[f, t, f], false), [0..3]);
        assert_eq!(transaction_runs(&[f], true), [0..1]);
    }

    #[test]
    fn kafka_positions_parse_and_others_do_not() {
        assert_eq!(
            parse_position("outbox.event.hbi:3:17"),
            Some(("outbox.event.hbi", 3, 17))
        );
        assert_eq!(parse_position("0/16B3748:3"), None);
        assert_eq!(parse_position("events.jsonl:7"), None);
    }
}
