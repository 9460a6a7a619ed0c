//! The cost of each plugin language: the same Kessel outbox mapping in Rust,
//! JavaScript, Python and C, over the same ~1 KB outbox events.
//!
//! Run: `cargo bench -p ferry --bench languages` (builds the JS, Python and
//! C components with their own scripts first; `scripts/setup` installs the
//! toolchains). Prints a Markdown table: component size, cold compile time
//! (Cranelift, no cache), cached load time (from the on-disk artifact
//! cache), and events/s through one instance at batch size 128.

#[path = "shared/events.rs"]
mod events;

use ferry::event::ChangeEvent;
use ferry::plugin::{Limits, PluginOptions, Runtime, RuntimeOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each component maps events for its throughput figure.
const MEASURE: Duration = Duration::from_secs(5);
const BATCH: usize = 128;

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = repo.join("target/languages");
    std::fs::create_dir_all(&out).unwrap();
    let mut components = vec![(
        "Rust",
        PathBuf::from(ferry_plugin_artifacts::KESSEL_OUTBOX_RUST),
    )];
    for (name, lang) in [("JavaScript", "js"), ("Python", "python"), ("C", "c")] {
        components.push((name, build(repo, lang, &out)));
    }

    let tokio = tokio::runtime::Runtime::new().unwrap();
    let events: Arc<[ChangeEvent]> = events::host_events(BATCH).into();
    println!(
        "| language | component size | cold compile | cached load | events/s (batch {BATCH}) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in components {
        let size = std::fs::metadata(&path).unwrap().len();
        let cold = Runtime::new(RuntimeOptions {
            cache_dir: None,
            ..RuntimeOptions::default()
        })
        .unwrap()
        .load(&path)
        .unwrap()
        .load_time();

        let cache = tempfile::tempdir().unwrap();
        let cached_runtime = || {
            Runtime::new(RuntimeOptions {
                cache_dir: Some(cache.path().to_path_buf()),
                ..RuntimeOptions::default()
            })
            .unwrap()
        };
        cached_runtime().load(&path).unwrap(); // fills the cache
        let runtime = cached_runtime();
        let component = runtime.load(&path).unwrap();
        let cached = component.load_time();

        let plugin = runtime
            .prepare(
                &component,
                PluginOptions {
                    pipeline: "bench".into(),
                    settings: Vec::new(),
                    limits: Limits {
                        instances: 1,
                        ..Limits::default()
                    },
                },
            )
            .unwrap();
        let rate = tokio.block_on(async {
            // Warm up: the first calls of a JIT-less guest (JS, Python) pay
            // for lazy initialisation.
            for _ in 0..3 {
                let results = plugin.transform(events.clone()).await;
                assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");
            }
            let started = Instant::now();
            let mut mapped = 0usize;
            while started.elapsed() < MEASURE {
                mapped += plugin.transform(events.clone()).await.len();
            }
            mapped as f64 / started.elapsed().as_secs_f64()
        });
        println!(
            "| {name} | {:.2} MB | {} ms | {:.1} ms | {} |",
            size as f64 / 1e6,
            cold.as_millis(),
            cached.as_secs_f64() * 1000.0,
            thousands(rate as u64)
        );
    }
}

/// Builds `plugins/kessel-outbox/<lang>` into `out` with its own script.
fn build(repo: &Path, lang: &str, out: &Path) -> PathBuf {
    let target = out.join(format!("kessel_outbox_{lang}.wasm"));
    let script = repo.join("plugins/kessel-outbox").join(lang).join("build");
    let status = Command::new(&script).arg(&target).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
    target
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
