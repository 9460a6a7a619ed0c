//! Runs one pipeline: source → plugin → delivery engine → sink.
//!
//! The source fills a bounded channel. Batches of up to `batch_size` items
//! are mapped by the plugin (up to `plugin.instances` batches at once) and
//! taken back in source order by the [`engine`], which delivers each unit of
//! order (key, tenant or everything) in order, units concurrently, and tells
//! the source which items are done so it can checkpoint. Reading pauses
//! while too many items are pending (backpressure).

mod engine;
mod histogram;
mod reload;
mod retry;

pub use engine::{EngineStats, Halt, LaneKey, ParkedLane};
pub use histogram::Histogram;
pub use reload::{PluginStats, Trigger};
pub use retry::Backoff;

use crate::config::{ErrorPolicy, PipelineConfig, PluginConfig};
use crate::event::{ChangeEvent, EventRef};
use crate::kafka::ConsumerLink;
use crate::plugin::{Plugin, PluginOptions, Runtime};
use crate::sources::{SourceConfig, SourceContext, SourceItem, SourceRequest};
use anyhow::Context as _;
use engine::{Engine, MappedItem};
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use reload::FileWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why a pipeline stopped before its input ended.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The `halt` policy stopped the pipeline at an event that cannot be
    /// delivered. The checkpoint stays before it.
    #[error("halted at {position}: {error}")]
    Halted { position: String, error: String },
    /// The pipeline could not start or its source failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What a pipeline did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Items read from the source (events, invalid input, transaction ends).
    pub items: u64,
    /// Outputs the sink acknowledged.
    pub outputs: u64,
    /// Whether it stopped because it was asked to, before its input ended.
    pub stopped: bool,
    /// Items left undelivered when it stopped (parked, or not drained in
    /// time): not acknowledged, so read again at the next start.
    pub undelivered: u64,
}

/// Requests to a running pipeline.
#[derive(Debug)]
pub enum Command {
    /// Retry the failure that parked a lane; answers whether it was parked.
    Resume {
        lane: LaneKey,
        reply: oneshot::Sender<bool>,
    },
    /// List the parked lanes.
    Parked {
        reply: oneshot::Sender<Vec<ParkedLane>>,
    },
    /// Load the plugin file again and, if the new version is valid, swap it
    /// in at the next batch boundary; answers the active digest, or why the
    /// new version was rejected (the old one keeps running).
    Reload {
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Have the source publish the current state again; answers the
    /// resync's id, or why the source cannot.
    Resync {
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// How a running pipeline is steered and watched from outside.
pub struct Controls {
    /// Fires to stop the pipeline: it stops reading, delivers what it has
    /// read (within `drain_timeout_ms`), and returns.
    pub stop: CancellationToken,
    /// Commands (resume a parked key, list parked keys, reload).
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Where the pipeline keeps its counters.
    pub stats: Arc<PipelineStats>,
}

impl Controls {
    /// Controls with only a stop token; commands are never sent.
    pub fn stop_only(stop: CancellationToken) -> Controls {
        let (_, commands) = mpsc::unbounded_channel();
        Controls {
            stop,
            commands,
            stats: Arc::default(),
        }
    }
}

/// A pipeline's counters and state, shared with status and metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub engine: Arc<EngineStats>,
    pub plugin: PluginStats,
    /// Items read from the source (events, undecodable input, transaction
    /// ends).
    pub items_read: std::sync::atomic::AtomicU64,
    /// How long each plugin call (a batch) took.
    pub plugin_calls: Histogram,
    /// The source's checkpoint and lag.
    pub source: Arc<crate::sources::SourceStats>,
    state: std::sync::Mutex<(State, Option<String>)>,
}

impl PipelineStats {
    /// The state, and the error that ended the pipeline if one did.
    pub fn state(&self) -> (State, Option<String>) {
        self.state.lock().unwrap().clone()
    }

    pub fn set_state(&self, state: State, error: Option<String>) {
        *self.state.lock().unwrap() = (state, error);
    }
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Loading its plugin, connecting its source and sink.
    #[default]
    Starting,
    /// Reading, mapping and delivering.
    Running,
    /// Asked to stop: delivering what it has read.
    Stopping,
    /// Its input ended, or it stopped when asked.
    Finished,
    /// The `halt` policy stopped it at an event that cannot be delivered.
    Halted,
    /// It could not start, or its source failed.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Finished => "finished",
            State::Halted => "halted",
            State::Failed => "failed",
        }
    }
}

/// Loads and prepares a pipeline's plugin off the async reactor.
pub async fn load_plugin(
    runtime: &Runtime,
    pipeline: &str,
    config: &PluginConfig,
) -> anyhow::Result<Plugin> {
    let runtime = runtime.clone();
    let path = config.path.clone();
    let options = PluginOptions {
        pipeline: pipeline.to_string(),
        settings: config.flat_settings(),
        limits: config.limits(),
    };
    let pipeline = pipeline.to_string();
    tokio::task::spawn_blocking(move || {
        let component = runtime.load(&path)?;
        let plugin = runtime.prepare(&component, options)?;
        tracing::info!(
            pipeline,
            plugin = %component.digest(),
            path = %path.display(),
            cache = %component.cache_outcome(),
            load_ms = component.load_time().as_millis() as u64,
            "Plugin ready."
        );
        Ok::<_, crate::plugin::LoadError>(plugin)
    })
    .await
    .expect("plugin loading does not panic")
    .context("cannot start the plugin")
}

