//! Runs one pipeline: source → plugin → sink.
//!
//! The source fills a bounded channel; batches of up to `batch_size` items
//! are mapped by the plugin (up to `plugin.instances` batches at once, their
//! results taken back in source order) and delivered in order. Retryable
//! failures are retried with backoff; a permanent failure meets the
//! pipeline's error policy. Nothing after a failed event is delivered before
//! the policy has dealt with it, so the order the source gave is the order
//! the sink sees.

mod retry;

pub use retry::Backoff;

use crate::config::{DeliveryConfig, ErrorPolicy, PipelineConfig, PluginConfig};
use crate::event::{ChangeEvent, Output};
use crate::plugin::{EventResult, Plugin, PluginOptions, Runtime};
use crate::sinks::{Delivery, Retry, Sink};
use crate::sources::{InvalidInput, SourceContext, SourceItem};
use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a pipeline stopped before its input ended.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The `halt` policy stopped the pipeline at an event that cannot be
    /// delivered. Everything before it was delivered.
    #[error("halted at {position}: {error}")]
    Halted { position: String, error: String },
    /// The pipeline could not start or its source failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
    /// Asked to stop while waiting to retry; what was not delivered is not
    /// acknowledged.
    #[error("stopped while retrying")]
    Stopped,
}

/// What a pipeline did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Items read from the source (events and invalid input).
    pub items: u64,
    /// Outputs the sink acknowledged.
    pub outputs: u64,
    /// Whether it stopped because it was asked to, before its input ended.
    pub stopped: bool,
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

/// Runs pipeline `name` until its source ends, it halts, or `stop` fires
/// (then it stops reading, delivers what it has read, and returns).
pub async fn run(
    name: &str,
    config: &PipelineConfig,
    runtime: &Runtime,
    stop: CancellationToken,
) -> Result<Summary, PipelineError> {
    let plugin = load_plugin(runtime, name, &config.plugin).await?;
    let sink = config
        .sink
        .build(name)
        .await
        .context("cannot start the sink")?;
    let source = config.source.build().context("cannot start the source")?;

    let batch_size = config.delivery.batch_size;
    let (items_tx, mut items_rx) = mpsc::channel(batch_size * 4);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let mut source_task = tokio::spawn(source.run(SourceContext {
        pipeline: name.into(),
        items: items_tx,
        acks: acks_rx,
        stop: stop.clone(),
    }));
    let engine = Engine {
        pipeline: name,
        delivery: &config.delivery,
        plugin: &plugin,
        sink: sink.as_ref(),
        stop: &stop,
        acks: acks_tx,
    };
    let mut next_seq = 0u64;

    let mut summary = Summary::default();
    let mut mapping = FuturesOrdered::new();
    let max_in_flight = plugin.limits().instances.max(1);
    let mut input_open = true;
    let mut buffer = Vec::with_capacity(batch_size);
    let result = loop {
        tokio::select! {
            biased;
            Some(batch) = mapping.next() => {
                match engine.deliver(batch).await {
                    Ok(outputs) => summary.outputs += outputs,
                    Err(error) => break Err(error),
                }
            }
            _ = stop.cancelled(), if input_open => {
                input_open = false;
                summary.stopped = true;
            }
            count = items_rx.recv_many(&mut buffer, batch_size), if input_open && mapping.len() < max_in_flight => {
                if count == 0 {
                    input_open = false;
                } else {
                    summary.items += count as u64;
                    let items = std::mem::replace(&mut buffer, Vec::with_capacity(batch_size));
                    mapping.push_back(Batch::map(plugin.clone(), next_seq, items));
                    next_seq += count as u64;
                }
            }
            else => break Ok(()),
        }
    };
    drop(items_rx);
    match result {
        Ok(()) => {}
        Err(PipelineError::Stopped) => {
            source_task.abort();
            summary.stopped = true;
            return Ok(summary);
        }
        Err(error) => {
            source_task.abort();
            return Err(error);
        }
    }
    match (&mut source_task).await {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(error)) => Err(PipelineError::Failed(error.context("the source failed"))),
        Err(join) => Err(PipelineError::Failed(anyhow::anyhow!(
            "the source task failed: {join}"
        ))),
    }
}

/// A batch of source items and, once mapped, the plugin's results.
struct Batch {
    /// Sequence number of the first item.
    first_seq: u64,
    /// The items in source order: events point into `events`.
    slots: Vec<Slot>,
    events: Arc<[ChangeEvent]>,
    results: Vec<EventResult>,
    plugin: Plugin,
}

enum Slot {
    Event(usize),
    Invalid(InvalidInput),
}

impl Batch {
    async fn map(plugin: Plugin, first_seq: u64, items: Vec<SourceItem>) -> Batch {
        let mut slots = Vec::new();
        let mut events = Vec::new();
        for item in items {
            match item {
                SourceItem::Event(event) => {
                    slots.push(Slot::Event(events.len()));
                    events.push(event);
                }
                SourceItem::Invalid(invalid) => slots.push(Slot::Invalid(invalid)),
            }
        }
        let events: Arc<[ChangeEvent]> = events.into();
        let results = if events.is_empty() {
            Vec::new()
        } else {
            plugin.transform(events.clone()).await
        };
        Batch {
            first_seq,
            slots,
            events,
            results,
            plugin,
        }
    }
}

