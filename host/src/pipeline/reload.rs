//! Hot reload: a new version of a pipeline's plugin is loaded, compiled and
//! validated off the hot path, then swapped in at a batch boundary.
//!
//! Validation is everything a first start checks — a component of the
//! plugin world, `init` accepting the pipeline's settings — plus the
//! plugin's own test vectors when the pipeline names them. A version that
//! fails any of it is rejected and the running one stays. Batches already
//! handed to the old version finish on it: every batch carries the plugin
//! it started with, and its outputs carry that version's digest.

use super::load_plugin;
use crate::config::{PluginConfig, VectorsConfig};
use crate::plugin::{Plugin, Runtime};
use crate::vectors;
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What reloads did, readable from anywhere (status, metrics).
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Digest of the version new batches go to (`sha256:` + 16 hex).
    active: Mutex<String>,
    /// Versions swapped in since the start.
    pub reloads: AtomicU64,
    /// New versions rejected since the start.
    pub rejected: AtomicU64,
}

impl PluginStats {
    pub fn active(&self) -> String {
        self.active.lock().unwrap().clone()
    }

    pub(super) fn set_active(&self, plugin: &Plugin) {
        *self.active.lock().unwrap() = plugin.digest().short();
    }
}

/// What asked for a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The plugin file changed.
    File,
    /// SIGHUP or the admin API.
    Request,
}

/// The result of a reload attempt.
pub(super) enum Reloaded {
    /// A new version, validated and ready to swap in.
    New { plugin: Plugin, took: Duration },
    /// The file holds the version already running.
    Same,
}

/// Loads and validates the version now in the plugin file. `active` is the
/// running version's digest, to recognise a file that did not really change.
pub(super) async fn load_new(
    runtime: Runtime,
    pipeline: Arc<str>,
    config: PluginConfig,
    active: String,
) -> anyhow::Result<Reloaded> {
    let started = Instant::now();
    let bytes = tokio::fs::read(&config.path)
        .await
        .with_context(|| format!("cannot read {}", config.path.display()))?;
    if crate::plugin::Digest::of(&bytes).short() == active {
        return Ok(Reloaded::Same);
    }
    let plugin = load_plugin(&runtime, &pipeline, &config).await?;
    if let Some(vectors) = &config.vectors {
        check_vectors(&plugin, vectors).await?;
    }
    Ok(Reloaded::New {
        plugin,
        took: started.elapsed(),
    })
}

/// Who asked for a reload waits for this: the new digest, or why not.
pub(super) type Reply = oneshot::Sender<Result<String, String>>;

/// A pipeline's reload attempts: at most one runs at a time; asks that
/// come while it runs are served by one attempt after it.
#[derive(Default)]
pub(super) struct Attempts {
    /// The running attempt.
    pub(super) task: Option<JoinHandle<anyhow::Result<Reloaded>>>,
    /// What started the running attempt, for the log.
    pub(super) trigger: Option<Trigger>,
    /// Callers answered when the running attempt ends.
    waiting: Vec<Reply>,
    /// Asked again while an attempt ran: the file may have changed since
    /// that one read it.
    again: bool,
    /// Callers who asked while an attempt ran. They are answered by the
    /// next attempt, never by the running one: it may have read the file
    /// before the version they installed.
    waiting_next: Vec<Reply>,
}

impl Attempts {
    /// Starts an attempt, or asks for one more after the running one.
    pub(super) fn request(
        &mut self,
        trigger: Trigger,
        reply: Option<Reply>,
        start: impl FnOnce() -> JoinHandle<anyhow::Result<Reloaded>>,
    ) {
        if self.task.is_some() {
            self.again = true;
            self.waiting_next.extend(reply);
        } else {
            self.trigger = Some(trigger);
            self.waiting.extend(reply);
            self.task = Some(start());
        }
    }

    /// The running attempt has ended: returns the callers to answer with
    /// its outcome, and starts the attempt asked for meanwhile, if any.
    pub(super) fn finished(
        &mut self,
        start: impl FnOnce() -> JoinHandle<anyhow::Result<Reloaded>>,
    ) -> Vec<Reply> {
        self.task = None;
        let answered = std::mem::take(&mut self.waiting);
        if std::mem::take(&mut self.again) {
            self.waiting = std::mem::take(&mut self.waiting_next);
            self.trigger = Some(Trigger::Request);
            self.task = Some(start());
        }
        answered
    }
}

