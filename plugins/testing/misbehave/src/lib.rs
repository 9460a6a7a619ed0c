//! A plugin for the host's tests. Each event's key says what to do:
//!
//! | key        | behaviour                                                   |
//! |------------|-------------------------------------------------------------|
//! | `loop`     | spins forever (hits the per-call deadline)                  |
//! | `hog`      | allocates until the memory cap stops it                     |
//! | `grow:N`   | allocates N MiB, keeps it for the call, then echoes         |
//! | `panic`    | panics (a trap)                                             |
//! | `retry`    | returns a retryable error                                   |
//! | `fail`     | returns a permanent error                                   |
//! | `skip`     | returns no output                                           |
//! | `log`      | writes a log line through the host, then echoes             |
//! | `flaky:permanent` | a permanent error the first time this instance sees the event's position, then echoes |
//! | `flaky:retry`     | a retryable error the first time, then echoes       |
//! | other/none | echoes: one record, key = event key, value = `after`        |
//!
//! Echoed records carry a `tag` header with the `tag` setting (default
//! `none`), so tests can tell plugin versions apart. The setting
//! `fail_init = "true"` makes `init` refuse the configuration.

use ferry_plugin_sdk::{ChangeEvent, Error, Output, Plugin, Settings, log};
use std::collections::HashSet;
use std::hint::black_box;

struct Misbehave {
    tag: String,
    /// Positions of `flaky:*` events this instance has failed once.
    failed_once: HashSet<String>,
}

impl Plugin for Misbehave {
    fn new(settings: &Settings) -> Result<Self, String> {
        if settings.get("fail_init") == Some("true") {
            return Err("fail_init is set".to_string());
        }
        Ok(Misbehave {
            tag: settings.get_or("tag", "none").to_string(),
            failed_once: HashSet::new(),
        })
    }

    fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error> {
        let key = event.key.clone().unwrap_or_default();
        let mut ballast = Vec::new();
        match key.as_str() {
            "loop" => loop {
                black_box(&ballast);
            },
            "hog" => loop {
                ballast.push(black_box(vec![1u8; 1 << 20]));
            },
            "panic" => panic!("asked to panic at {}", event.position),
            "retry" => return Err(Error::retryable("asked to retry")),
            "fail" => return Err(Error::permanent("asked to fail")),
            "skip" => return Ok(Vec::new()),
            "log" => log::info(&format!("log line for {}", event.position)),
            "flaky:permanent" | "flaky:retry"
                if self.failed_once.insert(event.position.clone()) =>
            {
                return Err(if key == "flaky:retry" {
                    Error::retryable("flaky, first attempt")
                } else {
                    Error::permanent("flaky, first attempt")
                });
            }
            other => {
                if let Some(mib) = other
                    .strip_prefix("grow:")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    ballast.push(black_box(vec![1u8; mib << 20]));
                }
            }
        }
        black_box(&ballast);
        let output = Output::record(
            None,
            event.key.map(String::into_bytes),
            event.after.map(String::into_bytes),
        )
        .with_header("tag", self.tag.clone());
        Ok(vec![output])
    }
}

ferry_plugin_sdk::export_plugin!(Misbehave);
