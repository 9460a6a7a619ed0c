//! A Kafka-compatible broker for tests: tansu (scripts/setup.d/40-kafka.sh
//! installs it), on a free port, in memory, one per test; and a reader of
//! a topic's records with their offsets.

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker, stopped when dropped.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
}

fn tansu_binary() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cargo/bin/tansu");
    assert!(
        installed.is_file(),
        "{} is missing: run scripts/setup (scripts/setup.d/40-kafka.sh installs tansu)",
        installed.display()
    );
    installed
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {bootstrap}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, bootstrap }
    }

    /// Creates `topics`, one partition each.
    pub async fn create_topics(&self, topics: &[&str]) {
        let topics: Vec<(&str, i32)> = topics.iter().map(|topic| (*topic, 1)).collect();
        self.create_partitioned(&topics).await;
    }

    /// Creates topics with the given numbers of partitions.
    pub async fn create_partitioned(&self, topics: &[(&str, i32)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(topic, partitions)| {
                NewTopic::new(topic, *partitions, TopicReplication::Fixed(1))
            })
            .collect();
        for result in admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .unwrap()
        {
            result.unwrap();
        }
    }

    /// Produces `records` to `topic` (partition chosen by key), in order,
    /// each acknowledged.
    pub async fn produce(&self, topic: &str, records: &[Produce]) {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let mut pending = Vec::new();
        for record in records {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut future: FutureRecord<'_, str, str> = FutureRecord::to(topic).headers(headers);
            if let Some(key) = &record.key {
                future = future.key(key);
            }
            if let Some(value) = &record.value {
                future = future.payload(value);
            }
            if let Some(partition) = record.partition {
                future = future.partition(partition);
            }
            pending.push(producer.send_result(future).map_err(|(e, _)| e).unwrap());
        }
        for delivery in pending {
            delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }

    /// The offsets group `group` committed for `topic`'s `partitions`
    /// (`-1001` where none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(topic, partition);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(|p| {
                committed
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1001)
            })
            .collect()
    }

    /// The records of partition 0 of `topic` (read_committed), once there
    /// are at least `count`, or after `wait` with what there is.
    pub fn read(&self, topic: &str, count: usize, wait: Duration) -> Vec<Record> {
        self.read_until(topic, wait, |records| records.len() >= count)
    }

    /// The records of partition 0 of `topic` (read_committed), once `done`
    /// says they are enough, or after `wait` with what there is.
    pub fn read_until(
        &self,
        topic: &str,
        wait: Duration,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "ferry-test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&partitions).unwrap();
        let mut records = Vec::new();
        let deadline = Instant::now() + wait;
        while !done(&records) && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                offset: message.offset(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                value: message
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                headers,
            });
        }
        records
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Produce {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
}

impl Produce {
    pub fn new(key: &str, value: &str) -> Produce {
        Produce {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Produce::default()
        }
    }

    pub fn tombstone(key: &str) -> Produce {
        Produce {
            key: Some(key.into()),
            ..Produce::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Produce {
        self.headers.push((name.into(), value.into()));
        self
    }
}
