//! The first seed's whole story, end to end: a service writes rows and
//! outbox events in one transaction (examples/kessel-outbox), ferry streams
//! them from Postgres through the Rust plugin to the test Kessel server —
//! and the host is killed mid-stream and restarted.

use crate::common::{fresh_database, repo, start_run, write};
use ferry_kessel_server::KesselServer;
use ferry_plugin_artifacts::KESSEL_OUTBOX_RUST;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A report of `kind` `id` whose reporter says `version`, as the service
/// writes it: row and outbox event in one transaction.
fn report(kind: &str, id: &str, version: u32) -> String {
    let payload = json!({
        "type": kind,
        "reporter_type": "hbi",
        "reporter_instance_id": "redhat",
        "representations": {
            "metadata": {
                "local_resource_id": id,
                "api_href": format!("https://app.example.com/api/{kind}/{id}"),
                "reporter_version": "1.0",
            },
            "common": {"workspace_id": "ws-1"},
            "reporter": {"version": version},
        }
    });
    format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload) VALUES (gen_random_uuid(), '{kind}', '{id}', 'v1beta2', 'ReportResource', '{payload}');"
    )
}

fn delete(kind: &str, id: &str) -> String {
    let payload = json!({"reference": {"resource_type": kind, "resource_id": id, "reporter": {"type": "hbi"}}});
    format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload) VALUES (gen_random_uuid(), '{kind}', '{id}', 'v1beta2', 'DeleteResource', '{payload}');"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_to_kessel_survives_a_kill_with_the_final_state_and_no_double_application() {
    let database = fresh_database("kessel_e2e").await;
    let (client, driver) = tokio_postgres::connect(&database.connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    let schema = std::fs::read_to_string(repo().join("examples/kessel-outbox/schema.sql")).unwrap();
    client.batch_execute(&schema).await.unwrap();
    let server = KesselServer::start().unwrap();
    // Slow enough that the kill lands mid-stream.
    server.set_delay(Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [pipelines.inventory]
            source = {{ kind = "postgres", connection = "{connection}", slot = "{name}", publication = "{name}", mode = "outbox" }}
            sink = {{ kind = "kessel", endpoint = "{endpoint}" }}
            plugin = {{ path = "{KESSEL_OUTBOX_RUST}" }}
            "#,
            connection = database.connection,
            name = database.name(),
            endpoint = server.endpoint(),
        ),
    );
    let mut first = start_run(&config, Stdio::null());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 20 hosts reported 20 times each (latest version wins), every fifth
    // deleted at the end; outbox rows pruned in their transaction.
    let mut latest = HashMap::new();
    let mut versions = |range: std::ops::Range<u32>| {
        let mut batch = String::new();
        for version in range {
            for host in 0..20 {
                let id = format!("h{host}");
                batch.push_str(&format!(
                    "BEGIN; {} DELETE FROM outbox; COMMIT;",
                    report("host", &id, version)
                ));
                latest.insert(id, version);
            }
        }
        batch
    };
    client.batch_execute(&versions(0..7)).await.unwrap();
    // Kill it while reports are flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.counts().reports < 60 {
        assert!(Instant::now() < deadline, "no reports reached Kessel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    client.batch_execute(&versions(7..20)).await.unwrap();
    let deleted: HashSet<String> = (0..20).step_by(5).map(|h| format!("h{h}")).collect();
    for id in &deleted {
        client.batch_execute(&delete("host", id)).await.unwrap();
    }

    let second = start_run(&config, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = (0..20).all(|host| {
            let id = format!("h{host}");
            server.resource("host", &id).is_some_and(|resource| {
                resource.deleted == deleted.contains(&id)
                    && resource
                        .reporter
                        .as_ref()
                        .and_then(|r| r["version"].as_u64())
                        == Some(u64::from(latest[&id]))
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Kessel's state never matched the source: {:?}",
            server.resources()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait_with_output().unwrap().status.success());

    // Every report applied once: replays after the kill were absorbed by
    // their (deterministic) transaction ids, never applied twice.
    let log = server.log();
    let mut applied = HashSet::new();
    for entry in log.iter().filter(|e| e.method == "ReportResource") {
        let id = entry
            .transaction_id
            .clone()
            .expect("the host sets a transaction id");
        assert!(
            applied.insert(id.clone()),
            "transaction id {id} applied twice"
        );
    }
    assert_eq!(applied.len(), 400, "every report applied exactly once");
    // Per resource, the versions were applied in commit order.
    for host in 0..20 {
        let id = format!("h{host}");
        let versions: Vec<u64> = log
            .iter()
            .filter(|e| e.method == "ReportResource" && e.local_resource_id == id)
            .map(|e| {
                e.request["representations"]["reporter"]["version"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(versions, (0..20).collect::<Vec<u64>>(), "{id}");
    }
    drop(client);
    database.drop().await;
}
