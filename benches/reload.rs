//! Hot-reload latency: from the moment a new plugin version replaces the
//! file (atomic rename) to the first output mapped by it, in a running
//! `ferry run` fed a steady stream (an event per millisecond on stdin).
//!
//! Run: `cargo bench -p ferry --bench reload` (builds the JavaScript example
//! with its script first). For the Rust and the JavaScript Kessel outbox
//! plugin, measured with the file watch at its default interval (250 ms),
//! and through the admin API (`POST /pipelines/<name>/reload`, no polling):
//! - cold: a version never seen, compiled by Cranelift on the way;
//! - cached: a version compiled before (a switch back), loaded from the
//!   artifact cache.
//!
//! Each version is the component with a distinct custom section appended: a
//! different digest, the same code.

#[allow(dead_code)]
#[path = "../tests/support/wire.rs"]
mod wire;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = repo.join("target/languages");
    std::fs::create_dir_all(&out).unwrap();
    let js = out.join("kessel_outbox_js.wasm");
    let status = Command::new(repo.join("plugins/kessel-outbox/js/build"))
        .arg(&js)
        .status()
        .unwrap();
    assert!(status.success(), "building the JavaScript plugin failed");

    println!("| plugin | trigger | cold (median of {ROUNDS}) | cached (median of {ROUNDS}) |");
    println!("|---|---|---:|---:|");
    for (name, path) in [
        (
            "Rust",
            PathBuf::from(ferry_plugin_artifacts::KESSEL_OUTBOX_RUST),
        ),
        ("JavaScript", js),
    ] {
        let component = std::fs::read(&path).unwrap();
        for trigger in [Trigger::FileWatch, Trigger::Admin] {
            let (cold, cached) = measure(&component, trigger);
            println!(
                "| {name} | {} | {} ms | {} ms |",
                trigger.label(),
                median(cold),
                median(cached)
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Trigger {
    FileWatch,
    Admin,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::FileWatch => "file replaced (watch every 250 ms)",
            Trigger::Admin => "file replaced + admin reload",
        }
    }
}

/// Runs ferry on `component` and swaps versions: each round installs a new
/// version (cold), then the original again (cached). Latencies in ms.
fn measure(component: &[u8], trigger: Trigger) -> (Vec<u64>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let port = wire::free_port();
    let plugin = dir.path().join("plugin.wasm");
    let out = dir.path().join("out.jsonl");
    std::fs::write(&plugin, component).unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"
            [pipelines.bench]
            source = {{ kind = "file", path = "-" }}
            sink = {{ kind = "file", path = "{}" }}
            batch_size = 16
            [pipelines.bench.plugin]
            path = "plugin.wasm"
            watch = {}
            "#,
            out.display(),
            matches!(trigger, Trigger::FileWatch)
        ),
    )
    .unwrap();
    let mut ferry = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_CACHE_DIR", dir.path().join("cache"))
        .env("FERRY_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&mut ferry, stop.clone());

    let original = digest(component);
    wait_for_output(&out, 0, &original, Instant::now());
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let version =
            wire::with_custom_section(component, "ferry-bench-version", &round.to_string());
        cold.push(swap(&plugin, &version, &out, trigger, port));
        cached.push(swap(&plugin, component, &out, trigger, port));
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let status = ferry.wait().unwrap();
    assert!(status.success());
    (cold, cached)
}

/// Installs `version` and returns the ms until its first output.
fn swap(plugin: &Path, version: &[u8], out: &Path, trigger: Trigger, port: u16) -> u64 {
    let next = plugin.with_extension("next");
    std::fs::write(&next, version).unwrap();
    // Only outputs written from now on count: a version swapped back in
    // has outputs from before.
    let from = std::fs::metadata(out).map_or(0, |m| m.len() as usize);
    let started = Instant::now();
    std::fs::rename(&next, plugin).unwrap();
    if let Trigger::Admin = trigger {
        post_reload(port);
    }
    wait_for_output(out, from, &digest(version), started)
}

/// Waits for an output line carrying `digest` past byte `from` of `out`;
/// the ms since `started`.
fn wait_for_output(out: &Path, from: usize, digest: &str, started: Instant) -> u64 {
    let needle = format!("\"plugin\":\"{digest}\"");
    let mut text = String::new();
    loop {
        if let Ok(mut file) = std::fs::File::open(out) {
            text.clear();
            file.read_to_string(&mut text).unwrap();
            if text.get(from..).is_some_and(|new| new.contains(&needle)) {
                return started.elapsed().as_millis() as u64;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no output by {digest}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes an event per millisecond to ferry's stdin until `stop`.
fn feed(ferry: &mut Child, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut stdin = ferry.stdin.take().unwrap();
    let events = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/kessel-outbox/events.jsonl"),
    )
    .unwrap();
    let report = events.lines().next().unwrap().to_string();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            writeln!(stdin, "{report}").unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

fn post_reload(port: u16) {
    let (status, body) = wire::http(port, "POST", "/pipelines/bench/reload");
    assert_eq!(status, 200, "{body}");
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn digest(bytes: &[u8]) -> String {
    ferry::plugin::Digest::of(bytes).short()
}
