//! `ferry:plugin/host.log`: a plugin's log lines, tagged with its pipeline
//! and plugin digest.

use crate::event::Level;
use crate::plugin::bindings::ferry::plugin::host::Host;
use crate::plugin::bindings::ferry::plugin::types;
use crate::plugin::sandbox::Sandbox;

/// Longest message kept; a plugin cannot flood the log with one call.
const MAX_MESSAGE: usize = 4096;

impl types::Host for Sandbox {}

impl Host for Sandbox {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate(&message, MAX_MESSAGE);
        let target = &self.log_target;
        let (pipeline, plugin) = (target.pipeline.as_str(), target.plugin.as_str());
        match level {
            Level::Trace => tracing::trace!(pipeline, plugin, "{message}"),
            Level::Debug => tracing::debug!(pipeline, plugin, "{message}"),
            Level::Info => tracing::info!(pipeline, plugin, "{message}"),
            Level::Warn => tracing::warn!(pipeline, plugin, "{message}"),
            Level::Error => tracing::error!(pipeline, plugin, "{message}"),
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most the last `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate_tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
