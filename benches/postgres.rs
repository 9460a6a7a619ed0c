//! The Postgres source's drain rate and latency, against the local
//! Postgres (wal_level=logical):
//!
//! 1. `FERRY_BENCH_ROWS` (default 20,000; the issue's figure is 200,000)
//!    outbox rows of ~1 KB committed before anything reads them, 100 per
//!    transaction;
//! 2. the physical limit: a minimal reader of its own slot (the same
//!    replication library, counting inserts, no decoding) until the end;
//! 3. ferry: the real binary, outbox mode, the Rust Kessel plugin, the file
//!    sink to /dev/null, until the slot is confirmed at the end — startup
//!    included;
//! 4. the tables mode's initial snapshot of the same table (echo plugin,
//!    file sink to /dev/null), until every row is delivered;
//! 5. ferry into the test Kessel server (in this process, on loopback) at
//!    `max_in_flight` 1, 16 and 64 — the rows' 1,000 distinct resources are
//!    the units of order: reports/s, startup included;
//! 6. latency: ferry running, 2,000 rows/s for 5 s, one per transaction,
//!    each stamped with its commit time; commit → line written, p50/p99;
//! 7. the same at 1,000 rows/s into the Kessel test server: commit →
//!    applied by the server, p50/p99.
//!
//! Run: `cargo bench -p ferry --bench postgres` (FERRY_BENCH_ROWS=200000 for
//! the full figure).

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::io::{BufRead as _, Seek as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "shared/database.rs"]
mod database;

use database::connect;

const DATABASE: &str = "ferry_bench_pg";

fn connection() -> String {
    database::connection(DATABASE)
}

async fn reset() {
    database::reset(DATABASE).await;
}

fn schema() -> &'static str {
    "CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,
         aggregateid text NOT NULL, version text NOT NULL, operation text NOT NULL, payload jsonb);
     CREATE PUBLICATION bench FOR TABLE outbox;"
}

/// ~1 KB ReportResource payload; `sent` is a SQL expression stamped in.
fn insert(rows: usize, first: usize, sent: &str) -> String {
    let notes = "x".repeat(600);
    format!(
        "INSERT INTO outbox (aggregatetype, aggregateid, version, operation, payload)
         SELECT 'host', 'host-' || (n % 1000), 'v1beta2', 'ReportResource', jsonb_build_object(
           'type', 'host', 'reporter_type', 'hbi', 'reporter_instance_id', 'redhat',
           'representations', jsonb_build_object(
             'metadata', jsonb_build_object('local_resource_id', 'host-' || n,
                 'api_href', 'https://console.example.com/api/inventory/v1/hosts/host-' || n,
                 'reporter_version', '2.3.1'),
             'common', jsonb_build_object('workspace_id', 'a64d17d0-aec3-410a-acd0-e0b85b22c076'),
             'reporter', jsonb_build_object('sent', {sent}, 'notes', '{notes}')))
         FROM generate_series({first}, {}) AS n;",
        first + rows - 1
    )
}

