//! The delivery engine's error policies with real components and files:
//! dead-letter (to a file and to a Postgres table), park (by key and by
//! tenant) and resuming a parked key.

use crate::common::{
    ferry, fresh_database, json_lines, pipeline_config, run, runtime, stderr, write,
};
use ferry::config::Config;
use ferry::pipeline::{self, Command, Controls, LaneKey};
use ferry_plugin_artifacts::MISBEHAVE;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A create event; the misbehave plugin acts on `key`.
fn line(key: &str, n: u32, tenant: Option<&str>) -> String {
    let tenant = tenant
        .map(|t| format!(",\"tenant\":\"{t}\""))
        .unwrap_or_default();
    format!("{{\"op\":\"create\",\"key\":\"{key}\",\"after\":{{\"n\":{n}}}{tenant}}}\n")
}

/// A pipeline `test` from `events` to `dir/out.jsonl` through the misbehave
/// plugin, with `extra` TOML in the pipeline table.
fn config(dir: &Path, events: &Path, extra: &str) -> PathBuf {
    pipeline_config(dir, MISBEHAVE, events, &dir.join("out.jsonl"), extra, "")
}

/// `n` of each delivered record, in file order.
fn delivered(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default();
    json_lines(&text)
        .iter()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line["record"]["value"].as_str().unwrap()).unwrap();
            value["n"].as_u64().unwrap()
        })
        .collect()
}

fn sorted(mut values: Vec<u64>) -> Vec<u64> {
    values.sort_unstable();
    values
}

#[test]
fn dead_letters_keep_the_event_the_error_and_the_plugin_and_the_pipeline_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = String::new();
    events += &line("a", 0, None);
    events += &line("fail", 1, None);
    events += &line("b", 2, None);
    events += "{\"op\":\"create\",\"key\":\"x\"\n";
    events += &line("panic", 4, None);
    events += &line("c", 5, None);
    let events = write(dir.path(), "events.jsonl", &events);
    let letters = dir.path().join("letters.jsonl");
    let extra = format!(
        "on_error = \"dead-letter\"\ndead_letter = {{ kind = \"file\", path = \"{}\" }}",
        letters.display()
    );
    let output = run(ferry()
        .args(["run", "--config"])
        .arg(config(dir.path(), &events, &extra)));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sorted(delivered(dir.path())), [0, 2, 5]);

    let letters = json_lines(&std::fs::read_to_string(&letters).unwrap());
    let by_position = |position: &str| {
        letters
            .iter()
            .find(|l| l["position"] == position)
            .unwrap_or_else(|| panic!("no dead letter for {position}: {letters:#?}"))
    };
    assert_eq!(letters.len(), 3, "{letters:#?}");
    let failed = by_position("events.jsonl:2");
    assert_eq!(failed["pipeline"], "test");
    assert_eq!(failed["key"], "fail");
    assert_eq!(failed["error"], "plugin error: asked to fail");
    assert_eq!(failed["attempts"], 1);
    assert!(failed["plugin"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(failed["event"]["after"], serde_json::json!({"n": 1}));
    assert_eq!(failed["event"]["position"], "events.jsonl:2");
    let malformed = by_position("events.jsonl:4");
    assert_eq!(malformed["input"], "{\"op\":\"create\",\"key\":\"x\"");
    assert!(
        malformed["error"]
            .as_str()
            .unwrap()
            .starts_with("not a change event")
    );
    let trapped = by_position("events.jsonl:5");
    assert!(
        trapped["error"]
            .as_str()
            .unwrap()
            .contains("asked to panic"),
        "{trapped}"
    );
}

#[test]
fn a_parked_key_holds_its_later_events_and_no_other_key() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = [
        ("a", 0),
        ("fail", 1),
        ("b", 2),
        ("fail", 3),
        ("a", 4),
        ("b", 5),
    ]
    .iter()
    .map(|(key, n)| line(key, *n, None))
    .collect();
    let events = write(dir.path(), "events.jsonl", &events);
    let output = run(ferry().args(["run", "--config"]).arg(config(
        dir.path(),
        &events,
        "on_error = \"park\"",
    )));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sorted(delivered(dir.path())), [0, 2, 4, 5]);
    let err = stderr(&output);
    assert!(err.contains("its key is parked"), "{err}");
    assert!(err.contains("key=fail"), "{err}");
}

#[test]
fn a_parked_tenant_never_holds_back_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = [
        ("x", 0, "t1"),
        ("x", 1, "t2"),
        ("fail", 2, "t1"),
        ("y", 3, "t2"),
        ("y", 4, "t1"),
        ("z", 5, "t2"),
    ]
    .iter()
    .map(|(key, n, tenant)| line(key, *n, Some(tenant)))
    .collect();
    let events = write(dir.path(), "events.jsonl", &events);
    let extra = "on_error = \"park\"\nordering = \"tenant\"";
    let output = run(ferry()
        .args(["run", "--config"])
        .arg(config(dir.path(), &events, extra)));
    assert!(output.status.success(), "{}", stderr(&output));
    // t1 is held from its failed event on; t2 is delivered whole, in order.
    assert_eq!(delivered(dir.path()), [0, 1, 3, 5]);
}

