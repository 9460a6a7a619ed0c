//! The plugin runtime: loads WebAssembly components that implement the
//! `ferry:plugin/plugin` world and runs batches of events through them.
//!
//! - One [`Runtime`] per process holds the Wasmtime `Engine`, the `Linker`
//!   (the `ferry:plugin/host` imports plus a WASI that grants nothing, see
//!   [`sandbox`]) and the epoch ticker that enforces call deadlines.
//! - [`Runtime::load`] reads a component, names it by its SHA-256
//!   [`Digest`], and compiles it or takes it from the [`ArtifactCache`].
//! - [`Runtime::prepare`] checks the component against the world, builds its
//!   `InstancePre` once, and proves the settings by initialising a first
//!   instance. The resulting [`Plugin`] keeps a pool of initialised
//!   instances and reuses them across batches.
//! - [`Plugin::transform`] runs a batch on an instance, under a deadline and
//!   a memory cap. If the call fails (trap, deadline, memory), the instance
//!   is dropped and the batch is mapped again event by event, so the failure
//!   is pinned on the event that caused it and the others go through.

pub mod bindings;
mod cache;
mod host;
mod sandbox;

pub use cache::{ArtifactCache, CacheOutcome};
pub use sandbox::MemoryCapExceeded;

use crate::event::{ChangeEvent, Output, PluginError};
use bindings::PluginPre;
use sandbox::{LogTarget, Sandbox};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, Store, Trap};

/// The world every plugin implements.
pub const WORLD: &str = "ferry:plugin/plugin@0.1.0";

/// How the runtime is built.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Granularity of call deadlines.
    pub epoch_tick: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: ArtifactCache::default_dir(),
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// The process-wide WebAssembly runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Option<ArtifactCache>,
    epoch_tick: Duration,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        host::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        let cache = match options.cache_dir {
            Some(dir) => match ArtifactCache::new(&dir) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "The plugin cache directory is unusable; plugins will be compiled at every start.");
                    None
                }
            },
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone(), options.epoch_tick);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                epoch_tick: options.epoch_tick,
                _ticker: ticker,
            }),
        })
    }

    /// The Wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Reads and compiles the component at `path` (or takes it from the cache).
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Compiles `bytes` (or takes them from the cache); `origin` names them in
    /// errors.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<LoadedComponent, LoadError> {
        check_header(bytes, origin)?;
        let digest = Digest::of(bytes);
        let started = Instant::now();
        let engine = &self.inner.engine;
        let compiled = match &self.inner.cache {
            Some(cache) => cache.load(engine, &digest, bytes),
            None => Component::new(engine, bytes).map(|c| (c, CacheOutcome::Disabled)),
        };
        let (component, cache) = compiled.map_err(|error| LoadError::Compile {
            origin: origin.to_string(),
            detail: format!("{error:#}"),
        })?;
        Ok(LoadedComponent {
            origin: origin.to_string(),
            digest,
            component,
            cache,
            load_time: started.elapsed(),
            size: bytes.len(),
        })
    }

    /// Checks `component` against the world and initialises a first instance
    /// with `options.settings`. Blocks: call it off the async reactor.
    pub fn prepare(
        &self,
        component: &LoadedComponent,
        options: PluginOptions,
    ) -> Result<Plugin, LoadError> {
        let world_error = |detail: String| LoadError::World {
            origin: component.origin.clone(),
            detail,
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component.component)
            .map_err(|e| {
                world_error(format!(
                    "it imports something ferry does not provide: {e:#}"
                ))
            })?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| world_error(format!("its exports do not match: {e:#}")))?;
        let ticks = options
            .limits
            .timeout
            .as_nanos()
            .div_ceil(self.inner.epoch_tick.as_nanos())
            .max(1) as u64
            // The epoch may tick right after the deadline is set.
            + 1;
        let inner = PluginInner {
            runtime: self.inner.clone(),
            pre,
            digest: component.digest.clone(),
            log_target: Arc::new(LogTarget {
                pipeline: options.pipeline,
                plugin: component.digest.short(),
            }),
            settings: options.settings,
            permits: Semaphore::new(options.limits.instances.max(1)),
            limits: options.limits,
            ticks,
            idle: Mutex::new(Vec::new()),
            instantiations: AtomicU64::new(0),
        };
        let instance = inner.instantiate().map_err(|error| match error {
            InstantiateError::Init(message) => LoadError::Init { message },
            InstantiateError::Crashed(error) => LoadError::Crashed { error },
        })?;
        inner.idle.lock().unwrap().push(instance);
        Ok(Plugin {
            inner: Arc::new(inner),
        })
    }
}

/// Refuses what is not a component before Wasmtime gives a vaguer error.
fn check_header(bytes: &[u8], origin: &str) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if !bytes.starts_with(MAGIC) || bytes.len() < 8 {
        return Err(LoadError::NotWasm {
            origin: origin.to_string(),
        });
    }
    // Bytes 4..8: version and layer; layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule {
            origin: origin.to_string(),
        });
    }
    Ok(())
}