/// Runs pipeline `name` until its input ends, it halts, or it is stopped.
pub async fn run(
    name: &str,
    config: &PipelineConfig,
    runtime: &Runtime,
    controls: Controls,
) -> Result<Summary, PipelineError> {
    let Controls {
        stop,
        mut commands,
        stats,
    } = controls;
    let mut plugin = load_plugin(runtime, name, &config.plugin).await?;
    if let Some(vectors) = &config.plugin.vectors {
        reload::check_vectors(&plugin, vectors)
            .await
            .context("cannot start the plugin")?;
    }
    stats.plugin.set_active(&plugin);
    // A Kafka source lends its consumer to a transactional Kafka sink, so
    // consumed offsets commit inside the sink's transactions.
    let link = ConsumerLink::default();
    let sink = config
        .sink
        .build_linked(
            name,
            matches!(config.source, SourceConfig::Kafka(_)).then(|| link.clone()),
        )
        .await
        .context("cannot start the sink")?;
    let dead_letters = match (&config.delivery.on_error, &config.delivery.dead_letter) {
        (ErrorPolicy::DeadLetter, Some(destination)) => Some(
            destination
                .build()
                .await
                .context("cannot open the dead-letter destination")?,
        ),
        _ => None,
    };
    let source = config
        .source
        .build(&link)
        .context("cannot start the source")?;

    let pipeline: Arc<str> = name.into();
    let batch_size = config.delivery.batch_size;
    let (items_tx, mut items_rx) = mpsc::channel(batch_size * 4);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    // The source gets its own stop signal: it must keep running (to
    // checkpoint acknowledgements) until the engine has drained.
    let source_stop = CancellationToken::new();
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let mut source_task = tokio::spawn(source.run(SourceContext {
        pipeline: pipeline.clone(),
        items: items_tx,
        acks: acks_rx,
        stop: source_stop.clone(),
        stats: stats.source.clone(),
        requests: requests_rx,
    }));

    let mut engine = Engine::new(
        pipeline.clone(),
        config.delivery.clone(),
        sink,
        dead_letters,
        plugin.clone(),
        stats.engine.clone(),
    );
    stats.set_state(State::Running, None);
    let mut summary = Summary::default();
    let mut mapping = FuturesOrdered::new();
    let max_mapping = plugin.limits().instances.max(1);
    let mut next_seq = 0u64;
    let mut input_open = true;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut buffer = Vec::with_capacity(batch_size);
    let mut watch = config.plugin.watch.then(|| {
        FileWatch::new(
            &config.plugin.path,
            Duration::from_millis(config.plugin.watch_interval_ms),
        )
    });
    let mut reload = reload::Attempts::default();

    loop {
        engine.start_ready();
        let acks = engine.take_acks();
        if !acks.is_empty() {
            // A closed channel means the source has returned already.
            let _ = acks_tx.send(acks);
        }
        if engine.halt().is_some() && engine.running.is_empty() {
            break;
        }
        if !input_open && mapping.is_empty() && engine.is_drained() {
            break;
        }
        let draining = async {
            match drain_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(outcome) = engine.running.next() => engine.complete(outcome),
            Some(lane) = engine.timers.next() => engine.wake(lane),
            Some(command) = commands.recv() => match command {
                Command::Resume { lane, reply } => {
                    let _ = reply.send(engine.resume(&lane));
                }
                Command::Parked { reply } => {
                    let _ = reply.send(engine.parked_lanes());
                }
                Command::Resync { reply } => {
                    if let Err(refused) = requests.send(SourceRequest::Resync { reply }) {
                        let SourceRequest::Resync { reply } = refused.0;
                        let _ = reply.send(Err(format!(
                            "the {} source of pipeline {pipeline} cannot resync",
                            config.source.kind()
                        )));
                    }
                }
                Command::Reload { reply } => {
                    reload.request(Trigger::Request, Some(reply), || start_reload(runtime, &pipeline, config, &plugin));
                }
            },
            () = async { watch.as_mut().expect("guarded").changed().await }, if watch.is_some() => {
                reload.request(Trigger::File, None, || start_reload(runtime, &pipeline, config, &plugin));
            }
            loaded = async { reload.task.as_mut().expect("guarded").await }, if reload.task.is_some() => {
                let outcome = match loaded.expect("reloads do not panic") {
                    Ok(reload::Reloaded::New { plugin: new, took }) => {
                        tracing::info!(
                            pipeline = name,
                            from = %plugin.digest().short(),
                            to = %new.digest().short(),
                            trigger = ?reload.trigger,
                            took_ms = took.as_millis() as u64,
                            "Plugin reloaded: batches from now on go to the new version."
                        );
                        plugin = new;
                        engine.set_plugin(plugin.clone());
                        stats.plugin.set_active(&plugin);
                        stats.plugin.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(plugin.digest().short())
                    }
                    Ok(reload::Reloaded::Same) => {
                        tracing::debug!(pipeline = name, plugin = %plugin.digest().short(), "The plugin file holds the running version.");
                        Ok(plugin.digest().short())
                    }
                    Err(error) => {
                        let error = format!("{error:#}");
                        tracing::error!(
                            pipeline = name,
                            running = %plugin.digest().short(),
                            trigger = ?reload.trigger,
                            %error,
                            "New plugin version rejected; the running version stays."
                        );
                        stats.plugin.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err(error)
                    }
                };
                for reply in reload.finished(|| start_reload(runtime, &pipeline, config, &plugin)) {
                    let _ = reply.send(outcome.clone());
                }
            }
            Some(batch) = mapping.next() => {
                let (first_seq, items, digest) = batch;
                engine.enqueue(first_seq, items, digest);
            }
            _ = stop.cancelled(), if input_open => {
                input_open = false;
                summary.stopped = true;
                drain_deadline = Some(
                    tokio::time::Instant::now()
                        + Duration::from_millis(config.delivery.drain_timeout_ms),
                );
                engine.close_input();
                stats.set_state(State::Stopping, None);
                tracing::info!(pipeline = name, "Stopping: no more input is read; delivering what was read.");
            }
            _ = draining => {
                tracing::warn!(
                    pipeline = name,
                    "Not everything read was delivered within drain_timeout_ms; the rest is not acknowledged and will be read again at the next start."
                );
                break;
            }
            count = items_rx.recv_many(&mut buffer, batch_size),
                if input_open && mapping.len() < max_mapping && engine.has_room() =>
            {
                if count == 0 {
                    input_open = false;
                    engine.close_input();
                } else {
                    summary.items += count as u64;
                    stats.items_read.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                    let items = std::mem::replace(&mut buffer, Vec::with_capacity(batch_size));
                    mapping.push_back(map_batch(plugin.clone(), next_seq, items, stats.clone()));
                    next_seq += count as u64;
                }
            }
        }
    }

    let stats = engine.stats();
    summary.outputs = stats.delivered.load(std::sync::atomic::Ordering::Relaxed);
    summary.undelivered = stats.open_items.load(std::sync::atomic::Ordering::Relaxed);
    let acks = engine.take_acks();
    if !acks.is_empty() {
        let _ = acks_tx.send(acks);
    }
    drop(acks_tx);
    drop(items_rx);
    source_stop.cancel();
    let halt = engine.halt().cloned();
    let source_result = match (&mut source_task).await {
        Ok(result) => result.context("the source failed"),
        Err(join) => Err(anyhow::anyhow!("the source task failed: {join}")),
    };
    if let Some(Halt { position, error }) = halt {
        return Err(PipelineError::Halted { position, error });
    }
    source_result?;
    Ok(summary)
}

