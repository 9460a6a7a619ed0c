//! The Kessel sink against the test Kessel server (`tests/kessel-server`,
//! built from the same `.proto`): through the `Sink` trait with
//! constructed deliveries, and through `ferry run` with the file source and
//! the Rust Kessel outbox plugin.

use crate::common::{ferry, fresh_database, repo, run, stderr, write};
use ferry::event::{ChangeEvent, EventRef, KesselDelete, KesselReport, Operation, Output, Payload};
use ferry::sinks::kessel::request::transaction_id;
use ferry::sinks::{Delivery, Retry, Sink, SinkConfig, SinkError};
use ferry_kessel_server::{DuplicateAnswer, KesselServer, LogEntry, OAuthOptions, Options};
use ferry_plugin_artifacts::KESSEL_OUTBOX_RUST;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pipeline name the sink-level tests use (part of derived ids).
const PIPELINE: &str = "kessel-test";

/// The Kessel sink for `server`, with `extra` TOML after `endpoint`.
async fn sink(server: &KesselServer, extra: &str) -> Arc<dyn Sink> {
    try_sink(&server.endpoint(), extra).await.unwrap()
}

async fn try_sink(endpoint: &str, extra: &str) -> anyhow::Result<Arc<dyn Sink>> {
    let text = format!("kind = \"kessel\"\nendpoint = \"{endpoint}\"\n{extra}");
    let config: SinkConfig = toml::from_str(&text)?;
    config.build(PIPELINE).await
}

/// A report request as a plugin writes it.
fn report(resource_type: &str, id: &str, reporter: Value) -> Value {
    json!({
        "type": resource_type,
        "reporter_type": "hbi",
        "reporter_instance_id": "redhat",
        "representations": {
            "metadata": {
                "local_resource_id": id,
                "api_href": format!("https://app.example.com/api/{resource_type}/{id}"),
                "reporter_version": "1.0",
            },
            "common": {"workspace_id": "ws-1"},
            "reporter": reporter,
        }
    })
}

/// A delete request as a plugin writes it.
fn delete(resource_type: &str, id: &str) -> Value {
    json!({"reference": {"resource_type": resource_type, "resource_id": id, "reporter": {"type": "hbi"}}})
}

/// The `index`-th output of the event at `position`, keyed `key`.
fn delivery(position: &str, index: u32, key: &str, payload: Payload) -> Delivery {
    let event = ChangeEvent {
        source: "test".into(),
        op: Operation::Message,
        key: Some(key.into()),
        before: None,
        after: None,
        headers: Vec::new(),
        tenant: None,
        origin: None,
        transaction_id: None,
        position: position.into(),
        commit_time: None,
    };
    Delivery {
        seq: 0,
        event: EventRef::single(event),
        index,
        key: Some(key.into()),
        output: Output { key: None, payload },
        plugin: Arc::from("sha256:0123456789abcdef"),
    }
}

fn reporting(position: &str, key: &str, request: &Value) -> Delivery {
    delivery(position, 0, key, report_payload(request))
}

fn deleting(position: &str, key: &str, request: &Value) -> Delivery {
    delivery(
        position,
        0,
        key,
        Payload::KesselDelete(KesselDelete {
            request: request.to_string(),
        }),
    )
}

fn report_payload(request: &Value) -> Payload {
    Payload::KesselReport(KesselReport {
        request: request.to_string(),
    })
}

/// `request` with `representations.metadata.transaction_id` set.
fn with_transaction_id(request: &Value, id: &str) -> Value {
    let mut request = request.clone();
    request["representations"]["metadata"]["transaction_id"] = json!(id);
    request
}

