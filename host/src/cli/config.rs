//! `ferry config check`.

use super::Failure;
use crate::config::Config;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a configuration without connecting to anything; report every
    /// problem at once.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "FERRY_CONFIG")]
        config: PathBuf,
    },
}

pub(crate) fn run(command: ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Check { config } => {
            let loaded = Config::load(&config).map_err(|e| Failure::Usage(e.to_string()))?;
            let names: Vec<&str> = loaded.pipelines.keys().map(String::as_str).collect();
            println!(
                "{} is valid: {} pipeline{} ({})",
                config.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            Ok(())
        }
    }
}
