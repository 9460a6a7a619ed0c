//! The Kessel outbox mapping over realistic ~1 KB outbox events: the same
//! Rust code called natively and through the WebAssembly component, at
//! batch sizes 1, 16 and 128.
//!
//! Run: `cargo bench -p ferry --bench mapping`. Each benchmark reports
//! events/s (criterion's "thrpt"); the WASM/native ratio is the quotient of
//! the two at the same batch size.
//!
//! The native path excludes cloning its input (a native mapper would own the
//! events); the WASM path includes copying each event into the guest, which
//! is the real cost of the boundary.
//!
//! `boundary/*` isolates that cost: the same events through the test
//! plugin's `skip` path (no work, no output), with and without their four
//! headers. Lowering costs per string (each is a call into the guest's
//! allocator), not per byte.

#[path = "shared/events.rs"]
mod events;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use events::host_events;
use ferry::event::ChangeEvent;
use ferry::plugin::{Limits, PluginOptions, Runtime, RuntimeOptions};
use ferry_plugin_sdk::Plugin as _;
use std::hint::black_box;
use std::sync::Arc;

/// The same events as the SDK's types, for the native mapper.
fn sdk_events(events: &[ChangeEvent]) -> Vec<ferry_plugin_sdk::ChangeEvent> {
    events
        .iter()
        .map(|e| ferry_plugin_sdk::ChangeEvent {
            source: e.source.clone(),
            op: ferry_plugin_sdk::Operation::Message,
            key: e.key.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            headers: e
                .headers
                .iter()
                .map(|h| ferry_plugin_sdk::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            tenant: e.tenant.clone(),
            origin: e.origin.clone(),
            transaction_id: e.transaction_id.clone(),
            position: e.position.clone(),
            commit_time: e.commit_time,
        })
        .collect()
}

/// Loads and prepares a component with one instance.
fn prepare(path: &str) -> ferry::plugin::Plugin {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(std::path::Path::new(path)).unwrap();
    let options = PluginOptions {
        pipeline: "bench".into(),
        settings: Vec::new(),
        limits: Limits {
            instances: 1,
            ..Limits::default()
        },
    };
    runtime.prepare(&component, options).unwrap()
}

fn boundary(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let plugin = prepare(ferry_plugin_artifacts::MISBEHAVE);
    let mut group = c.benchmark_group("boundary/batch-128");
    group.throughput(Throughput::Elements(128));
    for headers in [true, false] {
        let mut events = host_events(128);
        for event in &mut events {
            event.key = Some("skip".into());
            if !headers {
                event.headers.clear();
            }
        }
        let events: Arc<[ChangeEvent]> = events.into();
        let name = if headers {
            "with-headers"
        } else {
            "without-headers"
        };
        group.bench_function(name, |b| {
            b.to_async(&tokio)
                .iter(|| async { black_box(plugin.transform(events.clone()).await) })
        });
    }
    group.finish();
}

fn mapping(c: &mut Criterion) {
    let events = host_events(128);
    let size = events[0].after.as_ref().unwrap().len()
        + events[0]
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>();
    eprintln!("event payload + headers: {size} bytes");

    let tokio = tokio::runtime::Runtime::new().unwrap();
    let plugin = prepare(ferry_plugin_artifacts::KESSEL_OUTBOX_RUST);
    let mut native = kessel_outbox_plugin::KesselOutbox::new(&Default::default()).unwrap();

    for batch in [1usize, 16, 128] {
        let mut group = c.benchmark_group(format!("kessel-outbox/batch-{batch}"));
        group.throughput(Throughput::Elements(batch as u64));

        let sdk = sdk_events(&events[..batch]);
        group.bench_function("native", |b| {
            b.iter_batched(
                || sdk.clone(),
                |batch| {
                    for event in batch {
                        black_box(native.map(event).unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });

        let wasm: Arc<[ChangeEvent]> = events[..batch].into();
        group.bench_function("wasm", |b| {
            b.to_async(&tokio).iter(|| async {
                let results = plugin.transform(wasm.clone()).await;
                debug_assert!(results.iter().all(Result::is_ok));
                black_box(results)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, mapping, boundary);
criterion_main!(benches);
