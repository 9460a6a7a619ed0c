//! The Kessel sink against the test Kessel server on loopback: reports/s at
//! 1, 16 and 64 concurrent units of order over 1,000 distinct resources,
//! and the acknowledgement latency of reports offered at 1,000/s.
//!
//! Run: `cargo bench -p ferry --bench kessel`.
//!
//! The sink is driven directly through the `Sink` trait, as the delivery
//! engine would: N tasks, each owning its own resources (its keys),
//! deliver one report at a time, in order. Every report carries a derived
//! transaction id (its own position), so none is absorbed as a duplicate.
//! The server (tests/kessel-server) shares the machine's cores with the
//! client, so the figures are a floor for the sink, not a Kessel figure.

use ferry::event::{ChangeEvent, EventRef, KesselReport, Operation, Output, Payload};
use ferry::sinks::{Delivery, Sink, SinkConfig};
use ferry_kessel_server::KesselServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinct resources.
const RESOURCES: usize = 1_000;
/// Reports per concurrency level: ten per resource.
const REPORTS: usize = 10_000;

/// A ReportResource request of about 700 bytes for resource `n`, version `v`.
fn request(n: usize, v: usize) -> String {
    format!(
        r#"{{"type":"host","reporter_type":"hbi","reporter_instance_id":"3088a3b6-6d4c-4ac8-9b5c-2ad2b1b6a3f1","representations":{{"metadata":{{"local_resource_id":"host-{n}","api_href":"https://console.example.com/api/inventory/v1/hosts/host-{n}","console_href":"https://console.example.com/insights/inventory/host-{n}","reporter_version":"2.3.1"}},"common":{{"workspace_id":"a64d17d0-aec3-410a-acd0-e0b85b22c076"}},"reporter":{{"satellite_id":"2c4196f1-0371-4f4c-8913-e113cfaa6e67","subscription_manager_id":"af94f92b-0b65-4cac-b449-6b77e665a08f","version":{v},"ansible_host":"host-{n}.example.com"}}}}}}"#
    )
}

/// The delivery of report `v` of resource `n`, from a run named `run`.
fn delivery(run: &str, n: usize, v: usize) -> Delivery {
    let event = ChangeEvent {
        source: "bench".into(),
        op: Operation::Message,
        key: Some(format!("host-{n}")),
        before: None,
        after: None,
        headers: Vec::new(),
        tenant: None,
        origin: None,
        transaction_id: None,
        position: format!("{run}:{n}:{v}"),
        commit_time: None,
    };
    Delivery {
        seq: 0,
        event: EventRef::single(event),
        index: 0,
        key: Some(format!("host-{n}")),
        output: Output {
            key: None,
            payload: Payload::KesselReport(KesselReport {
                request: request(n, v),
            }),
        },
        plugin: Arc::from("sha256:0000000000000000"),
    }
}

async fn sink(endpoint: &str) -> Arc<dyn Sink> {
    let config: SinkConfig = toml::from_str(&format!(
        "kind = \"kessel\"\nendpoint = \"{endpoint}\"\nmax_concurrency = 64"
    ))
    .expect("the sink config parses");
    config.build("bench").await.expect("the sink builds")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `REPORTS` reports by `concurrency` tasks; returns reports/s and the
/// per-call latencies, sorted.
async fn throughput(sink: Arc<dyn Sink>, run: &str, concurrency: usize) -> (f64, Vec<Duration>) {
    // Task t owns resources t, t + c, t + 2c, ...: its keys, in order.
    let tasks: Vec<Vec<Delivery>> = (0..concurrency)
        .map(|t| {
            let mine: Vec<usize> = (t..RESOURCES).step_by(concurrency).collect();
            (0..REPORTS / RESOURCES)
                .flat_map(|v| mine.iter().map(move |&n| (n, v)))
                .map(|(n, v)| delivery(run, n, v))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut handles = Vec::new();
    for deliveries in tasks {
        let sink = sink.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(deliveries.len());
            for delivery in &deliveries {
                let call = Instant::now();
                sink.deliver(std::slice::from_ref(delivery))
                    .await
                    .expect("the test server takes every report");
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(REPORTS);
    for handle in handles {
        latencies.extend(handle.await.expect("a bench task panicked"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    (latencies.len() as f64 / elapsed.as_secs_f64(), latencies)
}

/// Reports offered at `rate`/s for `seconds`, each its own task (as
/// different keys would be); returns the sorted acknowledgement latencies.
async fn paced(sink: Arc<dyn Sink>, rate: u64, seconds: u64) -> Vec<Duration> {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut handles = Vec::new();
    for i in 0..(rate * seconds) as usize {
        ticker.tick().await;
        let sink = sink.clone();
        let delivery = delivery("paced", i % RESOURCES, i / RESOURCES);
        let offered = Instant::now();
        handles.push(tokio::spawn(async move {
            sink.deliver(std::slice::from_ref(&delivery))
                .await
                .expect("the test server takes every report");
            offered.elapsed()
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.push(handle.await.expect("a bench task panicked"));
    }
    latencies.sort();
    latencies
}

fn main() {
    let server = KesselServer::start().expect("the test server starts");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let sink = sink(&server.endpoint()).await;
        // Warm up: connection, allocations.
        throughput(sink.clone(), "warmup", 16).await;
        println!(
            "kessel sink → test server on loopback, {RESOURCES} resources, {REPORTS} reports per run"
        );
        println!("concurrency   reports/s   p50 call    p99 call");
        for concurrency in [1, 16, 64] {
            let (rate, latencies) = throughput(sink.clone(), &format!("c{concurrency}"), concurrency).await;
            println!(
                "{concurrency:>11}   {rate:>9.0}   {:>9}   {:>9}",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99))
            );
        }
        let latencies = paced(sink.clone(), 1_000, 5).await;
        println!(
            "offered 1000 reports/s for 5 s: acknowledged p50 {}, p99 {}, max {}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("latencies"))
        );
    });
    let counts = server.counts();
    assert_eq!(
        counts.duplicates, 0,
        "every report had its own transaction id"
    );
    assert_eq!(counts.reports as usize, REPORTS * 4 + 5_000);
    println!(
        "server: {} reports applied, {} resources",
        counts.reports,
        server.resources().len()
    );
}