/// Maps the pipeline's vectors with `plugin`; an error holds the difference.
pub(super) async fn check_vectors(plugin: &Plugin, config: &VectorsConfig) -> anyhow::Result<()> {
    let events = vectors::read_events(&config.input)?;
    let expected = vectors::read_expected(&config.expect)?;
    let events: Arc<[_]> = events.into();
    let results = plugin.transform(events.clone()).await;
    let actual: Vec<_> = events
        .iter()
        .zip(&results)
        .map(|(event, result)| vectors::result_line(event, result))
        .collect();
    if let Some(diff) = vectors::compare(&expected, &actual) {
        bail!(
            "version {} fails its vectors ({}):\n{diff}",
            plugin.digest().short(),
            config.expect.display()
        );
    }
    Ok(())
}

/// Watches the plugin file by looking at it every interval: polling works
/// the same on every filesystem and volume kind (a Kubernetes ConfigMap's
/// symlink swap, a bind mount, NFS), where change notifications do not.
pub(super) struct FileWatch {
    path: PathBuf,
    ticks: tokio::time::Interval,
    /// What the file looked like when last taken.
    taken: Option<Stamp>,
    /// A new look seen at the last tick, not yet settled.
    settling: Option<Stamp>,
}

/// Enough of a file's metadata to see that it was replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&metadata),
        })
    }
}

impl FileWatch {
    /// Starts watching `path` as it is now (the version just loaded).
    pub(super) fn new(path: &Path, interval: Duration) -> FileWatch {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FileWatch {
            path: path.to_path_buf(),
            ticks,
            taken: Stamp::of(path),
            settling: None,
        }
    }

    /// Resolves when the file has changed and then stayed the same for one
    /// interval. Cancel-safe: the state lives in `self`, and the interval
    /// keeps its schedule across calls.
    pub(super) async fn changed(&mut self) {
        loop {
            self.ticks.tick().await;
            let now = Stamp::of(&self.path);
            if now.is_none() || now == self.taken {
                // Missing (mid-replacement) or unchanged.
                self.settling = None;
            } else if now == self.settling {
                self.taken = now;
                self.settling = None;
                return;
            } else {
                self.settling = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_who_asks_during_an_attempt_is_answered_by_the_next() {
        let never = || tokio::spawn(std::future::pending());
        let mut attempts = Attempts::default();
        let (first, mut first_answer) = oneshot::channel();
        attempts.request(Trigger::File, Some(first), never);
        let (second, mut second_answer) = oneshot::channel();
        attempts.request(Trigger::Request, Some(second), || {
            unreachable!("one attempt at a time")
        });

        let mut started = false;
        for reply in attempts.finished(|| {
            started = true;
            never()
        }) {
            reply.send(Ok("first".into())).unwrap();
        }
        assert!(
            started,
            "the ask made during the attempt gets one of its own"
        );
        assert_eq!(first_answer.try_recv().unwrap(), Ok("first".into()));
        assert!(
            second_answer.try_recv().is_err(),
            "not answered by the first"
        );

        for reply in attempts.finished(|| unreachable!("nothing asked meanwhile")) {
            reply.send(Ok("second".into())).unwrap();
        }
        assert_eq!(second_answer.try_recv().unwrap(), Ok("second".into()));
        assert!(attempts.task.is_none());
    }

    #[tokio::test]
    async fn a_change_is_taken_once_the_file_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.wasm");
        std::fs::write(&path, b"one").unwrap();
        let interval = Duration::from_millis(20);
        let mut watch = FileWatch::new(&path, interval);
        let quiet = tokio::time::timeout(interval * 10, watch.changed()).await;
        assert!(quiet.is_err(), "an unchanged file is no change");

        // Written in place: taken only once it has stayed the same for a
        // whole interval after being seen, and only once.
        std::fs::write(&path, b"two").unwrap();
        let written = Instant::now();
        tokio::time::timeout(interval * 10, watch.changed())
            .await
            .expect("the settled change is taken");
        assert!(
            written.elapsed() >= interval * 3 / 4,
            "taken at first sight"
        );
        let again = tokio::time::timeout(interval * 10, watch.changed()).await;
        assert!(again.is_err(), "a change is taken once");

        // Replaced by rename.
        let next = dir.path().join("next.wasm");
        std::fs::write(&next, b"three").unwrap();
        std::fs::rename(&next, &path).unwrap();
        tokio::time::timeout(interval * 10, watch.changed())
            .await
            .expect("a renamed-in file is a change");
    }
}