/// Increments the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("ferry-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("the epoch thread starts");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The SHA-256 of a component's bytes: the identity of a plugin version.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `sha256:` and the first 16 hex digits: enough to tell versions apart
    /// in logs and outputs.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A compiled component, not yet checked against the world.
pub struct LoadedComponent {
    origin: String,
    digest: Digest,
    component: Component,
    cache: CacheOutcome,
    load_time: Duration,
    size: usize,
}

impl LoadedComponent {
    /// The SHA-256 of the component's bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Whether it was compiled now or taken from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// Time spent compiling or loading from the cache.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Size of the component file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Names of what the component imports.
    pub fn imports(&self, engine: &Engine) -> Vec<String> {
        self.component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// What the component exports: `interface.function` for functions of
    /// exported interfaces, the name alone for anything else.
    pub fn exports(&self, engine: &Engine) -> Vec<String> {
        let mut names = Vec::new();
        for (name, item) in self.component.component_type().exports(engine) {
            match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    for (function, item) in instance.exports(engine) {
                        if matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                            names.push(format!("{name}.{function}"));
                        }
                    }
                }
                _ => names.push(name.to_string()),
            }
        }
        names
    }
}

/// Limits applied to every instance of a plugin.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a single call (`init` or one batch) may run.
    pub timeout: Duration,
    /// Most linear memory one instance may use, in bytes.
    pub memory: usize,
    /// Most instances running at once.
    pub instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(2),
            memory: 128 << 20,
            instances: 2,
        }
    }
}

/// How a plugin is prepared.
#[derive(Debug, Clone, Default)]
pub struct PluginOptions {
    /// The pipeline that runs the plugin, for its log lines.
    pub pipeline: String,
    /// The pipeline's plugin settings, given to `init`.
    pub settings: Vec<(String, String)>,
    pub limits: Limits,
}

/// Why a component cannot be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} is not a WebAssembly file: it does not start with the `\\0asm` header")]
    NotWasm { origin: String },
    #[error(
        "{origin} is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target, or wrap it with `wasm-tools component new`"
    )]
    CoreModule { origin: String },
    #[error("{origin} cannot be compiled: {detail}")]
    Compile { origin: String, detail: String },
    #[error("{origin} does not implement the {WORLD} world: {detail}")]
    World { origin: String, detail: String },
    #[error("the plugin refused its settings: {message}")]
    Init { message: String },
    #[error("the plugin failed while initialising: {error}")]
    Crashed { error: CallError },
}

/// Why a call into a plugin failed as a whole. The instance is discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin exceeded its time limit of {} ms", .0.as_millis())]
    Deadline(Duration),
    #[error("{0}")]
    Memory(String),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin broke the call contract: {0}")]
    Contract(String),
    #[error("a new plugin instance refused its settings: {0}")]
    Init(String),
}

/// Why one event could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The plugin returned an error for the event.
    #[error("{}: {}", if .0.is_retryable() { "retryable plugin error" } else { "plugin error" }, .0.message())]
    Plugin(PluginError),
    /// The call with this event alone failed.
    #[error("{0}")]
    Crashed(CallError),
}

impl EventError {
    /// Whether retrying the event may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EventError::Plugin(e) if e.is_retryable())
    }
}

/// The outcome of mapping one event.
pub type EventResult = Result<Vec<Output>, EventError>;

/// A prepared plugin: a pool of initialised instances of one component
/// version. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    /// Keeps the engine and its epoch ticker alive: without the ticker,
    /// deadlines would never fire.
    runtime: Arc<RuntimeInner>,
    pre: PluginPre<Sandbox>,
    digest: Digest,
    settings: Vec<(String, String)>,
    limits: Limits,
    ticks: u64,
    log_target: Arc<LogTarget>,
    idle: Mutex<Vec<Instance>>,
    permits: Semaphore,
    instantiations: AtomicU64,
}

struct Instance {
    store: Store<Sandbox>,
    bindings: bindings::Plugin,
}

enum InstantiateError {
    Init(String),
    Crashed(CallError),
}

impl Plugin {
    /// The digest of the component this plugin runs.
    pub fn digest(&self) -> &Digest {
        &self.inner.digest
    }

    /// The limits every instance runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Instances created so far: one at preparation, then one for each
    /// instance discarded after a failed call (instances are reused).
    pub fn instantiations(&self) -> u64 {
        self.inner.instantiations.load(Ordering::Relaxed)
    }