async fn current_lsn(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Reads slot `slot` to `end` with nothing but the replication library.
async fn raw_reader(slot: &str, end: &str) -> (usize, Duration) {
    let config = ReplicationConfig::new("127.0.0.1", "postgres", "", DATABASE, slot, "bench")
        .with_start_lsn(Lsn::ZERO)
        .with_stop_lsn(Lsn::parse(end).unwrap());
    let started = Instant::now();
    let mut client = ReplicationClient::connect(config).await.unwrap();
    let mut inserts = 0;
    while let Some(event) = client.recv().await.unwrap() {
        match event {
            ReplicationEvent::XLogData { data, .. } if data.first() == Some(&b'I') => inserts += 1,
            ReplicationEvent::StoppedAt { .. } => break,
            _ => {}
        }
    }
    (inserts, started.elapsed())
}

fn config(dir: &Path, slot: &str, out: &Path) -> std::path::PathBuf {
    config_with(
        dir,
        slot,
        &format!("{{ kind = \"file\", path = \"{}\" }}", out.display()),
        "",
    )
}

fn config_with(dir: &Path, slot: &str, sink: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{slot}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
            [pipelines.{slot}]
            batch_size = 256
            {extra}
            source = {{ kind = "postgres", connection = "{}", slot = "{slot}", publication = "bench", mode = "outbox" }}
            sink = {sink}
            [pipelines.{slot}.plugin]
            path = "{}"
            instances = 2
            "#,
            connection(),
            ferry_plugin_artifacts::KESSEL_OUTBOX_RUST,
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(config)
        .env("FERRY_LOG", "warn")
        .spawn()
        .unwrap()
}

fn stop(child: std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait_with_output().unwrap();
}

async fn confirmed_at_least(client: &tokio_postgres::Client, slot: &str, lsn: &str) -> bool {
    client
        .query_one(
            "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &lsn],
        )
        .await
        .unwrap()
        .get(0)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("FERRY_BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    reset().await;
    let client = connect(&connection()).await;
    client.batch_execute(schema()).await.unwrap();
    for slot in [
        "bench_raw",
        "bench_ferry",
        "bench_kessel_1",
        "bench_kessel_16",
        "bench_kessel_64",
    ] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .unwrap();
    }
    let loading = Instant::now();
    for first in (0..rows).step_by(100) {
        client
            .batch_execute(&insert(100.min(rows - first), first, "0"))
            .await
            .unwrap();
    }
    let end = current_lsn(&client).await;
    println!(
        "committed {rows} outbox rows of ~1 KB in {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    let (inserts, raw) = raw_reader("bench_raw", &end).await;
    assert_eq!(inserts, rows);
    let raw_rate = rows as f64 / raw.as_secs_f64();
    println!(
        "physical limit (replication reader, no decoding): {raw_rate:.0} rows/s ({:.2} s)",
        raw.as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let ferry = start(&config(dir.path(), "bench_ferry", Path::new("/dev/null")));
    while !confirmed_at_least(&client, "bench_ferry", &end).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    stop(ferry);
    let ferry_rate = rows as f64 / drained.as_secs_f64();
    println!(
        "ferry (outbox → Rust Kessel plugin → file sink, startup included): {ferry_rate:.0} events/s ({:.2} s) = {:.0}% of the physical limit",
        drained.as_secs_f64(),
        100.0 * ferry_rate / raw_rate
    );

    // The tables mode's initial snapshot of the same rows (the outbox table
    // read as a table), echoed to /dev/null: done when the slot exists and
    // the unfinished-snapshot marker is gone.
    let snapshot_config = dir.path().join("snapshot.toml");
    std::fs::write(
        &snapshot_config,
        format!(
            r#"
            [pipelines.bench_snapshot]
            batch_size = 256
            source = {{ kind = "postgres", connection = "{}", slot = "bench_snapshot", publication = "bench_snapshot", mode = "tables", tables = ["outbox"] }}
            sink = {{ kind = "file", path = "/dev/null" }}
            [pipelines.bench_snapshot.plugin]
            path = "{}"
            instances = 2
            "#,
            connection(),
            ferry_plugin_artifacts::MISBEHAVE,
        ),
    )
    .unwrap();
    let started = Instant::now();
    let ferry = start(&snapshot_config);
    loop {
        let done: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bench_snapshot')
                    AND (SELECT obj_description(oid, 'pg_publication') IS NULL FROM pg_publication WHERE pubname = 'bench_snapshot')",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshotted = started.elapsed();
    stop(ferry);
    println!(
        "initial snapshot (tables mode, {rows} rows of ~1 KB → echo plugin → file sink, startup included): {:.0} rows/s ({:.2} s)",
        rows as f64 / snapshotted.as_secs_f64(),
        snapshotted.as_secs_f64()
    );

    // Into Kessel, 1,000 resources, at several concurrencies.
    let server = ferry_kessel_server::KesselServer::start().unwrap();
    let sink = format!(
        "{{ kind = \"kessel\", endpoint = \"{}\" }}",
        server.endpoint()
    );
    for concurrency in [1, 16, 64] {
        let slot = format!("bench_kessel_{concurrency}");
        let before = server.counts().reports;
        let started = Instant::now();
        let ferry = start(&config_with(
            dir.path(),
            &slot,
            &sink,
            &format!("max_in_flight = {concurrency}"),
        ));
        while !confirmed_at_least(&client, &slot, &end).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = started.elapsed();
        stop(ferry);
        let reports = server.counts().reports - before;
        println!(
            "ferry → Kessel test server, max_in_flight {concurrency}: {:.0} reports/s ({reports} reports in {:.2} s)",
            reports as f64 / drained.as_secs_f64(),
            drained.as_secs_f64()
        );
    }

    // Latency at a steady 2,000 events/s.
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_latency', 'pgoutput')",
            &[],
        )
        .await
        .unwrap();
    let out = dir.path().join("latency.jsonl");
    std::fs::write(&out, "").unwrap();
    let ferry = start(&config(dir.path(), "bench_latency", &out));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = 2_000;
    let seconds = 5;
    let writer = steady_writer(rate, seconds);
    let mut file = std::fs::File::open(&out).unwrap();
    let mut reader = std::io::BufReader::new(&mut file);
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    let mut line = String::new();
    while latencies.len() < (rate * seconds) as usize && Instant::now() < deadline {
        line.clear();
        let position = reader.stream_position().unwrap();
        if reader.read_line(&mut line).unwrap() == 0 || !line.ends_with('\n') {
            reader.seek(std::io::SeekFrom::Start(position)).unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        let now = now_micros();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let sent = value["kessel_report"]["representations"]["reporter"]["sent"]
            .as_i64()
            .unwrap();
        latencies.push(now - sent);
    }
    writer.await.unwrap();
    stop(ferry);
    report_latencies(
        &format!("latency at {rate} events/s, commit → file sink line"),
        latencies,
    );

    // Latency into Kessel at a steady 1,000 events/s: commit → applied by
    // the test Kessel server (its log stamps each applied call).
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_kessel_latency', 'pgoutput')",
            &[],
        )
        .await
        .unwrap();
    let ferry = start(&config_with(
        dir.path(),
        "bench_kessel_latency",
        &sink,
        "max_in_flight = 64",
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rate, seconds) = (1_000, 5);
    let applied_before = server.log().len();
    let reports_before = server.counts().reports;
    steady_writer(rate, seconds).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.counts().reports < reports_before + rate * seconds && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(ferry);
    let latencies = server.log()[applied_before..]
        .iter()
        .map(|entry| {
            let applied = entry
                .applied_at
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            applied
                - entry.request["representations"]["reporter"]["sent"]
                    .as_i64()
                    .unwrap()
        })
        .collect();
    report_latencies(
        &format!("latency at {rate} events/s, commit → applied by Kessel (max_in_flight 64)"),
        latencies,
    );
    drop(client);
    reset().await;
}

/// Commits `rate` outbox rows a second for `seconds`, one per transaction,
/// each stamped (`reporter.sent`) with its commit time in microseconds.
fn steady_writer(rate: u64, seconds: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = connect(&connection()).await;
        let tick = Duration::from_micros(1_000_000 / rate);
        let mut next = Instant::now();
        for n in 0..rate * seconds {
            // clock_timestamp() at insert, committed at once: the commit
            // time within the statement's duration.
            client
                .batch_execute(&insert(
                    1,
                    n as usize,
                    "(extract(epoch from clock_timestamp()) * 1000000)::bigint",
                ))
                .await
                .unwrap();
            next += tick;
            tokio::time::sleep_until(next.into()).await;
        }
    })
}

/// Prints p50, p99 and max of latencies in microseconds.
fn report_latencies(what: &str, mut latencies: Vec<i64>) {
    assert!(!latencies.is_empty(), "{what}: nothing arrived");
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{what} ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