/// Delivers like the engine: retries a retryable failure from where it
/// stopped, with a short pause; returns how many retries it took.
async fn deliver_with_retries(sink: &dyn Sink, deliveries: &[Delivery]) -> u32 {
    let mut done = 0;
    let mut retries = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while done < deliveries.len() {
        match sink.deliver(&deliveries[done..]).await {
            Ok(()) => return retries,
            Err(SinkError {
                retry: Retry::Later,
                delivered,
                ..
            }) => {
                done += delivered;
                retries += 1;
                assert!(Instant::now() < deadline, "still failing after 30 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("permanent failure: {error}"),
        }
    }
    retries
}

fn methods(log: &[LogEntry]) -> Vec<(&'static str, String)> {
    log.iter()
        .map(|entry| (entry.method, entry.local_resource_id.clone()))
        .collect()
}

#[tokio::test]
async fn reports_and_deletes_reach_the_server_in_order_with_their_fields() {
    let server = KesselServer::start().unwrap();
    let sink = sink(&server, "write_visibility = \"immediate\"").await;
    let first = report(
        "host",
        "h1",
        json!({"n": 1, "tags": ["a", "b"], "ok": true}),
    );
    let second = report("host", "h2", json!({"n": 2}));
    let mut update = report("host", "h1", json!({"n": 3, "nested": {"x": 1.5}}));
    update["write_visibility"] = json!("MINIMIZE_LATENCY");
    let deliveries = [
        reporting("src:1", "h1", &first),
        reporting("src:2", "h2", &second),
        reporting("src:3", "h1", &update),
        deleting("src:4", "h1", &delete("host", "h1")),
    ];
    sink.deliver(&deliveries).await.unwrap();

    let log = server.log();
    assert_eq!(
        methods(&log),
        [
            ("ReportResource", "h1".into()),
            ("ReportResource", "h2".into()),
            ("ReportResource", "h1".into()),
            ("DeleteResource", "h1".into()),
        ]
    );
    // Field by field, as the plugin wrote them, plus the derived id and
    // the pipeline's write visibility (the request's own one wins).
    let mut expected = with_transaction_id(&first, &transaction_id(PIPELINE, "src:1", 0));
    expected["write_visibility"] = json!("IMMEDIATE");
    assert_eq!(log[0].request, expected);
    let expected = with_transaction_id(&update, &transaction_id(PIPELINE, "src:3", 0));
    assert_eq!(log[2].request, expected);
    assert_eq!(log[3].request, delete("host", "h1"));

    let h1 = server.resource("host", "h1").unwrap();
    assert!(h1.deleted);
    assert_eq!(h1.reports, 2);
    assert_eq!(h1.reporter, Some(json!({"n": 3, "nested": {"x": 1.5}})));
    assert_eq!(h1.write_visibility, "MINIMIZE_LATENCY");
    let h2 = server.resource("host", "h2").unwrap();
    assert!(!h2.deleted);
    assert_eq!(h2.common, Some(json!({"workspace_id": "ws-1"})));
    assert_eq!(h2.api_href, "https://app.example.com/api/host/h2");
    assert_eq!(h2.reporter_version.as_deref(), Some("1.0"));
    assert_eq!(h2.write_visibility, "IMMEDIATE");
}

#[tokio::test]
async fn replays_are_absorbed_because_transaction_ids_are_deterministic() {
    let server = KesselServer::start().unwrap();
    let deliveries: Vec<Delivery> = (0..5)
        .map(|n| {
            let id = format!("r{n}");
            reporting(
                &format!("src:{n}"),
                &id,
                &report("host", &id, json!({"n": n})),
            )
        })
        .chain([
            // Two outputs of one event: two ids.
            delivery(
                "src:9",
                0,
                "x",
                report_payload(&report("host", "x0", json!({}))),
            ),
            delivery(
                "src:9",
                1,
                "x",
                report_payload(&report("host", "x1", json!({}))),
            ),
        ])
        .collect();
    sink(&server, "").await.deliver(&deliveries).await.unwrap();
    let applied = server.log();
    assert_eq!(applied.len(), 7);
    let ids: Vec<String> = applied
        .iter()
        .map(|entry| entry.transaction_id.clone().unwrap())
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 7, "{ids:?}");
    assert_eq!(ids[5], transaction_id(PIPELINE, "src:9", 0));
    assert_eq!(ids[6], transaction_id(PIPELINE, "src:9", 1));
    assert!(ids.iter().all(|id| id.len() <= 128));

    // A restarted host (a new sink) replays everything: same ids, so the
    // server writes nothing, whichever way it answers a duplicate.
    for answer in [
        DuplicateAnswer::Success,
        DuplicateAnswer::NonUniqueMessage,
        DuplicateAnswer::NonUniqueErrorInfo,
    ] {
        server.set_duplicate_answer(answer);
        sink(&server, "").await.deliver(&deliveries).await.unwrap();
    }
    assert_eq!(server.log(), applied);
    assert_eq!(server.counts().duplicates, 21);
    // A transaction id the plugin set is kept.
    let own = with_transaction_id(&report("host", "own", json!({})), "tx-own-1");
    let sink = sink(&server, "").await;
    sink.deliver(&[reporting("src:20", "own", &own)])
        .await
        .unwrap();
    sink.deliver(&[reporting("src:21", "own", &own)])
        .await
        .unwrap();
    let own_entries: Vec<LogEntry> = server
        .log()
        .into_iter()
        .filter(|e| e.local_resource_id == "own")
        .collect();
    assert_eq!(own_entries.len(), 1);
    assert_eq!(own_entries[0].transaction_id.as_deref(), Some("tx-own-1"));
}

#[tokio::test]
async fn a_delete_of_an_unknown_resource_succeeds_unless_configured_otherwise() {
    let server = KesselServer::start().unwrap();
    let gone = [deleting("src:1", "nope", &delete("host", "nope"))];
    sink(&server, "").await.deliver(&gone).await.unwrap();
    assert_eq!(server.counts().not_found, 1);

    let strict = sink(&server, "delete_not_found = \"error\"").await;
    let error = strict.deliver(&gone).await.unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    assert_eq!(error.delivered, 0);
    let text = format!("{error}");
    assert!(text.contains("NotFound"), "{text}");
    assert!(text.contains("event at src:1"), "{text}");

    // Deleting a deleted resource succeeds on the server itself.
    let both = [
        reporting("src:2", "h", &report("host", "h", json!({}))),
        deleting("src:3", "h", &delete("host", "h")),
        deleting("src:4", "h", &delete("host", "h")),
    ];
    strict.deliver(&both).await.unwrap();
    assert_eq!(server.counts().redundant_deletes, 1);
    assert!(server.resource("host", "h").unwrap().deleted);
}

#[tokio::test]
async fn invalid_requests_fail_permanently_with_the_servers_message() {
    let server = KesselServer::start().unwrap();
    let sink = sink(&server, "").await;
    let mut bad = report("host", "h2", json!({}));
    bad["type"] = json!("bad type");
    bad["representations"]["metadata"]["api_href"] = json!("");
    let deliveries = [
        reporting("src:1", "h", &report("host", "h1", json!({}))),
        reporting("src:2", "h", &bad),
        reporting("src:3", "h", &report("host", "h3", json!({}))),
    ];
    let error = sink.deliver(&deliveries).await.unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    assert_eq!(error.delivered, 1);
    let text = format!("{error}");
    for needle in [
        "output 0 of the event at src:2: Kessel answered ReportResource with InvalidArgument",
        "InvalidArgument",
        "type: value does not match regex pattern `^[A-Za-z0-9_-]+$`",
        "representations.metadata.api_href: value is required",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert_eq!(methods(&server.log()), [("ReportResource", "h1".into())]);

    // A delete that breaks the resource_type rule (no hyphen).
    let error = sink
        .deliver(&[deleting("src:4", "h", &delete("k8s-cluster", "c1"))])
        .await
        .unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    assert!(format!("{error}").contains("reference.resource_type: value does not match"));

    // What is not a valid request never reaches the server.
    let calls = server.counts().calls;
    let cases = [
        (
            reporting("src:5", "h", &json!({"type": "host", "colour": "red"})),
            "output 0 of the event at src:5 is not a valid ReportResourceRequest: `colour`: unknown field `colour`",
        ),
        (
            reporting(
                "src:6",
                "h",
                &json!({"representations": {"metadata": {"api_href": 7}}}),
            ),
            "`representations.metadata.api_href`: invalid type: integer `7`, expected a string",
        ),
        (
            delivery(
                "src:7",
                2,
                "h",
                Payload::Record(ferry::event::Record {
                    topic: None,
                    key: None,
                    value: Some(b"x".to_vec()),
                    headers: Vec::new(),
                }),
            ),
            "output 2 of the event at src:7 is a record; the kessel sink delivers only kessel_report and kessel_delete outputs",
        ),
    ];
    for (delivery, needle) in cases {
        let error = sink.deliver(&[delivery]).await.unwrap_err();
        assert_eq!(error.retry, Retry::Never);
        let text = format!("{error}");
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert_eq!(server.counts().calls, calls);
}

#[tokio::test]
async fn unavailability_is_retried_and_delivery_resumes_in_order() {
    let server = KesselServer::start().unwrap();
    let sink = sink(&server, "").await;
    let deliveries: Vec<Delivery> = (0..6)
        .map(|n| {
            reporting(
                &format!("src:{n}"),
                "k",
                &report("host", &format!("h{n}"), json!({"n": n})),
            )
        })
        .collect();
    // Three calls fail: the first failure comes after two deliveries.
    sink.deliver(&deliveries[..2]).await.unwrap();
    server.fail_next(3);
    let error = sink.deliver(&deliveries[2..]).await.unwrap_err();
    assert_eq!(error.retry, Retry::Later);
    assert_eq!(error.delivered, 0);
    assert!(format!("{error}").contains("Unavailable"), "{error}");
    let retries = deliver_with_retries(&*sink, &deliveries[2..]).await;
    assert_eq!(retries, 2);

    // Unavailable until cleared (read-only mode).
    server.set_unavailable(true);
    let more: Vec<Delivery> = (6..9)
        .map(|n| {
            reporting(
                &format!("src:{n}"),
                "k",
                &report("host", &format!("h{n}"), json!({"n": n})),
            )
        })
        .collect();
    let clear = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.set_unavailable(false);
    };
    let (retries, ()) = tokio::join!(deliver_with_retries(&*sink, &more), clear);
    assert!(retries >= 2, "{retries}");

    let order: Vec<String> = server
        .log()
        .iter()
        .map(|e| e.local_resource_id.clone())
        .collect();
    let expected: Vec<String> = (0..9).map(|n| format!("h{n}")).collect();
    assert_eq!(order, expected);
    assert_eq!(server.counts().duplicates, 0);
}

#[tokio::test]
async fn a_slow_server_times_out_retryably_and_the_retry_is_absorbed() {
    let server = KesselServer::start().unwrap();
    let sink = sink(&server, "timeout_ms = 150").await;
    server.set_delay(Duration::from_millis(400));
    let one = [reporting("src:1", "k", &report("host", "slow", json!({})))];
    let error = sink.deliver(&one).await.unwrap_err();
    assert_eq!(error.retry, Retry::Later);
    let text = format!("{error}");
    assert!(
        text.contains("within 150 ms")
            || text.contains("Cancelled")
            || text.contains("DeadlineExceeded"),
        "{text}"
    );
    // The server applies it anyway (a lost acknowledgement); the retry
    // carries the same transaction id and writes nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log().is_empty() {
        assert!(Instant::now() < deadline, "the slow write never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.set_delay(Duration::ZERO);
    sink.deliver(&one).await.unwrap();
    assert_eq!(server.log().len(), 1);
    assert_eq!(server.counts().duplicates, 1);
}

#[tokio::test]
async fn max_concurrency_bounds_the_calls_in_flight() {
    let server = KesselServer::start().unwrap();
    server.set_delay(Duration::from_millis(150));
    let sink = sink(&server, "max_concurrency = 2").await;
    let deliveries: Vec<Delivery> = (0..6)
        .map(|n| {
            let id = format!("c{n}");
            reporting(&format!("src:{n}"), &id, &report("host", &id, json!({})))
        })
        .collect();
    let started = Instant::now();
    let calls = deliveries
        .iter()
        .map(|d| sink.deliver(std::slice::from_ref(d)));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    // Six calls of 150 ms, two at a time: three rounds at least.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(440), "{elapsed:?}");
    assert_eq!(server.log().len(), 6);
}

/// A server requiring tokens for client `ferry` / `s3cret-value`.
fn oauth_server(lifetime: Duration) -> KesselServer {
    KesselServer::start_with(Options {
        oauth: Some(OAuthOptions::client("ferry", "s3cret-value", lifetime)),
        ..Options::default()
    })
    .unwrap()
}

#[tokio::test]
async fn oauth_tokens_are_fetched_cached_and_refreshed_before_expiry() {
    let server = oauth_server(Duration::from_secs(2));
    let auth = format!(
        "[auth]\nclient_id = \"ferry\"\nclient_secret = \"s3cret-value\"\ntoken_url = \"{}\"",
        server.token_url().unwrap()
    );
    let sink = sink(&server, &auth).await;
    let batch = |from: usize| -> Vec<Delivery> {
        (from..from + 3)
            .map(|n| {
                reporting(
                    &format!("src:{n}"),
                    "k",
                    &report("host", &format!("h{n}"), json!({})),
                )
            })
            .collect()
    };
    sink.deliver(&batch(0)).await.unwrap();
    assert_eq!(
        server.counts().tokens_issued,
        1,
        "one token for three calls"
    );
    // Past the token's lifetime: a new one is fetched before a call is
    // refused.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    sink.deliver(&batch(3)).await.unwrap();
    let counts = server.counts();
    assert_eq!(counts.tokens_issued, 2);
    assert_eq!(counts.unauthenticated, 0);
    assert_eq!(server.log().len(), 6);

    // A token the server stops accepting is replaced once, transparently.
    server.revoke_tokens();
    sink.deliver(&batch(6)).await.unwrap();
    let counts = server.counts();
    assert_eq!(counts.unauthenticated, 1);
    assert_eq!(counts.tokens_issued, 3);
    assert_eq!(server.log().len(), 9);
}

#[tokio::test]
async fn oauth_discovery_and_a_secret_file_work() {
    let server = oauth_server(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "s3cret-value\n");
    let auth = format!(
        "[auth]\nclient_id = \"ferry\"\nclient_secret_file = \"{}\"\nissuer = \"{}/\"\nscope = \"api.kessel\"",
        secret.display(),
        server.issuer().unwrap()
    );
    let sink = sink(&server, &auth).await;
    sink.deliver(&[reporting("src:1", "k", &report("host", "h", json!({})))])
        .await
        .unwrap();
    assert_eq!(server.counts().tokens_issued, 1);
    assert_eq!(server.log().len(), 1);
}

#[tokio::test]
async fn bad_credentials_are_a_clear_permanent_error_without_the_secret() {
    let server = oauth_server(Duration::from_secs(300));
    let auth = format!(
        "[auth]\nclient_id = \"ferry\"\nclient_secret = \"wrong-secret-value\"\ntoken_url = \"{}\"",
        server.token_url().unwrap()
    );
    let sink = sink(&server, &auth).await;
    let error = sink
        .deliver(&[reporting("src:1", "k", &report("host", "h", json!({})))])
        .await
        .unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    let text = format!("{error} {error:?}");
    assert!(
        text.contains("refused the client credentials of client \"ferry\" (invalid_client"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"), "{text}");
    assert_eq!(server.counts().calls, 0);

    // Without auth at all, Kessel's Unauthenticated is permanent too.
    let error = self::sink(&server, "")
        .await
        .deliver(&[reporting("src:1", "k", &report("host", "h", json!({})))])
        .await
        .unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    assert!(format!("{error}").contains("Unauthenticated"), "{error}");
}

fn tls_server() -> (KesselServer, tempfile::TempDir, PathBuf) {
    let server = KesselServer::start_with(Options {
        tls: true,
        ..Options::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", server.ca_pem().unwrap());
    (server, dir, ca)
}

#[tokio::test]
async fn tls_with_a_custom_ca_and_server_name() {
    let (server, _dir, ca) = tls_server();
    assert!(server.endpoint().starts_with("https://127.0.0.1:"));
    let one = |n: u32| {
        [reporting(
            &format!("src:{n}"),
            "k",
            &report("host", &format!("t{n}"), json!({})),
        )]
    };
    let trusted = sink(
        &server,
        &format!("tls = {{ ca_file = \"{}\" }}", ca.display()),
    )
    .await;
    trusted.deliver(&one(1)).await.unwrap();
    let renamed = sink(
        &server,
        &format!(
            "tls = {{ ca_file = \"{}\", server_name = \"kessel.test\" }}",
            ca.display()
        ),
    )
    .await;
    renamed.deliver(&one(2)).await.unwrap();
    assert_eq!(server.log().len(), 2);

    // A name the certificate does not carry, or a CA that did not issue
    // it: nothing is delivered.
    let wrong_name = sink(
        &server,
        &format!(
            "tls = {{ ca_file = \"{}\", server_name = \"other.example\" }}",
            ca.display()
        ),
    )
    .await;
    let error = wrong_name.deliver(&one(3)).await.unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    let text = format!("{error}");
    assert!(
        text.contains("the server's TLS certificate is not trusted")
            && text.contains("certificate not valid for name \"other.example\""),
        "{text}"
    );
    let (_other, _other_dir, other_ca) = tls_server();
    let wrong_ca = sink(
        &server,
        &format!("tls = {{ ca_file = \"{}\" }}", other_ca.display()),
    )
    .await;
    let error = wrong_ca.deliver(&one(4)).await.unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    let text = format!("{error}");
    assert!(
        text.contains("the server's TLS certificate is not trusted"),
        "{text}"
    );
    assert_eq!(server.log().len(), 2);
}

#[tokio::test]
async fn building_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "ca.pem", "not a certificate");
    let cases = [
        (
            "https://127.0.0.1:1".to_string(),
            "tls = { ca_file = \"/nonexistent/ca.pem\" }".to_string(),
            "the kessel sink is misconfigured: tls.ca_file: no file at /nonexistent/ca.pem",
        ),
        (
            "https://127.0.0.1:1".to_string(),
            format!("tls = {{ ca_file = \"{}\" }}", not_pem.display()),
            "holds no PEM certificate",
        ),
        (
            "http://127.0.0.1:1".to_string(),
            "auth = { client_id = \"a\", client_secret_file = \"/nonexistent/secret\", token_url = \"http://127.0.0.1:1/token\" }".to_string(),
            "auth.client_secret_file: no file at /nonexistent/secret",
        ),
        (
            "127.0.0.1:9000".to_string(),
            String::new(),
            "endpoint: \"127.0.0.1:9000\" is not an http:// or https:// URL",
        ),
    ];
    for (endpoint, extra, needle) in cases {
        let error = try_sink(&endpoint, &extra).await.err().unwrap();
        assert!(
            format!("{error:#}").contains(needle),
            "{needle:?} not in {error:#}"
        );
    }
    // A server that is down is a retryable failure, not a start failure.
    let sink = try_sink("http://127.0.0.1:1", "timeout_ms = 500")
        .await
        .unwrap();
    let error = sink
        .deliver(&[reporting("src:1", "k", &report("host", "h", json!({})))])
        .await
        .unwrap_err();
    assert_eq!(error.retry, Retry::Later);
}

// ---- Through `ferry run`: the file source and the Kessel outbox plugin ----

/// A config running the Kessel outbox plugin over `dir/events.jsonl` into
/// the Kessel sink at `endpoint`, with `sink_extra` keys for the sink table
/// and `extra` for the pipeline table.
fn kessel_config(dir: &Path, endpoint: &str, sink_extra: &str, extra: &str) -> PathBuf {
    write(
        dir,
        "ferry.toml",
        &format!(
            r#"
            [pipelines.kessel]
            source = {{ kind = "file", path = "events.jsonl" }}
            {extra}
            [pipelines.kessel.plugin]
            path = "{KESSEL_OUTBOX_RUST}"
            [pipelines.kessel.sink]
            kind = "kessel"
            endpoint = "{endpoint}"
            {sink_extra}
            "#
        ),
    )
}

/// The first `n` events of the shared Kessel outbox vectors (those the
/// plugin maps without error).
fn vector_events(n: usize) -> String {
    let text =
        std::fs::read_to_string(repo().join("tests/vectors/kessel-outbox/events.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The outputs the vectors expect for their first `n` events, with the
/// events' positions.
fn vector_outputs(n: usize) -> Vec<(String, Value)> {
    let text =
        std::fs::read_to_string(repo().join("tests/vectors/kessel-outbox/expected.jsonl")).unwrap();
    let mut outputs = Vec::new();
    for line in text.lines().take(n) {
        let line: Value = serde_json::from_str(line).unwrap();
        for output in line["outputs"].as_array().unwrap() {
            outputs.push((
                line["position"].as_str().unwrap().to_string(),
                output.clone(),
            ));
        }
    }
    outputs
}

/// Runs `ferry run` to its end; panics unless it succeeded.
fn ferry_run(config: &Path, env: &[(&str, &str)]) -> String {
    let mut command = ferry();
    command.args(["run", "--config"]).arg(config);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    stderr(&output)
}

/// The log entries concerning `id`, as (method, request) pairs.
fn entries_for(log: &[LogEntry], id: &str) -> Vec<(&'static str, Value)> {
    log.iter()
        .filter(|e| e.local_resource_id == id)
        .map(|e| (e.method, e.request.clone()))
        .collect()
}

#[test]
fn the_kessel_outbox_example_reports_through_ferry_run() {
    let server = KesselServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "events.jsonl", &vector_events(8));
    let config = kessel_config(dir.path(), &server.endpoint(), "", "");
    ferry_run(&config, &[]);

    // Every output of the vectors reached Kessel as the plugin wrote it,
    // with a derived transaction id where the payload had none.
    let log = server.log();
    let outputs = vector_outputs(8);
    assert_eq!(log.len(), outputs.len());
    for (position, output) in &outputs {
        let (method, mut request) = match (output.get("kessel_report"), output.get("kessel_delete"))
        {
            (Some(report), _) => ("ReportResource", report.clone()),
            (_, Some(delete)) => ("DeleteResource", delete.clone()),
            _ => panic!("unexpected output {output}"),
        };
        if method == "ReportResource"
            && request["representations"]["metadata"]
                .get("transaction_id")
                .is_none()
        {
            request = with_transaction_id(&request, &transaction_id("kessel", position, 0));
        }
        assert!(
            log.iter()
                .any(|e| e.method == method && e.request == request),
            "{method} {request} not in {log:#?}"
        );
    }
    // Per resource, in source order: deletes after their reports.
    assert_eq!(
        entries_for(&log, "123")
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        ["ReportResource", "DeleteResource"]
    );
    assert_eq!(
        entries_for(&log, "h-2")
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        ["ReportResource", "DeleteResource"]
    );
    let state = |id: &str| {
        server
            .resource(
                if id.starts_with('h') {
                    "host"
                } else {
                    "customer"
                },
                id,
            )
            .unwrap()
    };
    assert!(state("123").deleted);
    assert!(state("h-2").deleted);
    assert!(!state("h-1").deleted);
    assert!(!state("124").deleted);
    assert_eq!(
        state("h-1").transaction_id.as_deref(),
        Some("6f1c2a3e-0b9d-4c1e-9a3f-2d7b8e5c4a10")
    );

    // Replaying the whole stream (a restart before the checkpoint) changes
    // nothing: the reports are duplicates, the deletes hit deleted
    // resources.
    let before = server.resources();
    ferry_run(&config, &[]);
    assert_eq!(server.log(), log);
    assert_eq!(server.resources(), before);
    let counts = server.counts();
    assert_eq!(counts.duplicates, 4);
    assert_eq!(counts.redundant_deletes, 2);
}

#[test]
fn an_invalid_report_halts_the_pipeline_with_the_servers_message() {
    let server = KesselServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let event = |id: &str, resource_type: &str| {
        let payload = report(resource_type, id, json!({}));
        format!(
            "{{\"op\":\"message\",\"key\":\"a\",\"headers\":{{\"operation\":\"ReportResource\",\"version\":\"v1beta2\"}},\"after\":{payload}}}\n"
        )
    };
    let events = [
        event("h1", "host"),
        event("h2", "bad type"),
        event("h3", "host"),
    ]
    .concat();
    write(dir.path(), "events.jsonl", &events);
    let config = kessel_config(dir.path(), &server.endpoint(), "", "");
    let output = run(ferry().args(["run", "--config"]).arg(&config));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("halted at events.jsonl:2"), "{err}");
    assert!(
        err.contains("type: value does not match regex pattern"),
        "{err}"
    );
    // Before it delivered, after it not.
    assert_eq!(methods(&server.log()), [("ReportResource", "h1".into())]);
}

#[test]
fn kessel_unavailable_for_a_while_is_retried_then_delivered_in_order() {
    let server = KesselServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut events = String::new();
    for n in 0..20 {
        let key = format!("k{}", n % 4);
        let payload = report("host", &key, json!({"n": n}));
        events.push_str(&format!(
            "{{\"op\":\"message\",\"key\":\"{key}\",\"headers\":{{\"operation\":\"ReportResource\"}},\"after\":{payload}}}\n"
        ));
    }
    write(dir.path(), "events.jsonl", &events);
    let config = kessel_config(
        dir.path(),
        &server.endpoint(),
        "",
        "retry = { initial_ms = 20, max_ms = 200 }",
    );
    server.set_unavailable(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            server.set_unavailable(false);
        });
        ferry_run(&config, &[]);
    });
    assert!(server.counts().unavailable > 0);
    let log = server.log();
    assert_eq!(log.len(), 20);
    for k in 0..4 {
        let key = format!("k{k}");
        let seen: Vec<i64> = entries_for(&log, &key)
            .iter()
            .map(|(_, request)| {
                request["representations"]["reporter"]["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        let expected: Vec<i64> = (0..20).filter(|n| n % 4 == k).collect();
        assert_eq!(seen, expected, "order of {key}");
    }
    let last = server.resource("host", "k3").unwrap();
    assert_eq!(last.reporter, Some(json!({"n": 19})));
}

#[test]
fn tls_and_oauth_from_the_config_file() {
    let server = KesselServer::start_with(Options {
        tls: true,
        oauth: Some(OAuthOptions::client(
            "ferry",
            "env-secret",
            Duration::from_secs(60),
        )),
        ..Options::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", server.ca_pem().unwrap());
    write(dir.path(), "events.jsonl", &vector_events(3));
    // A relative ca_file is taken from the config file's directory.
    let sink_extra = format!(
        r#"
        write_visibility = "immediate"
        tls = {{ ca_file = "ca.pem", server_name = "kessel.test" }}
        auth = {{ client_id = "ferry", client_secret_env = "FERRY_TEST_KESSEL_SECRET", issuer = "{}" }}
        "#,
        server.issuer().unwrap()
    );
    let config = kessel_config(dir.path(), &server.endpoint(), &sink_extra, "");
    let err = ferry_run(&config, &[("FERRY_TEST_KESSEL_SECRET", "env-secret")]);
    assert!(!err.contains("env-secret"), "{err}");
    let log = server.log();
    assert_eq!(log.len(), 3);
    let kinds = |id: &str| -> Vec<&str> { entries_for(&log, id).iter().map(|e| e.0).collect() };
    assert_eq!(kinds("123"), ["ReportResource", "DeleteResource"]);
    assert_eq!(kinds("h-1"), ["ReportResource"]);
    assert_eq!(
        server.resource("host", "h-1").unwrap().write_visibility,
        "IMMEDIATE"
    );
    assert_eq!(server.counts().tokens_issued, 1);

    // The wrong secret stops the pipeline with a clear message.
    let output = run(ferry()
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_TEST_KESSEL_SECRET", "not-the-secret"));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid_client"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_is_notified_of_each_event_only_after_kessel_has_it() {
    use futures::StreamExt as _;
    let database = fresh_database("notify").await;
    let connection = database.connection.clone();
    let server = KesselServer::start().unwrap();
    // Slow calls: a notification sent too early would arrive before the
    // server holds the resource.
    server.set_delay(Duration::from_millis(100));
    let sink = sink(
        &server,
        &format!(
            "notify = {{ connection = \"{connection}\", channel = \"host-replication\", payload = \"{{after:id}}\" }}"
        ),
    )
    .await;

    // LISTEN on a connection of its own, as the seed advises.
    let (listener, mut driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| driver.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                let _ = notes_tx.send((note.channel().to_string(), note.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute("LISTEN \"host-replication\"")
        .await
        .unwrap();

    let deliveries: Vec<Delivery> = (0..3)
        .map(|n| {
            let mut delivery = reporting(
                &format!("src:{n}"),
                "k",
                &report("host", &format!("h{n}"), json!({})),
            );
            let mut event = (*delivery.event).clone();
            event.after = Some(json!({"id": format!("event-{n}")}).to_string());
            delivery.event = EventRef::single(event);
            delivery
        })
        .collect();
    let deliver = tokio::spawn({
        let sink = sink.clone();
        async move { sink.deliver(&deliveries).await }
    });
    for n in 0..3 {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), notes.recv())
            .await
            .expect("a notification within 10 s")
            .unwrap();
        assert_eq!(channel, "host-replication");
        assert_eq!(payload, format!("event-{n}"));
        assert!(
            server.resource("host", &format!("h{n}")).is_some(),
            "notified of event-{n} before Kessel had h{n}"
        );
    }
    deliver.await.unwrap().unwrap();

    // An event without the payload's field is refused before it is sent.
    let lacking = [reporting("src:9", "k", &report("host", "h9", json!({})))];
    let error = sink.deliver(&lacking).await.unwrap_err();
    assert_eq!(error.retry, Retry::Never);
    assert!(format!("{error}").contains("{after:id}"), "{error}");
    assert!(server.resource("host", "h9").is_none());

    drop(listener);
    database.drop().await;
}
