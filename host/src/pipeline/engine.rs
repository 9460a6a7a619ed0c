//! The delivery engine: order per unit, concurrency across units, retries
//! that hold back only their own unit, error policies, and the completions
//! that become checkpoints.
//!
//! Every output is queued in the *lane* of its unit of order (a key within
//! a tenant, a tenant, or everything; `ordering`). A lane delivers its queue
//! head first, one slice at a time, so a unit's outputs reach the sink in
//! source order; up to `max_in_flight` lanes deliver at once. A retryable
//! failure puts its lane to sleep (exponential backoff with jitter) while
//! the others go on; a permanent failure takes its place at the lane's head
//! and meets the error policy in order: `halt` stops the pipeline, `park`
//! holds the lane (its later events wait, nothing else does), `dead-letter`
//! writes the failure aside and lets the lane go on.
//!
//! All lane state lives in one [`Engine`], driven by one task: the work it
//! starts (sink calls, remaps, dead-letter writes, backoff timers) are
//! futures in `running` and `timers` whose outcomes come back to
//! [`Engine::complete`] and [`Engine::wake`]. Nothing is shared, so nothing
//! races.
//!
//! An item is *done* when all its outputs are delivered (or its failure has
//! been dealt with by the policy); done items' sequence numbers are handed to
//! the source in [`Engine::take_acks`], which checkpoints only up to its low
//! watermark.

use super::retry::Backoff;
use crate::config::{DeliveryConfig, ErrorPolicy, Ordering};
use crate::dead_letter::{DeadLetter, DeadLetters, Subject};
use crate::event::{ChangeEvent, EventRef, Output};
use crate::plugin::{EventError, EventResult, Plugin};
use crate::sinks::{Delivery, Grouping, Retry, Sink, SinkError};
use crate::sources::InvalidInput;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as Atomic};
use std::time::Duration;

/// Most deliveries handed to a sink in one call.
const MAX_SLICE: usize = 256;

/// A unit of order: outputs in the same lane are delivered in source order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LaneKey {
    /// A key within a tenant (`ordering = "key"`).
    Key {
        tenant: Option<Arc<str>>,
        key: Option<String>,
    },
    /// A tenant (`ordering = "tenant"`).
    Tenant(Option<Arc<str>>),
    /// Everything (`ordering = "total"`, or a sink that groups source
    /// transactions).
    All,
    /// Input that never became an event, alone in its lane.
    Input(String),
}

impl fmt::Display for LaneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaneKey::Key { tenant, key } => {
                if let Some(tenant) = tenant {
                    write!(f, "{tenant}/")?;
                }
                f.write_str(key.as_deref().unwrap_or("(no key)"))
            }
            LaneKey::Tenant(tenant) => {
                write!(f, "tenant {}", tenant.as_deref().unwrap_or("(none)"))
            }
            LaneKey::All => f.write_str("(all)"),
            LaneKey::Input(position) => write!(f, "input at {position}"),
        }
    }
}

/// One thing a lane must do, in order.
enum Work {
    /// Deliver an output.
    Deliver(Delivery),
    /// Map an event again: the plugin asked for a retry.
    Remap(Remap),
    /// Apply the error policy to a permanent failure.
    Fail(Failure),
    /// The end of a source transaction (only queued when the sink groups
    /// source transactions).
    TransactionEnd(u64),
}

pub(super) struct Remap {
    seq: u64,
    event: EventRef,
    error: EventError,
}

/// A permanent failure of item `seq`, described as its dead letter.
pub(super) struct Failure {
    seq: u64,
    letter: DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneState {
    /// May start work.
    Ready,
    /// Work in flight.
    Running,
    /// Backing off before a retry.
    Waiting,
    /// Held by the `park` policy (or frozen by `halt`).
    Parked,
}

struct Lane {
    queue: VecDeque<Work>,
    state: LaneState,
    /// Whether the lane is in the engine's `ready` queue.
    scheduled: bool,
    /// The backoff of the failure being retried, if any.
    backoff: Option<Backoff>,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            queue: VecDeque::new(),
            state: LaneState::Ready,
            scheduled: false,
            backoff: None,
        }
    }
}