/// Delivers mapped batches for one pipeline.
struct Engine<'a> {
    pipeline: &'a str,
    delivery: &'a DeliveryConfig,
    plugin: &'a Plugin,
    sink: &'a dyn Sink,
    stop: &'a CancellationToken,
    /// Sequence numbers of items that are done, for the source.
    acks: mpsc::UnboundedSender<Vec<u64>>,
}

impl Engine<'_> {
    /// Delivers a batch in order; returns how many outputs were acknowledged.
    async fn deliver(&self, batch: Batch) -> Result<u64, PipelineError> {
        let Batch {
            first_seq,
            slots,
            events,
            results,
            plugin,
        } = batch;
        let count = slots.len() as u64;
        let digest: Arc<str> = plugin.digest().short().into();
        let mut results = results.into_iter();
        let mut pending = Vec::new();
        let mut delivered = 0;
        for slot in slots {
            let failure = match slot {
                Slot::Invalid(invalid) => Some((invalid.position, invalid.error)),
                Slot::Event(index) => {
                    let event = &events[index];
                    let result = results.next().expect("one result per event");
                    match self.settle(event, result).await? {
                        Ok(outputs) => {
                            pending.extend(deliveries(event, outputs, &digest));
                            None
                        }
                        Err(error) => Some((event.position.clone(), error)),
                    }
                }
            };
            if let Some((position, error)) = failure {
                delivered += self.flush(&mut pending).await?;
                self.fail(position, error)?;
            }
        }
        delivered += self.flush(&mut pending).await?;
        // Delivered in order and in full: every item of the batch is done.
        // (A closed channel means the source has already returned.)
        let _ = self.acks.send((first_seq..first_seq + count).collect());
        Ok(delivered)
    }

    /// Retries a retryable plugin failure until it succeeds, fails for good,
    /// or runs out of attempts. `Err` inside `Ok` is a permanent failure.
    async fn settle(
        &self,
        event: &ChangeEvent,
        mut result: EventResult,
    ) -> Result<Result<Vec<Output>, String>, PipelineError> {
        let mut backoff = Backoff::new(&self.delivery.retry);
        loop {
            match result {
                Ok(outputs) => return Ok(Ok(outputs)),
                Err(error) if error.is_retryable() => {
                    let Some(delay) = backoff.next_delay() else {
                        return Ok(Err(format!(
                            "{error} (gave up after {} attempts)",
                            backoff.attempts()
                        )));
                    };
                    tracing::warn!(
                        pipeline = self.pipeline,
                        key = event.key.as_deref().unwrap_or(""),
                        position = %event.position,
                        attempt = backoff.attempts(),
                        delay_ms = delay.as_millis() as u64,
                        %error,
                        "The plugin asked to retry an event; retrying after a delay."
                    );
                    self.sleep(delay).await?;
                    let mut again = self.plugin.transform(Arc::from([event.clone()])).await;
                    result = again.pop().expect("one result");
                }
                Err(error) => return Ok(Err(error.to_string())),
            }
        }
    }

    /// Delivers `pending` (then empties it), retrying retryable sink errors
    /// from where the sink got to.
    async fn flush(&self, pending: &mut Vec<Delivery>) -> Result<u64, PipelineError> {
        let total = pending.len() as u64;
        let mut from = 0;
        let mut backoff = Backoff::new(&self.delivery.retry);
        while from < pending.len() {
            let Err(error) = self.sink.deliver(&pending[from..]).await else {
                break;
            };
            from += error.delivered;
            let failed = &pending[from];
            if error.retry == Retry::Never {
                let position = failed.position.to_string();
                self.fail(position, format!("the sink refused it: {error}"))?;
                from += 1;
                continue;
            }
            let Some(delay) = backoff.next_delay() else {
                return Err(PipelineError::Halted {
                    position: failed.position.to_string(),
                    error: format!("the sink failed {} times: {error}", backoff.attempts()),
                });
            };
            tracing::warn!(
                pipeline = self.pipeline,
                key = failed.key.as_deref().unwrap_or(""),
                position = %failed.position,
                attempt = backoff.attempts(),
                delay_ms = delay.as_millis() as u64,
                %error,
                "The sink failed; retrying after a delay."
            );
            self.sleep(delay).await?;
        }
        pending.clear();
        Ok(total)
    }

    /// Applies the error policy to a permanent failure.
    fn fail(&self, position: String, error: String) -> Result<(), PipelineError> {
        match self.delivery.on_error {
            ErrorPolicy::Halt => Err(PipelineError::Halted { position, error }),
        }
    }

    async fn sleep(&self, delay: std::time::Duration) -> Result<(), PipelineError> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.stop.cancelled() => Err(PipelineError::Stopped),
        }
    }
}

/// The deliveries of one event's outputs.
fn deliveries<'a>(
    event: &'a ChangeEvent,
    outputs: Vec<Output>,
    plugin: &'a Arc<str>,
) -> impl Iterator<Item = Delivery> + 'a {
    let position: Arc<str> = event.position.as_str().into();
    let tenant: Option<Arc<str>> = event.tenant.as_deref().map(Arc::from);
    let transaction_id: Option<Arc<str>> = event.transaction_id.as_deref().map(Arc::from);
    outputs
        .into_iter()
        .enumerate()
        .map(move |(index, output)| Delivery {
            position: position.clone(),
            index: index as u32,
            key: output.key.clone().or_else(|| event.key.clone()),
            tenant: tenant.clone(),
            transaction_id: transaction_id.clone(),
            output,
            plugin: plugin.clone(),
        })
}
