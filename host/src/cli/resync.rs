//! `ferry resync <pipeline>`: has a running ferry publish the pipeline's
//! current state again (for a Postgres source, `source.resync`), then shows
//! its delivery as a progress bar until every event is delivered.

use super::Failure;
use super::progress::{bar, thousands};
use super::status::{admin_listen, call};
use crate::sources::BulkProgress;
use clap::Args;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct ResyncArgs {
    /// The pipeline to resync.
    pipeline: String,
    /// The configuration the running ferry was started with.
    #[arg(long, short, env = "FERRY_CONFIG")]
    config: PathBuf,
    /// Return once the resync started, without waiting for its delivery.
    #[arg(long)]
    no_wait: bool,
}

pub(crate) async fn run(args: ResyncArgs) -> Result<(), Failure> {
    let listen = admin_listen(&args.config, "resync")?;
    let started = Instant::now();
    let answer = call(
        listen,
        reqwest::Method::POST,
        &format!("/pipelines/{}/resync", args.pipeline),
    )
    .await?;
    let id = answer["resync"].as_str().unwrap_or_default().to_string();
    eprintln!("{}: resync {id} started", args.pipeline);
    if args.no_wait {
        return Ok(());
    }
    let terminal = std::io::stderr().is_terminal();
    let mut printed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = call(listen, reqwest::Method::GET, "/status").await?;
        let pipeline = status["pipelines"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == args.pipeline.as_str()))
            .cloned()
            .unwrap_or_default();
        if let Some(error) = pipeline["error"].as_str() {
            return Err(Failure::Error(anyhow::anyhow!(
                "pipeline {} stopped: {error}",
                args.pipeline
            )));
        }
        let Ok(bulk) = serde_json::from_value::<BulkProgress>(pipeline["bulk"].clone()) else {
            continue;
        };
        if bulk.id != id {
            continue;
        }
        if terminal {
            eprint!("\r\x1b[2K{}", bar(&bulk));
            let _ = std::io::stderr().flush();
        } else if bulk.done || printed.elapsed() >= Duration::from_secs(2) {
            eprintln!("{}", bar(&bulk));
            printed = Instant::now();
        }
        if bulk.done {
            if terminal {
                eprintln!();
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{}: resync {id} delivered {} {} in {seconds:.1} s",
                args.pipeline,
                thousands(bulk.delivered),
                bulk.unit
            );
            return Ok(());
        }
    }
}
