//! SDMX publication rates, the SDMX registry example end to end: the real
//! `ferry` binary, the Postgres source (messages mode), the SDMX plugin
//! (SDMX-ML 2.1), the file sink; against the local Postgres.
//!
//! 1. a codelist of 10,000 codes: created, then 20 edits of one code each
//!    (each re-publishes the whole codelist): messages/s and MB/s, from the
//!    first commit to the last message written;
//! 2. a full resync of 1,000 codelists of 10 codes (`ferry resync`, chunks
//!    of 100 structures per transaction): messages/s and MB/s, from the
//!    request to the last message delivered.
//!
//! Run: `cargo bench -p ferry --bench sdmx`.

#[path = "shared/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "../tests/support/wire.rs"]
mod wire;

use database::connect;

use std::path::Path;
use std::time::{Duration, Instant};

const DATABASE: &str = "ferry_bench_sdmx";

fn example(file: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("examples/sdmx-registry").join(file)).unwrap()
}

/// Lines and bytes of the sink's file.
fn written(out: &Path) -> (usize, u64) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    (text.lines().count(), text.len() as u64)
}

async fn wait_for_lines(out: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while written(out).0 < lines {
        assert!(Instant::now() < deadline, "only {} lines", written(out).0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, messages: usize, bytes: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what}: {messages} messages, {:.1} MB in {seconds:.2} s = {:.0} messages/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        messages as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
}

#[tokio::main]
async fn main() {
    database::reset(DATABASE).await;
    let connection = database::connection(DATABASE);
    let client = connect(&connection).await;
    client.batch_execute(&example("schema.sql")).await.unwrap();
    // The resync's structures, written before the slot exists.
    client
        .batch_execute(
            r#"INSERT INTO codelists (agency, id, names)
                 SELECT 'GEN', 'CL_' || n, jsonb_build_object('en', 'Generated ' || n, 'fr', 'Généré ' || n)
                 FROM generate_series(1, 1000) n;
               INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position)
                 SELECT 'GEN', 'CL_' || n, '1.0', 'C' || c, jsonb_build_object('en', 'Code ' || c, 'fr', 'Code ' || c), c
                 FROM generate_series(1, 1000) n, generate_series(1, 10) c;"#,
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let port = wire::free_port();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"
            [pipelines.registry]
            batch_size = 64
            source = {{ kind = "postgres", connection = "{connection}", slot = "bench_sdmx", publication = "bench_sdmx", mode = "messages", prefix = "sdmx", resync = "CALL sdmx_republish(100)" }}
            sink = {{ kind = "file", path = "{}" }}
            [pipelines.registry.plugin]
            path = "{}"
            instances = 2
            "#,
            out.display(),
            ferry_plugin_artifacts::SDMX_STRUCTURES,
        ),
    )
    .unwrap();
    let ferry = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_LOG", "warn")
        .spawn()
        .unwrap();
    wire::wait_ready(port, "ferry");

    // 1. One codelist of 10,000 codes, created then edited 20 times.
    let started = Instant::now();
    client
        .batch_execute(
            r#"BEGIN;
               INSERT INTO codelists (agency, id, names) VALUES ('BIG', 'CL_BIG', '{"en": "10,000 codes", "fr": "10 000 codes"}');
               INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position)
                 SELECT 'BIG', 'CL_BIG', '1.0', 'C' || c, jsonb_build_object('en', 'Code number ' || c, 'fr', 'Code numéro ' || c), c
                 FROM generate_series(1, 10000) c;
               COMMIT;"#,
        )
        .await
        .unwrap();
    for edit in 1..=20 {
        client
            .batch_execute(&format!(
                r#"UPDATE codes SET names = '{{"en": "Edited {edit}"}}' WHERE codelist_agency = 'BIG' AND id = 'C{edit}'"#
            ))
            .await
            .unwrap();
    }
    wait_for_lines(&out, 21).await;
    let (lines, bytes) = written(&out);
    report(
        "codelist of 10,000 codes, created + 20 one-code edits (SDMX-ML)",
        lines,
        bytes,
        started.elapsed(),
    );

    // 2. A full resync of the 1,000 generated codelists (and CL_BIG).
    let started = Instant::now();
    let resync = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["resync", "registry", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(resync.status.success());
    let (all_lines, all_bytes) = written(&out);
    report(
        "full resync of 1,001 structures (1,000 codelists of 10 codes, one of 10,000)",
        all_lines - lines,
        all_bytes - bytes,
        elapsed,
    );
    std::process::Command::new("kill")
        .args(["-TERM", &ferry.id().to_string()])
        .status()
        .unwrap();
    ferry.wait_with_output().unwrap();
}
