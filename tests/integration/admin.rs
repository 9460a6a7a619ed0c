//! The admin server during a real run of two pipelines: counters move,
//! readiness follows the pipelines, and a halted pipeline leaves the other
//! running.

use crate::common::{ferry, write};
use crate::wire::{free_port, http};
use ferry_plugin_artifacts::MISBEHAVE;
use serde_json::Value;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_and_readiness_follows_the_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fifo = dir.path().join("bad.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let config = write(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"

            [pipelines.good]
            source = {{ kind = "file", path = "-" }}
            sink = {{ kind = "file", path = "{good_out}" }}
            plugin = {{ path = "{MISBEHAVE}" }}

            [pipelines.bad]
            source = {{ kind = "file", path = "{fifo}" }}
            sink = {{ kind = "file", path = "{bad_out}" }}
            plugin = {{ path = "{MISBEHAVE}" }}
            "#,
            good_out = dir.path().join("good.jsonl").display(),
            bad_out = dir.path().join("bad.jsonl").display(),
            fifo = fifo.display(),
        ),
    );
    let mut child = ferry()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut good = child.stdin.take().unwrap();
    let mut send_good = |from: usize, count: usize| {
        for n in from..from + count {
            writeln!(
                good,
                r#"{{"op":"create","key":"k{}","after":{{"n":{n}}}}}"#,
                n % 7
            )
            .unwrap();
        }
        good.flush().unwrap();
    };
    // Opening a FIFO for writing waits for ferry to open it for reading.
    let mut bad = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();

    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let delivered = |pipeline: &str| {
        let (_, page) = http(port, "GET", "/metrics");
        sample(
            &page,
            &format!("ferry_outputs_delivered_total{{pipeline=\"{pipeline}\"}}"),
        )
    };

    assert_eq!(http(port, "GET", "/healthz"), (200, "ok\n".to_string()));
    wait_for("readiness", &|| http(port, "GET", "/readyz").0 == 200);

    send_good(0, 100);
    wait_for("100 deliveries", &|| delivered("good") == 100);
    let (_, page) = http(port, "GET", "/metrics");
    assert_eq!(
        sample(&page, "ferry_items_read_total{pipeline=\"good\"}"),
        100
    );
    assert!(sample(&page, "ferry_plugin_call_seconds_count{pipeline=\"good\"}") >= 1);
    assert!(sample(&page, "ferry_sink_call_seconds_count{pipeline=\"good\"}") >= 1);
    assert_eq!(
        sample(
            &page,
            "ferry_pipeline_up{pipeline=\"bad\",state=\"running\"}"
        ),
        1
    );

    // The plugin fails this one for good: `bad` halts under the default
    // policy, and ferry is no longer ready.
    writeln!(bad, r#"{{"op":"create","key":"fail","after":{{}}}}"#).unwrap();
    bad.flush().unwrap();
    wait_for("the halt", &|| http(port, "GET", "/readyz").0 == 503);
    let (_, body) = http(port, "GET", "/readyz");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["pipelines"]["bad"], "halted", "{body}");
    assert_eq!(ready["pipelines"]["good"], "running", "{body}");
    let (_, body) = http(port, "GET", "/status");
    let status: Value = serde_json::from_str(&body).unwrap();
    let bad_status = &status["pipelines"][0];
    assert_eq!(bad_status["name"], "bad");
    assert!(
        bad_status["error"]
            .as_str()
            .unwrap()
            .contains("asked to fail"),
        "{body}"
    );

    // The other pipeline goes on.
    send_good(100, 50);
    wait_for("50 more deliveries", &|| delivered("good") == 150);
    let (_, page) = http(port, "GET", "/metrics");
    assert_eq!(
        sample(
            &page,
            "ferry_pipeline_up{pipeline=\"bad\",state=\"halted\"}"
        ),
        0
    );

    drop(good);
    drop(bad);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a halted pipeline fails the run");
}