/// Runs the pipeline of `config` in this process; returns its command
/// sender, its stop token and its task.
fn start(
    config: &Path,
) -> (
    mpsc::UnboundedSender<Command>,
    CancellationToken,
    tokio::task::JoinHandle<Result<pipeline::Summary, pipeline::PipelineError>>,
) {
    let config = Config::load(config).unwrap();
    let pipeline = config.pipelines["test"].clone();
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let controls = Controls {
        stop: stop.clone(),
        commands,
        stats: Default::default(),
    };
    let task =
        tokio::spawn(async move { pipeline::run("test", &pipeline, &runtime(), controls).await });
    (commands_tx, stop, task)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_key_retries_its_failed_event_and_delivers_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO keeps the file source open, so the pipeline runs until we stop it.
    let fifo = dir.path().join("events.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let config = config(dir.path(), &fifo, "on_error = \"park\"");
    let (commands, stop, task) = start(&config);

    let writer = {
        let fifo = fifo.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut fifo = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            for (key, n) in [
                ("a", 0),
                ("flaky:permanent", 1),
                ("a", 2),
                ("flaky:permanent", 3),
            ] {
                fifo.write_all(line(key, n, None).as_bytes()).unwrap();
            }
            fifo.flush().unwrap();
            fifo // kept open: the input has not ended
        })
    };
    let _fifo = writer.await.unwrap();
    wait_for("the other key", || delivered(dir.path()) == [0, 2]).await;

    let parked = ask(&commands, |reply| Command::Parked { reply }).await;
    let lane = LaneKey::Key {
        tenant: None,
        key: Some("flaky:permanent".into()),
    };
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].lane, lane);
    assert_eq!(parked[0].position, "events.fifo:2");
    assert_eq!(parked[0].held, 2);

    // The first event succeeds when tried again; the second then fails its
    // first attempt and parks the key again, holding only itself.
    assert!(
        ask(&commands, |reply| Command::Resume {
            lane: lane.clone(),
            reply
        })
        .await
    );
    wait_for("the resumed event", || delivered(dir.path()) == [0, 2, 1]).await;
    let mut parked_again = false;
    for _ in 0..200 {
        let parked = ask(&commands, |reply| Command::Parked { reply }).await;
        if parked
            .first()
            .is_some_and(|p| p.position == "events.fifo:4" && p.held == 1)
        {
            parked_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(parked_again, "the key did not park again at events.fifo:4");
    assert!(
        ask(&commands, |reply| Command::Resume {
            lane: lane.clone(),
            reply
        })
        .await
    );
    wait_for("the last event", || delivered(dir.path()) == [0, 2, 1, 3]).await;
    assert!(
        ask(&commands, |reply| Command::Parked { reply })
            .await
            .is_empty()
    );

    stop.cancel();
    let summary = task.await.unwrap().unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.outputs, 4);
    assert_eq!(summary.undelivered, 0);
}

async fn ask<T>(
    commands: &mpsc::UnboundedSender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> T {
    let (reply, answer) = oneshot::channel();
    commands.send(command(reply)).unwrap();
    answer.await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_can_go_to_a_postgres_table() {
    let database = fresh_database("dlq").await;
    let connection = database.connection.clone();

    let dir = tempfile::tempdir().unwrap();
    let events: String = [("a", 0), ("fail", 1), ("b", 2)]
        .iter()
        .map(|(key, n)| line(key, *n, None))
        .collect();
    let events = write(dir.path(), "events.jsonl", &events);
    let extra = format!(
        "on_error = \"dead-letter\"\ndead_letter = {{ kind = \"postgres\", connection = \"{connection}\", table = \"letters\" }}"
    );
    let config = config(dir.path(), &events, &extra);
    let output =
        tokio::task::spawn_blocking(move || run(ferry().args(["run", "--config"]).arg(config)))
            .await
            .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let (db, driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(driver);
    let rows = db
        .query(
            "SELECT position, key, error, letter::text FROM letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "events.jsonl:2");
    assert_eq!(rows[0].get::<_, String>(1), "fail");
    assert_eq!(rows[0].get::<_, String>(2), "plugin error: asked to fail");
    let letter: Value = serde_json::from_str(&rows[0].get::<_, String>(3)).unwrap();
    assert_eq!(letter["event"]["after"], serde_json::json!({"n": 1}));
    drop(db);
    database.drop().await;
}