    /// Maps `events` (in source order): one result per event, in order.
    ///
    /// A failed call never fails the batch: the events are mapped again one
    /// by one, and only the event that makes the plugin fail gets
    /// [`EventError::Crashed`].
    pub async fn transform(&self, events: Arc<[ChangeEvent]>) -> Vec<EventResult> {
        let all = 0..events.len();
        match self.call(events.clone(), all).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(EventError::Plugin))
                .collect(),
            Err(error) if events.len() == 1 => vec![Err(EventError::Crashed(error))],
            Err(error) => {
                tracing::warn!(
                    pipeline = %self.inner.log_target.pipeline,
                    plugin = %self.inner.log_target.plugin,
                    first = %events[0].position,
                    events = events.len(),
                    %error,
                    "A plugin call failed; mapping the batch event by event to find the cause."
                );
                let mut results = Vec::with_capacity(events.len());
                for i in 0..events.len() {
                    results.push(match self.call(events.clone(), i..i + 1).await {
                        Ok(mut one) => one.pop().expect("one result").map_err(EventError::Plugin),
                        Err(error) => Err(EventError::Crashed(error)),
                    });
                }
                results
            }
        }
    }

    async fn call(
        &self,
        events: Arc<[ChangeEvent]>,
        range: Range<usize>,
    ) -> Result<Vec<Result<Vec<Output>, PluginError>>, CallError> {
        let _permit = self.inner.permits.acquire().await.expect("never closed");
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.call(&events[range]))
            .await
            .expect("plugin calls do not panic")
    }
}

impl PluginInner {
    /// Runs one call on an idle instance (or a new one). A failed instance is
    /// dropped; the next call gets a fresh one.
    fn call(
        &self,
        events: &[ChangeEvent],
    ) -> Result<Vec<Result<Vec<Output>, PluginError>>, CallError> {
        let idle = self.idle.lock().unwrap().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate().map_err(|error| match error {
                InstantiateError::Init(message) => CallError::Init(message),
                InstantiateError::Crashed(error) => error,
            })?,
        };
        instance.store.set_epoch_deadline(self.ticks);
        let result = instance
            .bindings
            .ferry_plugin_mapper()
            .call_transform(&mut instance.store, events);
        let written = instance.store.data().output.take();
        match result {
            Ok(results) if results.len() == events.len() => {
                self.forward_output(&written);
                self.idle.lock().unwrap().push(instance);
                Ok(results)
            }
            Ok(results) => {
                self.forward_output(&written);
                Err(CallError::Contract(format!(
                    "it returned {} results for {} events",
                    results.len(),
                    events.len()
                )))
            }
            Err(error) => Err(self.classify(error, &instance.store, &written)),
        }
    }

    /// A new instance, initialised with the plugin's settings.
    fn instantiate(&self) -> Result<Instance, InstantiateError> {
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        let sandbox = Sandbox::new(self.limits.memory, self.log_target.clone());
        let mut store = Store::new(&self.runtime.engine, sandbox);
        store.limiter(|sandbox| &mut sandbox.limiter);
        store.set_epoch_deadline(self.ticks);
        let crashed = |error, store: &Store<Sandbox>| {
            let written = store.data().output.take();
            InstantiateError::Crashed(self.classify(error, store, &written))
        };
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(error) => return Err(crashed(error, &store)),
        };
        store.set_epoch_deadline(self.ticks);
        match bindings
            .ferry_plugin_mapper()
            .call_init(&mut store, &self.settings)
        {
            Ok(Ok(())) => {
                self.forward_output(&store.data().output.take());
                Ok(Instance { store, bindings })
            }
            Ok(Err(message)) => Err(InstantiateError::Init(message)),
            Err(error) => Err(crashed(error, &store)),
        }
    }

    /// Says which limit a failed call hit, with what the guest wrote last
    /// (a Rust panic message, a Python traceback).
    fn classify(&self, error: wasmtime::Error, store: &Store<Sandbox>, written: &str) -> CallError {
        if let Some(exceeded) = error.downcast_ref::<MemoryCapExceeded>() {
            return CallError::Memory(exceeded.to_string());
        }
        if let Some(exceeded) = store.data().limiter.exceeded() {
            return CallError::Memory(exceeded.to_string());
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallError::Deadline(self.limits.timeout);
        }
        let trap = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        // One line: what the guest wrote last, without Rust's hint about
        // RUST_BACKTRACE (the sandbox has no environment to set it in).
        let written: Vec<&str> = written
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        if written.is_empty() {
            CallError::Trap(trap)
        } else {
            let written = written.join(" ");
            let tail = host::truncate_tail(&written, 1024);
            CallError::Trap(format!("{trap}; the plugin wrote: {tail}"))
        }
    }

    /// Sends what the guest wrote to stdout/stderr to the log.
    fn forward_output(&self, written: &str) {
        for line in written.lines().filter(|l| !l.trim().is_empty()) {
            tracing::debug!(
                pipeline = %self.log_target.pipeline,
                plugin = %self.log_target.plugin,
                "plugin output: {line}"
            );
        }
    }
}
