//! The Postgres source against the real Postgres (wal_level=logical, set
//! by scripts/setup.d/20-postgres.sh), through the real `ferry` binary and
//! components: outbox (with the guide's pruning), messages, tables with
//! their types, SIGKILL and restart under concurrent writers, a lost
//! replication connection, bad rows and bad setups.

use crate::common::{
    TestDatabase, ferry, fresh_database, json_lines, repo, start_run, stderr, write,
};
use ferry::sources::{SourceConfig, SourceContext, SourceItem};
use ferry_plugin_artifacts::{KESSEL_OUTBOX_RUST, MISBEHAVE};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A client of the test database.
async fn connect(database: &TestDatabase) -> tokio_postgres::Client {
    let (client, driver) = tokio_postgres::connect(&database.connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    client
}

/// `dir/ferry.toml`: one pipeline `test` from `source` (inline TOML table
/// body) through `plugin` into `dir/out.jsonl`.
fn config(dir: &Path, source: &str, plugin: &str, extra: &str) -> PathBuf {
    write(
        dir,
        "ferry.toml",
        &format!(
            r#"
            [pipelines.test]
            source = {{ kind = "postgres", {source} }}
            sink = {{ kind = "file", path = "{}" }}
            {extra}
            [pipelines.test.plugin]
            path = "{plugin}"
            "#,
            dir.join("out.jsonl").display(),
        ),
    )
}

/// Stops `child` with SIGTERM (a graceful stop) and returns its stderr.
fn stop(child: Child) -> String {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "ferry did not stop cleanly:\n{text}"
    );
    text
}