/// What a finished piece of lane work reports.
pub(super) enum Outcome {
    Delivered {
        lane: LaneKey,
        slice: Vec<Delivery>,
        result: Result<(), SinkError>,
    },
    Remapped {
        lane: LaneKey,
        remap: Remap,
        result: EventResult,
        plugin: Arc<str>,
    },
    DeadLettered {
        lane: LaneKey,
        failure: Box<Failure>,
        result: anyhow::Result<()>,
    },
}

/// Counters of one pipeline's engine, readable from anywhere.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Outputs acknowledged by the sink.
    pub delivered: AtomicU64,
    /// Retries of failed deliveries, remaps and dead-letter writes.
    pub retries: AtomicU64,
    /// Failures written to the dead-letter destination.
    pub dead_letters: AtomicU64,
    /// Lanes held by the `park` policy right now.
    pub parked_lanes: AtomicU64,
    /// Items held in parked lanes right now.
    pub parked_items: AtomicU64,
    /// Items read and not yet done.
    pub open_items: AtomicU64,
    /// How long each sink call (a slice of one unit of order) took.
    pub sink_calls: super::Histogram,
}

/// Why the engine stopped the pipeline.
#[derive(Debug, Clone)]
pub struct Halt {
    pub position: String,
    pub error: String,
}

/// A parked lane, as shown by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedLane {
    pub lane: LaneKey,
    pub position: String,
    pub error: String,
    /// Items held, the failed one included.
    pub held: usize,
}

/// The delivery engine of one pipeline.
pub(super) struct Engine {
    pipeline: Arc<str>,
    config: DeliveryConfig,
    sink: Arc<dyn Sink>,
    grouping: Grouping,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    plugin: Plugin,
    lanes: HashMap<LaneKey, Lane>,
    /// Lanes that may be able to start work.
    ready: VecDeque<LaneKey>,
    /// Lane work in flight.
    pub(super) running: FuturesUnordered<BoxFuture<'static, Outcome>>,
    /// Backoff timers: each yields the lane to wake.
    pub(super) timers: FuturesUnordered<BoxFuture<'static, LaneKey>>,
    /// Work not yet done per item.
    outstanding: HashMap<u64, u32>,
    /// Done items not yet handed to the source.
    acks: Vec<u64>,
    /// Items read and not done.
    open: usize,
    /// Items held in parked lanes.
    parked: usize,
    /// No more items will come: transactions still open are complete.
    input_closed: bool,
    halt: Option<Halt>,
    stats: Arc<EngineStats>,
}

impl Engine {
    pub(super) fn new(
        pipeline: Arc<str>,
        config: DeliveryConfig,
        sink: Arc<dyn Sink>,
        dead_letters: Option<Arc<dyn DeadLetters>>,
        plugin: Plugin,
        stats: Arc<EngineStats>,
    ) -> Engine {
        Engine {
            pipeline,
            grouping: sink.grouping(),
            config,
            sink,
            dead_letters,
            plugin,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            running: FuturesUnordered::new(),
            timers: FuturesUnordered::new(),
            outstanding: HashMap::new(),
            acks: Vec::new(),
            open: 0,
            parked: 0,
            input_closed: false,
            halt: None,
            stats,
        }
    }

    /// The version events are mapped again with from now on (a retryable
    /// plugin error).
    pub(super) fn set_plugin(&mut self, plugin: Plugin) {
        self.plugin = plugin;
    }

    pub(super) fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Why the pipeline must stop, once a `halt` happened.
    pub(super) fn halt(&self) -> Option<&Halt> {
        self.halt.as_ref()
    }

    /// Whether more items may be read (backpressure): parked items do not
    /// count, so a parked unit does not stop the others.
    pub(super) fn has_room(&self) -> bool {
        self.halt.is_none() && self.open - self.parked < self.config.max_pending
    }

    /// Whether nothing is left to do but what is parked.
    pub(super) fn is_drained(&self) -> bool {
        self.running.is_empty()
            && self.timers.is_empty()
            && self
                .lanes
                .values()
                .all(|lane| lane.queue.is_empty() || lane.state == LaneState::Parked)
    }

