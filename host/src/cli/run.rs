//! `ferry run`: runs every pipeline of a configuration until its input ends,
//! it halts, or the process is asked to stop.

use super::Failure;
use crate::config::{Config, RuntimeConfig};
use crate::pipeline::{self, PipelineError};
use crate::plugin::{ArtifactCache, Runtime, RuntimeOptions};
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The configuration file.
    #[arg(long, short, env = "FERRY_CONFIG")]
    config: PathBuf,
}

pub(crate) async fn run(args: RunArgs) -> Result<(), Failure> {
    let config = Config::load(&args.config).map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = build_runtime(&config.runtime)?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signals(stop.clone()));

    // Pipelines are independent: one that halts or fails leaves the others
    // running.
    let mut pipelines = JoinSet::new();
    for (name, pipeline) in config.pipelines {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        pipelines.spawn(async move {
            tracing::info!(pipeline = %name, "Pipeline starting.");
            let controls = pipeline::Controls::stop_only(stop);
            let result = pipeline::run(&name, &pipeline, &runtime, controls).await;
            (name, result)
        });
    }
    let mut failed = 0;
    while let Some(joined) = pipelines.join_next().await {
        let (name, result) = joined.context("a pipeline task panicked")?;
        match result {
            Ok(summary) => tracing::info!(
                pipeline = %name,
                items = summary.items,
                outputs = summary.outputs,
                stopped = summary.stopped,
                "Pipeline finished."
            ),
            Err(error @ PipelineError::Halted { .. }) => {
                failed += 1;
                tracing::error!(pipeline = %name, %error, "Pipeline halted; everything before the failed event was delivered.");
            }
            Err(error) => {
                failed += 1;
                tracing::error!(pipeline = %name, error = format!("{error:#}"), "Pipeline failed.");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Reported);
    }
    Ok(())
}

fn build_runtime(config: &RuntimeConfig) -> anyhow::Result<Runtime> {
    let cache_dir = match (config.cache, &config.cache_dir) {
        (false, _) => None,
        (true, Some(dir)) => Some(dir.clone()),
        (true, None) => ArtifactCache::default_dir(),
    };
    Runtime::new(RuntimeOptions {
        cache_dir,
        ..RuntimeOptions::default()
    })
    .context("cannot start the plugin runtime")
}

/// First SIGINT/SIGTERM: stop reading and drain. Second: exit at once
/// (nothing undelivered has been acknowledged, so nothing is lost).
async fn stop_on_signals(stop: CancellationToken) {
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for signals; stop ferry by killing it.");
            return;
        }
    };
    signals.next().await;
    tracing::info!(
        "Stopping: no more input is read; in-flight events are being delivered. Signal again to exit at once."
    );
    stop.cancel();
    signals.next().await;
    tracing::warn!("Exiting at once; undelivered events will be read again at the next start.");
    std::process::exit(130);
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
