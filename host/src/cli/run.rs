//! `ferry run`: runs every pipeline of a configuration until its input ends,
//! it halts, or the process is asked to stop.

use super::Failure;
use crate::admin::{self, PipelineHandle};
use crate::config::{Config, RuntimeConfig};
use crate::pipeline::{self, PipelineError, PipelineStats, State};
use crate::plugin::{ArtifactCache, Runtime, RuntimeOptions};
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
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
    let mut handles = Vec::new();
    for (name, pipeline) in config.pipelines {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let stats = Arc::new(PipelineStats::default());
        handles.push(PipelineHandle {
            name: name.clone(),
            commands: commands_tx,
            stats: stats.clone(),
        });
        pipelines.spawn(async move {
            tracing::info!(pipeline = %name, "Pipeline starting.");
            let controls = pipeline::Controls {
                stop,
                commands,
                stats: stats.clone(),
            };
            let result = pipeline::run(&name, &pipeline, &runtime, controls).await;
            let (state, error) = match &result {
                Ok(_) => (State::Finished, None),
                Err(error @ PipelineError::Halted { .. }) => {
                    (State::Halted, Some(error.to_string()))
                }
                Err(error) => (State::Failed, Some(format!("{error:#}"))),
            };
            stats.set_state(state, error);
            (name, result)
        });
    }
    tokio::spawn(reload_on_hangup(handles.clone()));
    tokio::spawn(super::progress::draw_while_running(handles.clone()));
    // Kept for as long as the pipelines run.
    let _admin = match config.admin.listen {
        Some(listen) => Some(admin::serve(listen, handles).await?),
        None => None,
    };
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

/// SIGHUP: every pipeline loads its plugin file again (each logs the
/// outcome).
async fn reload_on_hangup(pipelines: Vec<PipelineHandle>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGHUP; reload plugins through the admin API.");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the plugins.");
        for pipeline in &pipelines {
            let pipeline = pipeline.clone();
            tokio::spawn(async move { pipeline.reload().await });
        }
    }
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
