//! The Kafka source (and the Kafka sink behind it) against a real
//! Kafka-compatible broker (tansu, one per test): Debezium and EventRouter
//! records through the Kessel plugin, two hosts in one group with one
//! killed, a sink down for a while, and a poison record under each error
//! policy, each checked down to the offsets the group committed.

use crate::common::{start_run, write};
use crate::tansu::{Produce, Record, Tansu};
use ferry_kessel_server::KesselServer;
use ferry_plugin_artifacts::{KESSEL_OUTBOX_RUST, MISBEHAVE};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Consumer settings that make tansu's group join take seconds, not 20.
const FAST_GROUP: &str = r#""session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500", "max.poll.interval.ms" = "6000""#;

/// A `kind = "kafka"` source table.
fn source(broker: &Tansu, group: &str, topics: &[&str], format: &str) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"{{ kind = "kafka", bootstrap_servers = "{}", group_id = "{group}", topics = [{}], format = "{format}", commit_interval_ms = 200, properties = {{ {FAST_GROUP} }} }}"#,
        broker.bootstrap,
        topics.join(", ")
    )
}

/// Sends SIGTERM and returns the exit status and the log.
fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    finish(&mut child)
}

fn finish(child: &mut Child) -> (std::process::ExitStatus, String) {
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    (status, log)
}

