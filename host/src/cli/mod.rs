//! The `ferry` command line.
//!
//! Exit codes: 0 success; 1 a pipeline failed, a plugin is unusable, or
//! `plugin test` found a difference; 2 the command line or the configuration
//! is wrong.

mod config;
mod plugin;
mod progress;
mod resync;
mod run;
mod scaffold;
mod status;

use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Streams database changes through a WebAssembly plugin to Kessel, Kafka
/// and files: in order per key, at least once, idempotent.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    /// How log lines are written (to stderr). The level comes from
    /// FERRY_LOG, e.g. `FERRY_LOG=debug`.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FERRY_LOG_FORMAT",
        default_value_t
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a configuration file.
    Run(run::RunArgs),
    /// Check, test or inspect a plugin component.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show how each pipeline of a running ferry is doing (asks its admin
    /// server).
    Status(status::StatusArgs),
    /// Have a running ferry publish a pipeline's current state again (a
    /// Postgres source's `resync` statement) and show its delivery.
    Resync(resync::ResyncArgs),
}

/// A command's failure, with the exit code it maps to.
pub(crate) enum Failure {
    /// Printed as `error: …`, exit code 1.
    Error(anyhow::Error),
    /// Printed as given, exit code 2.
    Usage(String),
    /// Already reported; exit code 1.
    Reported,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Error(error)
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry")
        .build()
        .expect("the async runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Plugin(command) => plugin::run(command).await,
            Command::Config(command) => config::run(command),
            Command::Status(args) => status::run(args).await,
            Command::Resync(args) => resync::run(args).await,
        }
    });
    // Blocking plugin calls and stdin reads must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Reported) => ExitCode::from(1),
    }
}
