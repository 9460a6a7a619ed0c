//! The SDMX registry example (`examples/sdmx-registry`) and the SDMX plugin
//! (`plugins/sdmx`): structure documents built by the registry's own SQL
//! functions in a real Postgres, mapped by the real component, validated
//! against the official SDMX 2.1 XML schemas (fetched by
//! `scripts/setup.d/60-sdmx.sh`) with xmllint.

use crate::common::{ferry, fresh_database, json_lines, repo, run, stderr, write};
use ferry_plugin_artifacts::SDMX_STRUCTURES;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const STRUCTURE_NS: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/structure";
const COMMON_NS: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/common";

fn example(file: &str) -> String {
    std::fs::read_to_string(repo().join("examples/sdmx-registry").join(file)).unwrap()
}

/// The official SDMX 2.1 message schema; fails loudly when setup has not
/// fetched it.
fn message_schema() -> PathBuf {
    let schema = repo().join("target/sdmx-schemas/sdmx21/SDMXMessage.xsd");
    assert!(
        schema.is_file(),
        "{} is missing: run scripts/setup (scripts/setup.d/60-sdmx.sh fetches the SDMX schemas)",
        schema.display()
    );
    schema
}

/// Validates `xml` against the official schema with xmllint.
fn assert_schema_valid(dir: &Path, name: &str, xml: &str) {
    let file = write(dir, &format!("{name}.xml"), xml);
    let output = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(message_schema())
        .arg(&file)
        .output()
        .expect("xmllint runs (scripts/setup installs libxml2-utils)");
    assert!(
        output.status.success(),
        "{name} is not a valid SDMX-ML 2.1 structure message:\n{}\n{xml}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every current structure's document, as the registry's functions build
/// them, as message events (what the Postgres source's `messages` mode
/// delivers), plus a deletion.
async fn registry_events(dir: &Path) -> PathBuf {
    let database = fresh_database("sdmx_docs").await;
    let connection = database.connection.clone();
    let (client, driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    client.batch_execute(&example("schema.sql")).await.unwrap();
    client.batch_execute(&example("seed.sql")).await.unwrap();
    let rows = client
        .query(
            "SELECT sdmx_document(class, agency, id, version)::text FROM sdmx_structures()",
            &[],
        )
        .await
        .unwrap();
    let mut lines = String::new();
    let documents = rows
        .iter()
        .map(|row| serde_json::from_str::<Value>(&row.get::<_, String>(0)).unwrap())
        .chain([json!({"action": "delete", "class": "Dataflow", "agency": "ECB", "id": "EXR_INTERNAL", "version": "1.0"})]);
    for (n, document) in documents.enumerate() {
        let event = json!({
            "op": "message",
            "origin": "sdmx",
            "position": format!("0/1A2B3C4/{n}"),
            "transaction_id": "771",
            "commit_time": "2026-11-24T10:00:00Z",
            "after": document,
        });
        lines.push_str(&format!("{event}\n"));
    }
    drop(client);
    database.drop().await;
    write(dir, "documents.jsonl", &lines)
}

/// `ferry plugin test` of the SDMX plugin over `events` with `settings`.
fn map(events: &Path, settings: &[&str]) -> Vec<Value> {
    let mut command = ferry();
    command
        .args(["plugin", "test", SDMX_STRUCTURES, "--input"])
        .arg(events);
    for setting in settings {
        command.args(["--config", setting]);
    }
    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    json_lines(&String::from_utf8(output.stdout).unwrap())
}

/// The one record of a result line.
fn record(line: &Value) -> &Value {
    let outputs = line["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(outputs.len(), 1, "{line}");
    &outputs[0]["record"]
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_structures_become_schema_valid_messages_keyed_by_urn() {
    let dir = tempfile::tempdir().unwrap();
    let events = registry_events(dir.path()).await;
    let lines = map(&events, &["topic=sdmx.{access_group}"]);

    let keys: Vec<&str> = lines
        .iter()
        .map(|line| record(line)["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "urn:sdmx:org.sdmx.infomodel.base.AgencyScheme=SDMX:AGENCIES(1.0)",
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=ECB:CL_CURRENCY(1.0)",
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=ECB:CL_OBS_STATUS(1.0)",
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL_FREQ(2.0)",
            "urn:sdmx:org.sdmx.infomodel.conceptscheme.ConceptScheme=ECB:ECB_CONCEPTS(1.0)",
            "urn:sdmx:org.sdmx.infomodel.datastructure.DataStructure=ECB:ECB_EXR1(1.0)",
            "urn:sdmx:org.sdmx.infomodel.datastructure.Dataflow=ECB:EXR(1.0)",
            "urn:sdmx:org.sdmx.infomodel.datastructure.Dataflow=ECB:EXR_INTERNAL(1.0)",
            "urn:sdmx:org.sdmx.infomodel.datastructure.Dataflow=ECB:EXR_INTERNAL(1.0)",
        ]
    );

    for (n, line) in lines.iter().enumerate().take(8) {
        let record = record(line);
        assert_eq!(
            record["headers"]["content-type"],
            "application/vnd.sdmx.structure+xml; version=2.1"
        );
        assert_eq!(record["headers"]["source-transaction"], "771");
        assert_schema_valid(
            dir.path(),
            &format!("structure-{n}"),
            record["value"].as_str().unwrap(),
        );
    }

    // The whole codelist, every code with its names in each language.
    let codelist = record(&lines[3])["value"].as_str().unwrap();
    let xml = roxmltree::Document::parse(codelist).unwrap();
    let codes: Vec<(&str, Vec<(&str, &str)>)> = xml
        .descendants()
        .filter(|n| n.has_tag_name((STRUCTURE_NS, "Code")))
        .map(|code| {
            let names = code
                .children()
                .filter(|n| n.has_tag_name((COMMON_NS, "Name")))
                .map(|n| {
                    (
                        n.attribute(("http://www.w3.org/XML/1998/namespace", "lang"))
                            .unwrap(),
                        n.text().unwrap(),
                    )
                })
                .collect();
            (code.attribute("id").unwrap(), names)
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("A", vec![("en", "Annual"), ("fr", "Annuel")]),
            ("Q", vec![("en", "Quarterly"), ("fr", "Trimestriel")]),
            ("M", vec![("en", "Monthly"), ("fr", "Mensuel")]),
        ]
    );

    // Content security: the internal dataflow goes to its own topic.
    assert_eq!(record(&lines[6])["topic"], "sdmx.public");
    assert_eq!(record(&lines[7])["topic"], "sdmx.internal");
    // A deletion is a tombstone keyed by the URN.
    let tombstone = record(&lines[8]);
    assert_eq!(tombstone["value"], Value::Null);
    assert_eq!(tombstone["headers"]["sdmx-action"], "delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn sdmx_json_is_chosen_by_plugin_config() {
    let dir = tempfile::tempdir().unwrap();
    let events = registry_events(dir.path()).await;
    let lines = map(&events, &["format=json", "sender=ECB_REGISTRY"]);
    let record = record(&lines[5]);
    assert_eq!(
        record["headers"]["content-type"],
        "application/vnd.sdmx.structure+json; version=1.0.0"
    );
    let message: Value = serde_json::from_str(record["value"].as_str().unwrap()).unwrap();
    assert_eq!(message["meta"]["sender"]["id"], "ECB_REGISTRY");
    let dsd = &message["data"]["dataStructures"][0];
    assert_eq!(dsd["id"], "ECB_EXR1");
    let dimensions: Vec<&str> = dsd["dataStructureComponents"]["dimensionList"]["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(dimensions, ["FREQ", "CURRENCY"]);
    assert_eq!(
        dsd["dataStructureComponents"]["dimensionList"]["dimensions"][0]["localRepresentation"]["enumeration"],
        "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL_FREQ(2.0)"
    );
}

#[test]
fn a_bad_document_is_a_permanent_error_naming_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "bad.jsonl",
        "{\"op\":\"message\",\"position\":\"0/1/0\",\"after\":{\"action\":\"upsert\",\"class\":\"Codelist\",\"agency\":\"SDMX\",\"id\":\"CL FREQ\",\"names\":{\"en\":\"x\"}}}\n",
    );
    let lines = map(&events, &[]);
    assert_eq!(lines[0]["position"], "0/1/0");
    assert_eq!(lines[0]["error"]["kind"], "permanent");
    let message = lines[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"CL FREQ\" is not an SDMX id"),
        "{message}"
    );
}

/// Keys (or `delete <key>` for tombstones) and offsets of `records`.
fn summary(records: &[crate::tansu::Record]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|r| {
            let key = r.key.clone().unwrap_or_default();
            let short = key.rsplit('=').next().unwrap_or_default().to_string();
            (
                r.offset,
                if r.value.is_some() {
                    short
                } else {
                    format!("delete {short}")
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
/// The registry through the Kafka sink to a real broker: keys, whole
/// bodies, tombstones and topic routing. The sink is not transactional
/// here: tansu 0.6.0 has no EndTxn (its broker registers no handler for
/// it), so no Kafka transaction can commit on it; the split of source
/// transactions into Kafka transactions is tested in `sinks/kafka.rs`.
async fn registry_edits_reach_kafka_whole_keyed_by_urn_and_routed_by_access_group() {
    let database = fresh_database("sdmx_kafka").await;
    let (client, driver) = tokio_postgres::connect(&database.connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    client.batch_execute(&example("schema.sql")).await.unwrap();
    client.batch_execute(&example("seed.sql")).await.unwrap();
    let broker = crate::tansu::Tansu::start();
    broker
        .create_topics(&["sdmx.public", "sdmx.internal"])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.registry]
            source = {{ kind = "postgres", connection = "{connection}", slot = "{name}", publication = "{name}", mode = "messages", prefix = "sdmx", on_first_start = "SELECT sdmx_publish_all()" }}
            sink = {{ kind = "kafka", bootstrap_servers = "{bootstrap}" }}
            [pipelines.registry.plugin]
            path = "{SDMX_STRUCTURES}"
            settings = {{ topic = "sdmx.{{access_group}}" }}
            "#,
            connection = database.connection,
            name = database.name(),
            bootstrap = broker.bootstrap,
        ),
    );
    let mut ferry = ferry()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first start publishes every structure (one transaction), then
    // the edits stream in commit order.
    let baseline = broker.read("sdmx.public", 7, Duration::from_secs(60));
    if baseline.len() != 7 {
        let _ = ferry.kill();
        let _ = ferry.wait();
        let mut log = String::new();
        std::io::Read::read_to_string(ferry.stderr.as_mut().unwrap(), &mut log).unwrap();
        panic!("the full publication: {:?}\n{log}", summary(&baseline));
    }
    client.batch_execute(&example("edit.sql")).await.unwrap();
    let public = broker.read("sdmx.public", 11, Duration::from_secs(60));
    let internal = broker.read("sdmx.internal", 2, Duration::from_secs(30));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &ferry.id().to_string()])
        .status();
    let status = ferry.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(ferry.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");

    let keys: Vec<String> = summary(&public).into_iter().map(|(_, key)| key).collect();
    assert_eq!(
        keys,
        [
            // The full publication, dependencies first.
            "SDMX:AGENCIES(1.0)",
            "ECB:CL_CURRENCY(1.0)",
            "ECB:CL_OBS_STATUS(1.0)",
            "SDMX:CL_FREQ(2.0)",
            "ECB:ECB_CONCEPTS(1.0)",
            "ECB:ECB_EXR1(1.0)",
            "ECB:EXR(1.0)",
            // One code added: the whole codelist again.
            "SDMX:CL_FREQ(2.0)",
            // Two structures in one commit.
            "ECB:ECB_CONCEPTS(1.0)",
            "ECB:CL_CURRENCY(1.0)",
            // The modification half of a mixed commit.
            "ECB:CL_OBS_STATUS(1.0)",
        ],
    );
    assert_eq!(
        summary(&internal)
            .into_iter()
            .map(|(_, key)| key)
            .collect::<Vec<_>>(),
        ["ECB:EXR_INTERNAL(1.0)", "delete ECB:EXR_INTERNAL(1.0)"]
    );
    // The tombstone and the modification come from one source commit.
    let tombstone = &internal[1];
    assert_eq!(tombstone.header("sdmx-action"), Some("delete"));
    assert_eq!(
        tombstone.header("source-transaction"),
        public[10].header("source-transaction"),
        "the two halves come from one source transaction"
    );

    // Every body is a whole, schema-valid structure message, and names the
    // plugin version that made it.
    let digest = ferry::plugin::Digest::of(&std::fs::read(SDMX_STRUCTURES).unwrap()).short();
    for (n, record) in public.iter().enumerate() {
        assert_eq!(
            record.header("content-type"),
            Some("application/vnd.sdmx.structure+xml; version=2.1")
        );
        assert_eq!(record.header("ferry-plugin"), Some(digest.as_str()));
        assert_schema_valid(
            dir.path(),
            &format!("kafka-{n}"),
            record.value.as_deref().unwrap(),
        );
    }
    let freq = roxmltree::Document::parse(public[7].value.as_deref().unwrap())
        .unwrap()
        .descendants()
        .filter(|n| n.has_tag_name((STRUCTURE_NS, "Code")))
        .count();
    assert_eq!(
        freq, 4,
        "the re-published CL_FREQ holds every code, W included"
    );
    drop(client);
    database.drop().await;
}

/// A registry database with the example's schema and seed plus `codelists`
/// generated codelists of `codes` codes each (written before any slot, so
/// not streamed); the database and a client.
async fn generated_registry(
    test: &str,
    codelists: u32,
    codes: u32,
) -> (crate::common::TestDatabase, tokio_postgres::Client) {
    let database = fresh_database(test).await;
    let (client, driver) = tokio_postgres::connect(&database.connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    client.batch_execute(&example("schema.sql")).await.unwrap();
    client.batch_execute(&example("seed.sql")).await.unwrap();
    client
        .batch_execute(&format!(
            r#"INSERT INTO codelists (agency, id, names)
                 SELECT 'GEN', 'CL_' || n, jsonb_build_object('en', 'Generated ' || n, 'fr', 'Généré ' || n)
                 FROM generate_series(1, {codelists}) n;
               INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position)
                 SELECT 'GEN', 'CL_' || n, '1.0', 'C' || c, jsonb_build_object('en', 'Code ' || c), c
                 FROM generate_series(1, {codelists}) n, generate_series(1, {codes}) c;"#
        ))
        .await
        .unwrap();
    (database, client)
}

/// `dir/ferry.toml`: the registry (messages mode, `source.resync` the
/// chunked republication) through the SDMX plugin to `dir/out.jsonl`, with
/// the admin server on `port`.
fn resync_config(
    dir: &Path,
    database: &crate::common::TestDatabase,
    port: u16,
    extra: &str,
) -> PathBuf {
    write(
        dir,
        "ferry.toml",
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"
            [pipelines.registry]
            {extra}
            source = {{ kind = "postgres", connection = "{connection}", slot = "{name}", publication = "{name}", mode = "messages", prefix = "sdmx", resync = "CALL sdmx_republish(100)" }}
            sink = {{ kind = "file", path = "{out}" }}
            [pipelines.registry.plugin]
            path = "{SDMX_STRUCTURES}"
            "#,
            connection = database.connection,
            name = database.name(),
            out = dir.join("out.jsonl").display(),
        ),
    )
}

/// Starts `ferry run` and waits until the pipeline streams.
fn start_registry(config: &Path, port: u16) -> std::process::Child {
    let child = crate::common::start_run(config, std::process::Stdio::piped());
    crate::wire::wait_ready(port, "ferry");
    child
}

/// The URN keys of the sink's lines, in order.
fn delivered_keys(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |at| at + 1)];
    json_lines(whole)
        .iter()
        .map(|line| line["key"].as_str().unwrap().to_string())
        .collect()
}

/// Stops `child` with SIGTERM; its stderr.
fn terminate(child: std::process::Child) -> String {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn resync_publishes_every_structure_once_with_a_progress_bar_then_streams_on() {
    let (database, client) = generated_registry("sdmx_resync", 300, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::wire::free_port();
    let config = resync_config(dir.path(), &database, port, "");
    let ferry_run = start_registry(&config, port);
    assert!(
        delivered_keys(dir.path()).is_empty(),
        "nothing before the resync"
    );

    let resync = ferry()
        .args(["resync", "registry", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&resync.stdout),
        String::from_utf8_lossy(&resync.stderr),
    );
    assert!(resync.status.success(), "{out}\n{err}");
    // 300 generated codelists and the seed's 8 structures.
    assert!(out.contains("delivered 308 events"), "{out}\n{err}");
    assert!(
        err.contains("resync [##############################] 100%  308/308 events  done"),
        "{err}"
    );
    let keys = delivered_keys(dir.path());
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(
        (keys.len(), unique.len()),
        (308, 308),
        "each structure once"
    );
    assert!(
        keys.contains(&"urn:sdmx:org.sdmx.infomodel.codelist.Codelist=GEN:CL_300(1.0)".to_string())
    );

    // The stream goes on after it.
    client.batch_execute(&example("edit.sql")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while delivered_keys(dir.path()).len() <= 308 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edits never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked of a pipeline without a resync statement: a clear refusal.
    let unknown = ferry()
        .args(["resync", "nothing", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no pipeline named nothing"));
    terminate(ferry_run);
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_a_resync_republishes_only_what_was_not_acknowledged() {
    let (database, client) = generated_registry("sdmx_resync_kill", 3000, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::wire::free_port();
    let config = resync_config(dir.path(), &database, port, "batch_size = 16");
    let mut first = start_registry(&config, port);
    let started = ferry()
        .args(["resync", "registry", "--no-wait", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered_keys(dir.path()).len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the resync never started delivering"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = delivered_keys(dir.path()).len();
    let total = 3008;
    assert!(
        at_kill < total,
        "the resync was delivered whole before the kill"
    );
    let confirmed: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&database.name()],
        )
        .await
        .unwrap()
        .get(0);

    let second = start_registry(&config, port);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let keys = delivered_keys(dir.path());
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        if unique.len() == total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {total} structures arrived",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = terminate(second);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let lines = json_lines(&text);
    let lsn = |position: &str| {
        let text = position.split(':').next().unwrap();
        let (high, low) = text.split_once('/').unwrap();
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
    };
    let confirmed = lsn(&confirmed);
    // Only transactions past the slot's confirmed position came again: what
    // was acknowledged before the kill was not republished.
    for line in &lines[at_kill..] {
        let position = line["position"].as_str().unwrap();
        assert!(
            lsn(position) > confirmed,
            "{position} was acknowledged before the kill:\n{log}"
        );
    }
    // And exactly what was delivered but not yet acknowledged came twice.
    let unacknowledged = lines[..at_kill]
        .iter()
        .filter(|line| lsn(line["position"].as_str().unwrap()) > confirmed)
        .count();
    assert_eq!(
        lines.len() - total,
        unacknowledged,
        "repeats beyond the {unacknowledged} unacknowledged of {at_kill} delivered before the kill"
    );
    drop(client);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registry_rows_meet_the_policy_naming_the_structure_and_the_rule() {
    let (database, client) = generated_registry("sdmx_bad_rows", 0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::wire::free_port();
    // Every event of the registry stream shares one unit of order (the
    // source gives no key; the plugin keys its outputs by URN), so the
    // policy that lets the rest go on is dead-letter.
    let letters = dir.path().join("letters.jsonl");
    let config = resync_config(
        dir.path(),
        &database,
        port,
        &format!(
            "on_error = \"dead-letter\"\ndead_letter = {{ kind = \"file\", path = \"{}\" }}",
            letters.display()
        ),
    );
    let ferry_run = start_registry(&config, port);
    client
        .batch_execute(
            r#"INSERT INTO codelists (agency, id, names) VALUES ('ECB', 'CL_NONAME', '{"en": "No name codes"}');
               INSERT INTO codes VALUES ('ECB', 'CL_NONAME', '1.0', 'A', '{}', 1);
               INSERT INTO codelists (agency, id, names) VALUES ('EC B', 'CL_AGENCY', '{"en": "Bad agency"}');
               INSERT INTO codelists (agency, id, names) VALUES ('ECB', 'CL_GOOD', '{"en": "Good"}');"#,
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while delivered_keys(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the good codelist never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered_keys(dir.path()),
        ["urn:sdmx:org.sdmx.infomodel.codelist.Codelist=ECB:CL_GOOD(1.0)"]
    );
    let errors: Vec<String> = json_lines(&std::fs::read_to_string(&letters).unwrap())
        .iter()
        .map(|letter| letter["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("Codelist ECB:CL_NONAME(1.0), item A: needs a name"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("agency \"EC B\" is not an SDMX agency id"),
        "{errors:?}"
    );
    terminate(ferry_run);
    drop(client);
    database.drop().await;
}
