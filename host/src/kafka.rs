//! What the Kafka source, the Kafka sink and the Kafka dead-letter
//! destination share: client settings and the classification of librdkafka
//! errors.

use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Connection settings of a Kafka client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaClientConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Any librdkafka property, passed through as is: security
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, …), timeouts, tuning. Values are
    /// never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Property names whose values are secrets.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

impl KafkaClientConfig {
    /// An rdkafka client configuration with these settings, then `defaults`
    /// for what the user did not set, then `fixed` (ferry's guarantees, which
    /// the user cannot weaken).
    pub fn client_config(
        &self,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> anyhow::Result<rdkafka::ClientConfig> {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (name, value) in defaults {
            if !self.properties.contains_key(*name) {
                config.set(*name, *value);
            }
        }
        for (name, value) in &self.properties {
            if let Some((_, fixed)) = fixed.iter().find(|(fixed, _)| fixed == name)
                && fixed != value
            {
                anyhow::bail!(
                    "property `{name}` must be {fixed:?}: ferry's delivery guarantees depend on it"
                );
            }
            config.set(name, value);
        }
        for (name, value) in fixed {
            config.set(*name, *value);
        }
        Ok(config)
    }

    /// The properties with secret values masked, for logs.
    pub fn redacted(&self) -> BTreeMap<&str, &str> {
        self.properties
            .iter()
            .map(|(name, value)| {
                let secret = SECRET_PROPERTIES.contains(&name.as_str())
                    || name.contains("password")
                    || name.contains("secret");
                (
                    name.as_str(),
                    if secret { "<redacted>" } else { value.as_str() },
                )
            })
            .collect()
    }
}

/// Whether a librdkafka error may go away by retrying: authorization,
/// configuration, oversized or invalid records and fencing do not.
pub fn is_retryable(error: &KafkaError) -> bool {
    if let KafkaError::Transaction(error) = error {
        return !error.is_fatal() && (error.is_retriable() || error.txn_requires_abort());
    }
    let Some(code) = error.rdkafka_error_code() else {
        return true;
    };
    !matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// Creates a producer with idempotence always on.
pub fn idempotent_producer(
    config: &KafkaClientConfig,
    extra: &[(&str, &str)],
) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    let mut fixed = vec![("enable.idempotence", "true"), ("acks", "all")];
    fixed.extend_from_slice(extra);
    config
        .client_config(&[("message.timeout.ms", "30000")], &fixed)?
        .create()
        .context("cannot create the Kafka producer")
}

/// What a pipeline's Kafka source lends its transactional Kafka sink, so
/// that consumed offsets commit inside the sink's transactions
/// (consume-transform-produce, exactly once on Kafka).
pub trait ConsumedOffsets: Send + Sync {
    /// The consumer group's current metadata (member and generation), for
    /// `send_offsets_to_transaction`: a host that lost its partitions is
    /// fenced by the group coordinator.
    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata>;
    /// Whether this host still owns `partition` of `topic`.
    fn owns(&self, topic: &str, partition: i32) -> bool;
}

/// The place where a pipeline's Kafka source, once consuming, puts its
/// [`ConsumedOffsets`] for the sink. Built by the pipeline, given to both.
#[derive(Clone, Default)]
pub struct ConsumerLink(Arc<OnceLock<Arc<dyn ConsumedOffsets>>>);

impl ConsumerLink {
    pub fn set(&self, consumer: Arc<dyn ConsumedOffsets>) {
        let _ = self.0.set(consumer);
    }

    pub fn get(&self) -> Option<&Arc<dyn ConsumedOffsets>> {
        self.0.get()
    }
}

/// `topic`, `partition` and `offset` of a Kafka source position
/// (`topic:partition:offset`; `:` is not allowed in topic names).
pub fn parse_position(position: &str) -> Option<(&str, i32, i64)> {
    let mut parts = position.rsplitn(3, ':');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some((topic, partition, offset))
}

/// This host's name, for per-instance identifiers.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string())
}
