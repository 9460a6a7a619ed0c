//! Runs one pipeline: source → plugin → delivery engine → sink.
//!
//! The source fills a bounded channel. Batches of up to `batch_size` items
//! are mapped by the plugin (up to `plugin.instances` batches at once) and
//! taken back in source order by the [`engine`], which delivers each unit of
//! order (key, tenant or everything) in order, units concurrently, and tells
//! the source which items are done so it can checkpoint. Reading pauses
//! while too many items are pending (backpressure).

mod engine;
mod retry;

pub use engine::{EngineStats, Halt, LaneKey, ParkedLane};
pub use retry::Backoff;

use crate::config::{ErrorPolicy, PipelineConfig, PluginConfig};
use crate::event::{ChangeEvent, EventRef};
use crate::kafka::ConsumerLink;
use crate::plugin::{Plugin, PluginOptions, Runtime};
use crate::sources::{SourceConfig, SourceContext, SourceItem};
use anyhow::Context as _;
use engine::{Engine, MappedItem};
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
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
}

/// How a running pipeline is steered from outside.
pub struct Controls {
    /// Fires to stop the pipeline: it stops reading, delivers what it has
    /// read (within `drain_timeout_ms`), and returns.
    pub stop: CancellationToken,
    /// Commands (resume a parked key, list parked keys).
    pub commands: mpsc::UnboundedReceiver<Command>,
}

impl Controls {
    /// Controls with only a stop token; commands are never sent.
    pub fn stop_only(stop: CancellationToken) -> Controls {
        let (_, commands) = mpsc::unbounded_channel();
        Controls { stop, commands }
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
    let Controls { stop, mut commands } = controls;
    let plugin = load_plugin(runtime, name, &config.plugin).await?;
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
    let mut source_task = tokio::spawn(source.run(SourceContext {
        pipeline: pipeline.clone(),
        items: items_tx,
        acks: acks_rx,
        stop: source_stop.clone(),
    }));

    let mut engine = Engine::new(
        pipeline.clone(),
        config.delivery.clone(),
        sink,
        dead_letters,
        plugin.clone(),
    );
    let mut summary = Summary::default();
    let mut mapping = FuturesOrdered::new();
    let max_mapping = plugin.limits().instances.max(1);
    let mut next_seq = 0u64;
    let mut input_open = true;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut buffer = Vec::with_capacity(batch_size);

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
                Command::Reload { reply } => {
                    let _ = reply.send(Err("hot reload is not available yet".into()));
                }
            },
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
                    let items = std::mem::replace(&mut buffer, Vec::with_capacity(batch_size));
                    mapping.push_back(map_batch(plugin.clone(), next_seq, items));
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

/// Maps a batch of source items; returns the first item's sequence number,
/// the items with their results in order, and the plugin digest.
async fn map_batch(
    plugin: Plugin,
    first_seq: u64,
    items: Vec<SourceItem>,
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
        plugin.transform(events.clone()).await
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
