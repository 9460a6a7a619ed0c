//! Write ferry mapping plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing the `ferry:plugin/plugin`
//! world (`wit/plugin.wit` at the root of the ferry repository: read it, every
//! type is documented there). This crate generates the bindings for that world
//! and adds three things on top:
//!
//! - the [`Plugin`] trait: build yourself from the pipeline's settings, then
//!   map one event at a time (or override [`Plugin::map_batch`]);
//! - [`export_plugin!`], which turns a `Plugin` into the component's exports;
//! - small constructors ([`Output::kessel_report`], [`Error::permanent`], ...)
//!   and [`log`] functions that write to the host's log.
//!
//! ```no_run
//! use ferry_plugin_sdk::{ChangeEvent, Error, Output, Plugin, Settings};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn new(_settings: &Settings) -> Result<Self, String> {
//!         Ok(Echo)
//!     }
//!
//!     fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error> {
//!         let value = event.after.ok_or_else(|| Error::permanent("no after image"))?;
//!         Ok(vec![Output::record(None, event.key.map(String::into_bytes), Some(value.into_bytes()))])
//!     }
//! }
//!
//! ferry_plugin_sdk::export_plugin!(Echo);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`: the `cdylib`
//! that comes out is the component.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Display;

/// Bindings generated from `wit/plugin.wit`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "ferry_plugin_sdk::bindings",
        generate_all,
    });
}

pub use bindings::ferry::plugin::types::{
    ChangeEvent, Error, Header, KesselDelete, KesselReport, Level, Operation, Output, Payload,
    Record,
};

/// A mapping plugin.
///
/// One value of this type lives in each instance of the component; the host
/// may run several instances side by side, so keep nothing in it that must be
/// shared across events of different instances.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from the pipeline's `plugin.settings`. An error
    /// refuses the configuration: the host will not start (or reload) the
    /// plugin and logs the message.
    fn new(settings: &Settings) -> Result<Self, String>;

    /// Maps one event to what must be sent: zero, one or several outputs, or
    /// an error saying whether a retry could help.
    fn map(&mut self, event: ChangeEvent) -> Result<Vec<Output>, Error>;

    /// Maps a batch of events given in source order, one result per event.
    /// The default calls [`Plugin::map`] for each event; override it to share
    /// work across a batch.
    fn map_batch(&mut self, events: Vec<ChangeEvent>) -> Vec<Result<Vec<Output>, Error>> {
        events.into_iter().map(|event| self.map(event)).collect()
    }
}

/// The pipeline's plugin settings: name/value pairs, nested TOML tables
/// flattened with dots.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    /// Wraps the pairs handed to `init`.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Settings { pairs }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// The value of `name`, or an error naming the missing setting.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing plugin setting `{name}`"))
    }

    /// Every pair, in the order the host gave them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl Output {
    /// A Kessel `ReportResourceRequest`, as JSON text in the public shape.
    pub fn kessel_report(request: impl Into<String>) -> Output {
        Output {
            key: None,
            payload: Payload::KesselReport(KesselReport {
                request: request.into(),
            }),
        }
    }

    /// A Kessel `DeleteResourceRequest`, as JSON text in the public shape.
    pub fn kessel_delete(request: impl Into<String>) -> Output {
        Output {
            key: None,
            payload: Payload::KesselDelete(KesselDelete {
                request: request.into(),
            }),
        }
    }

    /// A generic record; `value: None` is a tombstone and `topic: None` uses
    /// the pipeline's topic.
    pub fn record(topic: Option<String>, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Output {
        Output {
            key: None,
            payload: Payload::Record(Record {
                topic,
                key,
                value,
                headers: Vec::new(),
            }),
        }
    }

    /// Sets the ordering key of this output (by default the event's key).
    pub fn with_key(mut self, key: impl Into<String>) -> Output {
        self.key = Some(key.into());
        self
    }

    /// Adds a header to a record output; other outputs have no headers and
    /// are returned unchanged.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Output {
        if let Payload::Record(record) = &mut self.payload {
            record.headers.push(Header {
                name: name.into(),
                value: value.into(),
            });
        }
        self
    }
}

impl Error {
    /// An error no retry can fix: the pipeline's error policy applies.
    pub fn permanent(message: impl Display) -> Error {
        Error::Permanent(message.to_string())
    }

    /// A passing error: the host retries the event with backoff.
    pub fn retryable(message: impl Display) -> Error {
        Error::Retryable(message.to_string())
    }
}

impl ChangeEvent {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

/// Writes to the host's log, tagged with the pipeline and plugin.
pub mod log {
    use crate::Level;
    use crate::bindings::ferry::plugin::host;

    /// Writes `message` at `level`.
    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    /// Writes `message` at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    /// Writes `message` at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Writes `message` at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Writes `message` at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Glue used by [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use bindings::exports::ferry::plugin::mapper::Guest;

    thread_local! {
        // The instance's plugin, built by `init`. Components are
        // single-threaded, so a thread-local is the instance's state.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<P: Plugin>(settings: Vec<(String, String)>) -> Result<(), String> {
        let plugin = P::new(&Settings::new(settings))?;
        PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    pub fn transform<P: Plugin>(events: Vec<ChangeEvent>) -> Vec<Result<Vec<Output>, Error>> {
        PLUGIN.with(|slot| {
            let mut slot = slot.borrow_mut();
            match slot.as_mut().and_then(|p| p.downcast_mut::<P>()) {
                Some(plugin) => plugin.map_batch(events),
                None => events
                    .iter()
                    .map(|_| Err(Error::permanent("transform was called before init")))
                    .collect(),
            }
        })
    }
}

/// Exports a [`Plugin`] as the component's `ferry:plugin/mapper` interface.
///
/// Invoke it once, at the root of the plugin crate, with the plugin type. On
/// targets other than WebAssembly it exports nothing, so the crate also
/// builds natively for its unit tests.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __FerryPluginExport;

        impl $crate::__private::Guest for __FerryPluginExport {
            fn init(
                settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::init::<$plugin>(settings)
            }

            fn transform(
                events: ::std::vec::Vec<$crate::ChangeEvent>,
            ) -> ::std::vec::Vec<
                ::std::result::Result<::std::vec::Vec<$crate::Output>, $crate::Error>,
            > {
                $crate::__private::transform::<$plugin>(events)
            }
        }

        // The component's exports exist only on WebAssembly: built natively
        // (for unit tests, benchmarks), a plugin crate exports nothing, and
        // its names (`ferry:plugin/mapper@0.1.0#transform`) would not link.
        #[cfg(target_family = "wasm")]
        $crate::bindings::__export_plugin_world!(__FerryPluginExport with_types_in $crate::bindings);
    };
}