    /// Done items since the last call.
    pub(super) fn take_acks(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acks)
    }

    /// No more items will come.
    pub(super) fn close_input(&mut self) {
        self.input_closed = true;
        // A transaction left open by the end of the input is complete.
        if self.grouping == Grouping::SourceTransaction {
            self.schedule(LaneKey::All);
        }
    }

    /// Lanes parked now.
    pub(super) fn parked_lanes(&self) -> Vec<ParkedLane> {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.state == LaneState::Parked)
            .filter_map(|(key, lane)| match lane.queue.front() {
                Some(Work::Fail(failure)) => Some(ParkedLane {
                    lane: key.clone(),
                    position: failure.letter.position.clone(),
                    error: failure.letter.error.clone(),
                    held: lane.queue.len(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Takes in a mapped batch: every item joins the lane of its unit.
    pub(super) fn enqueue(&mut self, first_seq: u64, items: Vec<MappedItem>, plugin: Arc<str>) {
        for (offset, item) in items.into_iter().enumerate() {
            let seq = first_seq + offset as u64;
            self.open += 1;
            match item {
                MappedItem::Event(event, Ok(outputs)) => {
                    let deliveries: Vec<Delivery> =
                        deliveries(seq, &event, outputs, &plugin).collect();
                    if deliveries.is_empty() {
                        self.ack(seq);
                        continue;
                    }
                    self.outstanding.insert(seq, deliveries.len() as u32);
                    for delivery in deliveries {
                        let lane =
                            self.lane_of(delivery.event.tenant.as_deref(), delivery.key.as_deref());
                        self.push(lane, Work::Deliver(delivery));
                    }
                }
                MappedItem::Event(event, Err(error)) => {
                    self.outstanding.insert(seq, 1);
                    let lane = self.lane_of(event.tenant.as_deref(), event.key.as_deref());
                    let work = if error.is_retryable() {
                        Work::Remap(Remap { seq, event, error })
                    } else {
                        Work::Fail(Failure {
                            seq,
                            letter: self.letter_for_event(
                                &event,
                                error.to_string(),
                                1,
                                Some(plugin.clone()),
                            ),
                        })
                    };
                    self.push(lane, work);
                }
                MappedItem::Invalid(invalid) => {
                    self.outstanding.insert(seq, 1);
                    let lane = match self.effective_ordering() {
                        Ordering::Key => LaneKey::Input(invalid.position.clone()),
                        Ordering::Tenant => LaneKey::Tenant(None),
                        Ordering::Total => LaneKey::All,
                    };
                    let letter = DeadLetter {
                        pipeline: self.pipeline.clone(),
                        position: invalid.position,
                        key: None,
                        tenant: None,
                        error: invalid.error,
                        attempts: 1,
                        plugin: None,
                        subject: Subject::Input(invalid.raw),
                    };
                    self.push(lane, Work::Fail(Failure { seq, letter }));
                }
                MappedItem::TransactionEnd => {
                    if self.grouping == Grouping::SourceTransaction {
                        self.outstanding.insert(seq, 1);
                        self.push(LaneKey::All, Work::TransactionEnd(seq));
                    } else {
                        self.ack(seq);
                    }
                }
            }
        }
        self.update_gauges();
    }

    /// Starts work on ready lanes, up to `max_in_flight`.
    pub(super) fn start_ready(&mut self) {
        while self.halt.is_none() && self.running.len() < self.config.max_in_flight {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            lane.scheduled = false;
            if lane.state != LaneState::Ready {
                continue;
            }
            if lane.queue.is_empty() {
                self.lanes.remove(&key);
                continue;
            }
            self.start(key);
        }
        self.update_gauges();
    }

    /// Starts the work at the head of a ready lane.
    fn start(&mut self, key: LaneKey) {
        let lane = self.lanes.get_mut(&key).expect("the lane exists");
        match lane.queue.front().expect("the lane has work") {
            Work::Deliver(_) => {
                let slice = match self.grouping {
                    Grouping::Key => take_deliveries(&mut lane.queue, MAX_SLICE),
                    Grouping::SourceTransaction => {
                        let complete = self.input_closed
                            || lane
                                .queue
                                .iter()
                                .any(|work| matches!(work, Work::TransactionEnd(_)));
                        if !complete {
                            // Wait for the rest of the transaction.
                            return;
                        }
                        take_deliveries(&mut lane.queue, usize::MAX)
                    }
                };
                lane.state = LaneState::Running;
                let sink = self.sink.clone();
                let stats = self.stats.clone();
                self.running.push(
                    async move {
                        let started = std::time::Instant::now();
                        let result = sink.deliver(&slice).await;
                        stats.sink_calls.observe(started.elapsed());
                        Outcome::Delivered {
                            lane: key,
                            slice,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
            Work::TransactionEnd(seq) => {
                let seq = *seq;
                lane.queue.pop_front();
                self.done(seq);
                self.schedule(key);
            }
            Work::Remap(_) => {
                let Some(Work::Remap(remap)) = lane.queue.pop_front() else {
                    unreachable!()
                };
                lane.state = LaneState::Running;
                let plugin = self.plugin.clone();
                self.running.push(
                    async move {
                        let digest: Arc<str> = plugin.digest().short().into();
                        let single: Arc<[ChangeEvent]> = Arc::from([(*remap.event).clone()]);
                        let result = plugin.transform(single).await.pop().expect("one result");
                        Outcome::Remapped {
                            lane: key,
                            remap,
                            result,
                            plugin: digest,
                        }
                    }
                    .boxed(),
                );
            }
            Work::Fail(_) => self.apply_policy(key),
        }
    }

    /// The failure at the head of lane `key` meets the error policy.
    fn apply_policy(&mut self, key: LaneKey) {
        let lane = self.lanes.get_mut(&key).expect("the lane exists");
        let Some(Work::Fail(failure)) = lane.queue.front() else {
            unreachable!("a failure is at the head")
        };
        let letter = &failure.letter;
        match self.config.on_error {
            ErrorPolicy::Halt => {
                tracing::error!(
                    pipeline = %self.pipeline,
                    key = %key,
                    position = %letter.position,
                    error = %letter.error,
                    "An event cannot be delivered; halting the pipeline (on_error = \"halt\"). Nothing after it is acknowledged."
                );
                self.halt = Some(Halt {
                    position: letter.position.clone(),
                    error: letter.error.clone(),
                });
                lane.state = LaneState::Parked;
            }
            ErrorPolicy::Park => {
                tracing::error!(
                    pipeline = %self.pipeline,
                    key = %key,
                    position = %letter.position,
                    error = %letter.error,
                    held = lane.queue.len(),
                    "An event cannot be delivered; its key is parked (on_error = \"park\"): its later events wait, other keys go on."
                );
                lane.state = LaneState::Parked;
                self.parked += lane.queue.len();
                if self.parked > self.config.max_parked {
                    self.halt = Some(Halt {
                        position: letter.position.clone(),
                        error: format!(
                            "{} events are parked, more than max_parked = {}; resume or dead-letter them (last failure: {})",
                            self.parked, self.config.max_parked, letter.error
                        ),
                    });
                }
            }
            ErrorPolicy::DeadLetter => {
                let Some(Work::Fail(failure)) = lane.queue.pop_front() else {
                    unreachable!()
                };
                lane.state = LaneState::Running;
                let destination = self
                    .dead_letters
                    .clone()
                    .expect("the dead-letter policy has a destination (checked by config)");
                self.running.push(
                    async move {
                        let result = destination.write(&failure.letter).await;
                        Outcome::DeadLettered {
                            lane: key,
                            failure: Box::new(failure),
                            result,
                        }
                    }
                    .boxed(),
                );
            }
        }
    }

    /// Takes back what a piece of lane work reports.
    pub(super) fn complete(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered {
                lane,
                slice,
                result,
            } => self.delivered(lane, slice, result),
            Outcome::Remapped {
                lane,
                remap,
                result,
                plugin,
            } => self.remapped(lane, remap, result, plugin),
            Outcome::DeadLettered {
                lane,
                failure,
                result,
            } => match result {
                Ok(()) => {
                    tracing::warn!(
                        pipeline = %self.pipeline,
                        key = %lane,
                        position = %failure.letter.position,
                        error = %failure.letter.error,
                        "An event that cannot be delivered was written to the dead letters."
                    );
                    self.stats.dead_letters.fetch_add(1, Atomic::Relaxed);
                    self.succeeded(&lane);
                    self.done(failure.seq);
                }
                Err(error) => {
                    let front = Work::Fail(*failure);
                    self.retry_later(
                        lane,
                        vec![front],
                        format!("{error:#}"),
                        "The dead letter could not be written",
                    );
                }
            },
        }
        self.update_gauges();
    }

    fn delivered(
        &mut self,
        lane: LaneKey,
        mut slice: Vec<Delivery>,
        result: Result<(), SinkError>,
    ) {
        let error = match result {
            Ok(()) => {
                for delivery in &slice {
                    self.done(delivery.seq);
                }
                self.stats
                    .delivered
                    .fetch_add(slice.len() as u64, Atomic::Relaxed);
                if self.grouping == Grouping::SourceTransaction {
                    self.end_transaction(&lane);
                }
                self.succeeded(&lane);
                return;
            }
            Err(error) => error,
        };
        let through = error.delivered.min(slice.len());
        for delivery in slice.drain(..through) {
            self.done(delivery.seq);
        }
        self.stats
            .delivered
            .fetch_add(through as u64, Atomic::Relaxed);
        let mut rest: Vec<Work> = slice.into_iter().map(Work::Deliver).collect();
        if rest.is_empty() {
            self.succeeded(&lane);
            return;
        }
        match error.retry {
            Retry::Later => {
                self.retry_later(lane, rest, format!("{error}"), "The sink failed");
            }
            Retry::Never => {
                let Work::Deliver(refused) = rest.remove(0) else {
                    unreachable!()
                };
                let failure =
                    self.output_failure(refused, format!("the sink refused it: {error}"), 1);
                rest.insert(0, Work::Fail(failure));
                self.requeue_front(&lane, rest);
                self.set_state(&lane, LaneState::Ready);
            }
        }
    }

    fn remapped(&mut self, lane: LaneKey, remap: Remap, result: EventResult, plugin: Arc<str>) {
        let seq = remap.seq;
        match result {
            Ok(outputs) => {
                self.succeeded(&lane);
                let deliveries: Vec<Delivery> =
                    deliveries(seq, &remap.event, outputs, &plugin).collect();
                if deliveries.is_empty() {
                    self.done(seq);
                    return;
                }
                self.outstanding.insert(seq, deliveries.len() as u32);
                let mut own = Vec::new();
                for delivery in deliveries {
                    let target =
                        self.lane_of(delivery.event.tenant.as_deref(), delivery.key.as_deref());
                    if target == lane {
                        own.push(Work::Deliver(delivery));
                    } else {
                        self.warn_if_overtaken(&target, seq);
                        self.push(target, Work::Deliver(delivery));
                    }
                }
                self.requeue_front(&lane, own);
                self.schedule(lane);
            }
            Err(error) if error.is_retryable() => {
                let remap = Remap { error, ..remap };
                let message = remap.error.to_string();
                self.retry_later(
                    lane,
                    vec![Work::Remap(remap)],
                    message,
                    "The plugin asked to retry an event",
                );
            }
            Err(error) => {
                let attempts = self
                    .lanes
                    .get(&lane)
                    .and_then(|l| l.backoff.as_ref())
                    .map_or(1, |b| b.attempts() + 1);
                let failure = Failure {
                    seq,
                    letter: self.letter_for_event(
                        &remap.event,
                        error.to_string(),
                        attempts,
                        Some(plugin),
                    ),
                };
                self.requeue_front(&lane, vec![Work::Fail(failure)]);
                self.set_state(&lane, LaneState::Ready);
            }
        }
    }

    /// Backs off lane `key` before it retries `front` (put back at its head),
    /// or, when the attempts are used up, fails the first of `front`.
    fn retry_later(&mut self, key: LaneKey, mut front: Vec<Work>, error: String, what: &str) {
        let retry = self.config.retry.clone();
        let lane = self.lanes.entry(key.clone()).or_insert_with(Lane::new);
        let backoff = lane.backoff.get_or_insert_with(|| Backoff::new(&retry));
        let position = work_position(&front[0]).to_string();
        match backoff.next_delay() {
            Some(delay) => {
                self.stats.retries.fetch_add(1, Atomic::Relaxed);
                tracing::warn!(
                    pipeline = %self.pipeline,
                    key = %key,
                    position,
                    attempt = backoff.attempts(),
                    delay_ms = delay.as_millis() as u64,
                    error,
                    "{what}; retrying after a delay. Other keys go on."
                );
                lane.state = LaneState::Waiting;
                self.requeue_front(&key, front);
                self.timers.push(sleep_then(delay, key));
            }
            None => {
                let attempts = backoff.attempts();
                lane.backoff = None;
                let message = format!("{error} (gave up after {attempts} attempts)");
                let failure = match front.remove(0) {
                    Work::Deliver(delivery) => self.output_failure(delivery, message, attempts),
                    Work::Remap(remap) => Failure {
                        seq: remap.seq,
                        letter: self.letter_for_event(&remap.event, message, attempts, None),
                    },
                    Work::Fail(failure) => {
                        // The dead-letter destination itself keeps failing:
                        // nothing safe is left to do but stop.
                        self.halt = Some(Halt {
                            position: failure.letter.position.clone(),
                            error: format!("the dead letter cannot be written: {message}"),
                        });
                        failure
                    }
                    Work::TransactionEnd(_) => unreachable!("transaction ends never fail"),
                };
                front.insert(0, Work::Fail(failure));
                self.requeue_front(&key, front);
                self.set_state(&key, LaneState::Ready);
            }
        }
    }

    /// A backoff timer fired.
    pub(super) fn wake(&mut self, key: LaneKey) {
        if let Some(lane) = self.lanes.get_mut(&key)
            && lane.state == LaneState::Waiting
        {
            lane.state = LaneState::Ready;
            self.schedule(key);
        }
    }

    /// Retries the failure that parked lane `key`; returns whether it was
    /// parked.
    pub(super) fn resume(&mut self, key: &LaneKey) -> bool {
        let Some(lane) = self.lanes.get_mut(key) else {
            return false;
        };
        if lane.state != LaneState::Parked || self.halt.is_some() {
            return false;
        }
        self.parked -= lane.queue.len();
        lane.state = LaneState::Ready;
        lane.backoff = None;
        if let Some(Work::Fail(failure)) = lane.queue.front()
            && let Some(retry) = failure.retry()
        {
            lane.queue[0] = retry;
        }
        tracing::info!(pipeline = %self.pipeline, key = %key, "A parked key is resumed; its failed event is tried again.");
        self.schedule(key.clone());
        self.update_gauges();
        true
    }

    fn end_transaction(&mut self, key: &LaneKey) {
        if let Some(lane) = self.lanes.get_mut(key)
            && let Some(Work::TransactionEnd(seq)) = lane.queue.front()
        {
            let seq = *seq;
            lane.queue.pop_front();
            self.done(seq);
        }
    }

    fn succeeded(&mut self, key: &LaneKey) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.backoff = None;
            if lane.state == LaneState::Running {
                lane.state = LaneState::Ready;
            }
        }
        self.schedule(key.clone());
    }

    fn set_state(&mut self, key: &LaneKey, state: LaneState) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.state = state;
        }
        if state == LaneState::Ready {
            self.schedule(key.clone());
        }
    }

    fn push(&mut self, key: LaneKey, work: Work) {
        let lane = self.lanes.entry(key.clone()).or_insert_with(Lane::new);
        lane.queue.push_back(work);
        if lane.state == LaneState::Parked && self.halt.is_none() {
            self.parked += 1;
        }
        self.schedule(key);
    }

    fn requeue_front(&mut self, key: &LaneKey, front: Vec<Work>) {
        let lane = self.lanes.entry(key.clone()).or_insert_with(Lane::new);
        for work in front.into_iter().rev() {
            lane.queue.push_front(work);
        }
    }

    fn schedule(&mut self, key: LaneKey) {
        if let Some(lane) = self.lanes.get_mut(&key)
            && !lane.scheduled
            && lane.state == LaneState::Ready
        {
            lane.scheduled = true;
            self.ready.push_back(key);
        }
    }

    /// One piece of item `seq`'s work is done.
    fn done(&mut self, seq: u64) {
        let remaining = self
            .outstanding
            .get_mut(&seq)
            .expect("the item is outstanding");
        *remaining -= 1;
        if *remaining == 0 {
            self.outstanding.remove(&seq);
            self.ack(seq);
        }
    }

    fn ack(&mut self, seq: u64) {
        self.acks.push(seq);
        self.open -= 1;
    }

    fn effective_ordering(&self) -> Ordering {
        match self.grouping {
            Grouping::Key => self.config.ordering,
            Grouping::SourceTransaction => Ordering::Total,
        }
    }

    fn lane_of(&self, tenant: Option<&str>, key: Option<&str>) -> LaneKey {
        match self.effective_ordering() {
            Ordering::Key => LaneKey::Key {
                tenant: tenant.map(Arc::from),
                key: key.map(str::to_string),
            },
            Ordering::Tenant => LaneKey::Tenant(tenant.map(Arc::from)),
            Ordering::Total => LaneKey::All,
        }
    }

    /// A remapped event's output joins a lane that may already hold later
    /// events: their order cannot be kept. Said, not hidden.
    fn warn_if_overtaken(&self, lane: &LaneKey, seq: u64) {
        let overtaken = self.lanes.get(lane).is_some_and(|lane| {
            lane.queue
                .iter()
                .any(|work| matches!(work, Work::Deliver(d) if d.seq > seq))
        });
        if overtaken {
            tracing::warn!(
                pipeline = %self.pipeline,
                key = %lane,
                seq,
                "An event the plugin asked to retry produced an output for another key that later events already reached; its order relative to them is not kept."
            );
        }
    }

    fn letter_for_event(
        &self,
        event: &EventRef,
        error: String,
        attempts: u32,
        plugin: Option<Arc<str>>,
    ) -> DeadLetter {
        DeadLetter {
            pipeline: self.pipeline.clone(),
            position: event.position.clone(),
            key: event.key.clone(),
            tenant: event.tenant.clone(),
            error,
            attempts,
            plugin,
            subject: Subject::Event(event.clone()),
        }
    }

    fn output_failure(&self, delivery: Delivery, error: String, attempts: u32) -> Failure {
        Failure {
            seq: delivery.seq,
            letter: DeadLetter {
                pipeline: self.pipeline.clone(),
                position: delivery.position().to_string(),
                key: delivery.key.clone(),
                tenant: delivery.event.tenant.clone(),
                error,
                attempts,
                plugin: Some(delivery.plugin.clone()),
                subject: Subject::Output(delivery),
            },
        }
    }

    fn update_gauges(&self) {
        let parked_lanes = self
            .lanes
            .values()
            .filter(|lane| lane.state == LaneState::Parked)
            .count();
        self.stats
            .parked_lanes
            .store(parked_lanes as u64, Atomic::Relaxed);
        self.stats
            .parked_items
            .store(self.parked as u64, Atomic::Relaxed);
        self.stats
            .open_items
            .store(self.open as u64, Atomic::Relaxed);
    }
}

impl Failure {
    /// The work that tries the failed thing again, when it can be tried.
    fn retry(&self) -> Option<Work> {
        match &self.letter.subject {
            Subject::Event(event) => Some(Work::Remap(Remap {
                seq: self.seq,
                event: event.clone(),
                error: EventError::Plugin(crate::event::PluginError::Retryable(
                    "resumed".to_string(),
                )),
            })),
            Subject::Output(delivery) => Some(Work::Deliver(delivery.clone())),
            // Input that is not an event fails again the same way.
            Subject::Input(_) => None,
        }
    }
}

/// An item of a mapped batch, in source order.
pub(super) enum MappedItem {
    Event(EventRef, EventResult),
    Invalid(InvalidInput),
    TransactionEnd,
}

/// The deliveries of one event's outputs.
fn deliveries<'a>(
    seq: u64,
    event: &'a EventRef,
    outputs: Vec<Output>,
    plugin: &'a Arc<str>,
) -> impl Iterator<Item = Delivery> + 'a {
    outputs
        .into_iter()
        .enumerate()
        .map(move |(index, output)| Delivery {
            seq,
            event: event.clone(),
            index: index as u32,
            key: output.key.clone().or_else(|| event.key.clone()),
            output,
            plugin: plugin.clone(),
        })
}

/// Takes up to `most` consecutive deliveries from the head of `queue`.
fn take_deliveries(queue: &mut VecDeque<Work>, most: usize) -> Vec<Delivery> {
    let mut slice = Vec::new();
    while slice.len() < most {
        match queue.front() {
            Some(Work::Deliver(_)) => {
                let Some(Work::Deliver(delivery)) = queue.pop_front() else {
                    unreachable!()
                };
                slice.push(delivery);
            }
            _ => break,
        }
    }
    slice
}

fn work_position(work: &Work) -> &str {
    match work {
        Work::Deliver(delivery) => delivery.position(),
        Work::Remap(remap) => &remap.event.position,
        Work::Fail(failure) => &failure.letter.position,
        Work::TransactionEnd(_) => "",
    }
}

fn sleep_then(delay: Duration, key: LaneKey) -> BoxFuture<'static, LaneKey> {
    async move {
        tokio::time::sleep(delay).await;
        key
    }
    .boxed()
}
