//! `ferry plugin check` and `ferry plugin test`.

use super::Failure;
use crate::plugin::{
    Limits, LoadedComponent, Plugin, PluginOptions, Runtime, RuntimeOptions, WORLD,
};
use crate::vectors;
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Check that a component implements the ferry plugin world; print its
    /// digest, exports and imports.
    Check(CheckArgs),
    /// Map a file of events with a plugin and print the result of each event
    /// as a JSON line; with --expect, compare and show a diff.
    Test(TestArgs),
    /// Create a plugin project (rust, js, python or c) that builds and
    /// passes its own test vectors: `<dir>/test`.
    New(super::scaffold::NewArgs),
}

/// How the plugin is instantiated: its settings and limits.
#[derive(Debug, Args)]
pub(crate) struct PluginArgs {
    /// A plugin setting, as given to `init` (repeatable).
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Longest one call may run.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    timeout_ms: u64,
    /// Most memory one instance may use.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    memory_mb: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The component file (.wasm).
    component: PathBuf,
    #[command(flatten)]
    plugin: PluginArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The component file (.wasm).
    component: PathBuf,
    /// Change events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// Expected result lines; differences are shown and exit with code 1.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Events per plugin call.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[command(flatten)]
    plugin: PluginArgs,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

pub(crate) async fn run(command: PluginCommand) -> Result<(), Failure> {
    match command {
        PluginCommand::Check(args) => check(args).await,
        PluginCommand::Test(args) => test(args).await,
        PluginCommand::New(args) => Ok(super::scaffold::new(args)?),
    }
}

/// Loads and prepares the component off the async reactor.
async fn load(
    path: PathBuf,
    args: PluginArgs,
    instances: usize,
) -> anyhow::Result<(Runtime, LoadedComponent, Plugin)> {
    tokio::task::spawn_blocking(move || {
        let runtime = Runtime::new(RuntimeOptions::default())?;
        let component = runtime.load(&path)?;
        let options = PluginOptions {
            pipeline: "plugin".to_string(),
            settings: args.settings,
            limits: Limits {
                timeout: Duration::from_millis(args.timeout_ms.max(1)),
                memory: (args.memory_mb.max(1) as usize) << 20,
                instances,
            },
        };
        let plugin = runtime.prepare(&component, options)?;
        Ok((runtime, component, plugin))
    })
    .await
    .expect("plugin loading does not panic")
}

async fn check(args: CheckArgs) -> Result<(), Failure> {
    let (runtime, component, _plugin) = load(args.component.clone(), args.plugin, 1).await?;
    let engine = runtime.engine();
    let mut out = std::io::stdout().lock();
    let print = |out: &mut dyn std::io::Write, label: &str, items: &[String]| {
        writeln!(out, "{label}:")
            .and_then(|()| items.iter().try_for_each(|item| writeln!(out, "  {item}")))
    };
    let written = (|| -> std::io::Result<()> {
        writeln!(out, "plugin:  {}", args.component.display())?;
        writeln!(out, "digest:  {}", component.digest())?;
        writeln!(out, "size:    {} bytes", component.size())?;
        writeln!(
            out,
            "load:    {} ms ({})",
            component.load_time().as_millis(),
            component.cache_outcome()
        )?;
        writeln!(
            out,
            "world:   implements {WORLD}; init accepted the settings"
        )?;
        print(&mut out, "exports", &component.exports(engine))?;
        print(&mut out, "imports", &component.imports(engine))?;
        Ok(())
    })();
    stdout_result(written)
}

/// A closed stdout (`| head`) is not a failure of the command.
fn stdout_result(written: std::io::Result<()>) -> Result<(), Failure> {
    match written {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error)
                .context("cannot write to stdout")
                .into())
        }
        _ => Ok(()),
    }
}

async fn test(args: TestArgs) -> Result<(), Failure> {
    let events = vectors::read_events(&args.input)?;
    let expected = args
        .expect
        .as_deref()
        .map(vectors::read_expected)
        .transpose()?;
    let (_runtime, _component, plugin) = load(args.component, args.plugin, 1).await?;

    let mut actual = Vec::with_capacity(events.len());
    for batch in events.chunks(args.batch_size.max(1)) {
        let batch: Arc<[_]> = batch.into();
        let results = plugin.transform(batch.clone()).await;
        for (event, result) in batch.iter().zip(&results) {
            actual.push(vectors::result_line(event, result));
        }
    }

    let mut out = std::io::stdout().lock();
    stdout_result(actual.iter().try_for_each(|line| writeln!(out, "{line}")))?;
    drop(out);

    let Some(expected) = expected else {
        return Ok(());
    };
    match vectors::compare(&expected, &actual) {
        None => {
            eprintln!("ok: {} events match the expectations", actual.len());
            Ok(())
        }
        Some(diff) => {
            eprintln!("the results differ from the expectations:\n{diff}");
            Err(Failure::Reported)
        }
    }
}
