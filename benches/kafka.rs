//! Kafka → Kafka: ferry against a minimal rdkafka consume → produce
//! passthrough written for this bench, one after the other against the same
//! broker (tansu, in memory; `scripts/setup.d/40-kafka.sh`).
//!
//! For each: an input topic of 8 partitions holding `FERRY_BENCH_RECORDS`
//! (default 50,000) records of 1 KB (JSON, 1,000 keys) is drained into an
//! output topic of 8 partitions. The rate counts from the creation of the
//! first output record (the group join, seconds on tansu, is left out) to
//! the broker's acknowledgement of the last: for the passthrough, a flush
//! once it has read every input record; for ferry, the consumer group's
//! committed offsets covering every input record (ferry commits only what
//! its sink has had acknowledged; `commit_interval_ms = 10`). Counting to
//! the last record's creation instead would flatter the passthrough, whose
//! producer queues records locally far faster than the broker takes them.
//! Then, still running, 1,000 records/s for 5 s, each stamped with its send
//! time: send → read from the output topic, p50 and p99 (on tansu 0.6.0
//! both sides show the same ~0.5-1.5 s: its fetch path, not theirs).
//!
//! ferry: Kafka source (raw records, a consumer group, commits of delivered
//! offsets), the echo plugin (`plugins/testing/misbehave`: one record, the
//! event's key and value), idempotent Kafka sink. The passthrough: one
//! consumer, an idempotent producer, async commits every 1,000 records, no
//! ordering or delivery tracking. Both use the same client settings where
//! they overlap.
//!
//! Transactional mode is not measured: tansu 0.6.0 cannot commit a Kafka
//! transaction (no EndTxn; see docs/kafka.md).
//!
//! Run: `cargo bench -p ferry --bench kafka` (`BENCH_FERRY_ONLY=1`: ferry
//! alone).

