//! `ferry status`: asks a running ferry's admin server (`[admin] listen` in
//! the configuration) how each pipeline is doing.

use super::Failure;
use crate::config::AdminConfig;
use crate::sources::BulkProgress;
use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The configuration the running ferry was started with.
    #[arg(long, short, env = "FERRY_CONFIG")]
    config: PathBuf,
    /// Print the admin server's JSON as it is.
    #[arg(long)]
    json: bool,
    /// Print nothing; exit 0 if every pipeline is running, 1 if not or if
    /// ferry cannot be reached (a container healthcheck).
    #[arg(long, conflicts_with = "json")]
    ready: bool,
}

pub(crate) async fn run(args: StatusArgs) -> Result<(), Failure> {
    let listen = admin_listen(&args.config, "status")?;
    if args.ready {
        return match get(listen, "/readyz").await {
            Ok(_) => Ok(()),
            Err(_) => Err(Failure::Reported),
        };
    }
    let status = get(listen, "/status").await?;
    if args.json {
        println!("{status:#}");
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// GETs `path` from the admin server; its JSON if it answered 2xx.
async fn get(listen: SocketAddr, path: &str) -> anyhow::Result<Value> {
    call(listen, reqwest::Method::GET, path).await
}

/// Asks the admin server at `listen`; its JSON if it answered 2xx, else its
/// `error`.
pub(super) async fn call(
    mut listen: SocketAddr,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Value> {
    if listen.ip().is_unspecified() {
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{listen}{path}");
    crate::sinks::kessel::install_crypto_provider();
    // Plain HTTP: no CA roots needed (a minimal image may have none).
    let client = reqwest::Client::builder()
        .tls_certs_only(std::iter::empty())
        .build()
        .context("cannot set up an HTTP client")?;
    let response = client
        .request(method, &url)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach ferry's admin server at {url}: is ferry running?")
        })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        match body["error"].as_str() {
            Some(error) => anyhow::bail!("{error}"),
            None => anyhow::bail!("{url} answered {status}"),
        }
    }
    Ok(body)
}

/// The admin server's address from the configuration's `[admin]`.
pub(super) fn admin_listen(config: &std::path::Path, command: &str) -> Result<SocketAddr, Failure> {
    // Only `[admin]` matters here: the pipelines' files and services may
    // not be visible from where this runs.
    let admin = AdminConfig::load(config).map_err(|e| Failure::Usage(e.to_string()))?;
    admin.listen.ok_or_else(|| {
        Failure::Usage(format!(
            "{}: `ferry {command}` asks the admin server, and [admin] listen is not set",
            config.display()
        ))
    })
}

/// One block per pipeline: state, counters, plugin, parked keys, error.
fn render(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for pipeline in status["pipelines"].as_array().unwrap_or(&empty) {
        let text = |key: &str| match &pipeline[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("{}: {}\n", text("name"), text("state")));
        out.push_str(&format!(
            "  delivered {}  retries {}  dead letters {}  open {}  parked keys {}\n",
            text("delivered"),
            text("retries"),
            text("dead_letters"),
            text("open_items"),
            text("parked_keys")
        ));
        if let Some(checkpoint) = pipeline["checkpoint"].as_str() {
            let lag = &pipeline["lag"];
            match lag["unit"].as_str() {
                Some(unit) => out.push_str(&format!(
                    "  checkpoint {checkpoint}  lag {} {unit}\n",
                    lag["value"]
                )),
                None => out.push_str(&format!("  checkpoint {checkpoint}\n")),
            }
        }
        if let Ok(bulk) = serde_json::from_value::<BulkProgress>(pipeline["bulk"].clone()) {
            out.push_str(&format!("  {}\n", super::progress::bar(&bulk)));
        }
        let plugin = &pipeline["plugin"];
        out.push_str(&format!(
            "  plugin {}  reloads {}  rejected {}\n",
            plugin["digest"].as_str().unwrap_or("-"),
            plugin["reloads"],
            plugin["rejected"]
        ));
        for lane in pipeline["parked"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  parked {} at {} ({} held): {}\n",
                lane["key"].as_str().unwrap_or("?"),
                lane["position"].as_str().unwrap_or("?"),
                lane["held"],
                lane["error"].as_str().unwrap_or("")
            ));
        }
        if let Some(error) = pipeline["error"].as_str() {
            out.push_str(&format!("  error: {error}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pipeline_gets_a_block() {
        let status = serde_json::json!({"pipelines": [{
            "name": "orders", "state": "running", "error": null,
            "plugin": {"digest": "sha256:0123456789abcdef", "reloads": 2, "rejected": 1},
            "delivered": 10, "retries": 1, "dead_letters": 0, "parked_keys": 1,
            "parked": [{"key": "k7", "position": "0/16B3748:3", "error": "refused", "held": 4}],
            "parked_items": 4, "open_items": 4
        }]});
        assert_eq!(
            render(&status),
            "orders: running\n  delivered 10  retries 1  dead letters 0  open 4  parked keys 1\n  plugin sha256:0123456789abcdef  reloads 2  rejected 1\n  parked k7 at 0/16B3748:3 (4 held): refused\n"
        );
    }
}
