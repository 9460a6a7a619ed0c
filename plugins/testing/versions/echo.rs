//! A plugin for the hot-reload tests, built as two versions (`a/` and `b/`,
//! one source): each echoes every event as a record — key = event key,
//! value = `after` — with a `version` header naming the package it was built
//! as, so a test can tell which version mapped each event.

use ferry_plugin_sdk::{ChangeEvent, Error, Output, Plugin, Settings};

const VERSION: &str = env!("CARGO_PKG_NAME");

struct Echo;

impl Plugin for Echo {
    fn new(_settings: &Settings) -> Result<Self, String> {
        Ok(Echo)
    }

    fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error> {
        let output = Output::record(
            None,
            event.key.map(String::into_bytes),
            event.after.map(String::into_bytes),
        )
        .with_header("version", VERSION);
        Ok(vec![output])
    }
}

ferry_plugin_sdk::export_plugin!(Echo);