/// Loads and validates the plugin file's version in a task of its own, so
/// the pipeline keeps mapping and delivering meanwhile.
fn start_reload(
    runtime: &Runtime,
    pipeline: &Arc<str>,
    config: &PipelineConfig,
    running: &Plugin,
) -> tokio::task::JoinHandle<anyhow::Result<reload::Reloaded>> {
    tokio::spawn(reload::load_new(
        runtime.clone(),
        pipeline.clone(),
        config.plugin.clone(),
        running.digest().short(),
    ))
}

/// Maps a batch of source items; returns the first item's sequence number,
/// the items with their results in order, and the plugin digest.
async fn map_batch(
    plugin: Plugin,
    first_seq: u64,
    items: Vec<SourceItem>,
    stats: Arc<PipelineStats>,
) -> (u64, Vec<MappedItem>, Arc<str>) {
    enum Slot {
        Event(usize),
        Invalid(crate::sources::InvalidInput),
        TransactionEnd,
    }
    let mut slots = Vec::with_capacity(items.len());
    let mut events = Vec::new();
    for item in items {
        slots.push(match item {
            SourceItem::Event(event) => {
                events.push(event);
                Slot::Event(events.len() - 1)
            }
            SourceItem::Invalid(invalid) => Slot::Invalid(invalid),
            SourceItem::TransactionEnd => Slot::TransactionEnd,
        });
    }
    let events: Arc<[ChangeEvent]> = events.into();
    let mut results = if events.is_empty() {
        Vec::new()
    } else {
        let started = std::time::Instant::now();
        let results = plugin.transform(events.clone()).await;
        stats.plugin_calls.observe(started.elapsed());
        results
    }
    .into_iter();
    let digest: Arc<str> = plugin.digest().short().into();
    let items = slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Event(index) => MappedItem::Event(
                EventRef::new(events.clone(), index),
                results.next().expect("one result per event"),
            ),
            Slot::Invalid(invalid) => MappedItem::Invalid(invalid),
            Slot::TransactionEnd => MappedItem::TransactionEnd,
        })
        .collect();
    (first_seq, items, digest)
}