#[allow(dead_code)]
#[path = "../tests/integration/tansu.rs"]
mod tansu;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, FutureProducer, FutureRecord, Producer as _, ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 8;
/// Group consumer settings that make tansu's group join take seconds, not
/// 20, and fetches return at once. The bench's own readers (assigned, not
/// in a group) keep librdkafka's defaults: with these, such a reader on
/// tansu 0.6.0 never returned a record.
const CONSUMER: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("max.poll.interval.ms", "6000"),
    ("fetch.wait.max.ms", "10"),
];

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A 1 KB JSON value.
fn value(n: usize, sent: i64) -> String {
    let mut value = format!(r#"{{"n":{n},"sent_us":{sent},"pad":""#);
    value.push_str(&"x".repeat(1024 - value.len() - 2));
    value.push_str(r#""}"#);
    value
}

/// An idempotent producer, as the loader and the latency probe use.
fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

async fn produce(bootstrap: &str, topic: &str, from: usize, count: usize) {
    let producer = producer(bootstrap);
    let mut pending = Vec::with_capacity(count);
    for n in from..from + count {
        let key = format!("k{}", n % 1000);
        let value = value(n, now_micros());
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for delivery in pending {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn plain_consumer(bootstrap: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-reader")
        .set("enable.auto.commit", "false");
    config.create().unwrap()
}

/// A consumer of every partition of `topic`, from `offset`.
fn reader(bootstrap: &str, topic: &str, offset: Offset) -> BaseConsumer {
    let consumer = plain_consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, offset)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Reads `topic` until it holds `count` records; the earliest creation
/// time among them (producer timestamps, ms since the epoch).
fn first_created(bootstrap: &str, topic: &str, count: usize) -> i64 {
    let consumer = reader(bootstrap, topic, Offset::Beginning);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = i64::MAX;
    let mut seen = 0;
    while seen < count {
        assert!(
            Instant::now() < deadline,
            "{seen} of {count} records in {topic}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let created = message.timestamp().to_millis().expect("a create time");
                first = first.min(created);
                seen += 1;
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    first
}

/// Waits until `group` has committed `count` records of `topic`; the time
/// it saw that (ms since the epoch). ferry commits only what its sink has
/// had acknowledged.
fn all_committed(bootstrap: &str, group: &str, topic: &str, count: usize) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(topic, partition);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "{group} never committed {count}");
        let committed: i64 = consumer
            .committed_offsets(partitions.clone(), Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .filter_map(|element| element.offset().to_raw())
            .filter(|offset| *offset > 0)
            .sum();
        if committed >= count as i64 {
            return now_micros() / 1000;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn millis(from: i64, to: i64) -> Duration {
    Duration::from_millis((to - from).max(1) as u64)
}

/// Sends 1,000 records/s for 5 s into `input` and reads them from `output`:
/// send → readable latencies, in microseconds, sorted.
async fn latencies(bootstrap: &str, input: &str, output: &str, from: usize) -> Vec<i64> {
    let reader = reader(bootstrap, output, Offset::End);
    let count = 5000;
    let sender = {
        let producer = producer(bootstrap);
        let input = input.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut pending = Vec::with_capacity(count);
            for n in from..from + count {
                let due = started + Duration::from_micros((n - from) as u64 * 1000);
                tokio::time::sleep_until(due.into()).await;
                let key = format!("k{}", n % 1000);
                let value = value(n, now_micros());
                let record = FutureRecord::to(&input).key(&key).payload(&value);
                pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
            for delivery in pending {
                delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        })
    };
    let reading = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < count && Instant::now() < deadline {
            if let Some(Ok(message)) = reader.poll(Duration::from_millis(100)) {
                let received = now_micros();
                let value: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap()).unwrap();
                seen.push(received - value["sent_us"].as_i64().unwrap());
            }
        }
        seen
    });
    sender.await.unwrap();
    let mut seen = reading.await.unwrap();
    assert_eq!(seen.len(), count, "records missing in {output}");
    seen.sort_unstable();
    seen
}

/// Reports deliveries that failed (a passthrough that loses records would
/// make the comparison meaningless).
struct Failures;

impl rdkafka::ClientContext for Failures {}

impl rdkafka::producer::ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            panic!("the passthrough lost a record: {error}");
        }
    }
}

/// The passthrough: consume `input`, produce each record to `output`.
/// Once it has read `records` records and the broker has acknowledged every
/// record sent for them, it sends the time (ms since the epoch) on `acked`.
fn passthrough(
    bootstrap: String,
    input: String,
    output: String,
    records: usize,
    acked: std::sync::mpsc::Sender<i64>,
    stop: Arc<AtomicBool>,
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "bench-passthrough")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    for (name, value) in CONSUMER {
        config.set(*name, *value);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let producer: ThreadedProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Failures)
        .unwrap();
    let mut since_commit = 0;
    let mut read = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&output);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        while let Err((error, returned)) = producer.send(record) {
            assert!(matches!(
                error,
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull
                )
            ));
            record = returned;
            producer.poll(Duration::from_millis(1));
        }
        read += 1;
        if read == records {
            producer.flush(Duration::from_secs(60)).unwrap();
            acked.send(now_micros() / 1000).unwrap();
        }
        since_commit += 1;
        if since_commit >= 1000 {
            let _ = consumer.commit_message(&message, CommitMode::Async);
            since_commit = 0;
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn report(what: &str, records: usize, drained: Duration, latencies: &[i64]) -> f64 {
    let rate = records as f64 / drained.as_secs_f64();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{what}: {rate:.0} records/s ({records} records of 1 KB in {:.2} s); at 1,000/s: p50 {:.1} ms, p99 {:.1} ms",
        drained.as_secs_f64(),
        at(0.5) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0,
    );
    rate
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::var("FERRY_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let broker = tansu::Tansu::start();
    let bootstrap = broker.bootstrap.clone();
    broker
        .create_partitioned(&[
            ("pass.in", PARTITIONS),
            ("pass.out", PARTITIONS),
            ("ferry.in", PARTITIONS),
            ("ferry.out", PARTITIONS),
        ])
        .await;
    let loading = Instant::now();
    produce(&bootstrap, "pass.in", 0, records).await;
    produce(&bootstrap, "ferry.in", 0, records).await;
    println!(
        "loaded 2 × {records} records of 1 KB into 8 partitions each in {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    // The passthrough.
    if std::env::var_os("BENCH_FERRY_ONLY").is_some() {
        return ferry_part(&bootstrap, records, 1.0).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, acked) = std::sync::mpsc::channel();
    let worker = {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || {
            passthrough(
                bootstrap,
                "pass.in".into(),
                "pass.out".into(),
                records,
                acked_tx,
                stop,
            )
        })
    };
    let first = first_created(&bootstrap, "pass.out", records);
    let drained = millis(first, acked.recv().unwrap());
    let seen = latencies(&bootstrap, "pass.in", "pass.out", records).await;
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    let raw = report(
        "passthrough (rdkafka consume → produce)",
        records,
        drained,
        &seen,
    );
    ferry_part(&bootstrap, records, raw).await;
}

/// ferry's part; `raw` is the passthrough's rate.
async fn ferry_part(bootstrap: &str, records: usize, raw: f64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    let properties: Vec<String> = CONSUMER
        .iter()
        .chain(&[("auto.offset.reset", "earliest")])
        .map(|(name, value)| format!("\"{name}\" = \"{value}\""))
        .collect();
    std::fs::write(
        &config,
        format!(
            r#"
            [pipelines.bench]
            batch_size = 256
            max_in_flight = 1024
            max_pending = 50000
            source = {{ kind = "kafka", bootstrap_servers = "{bootstrap}", group_id = "bench-ferry", topics = ["ferry.in"], format = "raw", commit_interval_ms = 10, properties = {{ {} }} }}
            sink = {{ kind = "kafka", bootstrap_servers = "{bootstrap}", topic = "ferry.out" }}
            [pipelines.bench.plugin]
            path = "{}"
            instances = 2
            "#,
            properties.join(", "),
            ferry_plugin_artifacts::MISBEHAVE,
        ),
    )
    .unwrap();
    let ferry = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(&config)
        .env(
            "FERRY_LOG",
            std::env::var("FERRY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .unwrap();
    let committed = {
        let bootstrap = bootstrap.to_string();
        std::thread::spawn(move || all_committed(&bootstrap, "bench-ferry", "ferry.in", records))
    };
    let first = first_created(bootstrap, "ferry.out", records);
    let drained = millis(first, committed.join().unwrap());
    let seen = latencies(bootstrap, "ferry.in", "ferry.out", records).await;
    std::process::Command::new("kill")
        .args(["-TERM", &ferry.id().to_string()])
        .status()
        .unwrap();
    ferry.wait_with_output().unwrap();
    let rate = report(
        "ferry (Kafka source → echo plugin → Kafka sink)",
        records,
        drained,
        &seen,
    );
    println!("ferry / passthrough = {:.0}%", 100.0 * rate / raw);
}