/// The JSON lines of `path` once there are at least `count`.
fn wait_for_lines(path: &Path, count: usize, child: &mut Child) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = crate::common::json_lines(&std::fs::read_to_string(path).unwrap_or_default());
        if lines.len() >= count {
            return lines;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let (_, log) = finish(child);
            panic!(
                "ferry exited ({status}) with {} of {count} lines:\n{log}",
                lines.len()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} lines in {}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(id: &str, version: u32) -> Value {
    json!({
        "type": "host",
        "reporter_type": "hbi",
        "reporter_instance_id": "redhat",
        "representations": {
            "metadata": {"local_resource_id": id, "api_href": format!("https://example.com/hosts/{id}"), "reporter_version": version.to_string()},
            "common": {"workspace_id": "ws-1"},
            "reporter": {"n": version}
        }
    })
}

/// A Debezium change event of the outbox table, `wrapped` in the JSON
/// converter's schema envelope or bare.
fn debezium_row(op: &str, id: &str, aggregate: &str, payload: &Value, wrapped: bool) -> String {
    let row = json!({
        "id": id,
        "aggregatetype": "hbi.hosts",
        "aggregateid": aggregate,
        "operation": "ReportResource",
        "version": "v1beta2",
        "payload": payload.to_string(),
    });
    let (before, after) = if op == "d" {
        (row, Value::Null)
    } else {
        (Value::Null, row)
    };
    let envelope = json!({
        "before": before,
        "after": after,
        "source": {"version": "2.7.0.Final", "connector": "postgresql", "db": "inventory", "schema": "public", "table": "outbox_events", "txId": 771, "lsn": 24023128, "ts_ms": 1_700_000_000_000i64},
        "op": op,
        "ts_ms": 1_700_000_000_100i64,
        "transaction": null
    });
    if wrapped {
        json!({"schema": {"type": "struct", "name": "inventory.public.outbox_events.Envelope"}, "payload": envelope}).to_string()
    } else {
        envelope.to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_and_event_router_records_reach_kessel_outputs_and_offsets_commit() {
    let broker = Tansu::start();
    broker
        .create_topics(&["inventory.public.outbox_events", "outbox.event.hbi.hosts"])
        .await;
    // Debezium row CDC of the outbox table: inserts (one bare, one
    // schema-wrapped), the pruning delete and its tombstone.
    let key = |id: &str| json!({"id": id}).to_string();
    broker
        .produce(
            "inventory.public.outbox_events",
            &[
                Produce::new(
                    &key("e1"),
                    &debezium_row("c", "e1", "h1", &report("h1", 1), false),
                ),
                Produce::new(
                    &key("e2"),
                    &debezium_row("c", "e2", "h2", &report("h2", 1), true),
                ),
                Produce::new(
                    &key("e2"),
                    &debezium_row("d", "e2", "h2", &report("h2", 1), true),
                ),
                Produce::tombstone(&key("e2")),
                Produce::new(
                    &key("e3"),
                    &debezium_row("c", "e3", "h1", &report("h1", 2), false),
                ),
            ],
        )
        .await;
    // EventRouter output: key = aggregate id, headers, the payload as a
    // schema-wrapped JSON string (the JSON converter without
    // `expand.json.payload`) or bare.
    let routed = |id: &str, version: u32, wrapped: bool| {
        let payload = report(id, version).to_string();
        let value = if wrapped {
            json!({"schema": {"type": "string"}, "payload": payload}).to_string()
        } else {
            payload
        };
        Produce::new(id, &value)
            .header("id", &format!("ev-{id}-{version}"))
            .header("operation", "ReportResource")
            .header("version", "v1beta2")
    };
    let delete = Produce::new(
        "h3",
        &json!({"reference": {"resource_type": "host", "resource_id": "h3", "reporter": {"type": "hbi"}}}).to_string(),
    )
    .header("operation", "DeleteResource")
    .header("version", "v1beta2");
    broker
        .produce(
            "outbox.event.hbi.hosts",
            &[
                routed("h3", 1, true),
                routed("h4", 1, false),
                delete,
                routed("h4", 2, true),
            ],
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let dbz_out = dir.path().join("debezium.jsonl");
    let router_out = dir.path().join("router.jsonl");
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.debezium]
            source = {debezium}
            sink = {{ kind = "file", path = "{dbz_out}" }}
            plugin = {{ path = "{KESSEL_OUTBOX_RUST}" }}
            [pipelines.router]
            source = {router}
            sink = {{ kind = "file", path = "{router_out}" }}
            plugin = {{ path = "{KESSEL_OUTBOX_RUST}" }}
            "#,
            debezium = source(
                &broker,
                "dbz",
                &["inventory.public.outbox_events"],
                "debezium"
            ),
            router = source(&broker, "router", &["outbox.event.hbi.hosts"], "outbox"),
            dbz_out = dbz_out.display(),
            router_out = router_out.display(),
        ),
    );
    let mut ferry = start_run(&config, Stdio::piped());
    let dbz = wait_for_lines(&dbz_out, 3, &mut ferry);
    let router = wait_for_lines(&router_out, 4, &mut ferry);
    // Let a commit interval pass, then stop: offsets commit at stop too.
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = terminate(ferry);
    assert!(status.success(), "{log}");

    let summary = |lines: &[Value]| -> Vec<(String, String, String)> {
        lines
            .iter()
            .map(|line| {
                let (kind, request) = if let Some(r) = line.get("kessel_report") {
                    (
                        "report",
                        r["representations"]["metadata"]["local_resource_id"]
                            .as_str()
                            .unwrap()
                            .to_string()
                            + "@"
                            + r["representations"]["metadata"]["reporter_version"]
                                .as_str()
                                .unwrap(),
                    )
                } else {
                    (
                        "delete",
                        line["kessel_delete"]["reference"]["resource_id"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    )
                };
                (
                    line["position"].as_str().unwrap().to_string(),
                    kind.to_string(),
                    request,
                )
            })
            .collect()
    };
    // Keys go concurrently: order holds per key, so compare in source order.
    let in_order = |lines: &[Value]| {
        let mut lines = lines.to_vec();
        lines.sort_by_key(|line| {
            let position = line["position"].as_str().unwrap();
            position.rsplit(':').next().unwrap().parse::<u64>().unwrap()
        });
        lines
    };
    let (dbz, router) = (in_order(&dbz), in_order(&router));
    assert_eq!(
        summary(&dbz),
        [
            (
                "inventory.public.outbox_events:0:0".into(),
                "report".into(),
                "h1@1".into()
            ),
            (
                "inventory.public.outbox_events:0:1".into(),
                "report".into(),
                "h2@1".into()
            ),
            (
                "inventory.public.outbox_events:0:4".into(),
                "report".into(),
                "h1@2".into()
            ),
        ],
        "the delete maps to nothing and the tombstone is skipped"
    );
    assert_eq!(
        dbz[0]["key"], "h1",
        "the row's aggregate id keys the output"
    );
    assert_eq!(
        summary(&router),
        [
            (
                "outbox.event.hbi.hosts:0:0".into(),
                "report".into(),
                "h3@1".into()
            ),
            (
                "outbox.event.hbi.hosts:0:1".into(),
                "report".into(),
                "h4@1".into()
            ),
            (
                "outbox.event.hbi.hosts:0:2".into(),
                "delete".into(),
                "h3".into()
            ),
            (
                "outbox.event.hbi.hosts:0:3".into(),
                "report".into(),
                "h4@2".into()
            ),
        ]
    );
    assert_eq!(router[1]["key"], "h4");
    assert_eq!(
        broker.committed("dbz", "inventory.public.outbox_events", 1),
        [5],
        "offset + 1 of the last record, the skipped tombstone included"
    );
    assert_eq!(broker.committed("router", "outbox.event.hbi.hosts", 1), [4]);
}

/// `(key, n)` pairs of echoed records, in the order they were written.
fn echoed(records: &[Record]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|r| {
            let value: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            (r.key.clone().unwrap(), value["n"].as_u64().unwrap())
        })
        .collect()
}

/// Every key's numbers, first deliveries only, must be 0..count in order.
fn assert_complete_and_ordered(pairs: &[(String, u64)], keys: usize, count: u64) {
    let mut seen = BTreeSet::new();
    let mut firsts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, n) in pairs {
        if seen.insert((key.clone(), *n)) {
            firsts.entry(key).or_default().push(*n);
        }
    }
    assert_eq!(firsts.len(), keys, "keys: {:?}", firsts.keys());
    for (key, numbers) in firsts {
        assert_eq!(
            numbers,
            (0..count).collect::<Vec<_>>(),
            "key {key}: every record, first deliveries in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_a_group_and_one_killed_loses_nothing() {
    const KEYS: usize = 16;
    const PER_KEY: u64 = 150;
    let broker = Tansu::start();
    broker.create_partitioned(&[("in", 4), ("out", 1)]).await;
    let records: Vec<Produce> = (0..PER_KEY)
        .flat_map(|n| {
            (0..KEYS).map(move |k| Produce::new(&format!("k{k}"), &json!({"n": n}).to_string()))
        })
        .collect();
    broker.produce("in", &records).await;

    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.echo]
            source = {source}
            sink = {{ kind = "kafka", bootstrap_servers = "{bootstrap}", topic = "out" }}
            plugin = {{ path = "{MISBEHAVE}" }}
            batch_size = 16
            "#,
            source = source(&broker, "echo", &["in"], "raw"),
            bootstrap = broker.bootstrap,
        ),
    );
    let total = KEYS * PER_KEY as usize;
    let mut first = start_run(&config, Stdio::piped());
    let early = broker.read("out", total / 10, Duration::from_secs(60));
    assert!(early.len() >= total / 10, "the first host delivers");
    let second = start_run(&config, Stdio::piped());
    // The second joins; the first is killed mid-stream.
    let _ = broker.read("out", total / 3, Duration::from_secs(60));
    first.kill().unwrap();
    let _ = first.wait();
    let distinct = |records: &[Record]| echoed(records).into_iter().collect::<BTreeSet<_>>().len();
    let out = broker.read_until("out", Duration::from_secs(90), |records| {
        distinct(records) >= total
    });
    let (status, log) = terminate(second);
    assert!(status.success(), "{log}");
    let pairs = echoed(&out);
    assert_complete_and_ordered(&pairs, KEYS, PER_KEY);
    eprintln!(
        "{} records written for {total} consumed ({} replayed after the kill)",
        pairs.len(),
        pairs.len() - total
    );
    let committed: i64 = broker.committed("echo", "in", 4).iter().sum();
    assert_eq!(committed, total as i64, "the survivor committed everything");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_sink_is_retried_and_then_gets_everything_in_order() {
    let broker = Tansu::start();
    broker
        .create_partitioned(&[("outbox.event.hbi.hosts", 2)])
        .await;
    let records: Vec<Produce> = (1..=10)
        .flat_map(|version| {
            (0..4).map(move |h| {
                Produce::new(
                    &format!("h{h}"),
                    &report(&format!("h{h}"), version).to_string(),
                )
                .header("operation", "ReportResource")
            })
        })
        .collect();
    broker.produce("outbox.event.hbi.hosts", &records).await;
    let kessel = KesselServer::start().unwrap();
    kessel.set_unavailable(true);

    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.hosts]
            source = {source}
            sink = {{ kind = "kessel", endpoint = "{endpoint}" }}
            plugin = {{ path = "{KESSEL_OUTBOX_RUST}" }}
            retry = {{ initial_ms = 50, max_ms = 400 }}
            "#,
            source = source(&broker, "hosts", &["outbox.event.hbi.hosts"], "outbox"),
            endpoint = kessel.endpoint(),
        ),
    );
    let ferry = start_run(&config, Stdio::piped());
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        kessel.resources().is_empty(),
        "nothing passes while Kessel is down"
    );
    assert!(kessel.counts().unavailable > 3, "{:?}", kessel.counts());
    assert_eq!(
        broker.committed("hosts", "outbox.event.hbi.hosts", 2),
        [-1001, -1001],
        "nothing is committed before it is delivered"
    );
    kessel.set_unavailable(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kessel.log().len() < records.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = terminate(ferry);
    assert!(status.success(), "{log}");
    assert!(log.contains("retry"), "retries are logged:\n{log}");

    let applied = kessel.log();
    assert_eq!(applied.len(), records.len(), "each report applied once");
    for h in 0..4 {
        let id = format!("h{h}");
        let versions: Vec<String> = applied
            .iter()
            .filter(|e| e.local_resource_id == id)
            .map(|e| {
                e.request["representations"]["metadata"]["reporter_version"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let expected: Vec<String> = (1..=10).map(|v| v.to_string()).collect();
        assert_eq!(versions, expected, "{id} in order");
    }
    // A partition no key hashed to has nothing to commit (-1001).
    let committed: i64 = broker
        .committed("hosts", "outbox.event.hbi.hosts", 2)
        .iter()
        .filter(|offset| **offset >= 0)
        .sum();
    assert_eq!(committed, records.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_meets_each_policy_and_offsets_stay_before_what_was_not_delivered() {
    let broker = Tansu::start();
    broker.create_topics(&["in"]).await;
    let value = |n: u32| json!({"n": n}).to_string();
    broker
        .produce(
            "in",
            &[
                Produce::new("a", &value(0)),
                Produce::new("b", &value(1)),
                Produce::new("fail", &value(2)),
                Produce::new("a", &value(3)),
                Produce::new("b", &value(4)),
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let run = |policy: &str, extra: &str| {
        let out = dir.path().join(format!("{policy}.jsonl"));
        let config = write(
            dir.path(),
            &format!("{policy}.toml"),
            &format!(
                r#"
                [pipelines.{policy}]
                source = {source}
                sink = {{ kind = "file", path = "{out}" }}
                plugin = {{ path = "{MISBEHAVE}" }}
                on_error = "{policy}"
                {extra}
                "#,
                source = source(&broker, policy, &["in"], "raw"),
                out = out.display(),
            ),
        );
        (start_run(&config, Stdio::piped()), out)
    };
    let letters = dir.path().join("letters.jsonl");
    let (mut halt, _) = run("halt", "");
    let (mut dead, dead_out) = run(
        "dead-letter",
        &format!(
            "dead_letter = {{ kind = \"file\", path = \"{}\" }}",
            letters.display()
        ),
    );
    let (mut park, park_out) = run("park", "");

    // halt: stops at the poison record, committing only what precedes it.
    let status = halt.wait().unwrap();
    let (_, log) = finish(&mut halt);
    assert!(!status.success());
    assert!(log.contains("in:0:2"), "the error names the record:\n{log}");
    assert!(log.contains("asked to fail"), "{log}");
    assert_eq!(broker.committed("halt", "in", 1), [2]);

    // dead-letter: the record is set aside, everything else delivered.
    let lines = wait_for_lines(&dead_out, 4, &mut dead);
    let letter = wait_for_lines(&letters, 1, &mut dead);
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = terminate(dead);
    assert!(status.success(), "{log}");
    assert_eq!(lines.len(), 4);
    assert_eq!(letter[0]["position"], "in:0:2");
    let error = letter[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("asked to fail"), "{}", letter[0]);
    assert_eq!(broker.committed("dead-letter", "in", 1), [5]);

    // park: the key is held, the others delivered; the offset stays
    // before the parked record, so a restart reads it again.
    let lines = wait_for_lines(&park_out, 4, &mut park);
    std::thread::sleep(Duration::from_millis(500));
    let (_, log) = terminate(park);
    let mut delivered: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["key"].as_str().unwrap(), l["position"].as_str().unwrap()))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            ("a", "in:0:0"),
            ("a", "in:0:3"),
            ("b", "in:0:1"),
            ("b", "in:0:4")
        ],
        "{log}"
    );
    assert_eq!(broker.committed("park", "in", 1), [2], "{log}");
}