/// The sink's lines, once there are at least `count` (or panics after 60 s).
async fn wait_for_lines(dir: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default();
        // Only whole lines: the sink may be mid-write.
        let whole = &text[..text.rfind('\n').map_or(0, |at| at + 1)];
        let lines = json_lines(whole);
        if lines.len() >= count {
            return lines;
        }
        if Instant::now() >= deadline {
            let tail: Vec<&str> = whole.lines().rev().take(20).collect();
            panic!(
                "only {} of {count} lines arrived; the last ones:\n{}",
                lines.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a psql-free version of examples/kessel-outbox/write.sql for `n`.
async fn write_example(client: &tokio_postgres::Client, n: u32) {
    let sql = std::fs::read_to_string(repo().join("examples/kessel-outbox/write.sql")).unwrap();
    let event_id = format!("00000000-0000-0000-0000-{n:012}");
    let sql = sql
        .replace("SELECT gen_random_uuid() AS event_id \\gset\n", "")
        .replace(":'event_id'", &format!("'{event_id}'"))
        .replace(":n", &format!("'{n}'"));
    client.batch_execute(&sql).await.unwrap();
}

/// An LSN (`16/B374D848`) as a number.
fn lsn(text: &str) -> u64 {
    let (high, low) = text.split_once('/').unwrap();
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}

/// The slot's confirmed flush LSN.
async fn slot_position(client: &tokio_postgres::Client, slot: &str) -> String {
    client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

/// The Kessel example's outbox table.
fn example_schema() -> String {
    std::fs::read_to_string(repo().join("examples/kessel-outbox/schema.sql")).unwrap()
}

/// A fresh database (its name is also the slot's and publication's) with
/// `schema` applied, a client of it, and a scratch directory.
async fn fixture(
    test: &str,
    schema: &str,
) -> (TestDatabase, tokio_postgres::Client, tempfile::TempDir) {
    let database = fresh_database(test).await;
    let client = connect(&database).await;
    client.batch_execute(schema).await.unwrap();
    (database, client, tempfile::tempdir().unwrap())
}

/// The inline source table body for `database`, plus `rest`.
fn source(database: &TestDatabase, rest: &str) -> String {
    format!(
        r#"connection = "{}", slot = "{name}", publication = "{name}", {rest}"#,
        database.connection,
        name = database.name()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_rows_reach_the_plugin_even_when_pruned_in_their_transaction() {
    let (database, client, dir) = fixture("pg_outbox", &example_schema()).await;
    let slot = database.name().to_string();
    let source = source(&database, r#"mode = "outbox", table = "outbox""#);
    let ferry = start_run(
        &config(dir.path(), &source, KESSEL_OUTBOX_RUST, ""),
        Stdio::piped(),
    );
    // Written after the start: the slot is created at start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in 1..=3 {
        write_example(&client, n).await;
    }
    let lines = wait_for_lines(dir.path(), 6).await;
    let log = stop(ferry);

    let reported: Vec<(String, String)> = lines
        .iter()
        .map(|line| {
            let request = &line["kessel_report"];
            (
                request["type"].as_str().unwrap().to_string(),
                line["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = (1..=3)
        .flat_map(|n| {
            [
                ("customer".to_string(), format!("c{n}")),
                ("host".to_string(), format!("h{n}")),
            ]
        })
        .collect();
    assert_eq!(
        reported, expected,
        "every report, the pruned hosts' too, in commit order"
    );
    // The outbox table holds no host row: the pruning happened.
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE aggregatetype = 'host'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Positions are commit LSN and index; the slot is confirmed past them.
    // (Not compared with pg_current_wal_lsn(): WAL is cluster-wide, and the
    // other tests' databases write it concurrently.)
    let position = lines[5]["position"].as_str().unwrap();
    let (commit, _index) = position.split_once(':').expect(position);
    let confirmed = slot_position(&client, &slot).await;
    assert!(
        lsn(&confirmed) > lsn(commit),
        "the slot is confirmed past the last commit {commit} ({confirmed}):\n{log}"
    );
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_messages_with_the_prefix_are_events_and_others_are_not() {
    let (database, client, dir) = fixture("pg_messages", "").await;
    let source = source(
        &database,
        r#"mode = "messages", prefix = "ferry", key = "id""#,
    );
    let ferry = start_run(&config(dir.path(), &source, MISBEHAVE, ""), Stdio::piped());
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .batch_execute(
            r#"BEGIN;
               SELECT pg_logical_emit_message(true, 'ferry', '{"id": "a", "n": 1}');
               SELECT pg_logical_emit_message(true, 'other', '{"id": "x"}');
               SELECT pg_logical_emit_message(true, 'ferry', '{"id": "b", "n": 2}');
               COMMIT;
               SELECT pg_logical_emit_message(false, 'ferry', '{"id": "c", "n": 3}');"#,
        )
        .await
        .unwrap();
    let lines = wait_for_lines(dir.path(), 3).await;
    stop(ferry);
    let seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["key"].as_str().unwrap(),
                line["record"]["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a", r#"{"id": "a", "n": 1}"#),
            ("b", r#"{"id": "b", "n": 2}"#),
            ("c", r#"{"id": "c", "n": 3}"#)
        ]
    );
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn table_changes_carry_faithful_images_and_the_primary_key() {
    let database = fresh_database("pg_tables").await;
    let slot = database.name().to_string();
    let client = connect(&database).await;
    client
        .batch_execute(
            r#"CREATE TABLE items (
                   id int, part text, amount numeric, ratio float8, on_sale bool,
                   tags text[], doc jsonb, raw bytea, at timestamptz, big text,
                   PRIMARY KEY (id, part));
               ALTER TABLE items REPLICA IDENTITY FULL;"#,
        )
        .await
        .unwrap();
    let source: SourceConfig = toml::from_str(&format!(
        r#"kind = "postgres"
           connection = "{}"
           slot = "{slot}"
           publication = "{slot}"
           mode = "tables"
           tables = ["items"]"#,
        database.connection
    ))
    .unwrap();
    let (items_tx, mut items) = tokio::sync::mpsc::channel(16);
    let (acks, acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        source
            .build(&Default::default())
            .unwrap()
            .run(SourceContext {
                pipeline: "test".into(),
                items: items_tx,
                acks: acks_rx,
                stop: stop.clone(),
                stats: Default::default(),
                requests: tokio::sync::mpsc::unbounded_channel().1,
            }),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .batch_execute(
            r#"INSERT INTO items VALUES (1, 'a', 12345678901234567890.000000000001, 0.1, true,
                   '{x,"y z",NULL}', '{"k": [1, 2.50]}', '\x0102', '2026-11-24 10:00:00.5+00', NULL);
               UPDATE items SET on_sale = false WHERE id = 1;
               DELETE FROM items WHERE id = 1;"#,
        )
        .await
        .unwrap();
    // One transaction (one simple query): three events, then its end.
    let mut events = Vec::new();
    for seq in 0..4 {
        let item = tokio::time::timeout(Duration::from_secs(30), items.recv()).await;
        let Ok(Some(item)) = item else {
            stop.cancel();
            drop(acks);
            panic!("no item {seq}; the source returned {:?}", task.await);
        };
        match item {
            SourceItem::Event(event) => events.push(event),
            SourceItem::TransactionEnd => {}
            SourceItem::Invalid(invalid) => panic!("{invalid:?}"),
        }
        acks.send(vec![seq]).unwrap();
    }
    stop.cancel();
    drop(acks);
    task.await.unwrap().unwrap();

    let ops: Vec<&str> = events.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(ops, ["create", "update", "delete"]);
    // The primary key, even under REPLICA IDENTITY FULL.
    assert_eq!(events[0].key.as_deref(), Some(r#"["1","a"]"#));
    assert_eq!(events[0].origin.as_deref(), Some("public.items"));
    assert!(events[0].transaction_id.is_some() && events[0].commit_time.is_some());
    // Numeric without float loss: the JSON text has every digit.
    let text = events[0].after.as_deref().unwrap();
    assert!(
        text.contains(":12345678901234567890.000000000001,"),
        "{text}"
    );
    let after: Value = serde_json::from_str(text).unwrap();
    assert_eq!(after["id"], 1);
    assert_eq!(after["ratio"], 0.1);
    assert_eq!(after["on_sale"], true);
    assert_eq!(after["tags"], serde_json::json!(["x", "y z", null]));
    assert_eq!(after["doc"], serde_json::json!({"k": [1, 2.50]}));
    assert_eq!(after["raw"], "\\x0102");
    assert_eq!(after["at"], "2026-11-24 10:00:00.5+00");
    assert_eq!(after["big"], Value::Null);
    let image = |text: &Option<String>| -> Value {
        serde_json::from_str(text.as_deref().unwrap()).unwrap()
    };
    assert_eq!(
        image(&events[1].before)["on_sale"],
        true,
        "REPLICA IDENTITY FULL gives the old row"
    );
    assert_eq!(image(&events[1].after)["on_sale"], false);
    assert_eq!(image(&events[2].before)["id"], 1);
    assert!(events[2].after.is_none());
    drop(client);
    database.drop().await;
}

/// Inserts `count` outbox-shaped rows over `keys` keys, one transaction
/// each, numbering them per key; returns when done.
async fn write_numbered(connection: String, count: u32, keys: u32, writer: u32) {
    let (client, driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    for n in 0..count {
        let key = format!("w{writer}-k{}", n % keys);
        client
            .execute(
                "INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload) VALUES (gen_random_uuid(), 'thing', $1, 'v1', 'Report', jsonb_build_object('n', $2::int))",
                &[&key, &(n as i32)],
            )
            .await
            .unwrap();
    }
}

/// Per key, the `n`s delivered (first delivery of each position).
fn per_key(lines: &[Value]) -> (HashMap<String, Vec<i64>>, usize) {
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let mut keys: HashMap<String, Vec<i64>> = HashMap::new();
    for line in lines {
        let position = line["position"].as_str().unwrap().to_string();
        if !seen.insert(position) {
            duplicates += 1;
            continue;
        }
        // The misbehave plugin sends the event's `after` (the payload).
        let payload: Value =
            serde_json::from_str(line["record"]["value"].as_str().unwrap()).unwrap();
        keys.entry(line["key"].as_str().unwrap().to_string())
            .or_default()
            .push(payload["n"].as_i64().unwrap());
    }
    (keys, duplicates)
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_and_restarted_under_concurrent_writers_nothing_is_lost_and_order_holds() {
    let (database, client, dir) = fixture("pg_kill", &example_schema()).await;
    let source = source(&database, r#"mode = "outbox""#);
    let config = config(dir.path(), &source, MISBEHAVE, "batch_size = 16");
    let mut first = start_run(&config, Stdio::piped());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writers: Vec<_> = (0..4)
        .map(|writer| tokio::spawn(write_numbered(database.connection.clone(), 300, 5, writer)))
        .collect();
    // Kill it mid-stream, without a chance to checkpoint.
    wait_for_lines(dir.path(), 600).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = wait_for_lines(dir.path(), 0).await.len();
    let confirmed = slot_position(&client, database.name()).await;
    for writer in writers {
        writer.await.unwrap();
    }
    let second = start_run(&config, Stdio::piped());
    let lines = wait_for_lines(dir.path(), 1200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(second);
    let lines_after = wait_for_lines(dir.path(), lines.len()).await;

    let (keys, duplicates) = per_key(&lines_after);
    assert_eq!(keys.len(), 20);
    for (key, ns) in &keys {
        let expected: Vec<i64> = {
            let k: i64 = key.rsplit('k').next().unwrap().parse().unwrap();
            (0..300).filter(|n| n % 5 == k).collect()
        };
        assert_eq!(
            ns, &expected,
            "key {key}: every event once, in commit order"
        );
    }
    // Replays are only what was not confirmed when the host died: events
    // of transactions committed at or after the confirmed LSN.
    let mut seen = HashSet::new();
    for line in &lines_after {
        let position = line["position"].as_str().unwrap();
        if !seen.insert(position) {
            let commit_lsn = position.split(':').next().unwrap();
            assert!(
                lsn(commit_lsn) >= lsn(&confirmed),
                "{position} was replayed though {confirmed} was confirmed"
            );
        }
    }
    assert!(duplicates < at_kill, "{duplicates} replays of {at_kill}");
    eprintln!("{duplicates} replays of {at_kill} delivered before the kill");
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_drains_checkpoints_and_a_restart_repeats_nothing() {
    let (database, client, dir) = fixture("pg_sigterm", &example_schema()).await;
    let source = source(&database, r#"mode = "outbox""#);
    let config = config(dir.path(), &source, MISBEHAVE, "batch_size = 16");
    // The admin server, switched on from the environment.
    let port = crate::wire::free_port();
    let first = ferry()
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writers: Vec<_> = (0..4)
        .map(|writer| tokio::spawn(write_numbered(database.connection.clone(), 300, 5, writer)))
        .collect();
    wait_for_lines(dir.path(), 400).await;
    // Ready while streaming; the slot's position and lag, as status and
    // metrics show them.
    assert_eq!(crate::wire::http(port, "GET", "/readyz").0, 200);
    let (_, body) = crate::wire::http(port, "GET", "/status");
    let status: Value = serde_json::from_str(&body).unwrap();
    let checkpoint = status["pipelines"][0]["checkpoint"].as_str().unwrap();
    assert!(checkpoint.contains('/'), "an LSN: {body}");
    assert_eq!(status["pipelines"][0]["lag"]["unit"], "bytes", "{body}");
    let (_, metrics) = crate::wire::http(port, "GET", "/metrics");
    assert!(
        metrics.contains("ferry_source_lag{pipeline=\"test\",unit=\"bytes\"} "),
        "{metrics}"
    );
    // A graceful stop while the writers go on: what was read is delivered
    // and confirmed, then ferry exits 0 well within drain_timeout_ms.
    let stopping = Instant::now();
    let log = stop(first);
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopping.elapsed()
    );
    let at_stop = wait_for_lines(dir.path(), 0).await;
    let confirmed = slot_position(&client, database.name()).await;
    let last_delivered = at_stop
        .iter()
        .map(|line| {
            lsn(line["position"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap())
        })
        .max()
        .unwrap();
    assert!(
        lsn(&confirmed) > last_delivered,
        "the slot is confirmed past everything delivered ({confirmed}):\n{log}"
    );
    for writer in writers {
        writer.await.unwrap();
    }

    let second = start_run(&config, Stdio::piped());
    let lines = wait_for_lines(dir.path(), 1200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(second);
    let (keys, duplicates) = per_key(&wait_for_lines(dir.path(), lines.len()).await);
    assert_eq!(duplicates, 0, "a graceful stop leaves nothing to replay");
    assert_eq!(keys.len(), 20);
    for (key, ns) in &keys {
        let k: i64 = key.rsplit('k').next().unwrap().parse().unwrap();
        let expected: Vec<i64> = (0..300).filter(|n| n % 5 == k).collect();
        assert_eq!(
            ns, &expected,
            "key {key}: every event once, in commit order"
        );
    }
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_replication_connection_is_resumed_without_loss_or_duplicates() {
    let (database, client, dir) = fixture("pg_reconnect", &example_schema()).await;
    let slot = database.name().to_string();
    let source = source(&database, r#"mode = "outbox""#);
    let ferry = start_run(&config(dir.path(), &source, MISBEHAVE, ""), Stdio::piped());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writer = tokio::spawn(write_numbered(database.connection.clone(), 400, 4, 0));
    wait_for_lines(dir.path(), 100).await;
    // What a Postgres restart does to the walsender, to this test alone.
    let terminated = client
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .unwrap();
    assert_eq!(terminated, 1);
    writer.await.unwrap();
    let lines = wait_for_lines(dir.path(), 400).await;
    let log = stop(ferry);
    assert!(log.contains("reconnecting"), "{log}");
    let (keys, duplicates) = per_key(&lines);
    for (key, ns) in &keys {
        let k: i64 = key.rsplit('k').next().unwrap().parse().unwrap();
        let expected: Vec<i64> = (0..400).filter(|n| n % 4 == k).collect();
        assert_eq!(ns, &expected, "key {key}");
    }
    assert_eq!(duplicates, 0, "a reconnect resumes after what was sent");
    assert_eq!(lines.len(), 400);
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_that_is_not_json_meets_the_policy_with_its_lsn_and_row_id() {
    let (database, client, dir) = fixture(
        "pg_bad",
        "CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text, operation text, version text, payload text)",
    )
    .await;
    let source = source(&database, r#"mode = "outbox""#);
    let letters = dir.path().join("letters.jsonl");
    let extra = format!(
        "on_error = \"dead-letter\"\ndead_letter = {{ kind = \"file\", path = \"{}\" }}",
        letters.display()
    );
    let ferry = start_run(
        &config(dir.path(), &source, MISBEHAVE, &extra),
        Stdio::piped(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .batch_execute(
            r#"INSERT INTO outbox VALUES ('e1', 'thing', 'a', 'Report', 'v1', '{"n": 1}');
               INSERT INTO outbox VALUES ('e2', 'thing', 'a', 'Report', 'v1', 'not json');
               INSERT INTO outbox VALUES ('e3', 'thing', 'a', 'Report', 'v1', '{"n": 3}');"#,
        )
        .await
        .unwrap();
    let lines = wait_for_lines(dir.path(), 2).await;
    stop(ferry);
    assert_eq!(lines.len(), 2);
    let letters = json_lines(&std::fs::read_to_string(&letters).unwrap());
    assert_eq!(letters.len(), 1);
    let error = letters[0]["error"].as_str().unwrap();
    let position = letters[0]["position"].as_str().unwrap();
    assert!(
        error.contains("outbox row e2") && error.contains(position),
        "{error}"
    );
    assert!(letters[0]["input"].as_str().unwrap().contains("not json"));
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_or_a_user_who_may_not_replicate_is_a_clear_start_error() {
    let (database, client, dir) = fixture("pg_setup", "").await;
    let slot = database.name().to_string();
    let source = source(&database, r#"mode = "outbox", table = "nowhere""#);
    let output = crate::common::run(ferry().args(["run", "--config"]).arg(config(
        dir.path(),
        &source,
        MISBEHAVE,
        "",
    )));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("there is no table public.nowhere"),
        "{}",
        stderr(&output)
    );

    client
        .batch_execute("CREATE TABLE outbox (id text); DROP ROLE IF EXISTS ferry_plain; CREATE ROLE ferry_plain LOGIN")
        .await
        .unwrap();
    let plain = database
        .connection
        .replace("user=postgres", "user=ferry_plain");
    let source = format!(
        r#"connection = "{plain}", slot = "{slot}", publication = "{slot}", mode = "outbox""#
    );
    let output = crate::common::run(ferry().args(["run", "--config"]).arg(config(
        dir.path(),
        &source,
        MISBEHAVE,
        "",
    )));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("ferry_plain")
            && stderr(&output).contains("may not replicate: it needs the REPLICATION attribute"),
        "{}",
        stderr(&output)
    );
    client.batch_execute("DROP ROLE ferry_plain").await.ok();
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_on_the_same_slot_waits_then_takes_over_without_repeats() {
    let (database, client, first_dir) = fixture("pg_two_hosts", &example_schema()).await;
    let second_dir = tempfile::tempdir().unwrap();
    let source = source(&database, r#"mode = "outbox""#);
    let first = start_run(
        &config(first_dir.path(), &source, MISBEHAVE, ""),
        Stdio::piped(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = start_run(
        &config(second_dir.path(), &source, MISBEHAVE, ""),
        Stdio::piped(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_numbered(database.connection.clone(), 50, 5, 0).await;
    wait_for_lines(first_dir.path(), 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second_out =
        std::fs::read_to_string(second_dir.path().join("out.jsonl")).unwrap_or_default();
    assert!(
        second_out.is_empty(),
        "the second host worked while the first held the slot"
    );
    stop(first);
    write_numbered(database.connection.clone(), 50, 5, 1).await;
    let taken_over = wait_for_lines(second_dir.path(), 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = stop(second);
    assert!(log.contains("in use by another process"), "{log}");
    let keys: HashSet<&str> = taken_over
        .iter()
        .map(|line| line["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|key| key.starts_with("w1-")),
        "the second host repeated the first one's work: {keys:?}"
    );
    assert_eq!(
        wait_for_lines(second_dir.path(), 50).await.len(),
        50,
        "each event once"
    );
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outbox_row_of_an_unknown_operation_halts_at_its_position() {
    let (database, client, dir) = fixture("pg_unknown_op", &example_schema()).await;
    let source = source(&database, r#"mode = "outbox""#);
    let ferry = start_run(
        &config(dir.path(), &source, KESSEL_OUTBOX_RUST, ""),
        Stdio::piped(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    write_example(&client, 1).await;
    client
        .batch_execute(
            r#"INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload)
               VALUES (gen_random_uuid(), 'host', 'h9', 'v1beta2', 'PatchResource', '{"type": "host"}')"#,
        )
        .await
        .unwrap();
    let output = ferry.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("unknown outbox operation") && log.contains("PatchResource"),
        "{log}"
    );
    // Halted at the row: its position (commit LSN and index) is named, and
    // what came before was delivered.
    let lines = wait_for_lines(dir.path(), 2).await;
    assert_eq!(lines.len(), 2);
    assert!(log.contains(":0"), "{log}");
    drop(client);
    database.drop().await;
}

/// The comment on the test's publication (the unfinished-snapshot marker).
async fn publication_comment(
    client: &tokio_postgres::Client,
    database: &TestDatabase,
) -> Option<String> {
    client
        .query_one(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&database.name()],
        )
        .await
        .unwrap()
        .get(0)
}

/// `accounts(id, version)` with `rows` rows at version 0.
async fn accounts(client: &tokio_postgres::Client, rows: i32) {
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO accounts SELECT n, 0, repeat('x', 100) FROM generate_series(1, {rows}) n;"
        ))
        .await
        .unwrap();
}

/// Until `stop`: short transactions that bump a random account's version,
/// add an account or delete one. Returns how many it ran.
async fn churn(connection: String, stop: tokio_util::sync::CancellationToken, rows: i32) -> u32 {
    let (client, driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    let mut n = 0u32;
    while !stop.is_cancelled() {
        let id = (n.wrapping_mul(7919) % rows as u32) as i32 + 1;
        let sql = match n % 10 {
            0 => format!(
                "INSERT INTO accounts VALUES ({}, 0, 'new')",
                rows + n as i32 + 1
            ),
            // The account added ten writes ago (or, at first, an old one).
            1 => format!("DELETE FROM accounts WHERE id = {}", rows + n as i32 - 10),
            _ => format!("UPDATE accounts SET version = version + 1 WHERE id = {id}"),
        };
        client.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n
}

/// Per account id, the versions delivered in order (`None`: deleted), and
/// how many lines came from the snapshot.
fn account_history(lines: &[Value]) -> (HashMap<String, Vec<Option<i64>>>, usize) {
    let mut history: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    let mut snapshot = 0;
    for line in lines {
        if line["position"].as_str().unwrap().contains(":snapshot:") {
            snapshot += 1;
        }
        let key = line["key"].as_str().unwrap().to_string();
        let version = line["record"]["value"].as_str().map(|text| {
            let row: Value = serde_json::from_str(text).unwrap();
            row["version"].as_i64().unwrap()
        });
        history.entry(key).or_default().push(version);
    }
    (history, snapshot)
}

/// The accounts as they stand: id → version.
async fn account_versions(client: &tokio_postgres::Client) -> HashMap<String, i64> {
    client
        .query("SELECT id::text, version::int8 FROM accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Waits until the sink's lines say what `expected` says (or panics after
/// 60 s); returns the lines.
async fn wait_for_accounts(dir: &Path, expected: &HashMap<String, i64>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = wait_for_lines(dir, 0).await;
        let (history, _) = account_history(&lines);
        let last: HashMap<String, i64> = history
            .iter()
            .filter_map(|(key, versions)| Some((key.clone(), (*versions.last()?)?)))
            .collect();
        if &last == expected {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "the sink never matched the table: {} accounts delivered, {} in the table",
            last.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_initial_snapshot_and_the_stream_miss_and_double_nothing_under_writes() {
    let (database, client, dir) = fixture("pg_snapshot", "").await;
    let rows = 20_000;
    accounts(&client, rows).await;
    let source = source(&database, r#"mode = "tables", tables = ["accounts"]"#);
    let config = config(dir.path(), &source, MISBEHAVE, "batch_size = 64");
    // Writers run before, during and after the snapshot.
    let writing = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(churn(database.connection.clone(), writing.clone(), rows));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ferry = start_run(&config, Stdio::piped());
    tokio::time::sleep(Duration::from_secs(3)).await;
    writing.cancel();
    let writes = writer.await.unwrap();
    let expected = account_versions(&client).await;
    let lines = wait_for_accounts(dir.path(), &expected).await;
    let log = stop(ferry);

    let (history, snapshot) = account_history(&lines);
    assert!(
        snapshot >= rows as usize,
        "{snapshot} snapshot rows:\n{log}"
    );
    assert!(writes > 50, "only {writes} writes ran");
    // Per account, versions only go up, one step at a time: an event missed
    // leaves a gap, one doubled (in the snapshot and the stream) repeats a
    // version, and a snapshot row after a newer change goes back.
    for (key, versions) in &history {
        for pair in versions.windows(2) {
            match pair {
                [Some(a), Some(b)] => {
                    assert_eq!(*b, a + 1, "account {key} went {versions:?}:\n{log}")
                }
                [Some(_), None] => {}
                _ => panic!("account {key} changed after its deletion: {versions:?}"),
            }
        }
    }
    // Every account there is was delivered, at its version (checked by
    // wait_for_accounts); and none that is gone is left standing.
    let standing = history
        .iter()
        .filter(|(_, versions)| versions.last().is_some_and(Option::is_some))
        .count();
    assert_eq!(standing, expected.len());
    assert!(log.contains("Initial snapshot."), "{log}");
    // The marker is gone: a restart streams on.
    assert_eq!(publication_comment(&client, &database).await, None);
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_killed_midway_is_read_again_whole_at_the_next_start() {
    let (database, client, dir) = fixture("pg_snapshot_kill", "").await;
    let rows = 30_000;
    accounts(&client, rows).await;
    let source = source(&database, r#"mode = "tables", tables = ["accounts"]"#);
    let config = config(dir.path(), &source, MISBEHAVE, "batch_size = 64");
    let mut first = start_run(&config, Stdio::piped());
    let at_kill = wait_for_lines(dir.path(), 300).await.len();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        at_kill < rows as usize,
        "the snapshot ended before the kill"
    );
    let marked = publication_comment(&client, &database).await;
    assert!(marked.is_some_and(|m| m.contains("not yet delivered")));

    let second = start_run(&config, Stdio::piped());
    // After the second snapshot: streamed.
    wait_for_lines(dir.path(), at_kill + rows as usize).await;
    client
        .batch_execute("UPDATE accounts SET version = 1 WHERE id = 1")
        .await
        .unwrap();
    let expected = account_versions(&client).await;
    let lines = wait_for_accounts(dir.path(), &expected).await;
    let log = stop(second);
    assert!(log.contains("snapshot was interrupted"), "{log}");
    // The second snapshot has every row; the first's partial one is before
    // it in the file.
    let (_, snapshot) = account_history(&lines);
    assert!(snapshot >= at_kill + rows as usize, "{snapshot}");
    let last_snapshot = lines
        .iter()
        .rposition(|line| line["position"].as_str().unwrap().contains(":snapshot:"))
        .unwrap();
    assert_eq!(
        lines[last_snapshot + 1..].len(),
        1,
        "after the snapshot, only the update"
    );
    drop(client);
    database.drop().await;
}
