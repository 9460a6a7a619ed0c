//! Logging: human lines by default (coloured on a terminal), JSON lines
//! when asked. Logs go to stderr; stdout belongs to sinks and command
//! output.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event, fields flattened.
    Json,
}

/// Installs the global subscriber. The filter comes from `FERRY_LOG` (then
/// `RUST_LOG`), default `info`.
pub fn init(format: LogFormat) {
    let filter = std::env::var("FERRY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|error| {
        eprintln!("warning: FERRY_LOG={filter:?} is not a valid filter ({error}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    drop(installed);
}
