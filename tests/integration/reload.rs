//! Hot reload of a running pipeline's plugin: by replacing the file, by
//! SIGHUP and through the admin API; broken versions rejected while the
//! stream goes on.
//!
//! The two versions (`plugins/testing/versions/{a,b}`) echo each event with
//! a `version` header; the file sink writes beside each output the digest of
//! the version that mapped it, so the tests check both agree.

use crate::common::{ferry, json_lines, write};
use crate::wire::{free_port, http, with_custom_section};
use ferry_plugin_artifacts::{MISBEHAVE, VERSION_A, VERSION_B, WRONG_WORLD};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEYS: u64 = 10;

/// `ferry run` over events written to its stdin, one pipeline `live`, its
/// log in `dir/ferry.log` and its outputs in `dir/out.jsonl`.
struct Live {
    dir: tempfile::TempDir,
    child: Child,
    writer: std::thread::JoinHandle<u64>,
    stop_writing: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Live {
    /// Starts ferry with `plugin` installed as `dir/plugin.wasm`, and a
    /// thread writing an event every 2 ms, keys in rotation.
    fn start(plugin: &str, extra: &str) -> Live {
        let dir = tempfile::tempdir().unwrap();
        install(
            &dir.path().join("plugin.wasm"),
            &std::fs::read(plugin).unwrap(),
        );
        let config = write(
            dir.path(),
            "ferry.toml",
            &format!(
                r#"
                {extra}
                [pipelines.live]
                source = {{ kind = "file", path = "-" }}
                sink = {{ kind = "file", path = "{}" }}
                batch_size = 8
                [pipelines.live.plugin]
                path = "plugin.wasm"
                watch_interval_ms = 50
                "#,
                dir.path().join("out.jsonl").display()
            ),
        );
        let log = std::fs::File::create(dir.path().join("ferry.log")).unwrap();
        let mut child = ferry()
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stop_writing = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = std::thread::spawn({
            let (stop, written) = (stop_writing.clone(), written.clone());
            move || write_events(stdin, &stop, &written)
        });
        Live {
            dir,
            child,
            writer,
            stop_writing,
            written,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("ferry.log")).unwrap_or_default()
    }

    fn outputs(&self) -> Vec<Value> {
        json_lines(&std::fs::read_to_string(self.path("out.jsonl")).unwrap_or_default())
    }

    /// Waits until the log holds `count` lines containing `needle`.
    fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count} × {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `count` more events than now have been delivered.
    fn wait_for_more_outputs(&self, count: usize) {
        let target = self.outputs().len() + count;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.outputs().len() < target {
            assert!(
                Instant::now() < deadline,
                "the stream stalled:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops writing, closes stdin, and waits for ferry to deliver the rest
    /// and exit 0. Returns how many events were written.
    fn finish(self) -> (u64, Vec<Value>, String) {
        let Live {
            dir,
            mut child,
            writer,
            stop_writing,
            written,
        } = self;
        stop_writing.store(true, Ordering::Relaxed);
        let count = writer.join().unwrap();
        assert_eq!(count, written.load(Ordering::Relaxed));
        let status = wait_with_timeout(&mut child, Duration::from_secs(30));
        let live = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        let log = live("ferry.log");
        assert!(status.success(), "ferry failed:\n{log}");
        (count, json_lines(&live("out.jsonl")), log)
    }
}

fn write_events(mut stdin: ChildStdin, stop: &AtomicBool, written: &AtomicU64) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let line = format!(
            "{{\"op\":\"create\",\"key\":\"k{}\",\"after\":{{\"n\":{n}}}}}\n",
            n % KEYS
        );
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        n += 1;
        written.store(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    n
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ferry did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces `path` atomically (write a sibling, rename over), as a
/// deployment tool would.
fn install(path: &Path, bytes: &[u8]) {
    let next = path.with_extension("wasm.next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Checks that every written event came out once and in order per key.
/// Returns each output's `version` header and recorded plugin digest, in
/// position order.
fn check_exactly_once_in_order(written: u64, outputs: &[Value]) -> Vec<(String, String)> {
    assert_eq!(outputs.len() as u64, written, "one output per event");
    let mut by_position = BTreeMap::new();
    let mut last_n: HashMap<String, i64> = HashMap::new();
    for output in outputs {
        let position: u64 = output["position"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let record = &output["record"];
        let version = record["headers"]["version"].as_str().unwrap().to_string();
        let digest = output["plugin"].as_str().unwrap().to_string();
        let key = record["key"].as_str().unwrap().to_string();
        let n = serde_json::from_str::<Value>(record["value"].as_str().unwrap()).unwrap()["n"]
            .as_i64()
            .unwrap();
        let previous = last_n.insert(key.clone(), n);
        assert!(
            previous.is_none_or(|p| p < n),
            "key {key}: {n} delivered after {previous:?}"
        );
        assert!(
            by_position.insert(position, (version, digest)).is_none(),
            "position {position} delivered twice"
        );
    }
    assert_eq!(by_position.len() as u64, written);
    assert_eq!(by_position.keys().next_back(), Some(&written));
    by_position.into_values().collect()
}

#[test]
fn replacing_the_plugin_ten_times_under_a_steady_stream_loses_and_repeats_nothing() {
    let live = Live::start(VERSION_A, "");
    let (a, b) = (
        std::fs::read(VERSION_A).unwrap(),
        std::fs::read(VERSION_B).unwrap(),
    );
    live.wait_for_more_outputs(50);
    for reload in 1..=10 {
        install(
            &live.path("plugin.wasm"),
            if reload % 2 == 1 { &b } else { &a },
        );
        live.wait_for_log("Plugin reloaded", reload);
        // Let the new version map a good many events before the next swap.
        live.wait_for_more_outputs(50);
    }
    let (written, outputs, log) = live.finish();
    assert!(log.contains("trigger=Some(File)"), "{log}");
    let mapped = check_exactly_once_in_order(written, &outputs);
    // The version that mapped each event (its own tag) is the one the host
    // recorded (its digest).
    let mut digest_of_version: HashMap<&str, &str> = HashMap::new();
    for (version, digest) in &mapped {
        let known = digest_of_version.entry(version).or_insert(digest);
        assert_eq!(known, digest, "version {version} came with two digests");
    }
    let versions: Vec<&String> = mapped.iter().map(|(version, _)| version).collect();
    // Batches are contiguous in position order and each keeps the version
    // it started with: versions change exactly at the 10 swaps.
    let mut runs = vec![versions[0].as_str()];
    for version in versions {
        if runs.last() != Some(&version.as_str()) {
            runs.push(version);
        }
    }
    let expected: Vec<&str> = (0..=10)
        .map(|i| {
            if i % 2 == 0 {
                "ferry-test-version-a"
            } else {
                "ferry-test-version-b"
            }
        })
        .collect();
    assert_eq!(runs, expected, "versions in position order");
}

#[test]
fn broken_versions_are_rejected_and_the_stream_goes_on_with_the_running_one() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // The pipeline's vectors: what version a makes of two events.
    let vectors_in = write(
        dir.path(),
        "vectors.jsonl",
        "{\"op\":\"create\",\"key\":\"x\",\"after\":{\"n\":1}}\n",
    );
    let vectors_out = write(
        dir.path(),
        "expected.jsonl",
        r#"{"position":"vectors.jsonl:1","outputs":[{"record":{"topic":null,"key":"x","value":"{\"n\":1}","headers":{"version":"ferry-test-version-a"}}}]}"#,
    );
    let live = Live::start(
        VERSION_A,
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"
            [pipelines.live.plugin.vectors]
            input = "{}"
            expect = "{}"
            [pipelines.live.plugin.settings]
            fail_init = "true"
            "#,
            vectors_in.display(),
            vectors_out.display()
        ),
    );
    let get = |path: &str| http(port, "GET", path);
    let reload = || {
        let (status, body) = http(port, "POST", "/pipelines/live/reload");
        (status, serde_json::from_str::<Value>(&body).unwrap())
    };
    live.wait_for_more_outputs(20);
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200, "ready once running");

    let plugin = live.path("plugin.wasm");
    let broken: [(&str, Vec<u8>, &str); 3] = [
        (
            "not a component",
            b"this is not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "another world",
            std::fs::read(WRONG_WORLD).unwrap(),
            "does not implement",
        ),
        (
            "init refuses the settings",
            std::fs::read(MISBEHAVE).unwrap(),
            "fail_init is set",
        ),
    ];
    let mut rejected = 0;
    for (what, bytes, reason) in broken {
        install(&plugin, &bytes);
        // The file watch may see it first; either way it is rejected once
        // per look and the admin call reports why.
        let (status, body) = reload();
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(reason),
            "{what}: {body}"
        );
        rejected += 1;
        live.wait_for_log("New plugin version rejected", rejected);
        live.wait_for_more_outputs(20);
    }

    // Version b fails the pipeline's vectors; SIGHUP asks for the reload.
    install(&plugin, &std::fs::read(VERSION_B).unwrap());
    let rejected_before = live.log().matches("New plugin version rejected").count();
    send_signal(live.child.id(), "HUP");
    live.wait_for_log("fails its vectors", 1);
    assert!(live.log().matches("New plugin version rejected").count() > rejected_before);
    live.wait_for_more_outputs(20);

    let (_, metrics) = get("/metrics");
    assert!(
        metrics.contains("ferry_plugin_reloads_total{pipeline=\"live\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ferry_plugin_reloads_rejected_total{pipeline=\"live\"} 0\n"),
        "{metrics}"
    );

    // A rebuild of version a passes everything and is swapped in.
    let rebuilt_a = with_custom_section(&std::fs::read(VERSION_A).unwrap(), "rebuild", "2");
    install(&plugin, &rebuilt_a);
    let (status, body) = reload();
    assert_eq!(status, 200, "{body}");
    let digest = body["digest"].as_str().unwrap().to_string();
    let (_, status_body) = get("/status");
    let status_json: Value = serde_json::from_str(&status_body).unwrap();
    assert_eq!(
        status_json["pipelines"][0]["plugin"]["digest"],
        digest.as_str()
    );
    assert_eq!(status_json["pipelines"][0]["plugin"]["reloads"], 1);
    live.wait_for_more_outputs(20);
    let (_, metrics) = get("/metrics");
    assert!(
        metrics.contains(&format!(
            "ferry_plugin_info{{pipeline=\"live\",digest=\"{digest}\"}} 1\n"
        )),
        "{metrics}"
    );

    // `ferry status` reads the same through the admin server.
    let output = crate::common::run(
        ferry()
            .args(["status", "--config"])
            .arg(live.path("ferry.toml")),
    );
    let shown = crate::common::stdout(&output);
    assert!(
        output.status.success(),
        "{}",
        crate::common::stderr(&output)
    );
    assert!(shown.starts_with("live: running\n"), "{shown}");
    assert!(
        shown.contains(&format!("plugin {digest}  reloads 1  rejected ")),
        "{shown}"
    );

    let (written, outputs, _) = live.finish();
    let mapped = check_exactly_once_in_order(written, &outputs);
    assert!(
        mapped.iter().all(|(v, _)| v == "ferry-test-version-a"),
        "only version a (and its rebuild) ever mapped"
    );
    let digests: std::collections::BTreeSet<&str> =
        mapped.iter().map(|(_, digest)| digest.as_str()).collect();
    assert_eq!(
        digests.len(),
        2,
        "the original and the rebuild: {digests:?}"
    );
    assert!(digests.contains(digest.as_str()));
}

fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
