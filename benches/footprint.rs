//! The host's footprint: resident memory (RSS) and CPU of `ferry run` with
//! two pipelines, idle and at a steady 5,000 events/s each.
//!
//! Run: `cargo bench -p ferry --bench footprint`. Each pipeline reads Kessel
//! outbox events from a FIFO the benchmark writes at a steady rate, maps
//! them with the Rust Kessel plugin and writes to a file. RSS and CPU come
//! from /proc (CPU as a share of one core over the window).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RATE: u64 = 5_000;
const WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = ferry_plugin_artifacts::KESSEL_OUTBOX_RUST;
    let mut config = String::from("[runtime]\ncache = true\n");
    for name in ["one", "two"] {
        let fifo = dir.path().join(format!("{name}.fifo"));
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        config.push_str(&format!(
            r#"
            [pipelines.{name}]
            source = {{ kind = "file", path = "{}" }}
            sink = {{ kind = "file", path = "{}" }}
            plugin = {{ path = "{plugin}", settings = {{ version = "v1beta2" }} }}
            "#,
            fifo.display(),
            dir.path().join(format!("{name}.out")).display()
        ));
    }
    let config_path = dir.path().join("ferry.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut ferry = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("FERRY_CACHE_DIR", dir.path().join("cache"))
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = ferry.id();
    let writers: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|name| {
            let fifo = dir.path().join(format!("{name}.fifo"));
            std::thread::spawn(move || feed(&fifo))
        })
        .collect();

    // The writers wait a little before they start: the idle window.
    std::thread::sleep(Duration::from_secs(2));
    let (idle_rss, idle_cpu) = sample(pid, Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(3)); // the stream settles
    let (busy_rss, busy_cpu) = sample(pid, WINDOW);
    for writer in writers {
        writer.join().unwrap();
    }
    let status = ferry.wait().unwrap();
    assert!(status.success());
    let delivered: usize = ["one", "two"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(dir.path().join(format!("{name}.out")))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    println!("| state | RSS | CPU (share of one core) |");
    println!("|---|---:|---:|");
    println!(
        "| idle, two pipelines | {:.1} MiB | {:.1}% |",
        idle_rss, idle_cpu
    );
    println!(
        "| two pipelines × {RATE} events/s | {:.1} MiB | {:.1}% |",
        busy_rss, busy_cpu
    );
    println!("({delivered} events delivered in all)");
}

/// Writes `RATE` events a second for 5 s of idle + 18 s of stream, then
/// closes the FIFO (the pipeline ends).
fn feed(fifo: &Path) {
    let mut writer = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let events = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/kessel-outbox/events.jsonl"),
    )
    .unwrap();
    let report = events.lines().next().unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(18) {
        // Catch up to the schedule in 1 ms steps.
        let due = started.elapsed().as_micros() as u64 * RATE / 1_000_000;
        while sent < due {
            writeln!(writer, "{report}").unwrap();
            sent += 1;
        }
        writer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Peak RSS (MiB) and CPU share over `window`, from /proc.
fn sample(pid: u32, window: Duration) -> (f64, f64) {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 (1-based) of the whole line.
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks_per_second
    };
    let rss = |pid: u32| -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    };
    let started = Instant::now();
    let cpu_before = cpu(pid);
    let mut peak = 0f64;
    while started.elapsed() < window {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let share = (cpu(pid) - cpu_before) / started.elapsed().as_secs_f64() * 100.0;
    (peak, share)
}
